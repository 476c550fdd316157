"""Assembling a stage's AgentContext from the worker's runtime: the one place its parts are chosen.

Later issues add their observers to `middlewares()` (tracing, metrics, Slack, safety) and replace the
gate here; agents and the tool loop never change for them.
"""

from __future__ import annotations

from wavefleet import logs
from wavefleet.llm.client import LLMClient
from wavefleet.sandbox import Sandbox

from ..git import Workspace
from ..roles import StageInput
from .context import AgentContext, AllowAll, EventSink, LoopLimits
from .middleware import Middleware, Middlewares


def middlewares() -> Middlewares:
    """The middleware chain every stage runs under (empty until tracing, metrics, Slack, safety)."""
    chain: list[Middleware] = []
    return Middlewares(chain)


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
) -> AgentContext:
    return AgentContext(
        stage=stage,
        llm=llm.for_story(stage.story.id, stage.domain.name, stage.role.value),
        workspace=Workspace(stage.domain, stage.data_dir),
        sandbox=sandbox,
        gate=AllowAll(),
        events=events or LogEvents(),
        middleware=middlewares(),
        limits=limits or LoopLimits(),
    )
