"""The EMERGENCY-STOP watcher: the file's appearance halts the fleet, its removal resumes it.

Detection is inotify (watchdog), not polling. The watcher also watches the halt directory's
parent, so it carries on when the directory is removed and created again; a slow tick re-checks
the watches and the file as a safety net, never as the detection path.

Anyone who can drop a file in the halt directory can stop the fleet, but the file is never trusted:
the fleet halts first, on the file's mere presence (``lstat``: a dangling symlink, a FIFO or a
directory of that name halts too), and only then is the file looked at. Its text becomes the
reason only if it is a short, printable, regular file; anything else gives a reason naming its
kind, never its content (a symlink to the Redis password or ``/proc/self/environ`` would otherwise
publish it). The file is opened without following links and without blocking, so a FIFO cannot
hang the watcher.
"""

from __future__ import annotations

import os
import stat
import threading
from collections.abc import Callable
from pathlib import Path

from redis import Redis
from redis.exceptions import RedisError
from watchdog.events import (
    DirCreatedEvent,
    DirDeletedEvent,
    DirMovedEvent,
    FileClosedEvent,
    FileCreatedEvent,
    FileDeletedEvent,
    FileModifiedEvent,
    FileMovedEvent,
    FileSystemEvent,
    FileSystemEventHandler,
)
from watchdog.observers import Observer
from watchdog.observers.api import ObservedWatch

from . import logs
from .halt import read_halt, send_halt, send_resume, update_reason
from .keys import Keys

FILE_SOURCE = "file:"
MAX_REASON_CHARS = 500
MAX_FILE_BYTES = 4096  # a reason is a sentence; more than this is not one, and is not read
OPEN_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
ALLOWED_CONTROLS = frozenset("\n\t")
FILE_KINDS: tuple[tuple[Callable[[int], bool], str], ...] = (
    (stat.S_ISLNK, "a symbolic link"),
    (stat.S_ISDIR, "a directory"),
    (stat.S_ISFIFO, "a FIFO"),
    (stat.S_ISSOCK, "a socket"),
    (stat.S_ISCHR, "a device"),
    (stat.S_ISBLK, "a device"),
)
TICK_S = 2.0
HEARTBEAT_TICKS = 3  # the heartbeat outlives two missed ticks: a busy machine is not a dead watcher
# Only changes wake the watcher. Reading the file (which `sync` does) raises open and close-no-write
# events: subscribed to those, each sync would trigger the next and the watcher would spin a core
# for as long as the fleet is halted, stealing the CPU the workers need to stop.
WATCHED_EVENTS: list[type[FileSystemEvent]] = [
    FileCreatedEvent,
    FileDeletedEvent,
    FileMovedEvent,
    FileModifiedEvent,
    FileClosedEvent,
    DirCreatedEvent,
    DirDeletedEvent,
    DirMovedEvent,
]


class HaltFileWatcher(FileSystemEventHandler):
    def __init__(self, redis: Redis, keys: Keys, halt_file: Path) -> None:
        self.redis, self.keys = redis, keys
        self.file = halt_file.absolute()
        self.directory = self.file.parent
        self.by = f"{FILE_SOURCE}{self.file}"
        self.observer = Observer()
        self.dir_watch: ObservedWatch | None = None
        self.lock = threading.Lock()
        self.log = logs.get()

    # Events ------------------------------------------------------------------------------------
    def on_any_event(self, event: FileSystemEvent) -> None:
        paths = {os.fsdecode(event.src_path), os.fsdecode(getattr(event, "dest_path", "") or "")}
        if str(self.file) in paths:
            self.sync()
        elif str(self.directory) in paths:
            self.ensure_watches()
            self.sync()

    def sync(self) -> None:
        """Make the fleet's halt flag agree with the file: present halts, absent resumes."""
        with self.lock:
            try:
                self._sync()
            except RedisError as exc:
                self.log.error("cannot reach Redis to halt or resume", error=str(exc))

    def beat(self, tick_s: float) -> None:
        """Say this watcher is alive (the supervisor's /readyz needs one), for a few ticks."""
        try:
            self.redis.set(self.keys.watcher_heartbeat(), self.by, px=int(tick_s * HEARTBEAT_TICKS * 1000))
        except RedisError as exc:
            self.log.warning("cannot reach Redis to beat", error=str(exc))

    def _sync(self) -> None:
        state = read_halt(self.redis, self.keys)
        if stop_file_present(self.file):
            if state is None:  # halt first, on presence alone; the file is looked at after
                state = send_halt(self.redis, self.keys, f"{self.file.name} file created", self.by)
                self.log.error("EMERGENCY STOP", reason=state.reason, file=str(self.file))
            reason = read_reason(self.file)  # None: empty, or its text is not written yet
            if state.by == self.by and reason is not None and reason != state.reason:
                update_reason(self.redis, self.keys, state, reason)
                self.log.error("EMERGENCY STOP reason", reason=reason, file=str(self.file))
        elif state is not None and state.by == self.by:
            send_resume(self.redis, self.keys, self.by)
            self.log.warning("fleet resumed", file=str(self.file))

    # Watches -----------------------------------------------------------------------------------
    def ensure_watches(self) -> None:
        with self.lock:
            if self.dir_watch is not None and not self.directory.is_dir():
                self._unschedule()
            if self.dir_watch is None and self.directory.is_dir():
                self.dir_watch = self.observer.schedule(
                    self, str(self.directory), recursive=False, event_filter=WATCHED_EVENTS
                )

    def _unschedule(self) -> None:
        try:
            if self.dir_watch is not None:
                self.observer.unschedule(self.dir_watch)
        except (KeyError, OSError):
            pass  # the inotify watch died with the directory
        self.dir_watch = None

    def run(self, stopping: threading.Event, tick_s: float = TICK_S) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        self.observer.schedule(self, str(self.directory.parent), recursive=False, event_filter=WATCHED_EVENTS)
        self.ensure_watches()
        self.observer.start()
        self.log.info("watching for the emergency-stop file", file=str(self.file))
        self.sync()  # a file that exists before the watcher starts halts too
        self.beat(tick_s)
        try:
            while not stopping.wait(tick_s):
                self.ensure_watches()
                self.sync()
                self.beat(tick_s)
        finally:
            self.observer.stop()
            self.observer.join(timeout=5)


def stop_file_present(path: Path) -> bool:
    """Whether anything at all is at `path`, without following a symlink (a dangling one counts)."""
    try:
        os.lstat(path)
    except (FileNotFoundError, NotADirectoryError):
        return False
    except OSError:
        return True  # something is there that we may not look at: halting is the safe side
    return True


def read_reason(path: Path) -> str | None:
    """The stop file's text if it is a regular file of printable text within MAX_FILE_BYTES, else a
    reason naming what is there (never its content); None when it is absent or empty."""
    try:
        mode = os.lstat(path).st_mode
    except FileNotFoundError:
        return None
    except OSError as exc:
        return _unread(path.name, "examined", exc)
    if not stat.S_ISREG(mode):
        return _not_regular(path.name, mode)
    content = _read_regular(path)
    return _text_reason(path.name, content) if isinstance(content, bytes) else content


def _read_regular(path: Path) -> bytes | str | None:
    """At most MAX_FILE_BYTES + 1 bytes of `path` if what opens there is a regular file, else a
    reason; never follows a symlink, never blocks (it may have been swapped since the lstat)."""
    try:
        fd = os.open(path, OPEN_FLAGS)
    except FileNotFoundError:
        return None
    except OSError as exc:  # ELOOP: swapped for a symlink after the lstat
        return _unread(path.name, "opened", exc)
    try:
        opened = os.fstat(fd)  # what was opened, whatever the path names by now
        if not stat.S_ISREG(opened.st_mode):
            return _not_regular(path.name, opened.st_mode)
        if opened.st_nlink != 1:  # a hard link is a regular file too: to the password file, say
            return f"{path.name} has {opened.st_nlink} names (a hard link); its content is not read"
        return os.read(fd, MAX_FILE_BYTES + 1)
    except OSError as exc:
        return _unread(path.name, "read", exc)
    finally:
        os.close(fd)


def _unread(name: str, what: str, exc: OSError) -> str:
    return f"{name} cannot be {what} ({exc.strerror}); its content is not read"


def _not_regular(name: str, mode: int) -> str:
    kind = next((k for test, k in FILE_KINDS if test(mode)), "not a regular file")
    return f"{name} is {kind}, not a regular file; its content is not read"


def _text_reason(name: str, data: bytes) -> str | None:
    if len(data) > MAX_FILE_BYTES:
        return f"{name} is longer than {MAX_FILE_BYTES} bytes; its content is not shown"
    try:
        text = data.decode("utf-8").strip()
    except UnicodeDecodeError:
        text = "\0"  # judged below like any other binary content
    if any(not (c.isprintable() or c in ALLOWED_CONTROLS) for c in text):
        return f"{name} is not printable text (binary or control characters); its content is not shown"
    return text[:MAX_REASON_CHARS] or None
