"""Every command a stage runs (git, the repository's tests, waits) goes through `run` or `run_capped`.

The command stays in the work horse's process group, so a halt's SIGKILL to that group reaches it,
and it dies with the horse: if the worker is SIGKILLed, the horse dies (its own parent-death
signal) and so does the command (util-linux `setpriv --pdeathsig KILL`). Without that, an orphaned
`git clone` would keep writing into a folder the stage's next attempt is about to build.

Why `setpriv` and not `preexec_fn`: a `preexec_fn` makes Python fork instead of vfork, and a fork of
a process running gRPC threads (the xAI SDK) runs gRPC's fork handlers, which broke the child.
"""

from __future__ import annotations

import os
import selectors
import shutil
import subprocess
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

from redis.exceptions import RedisError

from wavefleet import logs
from wavefleet.errors import SandboxLimitError, SandboxUnavailableError
from wavefleet.metric_counts import LIMIT_HIT_PREFIX, SANDBOX_COMMANDS, count
from wavefleet.sandbox import Outcome, RemoteSandbox, Sandbox
from wavefleet.sandbox.limits import WATCH_INTERVAL_S, confined, limit_error

from . import runtime

__all__ = ["Outcome", "host_env", "run", "run_capped", "run_in"]

SETPRIV = shutil.which("setpriv")  # util-linux, on every Debian and Ubuntu; elsewhere run plainly
READ_CHUNK = 65536
# What the fleet's own host tools (git, the search process) never need and must not hold: a filter or
# pager git is tricked into running would otherwise read the Redis password and the model keys.
SECRET_PREFIXES = ("WAVE_", "REDIS_")
SECRET_NAMES = frozenset({"ANTHROPIC_API_KEY", "XAI_API_KEY", "DOZZLE_PASSWORD"})


def host_env() -> dict[str, str]:
    """The worker's environment without its secrets: for the fleet's own tools that run unsandboxed
    (git keeps HOME, PATH, SSH_AUTH_SOCK and the like, which a push may need)."""
    return {
        name: value
        for name, value in os.environ.items()
        if not name.startswith(SECRET_PREFIXES) and name not in SECRET_NAMES
    }


def run(
    argv: Sequence[str],
    *,
    cwd: Path | None = None,
    timeout_s: float | None = None,
    env: Mapping[str, str] | None = None,
) -> subprocess.CompletedProcess[str]:
    """Run to completion and capture text output, with `host_env()` unless `env` is given; raises
    `subprocess.TimeoutExpired` (the command killed) after `timeout_s`, and FileNotFoundError if the
    program is not on PATH. The return code is the caller's to judge."""
    env = host_env() if env is None else env
    path = env.get("PATH")
    if os.sep not in argv[0] and shutil.which(argv[0], path=path) is None:  # setpriv would exit 127
        raise FileNotFoundError(f"{argv[0]}: not found on PATH")
    prefix = [SETPRIV, "--pdeathsig", "KILL", "--"] if SETPRIV else []
    return subprocess.run(
        [*prefix, *argv],
        check=False,
        cwd=cwd,
        stdin=subprocess.DEVNULL,  # never the operator's terminal (see run_capped)
        env=dict(env),
        capture_output=True,
        text=True,
        timeout=timeout_s,
    )


def run_in(
    sandbox: Sandbox, argv: Sequence[str], worktree: Path, *, timeout_s: float, max_output_bytes: int
) -> Outcome:
    """Run a command that does work (a test command, an agent's command) inside `sandbox`: a local
    one is started here, a remote one runs it where it lives. Raises `subprocess.TimeoutExpired`
    (the command killed), SandboxUnavailableError if the sandbox itself could not run it, and, from
    SandboxLimitError (the command hit its memory or pids limit and was killed: the stage fails)."""
    if isinstance(sandbox, RemoteSandbox):
        return sandbox.execute(list(argv), worktree, timeout_s=timeout_s, max_output_bytes=max_output_bytes)
    invocation = sandbox.wrap(list(argv), worktree)
    if shutil.which(invocation.argv[0], path=invocation.env.get("PATH")) is None:  # before a prefix hides it
        raise FileNotFoundError(f"{invocation.argv[0]}: not found on PATH")
    timed_out = False
    with confined(sandbox.limits) as confinement:
        try:
            outcome = run_capped(
                [*confinement.prefix, *invocation.argv],
                cwd=invocation.cwd,
                env=invocation.env,
                timeout_s=timeout_s,
                max_output_bytes=max_output_bytes,
                watch=confinement.watch,
            )
        except subprocess.TimeoutExpired:
            timed_out = True
    # A limit hit first is the reason, even when the command then ran into the time bound.
    limit = confinement.hit
    _count_local(sandbox.mode, hit=limit.split()[0] if limit else "time" if timed_out else None)
    if limit:
        raise SandboxLimitError(limit_error(limit, list(argv)))
    if timed_out:
        raise subprocess.TimeoutExpired(list(argv), timeout_s)
    if outcome.exit_code != 0 and (why := sandbox.unavailable(outcome.exit_code, outcome.output, worktree)):
        raise SandboxUnavailableError(why)
    return outcome


def _count_local(mode: str, *, hit: str | None) -> None:
    """Count a local sandbox's command for /metrics (the container runner counts its own), in a
    worker only; a Redis hiccup costs the count, never the command."""
    rt = runtime.installed()
    if rt is None:
        return
    try:
        with rt.redis.pipeline(transaction=False) as pipe:
            count(pipe, rt.settings.keys, f"{SANDBOX_COMMANDS}:{mode}")
            if hit:  # "memory", "pids", "time"
                count(pipe, rt.settings.keys, f"{LIMIT_HIT_PREFIX}:{hit}")
            pipe.execute()
    except RedisError as exc:
        logs.get().warning("sandbox command not counted", error=str(exc).splitlines()[0])


def run_capped(
    argv: Sequence[str],
    *,
    cwd: Path,
    env: Mapping[str, str],
    timeout_s: float,
    max_output_bytes: int,
    head: bool = False,
    watch: Callable[[], None] | None = None,
) -> Outcome:
    """Like `run`, for commands whose output the stage does not control: keeps only the last
    `max_output_bytes` of it (the end is where test runners summarise), so a command printing
    without end cannot fill the worker's memory; with `head`, the first ones, and the command is
    killed once it has printed them (its exit code is then the kill's). `watch` is called every
    WATCH_INTERVAL_S while it runs (a cgroup's limits: it kills on a hit). Raises
    `subprocess.TimeoutExpired` after `timeout_s`, the command killed."""
    if os.sep not in argv[0] and shutil.which(argv[0], path=env.get("PATH")) is None:
        raise FileNotFoundError(f"{argv[0]}: not found on PATH")
    prefix = [SETPRIV, "--pdeathsig", "KILL", "--"] if SETPRIV else []
    # stdin is never the worker's: under `wave up` that is the operator's terminal, open read-write, where
    # a command could write escape sequences past every filter and read what the operator types.
    proc = subprocess.Popen(
        [*prefix, *argv],
        cwd=cwd,
        env=dict(env),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    deadline = time.monotonic() + timeout_s
    with proc:
        try:
            kept, truncated = _read_tail(proc, deadline, max_output_bytes, head, watch)
            if truncated and head:
                proc.kill()
            exit_code = proc.wait(timeout=max(deadline - time.monotonic(), 0.1))
        except subprocess.TimeoutExpired:
            proc.kill()
            raise subprocess.TimeoutExpired(list(argv), timeout_s) from None
    return Outcome(exit_code, kept.decode(errors="replace"), truncated)


def _read_tail(
    proc: subprocess.Popen[bytes],
    deadline: float,
    cap: int,
    head: bool = False,
    watch: Callable[[], None] | None = None,
) -> tuple[bytearray, bool]:
    """Read `proc`'s output until it closes, keeping the last `cap` bytes (with `head`: the first
    `cap`, and stop reading there); TimeoutExpired at `deadline`."""
    assert proc.stdout is not None  # started with stdout=PIPE
    kept, truncated = bytearray(), False
    with selectors.DefaultSelector() as selector:
        selector.register(proc.stdout, selectors.EVENT_READ)
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise subprocess.TimeoutExpired(proc.args, remaining)
            ready = selector.select(min(remaining, WATCH_INTERVAL_S) if watch else remaining)
            if watch:
                watch()
            if not ready:
                continue
            chunk = os.read(proc.stdout.fileno(), READ_CHUNK)
            if not chunk:
                return kept, truncated
            kept += chunk
            if head and len(kept) > cap:
                del kept[cap:]
                return kept, True
            if len(kept) > cap:
                del kept[: len(kept) - cap]
                truncated = True
