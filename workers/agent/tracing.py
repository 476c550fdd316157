"""A stage's part of its story's LangSmith trace: a stage run, `llm` runs, `tool` runs.

The stage run is a child of the story's root run (its context came with the job); every run is
kept by the horse's OutboxTracer and left in the trace outbox at the stage's end, so a hook costs a
list append, never a request.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from wavefleet.llm.types import LLMRequest, LLMResponse, ToolCall, ToolResult
from wavefleet.tracing import TraceContext, Tracer

from .middleware import Middleware

if TYPE_CHECKING:
    from ..roles import StageInput, StageOutput

ESCALATED = "escalate"  # the gate held the story for a human (HoldStory out of the tool call)


class TraceMiddleware(Middleware):
    def __init__(self, tracer: Tracer, root: TraceContext) -> None:
        self.tracer, self.root = tracer, root
        self.stage_run: TraceContext | None = None
        self._model: TraceContext | None = None
        self._tools: dict[str, TraceContext] = {}

    # The stage --------------------------------------------------------------------------------
    def before_stage(self, stage: StageInput) -> None:
        self.stage_run = self.root.child()
        metadata = {
            "story": stage.story.id,
            "domain": stage.domain.name,
            "role": stage.role.value,
            "round": stage.round,
            "attempt": stage.attempt,
            "worker": stage.worker,
        }
        self.tracer.start(
            self.stage_run,
            self.root,
            f"{stage.role.value} r{stage.round}",
            "chain",
            inputs={"story": stage.story.id, "title": stage.story.title},
            extra={"metadata": metadata},
            tags=[stage.domain.name, stage.role.value],
        )

    def after_stage(self, stage: StageInput, output: StageOutput) -> None:
        if self.stage_run is not None:
            self.tracer.end(self.stage_run, self.root, outputs=output.model_dump(mode="json"))

    def on_stage_error(self, stage: StageInput, error: BaseException) -> None:
        if self.stage_run is not None:
            self.tracer.end(self.stage_run, self.root, error=f"{type(error).__name__}: {error}")

    # Model calls -------------------------------------------------------------------------------
    def before_model_call(self, stage: StageInput, request: LLMRequest) -> None:
        if self.stage_run is not None:
            self._model = self.stage_run.child()

    def after_model_call(self, stage: StageInput, request: LLMRequest, response: LLMResponse) -> None:
        usage = _usage_metadata(response)
        self._model_run(
            request,
            outputs={
                "text": response.text,
                "tool_calls": [c.model_dump(mode="json") for c in response.tool_calls],
                "stop_reason": response.stop_reason,
                "usage_metadata": usage,
            },
            metadata={
                "provider": str(response.provider),
                "model": response.model,
                "ls_provider": str(response.provider),  # LangSmith's own names: its model and cost columns
                "ls_model_name": response.model,
                "cost_usd": response.cost_usd,
                "cache_hit": response.cache_hit,
                "offline": response.offline,
                "fallback_from": str(response.fallback_from or ""),
                "latency_ms": response.latency_ms,
                "usage_metadata": usage,
            },
        )

    def on_model_error(self, stage: StageInput, request: LLMRequest, error: BaseException) -> None:
        self._model_run(request, error=f"{type(error).__name__}: {error}", metadata={})

    def _model_run(self, request: LLMRequest, metadata: dict[str, Any], **fields: Any) -> None:
        run, self._model = self._model, None
        if run is None or self.stage_run is None:
            return
        messages = [m.model_dump(mode="json", exclude_defaults=True) for m in request.messages]
        self.tracer.start(
            run,
            self.stage_run,
            f"{request.task.value}",
            "llm",
            inputs={"system": request.system, "messages": messages, "tools": [t.name for t in request.tools]},
            extra={"metadata": metadata},
        )
        self.tracer.end(run, self.stage_run, **fields)

    # Tool calls -------------------------------------------------------------------------------
    def before_tool_call(self, stage: StageInput, call: ToolCall) -> None:
        if self.stage_run is not None:
            self._tools[call.id] = self.stage_run.child()

    def after_tool_call(self, stage: StageInput, call: ToolCall, result: ToolResult) -> None:
        fields: dict[str, Any] = {"outputs": {"content": result.content, "verdict": result.verdict}}
        if result.is_error:
            fields["error"] = result.content
        self._tool_run(call, result.verdict, **fields)

    def on_tool_error(self, stage: StageInput, call: ToolCall, error: BaseException) -> None:
        from wavefleet.errors import HoldStory  # noqa: PLC0415

        verdict = ESCALATED if isinstance(error, HoldStory) else "allow"
        self._tool_run(call, verdict, error=f"{type(error).__name__}: {error}", outputs={"verdict": verdict})

    def _tool_run(self, call: ToolCall, verdict: str, **fields: Any) -> None:
        run = self._tools.pop(call.id, None)
        if run is None or self.stage_run is None:
            return
        self.tracer.start(
            run,
            self.stage_run,
            call.name,
            "tool",
            inputs={"args": call.arguments or call.invalid_arguments},
            extra={"metadata": {"verdict": verdict, "tool_call_id": call.id}},
        )
        self.tracer.end(run, self.stage_run, **fields)


def _usage_metadata(response: LLMResponse) -> dict[str, Any]:
    """Tokens and cost as LangSmith reads them (`ExtractedUsageMetadata`)."""
    u = response.usage
    return {
        "input_tokens": u.input_tokens + u.cache_read_tokens + u.cache_write_tokens,
        "output_tokens": u.output_tokens,
        "total_tokens": u.total_tokens,
        "input_token_details": {"cache_read": u.cache_read_tokens, "cache_creation": u.cache_write_tokens},
        "total_cost": response.cost_usd,
    }
