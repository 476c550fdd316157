"""`wave sandbox`: the one fleet process with Docker access, running the workers' commands in stage
containers on their request over Redis (protocol.py), and killing those containers on a halt or cancel.

Threads: the request loop (bounded BLPOPs, only while a pool slot is free, so waiting requests stay
in Redis), a pool of `concurrency` request handlers, the halt/cancel listener (wavefleet/halt.py),
a heartbeat, and the sweep, which removes every container whose stage no longer runs.
"""

from __future__ import annotations

import contextlib
import json
import math
import secrets
import socket
import threading
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

from docker.errors import DockerException
from pydantic import ValidationError
from redis import Redis
from redis.exceptions import RedisError

from wavefleet import logs
from wavefleet.config import Settings
from wavefleet.errors import ConfigError
from wavefleet.halt import HaltListener, HaltState
from wavefleet.messages import RunningStage
from wavefleet.metric_counts import count, exec_counts

from .docker_ops import JOB_LABEL, WORKER_LABEL, DockerOps
from .protocol import (
    _REQUEST_ID,
    REQUEST,
    ExecReply,
    ExecRequest,
    PingReply,
    PingRequest,
    ReleaseReply,
    ReleaseRequest,
)
from .stages import StageContainers

POP_TIMEOUT_S = 1  # one BLPOP's wait: how soon the loop notices a stop
REPLY_TTL_MARGIN_S = 60  # a reply outlives the worker's wait for it by this much, then expires
SHUTDOWN_WAIT_S = 30.0
RECENT_REQUESTS = 10_000  # request ids remembered: far more than arrive while one request is resent
_REPLY_KINDS = {"exec": ExecReply, "release": ReleaseReply, "ping": PingReply}


def fleet_id(redis: Redis, settings: Settings) -> str:
    """This fleet's id, made by whichever process asks first (SET NX) and the same for all after."""
    key = settings.keys.fleet_id()
    redis.set(key, secrets.token_hex(8), nx=True)
    return str(redis.get(key))


class RecentIds:
    """The ids of the last `size` requests taken. redis-py may resend an LPUSH after a dropped
    connection whose first send did arrive: the same request twice, whose command must run once."""

    def __init__(self, size: int) -> None:
        self._order: deque[str] = deque()
        self._ids: set[str] = set()
        self._size = size
        self._lock = threading.Lock()

    def first(self, request_id: str) -> bool:
        """Whether `request_id` is new (and remembered from now on)."""
        with self._lock:
            if request_id in self._ids:
                return False
            self._ids.add(request_id)
            self._order.append(request_id)
            if len(self._order) > self._size:
                self._ids.discard(self._order.popleft())
            return True


class SandboxRunner:
    """Serves sandbox requests until `stopping` is set; `start()` refuses (ConfigError) without an
    engine or the image."""

    def __init__(self, settings: Settings, redis: Redis) -> None:
        self.settings, self.redis, self.keys = settings, redis, settings.keys
        self.config = settings.sandbox_container
        self.name = f"sandbox@{socket.gethostname()}"
        self.fleet = fleet_id(redis, settings)
        self.ops = DockerOps(self.config, self.fleet, settings.data_dir)
        self.stages = StageContainers(self.ops)
        self.engine = ""
        self.stopping = threading.Event()
        self.listener = HaltListener(
            redis, self.keys, on_halt=self._on_halt, on_resume=self._on_resume, on_cancel=self._on_cancel
        )
        self.pool = ThreadPoolExecutor(self.config.concurrency, thread_name_prefix="sandbox-request")
        self.slots = threading.BoundedSemaphore(self.config.concurrency)
        self._sweep_now = threading.Event()
        self.recent = RecentIds(RECENT_REQUESTS)
        self.log = logs.get(fleet=self.fleet)

    # Life ---------------------------------------------------------------------------------------
    def start(self) -> None:
        self.engine = self.ops.check_ready()
        self.sweep()  # what a crashed runner or dead workers left
        self.listener.start()
        self.listener.subscribed.wait(timeout=30)  # a halt already set is obeyed before any request
        for target, name in ((self._heartbeat, "sandbox-heartbeat"), (self._sweeper, "sandbox-sweep")):
            threading.Thread(target=target, name=name, daemon=True).start()
        self.log.info("sandbox runner ready", image=self.config.image, engine=self.engine)

    def run(self) -> None:
        """The request loop; returns when `stopping` is set, after `shutdown()`."""
        try:
            while not self.stopping.is_set():
                if not self.slots.acquire(timeout=POP_TIMEOUT_S):
                    continue
                raw = self._pop()
                if raw is None:
                    self.slots.release()
                    continue
                self.pool.submit(self._serve, raw).add_done_callback(self._free_slot)
        finally:
            self.shutdown()

    def _pop(self) -> str | None:
        try:
            popped = self.redis.blpop([self.keys.sandbox_requests()], timeout=POP_TIMEOUT_S)
        except RedisError as exc:
            self.log.warning("sandbox requests unreadable; retrying", error=str(exc))
            self.stopping.wait(POP_TIMEOUT_S)
            return None
        return None if popped is None else str(popped[1])

    def _free_slot(self, _done: Future[None]) -> None:
        self.slots.release()

    def shutdown(self) -> None:
        """SIGTERM: no new request is taken; this runner's containers are removed (their commands
        end, and their workers are told), the heartbeat goes."""
        self.stopping.set()
        self.stages.closing.set()  # before the kill: the commands it ends are answered "stopping"
        self.listener.stop()
        ended = self.ops.end(self.stages.registered())
        self.pool.shutdown(wait=True, cancel_futures=True)
        with contextlib.suppress(RedisError):
            self.redis.delete(self.keys.sandbox_runner())
        self.log.info("sandbox runner stopped", containers_removed=ended)

    # Requests -----------------------------------------------------------------------------------
    def _serve(self, raw: str) -> None:
        try:
            request = REQUEST.validate_json(raw)
        except ValidationError as exc:
            self._refuse_malformed(raw, exc)
            return
        if not self.recent.first(request.request_id):
            self.log.warning(
                "sandbox request dropped: a repeat", kind=request.kind, request_id=request.request_id
            )
            return
        try:
            reply = self._answer(request)
        except Exception as exc:  # one bad request must never end the runner
            self.log.exception("sandbox request failed", kind=request.kind)
            reply = _REPLY_KINDS[request.kind](error=f"the runner failed: {type(exc).__name__}")
        counts = exec_counts(reply) if isinstance(reply, ExecReply) else {}
        self._reply(request.request_id, reply.model_dump_json(), request, counts)

    def _answer(self, request: ExecRequest | ReleaseRequest | PingRequest) -> Any:
        if isinstance(request, ExecRequest):
            return self.stages.exec(request)
        if isinstance(request, ReleaseRequest):
            return self.stages.release(request)
        try:
            self.ops.check_ready()
        except ConfigError as exc:  # the ping's answer is the reason
            return PingReply(image=self.config.image, engine=self.engine, error=str(exc))
        return PingReply(image=self.config.image, engine=self.engine)

    def _refuse_malformed(self, raw: str, exc: ValidationError) -> None:
        """A request that is not one: answered with an error when it names a usable id and kind (its
        worker then fails the command instead of waiting), else dropped with a log line."""
        try:
            data = json.loads(raw)
        except ValueError:
            data = None
        request_id = data.get("request_id") if isinstance(data, dict) else None
        kind = data.get("kind") if isinstance(data, dict) else None
        problem = f"malformed request: {exc.errors()[0]['msg'] if exc.errors() else 'invalid'}"
        if isinstance(request_id, str) and _REQUEST_ID.fullmatch(request_id) and kind in _REPLY_KINDS:
            self._reply(request_id, _REPLY_KINDS[str(kind)](error=problem).model_dump_json(), None)
            self.log.warning("sandbox request refused", problem=problem, request_id=request_id)
        else:
            self.log.warning("sandbox request dropped: no usable id", problem=problem, size=len(raw))

    def _reply(self, request_id: str, reply: str, request: Any, counts: dict[str, int] | None = None) -> None:
        """Answer (the reply and its TTL together), then count what was run for /metrics."""
        wait = request.timeout_s if isinstance(request, ExecRequest) else 0.0
        ttl = math.ceil(wait + self.config.reply_grace_s) + REPLY_TTL_MARGIN_S
        key = self.keys.sandbox_reply(request_id)
        try:
            with self.redis.pipeline() as pipe:
                pipe.lpush(key, reply)
                pipe.expire(key, ttl)
                pipe.execute()
        except RedisError as exc:  # the worker takes the runner to be down and retries the stage later
            self.log.warning("sandbox reply lost", error=str(exc), request_id=request_id)
        self._count(counts or {})

    def _count(self, counts: dict[str, int]) -> None:
        """Count for /metrics after the reply, never with it: a Redis user of an older ACL, refused
        the HINCRBY, must not lose the worker its reply."""
        if not counts:
            return
        try:
            with self.redis.pipeline(transaction=False) as pipe:
                for field, n in counts.items():
                    count(pipe, self.keys, field, n)
                pipe.execute()
        except RedisError as exc:
            self.log.warning("sandbox metrics not counted", error=str(exc).splitlines()[0])

    # Halt, cancel, sweep, heartbeat -------------------------------------------------------------
    def _on_halt(self, state: HaltState) -> None:
        ended = self.stages.end_all()
        self.log.warning("fleet halted: sandbox containers killed", killed=ended, reason=state.reason)

    def _on_resume(self) -> None:
        if self.stages.halted.is_set():
            self.log.info("fleet resumed: sandbox commands accepted again")
        self.stages.halted.clear()

    def _on_cancel(self, story: str | None) -> None:
        if story is None:  # (re)subscribed: a cancel may have been missed, and its stage stopped since
            self._sweep_now.set()
            return
        ended = self.stages.end_story(story)
        self.log.info("story cancelled: sandbox containers killed", story=story, killed=ended)

    def _sweeper(self) -> None:
        while not self.stopping.is_set():
            self._sweep_now.wait(self.config.sweep_interval_s)
            self._sweep_now.clear()
            if not self.stopping.is_set():
                self.sweep()

    def sweep(self) -> int:
        """Remove the containers whose stage is not in the running hash under their worker, or whose
        worker's heartbeat is gone. A failing sweep is logged and tried again next time."""
        try:
            running = {
                job: RunningStage.model_validate_json(raw).worker
                for job, raw in self.redis.hgetall(self.keys.running()).items()
            }
            alive_workers = {
                w for w in set(running.values()) if self.redis.exists(self.keys.worker_heartbeat(w))
            }

            def alive(labels: dict[str, str]) -> bool:
                worker = running.get(labels.get(JOB_LABEL, ""))
                return worker is not None and worker == labels.get(WORKER_LABEL) and worker in alive_workers

            return self.stages.sweep(alive)
        except (RedisError, DockerException, OSError, ValidationError) as exc:
            self.log.warning("sandbox sweep failed; tried again later", error=str(exc)[:300])
            return 0

    def _heartbeat(self) -> None:
        interval = self.settings.worker.heartbeat_interval_s
        ttl_ms = int(self.settings.worker.heartbeat_ttl_s * 1000)
        beat = json.dumps({"name": self.name, "image": self.config.image, "engine": self.engine})
        while not self.stopping.is_set():
            try:
                self.redis.set(self.keys.sandbox_runner(), beat, px=ttl_ms)
            except RedisError as exc:
                self.log.warning("sandbox heartbeat failed", error=str(exc))
            self.stopping.wait(interval)
