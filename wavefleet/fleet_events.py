"""The fleet's events stream: one typed model per kind of entry, one writer, and a consumer-group reader.

Every entry is a flat map of strings (``event`` names its kind, ``at`` when, ``story`` the story or
""). Story transitions and budget alerts have been written there since before these models; this
module adds the fleet-level kinds (halt, resume, a dead worker found) and reads them all back. The
stream is capped (MAXLEN ~, history.EVENTS_MAXLEN), so a producer never waits on any consumer:
Slack, LangSmith or the monitor each read it through their own consumer group.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError
from redis import Redis
from redis.client import Pipeline
from redis.exceptions import ResponseError

from .history import History
from .keys import Keys
from .lifecycle import EventKind


class _FleetEvent(BaseModel):
    # extra="allow": a newer producer's extra field reaches a consumer instead of being dropped
    model_config = ConfigDict(frozen=True, extra="allow", populate_by_name=True)

    at: float = 0.0
    story: str = ""

    def fields(self) -> dict[str, str]:
        """The stream entry of this event, every value a string (``at`` and ``story`` are added by
        the writer)."""
        data = self.model_dump(mode="json", by_alias=True, exclude={"at", "story"})
        return {k: "" if v is None else str(v) for k, v in data.items()}


class FleetHalted(_FleetEvent):
    """The emergency stop was pulled (`wave stop`, the watcher's halt file)."""

    event: Literal["fleet_halted"] = "fleet_halted"
    reason: str
    by: str


class FleetResumed(_FleetEvent):
    """The emergency stop was released."""

    event: Literal["fleet_resumed"] = "fleet_resumed"
    by: str


class WorkerDead(_FleetEvent):
    """The supervisor's recovery found a worker whose heartbeat stopped while it held stages; its
    stages are run again (each also has a ``stage_lost`` entry on its story)."""

    event: Literal["worker_dead"] = "worker_dead"
    worker: str
    stages: int = Field(ge=0)
    reason: str = ""


class BudgetAlert(_FleetEvent):
    """A budget scope (a story's, a domain's or the fleet's day) crossed its warning (50%), critical
    (80%) or exceeded (100%) threshold: once per crossing, re-armed by a grant (wavefleet/budget.py)."""

    event: Literal["budget_warning", "budget_critical", "budget_exceeded"]
    scope: str
    level: str
    fraction: float
    reason: str = ""


class MonitorFinding(_FleetEvent):
    """`wave monitor` opened a finding: one per (detector, key) until it clears (wavefleet/monitor.py)."""

    event: Literal["monitor_finding"] = "monitor_finding"
    detector: str
    key: str
    severity: Literal["warning", "critical"]
    summary: str


class MonitorCleared(_FleetEvent):
    """A finding `wave monitor` had opened no longer holds."""

    event: Literal["monitor_cleared"] = "monitor_cleared"
    detector: str
    key: str
    summary: str


class StoryEvent(_FleetEvent):
    """A story's transition (``enqueued``, a lifecycle EventKind: stage_lost and stage_waiting are the
    recovery actions, a requeue and a retry scheduled) or a note on it (``stage_cancelled``)."""

    event: str
    to: str = ""
    from_: str = Field(default="", alias="from")
    role: str = ""
    round: str = ""
    attempt: str = ""
    worker: str = ""
    reason: str = ""


class UnknownEvent(_FleetEvent):
    """An entry of a kind this version does not know (a newer producer): its fields as they are."""

    event: str = ""
    raw: dict[str, str] = Field(default_factory=dict)


FleetEvent = (
    FleetHalted
    | FleetResumed
    | WorkerDead
    | BudgetAlert
    | MonitorFinding
    | MonitorCleared
    | StoryEvent
    | UnknownEvent
)

_FIXED: dict[str, type[_FleetEvent]] = {
    "fleet_halted": FleetHalted,
    "fleet_resumed": FleetResumed,
    "worker_dead": WorkerDead,
    "budget_warning": BudgetAlert,
    "budget_critical": BudgetAlert,
    "budget_exceeded": BudgetAlert,
    "monitor_finding": MonitorFinding,
    "monitor_cleared": MonitorCleared,
}
STORY_KINDS = frozenset({"enqueued", "stage_cancelled", *(k.value for k in EventKind)})
# How long a consumer that is not urgent waits after a read that brought entries before the next: a
# busy fleet's events come one by one, and a read each costs about what handling one does (and, in
# the supervisor, a GIL handoff of its routing thread; benchmarks/README.md "Observability overhead").
GATHER_S = 0.05


def parse_event(fields: dict[str, str]) -> FleetEvent:
    """The typed event of one stream entry; an unknown kind, or one that does not validate (written
    by another version), comes back as UnknownEvent with its fields untouched."""
    kind = fields.get("event", "")
    model = _FIXED.get(kind) or (StoryEvent if kind in STORY_KINDS else None)
    if model is not None:
        try:
            return model.model_validate(fields)  # type: ignore[return-value]
        except ValidationError:
            pass
    return UnknownEvent(event=kind, raw=dict(fields))


def emit(pipe: Pipeline, keys: Keys, event: _FleetEvent, now: float) -> None:
    """Queue `event` on `pipe` (the producer's own transaction where it has one): on the fleet's
    capped stream, and on its story's stream if it names a story."""
    History(keys).add(pipe, event.story or None, event.fields(), now)


class EventConsumer:
    """Reads the events stream through the consumer group `group` (made if missing): each consumer
    (the Slack notifier, LangSmith, the monitor) gets every entry once and acks what it handled; an
    entry it took but did not ack is given to it again by `pending()` after a restart."""

    def __init__(self, redis: Redis, keys: Keys, group: str, consumer: str, *, start: str = "$") -> None:
        self.redis, self.stream = redis, keys.events()
        self.group, self.consumer = keys.events_group(group), consumer
        try:  # `start` only matters when the group is new: "$" new entries only, "0" the whole stream
            redis.xgroup_create(self.stream, self.group, id=start, mkstream=True)
        except ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise

    def read(
        self, count: int = 100, block_ms: int | None = None, *, ack: Sequence[str] = ()
    ) -> list[tuple[str, FleetEvent]]:
        """New entries for this consumer (waits up to `block_ms` for one; None: does not wait), after
        acking `ack` in the same round trip (a consumer taking one entry at a time saves one per entry)."""
        if not ack:
            return self._read(">", count, block_ms)
        pipe = self.redis.pipeline(transaction=False)
        pipe.xack(self.stream, self.group, *ack)
        pipe.xreadgroup(self.group, self.consumer, {self.stream: ">"}, count=count, block=block_ms)
        return _entries(pipe.execute()[1])

    def pending(self, count: int = 100, after: str = "0") -> list[tuple[str, FleetEvent]]:
        """Entries this consumer took earlier and has not acked, from the first after the entry id
        `after` (read them after a restart, page by page)."""
        return self._read(after, count, None)

    def all_pending(self, page: int = 100) -> list[tuple[str, FleetEvent]]:
        """Every entry this consumer took earlier and has not acked, read `page` at a time."""
        entries: list[tuple[str, FleetEvent]] = []
        while more := self.pending(page, after=entries[-1][0] if entries else "0"):
            entries += more
        return entries

    def ack(self, ids: Iterable[str]) -> int:
        ids = list(ids)
        return int(self.redis.xack(self.stream, self.group, *ids)) if ids else 0

    def _read(self, start: str, count: int, block_ms: int | None) -> list[tuple[str, FleetEvent]]:
        reply: Any = self.redis.xreadgroup(
            self.group, self.consumer, {self.stream: start}, count=count, block=block_ms
        )
        return _entries(reply)


def _entries(reply: Any) -> list[tuple[str, FleetEvent]]:
    """XREADGROUP's reply as (entry id, event) pairs."""
    # a pending entry trimmed from the capped stream meanwhile comes back without fields
    return [(i, parse_event(fields or {})) for _stream, entries in reply or () for i, fields in entries]


__all__ = [
    "GATHER_S",
    "BudgetAlert",
    "EventConsumer",
    "FleetEvent",
    "FleetHalted",
    "FleetResumed",
    "MonitorCleared",
    "MonitorFinding",
    "StoryEvent",
    "UnknownEvent",
    "WorkerDead",
    "emit",
    "parse_event",
]
