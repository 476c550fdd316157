"""Attacks on `wave sandbox` performed for real (a real runner, engine and Redis): what a compromised
worker could ask of the runner, and what a command could leave behind in its stage container."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from sandbox_harness import Runner, acl_redis, fleet_containers, runner

pytestmark = pytest.mark.docker
__all__ = ["acl_redis", "runner"]  # fixtures

# Swaps a directory and a symlink in place, atomically and forever (renameat2 RENAME_EXCHANGE):
# the path is a real folder at one instant and a symlink out of the data dir at the next.
SWAPPER = """
import ctypes, sys
libc = ctypes.CDLL(None, use_errno=True)
a, b = sys.argv[1].encode(), sys.argv[2].encode()
while True:
    libc.renameat2(-100, a, -100, b, 2)
"""
RACE_ATTEMPTS = 40  # unfixed, about one attempt in five binds the symlink's target (seen: 4-12 of 40)


def test_a_worktree_swapped_for_a_symlink_while_its_container_starts_is_never_bound(
    runner: Runner,
) -> None:
    """A compromised worker (it can write the data dir) flips its worktree between a real folder and
    a symlink to a host folder outside the data dir while asking for commands: the runner's path
    check sees the folder, the engine's bind may follow the symlink. No command may ever run with
    the host folder at /workspace (compose: a symlink to `/` and a user with the socket's group is
    the host)."""
    outside = runner.root / "outside"
    outside.mkdir()
    (outside / "secret.txt").write_text("HOST-SECRET\n")
    outside.chmod(0o755)
    tree = runner.worktree("race")
    link = tree.with_name("race-link")
    link.symlink_to(outside)
    swapper = subprocess.Popen([sys.executable, "-c", SWAPPER, str(tree), str(link)])
    leaked, ran, refused = 0, 0, 0
    try:
        for attempt in range(RACE_ATTEMPTS):
            labels = runner.labels(f"job-race-{attempt}")
            runner.running(labels)
            reply = runner.exec(labels, tree, ["cat", "/workspace/secret.txt"])
            if reply.error:
                refused += 1
            else:
                ran += 1
                leaked += "HOST-SECRET" in reply.output
            runner.release(labels)
    finally:
        swapper.kill()
        swapper.wait(timeout=30)
    assert leaked == 0, f"{leaked} of {RACE_ATTEMPTS} commands ran with the host folder at /workspace"
    assert ran > 0 and ran + refused == RACE_ATTEMPTS  # the check stops the swapped ones only


def test_a_process_a_command_leaves_running_dies_before_its_reply(runner: Runner) -> None:
    """A command starts a process that lets go of the output and keeps writing in the worktree. Under
    bwrap it would die with its command; in a warm container it would go on while the worker's own
    unsandboxed git and file tools work on the worktree between commands (racing their symlink
    checks), and until the stage's release. The runner ends the container instead (the next command
    gets a new one)."""
    labels = runner.labels("job-linger")
    runner.running(labels)
    tree = runner.worktree("linger")
    linger = "setsid sh -c 'echo $$ > /workspace/pid; while :; do date > /workspace/out; sleep 0.1; done' "
    reply = runner.exec(labels, tree, ["sh", "-c", linger + "</dev/null >/dev/null 2>&1 & echo left"])
    assert reply.exit_code == 0 and reply.output == "left\n", reply
    # Before the reply came, the process was gone: in the next command, wherever it runs, it is not.
    pid = (tree / "pid").read_text().strip()
    check = runner.exec(labels, tree, ["sh", "-c", f"kill -0 {pid} 2>/dev/null && echo alive || echo gone"])
    assert check.output == "gone\n", check
    usage = runner.release(labels).usage
    assert usage is not None and usage.commands == 2


def test_a_user_that_is_not_the_worktree_s_owner_is_refused(runner: Runner) -> None:
    """A compromised worker picks the container's uid:gid: with the Docker socket's group, a command
    would leave a setgid-docker program in the worktree, which any host process may then run to
    reach the socket (the engine is root). The user must be the worktree's owner (root's: the
    fallback uid with its group), as a worker's own requests are."""
    docker_gid = Path("/var/run/docker.sock").stat().st_gid
    labels = runner.labels("job-user")
    runner.running(labels)
    tree = runner.worktree("user")
    tree.chmod(0o777)  # the worker's own worktree: it lets any uid write there
    plant = "cp /bin/true /workspace/p && chmod 2755 /workspace/p && id -g"
    reply = runner.exec(labels, tree, ["sh", "-c", plant], user=f"10001:{docker_gid}")
    assert reply.error and "owner" in reply.error and not (tree / "p").exists(), reply
    reply = runner.exec(labels, tree, ["id", "-u"], user="1:0")  # another uid with root's group
    assert reply.error and "owner" in reply.error, reply
    assert runner.exec(labels, tree, ["id", "-g"]).output == "0\n"  # the fallback uid, the tree's group


@pytest.mark.parametrize(
    "where",
    [
        "",  # the data dir itself
        "redis",  # its other files (`wave up` keeps the Redis passwords there)
        "repos/auth",  # the domain's folder: its clone's .git writable at /workspace/clone/.git
        "repos/auth/clone",  # the clone the fleet's own git works in
        "repos/auth/worktrees",  # every stage's worktree at once
        "repos/auth/worktrees/mine/sub",  # a folder inside a worktree
        "worktrees/mine",  # a folder that is not where a worker makes worktrees
    ],
)
def test_a_folder_of_the_data_dir_that_is_not_a_worktree_is_never_bound(runner: Runner, where: str) -> None:
    """A compromised worker names another folder of the data dir as its worktree. Bound at
    /workspace, the domain's clone (through `repos/<domain>`, where its `.git` is not the read-only
    /workspace/.git) would take a `core.fsmonitor` that the fleet's git then runs on the host. Only
    `<data>/repos/<domain>/worktrees/<name>` is a worktree (workers/git.py)."""
    runner.worktree("mine")
    folder = runner.root / "data" / where if where else runner.root / "data"
    folder.mkdir(parents=True, exist_ok=True)
    folder.chmod(0o775)  # the container's group may write: only the layout check stops the command
    labels = runner.labels("job-layout")
    runner.running(labels)

    reply = runner.exec(labels, folder, ["touch", "/workspace/pwned"])

    assert reply.error and "repos/<domain>/worktrees/<name>" in reply.error, reply
    assert not (folder / "pwned").exists()


def test_a_worker_faking_running_stages_gets_no_more_than_max_containers(runner: Runner) -> None:
    """A compromised worker writes running entries for made-up stages and asks for a command in
    each, all at once: every one would keep a warm container (memory, pids, an engine's slots) until
    the sweep. Beyond `max_containers` live ones, a new stage's first command is refused; the worker
    takes it as transient (SandboxUnavailableError) and retries the stage later."""
    runner.stop()
    runner.start(max_containers=2)
    stages = [runner.labels(f"job-cap-{i}", story=f"S-{i}") for i in range(5)]
    requests = []
    for stage in stages:
        runner.running(stage)
        requests.append(runner.send(runner.exec_request(stage, runner.worktree(stage.job), ["true"])))

    replies = [runner.reply(r) for r in requests]

    served = [r for r in replies if r.error is None]
    assert len(served) == 2 and all(r.exit_code == 0 for r in served), replies
    refusals = [r.error for r in replies if r.error is not None]
    assert len(refusals) == 3 and all("max_containers (2)" in e for e in refusals), refusals
    assert len(fleet_containers(runner.fleet)) == 2
    # a released stage frees its slot
    done = next(s for s, r in zip(stages, replies, strict=True) if r.error is None)
    waiting = next(s for s, r in zip(stages, replies, strict=True) if r.error is not None)
    runner.release(done)
    assert runner.exec(waiting, runner.domain_root / "worktrees" / waiting.job, ["true"]).exit_code == 0
