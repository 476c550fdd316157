"""Which agent plays a role: chosen by the `agent` setting (offline, or noop for benchmarks)."""

from __future__ import annotations

from wavefleet.lifecycle import Decision, Role
from wavefleet.sandbox import Sandbox

from .offline import OfflineAgent
from .roles import Agent, DevResult, Plan, QAReport, Review, StageInput, StageOutput, Task


class NoopAgent:
    """Zero-work agent: valid outputs at once, no git, no tests. Measures the pipeline's own cost."""

    label = "noop"

    def __init__(self, role: Role) -> None:
        self.role = role

    def run(self, stage: StageInput) -> StageOutput:
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


def agent_for(kind: str, role: Role, *, sandbox: Sandbox, command_timeout_s: float = 300.0) -> Agent:
    if kind == "noop":
        return NoopAgent(role)
    return OfflineAgent(role, sandbox, command_timeout_s)
