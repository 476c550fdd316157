"""The per-domain, per-role RQ queues, and dispatching a story's pending stages onto them."""

from __future__ import annotations

from collections.abc import Sequence

from redis import Redis
from redis.client import Pipeline
from redis.exceptions import WatchError
from rq import Queue
from rq.exceptions import NoSuchJobError
from rq.job import Job

from .config import Settings
from .errors import ConflictError
from .lifecycle import Role
from .messages import StageJob
from .store import StoryRecord, StoryStore
from .store import _result_field as result_field  # the results hash's field names belong to the store
from .stories import Priority

STAGE_FUNCTION = "workers.stage.run_stage"
WATCH_TRIES = 20


class Dispatcher:
    """Puts each pending stage of a story on its queue exactly once (job ids are deterministic)."""

    def __init__(self, settings: Settings, raw: Redis, store: StoryStore) -> None:
        self.settings = settings
        self.raw = raw  # RQ needs a client that does not decode responses
        self.store = store
        self._queues: dict[str, Queue] = {}

    def queue(self, domain: str, role: Role) -> Queue:
        name = self.settings.keys.queue(domain, role.value)
        if name not in self._queues:
            self._queues[name] = Queue(name, connection=self.raw)
        return self._queues[name]

    def ensure(self, record: StoryRecord) -> list[str]:
        """Enqueue every pending stage that has neither a job nor a result yet; return new job ids.

        Three round trips however many stages are pending: WATCH, one pipeline of checks, one
        transaction enqueueing every missing stage (RQ's own `enqueue` costs two per job). The
        WATCH is what makes a lost reply safe: redis-py resends an unwatched transaction after a
        dropped connection, which would put each job on its queue twice; a watched one fails with
        WatchError instead, and the checks run again and find the jobs.
        """
        if not record.pending:
            return []
        for _ in range(WATCH_TRIES):
            with self.raw.pipeline() as pipe:
                try:
                    # Watched before the checks: a job or result appearing meanwhile fails the EXEC.
                    pipe.watch(*self._stage_keys(record), self.settings.keys.story_results(record.id))
                    roles = self.missing([record]).get(record.id, [])
                    if not roles:
                        return []
                    pipe.multi()
                    for role in roles:
                        self._enqueue(record, role, pipe)
                    pipe.execute()
                    return [record.job_id(role) for role in roles]
                except WatchError:
                    continue
        raise ConflictError(f"could not dispatch {record.id}: its jobs kept changing; try again")

    def missing(self, records: Sequence[StoryRecord]) -> dict[str, list[Role]]:
        """Each story's pending stages that have neither a job nor a result: one round trip for all."""
        with self.raw.pipeline(transaction=False) as pipe:
            for record in records:
                for role in sorted(record.pending):
                    # Order matters: a job deletes itself only after its result is written, so checking
                    # the job first and the result second can never miss both (a pipeline keeps order).
                    pipe.exists(Job.key_for(record.job_id(role)))
                    pipe.hexists(
                        self.settings.keys.story_results(record.id),
                        result_field(record.round, role, record.attempts.get(role, 0)),
                    )
            checks = iter(pipe.execute())
        found: dict[str, list[Role]] = {}
        for record in records:
            for role in sorted(record.pending):
                job, result = next(checks), next(checks)
                if not job and not result:
                    found.setdefault(record.id, []).append(role)
        return found

    def _stage_keys(self, record: StoryRecord) -> list[str]:
        return [Job.key_for(record.job_id(role)) for role in sorted(record.pending)]

    def _enqueue(self, record: StoryRecord, role: Role, pipe: Pipeline) -> None:
        job = StageJob(
            story_id=record.id,
            domain=record.domain,
            role=role,
            round=record.round,
            attempt=record.attempts.get(role, 0),
            trace=record.trace,
        )
        self.queue(record.domain, role).enqueue_call(
            STAGE_FUNCTION,
            kwargs=job.kwargs(),
            job_id=job.job_id,
            timeout=self.settings.worker.job_timeout_s,
            result_ttl=3600,
            failure_ttl=86400,
            description=f"{record.id} {role.value} round {record.round}",
            at_front=record.story.priority is Priority.URGENT,
            pipeline=pipe,
        )

    def failed(self, domains: list[str]) -> list[tuple[str, str]]:
        """(registry key, job id) of every job in the stage queues' failed registries: one round trip.
        The caller forgets each once it is handled (the job itself stays until its failure TTL)."""
        registries = [self.queue(d, r).failed_job_registry.key for d in domains for r in Role]
        with self.raw.pipeline(transaction=False) as pipe:
            for key in registries:
                pipe.zrange(key, 0, -1)
            found = pipe.execute()
        return [(key, job_id.decode()) for key, ids in zip(registries, found, strict=True) for job_id in ids]

    def forget_failed(self, registry: str, job_id: str) -> None:
        self.raw.zrem(registry, job_id)

    def job_status(self, job_id: str) -> str | None:
        job = self._job(job_id)
        status = job.get_status() if job is not None else None
        return status.value if status is not None else None

    def failure(self, job_id: str) -> str | None:
        """What RQ recorded as the job's failure (its exception text), if anything."""
        job = self._job(job_id)
        result = job.latest_result() if job is not None else None
        return result.exc_string if result is not None else None

    def _job(self, job_id: str) -> Job | None:
        try:
            return Job.fetch(job_id, connection=self.raw)
        except NoSuchJobError:
            return None

    def depths(self, domains: list[str]) -> dict[str, int]:
        return {self.settings.keys.queue(d, r.value): len(self.queue(d, r)) for d in domains for r in Role}
