"""Stories in Redis: atomic enqueue, atomic transitions, stage results and history."""

from __future__ import annotations

import builtins
import json
import secrets
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from redis import Redis
from redis.client import Pipeline
from redis.exceptions import WatchError

from .domains import Domains
from .errors import ConflictError, CorruptStoryError, InvalidInputError, NotFoundError
from .history import EVENTS_MAXLEN, History
from .keys import ONCE_TTL_S, Keys
from .lifecycle import TERMINAL, Event, EventKind, Outcome, Rejected, Role, Snapshot, StoryState, advance
from .messages import (
    NudgeMessage,
    ResultMessage,
    RouteMessage,
    RunningStage,
    StageResult,
    intake_fields,
    job_id,
    parse_job_id,
)
from .redact import process_redactor
from .safety.intake import redacted, story_flags
from .stories import Story
from .text import terminal_safe

STAGE_CANCELLED = "stage_cancelled"  # a history entry, not a lifecycle event: the cancel was that

# The story hash's spend fields, added to by the budget's settle script in the same step that moves
# the spend (so the two never disagree); named here, where the hash is read.
COST_FIELDS = ("cost_usd", "llm_tokens", "llm_calls")
WATCH_TRIES = 50


@dataclass(frozen=True)
class StoryRecord:
    id: str
    domain: str
    title: str
    state: StoryState
    round: int
    pending: frozenset[Role]
    attempts: dict[Role, int]
    lost: dict[Role, int]
    retries: dict[Role, int]
    waiting: frozenset[Role]
    held_from: StoryState | None
    approved: str  # who approved a CTO HOLD and why; "" if no human did
    reason: str
    created_at: float
    updated_at: float
    cost_usd: float
    story: Story
    intake: tuple[str, ...] = ()  # the rules the intake check flagged (wavefleet/safety/intake.py)

    @property
    def snapshot(self) -> Snapshot:
        return Snapshot(
            state=self.state,
            round=self.round,
            pending=self.pending,
            attempts=dict(self.attempts),
            lost=dict(self.lost),
            retries=dict(self.retries),
            waiting=self.waiting,
            held_from=self.held_from,
            approved=self.approved,
        )

    @property
    def stage(self) -> str:
        return "+".join(sorted(r.value for r in self.pending)) or "-"

    def job_id(self, role: Role) -> str:
        return job_id(self.id, self.round, role, self.attempts.get(role, 0))

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "domain": self.domain,
            "title": self.title,
            "state": self.state.value,
            "round": self.round,
            "stage": self.stage,
            "reason": self.reason,
            "approved": self.approved,
            "intake": list(self.intake),
            "created_at": self.created_at,
            "updated_at": self.updated_at,
            "cost_usd": self.cost_usd,
        }


class StoryStore:
    def __init__(self, redis: Redis, keys: Keys, max_rounds: int) -> None:
        self.redis = redis
        self.keys = keys
        self.max_rounds = max_rounds
        self.history = History(keys)

    # Enqueue ---------------------------------------------------------------------------------
    # KEYS: the stories zset, the active set, the events stream, the intake stream, then four per story
    # (its hash, its results hash, its events stream, its domain's zset). ARGV[1]: the batch as JSON,
    # built by `enqueue` and `_write_new`; every key name comes from `Keys`, every field from Python.
    # Checks every story first and writes only if none is active: all or nothing, in one round trip.
    # Each story hash keeps its batch's token (field `batch`), so a resent batch is recognised.
    _ENQUEUE_LUA = """
local batch = cjson.decode(ARGV[1])
-- This very batch again (redis-py resent it after the reply was lost): it is written already.
if redis.call('HGET', KEYS[5], 'batch') == batch.token then return {} end
local terminal = {}
for _, state in ipairs(batch.terminal) do terminal[state] = true end
local active, attempts = {}, {}
for i, story in ipairs(batch.stories) do
  local key = KEYS[4 * i + 1]
  local state = redis.call('HGET', key, 'state')
  if state and not terminal[state] then
    active[#active + 1] = story.id
    active[#active + 1] = state
  end
  attempts[i] = redis.call('HGET', key, 'attempts')
end
if #active > 0 then return active end
for i, story in ipairs(batch.stories) do
  local key, results, history, domain = KEYS[4 * i + 1], KEYS[4 * i + 2], KEYS[4 * i + 3], KEYS[4 * i + 4]
  local fields = story.fields
  if attempts[i] and attempts[i] ~= '' then
    for j = 1, #fields, 2 do
      if fields[j] == 'attempts' then fields[j + 1] = attempts[i] end
    end
  end
  redis.call('DEL', key, results)
  redis.call('HSET', key, unpack(fields))
  redis.call('ZADD', KEYS[1], batch.score, story.id)
  redis.call('ZADD', domain, batch.score, story.id)
  redis.call('SADD', KEYS[2], story.id)
  redis.call('XADD', history, '*', unpack(story.event))
  redis.call('XADD', KEYS[3], 'MAXLEN', '~', batch.maxlen, '*', unpack(story.event))
  redis.call('XADD', KEYS[4], '*', unpack(story.intake))
end
return {}
"""

    def enqueue(self, stories: Sequence[Story], domains: Domains) -> None:
        """Add all stories or none: refused if any id is unknown, duplicated or still active.

        One Lua script checks and writes the whole batch atomically, in one round trip; Redis runs
        nothing else meanwhile (about 30 µs a story, so a 1,000-story file blocks it for ~30 ms).
        """
        problems = []
        for story in stories:
            try:
                domains.for_story(story.id)
            except InvalidInputError as exc:
                problems.append(str(exc))
        if problems:
            raise InvalidInputError("\n".join(problems))
        if not stories:
            return
        now = time.time()
        token = secrets.token_hex(8)
        keys = [self.keys.stories(), self.keys.active(), self.keys.events(), self.keys.intake()]
        batch = []
        for story in stories:
            domain = domains.for_story(story.id).name
            keys += [
                self.keys.story(story.id),
                self.keys.story_results(story.id),
                self.keys.story_events(story.id),
                self.keys.domain_stories(domain),
            ]
            batch.append(self._write_new(story, domain, now, token))
        payload = json.dumps(
            {
                "token": token,
                "score": repr(now),
                "maxlen": str(EVENTS_MAXLEN),
                "terminal": sorted(s.value for s in TERMINAL),
                "stories": batch,
            },
            ensure_ascii=False,
        )
        self._refuse_active(self.redis.register_script(self._ENQUEUE_LUA)(keys=keys, args=[payload]))

    def _refuse_active(self, active: list[str]) -> None:
        """The script's reply: ``[id, state, ...]`` of every story still active (then nothing was written)."""
        if active:
            raise ConflictError(
                "\n".join(
                    f"story {story_id} is already active ({state}); cancel it first or use another id"
                    for story_id, state in zip(active[::2], active[1::2], strict=True)
                )
            )

    def _write_new(self, story: Story, domain: str, now: float, token: str) -> dict[str, Any]:
        """One story's part of the enqueue script: its fresh hash, its history entry, its intake message."""
        stamp = repr(now)  # what redis-py sends for a float, so the fields read back as before
        flags = story_flags(story)  # on the text as given; what is stored is redacted
        story = redacted(story)
        fields = {
            "id": story.id,
            "domain": domain,
            "title": story.title,
            "state": StoryState.QUEUED.value,
            "round": "0",
            "pending": "",
            # the script keeps a finished story's attempts instead, so job ids never repeat an old job's id
            "attempts": "{}",
            "held_from": "",
            "approved": "",
            "reason": "",
            "created_at": stamp,
            "updated_at": stamp,
            "cost_usd": "0",
            "spec": story.model_dump_json(),
            "batch": token,
            "intake": ",".join(flags),
        }
        event = {"event": "enqueued", "to": StoryState.QUEUED.value, "story": story.id, "at": f"{now:.6f}"}
        intake = intake_fields(RouteMessage(story=story.id))
        return {
            "id": story.id,
            "fields": self._flat(fields),
            "event": self._flat(event),
            "intake": self._flat(intake),
        }

    @staticmethod
    def _flat(entry: dict[str, str]) -> list[str]:
        """``{"a": "1", "b": "2"}`` -> ``["a", "1", "b", "2"]``: the argument order of HSET and XADD."""
        return [x for pair in entry.items() for x in pair]

    # Reading ---------------------------------------------------------------------------------
    def get(self, story_id: str) -> StoryRecord:
        data = self.redis.hgetall(self.keys.story(story_id))
        if not data:
            raise NotFoundError(f"no story {terminal_safe(story_id)}")  # one line, whatever was typed
        return _record_from(data)

    def find(self, story_id: str) -> StoryRecord | None:
        data = self.redis.hgetall(self.keys.story(story_id))
        return _record_from(data) if data else None

    def list(self, domain: str | None = None, state: StoryState | None = None) -> list[StoryRecord]:
        index = self.keys.domain_stories(domain) if domain else self.keys.stories()
        records = self.records(self.redis.zrange(index, 0, -1))
        return [r for r in records if state is None or r.state is state]

    def overview(self, recent: int) -> tuple[builtins.list[StoryRecord], int]:
        """Every active story and the `recent` that finished last, oldest first (as `list` orders
        them), and how many stories that leaves out. Reads only those, however many stories exist."""
        active = set(self.redis.smembers(self.keys.active()))
        if not self.redis.exists(self.keys.finished()):
            self._index_finished(active)
        # A story enqueued again after it finished is active and still in the finished index: the
        # `recent` finished last are among the `recent + len(active)` last entries.
        last = self.redis.zrevrange(self.keys.finished(), 0, recent + len(active) - 1) if recent else []
        finished = [story_id for story_id in last if story_id not in active][:recent]
        total = self.redis.zcard(self.keys.stories())
        ids = sorted(active | set(finished))
        records = sorted(self.records(ids), key=lambda r: (r.created_at, r.id))
        return records, total - len(records)

    def _index_finished(self, active: set[str]) -> None:
        """Build the finished index from the stories themselves: once, for stories that finished
        before the index existed (scored by their last update, which was their end)."""
        others = [i for i in self.redis.zrange(self.keys.stories(), 0, -1) if i not in active]
        done = {r.id: r.updated_at for r in self.records(others, skip_corrupt=True) if r.state in TERMINAL}
        if done:
            self.redis.zadd(self.keys.finished(), done, nx=True)

    def records(self, ids: Sequence[str], *, skip_corrupt: bool = False) -> builtins.list[StoryRecord]:
        """The stories that exist among `ids`, in one round trip; with `skip_corrupt`, a story
        whose hash cannot be read is left out instead of failing the whole read."""
        with self.redis.pipeline(transaction=False) as pipe:
            for story_id in ids:
                pipe.hgetall(self.keys.story(story_id))
            rows = pipe.execute()
        records = []
        for row in rows:
            if not row:
                continue
            try:
                records.append(_record_from(row))
            except CorruptStoryError:
                if not skip_corrupt:
                    raise
        return records

    def active_ids(self) -> builtins.list[str]:
        return sorted(self.redis.smembers(self.keys.active()))

    def events(self, story_id: str) -> builtins.list[dict[str, str]]:
        self.get(story_id)
        return [fields for _id, fields in self.redis.xrange(self.keys.story_events(story_id))]

    def result(self, story_id: str, round_: int, role: Role, attempt: int) -> StageResult | None:
        raw = self.redis.hget(self.keys.story_results(story_id), _result_field(round_, role, attempt))
        return StageResult.model_validate_json(raw) if raw else None

    def latest_result(self, record: StoryRecord, role: Role, round_: int | None = None) -> StageResult | None:
        """The newest result of `role` in `round_` (default: the story's current round)."""
        wanted = record.round if round_ is None else round_
        for attempt in range(record.attempts.get(role, 0), 0, -1):
            found = self.result(record.id, wanted, role, attempt)
            if found is not None:
                return found
        return None

    def results(self, story_id: str) -> builtins.list[tuple[str, StageResult]]:
        """Every stage result of the story with its field (`r<round>.<role>.a<attempt>`), in pipeline
        order: round by round, pm fe be qa cto, attempt by attempt (as text, cto came before fe)."""
        raw = self.redis.hgetall(self.keys.story_results(story_id))
        found = []
        for field in sorted(raw, key=_pipeline_order):
            try:
                found.append((field, StageResult.model_validate_json(raw[field])))
            except ValueError as exc:  # pydantic's ValidationError is a ValueError
                raise CorruptStoryError(
                    f"story {story_id}: its result {field} in Redis cannot be read "
                    f"({str(exc).splitlines()[0]}); repair or delete that field of its results hash"
                ) from None
        return found

    # Transitions -----------------------------------------------------------------------------
    def apply(self, story_id: str, event: Event) -> Outcome:
        """Apply `event` atomically; raises Rejected (nothing written) if it does not fit.

        An optimistic transaction on the story's hash, tagged with a fresh token. If the connection
        drops after EXEC was sent, redis-py reports a WatchError and the transaction may or may not
        have run. The token tells which: a commit that landed is recognised and its outcome returned.
        Judging the event again instead would reject it as already applied, and the caller would
        skip what must follow the commit (dispatching the next stage), stranding the story.
        """
        key = self.keys.story(story_id)
        token = secrets.token_hex(8)
        with self.redis.pipeline() as pipe:
            for _ in range(WATCH_TRIES):
                outcome: Outcome | None = None
                try:
                    pipe.watch(key)
                    data = pipe.hgetall(key)
                    if not data:
                        raise NotFoundError(f"no story {terminal_safe(story_id)}")
                    outcome = advance(_record_from(data).snapshot, event, self.max_rounds)
                    pipe.multi()
                    self._write_outcome(pipe, story_id, event, outcome, token)
                    pipe.execute()
                    return outcome
                except WatchError:
                    pipe.reset()
                    if outcome is not None and self.redis.exists(self.keys.once(token)):
                        return outcome  # it committed; only the reply was lost
        raise ConflictError(f"too much contention on story {story_id}; try again")

    def _write_outcome(
        self, pipe: Pipeline, story_id: str, event: Event, outcome: Outcome, token: str
    ) -> None:
        now = time.time()
        after = outcome.after
        fields: dict[str, Any] = {
            "state": after.state.value,
            "round": after.round,
            "pending": ",".join(sorted(r.value for r in after.pending)),
            "attempts": json.dumps({r.value: n for r, n in after.attempts.items()}),
            "lost": json.dumps({r.value: n for r, n in after.lost.items()}),
            "retries": json.dumps({r.value: n for r, n in after.retries.items()}),
            "waiting": ",".join(sorted(r.value for r in after.waiting)),
            "held_from": after.held_from.value if after.held_from else "",
            "approved": after.approved,
            "updated_at": now,
        }
        if outcome.changed_state:
            fields["reason"] = outcome.reason
        pipe.hset(self.keys.story(story_id), mapping=fields)
        pipe.set(self.keys.once(token), 1, ex=ONCE_TTL_S)
        if after.state in TERMINAL:
            pipe.srem(self.keys.active(), story_id)
            if outcome.changed_state:
                pipe.zadd(self.keys.finished(), {story_id: now})
        else:
            pipe.sadd(self.keys.active(), story_id)
        history = {
            "event": event.kind.value,
            "from": outcome.before.state.value,
            "to": after.state.value,
            "round": after.round,
            "role": event.role.value if event.role else "",
            "reason": outcome.reason or event.reason,
        }
        self._record(pipe, story_id, history, now)
        if event.kind in (EventKind.RETRY, EventKind.APPROVE):
            message = (
                RouteMessage(story=story_id)
                if event.kind is EventKind.RETRY
                else NudgeMessage(story=story_id)
            )
            pipe.xadd(self.keys.intake(), intake_fields(message))

    def _record(self, pipe: Pipeline, story_id: str, fields: dict[str, Any], now: float) -> None:
        self.history.add(pipe, story_id, fields, now)

    # Stage bookkeeping (written by workers) --------------------------------------------------
    def record_stage_cancelled(
        self, pipe: Pipeline, story_id: str, role: str, round_: int, reason: str
    ) -> None:
        """Note in the story's history that a worker killed its running stage after a cancel. Not a
        transition (the cancel was): `to` is empty, as for budget alerts."""
        fields = {
            "event": STAGE_CANCELLED,
            "to": "",
            "role": role,
            "round": round_,
            "reason": reason,
        }
        self._record(pipe, story_id, fields, time.time())

    def record_agent_event(
        self, story_id: str, event: str, reason: str, fields: dict[str, str | int | float | bool]
    ) -> None:
        """Note in the story's history what an agent reports (a guard stopped its loop, a tool call
        was blocked). Not a transition: `to` is empty, as for budget alerts."""
        entry = {**fields, "event": event, "to": "", "reason": reason}
        with self.redis.pipeline(transaction=False) as pipe:
            self._record(pipe, story_id, entry, time.time())
            pipe.execute()

    def mark_running(self, job: str, info: RunningStage) -> None:
        self.redis.hset(self.keys.running(), job, info.model_dump_json())

    def running(self) -> dict[str, RunningStage]:
        """Job id -> what runs it, of every stage a worker said it started and has not finished."""
        return {
            job: RunningStage.model_validate_json(raw)
            for job, raw in self.redis.hgetall(self.keys.running()).items()
        }

    def record_result(
        self, story_id: str, round_: int, role: Role, attempt: int, *, job: str, result: StageResult
    ) -> None:
        """Store a stage's result and tell the supervisor, in one transaction.

        Safe to be resent after a lost reply (redis-py does): the result is overwritten with itself
        and the supervisor ignores the second message. Model spend reaches the story through the
        budget's settlement, not here. Its output and error are redacted first (they quote model
        output, commands' output, files)."""
        redactor = process_redactor()
        result = result.model_copy(
            update={"output": redactor.clean(result.output), "error": redactor.text(result.error)}
        )
        with self.redis.pipeline() as pipe:
            pipe.hset(
                self.keys.story_results(story_id), _result_field(round_, role, attempt), result.to_json()
            )
            pipe.hdel(self.keys.running(), job)
            message = ResultMessage(story=story_id, role=role, round=round_, attempt=attempt)
            pipe.xadd(self.keys.intake(), intake_fields(message))
            pipe.execute()


def _result_field(round_: int, role: Role, attempt: int) -> str:
    return f"r{round_}.{role.value}.a{attempt}"


_ROLE_ORDER = {role.value: index for index, role in enumerate(Role)}  # the pipeline's: pm fe be qa cto


def _pipeline_order(field: str) -> tuple[int, int, int, str]:
    round_, _, rest = field.partition(".")
    role, _, attempt = rest.partition(".")
    try:
        return int(round_[1:]), _ROLE_ORDER.get(role, len(_ROLE_ORDER)), int(attempt[1:]), field
    except ValueError:  # not a field this version writes: last, as it is
        return sys.maxsize, 0, 0, field


def _record_from(data: dict[str, str]) -> StoryRecord:
    try:
        return _parse_record(data)
    except (KeyError, ValueError) as exc:  # pydantic's ValidationError is a ValueError
        story = data.get("id", "?")
        raise CorruptStoryError(
            f"story {story}: its record in Redis cannot be read ({type(exc).__name__}: "
            f"{str(exc).splitlines()[0]}); repair or delete its hash in Redis"
        ) from None


def _parse_record(data: dict[str, str]) -> StoryRecord:
    pending = frozenset(Role(p) for p in data.get("pending", "").split(",") if p)
    attempts = {Role(k): int(v) for k, v in json.loads(data.get("attempts") or "{}").items()}
    lost = {Role(k): int(v) for k, v in json.loads(data.get("lost") or "{}").items()}
    retries = {Role(k): int(v) for k, v in json.loads(data.get("retries") or "{}").items()}
    return StoryRecord(
        id=data["id"],
        domain=data["domain"],
        title=data.get("title", ""),
        state=StoryState(data["state"]),
        round=int(data.get("round", 0)),
        pending=pending,
        attempts=attempts,
        lost=lost,
        retries=retries,
        waiting=frozenset(Role(p) for p in data.get("waiting", "").split(",") if p),
        held_from=StoryState(data["held_from"]) if data.get("held_from") else None,
        approved=data.get("approved", ""),
        reason=data.get("reason", ""),
        created_at=float(data.get("created_at", 0)),
        updated_at=float(data.get("updated_at", 0)),
        cost_usd=float(data.get("cost_usd", 0)),
        story=Story.model_validate_json(data["spec"]),
        intake=tuple(f for f in data.get("intake", "").split(",") if f),
    )


__all__ = ["Rejected", "StoryRecord", "StoryStore", "job_id", "parse_job_id"]
