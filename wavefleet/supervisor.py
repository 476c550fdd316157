"""The supervisor: routes stories to their domain's queues, advances the pipeline, recovers lost stages.

It is the only process that dispatches stages. Its input is the intake stream, read through a
consumer group, so a message is acknowledged only after it was applied: a supervisor killed at any
point re-reads what it had not acknowledged, and the idempotent transitions make that harmless.
"""

from __future__ import annotations

import contextlib
import os
import threading
import time
from collections.abc import Iterator

from redis import Redis
from redis.exceptions import RedisError, ResponseError

from . import logs
from .config import Settings
from .domains import Domains
from .errors import NotFoundError, WaveError
from .fleet_events import WorkerDead, emit
from .halt import read_halt
from .lifecycle import WORKING, Event, EventKind, Rejected, Role, StoryState
from .messages import (
    MisroutedMessage,
    NudgeMessage,
    QAOutcome,
    ResultMessage,
    ReviewOutcome,
    RouteMessage,
    parse_intake,
    parse_job_id,
)
from .queues import Dispatcher
from .retries import RetrySchedule
from .safety.intake import hold_reason
from .store import StoryRecord, StoryStore

CONSUMER = "supervisor"
BATCH = 200
LOST_JOB_STATUSES = {"failed", "stopped", "canceled"}
HALT_SWEEP_DELAY_S = 0.5
RETRY_CHECK_S = 0.1  # how often the retry schedule is read: a busy loop must not pay a round trip a batch
COMPLAIN_EVERY_S = 60.0
RECONNECT_GRACE_S = 5.0  # a worker's heartbeat thread reconnects within this after Redis returns
# Extend the leader lock if this supervisor holds it, else take it if free: one round trip a loop.
LEAD_LUA = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  return 1
end
if redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) then return 2 end
return 0
"""
LEAD_NOT_MINE, LEAD_KEPT, LEAD_TAKEN = 0, 1, 2


class Supervisor:
    def __init__(self, settings: Settings, redis: Redis, raw: Redis, domains: Domains) -> None:
        self.settings = settings
        self.keys = settings.keys
        self.redis = redis
        self.domains = domains
        self.store = StoryStore(redis, settings.keys, settings.pipeline.max_rounds)
        self.dispatcher = Dispatcher(settings, raw, self.store)
        self.retries = RetrySchedule(redis, settings.keys, settings.pipeline)
        self.stopping = threading.Event()
        self.token = f"{os.uname().nodename}.{os.getpid()}"
        self.log = logs.get()
        self._last_recovery = 0.0
        self._last_retry_check = 0.0
        self._last_audit = time.monotonic()  # `reconcile` runs first and checks the same
        self._complained: dict[str, float] = {}  # story -> when its trouble was last logged as an error
        self._info_refused_said = False
        self.halted = False
        self.halt_swept = False
        self.halt_seen = 0.0
        self._group_ready = False
        self._lead_script = redis.register_script(LEAD_LUA)

    # Loop ------------------------------------------------------------------------------------
    def run(self, *, burst: bool = False) -> None:
        """Work until stopped (or, with `burst`, until the intake is drained and nothing is running)."""
        self.log.info("supervisor starting", domains=self.domains.names())
        delay = 0.1
        reconciled = False
        while not self.stopping.is_set():
            try:
                if not self._lead():
                    self.stopping.wait(1.0)
                    continue
                if self._halted():
                    reconciled = False  # on resume, every story is checked again
                    self.stopping.wait(self.settings.supervisor.block_ms / 1000)
                    continue
                if not reconciled:
                    self.reconcile()
                    reconciled = True
                handled = self.run_once(block_ms=0 if burst else self.settings.supervisor.block_ms)
                delay = 0.1
                if burst and handled == 0 and not self.redis.hlen(self.keys.running()):
                    if not self.retries.pending():
                        break
                    self.stopping.wait(0.05)  # a stage waits out its backoff: burst waits with it
            except RedisError as exc:
                self.log.warning("Redis unavailable; retrying", error=str(exc), retry_in_s=delay)
                reconciled = False  # after Redis returns (maybe from its AOF), check every story again
                self._group_ready = False
                self.stopping.wait(delay)
                delay = min(delay * 2, 5.0)
        self._release()
        self.log.info("supervisor stopped")

    def run_once(self, block_ms: int = 0) -> int:
        """Handle what is waiting on the intake (own unacknowledged entries first), then recover."""
        self._ensure_group()
        handled = self._consume("0", block_ms=None)  # redelivered after a crash
        handled += self._consume(">", block_ms=block_ms or None)
        now = time.monotonic()
        if now - self._last_retry_check >= RETRY_CHECK_S:
            handled += self.retry_due()
            self._last_retry_check = now
        if now - self._last_recovery >= self.settings.supervisor.recovery_interval_s:
            self.recover()
            self._last_recovery = now
        if now - self._last_audit >= self.settings.supervisor.audit_interval_s:
            self.audit()
            self._last_audit = now
        return handled

    def _consume(self, start: str, block_ms: int | None) -> int:
        reply = self.redis.xreadgroup(
            self.keys.supervisor_group(), CONSUMER, {self.keys.intake(): start}, count=BATCH, block=block_ms
        )
        done = []
        for _stream, entries in reply or []:
            for entry_id, fields in entries:
                self.handle(fields)
                done.append(entry_id)
        if done:  # acknowledged after they were applied: a crash before this re-reads them, harmlessly
            self.redis.xack(self.keys.intake(), self.keys.supervisor_group(), *done)
        return len(done)

    def _ensure_group(self) -> None:
        if self._group_ready:
            return
        try:
            # From id 0: stories enqueued before any supervisor ever ran are routed too.
            self.redis.xgroup_create(self.keys.intake(), self.keys.supervisor_group(), id="0", mkstream=True)
        except ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise
        self._group_ready = True

    # Emergency stop --------------------------------------------------------------------------
    def _halted(self) -> bool:
        """While the fleet is halted: dispatch nothing, and mark every working story halted once."""
        state = read_halt(self.redis, self.keys)
        if state is None:
            if self.halted:
                self.halted = False
                self.resume_stories()
            return False
        if not self.halted:
            self.halted, self.halt_swept, self.halt_seen = True, False, time.monotonic()
            self.log.error("EMERGENCY STOP", reason=state.reason, by=state.by)
        # Mark the stories a moment later: the workers stopping their stages come first on a busy
        # machine, and the stories' state is bookkeeping (the stages are already back on their queues).
        if not self.halt_swept and time.monotonic() - self.halt_seen >= HALT_SWEEP_DELAY_S:
            self.halt_stories(state.reason)
            self.halt_swept = True
        return True

    def halt_stories(self, reason: str) -> None:
        for story_id in self.store.active_ids():
            with self._one_story(story_id, "halt"), contextlib.suppress(Rejected):
                # Rejected: not working (queued, held) or already halted by its worker
                self.store.apply(story_id, Event(EventKind.HALT, reason=f"emergency stop: {reason}"))

    def resume_stories(self) -> None:
        resumed = 0
        for story_id in self.store.active_ids():
            with self._one_story(story_id, "resume"), contextlib.suppress(Rejected):
                self._apply(story_id, Event(EventKind.RESUME, reason="fleet resumed"))
                resumed += 1
        self.log.warning("fleet resumed", stories=resumed)

    # Leadership ------------------------------------------------------------------------------
    def _lead(self) -> bool:
        """Hold the leader lock: only one supervisor dispatches at a time."""
        ttl_ms = int(self.settings.supervisor.lock_ttl_s * 1000)
        held = int(self._lead_script(keys=[self.keys.supervisor_lock()], args=[self.token, ttl_ms]))
        if held == LEAD_TAKEN:
            self.log.info("supervisor is the leader")
        return held != LEAD_NOT_MINE

    def _release(self) -> None:
        try:
            if self.redis.get(self.keys.supervisor_lock()) == self.token:
                self.redis.delete(self.keys.supervisor_lock())
        except RedisError:
            pass

    # Handling intake messages ----------------------------------------------------------------
    def handle(self, fields: dict[str, str]) -> None:
        story_id = fields.get("story", "")
        try:
            message = parse_intake(fields)
            if isinstance(message, RouteMessage):
                self._route(story_id)
            elif isinstance(message, ResultMessage):
                self._apply(story_id, self._result_event(message))
            elif isinstance(message, MisroutedMessage):
                self.log.warning("misrouted job returned by a worker", story=story_id, worker=message.worker)
                lost = Event(
                    EventKind.STAGE_LOST,
                    message.role,
                    message.round,
                    message.attempt,
                    reason="misrouted; sent again",
                )
                self._apply(story_id, lost)
            elif isinstance(message, NudgeMessage):
                self._dispatch(story_id)
        except Rejected as exc:
            self.log.debug("event ignored", story=story_id, kind=fields.get("kind"), why=str(exc))
        except (WaveError, ValueError) as exc:
            # A message that can never apply (a story that does not exist, a malformed field) must not
            # stop the supervisor or come back after every restart: park it where an operator sees it.
            self.log.error("intake message set aside", fields=fields, error=str(exc).splitlines()[0])
            self.redis.xadd(
                self.keys.intake_dead(), {**fields, "error": str(exc)[:500]}, maxlen=10_000, approximate=True
            )

    def _route(self, story_id: str) -> None:
        """Plan a queued story, or hold it if its intake check flagged it (a human decides first)."""
        flags = self.store.get(story_id).intake
        if flags:
            self._apply(story_id, Event(EventKind.INTAKE_HELD, reason=hold_reason(flags)))
        else:
            self._apply(story_id, Event(EventKind.ROUTE))

    def _result_event(self, message: ResultMessage) -> Event:
        role, round_, attempt = message.role, message.round, message.attempt
        result = self.store.result(message.story, round_, role, attempt)
        if result is None:
            raise Rejected("result message without a stored result")
        if result.transient:  # not the story's fault: its retry scheduled, or given up past the bound
            return self.retries.on_failure(self.store.get(message.story), message, result)
        if not result.ok:
            kind = EventKind.STAGE_HELD if result.hold else EventKind.STAGE_FAILED
            return Event(kind, role, round_, attempt, reason=result.error)
        if role is Role.QA:
            qa = QAOutcome.model_validate(result.output)
            return Event(EventKind.STAGE_DONE, role, round_, attempt, passed=qa.passed, reason=qa.summary)
        if role is Role.CTO:
            review = ReviewOutcome.model_validate(result.output)
            reasons = "; ".join(review.reasons)
            return Event(
                EventKind.STAGE_DONE, role, round_, attempt, decision=review.decision, reason=reasons
            )
        return Event(EventKind.STAGE_DONE, role, round_, attempt)

    # Transient failures ----------------------------------------------------------------------
    def retry_due(self) -> int:
        """Run again every waiting stage whose backoff is over; how many it handled."""
        handled = 0
        for entry in self.retries.due():
            story, _round, role, _attempt = entry.stage
            try:
                self._apply(story, entry.retry_event())
            except Rejected as exc:
                record = self.store.find(story)
                if record is not None and record.state is StoryState.HALTED and role in record.waiting:
                    self.retries.postpone(entry, self.settings.supervisor.block_ms / 1000)  # after the resume
                    continue
                self.log.debug("retry no longer wanted", story=story, job=entry.job, why=str(exc))
            except NotFoundError:
                pass
            self.retries.done(entry)
            handled += 1
        return handled

    def _apply(self, story_id: str, event: Event) -> None:
        outcome = self.store.apply(story_id, event)
        if outcome.changed_state:
            self.log.info(
                "story moved",
                story=story_id,
                frm=outcome.before.state.value,
                to=outcome.after.state.value,
                round=outcome.after.round,
                reason=outcome.reason or None,
            )
        if outcome.dispatch:
            self._dispatch(story_id)

    def _dispatch(self, story_id: str) -> list[str]:
        """Put the story's pending stages on their queues; the job ids it enqueued."""
        record = self.store.get(story_id)
        if record.state not in WORKING:  # a held or halted story keeps its stages pending, unqueued
            return []
        if self._replay_results(record):
            return []
        jobs = self.dispatcher.ensure(record)
        for job in jobs:
            stage = parse_job_id(job)
            queue = self.keys.queue(record.domain, stage[2].value) if stage else "?"
            self.log.info("stage dispatched", story=story_id, job=job, queue=queue)
        return jobs

    def _replay_results(self, record: StoryRecord) -> bool:
        """Apply a pending stage's stored result whose intake message was refused (it arrived while
        the story was halted or held); returns True if one was applied."""
        for role in sorted(record.pending):
            attempt = record.attempts.get(role, 0)
            if self.store.result(record.id, record.round, role, attempt) is None:
                continue
            message = ResultMessage(story=record.id, role=role, round=record.round, attempt=attempt)
            try:
                self._apply(record.id, self._result_event(message))
            except Rejected:
                continue
            return True
        return False

    # Recovery --------------------------------------------------------------------------------
    def reconcile(self) -> None:
        """Make every active story's current stages exist: routes and dispatches a crash skipped."""
        for story_id in self.store.active_ids():
            with self._one_story(story_id, "reconcile"):
                record = self.store.find(story_id)
                if record is None:
                    continue
                if record.state is StoryState.QUEUED:
                    with contextlib.suppress(Rejected):
                        self._route(story_id)
                elif record.state in WORKING:
                    self._dispatch(story_id)
                elif record.state is StoryState.HALTED:  # resumed while no supervisor was running
                    with contextlib.suppress(Rejected):
                        self._apply(story_id, Event(EventKind.RESUME, reason="fleet resumed"))

    def audit(self) -> int:
        """Dispatch again any pending stage of a working story that has neither a job nor a result.

        Nothing known strands a stage that way: this is the check that would catch what is not
        known, loudly, instead of leaving a story waiting forever. Two round trips for the whole
        fleet when all is well. Returns how many stages it dispatched."""
        dispatched = 0
        with self._one_story("-", "audit"):
            # A story whose hash cannot be read is left out (recovery reports it), not the whole audit.
            active = self.store.records(self.store.active_ids(), skip_corrupt=True)
            working = [r for r in active if r.state in WORKING]
            for story_id, roles in self.dispatcher.missing(working).items():
                self.log.warning(
                    "stage without a job or result; dispatching it again",
                    story=story_id,
                    stages=[r.value for r in roles],
                )
                with self._one_story(story_id, "audit"):
                    dispatched += len(self._dispatch(story_id))
            dispatched += self._unscheduled_waits(working)
        return dispatched

    def _unscheduled_waits(self, working: list[StoryRecord]) -> int:
        """Retry at once a stage that waits for a retry no schedule entry will ever run."""
        waiting = [r for r in working if r.waiting]
        scheduled = self.retries.scheduled() if waiting else {}
        retried = 0
        for record in waiting:
            for role in sorted(record.waiting - scheduled.get(record.id, set())):
                self.log.warning(
                    "stage waits for a retry that is not scheduled; retrying it",
                    story=record.id,
                    stage=role.value,
                )
                with self._one_story(record.id, "audit"), contextlib.suppress(Rejected):
                    attempt = record.attempts.get(role, 0)
                    self._apply(
                        record.id,
                        Event(
                            EventKind.STAGE_RETRY, role, record.round, attempt, reason="retry (unscheduled)"
                        ),
                    )
                    retried += 1
        return retried

    @contextlib.contextmanager
    def _one_story(self, story_id: str, doing: str) -> Iterator[None]:
        """One story's trouble (contention, a malformed hash) is logged and left for the next pass;
        it never stops the supervisor, which every other story needs."""
        try:
            yield
        except WaveError as exc:
            # Said at error level once a minute per story, not on every pass (one a second).
            now = time.monotonic()
            loud = now - self._complained.get(story_id, -COMPLAIN_EVERY_S) >= COMPLAIN_EVERY_S
            if loud:
                self._complained[story_id] = now
            (self.log.error if loud else self.log.debug)(
                "story skipped until the next pass", doing=doing, story=story_id, error=str(exc)
            )

    def recover(self) -> None:
        """Run again every stage whose worker died or whose job crashed or never ran."""
        handled: set[str] = set()  # lost stages the running sweep has already re-run
        dead: dict[str, int] = {}  # worker found dead this pass -> how many of its stages run again
        redis_restarted: bool | None = None  # asked once a pass, and only if a worker looks dead
        for job_id, info in self.store.running().items():
            alive = self.redis.exists(self.keys.worker_heartbeat(info.worker))
            status = self.dispatcher.job_status(job_id)
            if status not in LOST_JOB_STATUSES:
                if alive:
                    continue
                if redis_restarted is None:
                    redis_restarted = self._redis_restarted_recently()
                if redis_restarted:
                    continue  # its heartbeat expired while Redis was down: no proof it died
            why = f"worker {info.worker} died" if not alive else f"job {status}"
            lost = Event(EventKind.STAGE_LOST, info.role, info.round, info.attempt, reason=why)
            # The entry goes only once the loss is applied: cut off in between, the next pass redoes it.
            if self._lose(job_id, info.story, lost):
                self.redis.hdel(self.keys.running(), job_id)
                handled.add(job_id)
                if not alive:
                    dead[info.worker] = dead.get(info.worker, 0) + 1
        self._report_dead(dead)
        # A job RQ failed before it ever started is in no running entry: RQ fails a job a worker left
        # between dequeue and start ("stuck in intermediate queue"), e.g. when stopped at that moment.
        # It leaves the failed registry only once handled, so an interruption cannot strand it.
        for registry, job_id in self.dispatcher.failed(self.domains.names()):
            stage = parse_job_id(job_id)
            if job_id not in handled and stage is not None and self.store.result(*stage) is None:
                story, round_, role, attempt = stage
                why = f"job failed: {self._failure(job_id)}"
                lost = Event(EventKind.STAGE_LOST, role, round_, attempt, reason=why)
                if not self._lose(job_id, story, lost):
                    continue
            self.dispatcher.forget_failed(registry, job_id)

    def _report_dead(self, dead: dict[str, int]) -> None:
        """One ``worker_dead`` event per worker found dead: its running entries are gone once their
        stages are re-run, so a later pass does not find (nor report) it again."""
        if not dead:
            return
        now = time.time()
        with self.redis.pipeline(transaction=False) as pipe:
            for worker, stages in dead.items():
                reason = f"heartbeat of {worker} stopped; {stages} stage(s) run again"
                emit(pipe, self.keys, WorkerDead(worker=worker, stages=stages, reason=reason), now)
            pipe.execute()

    def _redis_restarted_recently(self) -> bool:
        """Whether Redis came up less than a heartbeat TTL and a reconnect ago. Restarted from its
        AOF, it finds every heartbeat written before it went down expired; a live worker beats
        again within moments, and re-running its stage meanwhile would duplicate the work."""
        try:
            uptime_s = int(self.redis.info("server")["uptime_in_seconds"])
        except ResponseError:  # INFO not allowed to this user (ACL, a managed Redis): cannot tell
            if not self._info_refused_said:
                self._info_refused_said = True
                self.log.warning(
                    "Redis refuses INFO: after a Redis restart, stages of live workers may run twice"
                )
            return False
        return uptime_s < self.settings.worker.heartbeat_ttl_s + RECONNECT_GRACE_S

    def _lose(self, job_id: str, story: str, lost: Event) -> bool:
        """Apply a stage loss (the stage runs again); False if it could not be settled this pass."""
        self.log.warning("stage lost; running it again", story=story, job=job_id, why=lost.reason)
        with self._one_story(story, "stage loss"):
            try:
                self._apply(story, lost)
            except NotFoundError:
                return True  # the story is gone: nothing to run again
            except Rejected as exc:
                # Applied before (or superseded): make sure what it dispatches exists, in case the
                # dispatch after an earlier apply was cut off.
                self.log.debug("lost stage already superseded", job=job_id, why=str(exc))
                self._dispatch(story)
            return True
        return False

    def _failure(self, job_id: str) -> str:
        """The last line of what RQ recorded as the job's failure."""
        exc = self.dispatcher.failure(job_id)
        return exc.strip().splitlines()[-1] if exc and exc.strip() else "no detail recorded"
