"""Every command a stage runs (git, the repository's tests, waits) goes through `run`.

The command stays in the work horse's process group, so a halt's SIGKILL to that group reaches it,
and it dies with the horse: if the worker is SIGKILLed, the horse dies (its own parent-death
signal) and so does the command (util-linux `setpriv --pdeathsig KILL`). Without that, an orphaned
`git clone` would keep writing into a folder the stage's next attempt is about to build.

Why `setpriv` and not `preexec_fn`: a `preexec_fn` makes Python fork instead of vfork, and a fork of
a process running gRPC threads (the xAI SDK) runs gRPC's fork handlers, which broke the child.
"""

from __future__ import annotations

import ctypes
import os
import shutil
import signal
import subprocess
from collections.abc import Mapping, Sequence
from pathlib import Path

PR_SET_PDEATHSIG = 1
SETPRIV = shutil.which("setpriv")  # util-linux, on every Debian and Ubuntu; elsewhere run plainly


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
    killed) after `timeout_s`, and FileNotFoundError if the program is not on PATH. The return code
    is the caller's to judge."""
    path = (env if env is not None else os.environ).get("PATH")
    if os.sep not in argv[0] and shutil.which(argv[0], path=path) is None:  # setpriv would exit 127
        raise FileNotFoundError(f"{argv[0]}: not found on PATH")
    prefix = [SETPRIV, "--pdeathsig", "KILL", "--"] if SETPRIV else []
    return subprocess.run(
        [*prefix, *argv],
        check=False,
        cwd=cwd,
        env=dict(env) if env is not None else None,
        capture_output=True,
        text=True,
        timeout=timeout_s,
    )
