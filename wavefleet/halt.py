"""The halt channel: paired send and handle functions for the fleet-wide emergency stop.

A halt is a durable flag (``wave:halt``) plus a pub/sub message on the halt channel. Pub/sub is
at-most-once, so every listener also reads the flag when it starts, after every reconnect and
before every dequeue; the message only makes the common case fast.

Cancelling one story takes the same shape on the same subscription: the story's CANCELLED state is
the durable copy, a message on the cancel channel makes its running stage stop at once, and a
listener re-joining the channel has its worker re-check its running stage against the story.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass

from redis import Redis
from redis.client import Pipeline
from redis.exceptions import RedisError

from . import logs
from .fleet_events import FleetHalted, FleetResumed
from .history import EVENTS_MAXLEN
from .keys import Keys

HALT = "halt"
RESUME = "resume"
CANCEL = "cancel"
RECONNECT_DELAYS_S = (0.05, 0.1, 0.25, 0.5, 1.0)

# The flag and its event change together, in one script, so there is no halt without its event, nor
# an event without a halt: a second stop of a halted fleet, or a resume of a running one, adds none.
# KEYS: the halt flag, the events stream, the metric counters (`halts` counts the stops that halted).
# ARGV: the flag's JSON, the stream's cap, the event's fields.
_HALT = """
if not redis.call('SET', KEYS[1], ARGV[1], 'NX') then return 0 end
redis.call('HINCRBY', KEYS[3], 'halts', 1)
redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[2], '*', unpack(ARGV, 3))
return 1
"""
# KEYS: the halt flag, its acks, the events stream. ARGV: the stream's cap, the event's fields.
_RESUME = """
local deleted = redis.call('DEL', KEYS[1])
redis.call('DEL', KEYS[2])
if deleted == 1 then
  redis.call('XADD', KEYS[3], 'MAXLEN', '~', ARGV[1], '*', unpack(ARGV, 2))
end
return deleted
"""


def _entry(event: FleetHalted | FleetResumed, at: float) -> list[str]:
    """The event's stream entry as XADD's field-value arguments."""
    fields = event.fields() | {"story": "", "at": f"{at:.6f}"}
    return [x for kv in fields.items() for x in kv]


@dataclass(frozen=True)
class HaltState:
    reason: str
    by: str
    at: float

    def to_json(self) -> str:
        return json.dumps(asdict(self))


def send_halt(redis: Redis, keys: Keys, reason: str, by: str) -> HaltState:
    """Set the flag and publish; an already-halted fleet keeps its first reason and acks."""
    current = read_halt(redis, keys)
    if current is None:
        redis.delete(keys.halt_acks())  # acks of an earlier halt must not count for this one
        current = HaltState(reason=reason or "emergency stop", by=by, at=time.time())
        event = _entry(FleetHalted(reason=current.reason, by=by), current.at)
        with redis.pipeline() as pipe:
            pipe.eval(
                _HALT,
                3,
                keys.halt(),
                keys.events(),
                keys.metric_counters(),
                current.to_json(),
                EVENTS_MAXLEN,
                *event,
            )
            pipe.publish(keys.halt_channel(), json.dumps({"type": HALT, **asdict(current)}))
            pipe.execute()
    else:  # publish again: costs nothing and reaches anyone who missed the first message
        redis.publish(keys.halt_channel(), json.dumps({"type": HALT, **asdict(current)}))
    return current


def update_reason(redis: Redis, keys: Keys, state: HaltState, reason: str) -> None:
    """Replace the reason of the current halt (the file's text arrives just after the file)."""
    redis.set(keys.halt(), HaltState(reason, state.by, state.at).to_json(), xx=True)


def send_resume(redis: Redis, keys: Keys, by: str) -> bool:
    """Clear the flag and publish; returns False if the fleet was not halted."""
    now = time.time()
    event = _entry(FleetResumed(by=by), now)
    with redis.pipeline() as pipe:
        pipe.eval(_RESUME, 3, keys.halt(), keys.halt_acks(), keys.events(), EVENTS_MAXLEN, *event)
        pipe.publish(keys.halt_channel(), json.dumps({"type": RESUME, "by": by, "at": now}))
        deleted, *_ = pipe.execute()
    return bool(deleted)


def send_cancel(redis: Redis, keys: Keys, story_id: str) -> None:
    """Tell every worker that `story_id` is cancelled (sent after the transition committed): the one
    running a stage of it kills the stage."""
    redis.publish(keys.cancel_channel(), json.dumps({"type": CANCEL, "story": story_id, "at": time.time()}))


def read_halt(redis: Redis, keys: Keys) -> HaltState | None:
    raw = redis.get(keys.halt())
    if raw is None:
        return None
    data = json.loads(raw)
    return HaltState(
        reason=str(data.get("reason", "")), by=str(data.get("by", "")), at=float(data.get("at", 0))
    )


def acks(redis: Redis, keys: Keys) -> dict[str, dict[str, object]]:
    return {name: json.loads(raw) for name, raw in redis.hgetall(keys.halt_acks()).items()}


def record_ack(redis: Redis | Pipeline, keys: Keys, worker: str, **details: object) -> None:
    redis.hset(keys.halt_acks(), worker, json.dumps({"at": time.time(), **details}))


class HaltListener(threading.Thread):
    """Calls `on_halt(state)` / `on_resume()` as the fleet is halted and resumed; both must be
    idempotent, since a halt can reach a process twice (message and flag). With `on_cancel`, it
    also listens on the cancel channel: `on_cancel(story_id)` for a cancel message, and
    `on_cancel(None)` after every (re)subscribe, when a cancel may have been missed.

    Subscribes first, then reads the flag, so no halt published in between is missed; re-reads the
    flag after every reconnect, because messages published while disconnected are lost.
    """

    def __init__(
        self,
        redis: Redis,
        keys: Keys,
        on_halt: Callable[[HaltState], None],
        on_resume: Callable[[], None],
        on_cancel: Callable[[str | None], None] | None = None,
    ) -> None:
        super().__init__(name="halt-listener", daemon=True)
        self.redis, self.keys = redis, keys
        self.on_halt, self.on_resume, self.on_cancel = on_halt, on_resume, on_cancel
        self.channels = [keys.halt_channel(), *([keys.cancel_channel()] if on_cancel else [])]
        self.stopping = threading.Event()
        self.subscribed = threading.Event()
        self.log = logs.get()

    def run(self) -> None:
        attempt = 0
        while not self.stopping.is_set():
            try:
                self._listen()
                attempt = 0
            except RedisError as exc:
                delay = RECONNECT_DELAYS_S[min(attempt, len(RECONNECT_DELAYS_S) - 1)]
                self.log.warning("halt channel lost; resubscribing", error=str(exc), retry_in_s=delay)
                attempt += 1
                self.stopping.wait(delay)

    def _listen(self) -> None:
        pubsub = self.redis.pubsub()
        try:
            pubsub.subscribe(*self.channels)
            while not self.stopping.is_set():
                message = pubsub.get_message(timeout=1.0)
                if message is None:
                    continue
                if message["type"] == "subscribe":
                    # Also seen after redis-py silently reconnected and resubscribed: whatever was
                    # published while we were away is lost, so read the durable state.
                    if message["channel"] == self.keys.halt_channel():
                        self.sync()
                    elif self.on_cancel is not None:
                        self.on_cancel(None)
                    if message["data"] == len(self.channels):  # the last channel's confirmation
                        self.subscribed.set()
                elif message["type"] == "message":
                    self._handle(json.loads(message["data"]))
        finally:
            pubsub.close()

    def sync(self) -> None:
        """Tell the handlers what the durable flag says (they ignore a repeat of their state)."""
        state = read_halt(self.redis, self.keys)
        if state is not None:
            self.on_halt(state)
        else:
            self.on_resume()

    def _handle(self, message: dict[str, object]) -> None:
        if message.get("type") == HALT:
            self.on_halt(
                HaltState(
                    str(message.get("reason", "")),
                    str(message.get("by", "")),
                    float(str(message.get("at", 0))),
                )
            )
        elif message.get("type") == RESUME:
            self.on_resume()
        elif message.get("type") == CANCEL and self.on_cancel is not None:
            self.on_cancel(str(message.get("story", "")))

    def stop(self) -> None:
        self.stopping.set()
