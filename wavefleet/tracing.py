"""LangSmith tracing: one trace per story, its runs travel horse -> Redis outbox -> supervisor -> LangSmith.

A story's root run id and dotted order are made at enqueue (`new_trace`, kept on the story hash)
and travel with every stage job (`StageJob.trace`); each process adds its runs under them. A work
horse's `OutboxTracer` keeps its runs in memory (bounded) and leaves them in the trace outbox in one
Redis command at the stage's end: no thread, no HTTP, nothing to wait for in a horse. The
supervisor's `LangSmithTracer` (one daemon thread, one long-lived `langsmith.Client`, kept-alive
connection) sends its own root runs and what it pops from the outbox (`batch_ingest_runs`: POST
/runs/batch); a LangSmith outage costs that thread time, never a stage: batches that fail are
dropped and counted, and the outbox, full, drops and counts the horses' runs.
"""

from __future__ import annotations

import contextlib
import json
import logging
import queue
import threading
import time
import uuid
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from typing import Any

from redis import Redis
from redis.exceptions import RedisError

from . import logs
from .config import LangSmithSettings, Settings
from .keys import Keys
from .redact import redactor_for
from .trace_outbox import Outbox, Run

CLOSE_TIMEOUT_S = 2.0  # what the supervisor waits at its end for runs still queued


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


class Tracer:
    """A process's runs: `start` and `end` record a run's create and update, never waiting. How
    they travel is the subclass's (`OutboxTracer` in a work horse, `LangSmithTracer` in the supervisor)."""

    enabled = True

    def __init__(self, settings: Settings, redis: Redis | None = None, keys: Keys | None = None) -> None:
        self.config: LangSmithSettings = settings.langsmith
        self.redis, self.keys = redis, keys or settings.keys
        self.redactor = redactor_for(settings)
        self.dropped = 0  # runs this process dropped (a bound reached, or LangSmith failing)
        self.sent = 0

    def start(
        self, ctx: TraceContext, parent: TraceContext | None, name: str, run_type: str, **fields: Any
    ) -> None:
        """Record the create of run `ctx` (a child of `parent`, None for a story's root)."""
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
        """Record the update ending run `ctx` (outputs, error, end_time)."""
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
        """Every text redacted (known secret values and key shapes) and cut to `text_max_chars`."""
        return {k: _cut(self.redactor.clean(v), self.config.text_max_chars) for k, v in fields.items()}

    def _put(self, op: str, run: dict[str, Any]) -> None:
        raise NotImplementedError

    def close(self, timeout: float = CLOSE_TIMEOUT_S) -> None:
        """Hand on what this process recorded (bounded by `timeout`)."""


class OutboxTracer(Tracer):
    """A work horse's runs: kept in memory (at most `queue_size`; beyond, dropped and counted) and
    left in the trace outbox in one Redis command by `close` (at the stage's end)."""

    def __init__(self, settings: Settings, redis: Redis, keys: Keys | None = None) -> None:
        super().__init__(settings, redis, keys)
        self.outbox = Outbox(redis, self.keys, self.config.outbox_size)
        self._runs: list[Run] = []
        self._lost = 0  # dropped here, not counted in Redis yet

    def _put(self, op: str, run: dict[str, Any]) -> None:
        if len(self._runs) < self.config.queue_size:
            self._runs.append((op, run))
        else:
            self.dropped += 1
            self._lost += 1

    def close(self, timeout: float = CLOSE_TIMEOUT_S) -> None:
        runs, lost, self._runs, self._lost = self._runs, self._lost, [], 0
        if not runs and not lost:
            return
        try:
            dropped = self.outbox.push(runs, lost)
        except RedisError as exc:  # the fleet's Redis is away: these runs are lost, the stage is not
            logs.get().warning("trace outbox unavailable: runs dropped", runs=len(runs), error=str(exc)[:200])
            dropped = lost + len(runs)
        self.dropped += dropped - lost
        self.sent += len(runs) - (dropped - lost)  # handed to the outbox


Runs = queue.Queue[Run]


class LangSmithTracer(Tracer):
    """The supervisor's sender: its own runs (the stories' roots) through a bounded queue, and the
    horses' runs popped from the trace outbox, posted in batches by one daemon thread with one
    long-lived `langsmith.Client`. A failed batch (after the client's own bounded retries with
    backoff) is dropped and counted; LangSmith unreachable is logged once, answering again once."""

    def __init__(self, settings: Settings, redis: Redis | None = None, keys: Keys | None = None) -> None:
        super().__init__(settings, redis, keys)
        self.outbox = Outbox(redis, self.keys, self.config.outbox_size) if redis is not None else None
        self._lock = threading.Lock()
        self._queue: Runs = queue.Queue(self.config.queue_size)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._unreported = {"trace_runs_dropped": 0, "trace_runs_sent": 0}
        self._inflight = 0
        self._down = False  # the last batch failed (logged once per outage)
        self._error: Exception | None = None
        self._langsmith = self._client()

    def start_sending(self) -> None:
        """Start the sender thread (the supervisor: also when it records no run of its own)."""
        if self._thread is None:
            self._thread = threading.Thread(target=self._send_loop, name="langsmith-sender", daemon=True)
            self._thread.start()

    def _put(self, op: str, run: dict[str, Any]) -> None:
        self.start_sending()
        try:
            self._queue.put_nowait((op, run))
        except queue.Full:
            with self._lock:
                self.dropped += 1
                self._unreported["trace_runs_dropped"] += 1

    def close(self, timeout: float = CLOSE_TIMEOUT_S) -> None:
        """Send what is queued, waiting at most `timeout`; what is left then is dropped and counted
        (what is still in the outbox stays there for the next supervisor)."""
        thread = self._thread
        if thread is None:
            return
        self._stop.set()
        with contextlib.suppress(queue.Full):  # wakes the sender waiting for runs (full: it is not waiting)
            self._queue.put_nowait(_WAKE)
        thread.join(timeout)
        if thread.is_alive():
            with self._lock:
                left = self._queue.qsize() + self._inflight
                self.dropped += left
                self._unreported["trace_runs_dropped"] += left
        self._report()

    # The sender's side -----------------------------------------------------------------------
    def _send_loop(self) -> None:
        more = False  # the outbox had more than a batch: take again without waiting
        while True:
            wait_s = 0.0 if more or self._stop.is_set() else self.config.flush_interval_s
            batch = self._take(wait_s)  # the roots first: a story's root is posted before its stages
            more = self._drain_into(batch)
            for at in range(0, len(batch), self.config.batch):
                chunk = batch[at : at + self.config.batch]
                self._inflight = len(batch) - at
                self._send(chunk)
            self._inflight = 0
            self._report()
            if self._stop.is_set() and self._queue.empty() and not more:
                return

    def _take(self, wait_s: float) -> list[Run]:
        batch: list[Run] = []
        deadline = time.monotonic() + wait_s
        while len(batch) < self.config.batch:
            remaining = 0.0 if self._stop.is_set() else deadline - time.monotonic()
            try:
                item = self._queue.get(timeout=remaining) if remaining > 0 else self._queue.get_nowait()
            except queue.Empty:
                break
            if item is not _WAKE:  # _WAKE: stop is set, what is left is taken without waiting
                batch.append(item)
        return batch

    def _drain_into(self, batch: list[Run]) -> bool:
        """Add the horses' runs from the outbox; whether it may hold more."""
        room = self.config.batch - len(batch)
        if self.outbox is None or room <= 0:
            return self.outbox is not None
        try:
            taken = self.outbox.take(room)
        except RedisError as exc:  # Redis away: the supervisor says so; the runs wait in Redis
            logs.get().warning("trace outbox: redis unavailable", error=str(exc)[:200])
            return False
        batch.extend(taken)
        return len(taken) >= room

    def _client(self) -> Any:
        import langsmith  # noqa: PLC0415 - only a tracing process pays for importing it
        from urllib3.util.retry import Retry  # noqa: PLC0415

        # its per-batch warnings would repeat every second of an outage: ours says it once
        logging.getLogger("langsmith.client").setLevel(logging.ERROR)
        key = self.config.api_key
        return langsmith.Client(
            api_url=self.config.endpoint,
            api_key=key.get_secret_value() if key else None,
            auto_batch_tracing=False,  # our queue and thread, not the client's
            info={},  # no GET /info: the batch size limit is ours
            retry_config=Retry(total=0),  # its request loop retries (3 attempts); no second layer under it
            timeout_ms=int(self.config.timeout_s * 1000),
            tracing_error_callback=self._failed,
            omit_traced_runtime_info=True,
        )

    def _send(self, batch: list[Run]) -> None:
        self._error = None
        create = [run for op, run in batch if op == "post"]
        update = [run for op, run in batch if op == "patch"]
        try:  # retries 3 times itself (1 s, 2 s backoff), then calls _failed
            self._langsmith.batch_ingest_runs(create=create, update=update)
        except Exception as exc:  # a bad run (LangSmithUserError): dropped with the batch
            self._error = exc
        with self._lock:
            key = "trace_runs_dropped" if self._error else "trace_runs_sent"
            self._unreported[key] += len(batch)
            if self._error:
                self.dropped += len(batch)
            else:
                self.sent += len(batch)
        if self._error is not None and not self._down:
            logs.get().warning(
                "LangSmith unreachable: runs are dropped until it answers",
                endpoint=self.config.endpoint,
                error=str(self._error)[:300],
            )
        elif self._error is None and self._down:
            logs.get().info("LangSmith answers again", endpoint=self.config.endpoint)
        self._down = self._error is not None

    def _failed(self, error: Exception) -> None:
        self._error = error

    def _report(self) -> None:
        """Add the counts to the fleet's counters (one HINCRBY each per batch, not per run)."""
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


_WAKE: Run = ("wake", {})  # put by close: the sender stops waiting for runs


def tracer_for(settings: Settings, redis: Redis) -> Tracer:
    """A worker's tracer: its horses' runs to the outbox when `langsmith.api_key` is set, else nothing."""
    return OutboxTracer(settings, redis) if settings.langsmith.enabled else NoTracer()


def _cut(value: Any, limit: int) -> Any:
    if isinstance(value, str):
        return value if len(value) <= limit else value[:limit] + f"... [cut: {len(value) - limit} more chars]"
    if isinstance(value, dict):
        return {k: _cut(v, limit) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_cut(v, limit) for v in value]
    return value
