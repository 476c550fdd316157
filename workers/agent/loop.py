"""The tool loop every LLM role runs: ask the model, run the tools it calls, until it calls `finish`.

The system prompt and the tool definitions are the same on every call (the provider caches them:
Anthropic at the breakpoints the provider sets, xAI by prefix), only the messages grow. Each tool
call passes the gate (block: an error result; escalate: the story is held) and the middleware;
its errors are results the model reads. The `finish` tool's arguments are the role's typed output:
validated, returned; invalid, an error result and the loop goes on. Guards end the loop with
`LoopStopped` (iteration cap, wall-clock cap, the stuck detector), each announced as an
`agent_stopped` event first; a budget stop (`BudgetExceededError`, reserved before every call)
is announced the same way and passes through, so the story is held, not failed.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Generic, TypeVar

from pydantic import BaseModel, ValidationError

from wavefleet.config import LoopSettings
from wavefleet.errors import BudgetExceededError, HoldStory, LoopStopped, ToolError
from wavefleet.llm.types import LLMRequest, LLMResponse, Message, TaskKind, ToolCall, ToolResult, ToolSpec

from .context import LOOP_DEADLINE, AgentContext, LoopLimits, Verdict
from .stuck import StuckDetector
from .tools import Tool, parse_arguments, schema_of

M = TypeVar("M", bound=BaseModel)

FINISH = "finish"
NUDGE = "Your reply called no tool. Call a tool to go on with the task, or call `finish` with your result."


def limits_from(settings: LoopSettings) -> LoopLimits:
    """The loop's limits as the operator set them (`WAVE_LOOP__MAX_ITERATIONS` and so on)."""
    return LoopLimits(**settings.model_dump())


class ToolLoop(Generic[M]):
    def __init__(self, ctx: AgentContext, tools: Sequence[Tool], finish: type[M], task: TaskKind) -> None:
        self.ctx = ctx
        self.finish = finish
        self.task = task
        self.tools = {t.spec.name: t for t in tools}
        if len(self.tools) != len(tools) or FINISH in self.tools:
            raise ValueError(f"tool names must be unique and not {FINISH!r}: {[t.spec.name for t in tools]}")
        finish_spec = ToolSpec(
            name=FINISH,
            description="Call once the task is done; the arguments are your result.",
            input_schema=schema_of(finish),
        )
        self.specs = (*(t.spec for t in tools), finish_spec)
        self.iterations = 0
        self._result: M | None = None

    @property
    def limits(self) -> LoopLimits:
        return self.ctx.limits

    def run(self, system: str, opening: str) -> M:
        """Loop until the model finishes; LoopStopped (a guard) or HoldStory (budget, escalation)."""
        started = time.monotonic()
        deadline = LOOP_DEADLINE.set(started + self.limits.wall_clock_s)
        try:
            return self._loop(system, opening, started)
        finally:
            LOOP_DEADLINE.reset(deadline)

    def _loop(self, system: str, opening: str, started: float) -> M:
        messages: list[Message] = [Message.user(opening)]
        stuck = StuckDetector(self.limits.repeats_to_stop)
        while True:
            self._check_caps(started)
            response = self._ask(system, messages)
            self.iterations += 1
            # an assistant turn needs some content: a reply with neither text nor a call gets a placeholder
            said = response.text or ("" if response.tool_calls else "(no reply)")
            messages.append(Message.assistant(said, response.tool_calls))
            if not response.tool_calls:
                messages.append(Message.user(NUDGE))
                self._check_stuck(stuck.observe_silence(NUDGE))
                continue
            results = []
            for call in response.tool_calls:
                result = self.call_tool(call)
                if self._result is not None:
                    self._finished(started)
                    return self._result
                results.append(result)
                self._check_stuck(stuck.observe(call, result))
            messages.append(Message.results(*results))

    def _ask(self, system: str, messages: list[Message]) -> LLMResponse:
        # use_cache=False: a replayed reply would act on a worktree that has changed since.
        request = LLMRequest(
            task=self.task, system=system, messages=tuple(messages), tools=self.specs, use_cache=False
        )
        try:
            return self.ctx.call_model(request)
        except BudgetExceededError as exc:
            self.ctx.events.emit("agent_stopped", str(exc), guard="budget", iterations=self.iterations)
            raise

    def _check_caps(self, started: float) -> None:
        if self.iterations >= self.limits.max_iterations:
            self._stop(
                f"iteration cap: {self.iterations} model calls without finishing "
                f"(loop.max_iterations = {self.limits.max_iterations})",
                "iterations",
            )
        elapsed = time.monotonic() - started
        if elapsed >= self.limits.wall_clock_s:
            self._stop(
                f"wall-clock cap: {elapsed:.1f} s without finishing "
                f"(loop.wall_clock_s = {self.limits.wall_clock_s:g})",
                "wall_clock",
            )

    def _check_stuck(self, reason: str | None) -> None:
        if reason is not None:
            self._stop(reason, "stuck")

    def _stop(self, reason: str, guard: str) -> None:
        self.ctx.events.emit("agent_stopped", reason, guard=guard, iterations=self.iterations)
        raise LoopStopped(reason, guard=guard)

    def _finished(self, started: float) -> None:
        self.ctx.events.emit(
            "agent_finished",
            f"finished after {self.iterations} model calls",
            iterations=self.iterations,
            seconds=round(time.monotonic() - started, 3),
        )

    def call_tool(self, call: ToolCall) -> ToolResult:
        """One tool call through the middleware: gated, run, its error turned into a result (a
        `finish` call with valid arguments sets the loop's result)."""
        return self.ctx.middleware.around_tool(self.ctx.stage, call, lambda: self._gated(call))

    def _gated(self, call: ToolCall) -> ToolResult:
        decision = self.ctx.gate.authorize(call, self.ctx.stage)
        if decision.verdict is Verdict.BLOCK:
            self.ctx.events.emit("tool_blocked", decision.reason, tool=call.name)
            return ToolResult(
                tool_call_id=call.id, content=f"blocked: {decision.reason}", is_error=True, verdict="block"
            )
        if decision.verdict is Verdict.ESCALATE:
            self.ctx.events.emit("tool_escalated", decision.reason, tool=call.name)
            raise HoldStory(f"{call.name} awaits a human: {decision.reason}")
        try:
            return ToolResult(tool_call_id=call.id, content=self._execute(call))
        except ToolError as exc:
            return ToolResult(tool_call_id=call.id, content=str(exc), is_error=True)

    def _execute(self, call: ToolCall) -> str:
        if call.invalid_arguments:  # the provider could not parse them: the model's slip, told to it
            raise ToolError(
                f"the arguments of {call.name} are not a JSON object: {call.invalid_arguments[:200]!r}"
            )
        if call.name == FINISH:
            self._result = parse_arguments(self.finish, call.arguments, FINISH)
            return "finished"
        tool = self.tools.get(call.name)
        if tool is None:
            raise ToolError(f"no tool named {call.name!r}; the tools are: {', '.join(self.tools)}, {FINISH}")
        try:
            return tool(call.arguments)
        except OSError as exc:  # a disk error, a permission: the model may choose another way
            raise ToolError(f"{call.name}: {exc.strerror or exc}") from None
        except UnicodeError:  # a lone surrogate ("\ud800") decoded from the model's JSON
            raise ToolError(f"{call.name}: the arguments are not valid Unicode text") from None
        except ValidationError as exc:  # a tool validating deeper structures itself
            raise ToolError(f"invalid arguments for {call.name}: {exc.error_count()} errors") from None
