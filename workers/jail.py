"""The worktree jail: every file an agent reads, lists or writes is inside its worktree, never through a link.

Repository content and model output are hostile: a committed symbolic link (`wave_stories ->
/etc/cron.d`, or a file `ui/page.html -> ~/.ssh/authorized_keys`), or one a sandboxed command has
just made, would turn an agent's read or write into one anywhere the worker may reach, outside every
sandbox. So each folder on the way is opened relative to the one before with O_NOFOLLOW (no
check-then-use race), the file itself too, and only a regular file is read or written: not a
device, FIFO or socket (opening one can block or act), not a file with a second hard link (a write
would change the other name too). The `.git` folder is out of bounds: git metadata and hooks run on
the worker, outside the sandbox. Every refusal is a `ToolError`: the model sees it; an offline agent
fails its stage with it (a StageError).
"""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
import stat
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from wavefleet.errors import ToolError

MAX_PATH_CHARS = 1024  # a longer path is no real repository's (git itself warns past 4096)
MAX_NAME_BYTES = 255  # one component, as NAME_MAX on Linux
GIT_DIR = ".git"

_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
# O_NONBLOCK: a FIFO planted under the file's name must not block the agent (it is refused below).
_WRITE_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK
_READ_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK


@dataclass(frozen=True)
class Entry:
    name: str
    kind: str  # "file", "folder", "link" or "other" (a device, FIFO or socket)
    size: int


@dataclass(frozen=True)
class Window:
    data: bytes
    offset: int
    total: int  # the file's size in bytes


def parts_of(relative: str) -> tuple[str, ...]:
    """The components of a worktree-relative path; "" and "." are the worktree itself (no parts).
    Refuses absolute paths, `..`, NUL bytes, over-long paths and names, and anything in `.git`."""
    if not isinstance(relative, str):
        raise ToolError("a path must be a string, relative to the worktree")
    shown = relative[:80] + ("..." if len(relative) > 80 else "")
    if "\0" in relative:
        raise ToolError(f"{shown!r}: not a path inside the worktree (it contains a NUL byte)")
    if len(relative) > MAX_PATH_CHARS:
        raise ToolError(f"{shown!r}: a path may be at most {MAX_PATH_CHARS} characters, not {len(relative)}")
    path = PurePosixPath(relative)
    if path.is_absolute():
        raise ToolError(f"{shown!r}: not a path inside the worktree (absolute); give a relative path")
    if ".." in path.parts:
        raise ToolError(f"{shown!r}: not a path inside the worktree ('..' is not allowed)")
    try:
        relative.encode()
    except UnicodeEncodeError:
        raise ToolError(f"{shown!r}: not a path inside the worktree (not valid Unicode)") from None
    for name in path.parts:
        if len(name.encode()) > MAX_NAME_BYTES:
            raise ToolError(f"{shown!r}: a file or folder name may be at most {MAX_NAME_BYTES} bytes")
        if name.casefold() == GIT_DIR:
            raise ToolError(f"{shown!r}: the .git folder is not the agent's to read or change")
    return path.parts


@contextlib.contextmanager
def folder(tree: Path, parts: tuple[str, ...], relative: str, *, create: bool = False) -> Iterator[int]:
    """An open descriptor of the folder `parts` inside `tree`, reached without following any link."""
    fd = os.open(tree, _DIR_FLAGS)
    try:
        for name in parts:
            if create:
                with contextlib.suppress(FileExistsError):
                    os.mkdir(name, 0o755, dir_fd=fd)
            inner = _open_in(fd, name, _DIR_FLAGS, relative)
            os.close(fd)
            fd = inner
        yield fd
    finally:
        os.close(fd)


def _open_in(folder_fd: int, name: str, flags: int, relative: str) -> int:
    try:
        return os.open(name, flags, 0o644, dir_fd=folder_fd)
    except OSError as exc:
        # ELOOP: a symbolic link; ENOTDIR/EISDIR: a file where a folder is, or the reverse; ENXIO: a FIFO
        if exc.errno in (errno.ELOOP, errno.ENOTDIR, errno.EISDIR, errno.ENXIO):
            raise ToolError(
                f"{relative}: {name} in the worktree is a symbolic link or not a regular file or folder: "
                "refusing to go through it"
            ) from None
        if exc.errno == errno.ENOENT:
            raise ToolError(f"{relative}: no such file or folder in the worktree") from None
        raise ToolError(f"{relative}: {exc.strerror}") from None


def _kind(mode: int) -> str:
    if stat.S_ISREG(mode):
        return "file"
    if stat.S_ISDIR(mode):
        return "folder"
    return "link" if stat.S_ISLNK(mode) else "other"


_DESCRIBED = {
    "folder": "a folder",
    "link": "a symbolic link",
    "other": "a device, FIFO or socket",
    "file": "a file",
}


def _open_regular(folder_fd: int, name: str, flags: int, relative: str) -> tuple[int, os.stat_result]:
    """Open a regular file in `folder_fd`; a device, FIFO or socket is refused before it is opened
    (opening one can block or have effects), and the opened file is checked again (no race)."""
    with contextlib.suppress(FileNotFoundError):
        before = os.stat(name, dir_fd=folder_fd, follow_symlinks=False)
        if not stat.S_ISREG(before.st_mode):
            raise ToolError(
                f"{relative}: {_DESCRIBED[_kind(before.st_mode)]}, not a regular file: refusing it"
            )
    fd = _open_in(folder_fd, name, flags, relative)
    info = os.fstat(fd)
    if not stat.S_ISREG(info.st_mode):
        os.close(fd)
        raise ToolError(f"{relative}: not a regular file in the worktree: refusing it")
    return fd, info


def read_window(tree: Path, relative: str, offset: int, limit: int) -> Window:
    """Up to `limit` bytes of a regular file from `offset`, and the file's size."""
    parts = parts_of(relative)
    if not parts:
        raise ToolError(f"{relative!r}: a folder; give a file's path")
    with folder(tree, parts[:-1], relative) as fd:
        handle, info = _open_regular(fd, parts[-1], _READ_FLAGS, relative)
        try:
            return Window(os.pread(handle, limit, offset), offset, info.st_size)
        finally:
            os.close(handle)


def read_text(tree: Path, relative: str, max_bytes: int) -> str:
    """A whole text file (for an edit); a larger one than `max_bytes` is refused."""
    window = read_window(tree, relative, 0, max_bytes + 1)
    if window.total > max_bytes:
        raise ToolError(f"{relative}: {window.total} bytes, over the {max_bytes}-byte limit for editing")
    try:
        return window.data.decode()
    except UnicodeDecodeError:
        raise ToolError(f"{relative}: not UTF-8 text") from None


def list_folder(tree: Path, relative: str, max_entries: int) -> tuple[list[Entry], int]:
    """The entries of a folder (sorted, `.git` left out, links shown as links, never followed),
    at most `max_entries` of them, and how many there are."""
    parts = parts_of(relative)
    with folder(tree, parts, relative or ".") as fd:
        entries = []
        for name in sorted(os.listdir(fd)):  # noqa: PTH208 - a descriptor, not a path
            if name == GIT_DIR:
                continue
            with contextlib.suppress(FileNotFoundError):
                info = os.stat(name, dir_fd=fd, follow_symlinks=False)
                entries.append(Entry(name, _kind(info.st_mode), info.st_size))
    return entries[:max_entries], len(entries)


def stat_path(tree: Path, relative: str) -> Entry:
    """What is at `relative` (never following a link), or a ToolError if nothing is."""
    parts = parts_of(relative)
    if not parts:
        return Entry(".", "folder", 0)
    with folder(tree, parts[:-1], relative) as fd:
        try:
            info = os.stat(parts[-1], dir_fd=fd, follow_symlinks=False)
        except FileNotFoundError:
            raise ToolError(f"{relative}: no such file or folder in the worktree") from None
    return Entry(parts[-1], _kind(info.st_mode), info.st_size)


@dataclass(frozen=True)
class GitMark:
    """What a command may not change about the worktree's `.git` (see `git_mark`)."""

    fingerprint: tuple[object, ...]
    text: bytes | None  # a worktree's `.git` file: the line naming its git dir, to put back


def git_mark(tree: Path) -> GitMark:
    """The `.git` entry's kind, inode, size and time, and its text when it is a file (a worktree's
    `.git` names the git dir), or for a folder its config and hooks. git runs on the worker, outside
    the sandbox: a `.git` rewritten to name a git dir with `core.fsmonitor` set would run any command
    there, so a sandboxed command must not change it."""
    parts: list[object] = []
    for name in (GIT_DIR, f"{GIT_DIR}/config", f"{GIT_DIR}/hooks"):
        try:
            info = os.lstat(tree / name)
        except (FileNotFoundError, NotADirectoryError):
            parts.append(None)
            continue
        parts.append((info.st_mode, info.st_ino, info.st_size, info.st_mtime_ns))
        if stat.S_ISDIR(info.st_mode) and name.endswith("hooks"):
            parts.append(tuple(sorted(p.name for p in (tree / name).iterdir())))
    first = parts[0]
    is_file = isinstance(first, tuple) and stat.S_ISREG(first[0])
    return GitMark(tuple(parts), (tree / GIT_DIR).read_bytes() if is_file else None)


def restore_git(tree: Path, mark: GitMark) -> bool:
    """Put a worktree's `.git` file back as `mark` saw it, whatever is there now; False if `mark`
    saw no `.git` file (a whole `.git` folder cannot be put back)."""
    if mark.text is None:
        return False
    target = tree / GIT_DIR
    if target.is_dir() and not target.is_symlink():
        shutil.rmtree(target)
    else:
        target.unlink(missing_ok=True)
    fd = os.open(tree / GIT_DIR, _WRITE_FLAGS | os.O_EXCL)  # O_EXCL: nothing planted in between
    try:
        os.write(fd, mark.text)
    finally:
        os.close(fd)
    return True


def write_text(tree: Path, relative: str, text: str, *, keep_existing: bool = False) -> None:
    """Write `text` to `relative` inside `tree`, creating folders; `keep_existing` leaves a file that
    is already there as it is (like `touch`). Raises ToolError for anything that leads out."""
    parts = parts_of(relative)
    if not parts:
        raise ToolError(f"{relative!r}: not a path inside the worktree to a file")
    with folder(tree, parts[:-1], relative, create=True) as fd:
        existed = True
        try:
            os.stat(parts[-1], dir_fd=fd, follow_symlinks=False)
        except FileNotFoundError:
            existed = False
        handle, info = _open_regular(fd, parts[-1], _WRITE_FLAGS, relative)
        try:
            if existed and keep_existing:
                return
            if info.st_nlink > 1:  # another name, maybe outside the worktree, would change too
                raise ToolError(f"{relative}: has {info.st_nlink} hard links: refusing to write through it")
            os.set_blocking(handle, True)
            os.ftruncate(handle, 0)
            data = text.encode()
            view = memoryview(data)
            while view:
                view = view[os.write(handle, view) :]
        finally:
            os.close(handle)
