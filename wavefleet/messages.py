"""The messages between the supervisor and the workers: stage jobs, stage results, intake entries.

One typed model per message, and one place that knows each one's wire form (RQ job kwargs, a JSON
result, a flat stream entry of strings). The wire forms are those the fleet wrote before these
models existed, so a fleet upgraded mid-story reads what the old version left in Redis.
"""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter

from .lifecycle import Decision, Role
from .sandbox.protocol import SandboxUsage


def job_id(story_id: str, round_: int, role: Role, attempt: int) -> str:
    """The deterministic RQ job id of one stage attempt: dispatching it twice is detectable.

    RQ allows only letters, digits, dashes and underscores: ``AUTH-001_r1_fe_a1``.
    """
    return f"{story_id}_r{round_}_{role.value}_a{attempt}"


_JOB_ID = re.compile(r"^(?P<story>.+)_r(?P<round>\d+)_(?P<role>[a-z]+)_a(?P<attempt>\d+)$")


def parse_job_id(value: str) -> tuple[str, int, Role, int] | None:
    """The (story, round, role, attempt) a stage job id names; None for any other job id."""
    match = _JOB_ID.match(value)
    if match is None or match["role"] not in {r.value for r in Role}:
        return None
    return match["story"], int(match["round"]), Role(match["role"]), int(match["attempt"])


class _Message(BaseModel):
    model_config = ConfigDict(frozen=True, extra="ignore")


class StageJob(_Message):
    """One stage attempt to run: the arguments of `workers.stage.run_stage`."""

    story_id: str
    domain: str
    role: Role
    round: int = Field(ge=0)
    attempt: int = Field(ge=0)
    # The story's LangSmith root run (wavefleet/tracing.TraceContext as JSON): the stage's run is its
    # child. "" for a story from before tracing, and in jobs queued by an older supervisor.
    trace: str = ""

    @property
    def job_id(self) -> str:
        return job_id(self.story_id, self.round, self.role, self.attempt)

    def kwargs(self) -> dict[str, Any]:
        """The RQ job's keyword arguments (``round_``: `round` is a builtin in the job function)."""
        kwargs: dict[str, Any] = {
            "story_id": self.story_id,
            "domain": self.domain,
            "role": self.role.value,
            "round_": self.round,
            "attempt": self.attempt,
        }
        if self.trace:  # absent when empty: a worker of the previous version still takes the job
            kwargs["trace"] = self.trace
        return kwargs

    @classmethod
    def from_kwargs(cls, kwargs: dict[str, Any]) -> StageJob:
        """Read an RQ job's kwargs back; raises ValueError if they are not a stage job's."""
        return cls.model_validate({**kwargs, "round": kwargs.get("round_")})


class StageResult(_Message):
    """What a worker records for one stage attempt. A failure is the story's fault unless it is
    `transient` (a provider outage, a sandbox that cannot start): then the stage is run again after a
    backoff. `hold` asks for a human. `error` is the one-line reason in every failed case."""

    ok: bool
    agent: str = ""
    agent_kind: str = ""
    worker: str = ""
    job: str = ""
    output: dict[str, Any] = Field(default_factory=dict)
    error: str = ""
    hold: bool = False
    transient: bool = False
    retry_after_s: float | None = None  # what the provider asked for, if it said
    duration_s: float = 0.0
    sandbox_usage: SandboxUsage | None = None  # what the stage's containers used (WAVE_SANDBOX=container)

    def to_json(self) -> str:
        return self.model_dump_json(exclude_defaults=True)


class QAOutcome(_Message):
    """The part of a QA report the pipeline acts on."""

    passed: bool
    summary: str = ""


class Delivery(_Message):
    """Where a GO'd story's reviewed merge went: `branch` at `commit` on `remote`, or (remote "")
    kept in the fleet's `clone` as `branch`, `note` saying why. Part of the CTO stage's output."""

    branch: str
    commit: str
    remote: str = ""
    clone: str
    note: str = ""


class ReviewOutcome(_Message):
    """The part of a CTO review the pipeline acts on."""

    decision: Decision
    reasons: list[str] = Field(default_factory=list)


class RunningStage(_Message):
    """An entry of the running hash: which worker runs a stage attempt, since when."""

    worker: str
    story: str
    role: Role
    round: int
    attempt: int
    started_at: float = 0.0
    pid: int = 0


class WorkerLogEntry(_Message):
    """An entry of a worker's own record of the jobs it ran."""

    job: str
    story: str
    domain: str
    role: Role
    identity: str


# Intake stream entries -------------------------------------------------------------------------
# A stream entry is a flat map of strings; `intake_fields` writes one, `parse_intake` reads one.


class RouteMessage(_Message):
    """A story was enqueued (or retried): route it to its first stage."""

    kind: Literal["route"] = "route"
    story: str


class NudgeMessage(_Message):
    """Dispatch the story's pending stages (after an approve)."""

    kind: Literal["nudge"] = "nudge"
    story: str


class ResultMessage(_Message):
    """A stage attempt's result is stored: apply it."""

    kind: Literal["result"] = "result"
    story: str
    role: Role
    round: int
    attempt: int

    @property
    def job_id(self) -> str:
        return job_id(self.story, self.round, self.role, self.attempt)


class MisroutedMessage(_Message):
    """A worker refused a job of another domain or role: dispatch it again, where it belongs."""

    kind: Literal["misrouted"] = "misrouted"
    story: str
    role: Role
    round: int
    attempt: int
    worker: str


IntakeMessage = Annotated[
    RouteMessage | NudgeMessage | ResultMessage | MisroutedMessage, Field(discriminator="kind")
]
_INTAKE: TypeAdapter[IntakeMessage] = TypeAdapter(IntakeMessage)


def intake_fields(message: IntakeMessage) -> dict[str, str]:
    """The stream entry of `message`: every value a string, as Redis returns it."""
    return {k: str(v) for k, v in message.model_dump(mode="json").items()}


def parse_intake(fields: dict[str, str]) -> IntakeMessage:
    """Read an intake entry; raises ValueError naming what is wrong if it is no known message."""
    return _INTAKE.validate_python(fields)


__all__ = [
    "Delivery",
    "IntakeMessage",
    "MisroutedMessage",
    "NudgeMessage",
    "QAOutcome",
    "ResultMessage",
    "ReviewOutcome",
    "RouteMessage",
    "RunningStage",
    "StageJob",
    "StageResult",
    "WorkerLogEntry",
    "intake_fields",
    "job_id",
    "parse_intake",
    "parse_job_id",
]
