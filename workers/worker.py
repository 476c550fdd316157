"""A role worker: an RQ forking worker on one domain-role queue, with a heartbeat and a domain guard."""

from __future__ import annotations

import ctypes
import json
import os
import signal
import threading
import time
from typing import Any

from redis import Redis
from redis.exceptions import RedisError
from rq import Queue, Worker
from rq.job import Job

from wavefleet import logs
from wavefleet.config import Settings
from wavefleet.connection import connect
from wavefleet.domains import Domain
from wavefleet.lifecycle import Role
from wavefleet.store import StoryStore

from . import runtime

PR_SET_PDEATHSIG = 1
WORKER_LOG_LENGTH = 1000
RESTART_BACKOFF_S = (0.5, 1, 2, 5)


class WaveWorker(Worker):  # type: ignore[misc]  # rq ships no type information for subclassing
    """Runs stages of one domain and role; refuses a job of any other domain before it starts."""

    def __init__(self, rt: runtime.Runtime, queue: Queue, **kwargs: Any) -> None:
        super().__init__([queue], name=rt.name, connection=queue.connection, **kwargs)
        self.rt = rt
        self.wlog = logs.get()
        self.shutdown_requested = False

    def request_stop(self, signum: int, frame: Any) -> None:
        # RQ raises StopRequested when idle and only sets its own flag when busy; remember either way.
        self.shutdown_requested = True
        super().request_stop(signum, frame)

    def execute_job(self, job: Job, queue: Queue) -> None:
        if not self._belongs_here(job):
            return
        self.rt.redis.lpush(self.rt.store.keys.worker_log(self.rt.name), json.dumps(
            {"job": job.id, "story": job.kwargs.get("story_id"), "domain": job.kwargs.get("domain"),
             "role": job.kwargs.get("role"), "identity": self.rt.identity}))
        self.rt.redis.ltrim(self.rt.store.keys.worker_log(self.rt.name), 0, WORKER_LOG_LENGTH - 1)
        super().execute_job(job, queue)

    def _belongs_here(self, job: Job) -> bool:
        """The second line of domain isolation: routing put it here, but check before running."""
        story_id = job.kwargs.get("story_id", "")
        record = self.rt.store.find(story_id)
        claimed = {job.kwargs.get("domain"), record.domain if record else None}
        if claimed == {self.rt.domain.name} and job.kwargs.get("role") == self.rt.role.value:
            return True
        self.wlog.error("misrouted job refused", story=story_id, job=job.id,
                        job_domain=job.kwargs.get("domain"), story_domain=record.domain if record else None)
        job.delete()
        self.rt.redis.xadd(self.rt.store.keys.intake(), {
            "kind": "misrouted", "story": story_id, "role": str(job.kwargs.get("role")),
            "round": str(job.kwargs.get("round_")), "attempt": str(job.kwargs.get("attempt")),
            "worker": self.rt.identity})
        return False

    def main_work_horse(self, job: Job, queue: Queue) -> None:
        # If this worker dies (even by SIGKILL) its horse must die too, or the stage would run twice.
        _die_with_parent()
        super().main_work_horse(job, queue)


def _die_with_parent() -> None:
    try:
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    except OSError:  # not Linux: the horse may outlive a killed worker
        pass


class Heartbeat(threading.Thread):
    """Keeps `wave:worker:{name}:hb` alive while this process lives; the supervisor reads it."""

    def __init__(self, redis: Redis, key: str, interval_s: float, ttl_s: float) -> None:
        super().__init__(name="heartbeat", daemon=True)
        self.redis, self.key, self.interval_s, self.ttl_ms = redis, key, interval_s, int(ttl_s * 1000)
        self.stopping = threading.Event()

    def beat(self) -> None:
        self.redis.set(self.key, str(os.getpid()), px=self.ttl_ms)

    def run(self) -> None:
        while not self.stopping.wait(self.interval_s):
            try:
                self.beat()
            except RedisError:
                pass  # Redis is away; the next beat after it returns restores the key

    def stop(self) -> None:
        self.stopping.set()
        try:
            self.redis.delete(self.key)
        except RedisError:
            pass


def run_worker(settings: Settings, domain: Domain, role: Role, index: int, *, burst: bool = False) -> None:
    """Serve one domain-role queue until stopped; reconnects by itself if Redis goes away."""
    identity = logs.identity(domain.name, role.value, index)
    name = f"{identity.lower()}.{os.getpid()}"
    redis = connect(settings)
    store = StoryStore(redis, settings.keys, settings.pipeline.max_rounds)
    runtime.install(runtime.Runtime(settings, redis, store, domain, role, identity, name))
    log = logs.get()
    heartbeat = Heartbeat(redis, settings.keys.worker_heartbeat(name), settings.worker.heartbeat_interval_s,
                          settings.worker.heartbeat_ttl_s)
    _first_beat(heartbeat, redis, settings, name)
    heartbeat.start()
    queue_name = settings.keys.queue(domain.name, role.value)
    log.info("worker started", queue=queue_name, agent=settings.agent, pid=os.getpid())
    try:
        for delay in _restarts():
            worker = _rq_worker(settings, queue_name)
            worker.work(burst=burst, logging_level="WARNING")
            if burst or worker.shutdown_requested:
                break
            log.warning("worker loop ended unexpectedly; restarting", retry_in_s=delay)
            time.sleep(delay)
    finally:
        heartbeat.stop()
        log.info("worker stopped")


def _first_beat(heartbeat: Heartbeat, redis: Redis, settings: Settings, name: str) -> None:
    for delay in _restarts(limit=30):
        try:
            heartbeat.beat()
            redis.sadd(settings.keys.workers(), name)
            return
        except RedisError as exc:
            logs.get().warning("waiting for Redis", error=str(exc), retry_in_s=delay)
            time.sleep(delay)
    raise SystemExit("Redis did not answer; worker not started")


def _rq_worker(settings: Settings, queue_name: str) -> WaveWorker:
    rt = runtime.current()
    queue = Queue(queue_name, connection=connect(settings, decode=False))
    return WaveWorker(rt, queue, worker_ttl=30, job_monitoring_interval=5, maintenance_interval=60)


def _restarts(limit: int | None = None) -> Any:
    """Back-off delays for restarts: bounded when `limit` is given, else for as long as the worker runs."""
    count = 0
    while limit is None or count < limit:
        yield RESTART_BACKOFF_S[min(count, len(RESTART_BACKOFF_S) - 1)]
        count += 1
