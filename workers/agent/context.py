"""What an agent may use for one stage: the model, the workspace, the sandbox, the tool gate, events.

Agents receive the stage's data (`StageInput`) and this context; they never build a service of their
own. Everything that later issues add around an agent (tracing, metrics, Slack, safety) plugs in
here: as a `Middleware` (observers of stages, model calls and tool calls) or as the `ToolGate`.
"""

from __future__ import annotations

import time
from contextvars import ContextVar
from dataclasses import dataclass
from enum import StrEnum
from typing import Protocol

from wavefleet.llm.client import StoryLLM
from wavefleet.llm.types import LLMRequest, LLMResponse, ToolCall
from wavefleet.sandbox import Sandbox

from ..git import Workspace
from ..roles import StageInput
from .middleware import Middlewares


class Verdict(StrEnum):
    ALLOW = "allow"
    BLOCK = "block"  # the call is refused; the model sees the reason
    ESCALATE = "escalate"  # a human decides: the story is held with the reason


@dataclass(frozen=True)
class GateDecision:
    verdict: Verdict
    reason: str = ""


ALLOW = GateDecision(Verdict.ALLOW)


class ToolGate(Protocol):
    """Decides, before it runs, whether a tool call may run (the safety issue fills this in)."""

    def authorize(self, call: ToolCall, stage: StageInput) -> GateDecision: ...


class AllowAll:
    """Every call may run: the gate until the safety rules and judge exist."""

    def authorize(self, call: ToolCall, stage: StageInput) -> GateDecision:
        return ALLOW


class EventSink(Protocol):
    """Where an agent reports what the story should show (`wave events`): guard stops, waits."""

    def emit(self, event: str, reason: str, **fields: str | int | float | bool) -> None: ...


# When the running tool loop must end (time.monotonic(); its wall-clock cap): a tool that waits (a
# `run`) is cut at it too, so one long command cannot carry the stage past the cap. Set by ToolLoop.run.
LOOP_DEADLINE: ContextVar[float | None] = ContextVar("wave_loop_deadline", default=None)


def time_left_s(cap_s: float) -> float:
    """`cap_s`, or less if the running loop's wall-clock cap comes sooner (0: it has passed)."""
    deadline = LOOP_DEADLINE.get()
    return cap_s if deadline is None else max(0.0, min(cap_s, deadline - time.monotonic()))


@dataclass(frozen=True)
class LoopLimits:
    """The tool loop's guards and the tools' caps (from the `loop` settings)."""

    max_iterations: int = 40
    wall_clock_s: float = 1200.0
    repeats_to_stop: int = 3  # the same call with the same result, or the same error, this often
    run_timeout_s: float = 300.0
    run_output_bytes: int = 64_000  # of a `run` command's output the model sees (its end)
    read_window_bytes: int = 64_000  # a larger file is read in windows of this size


@dataclass(frozen=True)
class AgentContext:
    stage: StageInput
    llm: StoryLLM
    workspace: Workspace
    sandbox: Sandbox
    gate: ToolGate
    events: EventSink
    middleware: Middlewares
    limits: LoopLimits = LoopLimits()

    def call_model(self, request: LLMRequest) -> LLMResponse:
        """One model call, with the middleware's hooks around it."""
        return self.middleware.around_model(self.stage, request, lambda: self.llm.call(request))
