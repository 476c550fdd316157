"""The sandbox, attacked for real: a test command gets no secret, no network, no fleet files, no survivors."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

import pytest
from pydantic import SecretStr
from redis import Redis

from wavefleet.config import Settings
from wavefleet.connection import connect
from wavefleet.domains import Domains, load_domains
from wavefleet.embedded import EmbeddedRedis
from wavefleet.halt import send_halt
from wavefleet.lifecycle import Role
from wavefleet.messages import StageResult
from wavefleet.processes import processes_with
from wavefleet.sandbox import BwrapSandbox, NoSandbox
from wavefleet.sandbox.fleet import summary
from wavefleet.store import StoryStore
from wavefleet.stories import Story
from wavefleet.testing import Processes, env_of, fast_settings, wait_until
from workers import commands
from workers.git import git

API_KEY = "sk-ant-test-key-that-must-never-leak"  # a marker, not a credential
# What a hostile test command tries: every line it prints is checked by the tests below.
ATTACK = """
import json, os, socket, subprocess, sys, time
def wave(pairs):  # the fleet's secrets, the attacker's prize (only those: QA keeps 4000 chars)
    secret = ("KEY", "PASSWORD", "URL")
    return [p for p in pairs if p.startswith("WAVE_") and p.split("=")[0].endswith(secret)]
found = {"env": sorted(os.environ), "wave_env": wave(f"{k}={v}" for k, v in os.environ.items())}
for path in ["/proc/1/environ", *sys.argv[1:]]:
    try:
        if path.endswith("environ"):
            found[path] = wave(open(path, "rb").read().decode(errors="replace").split("\\0"))
        else:
            found[path] = sorted(os.listdir(path)) if os.path.isdir(path) else open(path).read()[:200]
    except OSError as exc:
        found[path] = type(exc).__name__
try:
    socket.create_connection(("127.0.0.1", __PORT__), timeout=2)
    found["redis"] = "connected"
except OSError as exc:
    found["redis"] = type(exc).__name__
quiet = subprocess.DEVNULL
child = subprocess.Popen(["setsid", "sleep", "__SLEEP__"], stdout=quiet, stderr=quiet)
found["child_alive"] = child.poll() is None
print("ATTACK " + json.dumps(found))
time.sleep(__HOLD__)
"""


def attack_script(port: int, sleep_token: str, hold_s: float) -> str:
    return (
        ATTACK.replace("__PORT__", str(port))
        .replace("__SLEEP__", sleep_token)
        .replace("__HOLD__", str(hold_s))
    )


def hostile_domain(domains_dir: Path, script: str, *reads: Path, network: bool = False) -> None:
    """Make the auth domain's test command the attack script (shipped in the repository, as any
    repository's tests are), reading `reads`."""
    sample = domains_dir / "auth" / "sample"
    (sample / "attack.py").write_text(script)
    toml = domains_dir / "auth" / "domain.toml"
    command = json.dumps(["{python}", "attack.py", *map(str, reads)])
    text = toml.read_text().replace('base_branch = "main"', f'base_branch = "main"\ntest_command = {command}')
    if network:
        text += "\n[sandbox]\nnetwork = true\n"
    toml.write_text(text)


def qa_result(store: StoryStore, story_id: str) -> StageResult | None:
    return store.latest_result(store.get(story_id), Role.QA, round_=1)


def attack_report(store: StoryStore, story_id: str) -> dict[str, Any]:
    result = qa_result(store, story_id)
    assert result is not None and result.ok, result
    tail = str(result.output["output_tail"])
    line = next((x for x in tail.splitlines() if x.startswith("ATTACK ")), None)
    assert line is not None, tail
    return dict(json.loads(line.removeprefix("ATTACK ")))


@pytest.fixture
def secret_settings(redis_proc: EmbeddedRedis, tmp_path: Path, domains_dir: Path) -> Settings:
    redis_proc.client().flushall()
    # A key in the worker's environment is the prize; the offline agents run the stages (with a key,
    # `auto` would pick the LLM agents, and no model answers here).
    return fast_settings(
        redis_proc,
        tmp_path / "data",
        domains_dir,
        anthropic={"api_key": SecretStr(API_KEY)},
        agent="offline",
    )


@pytest.mark.slow
def test_a_test_command_finds_no_secret_no_redis_no_fleet_file_and_leaves_no_survivor(
    secret_settings: Settings, redis_proc: EmbeddedRedis, tmp_path: Path, domains_dir: Path
) -> None:
    # Given a worker holding a model key and the Redis password, and a repository whose tests attack
    token = f"1000.{uuid.uuid4().int % 10**9}"
    data = secret_settings.data_dir
    password_file = data / "redis" / "password"  # where `wave up` keeps the embedded Redis's password
    password_file.parent.mkdir(parents=True)
    password_file.write_text(redis_proc.password)
    reads = (password_file, data / "repos" / "auth" / "clone", redis_proc.directory, Path.cwd() / ".env")
    hostile_domain(domains_dir, attack_script(redis_proc.port, token, 0), *reads)
    procs = Processes(secret_settings, tmp_path / "logs")
    store = StoryStore(connect(secret_settings), secret_settings.keys, 3)
    try:
        procs.team("auth")
        procs.supervisor()
        store.enqueue([Story(id="AUTH-700", title="attack")], load_domains(domains_dir))

        # When its QA stage has run the test command
        wait_until(lambda: qa_result(store, "AUTH-700"), timeout_s=120, diagnose=procs.logs)
        found = attack_report(store, "AUTH-700")
    finally:
        procs.stop_all()

    # Then it saw none of the worker's environment, no fleet file, no Redis, and its child is gone
    shown = json.dumps(found)
    for secret in (API_KEY, redis_proc.password, "WAVE_", "redis://"):
        assert secret not in shown, secret
    assert set(found["env"]) <= {"PATH", "HOME", "LANG", "LC_ALL", "LC_CTYPE", "TZ", "TMPDIR", "PWD",
                                 "PYTHONDONTWRITEBYTECODE"}  # fmt: skip
    assert [found[str(p)] for p in reads] == ["FileNotFoundError"] * len(reads)
    assert found["redis"] in ("ConnectionRefusedError", "OSError")
    assert found["child_alive"] is True
    # The child would sleep 1000 s; bwrap's PID namespace ends it when the command ends, at once.
    wait_until(lambda: not processes_with(token), timeout_s=5, message="the setsid child to be gone")


@pytest.mark.slow
def test_a_halt_kills_the_sandboxed_command_and_its_setsid_child(
    procs: Processes, settings: Settings, store: StoryStore, redis: Redis, redis_proc: EmbeddedRedis
) -> None:
    # Given a QA stage whose test command left a detached child and is still running
    token = f"1000.{uuid.uuid4().int % 10**9}"
    hostile_domain(settings.domains_dir, attack_script(redis_proc.port, token, 1000))
    procs.team("auth")
    procs.supervisor()
    store.enqueue([Story(id="AUTH-701", title="attack")], load_domains(settings.domains_dir))
    wait_until(lambda: processes_with(token), timeout_s=120, message="the setsid child", diagnose=procs.logs)

    # When the fleet is halted
    send_halt(redis, settings.keys, "test", "test")

    # Then the command and its detached child are gone (else they would live 1000 s)
    wait_until(lambda: not processes_with(token), timeout_s=5, message="the setsid child to be gone")


def test_bwrap_keeps_only_the_tail_of_endless_output_and_kills_on_timeout(tmp_path: Path) -> None:
    # Given a command printing 5 MB, and one that never ends
    printer = [sys.executable, "-c", "import sys; sys.stdout.write('x' * 5_000_000 + 'END')"]
    sleeper = ["sleep", "1000"]

    # When each runs in the sandbox with a 1000-byte cap and a 2 s timeout
    outcome = commands.run_in(BwrapSandbox(), printer, tmp_path, timeout_s=60, max_output_bytes=1000)
    with pytest.raises(subprocess.TimeoutExpired):
        commands.run_in(BwrapSandbox(), sleeper, tmp_path, timeout_s=2, max_output_bytes=1000)

    # Then only the last 1000 bytes are kept, and the endless one was stopped
    assert outcome.exit_code == 0 and outcome.truncated
    assert len(outcome.output) == 1000 and outcome.output.endswith("END")


def test_the_worktree_is_the_only_writable_place(tmp_path: Path) -> None:
    # Given a worktree and a file beside it (as the fleet's other worktrees are)
    tree, beside = tmp_path / "tree", tmp_path / "beside"
    tree.mkdir()
    beside.write_text("other story")
    code = (
        "import pathlib, sys\n"
        "pathlib.Path('written').write_text('ok')\n"
        "for p in sys.argv[1:]:\n"
        "    try: pathlib.Path(p).write_text('x'); print('WROTE', p)\n"
        "    except OSError as e: print(type(e).__name__)\n"
    )

    # When a command writes in the worktree, beside it, and into the system and the fleet's Python
    argv = [sys.executable, "-c", code, str(beside), "/usr/wave-probe", f"{sys.prefix}/wave-probe"]
    outcome = commands.run_in(BwrapSandbox(), argv, tree, timeout_s=60, max_output_bytes=10_000)

    # Then only the worktree took the write (the file beside it is not there: the path lands in the
    # sandbox's private /tmp, and the host's file is untouched)
    assert outcome.exit_code == 0, outcome.output
    assert "WROTE /usr" not in outcome.output and f"WROTE {sys.prefix}" not in outcome.output
    assert (tree / "written").read_text() == "ok" and beside.read_text() == "other story"
    assert not Path("/usr/wave-probe").exists() and not Path(f"{sys.prefix}/wave-probe").exists()


def test_no_sandbox_still_builds_the_environment_from_the_allow_list(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("WAVE_ANTHROPIC__API_KEY", API_KEY)
    argv = [sys.executable, "-c", "import os; print(sorted(os.environ))"]

    outcome = commands.run_in(NoSandbox(), argv, tmp_path, timeout_s=60, max_output_bytes=10_000)

    assert "WAVE_" not in outcome.output and API_KEY not in outcome.output


@pytest.mark.slow
@pytest.mark.parametrize(
    ("fake_bwrap", "problem"),
    [
        (None, "sandbox: bwrap not found on PATH"),
        ("echo 'bwrap: No permissions to create new namespace' >&2; exit 1", "No permissions to create"),
    ],
    ids=["missing", "cannot-unshare"],
)
def test_a_worker_refuses_to_run_work_where_bwrap_cannot_run(
    settings: Settings, tmp_path: Path, fake_bwrap: str | None, problem: str
) -> None:
    # Given a machine without bwrap, or one whose bwrap cannot make namespaces (a locked-down container)
    if fake_bwrap is not None:
        (tmp_path / "bwrap").write_text(f"#!/bin/sh\n{fake_bwrap}\n")
        (tmp_path / "bwrap").chmod(0o755)
    env = {**env_of(settings), "PATH": str(tmp_path)}

    # When a worker starts
    proc = subprocess.run(
        [sys.executable, "-m", "wavefleet.cli", "worker", "--domain", "auth", "--role", "qa"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )

    # Then it refuses with one line naming the problem and both ways out
    assert proc.returncode == 78, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and problem in lines[0]
    assert "apt-get install bubblewrap" in lines[0] and "WAVE_SANDBOX=none" in lines[0]


@pytest.mark.slow
def test_an_unsandboxed_worker_says_so_in_every_log_line_and_in_status(
    settings: Settings, tmp_path: Path, redis: Redis
) -> None:
    # Given a worker the operator started with WAVE_SANDBOX=none
    bare = settings.model_copy(update={"sandbox": "none"})
    procs = Processes(bare, tmp_path / "logs")
    try:
        procs.worker("auth", "qa")
        wait_until(lambda: summary(redis, settings.keys), message="the worker's sandbox record")

        # When the operator asks for the status
        status = subprocess.run(
            [sys.executable, "-m", "wavefleet.cli", "status"],
            env=env_of(settings),
            capture_output=True,
            text=True,
            timeout=60,
            check=True,
        ).stdout
    finally:
        procs.stop_all()

    # Then status and every log line say UNSANDBOXED
    assert "sandbox: none (UNSANDBOXED)" in status
    lines = [json.loads(x) for x in procs.logs().splitlines() if x.startswith("{")]
    assert lines and all(x.get("sandbox") == "none (UNSANDBOXED)" for x in lines), lines


@pytest.mark.slow
def test_status_names_the_sandbox_and_the_domains_allowed_network(
    procs: Processes, settings: Settings, redis: Redis
) -> None:
    # Given the auth domain allowing its commands the network, and one worker of each domain
    hostile_domain(settings.domains_dir, "print('ok')", network=True)
    procs.worker("auth", "qa")
    procs.worker("payments", "qa")
    wait_until(lambda: len(redis.hgetall(settings.keys.worker_sandboxes())) == 2, message="both records")

    # When the status line is built (as `wave status` prints it)
    line = summary(redis, settings.keys)

    # Then it names bwrap and the one domain with network
    assert line == "sandbox: bwrap; network allowed: auth"


def test_a_domain_may_allow_network_and_nothing_else_in_its_sandbox_section(
    domains_dir: Path, domains: Domains
) -> None:
    toml = domains_dir / "auth" / "domain.toml"
    toml.write_text(toml.read_text() + "\n[sandbox]\nnetwork = true\n")
    assert load_domains(domains_dir).get("auth").sandbox.network is True
    assert domains.get("payments").sandbox.network is False
    toml.write_text(toml.read_text() + "root = true\n")
    with pytest.raises(Exception, match=r"sandbox\.root"):
        load_domains(domains_dir)
    assert os.environ.get("WAVE_SANDBOX") is None  # the suite itself runs sandboxed by default


def test_the_sandboxed_command_holds_no_capability_and_cannot_read_password_hashes(tmp_path: Path) -> None:
    # Given a worker running as root (as in a container): root keeps every capability unless dropped,
    # and with CAP_MKNOD a command could make a node for the host's disk and read the data dir from it
    code = (
        "import os, re\n"
        "print('CapEff', re.search(r'CapEff:\\s*(\\w+)', open('/proc/self/status').read())[1])\n"
        "try:\n"
        "    print('shadow', len(open('/etc/shadow').read()))\n"
        "except OSError as exc: print('shadow', type(exc).__name__)\n"
        "try:\n"
        "    os.mknod('disk', 0o600 | 0o60000, os.makedev(8, 0)); print('mknod ok')\n"
        "except OSError as exc: print('mknod', type(exc).__name__)\n"
    )

    # When a command in the sandbox looks at its capabilities and tries them
    outcome = commands.run_in(
        BwrapSandbox(), [sys.executable, "-c", code], tmp_path, timeout_s=60, max_output_bytes=10_000
    )

    # Then it has none, sees no password hash, and cannot make a device node
    assert outcome.exit_code == 0, outcome.output
    assert "CapEff 0000000000000000" in outcome.output
    assert re.search(r"shadow (0|PermissionError|FileNotFoundError)\n", outcome.output)
    assert "mknod PermissionError" in outcome.output


@pytest.mark.parametrize("command", ["up", "demo"])
def test_wave_up_and_demo_refuse_before_starting_anything_where_bwrap_is_missing(
    settings: Settings, tmp_path: Path, command: str
) -> None:
    # Given a machine without bwrap and no Redis URL (the embedded fleet would start its own)
    env = {k: v for k, v in env_of(settings).items() if not k.startswith("WAVE_REDIS__")}
    env |= {"PATH": str(tmp_path / "empty"), "WAVE_DATA_DIR": str(tmp_path / "data")}

    # When the operator starts the embedded fleet
    proc = subprocess.run(
        [sys.executable, "-m", "wavefleet.cli", command, *(["--no-view"] if command == "up" else [])],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )

    # Then it refuses in one line and started nothing (no Redis, no data dir)
    assert proc.returncode == 78, proc.stderr
    assert proc.stderr.strip().splitlines() == [
        "wave: error: sandbox: bwrap not found on PATH; install bubblewrap (apt-get install bubblewrap) "
        "or set WAVE_SANDBOX=none to run work unsandboxed"
    ]
    assert not (tmp_path / "data").exists()


def _worktree(tmp_path: Path) -> Path:
    """A real worktree of a real clone: its `.git` is a file naming the git dir outside it."""
    repo, tree = tmp_path / "repo", tmp_path / "tree"
    subprocess.run(["git", "init", "-q", "-b", "main", str(repo)], check=True)
    ident = ["-c", "user.name=t", "-c", "user.email=t@x"]
    subprocess.run(["git", *ident, "-C", str(repo), "commit", "-q", "--allow-empty", "-m", "x"], check=True)
    subprocess.run(["git", "-C", str(repo), "worktree", "add", "-q", str(tree), "-b", "t"], check=True)
    return tree


# Points the worktree's .git at a git dir the command made, whose config runs a command of its
# choice whenever git reads the index there (core.fsmonitor): on the host, where the fleet's git runs.
SWAP_GIT_DIR = (
    "git init -q --bare evil && "
    "printf '[core]\\n\\trepositoryformatversion = 0\\n\\tfsmonitor = \"touch {flag}; false\"\\n' "
    "> evil/config && "
    'echo "gitdir: $PWD/evil" > .git'
)


def test_a_sandboxed_command_cannot_swap_the_worktrees_git_dir_for_one_that_runs_on_the_host(
    tmp_path: Path,
) -> None:
    # Given a worktree, and a test command (QA's runs as this one does) that rewrites its .git
    tree, flag = _worktree(tmp_path), tmp_path / "PWNED"
    original = (tree / ".git").read_text()
    argv = ["sh", "-c", SWAP_GIT_DIR.format(flag=flag) + " ; rm -f .git ; mv .git moved"]

    # When it runs in the sandbox, and then the fleet's git works in the worktree (commit, diff)
    outcome = commands.run_in(BwrapSandbox(), argv, tree, timeout_s=60, max_output_bytes=10_000)
    git(tree, "status")
    git(tree, "add", "-A")

    # Then .git was read-only to it (not rewritten, removed or moved), and nothing ran on the host
    assert "Read-only file system" in outcome.output or "Device or resource busy" in outcome.output
    assert (tree / ".git").read_text() == original
    assert not flag.exists()


def test_the_fleets_git_runs_no_fsmonitor_command_even_from_a_swapped_git_dir(tmp_path: Path) -> None:
    # Given a worktree whose .git was swapped unsandboxed (WAVE_SANDBOX=none runs commands as is)
    tree, flag = _worktree(tmp_path), tmp_path / "PWNED"
    subprocess.run(["sh", "-c", SWAP_GIT_DIR.format(flag=flag)], cwd=tree, check=True)

    # When the fleet's git reads the worktree
    git(tree, "status")

    # Then the swapped config's fsmonitor command never ran
    assert not flag.exists()
