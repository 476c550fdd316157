"""The RQ job function of every stage: run the role's agent and report the result to the supervisor."""

from __future__ import annotations

import os
import time
import traceback

import structlog
from redis.exceptions import RedisError

from wavefleet import logs
from wavefleet.errors import HoldStory, StageError, as_transient
from wavefleet.lifecycle import Role
from wavefleet.llm.client import LLMClient
from wavefleet.messages import RunningStage, StageResult, job_id
from wavefleet.sandbox import sandbox_for
from wavefleet.sandbox.protocol import SandboxUsage, StageLabels
from wavefleet.store import StoryRecord

from . import approval, delivery, runtime
from .agent.assemble import context_for
from .agent.context import AgentContext
from .agent.events import StoryEventSink
from .agent.loop import limits_from
from .agent.release import SandboxRelease
from .agents import agent_for
from .roles import Plan, QAReport, StageInput


def run_stage(story_id: str, domain: str, role: str, round_: int, attempt: int, *, trace: str = "") -> str:
    """Run one stage attempt. A stale attempt (superseded or already applied) is skipped. `trace`:
    the story's LangSmith root run (StageJob.trace), "" untraced."""
    # Every line logged during the stage (the LLM router, the tool loop, the sandbox client, git,
    # httpx) carries the job's fields; the previous ones (none, or the worker's same) come back after.
    with structlog.contextvars.bound_contextvars(story=story_id, stage=role, round=round_):
        try:
            return _run_stage(story_id, role, round_, attempt, trace)
        finally:
            # the work horse exits after this job: what it traced goes to the trace outbox first (one
            # Redis command; the supervisor sends it to LangSmith: the horse never waits for LangSmith)
            runtime.current().tracer.close()


def _run_stage(story_id: str, role: str, round_: int, attempt: int, trace: str = "") -> str:
    rt = runtime.current()
    stage_role = Role(role)
    job = job_id(story_id, round_, stage_role, attempt)
    log = logs.get(attempt=attempt)
    record = rt.store.find(story_id)
    if record is None or not is_current(record, stage_role, round_, attempt):
        log.info("stale stage skipped", job=job)
        return "stale"
    running = RunningStage(
        worker=rt.name,
        story=story_id,
        role=stage_role,
        round=round_,
        attempt=attempt,
        started_at=time.time(),
        pid=os.getpid(),
    )
    rt.store.mark_running(job, running)
    agent = approval.approved_review(record, stage_role) or agent_for(
        rt.agent, stage_role, command_timeout_s=rt.settings.worker.command_timeout_s
    )
    log.info("stage started", agent=agent.label, job=job)
    started = time.monotonic()
    who = {"agent": agent.label, "worker": rt.identity, "job": job}
    ctx: AgentContext | None = None
    try:
        stage = _stage_input(rt, record, stage_role)
        ctx = _context(rt, stage, job, trace)
        output = ctx.middleware.around_stage(
            stage,
            lambda: delivery.after_review(stage, agent.run(stage, ctx), agent.label),  # GO: push
        )
        result = StageResult(ok=True, output=output.model_dump(mode="json"), **who)
    except StageError as exc:
        result = _failed(exc, who)
    except RedisError:
        raise  # the fleet's Redis is unwell: let recovery run the stage again
    except Exception as exc:  # an agent bug must fail the story visibly, not loop forever
        log.error("agent crashed", error=repr(exc), traceback=traceback.format_exc(limit=5))
        result = StageResult(ok=False, error=f"{agent.label} {role} agent crashed: {exc!r}", **who)
    result = result.model_copy(
        update={"duration_s": round(time.monotonic() - started, 3), "sandbox_usage": _usage(ctx)}
    )
    rt.store.record_result(
        story_id, round_, stage_role, attempt, job=job, result=result, domain=record.domain
    )
    log.info(
        "stage finished",
        agent=agent.label,
        ok=result.ok,
        transient=result.transient,
        duration_s=result.duration_s,
        error=result.error or None,
    )
    return job


def _failed(exc: StageError, who: dict[str, str]) -> StageResult:
    """A stage's failure: held for a human, transient (retried after a backoff: not the story's
    fault), or the story's own (it fails)."""
    if isinstance(exc, HoldStory):
        return StageResult(ok=False, hold=True, error=str(exc), **who)
    transient = as_transient(exc)
    if transient is not None:
        return StageResult(
            ok=False, transient=True, error=str(transient), retry_after_s=transient.retry_after_s, **who
        )
    return StageResult(ok=False, error=str(exc), **who)


def is_current(record: StoryRecord, role: Role, round_: int, attempt: int) -> bool:
    """Whether this attempt is the one the story waits for (a cancelled story waits for none)."""
    return role in record.pending and record.round == round_ and record.attempts.get(role) == attempt


def _context(rt: runtime.Runtime, stage: StageInput, job: str, trace: str = "") -> AgentContext:
    llm = rt.llm or LLMClient(rt.settings, rt.redis)
    sandbox = rt.sandbox or sandbox_for(rt.settings, network=rt.domain.sandbox.network, redis=rt.redis)
    labels = StageLabels(
        story=stage.story.id,
        domain=stage.domain.name,
        role=stage.role.value,
        round=stage.round,
        attempt=stage.attempt,
        job=job,
        worker=rt.name,  # the running hash's and the heartbeat's name: what the runner's sweep checks
    )
    sandbox = sandbox.for_stage(labels)
    events = StoryEventSink(rt.store, stage)
    limits = limits_from(rt.settings.loop)
    return context_for(stage, llm, sandbox, events=events, limits=limits, tracer=rt.tracer, trace=trace)


def _usage(ctx: AgentContext | None) -> SandboxUsage | None:
    """What the stage's containers used, as the release at its end reported (None: local sandbox)."""
    release = ctx.middleware.first(SandboxRelease) if ctx is not None else None
    return release.usage if release is not None else None


def _stage_input(rt: runtime.Runtime, record: StoryRecord, role: Role) -> StageInput:
    plan_raw = rt.store.latest_result(record, Role.PM, round_=0)
    qa_raw = rt.store.latest_result(record, Role.QA, round_=record.round - 1) if record.round > 1 else None
    return StageInput(
        story=record.story,
        domain=rt.domain,
        role=role,
        round=record.round,
        attempt=record.attempts.get(role, 0),
        worker=rt.identity,
        data_dir=rt.settings.data_dir,
        plan=Plan.model_validate(plan_raw.output) if plan_raw and plan_raw.ok else None,
        last_qa=QAReport.model_validate(qa_raw.output) if qa_raw and qa_raw.ok else None,
    )
