"""Assembling a stage's AgentContext from the worker's runtime: the one place its parts are chosen.

Later issues add their observers to `middlewares()` (tracing, metrics, Slack, safety) and replace the
gate here; agents and the tool loop never change for them.
"""

from __future__ import annotations

from collections.abc import Sequence

from wavefleet import logs
from wavefleet.llm.client import LLMClient
from wavefleet.redact import shapes_for_process
from wavefleet.sandbox import RemoteSandbox, Sandbox

from ..git import Workspace
from ..roles import StageInput
from .context import AgentContext, EventSink, LoopLimits, ToolGate
from .middleware import Middleware, Middlewares
from .release import SandboxRelease
from .safety_gate import safety_gate_for
from .untrusted import UntrustedOutput


def middlewares(extra: Sequence[Middleware] = ()) -> Middlewares:
    """The middleware chain every stage runs under, then `extra` (a test's recorder, a benchmark's
    clock). UntrustedOutput is first, so its `tool_result` runs last and every other middleware's
    after-hooks (tracing) see the result as the model does."""
    chain: list[Middleware] = [UntrustedOutput(redactor=shapes_for_process())]
    return Middlewares([*chain, *extra])


class LogEvents:
    """An event sink that only logs: for contexts outside a worker (tests of one agent)."""

    def emit(self, event: str, reason: str, **fields: str | int | float | bool) -> None:
        logs.get().warning(event, reason=reason, **fields)


def context_for(
    stage: StageInput,
    llm: LLMClient,
    sandbox: Sandbox,
    *,
    events: EventSink | None = None,
    limits: LoopLimits | None = None,
    gate: ToolGate | None = None,
    middleware: Sequence[Middleware] = (),
) -> AgentContext:
    # Appended last, so its after-hooks run first (they run in reverse): the other observers see
    # the stage's containers gone and its usage known.
    release = [SandboxRelease(sandbox)] if isinstance(sandbox, RemoteSandbox) else []
    return AgentContext(
        stage=stage,
        llm=llm.for_story(stage.story.id, stage.domain.name, stage.role.value),
        workspace=Workspace(stage.domain, stage.data_dir),
        sandbox=sandbox,
        gate=gate or safety_gate_for(stage, llm),  # every tool call scored (README Safety)
        events=events or LogEvents(),
        middleware=middlewares([*middleware, *release]),
        limits=limits or LoopLimits(),
    )
