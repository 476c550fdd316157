"""The sandbox interface: how a command is wrapped so it runs isolated, with an allow-listed environment."""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

# Passed through from the worker's environment when set: locale and clock only. Everything else a
# command sees is built here, so no WAVE_* variable, model key, token or Redis URL can reach it.
PASSED_THROUGH = ("LANG", "LC_ALL", "LC_CTYPE", "TZ")
SYSTEM_PATH = "/usr/local/bin:/usr/bin:/bin"
UNSANDBOXED = "none (UNSANDBOXED)"


@dataclass(frozen=True)
class Invocation:
    """What to start, with which environment and in which folder, to run a command sandboxed."""

    argv: list[str]
    env: dict[str, str]
    cwd: Path


class Sandbox(Protocol):
    """Wraps a command that runs work so it runs inside `worktree` isolated from the fleet.

    The process itself is started by `workers.commands` (the one place processes start, with its
    parent-death discipline); a sandbox only says how."""

    mode: str  # "bwrap", "none": what `wave status` and the logs show
    network: bool  # whether the command may reach the network

    @property
    def label(self) -> str: ...

    def wrap(self, argv: list[str], worktree: Path) -> Invocation: ...

    def unavailable(self, exit_code: int, output: str, worktree: Path) -> str | None:
        """After a command failed: why the sandbox could not start it, or None if it ran (and its
        failure is its own). A sandbox that cannot start is not the story's fault: the stage is
        retried later (`SandboxUnavailableError`)."""
        ...


def allowed_env(worktree: Path) -> dict[str, str]:
    """A command's whole environment: PATH (the fleet's Python first), HOME in the worktree, locale,
    and the test runner's own variables; never anything else of the worker's."""
    env = {
        "PATH": f"{Path(sys.executable).parent}:{SYSTEM_PATH}",
        "HOME": str(worktree),
        "TMPDIR": "/tmp",  # noqa: S108 - the sandbox's own private /tmp
        "PYTHONDONTWRITEBYTECODE": "1",
    }
    env.setdefault("LANG", "C.UTF-8")
    env |= {name: os.environ[name] for name in PASSED_THROUGH if name in os.environ}
    return env


class NoSandbox:
    """The explicit opt-out: the command runs on the host as the worker (still with the allow-listed
    environment). Chosen only by `WAVE_SANDBOX=none`, and said in every log line and `wave status`."""

    mode = "none"
    network = True

    @property
    def label(self) -> str:
        return UNSANDBOXED

    def wrap(self, argv: list[str], worktree: Path) -> Invocation:
        return Invocation(list(argv), allowed_env(worktree), worktree)

    def unavailable(self, exit_code: int, output: str, worktree: Path) -> str | None:
        return None  # nothing to start
