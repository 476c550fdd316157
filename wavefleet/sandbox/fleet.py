"""Which sandbox each live worker runs work in: probed at start, recorded in Redis, shown by `wave status`."""

from __future__ import annotations

import json
import subprocess
import tempfile
from pathlib import Path

from redis import Redis

from wavefleet.errors import ConfigError
from wavefleet.keys import Keys

from .base import UNSANDBOXED, Sandbox
from .bwrap import BwrapSandbox

PROBE_TIMEOUT_S = 10
HOW_TO_FIX = (
    "install bubblewrap (apt-get install bubblewrap) or set WAVE_SANDBOX=none to run work unsandboxed"
)


def probe(sandbox: Sandbox) -> None:
    """Run `true` in the sandbox once; raise ConfigError (one line, how to fix it) if it cannot run."""
    if sandbox.mode == "none":
        return
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
    modes = sorted({"bwrap" if e["mode"] == "bwrap" else UNSANDBOXED for e in entries})
    line = f"sandbox: {' / '.join(modes)}"
    bare = sorted({e["domain"] for e in entries if e["mode"] == "none"})
    if bare and len(modes) > 1:
        line += f" (unsandboxed: {', '.join(bare)})"
    networked = sorted({e["domain"] for e in entries if e["mode"] == "bwrap" and e["network"]})
    if networked:
        line += f"; network allowed: {', '.join(networked)}"
    return line
