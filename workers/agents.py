"""Which agent plays a role: the `agent` setting (llm, offline, or noop for benchmarks), checked
once when a worker starts so a misconfigured fleet refuses in one line instead of failing stories."""

from __future__ import annotations

from typing import Literal

from wavefleet.config import Settings
from wavefleet.domains import DOMAIN_FILE, Domain
from wavefleet.errors import ConfigError
from wavefleet.lifecycle import Decision, Role
from wavefleet.llm.router import parse_routes

from .agent.context import AgentContext
from .agent.prompts import load_prompt
from .agent.team import LLMAgent
from .offline import OfflineAgent
from .roles import Agent, DevResult, Plan, QAReport, Review, StageInput, StageOutput, Task

AgentKind = Literal["llm", "offline", "noop"]


class NoopAgent:
    """Zero-work agent: valid outputs at once, no git, no tests. Measures the pipeline's own cost."""

    label = "noop"

    def __init__(self, role: Role) -> None:
        self.role = role

    def run(self, stage: StageInput, ctx: AgentContext) -> StageOutput:
        sid = stage.story.id
        if self.role is Role.PM:
            return Plan(
                agent=self.label,
                tasks=[Task(id=f"{sid}-BE", role="be", title=stage.story.title)],
                summary="noop plan",
            )
        if self.role in (Role.FE, Role.BE):
            return DevResult(agent=self.label, branch="-", commit="-", files=[], summary="noop")
        if self.role is Role.QA:
            return QAReport(agent=self.label, passed=True, branch="-", summary="noop")
        return Review(agent=self.label, decision=Decision.GO, reasons=["noop"])


def checked_kind(settings: Settings, domain: Domain, role: Role) -> AgentKind:
    """The agent kind this worker runs, `auto` resolved; ConfigError if it cannot run here."""
    kind = settings.agent_kind
    if kind != "llm":
        return kind
    if settings.anthropic.api_key is None and settings.xai.api_key is None:
        raise ConfigError(
            "WAVE_AGENT=llm needs a model provider: set WAVE_ANTHROPIC__API_KEY or WAVE_XAI__API_KEY "
            "(or use WAVE_AGENT=offline)"
        )
    if settings.llm.offline == "always":
        raise ConfigError(
            "WAVE_AGENT=llm cannot run with WAVE_LLM__OFFLINE=always (every call answered offline): "
            "set WAVE_LLM__OFFLINE=auto, or WAVE_AGENT=offline"
        )
    load_prompt(domain, role)  # a missing prompt refuses the start, not every story
    # A route naming no registered provider (or no task kind) refuses the start too, in one line.
    parse_routes(domain.models.routes, f"{domain.folder / DOMAIN_FILE} [models.routes]")
    return kind


def agent_for(kind: AgentKind, role: Role, *, command_timeout_s: float = 300.0) -> Agent:
    if kind == "noop":
        return NoopAgent(role)
    if kind == "llm":
        return LLMAgent(role, command_timeout_s)
    return OfflineAgent(role, command_timeout_s)
