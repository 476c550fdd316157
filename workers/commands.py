"""Every command a stage runs (git, the repository's tests, waits) goes through `run`.

The command stays in the work horse's process group, so a halt's SIGKILL to that group reaches it,
and it dies with the horse: if the worker is SIGKILLed, the horse dies (its own parent-death
signal) and so does the command. Without that, an orphaned `git clone` would keep writing into a
folder the stage's next attempt is about to build.
"""

from __future__ import annotations

import ctypes
import signal
import subprocess
from collections.abc import Mapping, Sequence
from pathlib import Path

PR_SET_PDEATHSIG = 1


def die_with_parent() -> None:
    """Ask the kernel to SIGKILL this process when the thread that forked it ends (Linux only)."""
    try:
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    except OSError:  # not Linux: the process may outlive its parent
        pass


def run(
    argv: Sequence[str],
    *,
    cwd: Path | None = None,
    timeout_s: float | None = None,
    env: Mapping[str, str] | None = None,
) -> subprocess.CompletedProcess[str]:
    """Run to completion and capture text output; raises `subprocess.TimeoutExpired` (the command
    killed) after `timeout_s`. The return code is the caller's to judge."""
    return subprocess.run(
        list(argv),
        check=False,
        cwd=cwd,
        env=dict(env) if env is not None else None,
        capture_output=True,
        text=True,
        timeout=timeout_s,
        preexec_fn=die_with_parent,  # safe: a work horse runs no other threads
    )
