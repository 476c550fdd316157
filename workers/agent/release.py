"""Releasing a stage's remote sandbox when the stage ends: its containers removed, its usage kept.

A middleware, so no agent and no loop knows about containers: `context_for` adds it when the
stage's sandbox is a remote one, and `run_stage` reads `usage` into the stage's result.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from wavefleet import logs
from wavefleet.errors import SandboxUnavailableError
from wavefleet.sandbox import RemoteSandbox
from wavefleet.sandbox.protocol import SandboxUsage

from .middleware import Middleware

if TYPE_CHECKING:
    from ..roles import StageInput, StageOutput


class SandboxRelease(Middleware):
    def __init__(self, sandbox: RemoteSandbox) -> None:
        self.sandbox = sandbox
        self.usage: SandboxUsage | None = None

    def after_stage(self, stage: StageInput, output: StageOutput) -> None:
        self._release()

    def on_stage_error(self, stage: StageInput, error: BaseException) -> None:
        self._release()  # a limit hit included: its usage says which

    def _release(self) -> None:
        try:
            self.usage = self.sandbox.release()
        except SandboxUnavailableError as exc:
            # Not the stage's outcome: the runner's sweep removes the containers of a finished stage.
            logs.get().warning("sandbox not released; the runner's sweep will remove it", error=str(exc))
