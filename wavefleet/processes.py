"""How the fleet's child processes die with the process that started them (Linux's parent-death signal)."""

from __future__ import annotations

import ctypes
import signal
from pathlib import Path

PR_SET_PDEATHSIG = 1


def die_with_parent(signum: int = signal.SIGKILL) -> None:
    """Ask the kernel to send `signum` to this process when the thread that forked it ends, even by
    SIGKILL. Called in a child before exec (or at the top of a forked one). Not Linux: a no-op, and
    the process may outlive its parent."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signum)
    except (OSError, AttributeError):
        pass


def term_with_parent() -> None:
    """SIGTERM when the starter dies: redis-server then shuts down cleanly (its AOF flushed), and a
    worker finishes as on any SIGTERM. For the processes `wave up` and `wave demo` start."""
    die_with_parent(signal.SIGTERM)


def processes_with(token: str) -> list[int]:
    """Live processes whose command line holds `token` (a unique argument given to a process
    expected to be gone, wherever it went: another session, another process group)."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if token in (entry / "cmdline").read_bytes().decode(errors="replace"):
                    found.append(int(entry.name))
            except OSError:
                continue
    return found
