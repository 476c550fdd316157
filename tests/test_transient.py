"""Transient failures, in-process against a real Redis: which failures are retried, the backoff,
the lifecycle of a waiting stage, and the supervisor's schedule. (Across real processes, with the
real SDKs: tests/llm/test_llm_transient.py.)"""

from __future__ import annotations

from pathlib import Path

import pytest
from redis import Redis
from rq.job import Job

from wavefleet.config import PipelineSettings, Settings
from wavefleet.connection import connect
from wavefleet.domains import Domains
from wavefleet.errors import (
    BudgetExceededError,
    GitError,
    NoProviderError,
    ProviderError,
    ProviderRateLimitedError,
    ProvidersFailingError,
    RateLimitedError,
    SandboxUnavailableError,
    StageError,
    as_transient,
)
from wavefleet.lifecycle import Event, EventKind, Rejected, Role, Snapshot, StoryState, advance
from wavefleet.messages import ResultMessage, StageResult, intake_fields, parse_job_id
from wavefleet.retries import RetrySchedule, backoff_s
from wavefleet.sandbox import BwrapSandbox
from wavefleet.store import StoryStore
from wavefleet.stories import Story
from wavefleet.supervisor import Supervisor
from wavefleet.testing import wait_until
from workers import commands

pytestmark = pytest.mark.timeout(60)


@pytest.mark.parametrize(
    ("error", "transient"),
    [
        (ProviderError("anthropic", "overloaded (529): busy"), True),
        (ProviderError("anthropic", "request refused (400): bad", counts=False), False),
        (ProviderRateLimitedError("xai", "RESOURCE_EXHAUSTED: slow down", retry_after_s=12.0), True),
        (ProvidersFailingError("both providers are failing"), True),
        (NoProviderError("no model provider has an API key"), False),  # configuration
        (RateLimitedError("anthropic: would wait 90 s"), True),
        (SandboxUnavailableError("bwrap could not start"), True),
        (BudgetExceededError("story budget spent"), False),  # a hold, for a human
        (GitError("merge conflict"), False),
        (StageError("the agent gave up"), False),
    ],
)
def test_only_failures_that_are_not_the_storys_are_transient(error: StageError, transient: bool) -> None:
    found = as_transient(error)
    assert (found is not None) is transient
    if found is not None:
        assert str(found) == str(error)
        assert found.retry_after_s == getattr(error, "retry_after_s", None)  # the provider's Retry-After


def test_the_backoff_doubles_with_jitter_up_to_its_cap_and_honours_retry_after() -> None:
    settings = PipelineSettings(transient_backoff_s=2.0, transient_backoff_max_s=20.0)
    assert [backoff_s(n, settings, rand=lambda: 1.0) for n in (1, 2, 3, 4, 5)] == [2, 4, 8, 16, 20]
    assert [backoff_s(n, settings, rand=lambda: 0.0) for n in (1, 2, 3)] == [1, 2, 4]  # jitter: upper half
    assert backoff_s(1, settings, retry_after_s=7.0, rand=lambda: 0.0) == 7.0
    assert backoff_s(1, settings, retry_after_s=600.0) == 20.0  # never past the cap


def test_a_waiting_stage_waits_once_and_its_retry_is_a_new_attempt_that_makes_the_old_one_stale() -> None:
    snap = Snapshot(
        StoryState.DEVELOPING,
        round=1,
        pending=frozenset({Role.FE, Role.BE}),
        attempts={Role.FE: 1, Role.BE: 1},
    )
    waiting = advance(snap, Event(EventKind.STAGE_WAITING, Role.FE, 1, 1, reason="x"), 3)
    assert (
        waiting.dispatch == ()
        and waiting.after.waiting == {Role.FE}
        and waiting.after.retries == {Role.FE: 1}
    )
    with pytest.raises(Rejected):  # the same message read again counts nothing twice
        advance(waiting.after, Event(EventKind.STAGE_WAITING, Role.FE, 1, 1), 3)

    retried = advance(waiting.after, Event(EventKind.STAGE_RETRY, Role.FE, 1, 1), 3)

    assert retried.dispatch == (Role.FE,) and retried.after.attempts[Role.FE] == 2
    assert retried.after.round == 1 and retried.after.state is StoryState.DEVELOPING  # no round burnt
    with pytest.raises(Rejected, match="stale"):
        advance(retried.after, Event(EventKind.STAGE_DONE, Role.FE, 1, 1), 3)


@pytest.fixture
def supervisor(settings: Settings, redis: Redis, domains: Domains) -> Supervisor:
    quick = settings.model_copy(
        update={"pipeline": PipelineSettings(transient_retries=1, transient_backoff_s=0)}
    )
    return Supervisor(quick, redis, connect(settings, decode=False), domains)


def fail_transiently(store: StoryStore, story_id: str, attempt: int) -> dict[str, str]:
    result = StageResult(ok=False, transient=True, error="anthropic: overloaded (529): busy")
    store.record_result(story_id, 0, Role.PM, attempt, job=f"{story_id}_r0_pm_a{attempt}", result=result)
    return intake_fields(ResultMessage(story=story_id, role=Role.PM, round=0, attempt=attempt))


def test_the_supervisor_schedules_one_retry_per_failure_runs_it_when_due_and_fails_past_the_bound(
    supervisor: Supervisor, store: StoryStore, domains: Domains
) -> None:
    store.enqueue([Story(id="AUTH-001", title="t")], domains)
    supervisor.run_once()
    message = fail_transiently(store, "AUTH-001", 1)

    supervisor.handle(message)
    supervisor.handle(message)  # delivered again after a crash: still one wait, one entry

    record = store.get("AUTH-001")
    assert record.waiting == {Role.PM} and record.retries == {Role.PM: 1}
    [(entry, _)] = supervisor.retries.waiting("AUTH-001")
    assert entry.describe(8.2) == "retry 1/1 in 8 s: anthropic: overloaded (529): busy"
    assert supervisor.retry_due() == 1
    assert store.get("AUTH-001").attempts[Role.PM] == 2
    assert Job.exists("AUTH-001_r0_pm_a2", connection=supervisor.dispatcher.raw)

    supervisor.handle(fail_transiently(store, "AUTH-001", 2))

    record = store.get("AUTH-001")
    assert record.state is StoryState.FAILED
    assert record.reason == "pm stage failed after 1 retries: anthropic: overloaded (529): busy"
    assert RetrySchedule(store.redis, store.keys).pending() == 0


def test_job_ids_parse_back_even_when_the_story_id_has_underscores() -> None:
    assert parse_job_id("AUTH_X-001_r2_fe_a3") == ("AUTH_X-001", 2, Role.FE, 3)
    assert parse_job_id("not-a-stage-job") is None


def test_a_bwrap_sandbox_that_cannot_start_says_why(tmp_path: Path) -> None:
    # A real bwrap that fails to set up (a bind source is gone), after a command reported the same
    gone = tmp_path / "worktree-removed-meanwhile"
    said = "bwrap: Can't find source path"

    why = BwrapSandbox().unavailable(1, said, gone)

    assert why is not None and why.startswith(f"the bwrap sandbox cannot start: {said}"), why
    assert BwrapSandbox().unavailable(1, said, tmp_path) is None  # there it starts: the command failed
    assert BwrapSandbox().unavailable(2, said, gone) is None  # bwrap's own failures exit 1


def test_a_command_that_only_pretends_the_sandbox_failed_is_its_own_failure(tmp_path: Path) -> None:
    # A repository's tests print what bwrap prints and exit as bwrap does: still the story's fault
    argv = ["sh", "-c", "echo 'bwrap: Creating new namespace failed: No space left on device'; exit 1"]

    outcome = commands.run_in(BwrapSandbox(), argv, tmp_path, timeout_s=30, max_output_bytes=1000)

    assert outcome.exit_code == 1 and "bwrap: Creating" in outcome.output


def test_a_retry_due_while_its_story_is_halted_is_kept_until_the_story_resumes(
    supervisor: Supervisor, store: StoryStore, domains: Domains
) -> None:
    # Given a stage waiting for its retry (due at once) in a story halted on its own (a fleet halt
    # lifted while no supervisor ran leaves stories halted until the next reconcile)
    store.enqueue([Story(id="AUTH-002", title="t")], domains)
    supervisor.run_once()
    supervisor.handle(fail_transiently(store, "AUTH-002", 1))
    store.apply("AUTH-002", Event(EventKind.HALT, reason="test"))

    # When the supervisor drains the due retries
    assert supervisor.retry_due() == 0

    # Then the retry is kept, and runs once the story resumed
    assert supervisor.retries.pending() == 1
    store.apply("AUTH-002", Event(EventKind.RESUME, reason="test"))
    wait_until(supervisor.retry_due, timeout_s=5, message="the postponed retry")
    assert store.get("AUTH-002").attempts[Role.PM] == 2


def test_the_audit_retries_a_waiting_stage_whose_schedule_entry_is_gone(
    supervisor: Supervisor, store: StoryStore, domains: Domains, redis: Redis, settings: Settings
) -> None:
    store.enqueue([Story(id="AUTH-003", title="t")], domains)
    supervisor.run_once()
    supervisor.handle(fail_transiently(store, "AUTH-003", 1))
    redis.delete(settings.keys.stage_retries())  # lost, however: nothing would ever retry the stage

    assert supervisor.audit() == 1

    assert store.get("AUTH-003").attempts[Role.PM] == 2
    assert Job.exists("AUTH-003_r0_pm_a2", connection=supervisor.dispatcher.raw)
