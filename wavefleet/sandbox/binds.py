"""The stage container's binds, pinned: the worktree (and its `.git`) held open from the runner's
check until the started container is seen to have those very files at /workspace.

The engine resolves a bind's source path only when the container starts, following symlinks on the
host. Whoever can write the data dir (a compromised worker) could swap a checked worktree for a
symlink to `/` in between: the container would get the host's root. So the runner opens the
worktree without following symlinks, keeps it open (its inode cannot be reused meanwhile), and
after the start compares the `<dev> <inode>` the container sees at its targets with the open ones.
"""

from __future__ import annotations

import contextlib
import os
import stat
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

WORKSPACE = "/workspace"
GIT_TARGET = f"{WORKSPACE}/.git"
# Where a worker makes a stage's worktree under the data dir (workers/git.py Workspace), and the only
# folder bound: not the domain's clone (the fleet's own git works there, its config unsandboxed),
# not the data dir's other files.
LAYOUT = "repos/<domain>/worktrees/<name>"


def is_worktree_path(parts: tuple[str, ...]) -> bool:
    """`parts` (relative to the data dir, normalised) are `repos/<domain>/worktrees/<name>`."""
    return len(parts) == 4 and parts[0] == "repos" and parts[2] == "worktrees"


@dataclass(frozen=True)
class Pinned:
    """The binds to ask for, and the `<dev> <inode>` each target must show once started."""

    mounts: list[dict[str, Any]]
    identities: list[str]
    owner: tuple[int, int]  # the worktree's uid and gid

    def stat_argv(self) -> list[str]:
        """The fixed command that prints, inside the container, what `identities` holds."""
        return ["stat", "-c", "%d %i", *(m["Target"] for m in self.mounts)]

    def check(self, exit_code: int, output: str) -> None:
        if exit_code != 0 or output.split("\n")[: len(self.identities)] != self.identities:
            raise ValueError("the worktree changed while its container started (a symlink swapped in?)")


@contextlib.contextmanager
def pinned(worktree: str, root: Path, volume: Callable[[], str] | None) -> Iterator[Pinned]:
    """The worktree's binds, its files held open until the block ends. The source is the worktree
    itself, or with `volume` (the data volume's mountpoint on the host) the same folder there.
    ValueError for a worktree that is not a real folder where workers make them under `root`."""
    path = Path(worktree)
    if not path.is_absolute() or os.path.normpath(worktree) != worktree:
        raise ValueError(f"worktree {worktree!r} is not an absolute, normalised path")
    if not path.is_relative_to(root) or not is_worktree_path(path.relative_to(root).parts):
        raise ValueError(f"worktree {worktree!r} is not a worktree: expected {root}/{LAYOUT}")
    try:
        folder = os.open(worktree, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError:
        raise ValueError(f"worktree {worktree!r} is not a folder (missing, or a symlink)") from None
    held = [folder]
    try:
        if str(Path(f"/proc/self/fd/{folder}").readlink()) != worktree:
            raise ValueError(f"worktree {worktree!r} is reached through a symlink")
        source = worktree if volume is None else str(Path(volume()) / path.relative_to(root))
        mounts = [_bind(source, WORKSPACE, read_only=False)]
        identities = [_identity(folder)]
        # The `.git` names the git dir the fleet's own git (outside any sandbox) reads: rewritten, with
        # `core.fsmonitor` set, it would run a command's choice there. Read-only, it cannot change
        # (as in bwrap.py). A symlink is left as it is: inside, it leads nowhere.
        with contextlib.suppress(FileNotFoundError):
            held.append(os.open(".git", os.O_PATH | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=folder))
            if not stat.S_ISLNK(os.fstat(held[-1]).st_mode):
                mounts.append(_bind(f"{source}/.git", GIT_TARGET, read_only=True))
                identities.append(_identity(held[-1]))
        owner = os.fstat(folder)
        yield Pinned(mounts, identities, (owner.st_uid, owner.st_gid))
    finally:
        for fd in held:
            os.close(fd)


def _bind(source: str, target: str, *, read_only: bool) -> dict[str, Any]:
    return {"Type": "bind", "Source": source, "Target": target, "ReadOnly": read_only}


def _identity(fd: int) -> str:
    """What `stat -c '%d %i'` prints for the same file: its device and inode."""
    st = os.fstat(fd)
    return f"{st.st_dev} {st.st_ino}"
