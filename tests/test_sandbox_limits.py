"""The bwrap sandbox's memory and pids limits: real bwrap, real cgroups, real bombs."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from contexts import bare_context

from wavefleet.config import Settings
from wavefleet.domains import load_domains
from wavefleet.errors import SandboxLimitError
from wavefleet.lifecycle import Role
from wavefleet.sandbox import BwrapSandbox, Limits, sandbox_for
from wavefleet.sandbox.limits import parents
from wavefleet.stories import Story
from workers import commands
from workers.git import Workspace, branch_name
from workers.offline import OfflineAgent
from workers.roles import StageInput
from workers.stage import _failed

LIMITS = Limits(memory_mb=64, pids=32)
# Allocates 4x the memory limit in 16 MiB pieces, touched, and would then say it got there.
MEMORY_BOMB = "import sys\nheld = [b'x' * (16 << 20) for _ in range(16)]\nprint('HELD ALL')\n"
# Bounded (2,000 sleeps), so that without a limit it ends at the time bound, killed with bwrap's PID
# namespace, instead of taking a shared machine down: far past any pids limit all the same.
FORK_BOMB = "i=0; while [ $i -lt 2000 ]; do sleep 600 & i=$((i+1)); done; : > reached; wait"

# A bomb not stopped by a limit runs into this; a limit stops it within ~0.1 s (the watcher polls
# every 20 ms, the kill takes milliseconds), so 10 s leaves a loaded 2-core machine room while
# still telling the limit from the bound apart by 3x.
TIME_BOUND_S = 30
STOPPED_WITHIN_S = 10


def leftovers() -> list[str]:
    """This process's command cgroups still under the `wave` parents (each command removes its own)."""
    found = parents()
    assert not isinstance(found, str), found
    mine = f"cmd-{os.getpid()}-"
    return sorted(
        str(p) for parent in {found.memory, found.pids} for p in parent.iterdir() if p.name.startswith(mine)
    )


def test_a_memory_bomb_is_stopped_by_the_memory_limit(tmp_path: Path) -> None:
    # Given the bwrap sandbox with a 64 MiB limit
    # When a command allocates 256 MiB
    with pytest.raises(SandboxLimitError) as stopped:
        commands.run_in(
            BwrapSandbox(limits=LIMITS),
            [sys.executable, "-c", MEMORY_BOMB],
            tmp_path,
            timeout_s=TIME_BOUND_S,
            max_output_bytes=1000,
        )

    # Then the memory limit stopped it, in the container sandbox's words, and its cgroup is gone
    assert "memory limit (64 MiB)" in str(stopped.value)
    assert leftovers() == []


def test_a_fork_bomb_is_stopped_by_the_pids_limit_long_before_the_time_bound(tmp_path: Path) -> None:
    assert (
        leftovers() == []
    )  # cgroups can be made here (else the bomb would run unlimited: root ignores RLIMIT_NPROC)
    started = time.monotonic()
    with pytest.raises(SandboxLimitError) as stopped:
        commands.run_in(
            BwrapSandbox(limits=LIMITS),
            ["sh", "-c", FORK_BOMB],
            tmp_path,
            timeout_s=TIME_BOUND_S,
            max_output_bytes=1000,
        )
    took = time.monotonic() - started

    assert "pids limit (32)" in str(stopped.value)
    assert took < STOPPED_WITHIN_S, f"stopped after {took:.1f} s: by the time bound, not the limit"
    assert not (tmp_path / "reached").exists()
    assert leftovers() == []


def test_an_ordinary_test_run_passes_under_the_configured_limits(settings: Settings, tmp_path: Path) -> None:
    # Given a tiny repository with a passing test, and the fleet's bwrap sandbox (the default limits)
    repo = tmp_path / "repo"
    repo.mkdir()
    (repo / "test_ok.py").write_text("def test_ok():\n    assert sum(range(10)) == 45\n")
    sandbox = sandbox_for(settings)
    assert isinstance(sandbox, BwrapSandbox) and sandbox.limits is not None
    assert sandbox.label == "bwrap"  # limits in force: nothing to warn about

    outcome = commands.run_in(
        sandbox,
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider"],
        repo,
        timeout_s=120,
        max_output_bytes=10_000,
    )

    assert outcome.exit_code == 0, outcome.output
    assert "1 passed" in outcome.output
    assert leftovers() == []


def test_without_cgroups_the_label_says_so_and_rlimit_as_still_bounds_memory(tmp_path: Path) -> None:
    # Given a cgroup root where no cgroup can be made (an ordinary empty folder)
    limits = Limits(memory_mb=256, pids=32, cgroup_root=tmp_path / "no-cgroupfs")
    (tmp_path / "no-cgroupfs").mkdir()
    sandbox = BwrapSandbox(limits=limits)

    # Then the sandbox says its limits are missing, and why
    assert sandbox.label.startswith("bwrap (no memory/pids limits: no cgroup v2 memory controller")

    # And RLIMIT_AS still refuses the bomb's allocation (it cannot tell it was a limit: a failed command)
    work = tmp_path / "work"
    work.mkdir()
    outcome = commands.run_in(
        sandbox, [sys.executable, "-c", MEMORY_BOMB], work, timeout_s=TIME_BOUND_S, max_output_bytes=2000
    )
    assert outcome.exit_code != 0 and "MemoryError" in outcome.output and "HELD ALL" not in outcome.output


def test_qa_fails_with_the_limit_as_its_reason(settings: Settings, tmp_path: Path) -> None:
    # Given FE's branch adds a test that is a memory bomb
    domain = load_domains(settings.domains_dir).get("auth")
    story = Story(id="AUTH-903", title="memory bomb in a test")
    workspace = Workspace(domain, settings.data_dir)
    for role in ("fe", "be"):
        tree = workspace.worktree(branch_name(story.id, role))
        if role == "fe":
            (tree / "tests" / "test_bomb.py").write_text(f"def test_bomb():\n    exec({MEMORY_BOMB!r})\n")
        (tree / f"{role}.txt").write_text(role)
        workspace.commit_all(tree, role)
    stage = StageInput(
        story=story, domain=domain, role=Role.QA, round=1, attempt=1, worker="t", data_dir=settings.data_dir
    )

    # When QA merges and runs the tests in a limited sandbox
    with pytest.raises(SandboxLimitError) as stopped:
        OfflineAgent(Role.QA).run(stage, bare_context(stage, BwrapSandbox(limits=LIMITS)))

    # Then the stage fails (not transient) with the limit as its reason
    result = _failed(stopped.value, {"worker": "t", "job": "j", "agent": "offline"})
    assert not result.ok and not result.transient
    assert "memory limit (64 MiB)" in result.error
    assert leftovers() == []


def test_the_cgroup_is_removed_when_the_command_times_out(tmp_path: Path) -> None:
    with pytest.raises(subprocess.TimeoutExpired):
        commands.run_in(
            BwrapSandbox(limits=LIMITS), ["sleep", "30"], tmp_path, timeout_s=1, max_output_bytes=100
        )
    assert leftovers() == []


def test_a_cgroup_left_by_a_killed_worker_is_swept_at_the_next_start() -> None:
    # Given an empty command cgroup of a process that is gone (a horse SIGKILLed mid-command)
    found = parents()
    assert not isinstance(found, str), found
    gone = subprocess.Popen(["true"])
    gone.wait()  # its pid is free once it is reaped
    stale = [p / f"cmd-{gone.pid}-0" for p in {found.memory, found.pids}]
    for path in stale:
        path.mkdir()

    # When a process next finds the parents
    parents.cache_clear()
    parents()

    # Then they are gone
    assert [p for p in stale if p.exists()] == []
