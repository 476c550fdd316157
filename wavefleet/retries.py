"""The schedule of stage retries after transient failures: a sorted set in Redis, due time as score.

In Redis rather than in the supervisor's memory, so a supervisor restarted (or a halt lifted) while
a stage waits still retries it when due. Only the supervisor drains it.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable

from pydantic import BaseModel, ConfigDict
from redis import Redis

from .config import PipelineSettings
from .keys import Keys
from .lifecycle import Event, EventKind, Rejected, Role
from .logs import get as get_log
from .messages import ResultMessage, StageResult, parse_job_id
from .store import StoryRecord

DRAIN_BATCH = 100


class WaitingStage(BaseModel):
    """A stage attempt that failed transiently, waiting for its retry (a member of the set)."""

    model_config = ConfigDict(frozen=True)

    job: str  # the failed attempt's job id: story, round, role and attempt
    retry: int  # which retry this will be (1-based)
    of: int  # how many the settings allow
    reason: str

    @property
    def stage(self) -> tuple[str, int, Role, int]:
        parsed = parse_job_id(self.job)
        if parsed is None:
            raise ValueError(f"not a stage job id: {self.job!r}")
        return parsed

    def describe(self, due_in_s: float) -> str:
        """``retry 2/5 in 8 s: anthropic: overloaded (529)``: what `wave status` shows."""
        return f"retry {self.retry}/{self.of} in {max(due_in_s, 0):.0f} s: {self.reason}"

    def retry_event(self) -> Event:
        _story, round_, role, attempt = self.stage
        return Event(EventKind.STAGE_RETRY, role, round_, attempt, reason=f"retry {self.retry}/{self.of}")


def backoff_s(
    retry: int,
    settings: PipelineSettings,
    retry_after_s: float | None = None,
    rand: Callable[[], float] = random.random,
) -> float:
    """The delay before retry number `retry`: exponential, full jitter on the upper half (so a
    fleet of stages hit by one outage does not come back in step), capped, and never shorter than
    what the provider asked for (within the cap)."""
    ceiling: float = min(settings.transient_backoff_s * 2.0 ** (retry - 1), settings.transient_backoff_max_s)
    delay = ceiling * (0.5 + 0.5 * rand())
    return min(max(delay, retry_after_s or 0.0), settings.transient_backoff_max_s)


class RetrySchedule:
    """The bound and backoff of transient retries, and their schedule."""

    def __init__(
        self,
        redis: Redis,
        keys: Keys,
        settings: PipelineSettings | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.redis = redis
        self.key = keys.stage_retries()
        self.settings = settings or PipelineSettings()
        self.clock = clock

    def on_failure(self, record: StoryRecord, message: ResultMessage, result: StageResult) -> Event:
        """The event a transient failure of `message`'s stage makes: the stage waits for its retry
        (scheduled here), or, its retries spent, fails with the last reason."""
        role, round_, attempt = message.role, message.round, message.attempt
        if role in record.waiting:  # this message again, after a crash: already scheduled
            raise Rejected(f"{role} already waits for its retry")
        limit, done = self.settings.transient_retries, record.retries.get(role, 0)
        if done >= limit:
            reason = f"{role} stage failed after {limit} retries: {result.error}"
            return Event(EventKind.STAGE_FAILED, role, round_, attempt, reason=reason)
        entry = WaitingStage(job=message.job_id, retry=done + 1, of=limit, reason=result.error)
        delay = backoff_s(entry.retry, self.settings, result.retry_after_s)
        # Scheduled before the story records the wait: cut off in between, the re-read message
        # schedules the same entry (kept once) and records the wait; a stale entry's retry is refused.
        due_at = self.add(entry, delay)
        get_log(story=record.id).warning(
            "stage failed transiently; retrying later",
            job=entry.job,
            retry=entry.retry,
            of=limit,
            in_s=round(delay, 1),
            why=result.error,
        )
        reason = entry.describe(due_at - self.clock())
        return Event(EventKind.STAGE_WAITING, role, round_, attempt, reason=reason)

    def add(self, entry: WaitingStage, delay_s: float) -> float:
        """Schedule the retry; a copy of the same entry (a re-read intake message) keeps the first
        due time. Returns the due time that holds."""
        member = entry.model_dump_json()
        self.redis.zadd(self.key, {member: self.clock() + delay_s}, nx=True)
        score: float | None = self.redis.zscore(self.key, member)
        return score or 0.0

    def due(self) -> list[WaitingStage]:
        """The entries whose time has come, oldest first."""
        members = self.redis.zrangebyscore(self.key, "-inf", self.clock(), start=0, num=DRAIN_BATCH)
        return [WaitingStage.model_validate_json(m) for m in members]

    def postpone(self, entry: WaitingStage, delay_s: float) -> None:
        self.redis.zadd(self.key, {entry.model_dump_json(): self.clock() + delay_s}, xx=True)

    def scheduled(self) -> dict[str, set[Role]]:
        """Story -> its stages that have a retry scheduled (the whole set: an audit's read)."""
        found: dict[str, set[Role]] = {}
        for member in self.redis.zrange(self.key, 0, -1):
            story, _round, role, _attempt = WaitingStage.model_validate_json(member).stage
            found.setdefault(story, set()).add(role)
        return found

    def pending(self) -> int:
        return int(self.redis.zcard(self.key))

    def done(self, entry: WaitingStage) -> None:
        self.redis.zrem(self.key, entry.model_dump_json())

    def waiting(self, story_id: str) -> list[tuple[WaitingStage, float]]:
        """The story's waiting stages and the seconds until each is retried (few entries: a status read)."""
        now = self.clock()
        found = []
        for member, score in self.redis.zrange(self.key, 0, -1, withscores=True):
            entry = WaitingStage.model_validate_json(member)
            if entry.job.startswith(f"{story_id}_") and entry.stage[0] == story_id:
                found.append((entry, float(score) - now))
        return found


__all__ = ["RetrySchedule", "WaitingStage", "backoff_s"]
