"""A role worker: an RQ forking worker on one domain-role queue, with a heartbeat and a domain guard."""

from __future__ import annotations

import contextlib
import os
import secrets
import signal
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from redis import Redis
from redis.client import Pipeline
from redis.exceptions import RedisError
from rq import Queue, Worker
from rq.intermediate_queue import IntermediateQueue
from rq.job import Job, JobStatus
from rq.utils import now
from rq.worker import WorkerStatus

from wavefleet import logs
from wavefleet.config import Settings
from wavefleet.connection import connect
from wavefleet.domains import Domain
from wavefleet.halt import HaltListener, HaltState, read_halt, record_ack
from wavefleet.lifecycle import Role
from wavefleet.llm.client import LLMClient
from wavefleet.messages import MisroutedMessage, StageJob, WorkerLogEntry, intake_fields
from wavefleet.processes import die_with_parent
from wavefleet.redact import shapes_for_process
from wavefleet.sandbox import UNSANDBOXED, Sandbox, sandbox_for
from wavefleet.sandbox import fleet as fleet_sandbox
from wavefleet.store import StoryStore
from wavefleet.tracing import tracer_for

# Imported here, in the worker, so every forked work horse inherits the module instead of importing
# it again for each job (12-22 ms of CPU per job, measured by benchmarks/pipeline_overhead.py).
from . import agents, cancel, commands, runtime, stage  # noqa: F401

GROUP_WAIT_S = 0.5
WORKER_LOG_LENGTH = 1000
RESTART_BACKOFF_S = (0.5, 1, 2, 5)
MAINTENANCE_INTERVAL_S = 15
STRAY_AFTER_S = 10


class WaveWorker(Worker):
    """Runs stages of one domain and role: refuses a job of another domain before it starts, and
    obeys the halt gate (no dequeue while halted; a running stage is stopped and put back)."""

    def __init__(self, rt: runtime.Runtime, queue: Queue, gate: HaltGate, **kwargs: Any) -> None:
        super().__init__([queue], name=rt.name, connection=queue.connection, **kwargs)
        self.rt = rt
        self.gate = gate
        self.wlog = logs.get()
        self.shutdown_requested = False
        self.current_job: Job | None = None
        self.halted_job_id: str | None = None
        self.cancelled_job_id: str | None = None
        self.cancelled_why = ""
        self.reaped_at = 0.0

    def request_stop(self, signum: int, frame: Any) -> None:
        # RQ raises StopRequested when idle and only sets its own flag when busy; remember either way.
        self.shutdown_requested = True
        super().request_stop(signum, frame)  # type: ignore[no-untyped-call]

    def dequeue_job_and_maintain_ttl(self, timeout: int | None, max_idle_time: int | None = None) -> Any:
        self.gate.wait_while_halted(self)
        return super().dequeue_job_and_maintain_ttl(timeout, max_idle_time)

    def execute_job(self, job: Job, queue: Queue) -> None:
        wanted = self._belongs_here(job)
        if wanted is None:
            return
        # The job's fields on every line about it: this loop's, and the work horse's (it inherits
        # them at the fork), rq's own lines included; cleared when the job ends, however it ends.
        with logs.job_context(wanted.story_id, wanted.role.value, wanted.round):
            self._execute(job, queue, wanted)

    def _execute(self, job: Job, queue: Queue, wanted: StageJob) -> None:
        with self.gate.lock:  # a halt either sees this horse, or this check sees the halt
            if self.gate.halted.is_set():
                self._put_back(job, queue)
                return
            self._record_run(job, wanted)
            execution = self.prepare_execution(job)
            self.fork_work_horse(job, queue)
            self.current_job = job
        try:
            self.monitor_work_horse(job, queue, execution)
        finally:
            with self.gate.lock:
                self.current_job = None
        self.set_state(WorkerStatus.IDLE)

    def running_job_id(self) -> str | None:
        """The job a live horse is running (read with the gate's lock held)."""
        job = self.current_job
        return str(job.id) if job is not None and self._horse_pid else None

    def stop_for_halt(self) -> None:
        """Kill the running stage's whole process group (called with the gate's lock held)."""
        job, pid = self.current_job, self._horse_pid
        if job is None or not pid:
            return
        self._stopped_job_id = self.halted_job_id = job.id
        _kill_group(pid)

    def wait_for_horse(self) -> Any:
        result = super().wait_for_horse()
        self.reaped_at = time.time()  # the horse and its process group are gone from this moment
        if result[0]:
            _kill_leftovers(result[0])
        return result

    def _handle_stopped_job(self, job: Job, queue: Queue, execution: Any) -> None:
        if job.id == self.cancelled_job_id:  # a cancel outranks a halt: the story wants it no more
            self._drop_cancelled(job, execution)
            return
        if job.id != self.halted_job_id:
            super()._handle_stopped_job(job, queue, execution)
            return
        # Stopped by a halt: not a failure. Back to the front of its queue, no retry counted.
        stopped_at = self.reaped_at
        self.halted_job_id = self._stopped_job_id = None
        with self.connection.pipeline() as pipe:
            self.cleanup_execution(job, pipeline=pipe, execution=execution)
            job.set_status(JobStatus.QUEUED, pipeline=pipe)
            _requeue_front(queue, job.id, pipe)
            pipe.hdel(self.rt.store.keys.running(), job.id)
            self.gate.job_stopped(job, stopped_at, pipe)
            with self.gate.lock:  # after the listener's own ack, so never overwritten by it
                pipe.execute()

    # Cancel (workers/cancel.py) ---------------------------------------------------------------
    def stop_for_cancel(self, why: str) -> bool:
        """Kill the running stage's whole process group for good (called with the gate's lock
        held); False if no horse runs."""
        job, pid = self.current_job, self._horse_pid
        if job is None or not pid:
            return False
        self._stopped_job_id = self.cancelled_job_id = job.id
        self.cancelled_why = why
        _kill_group(pid)
        return True

    def _drop_cancelled(self, job: Job, execution: Any) -> None:
        halted = job.id == self.halted_job_id  # killed by a halt as well: its stop is acked too
        self.cancelled_job_id = self._stopped_job_id = None
        with self.connection.pipeline() as pipe:
            cancel.drop_cancelled(self, job, execution, self.cancelled_why, pipe)
            if halted:
                self.halted_job_id = None
                self.gate.job_stopped(job, self.reaped_at, pipe)
            with self.gate.lock:
                pipe.execute()

    def _put_back(self, job: Job, queue: Queue) -> None:
        """A job dequeued while the fleet halted: to the front of its queue, untouched."""
        with self.connection.pipeline() as pipe:
            pipe.lrem(queue.intermediate_queue_key, 1, job.id)
            _requeue_front(queue, job.id, pipe)
            pipe.execute()

    def _record_run(self, job: Job, wanted: StageJob) -> None:
        key = self.rt.store.keys.worker_log(self.rt.name)
        entry = WorkerLogEntry(
            job=job.id,
            story=wanted.story_id,
            domain=wanted.domain,
            role=wanted.role,
            identity=self.rt.identity,
        )
        with self.rt.redis.pipeline(transaction=False) as pipe:
            pipe.lpush(key, entry.model_dump_json())
            pipe.ltrim(key, 0, WORKER_LOG_LENGTH - 1)
            pipe.execute()

    def _belongs_here(self, job: Job) -> StageJob | None:
        """The second line of domain isolation: routing put it here, but check before running.

        The story's domain is its id's prefix, so this needs no Redis read. Returns the job's stage."""
        domain = self.rt.domain
        try:
            found: StageJob | None = StageJob.from_kwargs(job.kwargs)
        except ValueError:
            found = None  # not a stage job at all: refused, and nothing to send back
        if (
            found is not None
            and found.story_id.split("-", 1)[0] == domain.prefix
            and found.domain == domain.name
            and found.role is self.rt.role
        ):
            return found
        self.wlog.error(
            "misrouted job refused",
            job=job.id,
            story=found.story_id if found else None,
            job_domain=found.domain if found else None,
            job_role=found.role.value if found else None,
        )
        job.delete()
        if found is not None:
            message = MisroutedMessage(
                story=found.story_id,
                role=found.role,
                round=found.round,
                attempt=found.attempt,
                worker=self.rt.identity,
            )
            self.rt.redis.xadd(self.rt.store.keys.intake(), intake_fields(message))
        return None

    def main_work_horse(self, job: Job, queue: Queue) -> None:
        # If this worker dies (even by SIGKILL) its horse must die too, or the stage would run twice.
        die_with_parent()
        super().main_work_horse(job, queue)


class HaltGate:
    """This process's side of the emergency stop, shared by the listener thread and the RQ loop."""

    def __init__(self, rt: runtime.Runtime) -> None:
        self.rt = rt
        self.keys = rt.store.keys
        self.lock = threading.Lock()
        self.halted = threading.Event()
        self.resumed = threading.Event()
        self.resumed.set()
        self.worker: WaveWorker | None = None
        self.acked_at = 0.0
        self.killed_at = 0.0
        self.log = logs.get()

    def on_halt(self, state: HaltState) -> None:
        received = time.time()
        with self.lock:
            if self.halted.is_set():
                return
            self.halted.set()
            self.resumed.clear()
            job_id = self.worker.running_job_id() if self.worker is not None else None
            if job_id is not None and self.worker is not None:
                self.worker.stop_for_halt()  # first of all: the stage runs no more code
                self.killed_at = time.time()
            # Written with the lock held, so the stop record (written under it too, once the
            # horse is reaped) always comes after this ack and is never overwritten by it.
            self.acked_at = received
            record_ack(self.rt.redis, self.keys, self.rt.name, **self._ack(job_id))
        self.log.error("EMERGENCY STOP", reason=state.reason, by=state.by, job_stopped=job_id)

    def job_stopped(self, job: Job, stopped_at: float, pipe: Pipeline) -> None:
        """Add the stop record to `pipe`, which puts the stopped stage's job back on its queue.

        The story itself is marked halted by the supervisor, after the workers have stopped: keeping
        that work off this path is what keeps a halt fast on a busy machine. With no supervisor
        running nothing is lost either: the stage is back on its queue and runs on resume."""
        record_ack(pipe, self.keys, self.rt.name, **self._ack(job.id), stopped_at=stopped_at)

    def _ack(self, job_id: str | None) -> dict[str, object]:
        ack: dict[str, object] = {"identity": self.rt.identity, "job": job_id, "at": self.acked_at}
        if job_id is not None:
            ack["killed_at"] = self.killed_at
        return ack

    def on_resume(self) -> None:
        with self.lock:
            if not self.halted.is_set():
                return
            self.halted.clear()
            self.resumed.set()
        self.log.warning("fleet resumed")

    def wait_while_halted(self, worker: WaveWorker) -> None:
        """Before every dequeue: read the durable flag, and idle (heartbeating) while it is set."""
        if not self.halted.is_set():
            state = read_halt(self.rt.redis, self.keys)
            if state is not None:
                self.on_halt(state)
        # RQ has just sent its heartbeat: wait first, so a halt costs no extra round trips here.
        while self.halted.is_set() and not worker.shutdown_requested:
            if self.resumed.wait(1.0):
                break
            worker.heartbeat()
            if read_halt(self.rt.redis, self.keys) is None:  # the resume message was missed
                self.on_resume()


def _requeue_front(queue: Queue, job_id: str, pipe: Pipeline) -> None:
    """Put `job_id` at the front of `queue` in `pipe`, once even if the transaction is sent twice
    (redis-py resends it when the reply is lost; a job listed twice would run twice)."""
    pipe.lrem(queue.key, 0, job_id)
    queue.push_job_id(job_id, pipeline=pipe, at_front=True)


def _kill_leftovers(horse_pid: int) -> None:
    """The horse is reaped; SIGKILL whatever it started that is still running (a test's server, a
    command it did not wait for) so no stage leaves orphans. While any member lives the group id
    cannot be handed to a new process, so this reaches only the horse's own leftovers."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(horse_pid, signal.SIGKILL)


def _kill_group(pid: int) -> None:
    """SIGKILL a horse and every process it started. The horse makes itself a process-group leader
    first thing after the fork; until it has, its group is still ours, so wait (briefly) for that
    rather than kill this worker's own group."""
    deadline = time.monotonic() + GROUP_WAIT_S
    try:
        while os.getpgid(pid) != pid and time.monotonic() < deadline:
            time.sleep(0.001)
        if os.getpgid(pid) == pid:
            os.killpg(pid, signal.SIGKILL)
        else:
            os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass  # the horse had already finished


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
            with contextlib.suppress(RedisError):  # Redis is away: the next beat after it returns
                self.beat()

    def stop(self) -> None:
        self.stopping.set()
        with contextlib.suppress(RedisError):
            self.redis.delete(self.key)


def run_worker(settings: Settings, domain: Domain, role: Role, index: int, *, burst: bool = False) -> None:
    """Serve one domain-role queue until stopped; reconnects by itself if Redis goes away."""
    identity = logs.identity(domain.name, role.value, index)
    redis = connect(settings)  # lazy: connects on its first command (the container sandbox's probe)
    sandbox = _checked_sandbox(settings, domain, redis)
    kind = agents.checked_kind(settings, domain, role)  # a config error refuses the start in one line
    # Unique per start: in a restarted container the pid repeats, and RQ refuses a live name.
    name = f"{identity.lower()}.{secrets.token_hex(3)}.{os.getpid()}"
    name_file(os.getpid()).write_text(name)
    store = StoryStore(redis, settings.keys, settings.pipeline.max_rounds)
    llm = LLMClient(settings, redis)
    llm.preload()  # the SDK imports, once, before any work horse is forked
    tracer = tracer_for(settings, redis)  # each work horse leaves its runs in the trace outbox
    runtime.install(
        runtime.Runtime(settings, redis, store, domain, role, identity, name, llm, sandbox, kind, tracer)
    )
    log = logs.get()
    heartbeat = Heartbeat(
        redis,
        settings.keys.worker_heartbeat(name),
        settings.worker.heartbeat_interval_s,
        settings.worker.heartbeat_ttl_s,
    )
    _first_beat(heartbeat, redis, settings, name)
    fleet_sandbox.record(redis, settings.keys, name, domain.name, sandbox)
    heartbeat.start()
    gate = HaltGate(runtime.current())
    canceller = cancel.StageCanceller(runtime.current(), gate)
    listener = HaltListener(redis, settings.keys, gate.on_halt, gate.on_resume, canceller.on_cancel)
    listener.start()
    listener.subscribed.wait(timeout=10)
    _lower_work_priority(settings.worker.work_niceness)
    shapes_for_process()  # compiled here, once: each stage's forked horse inherits it (~1.4 ms a stage)
    queue_name = settings.keys.queue(domain.name, role.value)
    log.info("worker started", queue=queue_name, agent=kind, sandbox=sandbox.label, pid=os.getpid())
    try:
        for delay in _restarts():
            worker = _rq_worker(settings, queue_name, gate)
            with gate.lock:
                gate.worker = worker
            worker.work(burst=burst, logging_level=settings.log_level.upper())
            if burst or worker.shutdown_requested:
                break
            log.warning("worker loop ended unexpectedly; restarting", retry_in_s=delay)
            time.sleep(delay)
    finally:
        listener.stop()
        heartbeat.stop()
        with contextlib.suppress(RedisError):
            fleet_sandbox.forget(redis, settings.keys, name)
            # stopped, not dead: leaves the registered set, so `wave monitor` does not report it
            redis.srem(settings.keys.workers(), name)
        name_file(os.getpid()).unlink(missing_ok=True)
        log.info("worker stopped")


def _checked_sandbox(settings: Settings, domain: Domain, redis: Redis) -> Sandbox:
    """The sandbox this worker's stages run commands in, probed once: where bwrap cannot run, or no
    `wave sandbox` runner answers, the worker refuses (ConfigError) unless the operator chose
    `none`, which every log line then says."""
    sandbox = sandbox_for(settings, network=domain.sandbox.network, redis=redis)
    if sandbox.mode == "container" and os.getuid() == 0:
        # A root worker's stage containers run as fallback_uid:0, never root: the worktrees and files
        # this worker makes must be writable by group 0 for the commands to write in them.
        os.umask(0o002)
    fleet_sandbox.probe(sandbox)
    if sandbox.mode == "none":
        logs.mark_process(sandbox=UNSANDBOXED)
        logs.get().warning("running work UNSANDBOXED: WAVE_SANDBOX=none")
    return sandbox


def _lower_work_priority(niceness: int) -> None:
    """Lower this thread (the RQ loop) and so every work horse it forks, but not the halt listener
    and heartbeat threads already running: when 50 stages are stopped at once on 2 cores, the
    listeners still killing their stage must not wait behind others' bookkeeping and dying horses,
    and a busy stage must never starve the heartbeat into a false "worker died"."""
    if niceness:
        with contextlib.suppress(OSError):  # Linux sets niceness per thread; elsewhere skip it
            os.setpriority(
                os.PRIO_PROCESS, threading.get_native_id(), os.getpriority(os.PRIO_PROCESS, 0) + niceness
            )


def name_file(pid: int) -> Path:
    """Where a worker process publishes its name (read by the container healthcheck)."""
    return Path(tempfile.gettempdir()) / f"wave-worker-{pid}.name"


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


class StrayCheck(IntermediateQueue):
    """RQ's intermediate queue: a job dequeued but never started is failed after 10 s there, not a
    minute. A worker takes a job to its started registry within milliseconds; a job left behind was
    dequeued by a request whose reply was lost (redis-py resent the BLMOVE and took the next job)
    or by a worker stopped at that instant. The supervisor runs a failed stage again."""

    def should_be_cleaned_up(self, job_id: str) -> bool:
        first_seen = self.get_first_seen(job_id)
        return first_seen is not None and (now() - first_seen).total_seconds() > STRAY_AFTER_S


class WaveQueue(Queue):
    """RQ's queue, with a maintenance lock that a dead holder cannot keep for long and a quicker
    check of its intermediate queue."""

    @property
    def intermediate_queue(self) -> IntermediateQueue:
        return StrayCheck(self.key, connection=self.connection)

    def acquire_maintenance_lock(self) -> bool:
        # RQ takes it for 15 minutes and frees it when the clean-up ends. A holder cut off mid-way
        # (Redis killed then) never frees it, and for those 15 minutes no worker fails the jobs a
        # dead worker abandoned or left in the intermediate queue. Hold it one maintenance interval.
        return bool(self.connection.set(self.registry_cleaning_key, 1, nx=True, ex=MAINTENANCE_INTERVAL_S))


def _rq_worker(settings: Settings, queue_name: str, gate: HaltGate) -> WaveWorker:
    queue = WaveQueue(queue_name, connection=connect(settings, decode=False))
    # Maintenance every 15 s (RQ's default is 10 min): it is what fails a job left in RQ's
    # intermediate queue (StrayCheck), which the supervisor then runs again.
    return WaveWorker(
        runtime.current(),
        queue,
        gate,
        queue_class=WaveQueue,
        worker_ttl=30,
        job_monitoring_interval=5,
        maintenance_interval=MAINTENANCE_INTERVAL_S,
    )


def _restarts(limit: int | None = None) -> Any:
    """Back-off delays for restarts: bounded when `limit` is given, else for as long as the worker runs."""
    count = 0
    while limit is None or count < limit:
        yield RESTART_BACKOFF_S[min(count, len(RESTART_BACKOFF_S) - 1)]
        count += 1
