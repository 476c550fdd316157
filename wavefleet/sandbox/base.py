"""The sandbox interface: where a command that does work runs, isolated, with an allow-listed environment.

Two kinds behind one type: a local sandbox (bubblewrap, none) says how to wrap a command that
`workers.commands` then starts itself; a remote one (a container made by `wave sandbox`) runs the
command elsewhere and returns its `Outcome`. `workers.commands.run_in` is the one place that tells
them apart.
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Protocol, runtime_checkable

if TYPE_CHECKING:
    from .limits import Limits
    from .protocol import SandboxUsage, StageLabels

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


@dataclass(frozen=True)
class Outcome:
    """What a command did, wherever it ran."""

    exit_code: int
    output: str  # stdout and stderr interleaved; the last `max_output_bytes` of it when truncated
    truncated: bool


class _Common(Protocol):
    mode: str  # "bwrap", "container", "none": what `wave status` and the logs show
    network: bool  # whether the command may reach the network
    python: str  # what `{python}` in a domain's test command becomes inside this sandbox

    @property
    def label(self) -> str: ...


class LocalSandbox(_Common, Protocol):
    """Wraps a command that runs work so it runs inside `worktree` isolated from the fleet.

    The process itself is started by `workers.commands` (the one place processes start, with its
    parent-death discipline); a local sandbox only says how, and under which `limits` (memory,
    pids: `workers.commands` puts the command in a cgroup with them; None: unlimited)."""

    limits: Limits | None

    def for_stage(self, labels: StageLabels) -> LocalSandbox:
        """The sandbox of one stage: a local one is the same for every stage (itself)."""
        ...

    def wrap(self, argv: list[str], worktree: Path) -> Invocation: ...

    def unavailable(self, exit_code: int, output: str, worktree: Path) -> str | None:
        """After a command failed: why the sandbox could not start it, or None if it ran (and its
        failure is its own). A sandbox that cannot start is not the story's fault: the stage is
        retried later (`SandboxUnavailableError`)."""
        ...


@runtime_checkable
class RemoteSandbox(_Common, Protocol):
    """Runs a command elsewhere (another process, a container) and returns what it did. Bound to a
    stage by `for_stage`; `release` ends the stage's use of it and says what it used."""

    def for_stage(self, labels: StageLabels) -> RemoteSandbox: ...

    def execute(self, argv: list[str], worktree: Path, *, timeout_s: float, max_output_bytes: int) -> Outcome:
        """Raises subprocess.TimeoutExpired (the command was killed at `timeout_s`),
        SandboxLimitError (it hit a resource limit: the stage fails) or SandboxUnavailableError."""
        ...

    def release(self) -> SandboxUsage | None:
        """The stage is over: free what it held; its usage, or None if it ran nothing."""
        ...


Sandbox = LocalSandbox | RemoteSandbox


def allowed_env(home: Path | str, *, path: str | None = None) -> dict[str, str]:
    """A command's whole environment: PATH (the fleet's Python first, unless `path` says otherwise:
    a container's own), HOME (the worktree), locale, and the test runner's own variables; never
    anything else of the worker's."""
    env = {
        "PATH": path or f"{Path(sys.executable).parent}:{SYSTEM_PATH}",
        "HOME": str(home),
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
    limits: Limits | None = None
    python = sys.executable

    @property
    def label(self) -> str:
        return UNSANDBOXED

    def for_stage(self, labels: StageLabels) -> NoSandbox:
        return self

    def wrap(self, argv: list[str], worktree: Path) -> Invocation:
        return Invocation(list(argv), allowed_env(worktree), worktree)

    def unavailable(self, exit_code: int, output: str, worktree: Path) -> str | None:
        return None  # nothing to start
