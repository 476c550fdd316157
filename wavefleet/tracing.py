"""LangSmith tracing: one trace per story, runs posted from a background thread that never blocks a stage.

A story's root run id and dotted order are made at enqueue (`new_trace`, kept on the story hash)
and travel with every stage job (`StageJob.trace`); each process adds its runs under them. `put`
only appends to a bounded queue: full, the run is dropped and counted. One daemon thread per
process sends batches with the real `langsmith.Client` (`batch_ingest_runs`: POST /runs/batch); a
LangSmith outage costs that thread time, never the caller's. The thread starts on the first run in
a process, so an RQ work horse (forked) gets its own.
"""

from __future__ import annotations

import contextlib
import json
import logging
import mmap
import os
import queue
import struct
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from typing import Any

from redis import Redis
from redis.exceptions import RedisError

from . import logs
from .config import LangSmithSettings, Settings
from .keys import Keys
from .redact import redactor_for

CLOSE_TIMEOUT_S = 2.0  # what a process waits at its end for runs still queued (a work horse, the supervisor)
# After a failed batch, for this long a process ending does not wait for its queued runs: during an
# outage one stage per worker per minute waits up to CLOSE_TIMEOUT_S at its end (the probe), not each.
OUTAGE_HOLD_S = 60.0


@dataclass(frozen=True)
class TraceContext:
    """Where a run sits in its story's trace: the story hash's `trace` field, a job's `trace`."""

    run_id: str
    trace_id: str
    dotted_order: str
    start_time: str = ""

    def to_json(self) -> str:
        return json.dumps(asdict(self), separators=(",", ":"))

    @classmethod
    def parse(cls, raw: str | None) -> TraceContext | None:
        """The context `raw` holds; None for "" (a story from before tracing) or anything malformed."""
        if not raw:
            return None
        try:
            data = json.loads(raw)
            return cls(
                str(data["run_id"]),
                str(data["trace_id"]),
                str(data["dotted_order"]),
                str(data.get("start_time", "")),
            )
        except (ValueError, KeyError, TypeError):
            return None

    def child(self, at: datetime | None = None) -> TraceContext:
        """A new run under this one: its dotted order is ours, a dot, its start and its id."""
        at = at or now()
        run_id = str(uuid.uuid4())
        return TraceContext(run_id, self.trace_id, f"{self.dotted_order}.{stamp(at)}{run_id}", at.isoformat())


def now() -> datetime:
    return datetime.now(UTC)


def stamp(at: datetime) -> str:
    """LangSmith's dotted-order time: ``20261202T065852123456Z``."""
    return at.strftime("%Y%m%dT%H%M%S%fZ")


def new_trace(at: datetime | None = None) -> TraceContext:
    """A story's root run: its own trace."""
    at = at or now()
    run_id = str(uuid.uuid4())
    return TraceContext(run_id, run_id, f"{stamp(at)}{run_id}", at.isoformat())


Runs = queue.Queue[tuple[str, dict[str, Any]]]  # ("post" | "patch", the run)


class Tracer:
    """Runs to LangSmith: `start` and `end` queue a run's create and update, never waiting."""

    enabled = True

    def __init__(self, settings: Settings, redis: Redis | None = None, keys: Keys | None = None) -> None:
        self.config: LangSmithSettings = settings.langsmith
        self.redis, self.keys = redis, keys or settings.keys
        self.redactor = redactor_for(settings)
        self.dropped = 0  # runs this process dropped (queue full, or LangSmith failing)
        self.sent = 0
        self._pid = -1
        self._lock = threading.Lock()
        self._queue: Runs = queue.Queue(self.config.queue_size)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._unreported = {"trace_runs_dropped": 0, "trace_runs_sent": 0}
        # When the last batch failed (0.0: it did not), shared with the forked work horses (an
        # anonymous mmap is MAP_SHARED): a horse knows of the outage its predecessors met.
        self._outage = mmap.mmap(-1, _OUTAGE.size)
        self._inflight = 0
        # Built here, once, before a worker forks its horses (it takes half a second; a horse that
        # built its own would wait that long at its end). It opens no connection and no thread yet.
        self._langsmith = self._client()

        self._error: Exception | None = None

    # The callers' side -----------------------------------------------------------------------
    def start(
        self, ctx: TraceContext, parent: TraceContext | None, name: str, run_type: str, **fields: Any
    ) -> None:
        """Queue the create of run `ctx` (a child of `parent`, None for a story's root)."""
        run = {
            "id": ctx.run_id,
            "trace_id": ctx.trace_id,
            "dotted_order": ctx.dotted_order,
            "name": name,
            "run_type": run_type,
            "start_time": ctx.start_time or now().isoformat(),
            "session_name": self.config.project,
            **self._clean(fields),
        }
        if parent is not None:
            run["parent_run_id"] = parent.run_id
        self._put("post", run)

    def end(self, ctx: TraceContext, parent: TraceContext | None, **fields: Any) -> None:
        """Queue the update ending run `ctx` (outputs, error, end_time)."""
        run = {
            "id": ctx.run_id,
            "trace_id": ctx.trace_id,
            "dotted_order": ctx.dotted_order,
            "end_time": now().isoformat(),
            "session_name": self.config.project,
            **self._clean(fields),
        }
        if parent is not None:
            run["parent_run_id"] = parent.run_id
        self._put("patch", run)

    def _clean(self, fields: dict[str, Any]) -> dict[str, Any]:
        """Every text redacted (known secret values) and cut to `text_max_chars`."""
        return {k: _cut(self.redactor.clean(v), self.config.text_max_chars) for k, v in fields.items()}

    def _put(self, op: str, run: dict[str, Any]) -> None:
        self._ensure_thread()
        try:
            self._queue.put_nowait((op, run))
        except queue.Full:
            with self._lock:
                self.dropped += 1
                self._unreported["trace_runs_dropped"] += 1

    def _ensure_thread(self) -> None:
        if self._pid == os.getpid():
            return
        # The first run in this process, in a forked work horse (the parent's thread is not here,
        # its queue may be in any state), or after a close: a fresh queue and a thread of its own.
        self._lock = threading.Lock()
        self._queue = queue.Queue(self.config.queue_size)
        self._stop = threading.Event()
        self._thread = threading.Thread(
            target=self._send_loop, args=(self._queue, self._stop), name="langsmith-sender", daemon=True
        )
        self._thread.start()
        self._pid = os.getpid()

    def close(self, timeout: float = CLOSE_TIMEOUT_S) -> None:
        """Send what is queued, waiting at most `timeout` (not at all during a known outage); what
        is left then is dropped and counted."""
        thread = self._thread
        if thread is None or self._pid != os.getpid():
            return
        self._stop.set()
        with contextlib.suppress(queue.Full):  # wakes the sender waiting for runs (full: it is not waiting)
            self._queue.put_nowait(_WAKE)
        deadline = time.monotonic() + timeout
        # until sent, or LangSmith is known down (a refused connection is seen in milliseconds)
        while thread.is_alive() and not self.outage() and time.monotonic() < deadline:
            thread.join(0.02)
        if thread.is_alive():
            if not self.outage():  # LangSmith did not take a batch in `timeout`: the next horses do not wait
                self._mark_outage(f"no batch taken in {timeout:g} s")
            with self._lock:
                left = self._queue.qsize() + self._inflight
                self.dropped += left
                self._unreported["trace_runs_dropped"] += left
            self._report()
        self._pid = -1  # a run after this (a process that goes on) starts a new queue and thread

    def _mark_outage(self, problem: str) -> None:
        (since,) = _OUTAGE.unpack_from(self._outage)
        _OUTAGE.pack_into(self._outage, 0, time.time())
        if not since:  # once per outage, whichever horse of the worker met it first
            logs.get().warning(
                "LangSmith unreachable: runs are dropped until it answers",
                endpoint=self.config.endpoint,
                error=problem[:300],
            )

    def outage(self) -> bool:
        """Whether a batch failed (here, or in another horse of this worker) less than OUTAGE_HOLD_S ago."""
        (since,) = _OUTAGE.unpack_from(self._outage)
        return bool(since) and time.time() - since < OUTAGE_HOLD_S

    # The sender's side -----------------------------------------------------------------------
    def _send_loop(self, runs: Runs, stop: threading.Event) -> None:
        client = self._langsmith
        while True:
            batch = self._take(runs, stop, self.config.flush_interval_s)
            if batch:
                self._inflight = len(batch)
                self._send(client, batch)
                self._inflight = 0
            self._report()
            if stop.is_set() and runs.empty():
                return

    def _take(self, runs: Runs, stop: threading.Event, wait_s: float) -> list[tuple[str, dict[str, Any]]]:
        batch: list[tuple[str, dict[str, Any]]] = []
        deadline = time.monotonic() + wait_s
        while len(batch) < self.config.batch:
            remaining = 0.0 if stop.is_set() else deadline - time.monotonic()
            try:
                item = runs.get(timeout=remaining) if remaining > 0 else runs.get_nowait()
                if item is _WAKE:
                    continue  # stop is set: what is left is taken without waiting
                batch.append(item)
            except queue.Empty:
                break
        return batch

    def _client(self) -> Any:
        import langsmith  # noqa: PLC0415 - only a tracing process pays for importing it
        from urllib3.util.retry import Retry  # noqa: PLC0415

        # its per-batch warnings would repeat every second of an outage: ours says it once
        logging.getLogger("langsmith.client").setLevel(logging.ERROR)
        key = self.config.api_key
        return langsmith.Client(
            api_url=self.config.endpoint,
            session=_watched_session(self._mark_outage),
            api_key=key.get_secret_value() if key else None,
            auto_batch_tracing=False,  # our queue and thread, not the client's
            info={},  # no GET /info: the batch size limit is ours
            retry_config=Retry(total=0),  # its request loop retries (3 attempts); no second layer under it
            timeout_ms=int(self.config.timeout_s * 1000),
            tracing_error_callback=self._failed,
            omit_traced_runtime_info=True,
        )

    def _send(self, client: Any, batch: list[tuple[str, dict[str, Any]]]) -> None:
        self._error = None
        create = [run for op, run in batch if op == "post"]
        update = [run for op, run in batch if op == "patch"]
        try:
            client.batch_ingest_runs(
                create=create, update=update
            )  # retries 3 times itself, then calls _failed
        except Exception as exc:  # a bad run (LangSmithUserError): dropped with the batch
            self._error = exc
        with self._lock:
            key = "trace_runs_dropped" if self._error else "trace_runs_sent"
            self._unreported[key] += len(batch)
            if self._error:
                self.dropped += len(batch)
            else:
                self.sent += len(batch)
        if self._error is not None:
            self._mark_outage(str(self._error))
        elif _OUTAGE.unpack_from(self._outage)[0]:
            _OUTAGE.pack_into(self._outage, 0, 0.0)
            logs.get().info("LangSmith answers again", endpoint=self.config.endpoint)

    def _failed(self, error: Exception) -> None:
        self._error = error

    def _report(self) -> None:
        """Add this process's counts to the fleet's counters (one HINCRBY each per batch, not per run)."""
        if self.redis is None:
            return
        with self._lock:
            counts, self._unreported = self._unreported, dict.fromkeys(self._unreported, 0)
        try:
            with self.redis.pipeline(transaction=False) as pipe:
                for field, n in counts.items():
                    if n:
                        pipe.hincrby(self.keys.metric_counters(), field, n)
                pipe.execute()
        except RedisError:
            with self._lock:  # try again with the next batch
                for field, n in counts.items():
                    self._unreported[field] += n


class NoTracer(Tracer):
    """Tracing off: every call does nothing, no thread, no client."""

    enabled = False

    def __init__(self) -> None:
        self.dropped = self.sent = 0

    def start(
        self, ctx: TraceContext, parent: TraceContext | None, name: str, run_type: str, **fields: Any
    ) -> None:
        return None

    def end(self, ctx: TraceContext, parent: TraceContext | None, **fields: Any) -> None:
        return None

    def close(self, timeout: float = CLOSE_TIMEOUT_S) -> None:
        return None


_OUTAGE = struct.Struct("d")
_WAKE: tuple[str, dict[str, Any]] = ("wake", {})  # put by close: the sender stops waiting for runs


def _watched_session(failed: Callable[[str], None]) -> Any:
    """The client's HTTP session, telling of a failure at its first attempt (the client retries
    with sleeps of seconds before it reports one): a work horse ending then does not wait."""
    import requests  # noqa: PLC0415 - the client's own dependency, only in a tracing process

    class WatchedSession(requests.Session):
        def request(self, *args: Any, **kwargs: Any) -> requests.Response:
            try:
                response = super().request(*args, **kwargs)
            except (requests.ConnectionError, requests.Timeout) as exc:
                failed(f"{type(exc).__name__}: {exc}")
                raise
            if response.status_code >= 500:
                failed(f"HTTP {response.status_code}")
            return response

    return WatchedSession()


def tracer_for(settings: Settings, redis: Redis | None = None) -> Tracer:
    """The process's tracer: a real one when `langsmith.api_key` is set, else one that does nothing."""
    return Tracer(settings, redis) if settings.langsmith.enabled else NoTracer()


def _cut(value: Any, limit: int) -> Any:
    if isinstance(value, str):
        return value if len(value) <= limit else value[:limit] + f"... [cut: {len(value) - limit} more chars]"
    if isinstance(value, dict):
        return {k: _cut(v, limit) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_cut(v, limit) for v in value]
    return value
