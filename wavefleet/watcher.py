"""The EMERGENCY-STOP watcher: the file's appearance halts the fleet, its removal resumes it.

Detection is inotify (watchdog), not polling. The watcher also watches the halt directory's
parent, so it carries on when the directory is removed and created again; a slow tick re-checks
the watches and the file as a safety net, never as the detection path.
"""

from __future__ import annotations

import os
import threading
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
TICK_S = 2.0
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

    def _sync(self) -> None:
        state = read_halt(self.redis, self.keys)
        if self.file.exists():
            if state is None:  # halt at once; the file's text may not be written yet
                state = send_halt(self.redis, self.keys, self._reason(), self.by)
                self.log.error("EMERGENCY STOP", reason=state.reason, file=str(self.file))
            elif state.by == self.by and self._reason() != state.reason and self._has_text():
                update_reason(self.redis, self.keys, state, self._reason())
                self.log.error("EMERGENCY STOP reason", reason=self._reason(), file=str(self.file))
        elif state is not None and state.by == self.by:
            send_resume(self.redis, self.keys, self.by)
            self.log.warning("fleet resumed", file=str(self.file))

    def _has_text(self) -> bool:
        try:
            return bool(self.file.read_text(errors="replace").strip())
        except OSError:
            return False

    def _reason(self) -> str:
        try:
            text = self.file.read_text(errors="replace").strip()
        except OSError:
            text = ""
        return text[:MAX_REASON_CHARS] or f"{self.file.name} file created"

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
        try:
            while not stopping.wait(tick_s):
                self.ensure_watches()
                self.sync()
        finally:
            self.observer.stop()
            self.observer.join(timeout=5)
