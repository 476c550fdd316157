"""The worktree jail for the agents' own writes: inside the worktree only, never through a link.

Repository content is hostile: a committed symbolic link (`wave_stories -> /etc/cron.d`, or a file
`ui/page.html -> ~/.ssh/authorized_keys`) would turn an agent's write into a write anywhere the
worker may write, outside every sandbox. So each folder on the way is opened relative to the one
before with O_NOFOLLOW (no check-then-use race), the file itself too, and only a regular file is
written. The LLM agents' file tools will be held to the same rule.
"""

from __future__ import annotations

import contextlib
import errno
import os
import stat
from pathlib import Path, PurePosixPath

from wavefleet.errors import StageError

_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
# O_NONBLOCK: a FIFO planted under the file's name must not block the agent (it is refused below).
_FILE_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK


def write_text(tree: Path, relative: str, text: str, *, keep_existing: bool = False) -> None:
    """Write `text` to `relative` inside `tree`, creating folders; `keep_existing` leaves a file that
    is already there as it is (like `touch`). Raises StageError for anything that leads out."""
    parts = _parts(relative)
    folder = os.open(tree, _DIR_FLAGS)
    try:
        for name in parts[:-1]:
            with contextlib.suppress(FileExistsError):
                os.mkdir(name, 0o755, dir_fd=folder)
            inner = _open_in(folder, name, _DIR_FLAGS, relative)
            os.close(folder)
            folder = inner
        flags = _FILE_FLAGS | (os.O_EXCL if keep_existing else os.O_TRUNC)
        try:
            handle = _open_in(folder, parts[-1], flags, relative)
        except FileExistsError:  # kept, once it is known to be a regular file
            _close_regular(_open_in(folder, parts[-1], _FILE_FLAGS, relative), relative)
            return
        _write_regular(handle, text, relative)
    finally:
        os.close(folder)


def _parts(relative: str) -> tuple[str, ...]:
    path = PurePosixPath(relative)
    if path.is_absolute() or not path.parts or ".." in path.parts or "\0" in relative:
        raise StageError(f"{relative!r}: not a path inside the worktree")
    return path.parts


def _open_in(folder: int, name: str, flags: int, relative: str) -> int:
    try:
        return os.open(name, flags, 0o644, dir_fd=folder)
    except OSError as exc:
        # ELOOP: a symbolic link; ENOTDIR/EISDIR: a file where a folder is, or the reverse; ENXIO: a FIFO
        if exc.errno in (errno.ELOOP, errno.ENOTDIR, errno.EISDIR, errno.ENXIO):
            raise StageError(
                f"{relative}: {name} in the worktree is a symbolic link or not a regular file or folder: "
                "refusing to write through it"
            ) from None
        raise


def _write_regular(fd: int, text: str, relative: str) -> None:
    try:
        _require_regular(fd, relative)
        os.set_blocking(fd, True)
        with os.fdopen(fd, "w", encoding="utf-8", closefd=False) as handle:
            handle.write(text)
    finally:
        os.close(fd)


def _close_regular(fd: int, relative: str) -> None:
    try:
        _require_regular(fd, relative)
    finally:
        os.close(fd)


def _require_regular(fd: int, relative: str) -> None:
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        raise StageError(f"{relative}: not a regular file in the worktree: refusing to write to it")
