"""Middleware: typed no-op hooks around stages, model calls and tool calls (as dramatiq's, but typed).

Tracing, metrics, Slack and safety observers subclass `Middleware` and override what they need; the
loop never changes for them. Hooks are called as methods (a typo is an attribute error, not silence).
A failing observer is logged and never fails the stage: the stage's own outcome is what counts.
One hook transforms instead of observing: `tool_result`, the one place a tool's result is changed
before the model (and every observer) sees it (redaction, untrusted-data marking); a failing
transform withholds the result rather than pass it on unchecked.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, TypeVar

from wavefleet import logs
from wavefleet.llm.types import LLMRequest, LLMResponse, ToolCall, ToolResult

if TYPE_CHECKING:
    from ..roles import StageInput, StageOutput

T = TypeVar("T")
M = TypeVar("M", bound="Middleware")


class Middleware:
    """Every hook does nothing; override the ones you need."""

    def before_stage(self, stage: StageInput) -> None: ...
    def after_stage(self, stage: StageInput, output: StageOutput) -> None: ...
    def on_stage_error(self, stage: StageInput, error: BaseException) -> None: ...

    def before_model_call(self, stage: StageInput, request: LLMRequest) -> None: ...
    def after_model_call(self, stage: StageInput, request: LLMRequest, response: LLMResponse) -> None: ...
    def on_model_error(self, stage: StageInput, request: LLMRequest, error: BaseException) -> None: ...

    def before_tool_call(self, stage: StageInput, call: ToolCall) -> None: ...
    def after_tool_call(self, stage: StageInput, call: ToolCall, result: ToolResult) -> None: ...
    def on_tool_error(self, stage: StageInput, call: ToolCall, error: BaseException) -> None: ...

    def tool_result(self, stage: StageInput, call: ToolCall, result: ToolResult) -> ToolResult:
        """The result the model reads (and the after-hooks see): `result` itself unless overridden."""
        return result


class Middlewares:
    """The chain: `before` hooks in order, `after` and `on_error` hooks in reverse order."""

    def __init__(self, middleware: Sequence[Middleware] = ()) -> None:
        self.chain = tuple(middleware)

    def first(self, kind: type[M]) -> M | None:
        """The chain's first middleware of `kind`: how the stage reads what one observed."""
        return next((m for m in self.chain if isinstance(m, kind)), None)

    def around_stage(self, stage: StageInput, run: Callable[[], StageOutput]) -> StageOutput:
        for m in self.chain:
            _observe(m.before_stage, stage)
        try:
            output = run()
        except BaseException as exc:
            for m in reversed(self.chain):
                _observe(m.on_stage_error, stage, exc)
            raise
        for m in reversed(self.chain):
            _observe(m.after_stage, stage, output)
        return output

    def around_model(
        self, stage: StageInput, request: LLMRequest, call: Callable[[], LLMResponse]
    ) -> LLMResponse:
        for m in self.chain:
            _observe(m.before_model_call, stage, request)
        try:
            response = call()
        except BaseException as exc:
            for m in reversed(self.chain):
                _observe(m.on_model_error, stage, request, exc)
            raise
        for m in reversed(self.chain):
            _observe(m.after_model_call, stage, request, response)
        return response

    def around_tool(self, stage: StageInput, call: ToolCall, run: Callable[[], ToolResult]) -> ToolResult:
        for m in self.chain:
            _observe(m.before_tool_call, stage, call)
        try:
            result = run()
        except BaseException as exc:
            for m in reversed(self.chain):
                _observe(m.on_tool_error, stage, call, exc)
            raise
        for m in reversed(self.chain):
            result = _transform(m, stage, call, result)
        for m in reversed(self.chain):
            _observe(m.after_tool_call, stage, call, result)
        return result


def _transform(m: Middleware, stage: StageInput, call: ToolCall, result: ToolResult) -> ToolResult:
    try:
        return m.tool_result(stage, call, result)
    except Exception as exc:  # unchecked output must not reach the model: withheld, and said why
        logs.get().error("tool result transform failed", middleware=type(m).__name__, error=repr(exc))
        content = f"the output of {call.name} was withheld: its safety check failed ({type(exc).__name__})"
        return ToolResult(tool_call_id=result.tool_call_id, content=content, is_error=True)


def _observe(hook: Callable[..., None], *args: object) -> None:
    try:
        hook(*args)
    except Exception as exc:  # an observer's failure (Slack down, tracer bug) never fails the stage
        logs.get().warning(
            "middleware hook failed", hook=getattr(hook, "__qualname__", repr(hook)), error=repr(exc)
        )
