"""The story root runs of LangSmith: a consumer of the events stream (group "tracer") in the supervisor.

On a story's ``enqueued`` entry it creates the root run whose context the enqueue wrote on the story
hash (the stages' runs are its children, made by the workers); on a terminal state it ends it with
the story's state, reason and cost. A producer never waits on it: it reads the capped stream. Its
tracer's thread also sends the workers' runs, which it pops from the trace outbox.
"""

from __future__ import annotations

import contextlib
import threading

from redis import Redis
from redis.exceptions import RedisError

from . import logs
from .config import Settings
from .fleet_events import GATHER_S, EventConsumer, FleetEvent, StoryEvent
from .lifecycle import TERMINAL
from .store import StoryStore
from .tracing import CLOSE_TIMEOUT_S, LangSmithTracer, TraceContext

GROUP = "tracer"
TERMINAL_STATES = frozenset(s.value for s in TERMINAL)


class StoryTraces:
    """Reads the events stream and posts and ends each story's root run on `tracer`."""

    def __init__(
        self, settings: Settings, redis: Redis, tracer: LangSmithTracer, consumer: str = "supervisor"
    ) -> None:
        self.store = StoryStore(redis, settings.keys, settings.pipeline.max_rounds)
        # "0" when the group is new: stories enqueued before the supervisor started get their root too
        self.events = EventConsumer(redis, settings.keys, GROUP, consumer, start="0")
        self.tracer = tracer
        self.stopping = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self.tracer.start_sending()  # it also drains the trace outbox: the workers' runs
        self._thread = threading.Thread(target=self.run, name="langsmith-roots", daemon=True)
        self._thread.start()

    def close(self) -> None:
        self.stopping.set()
        if self._thread is not None:
            self._thread.join(CLOSE_TIMEOUT_S)
        self.tracer.close()

    def run(self) -> None:
        backlog = True  # after a restart: what this consumer took and did not ack, first
        done: list[str] = []  # acked with the next read, in its round trip
        while not self.stopping.is_set():
            try:
                if backlog:
                    self.events.ack(done)
                    entries = self.events.pending()
                else:
                    entries = self.events.read(block_ms=500, ack=done)
                done = []
                backlog = backlog and bool(entries)
                for entry_id, event in entries:
                    self.handle(event)
                    done.append(entry_id)
                if entries and not backlog:  # a root is not urgent: its stages' runs come a second later
                    self.stopping.wait(GATHER_S)
            except RedisError as exc:  # Redis away: the supervisor says so; try again shortly
                logs.get().warning("story traces: redis unavailable", error=str(exc))
                self.stopping.wait(1.0)
        with contextlib.suppress(RedisError):
            self.events.ack(done)

    def handle(self, event: FleetEvent) -> None:
        if not isinstance(event, StoryEvent) or not event.story:
            return
        if event.event == "enqueued":
            self._open(event.story)
        elif event.to in TERMINAL_STATES:
            self._close(event.story, event)

    def _open(self, story_id: str) -> None:
        record = self.store.find(story_id)
        root = TraceContext.parse(record.trace) if record else None
        if record is None or root is None:  # gone, or enqueued before traces existed
            return
        self.tracer.start(
            root,
            None,
            record.id,
            "chain",
            inputs={"title": record.title, "domain": record.domain},
            extra={
                "metadata": {
                    "story": record.id,
                    "domain": record.domain,
                    "priority": str(record.story.priority),
                }
            },
            tags=[record.domain],
        )

    def _close(self, story_id: str, event: StoryEvent) -> None:
        record = self.store.find(story_id)
        root = TraceContext.parse(record.trace) if record else None
        if record is None or root is None:
            return
        self.tracer.end(
            root,
            None,
            outputs={"state": event.to, "reason": event.reason or record.reason, "cost_usd": record.cost_usd},
            **({"error": event.reason or event.to} if event.to != "done" else {}),
        )
