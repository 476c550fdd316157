"""The local sandbox: bubblewrap, binding only what a command needs, the worktree the one writable place.

Inside: /usr, /etc and the fleet's Python read-only, the worktree read-write, a private /tmp, its own
/dev and /proc, and its own user, PID, IPC, UTS and (unless the domain allows network) network
namespaces. Nothing else of the host is there: not the fleet's data dir (the Redis password, the
AOF, other stories' worktrees), not a `.env`, not the worker's environment. When the command's
first process ends, or bwrap is killed (a halt, a cancel, a timeout), the kernel kills every
process left in its PID namespace, `setsid` children included.
"""

from __future__ import annotations

import functools
import shutil
import subprocess
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from .base import Invocation, allowed_env
from .limits import Limits, missing

if TYPE_CHECKING:
    from .protocol import StageLabels

# The system folders a command needs, bound read-only; on merged-/usr systems /bin, /lib... are
# symlinks into /usr and are recreated as such.
SYSTEM_DIRS = ("/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32", "/etc")
# Files of /etc a command never needs and must not read (a worker running as root could, being
# their owner): hidden behind /dev/null.
MASKED = ("/etc/shadow", "/etc/shadow-", "/etc/gshadow", "/etc/gshadow-", "/etc/sudoers", "/etc/ssh")


PROC_PROBE_TIMEOUT_S = 10
SETUP_FAILED = 1  # bwrap's exit code when it could not set the sandbox up (its message: `bwrap: ...`)


def bwrap_binary() -> str | None:
    return shutil.which("bwrap")


@functools.cache
def can_mount_proc(binary: str) -> bool:
    """Whether bwrap may mount a fresh procfs here. Inside a Docker container it may not: Docker
    masks parts of the container's /proc and the kernel then refuses a new procfs mount (EPERM).
    There the command gets an empty /proc instead, never the container's own, where it could read
    the worker's environment (same uid). Probed once per process; a work horse inherits the answer."""
    try:
        proc = subprocess.run(
            [binary, "--unshare-all", "--die-with-parent", "--ro-bind", "/", "/", "--proc", "/proc", "true"],
            capture_output=True,
            timeout=PROC_PROBE_TIMEOUT_S,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired):
        return False
    return proc.returncode == 0


def python_prefixes() -> list[Path]:
    """The folders the `{python}` of a test command lives in (a venv and the Python it was made from),
    unless they are already under a bound system folder."""
    prefixes = {
        Path(p).resolve() for p in (sys.prefix, sys.exec_prefix, sys.base_prefix, sys.base_exec_prefix)
    }
    bound = [Path(d) for d in SYSTEM_DIRS if Path(d).is_dir() and not Path(d).is_symlink()]
    return sorted(p for p in prefixes if not any(p.is_relative_to(b) for b in bound))


class BwrapSandbox:
    mode = "bwrap"
    python = sys.executable  # bound read-only inside (python_prefixes)

    def __init__(
        self, *, network: bool = False, binary: str | None = None, limits: Limits | None = None
    ) -> None:
        self.network = network
        self.binary = binary or bwrap_binary()  # None: not on the worker's PATH (the probe refuses)
        self.limits = limits  # None: no memory or pids limit (tests of other parts only; the fleet sets them)

    @property
    def label(self) -> str:
        return "bwrap" + (" (network allowed)" if self.network else "") + self.limits_note()

    def limits_note(self) -> str:
        """Said in the label (worker start-up log, `wave status`) when commands run without limits."""
        why = "none configured" if self.limits is None else missing(self.limits)
        return f" (no memory/pids limits: {why})" if why else ""

    def for_stage(self, labels: StageLabels) -> BwrapSandbox:
        return self

    def wrap(self, argv: list[str], worktree: Path) -> Invocation:
        worktree = worktree.resolve()
        env = allowed_env(worktree)
        # --cap-drop ALL: a worker running as root (containers, CI) would otherwise hand the command
        # every capability (mount, mknod, module loading), enough to leave any namespace.
        args = [
            self.binary or "bwrap",
            "--unshare-all",
            "--cap-drop",
            "ALL",
            "--die-with-parent",
            "--new-session",
        ]
        if self.network:
            args.append("--share-net")
        # Order matters: later mounts go on top, so /tmp is private before a worktree under it is bound.
        binary = self.binary or "bwrap"
        proc = ["--proc", "/proc"] if can_mount_proc(binary) else ["--tmpfs", "/proc"]
        args += ["--dev", "/dev", *proc, "--tmpfs", "/tmp"]  # noqa: S108
        args += _system_binds()
        for prefix in python_prefixes():
            args += ["--ro-bind", str(prefix), str(prefix)]
        args += ["--bind", str(worktree), str(worktree)]
        # The worktree's `.git` names the git dir the fleet's own git (on the host, unsandboxed)
        # reads: rewritten to name a git dir the command made, with `core.fsmonitor` set, it would run
        # the command's choice on the host. Read-only, it cannot be changed, removed or replaced.
        dot_git = worktree / ".git"
        if dot_git.exists() and not dot_git.is_symlink():
            args += ["--ro-bind", str(dot_git), str(dot_git)]
        args += ["--chdir", str(worktree), "--clearenv"]
        for name, value in env.items():
            args += ["--setenv", name, value]
        return Invocation([*args, "--", *argv], {"PATH": env["PATH"]}, worktree)

    def unavailable(self, exit_code: int, output: str, worktree: Path) -> str | None:
        """bwrap reports its own setup failures as exit 1 and a `bwrap: ...` line, which a command
        can print too: so only when a fresh bwrap, set up the same way around `true`, fails as
        well is the sandbox taken to be down (the command cannot make its own failure transient)."""
        if exit_code != SETUP_FAILED or "bwrap: " not in output:
            return None
        probe = self.wrap(["true"], worktree)
        try:
            ran = subprocess.run(
                probe.argv,
                env=probe.env,
                capture_output=True,
                text=True,
                timeout=PROC_PROBE_TIMEOUT_S,
                check=False,
            )
        except (OSError, subprocess.TimeoutExpired) as exc:
            return f"the bwrap sandbox cannot start: {exc}"
        if ran.returncode == 0:
            return None
        lines = (ran.stderr or ran.stdout).strip().splitlines()
        return f"the bwrap sandbox cannot start: {lines[-1] if lines else f'exit {ran.returncode}'}"


def _system_binds() -> list[str]:
    args = []
    for folder in SYSTEM_DIRS:
        path = Path(folder)
        if path.is_symlink():
            args += ["--symlink", str(path.readlink()), folder]
        elif path.is_dir():
            args += ["--ro-bind", folder, folder]
    for secret in MASKED:
        if Path(secret).is_dir():
            args += ["--tmpfs", secret]
        elif Path(secret).exists():
            args += ["--ro-bind", "/dev/null", secret]
    return args
