"""Attacks on the LLM agents from the issue-9 review: the model's output, the repository's content and
the domain's files are the attacker's. Each test performs one for real (real bwrap, real git).

ATTACK tests: each fails while its hole is open and passes once it is closed.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from wavefleet.domains import Domains
from wavefleet.sandbox import BwrapSandbox
from workers.agent.context import LoopLimits
from workers.agent.team import commit_as
from workers.agent.tools import run_tool
from workers.git import Workspace, branch_name, git

pytestmark = pytest.mark.timeout(60)


def _hostile_nested_repo(marker: Path) -> str:
    """A shell command making `sub/` a repository whose clean filter runs `touch marker` (on whatever
    machine a git enters it), with a file the filter must run on (its stat differs from the index)."""
    filter_command = f'sh -c "touch {marker}; cat"'
    return (
        "set -e; git init -q sub; cd sub; "
        f"git config filter.x.clean '{filter_command}'; git config core.fsmonitor 'touch {marker}'; "
        "echo '* filter=x' > .gitattributes; echo one > f; "
        "git -c user.name=a -c user.email=b add -A; git -c user.name=a -c user.email=b commit -qm s; "
        "echo two > f; touch -d 2000-01-01 f"
    )


def test_attack_a_nested_repository_a_run_command_made_runs_nothing_on_the_host_at_commit(
    domains: Domains, tmp_path: Path
) -> None:
    # ATTACK: the model's sandboxed `run` makes sub/.git with a clean filter; the fleet's `git add -A`
    # and `status` (on the host, outside the sandbox) would enter it and run the filter there
    ws = Workspace(domains.get("auth"), tmp_path / "data")
    tree = ws.worktree(branch_name("AUTH-001", "be"))
    marker = tmp_path / "RAN-ON-THE-HOST"
    run = run_tool(BwrapSandbox(), tree, LoopLimits())
    assert run({"command": _hostile_nested_repo(marker)}).startswith("exit code 0")

    commit, files = commit_as(tree, "WAVE be (w1) <wave-be@localhost>", "AUTH-001 round 1: be")

    assert not marker.exists(), "the nested repository's filter ran on the host"
    # And the model's files are committed as files, not as an opaque gitlink to a repository
    assert "sub/f" in files and "sub" not in files
    assert git(tree, "show", f"{commit}:sub/f") == "two"


def test_attack_folders_nested_thousands_deep_by_a_run_command_neither_crash_the_commit_nor_stay(
    domains: Domains, tmp_path: Path
) -> None:
    # ATTACK: Python 3.11's os.walk and shutil.rmtree recurse; a tree 1200 folders deep (a
    # shell can make) raised RecursionError in the host-side commit and worktree removal
    ws = Workspace(domains.get("auth"), tmp_path / "data")
    branch = branch_name("AUTH-001", "be")
    tree = ws.worktree(branch)
    run = run_tool(BwrapSandbox(), tree, LoopLimits())
    deep = "i=0; while [ $i -lt 1200 ]; do mkdir d && cd d || exit 1; i=$((i+1)); done; "
    deep += "git init -q s; echo x > f"
    assert run({"command": deep}).startswith("exit code 0")

    _, files = commit_as(tree, "WAVE be (w1) <wave-be@localhost>", "AUTH-001 round 1: be")

    assert len(files) == 1 and files[0].endswith("/d/f")
    # And the next round's fresh worktree of the branch replaces it, leaving nothing of the old one
    again = ws.worktree(branch, start="main")
    assert again == tree and not (tree / "d").exists()
