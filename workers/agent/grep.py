"""The `search` tool's worker: a Python regex over a worktree's text files, run as its own process.

A separate process because a hostile pattern (`(a+)+$`) can backtrack for hours inside one
`re.search` call, which no thread can interrupt: the parent kills this process at its deadline.
Standard library only (run with `python -I`). The walk keeps the jail's rules: folders are opened
relative to their parent without following links, `.git` is skipped, only regular files are read,
binary files (a NUL byte in their first 8 KiB) are skipped. Its memory is capped (RLIMIT_AS): a
pattern with many groups in a repetition saves them on every step of a long line, gigabytes within
the time limit, on the host (this process is not sandboxed).
Input: one JSON object as the only argument; output: one JSON object per match, then a summary line.
"""

from __future__ import annotations

import json
import os
import re
import resource
import stat
import sys
import time
from typing import Any

DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
FILE_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK
LINE_CHARS = 300  # of a matching line shown


class Search:
    def __init__(self, job: dict[str, Any]) -> None:
        self.pattern = re.compile(job["pattern"])
        self.deadline = time.monotonic() + float(job["time_s"])
        self.max_matches = int(job["max_matches"])
        self.max_file_bytes = int(job["max_file_bytes"])
        self.state: dict[str, Any] = {"matches": 0, "files": 0, "stopped": ""}

    def walk(self, fd: int, prefix: str) -> None:
        for top, dirs, files, top_fd in os.fwalk(".", dir_fd=fd, follow_symlinks=False):
            dirs[:] = sorted(d for d in dirs if d != ".git")
            for name in sorted(files):
                if self.state["stopped"]:
                    return
                self.file(top_fd, name, os.path.normpath(f"{prefix}/{top}/{name}").lstrip("/"))

    def file(self, fd: int, name: str, relative: str) -> None:
        try:
            if not stat.S_ISREG(os.stat(name, dir_fd=fd, follow_symlinks=False).st_mode):
                return
            handle = os.open(name, FILE_FLAGS, dir_fd=fd)
        except OSError:
            return
        with os.fdopen(handle, "rb") as file:
            data = file.read(self.max_file_bytes)
        if b"\0" in data[:8192]:
            return
        self.state["files"] += 1
        for number, line in enumerate(data.decode(errors="replace").splitlines(), 1):
            if time.monotonic() > self.deadline:
                self.state["stopped"] = "time"
                return
            if self.pattern.search(line):
                _emit({"path": relative, "line": number, "text": line[:LINE_CHARS]})
                self.state["matches"] += 1
                if self.state["matches"] >= self.max_matches:
                    self.state["stopped"] = "matches"
                    return


def _emit(item: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(item) + "\n")
    sys.stdout.flush()  # what was found before a kill at the deadline is not lost


def main() -> None:
    job = json.loads(sys.argv[1])
    cap = int(job["max_memory_bytes"])
    resource.setrlimit(resource.RLIMIT_AS, (cap, cap))
    try:
        run(job)
    except MemoryError:
        sys.stderr.write(f"the pattern needs over {cap // 2**20} MiB of memory; make it simpler\n")
        sys.exit(2)


def run(job: dict[str, Any]) -> None:
    search = Search(job)
    parts: list[str] = job["parts"]
    fd = os.open(job["root"], DIR_FLAGS)
    for name in parts[:-1]:
        fd = os.open(name, DIR_FLAGS, dir_fd=fd)
    last = parts[-1] if parts else None
    if last is not None and stat.S_ISREG(os.stat(last, dir_fd=fd, follow_symlinks=False).st_mode):
        search.file(fd, last, "/".join(parts))
    else:
        if last is not None:
            fd = os.open(last, DIR_FLAGS, dir_fd=fd)
        search.walk(fd, "/".join(parts))
    _emit({"summary": search.state})


if __name__ == "__main__":
    main()
