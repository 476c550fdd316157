"""The role interface: what a stage receives, the typed output each role returns, the Agent protocol.

Every agent kind (llm, offline, noop) implements `Agent` for each role and
returns these models, so the pipeline never changes when a new kind plugs in.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Literal, Protocol

from pydantic import BaseModel, Field
from pydantic.json_schema import SkipJsonSchema

from wavefleet.domains import Domain
from wavefleet.lifecycle import Decision, Role
from wavefleet.messages import Delivery as Delivery  # noqa: PLC0414 - re-exported (lives by StageResult)
from wavefleet.stories import Story

if TYPE_CHECKING:
    from .agent.context import AgentContext


class Task(BaseModel):
    id: str
    role: Literal["fe", "be"]
    title: str
    criteria: list[str] = Field(default_factory=list)


class Plan(BaseModel):
    kind: Literal["plan"] = "plan"
    agent: str
    tasks: list[Task]
    summary: str


class DevResult(BaseModel):
    kind: Literal["dev"] = "dev"
    agent: str
    branch: str
    commit: str
    files: list[str]
    summary: str


class Failure(BaseModel):
    """One thing QA found broken, as the developers should act on it."""

    file: str = Field(max_length=500, description="the file to change (or the failing test's file)")
    test: str = Field(default="", max_length=500, description="the failing test, if one")
    fix: str = Field(max_length=4000, description="what is wrong and what to change")


class QAReport(BaseModel):
    kind: Literal["qa"] = "qa"
    agent: str
    passed: bool
    branch: str
    tests_passed: int = 0
    tests_failed: int = 0
    summary: str
    output_tail: str = ""
    failures: list[Failure] = Field(default_factory=list)


class Review(BaseModel):
    kind: Literal["review"] = "review"
    agent: str
    decision: Decision
    reasons: list[str]
    # Set by workers/delivery.py alone, after the review: hidden from the schema the reviewing model
    # answers in, and overwritten whatever an agent put there, so no model can claim a delivery.
    delivery: SkipJsonSchema[Delivery | None] = None


StageOutput = Plan | DevResult | QAReport | Review


@dataclass(frozen=True)
class StageInput:
    """Everything an agent gets for one stage attempt."""

    story: Story
    domain: Domain
    role: Role
    round: int
    attempt: int
    worker: str
    data_dir: Path
    plan: Plan | None = None
    last_qa: QAReport | None = None  # the previous round's failed report, when recycled


class Agent(Protocol):
    """One role's behaviour: turn a stage input into that role's output, or raise StageError.

    `label` names the agent kind (llm, offline, noop): what `wave status` shows for the stage. The
    agent uses the context's services (model, workspace, sandbox) and builds none of its own."""

    label: str

    def run(self, stage: StageInput, ctx: AgentContext) -> StageOutput: ...
