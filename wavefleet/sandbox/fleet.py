"""Which sandbox each live worker runs work in: probed at start, recorded in Redis, shown by `wave status`."""

from __future__ import annotations

import json
import subprocess
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING

from redis import Redis
from redis.exceptions import RedisError

from wavefleet import logs
from wavefleet.errors import ConfigError, SandboxUnavailableError
from wavefleet.keys import Keys

from . import sandbox_for
from .base import UNSANDBOXED, LocalSandbox, RemoteSandbox, Sandbox
from .bwrap import BwrapSandbox
from .container import ContainerSandbox, runner_beat

if TYPE_CHECKING:
    from wavefleet.config import Settings

PROBE_TIMEOUT_S = 10
HOW_TO_FIX = (
    "install bubblewrap (apt-get install bubblewrap) or set WAVE_SANDBOX=none to run work unsandboxed"
)
# Compose starts the workers and the runner together, and the runner needs a few seconds (Docker
# client, its first sweep) before it beats: a worker waits this long for it rather than refusing and
# being restarted in a loop; a fleet with no runner at all is still told within it, in one line.
RUNNER_WAIT_S = 30.0
PING_TIMEOUT_S = 5.0
NO_RUNNER = (
    "no `wave sandbox` runner answers on this Redis: start it (`wave sandbox`, compose service "
    "`sandbox`) or set WAVE_SANDBOX=bwrap"
)


def probe(sandbox: Sandbox, *, runner_wait_s: float = RUNNER_WAIT_S) -> None:
    """Check the sandbox can run a command (bwrap: run `true`; container: the runner answers a ping);
    raise ConfigError (one line, how to fix it) if it cannot."""
    if isinstance(sandbox, ContainerSandbox):
        _probe_runner(sandbox, runner_wait_s)
    elif not isinstance(sandbox, RemoteSandbox) and sandbox.mode != "none":
        _probe_local(sandbox)


def probe_before_start(settings: Settings) -> None:
    """`wave up` and `wave demo` refuse before starting anything where the local sandbox cannot run.
    The container sandbox is probed by each worker instead: its runner answers on the fleet's Redis,
    which `wave up` may be about to start."""
    if settings.sandbox != "container":
        probe(sandbox_for(settings))


def _probe_runner(sandbox: ContainerSandbox, wait_s: float) -> None:
    deadline = time.monotonic() + wait_s
    told = False
    while True:
        try:
            beat = sandbox.runner()
        except RedisError:
            beat = None  # Redis not up yet either: waited for the same way, within the same bound
        if beat is not None or time.monotonic() >= deadline:
            break
        if not told:
            logs.get().warning("waiting for the `wave sandbox` runner", up_to_s=wait_s)
            told = True
        time.sleep(0.25)
    try:
        reply = sandbox.ping(PING_TIMEOUT_S)
    except (SandboxUnavailableError, RedisError):
        raise ConfigError(f"sandbox: {NO_RUNNER}") from None
    if reply.error:
        raise ConfigError(f"sandbox: the `wave sandbox` runner cannot start containers ({reply.error})")


def _probe_local(sandbox: LocalSandbox) -> None:
    if isinstance(sandbox, BwrapSandbox) and sandbox.binary is None:
        raise ConfigError(f"sandbox: bwrap not found on PATH; {HOW_TO_FIX}")
    with tempfile.TemporaryDirectory(prefix="wave-sandbox-probe-") as scratch:
        invocation = sandbox.wrap(["true"], Path(scratch))
        try:
            proc = subprocess.run(
                invocation.argv,
                env=invocation.env,
                cwd=scratch,
                capture_output=True,
                text=True,
                timeout=PROBE_TIMEOUT_S,
                check=False,
            )
        except (OSError, subprocess.TimeoutExpired) as exc:
            problem = "bwrap not found" if isinstance(exc, FileNotFoundError) else str(exc)
        else:
            lines = proc.stderr.strip().splitlines()
            problem = (lines[-1] if lines else f"exit {proc.returncode}") if proc.returncode else ""
    if problem:
        raise ConfigError(f"sandbox: bubblewrap cannot run here ({problem}); {HOW_TO_FIX}")


def record(redis: Redis, keys: Keys, worker: str, domain: str, sandbox: Sandbox) -> None:
    entry = {"mode": sandbox.mode, "label": sandbox.label, "domain": domain, "network": sandbox.network}
    redis.hset(keys.worker_sandboxes(), worker, json.dumps(entry))


def forget(redis: Redis, keys: Keys, worker: str) -> None:
    redis.hdel(keys.worker_sandboxes(), worker)


def summary(redis: Redis, keys: Keys) -> str | None:
    """One line for `wave status`: the sandbox of the live workers, which domains may reach the
    network, and loudly, which workers run unsandboxed. None when no worker is alive."""
    entries = [
        json.loads(raw)
        for name, raw in redis.hgetall(keys.worker_sandboxes()).items()
        if redis.exists(keys.worker_heartbeat(name))
    ]
    if not entries:
        return None
    modes = sorted({_mode_shown(redis, keys, e["mode"]) for e in entries})
    line = f"sandbox: {' / '.join(modes)}"
    bare = sorted({e["domain"] for e in entries if e["mode"] == "none"})
    if bare and len(modes) > 1:
        line += f" (unsandboxed: {', '.join(bare)})"
    networked = sorted({e["domain"] for e in entries if e["mode"] != "none" and e["network"]})
    if networked:
        line += f"; network allowed: {', '.join(networked)}"
    return line


def _mode_shown(redis: Redis, keys: Keys, mode: str) -> str:
    if mode == "bwrap":
        return "bwrap"
    if mode != "container":
        return UNSANDBOXED
    beat = runner_beat(redis, keys)
    if beat is None:
        return "container (NO RUNNER ALIVE: start `wave sandbox`; stages wait and retry)"
    about = [f"runner {beat['name']}" if beat.get("name") else "runner", "alive"]
    if beat.get("image"):
        about.append(f"image {beat['image']}")
    return f"container ({', '.join(about)})"
