"""StoryStore against a real Redis: all-or-nothing enqueue, idempotent atomic transitions, history, lists."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import HealthCheck, assume, example, given, settings
from hypothesis import strategies as st
from redis import Redis

from wavefleet.config import Settings
from wavefleet.domains import Domains
from wavefleet.errors import ConflictError, InvalidInputError, NotFoundError
from wavefleet.lifecycle import TERMINAL, Decision, Event, EventKind, Rejected, Role, StoryState
from wavefleet.messages import RunningStage, StageResult
from wavefleet.store import StoryStore
from wavefleet.stories import Priority, Story


def story(story_id: str, title: str = "") -> Story:
    return Story(id=story_id, title=title or f"Story {story_id}", acceptance_criteria=("it works",))


def everything(redis: Redis) -> dict[str, Any]:
    """Every key in Redis with its whole content, to compare before and after."""
    read: dict[str, Callable[[str], Any]] = {
        "hash": redis.hgetall,
        "set": lambda k: sorted(redis.smembers(k)),
        "zset": lambda k: redis.zrange(k, 0, -1, withscores=True),
        "stream": redis.xrange,
        "string": redis.get,
        "list": lambda k: redis.lrange(k, 0, -1),
    }
    return {key: read[redis.type(key)](key) for key in sorted(redis.scan_iter("*"))}


def stage_done(store: StoryStore, story_id: str, role: Role, **outcome: Any) -> Event:
    record = store.get(story_id)
    event = Event(
        EventKind.STAGE_DONE, role=role, round=record.round, attempt=record.attempts[role], **outcome
    )
    store.apply(story_id, event)
    return event


def to_developing(store: StoryStore, domains: Domains, *ids: str) -> None:
    store.enqueue([story(i) for i in ids], domains)
    for story_id in ids:
        store.apply(story_id, Event(EventKind.ROUTE))
        stage_done(store, story_id, Role.PM)


def to_state(store: StoryStore, story_id: str, state: StoryState) -> None:
    """Drive an enqueued story to an end state the way the fleet would."""
    store.apply(story_id, Event(EventKind.ROUTE))
    if state is StoryState.CANCELLED:
        store.apply(story_id, Event(EventKind.CANCEL))
        return
    if state is StoryState.FAILED:
        record = store.get(story_id)
        store.apply(story_id, Event(EventKind.STAGE_FAILED, role=Role.PM, attempt=record.attempts[Role.PM]))
        return
    stage_done(store, story_id, Role.PM)
    stage_done(store, story_id, Role.FE)
    stage_done(store, story_id, Role.BE)
    stage_done(store, story_id, Role.QA, passed=True)
    decision = Decision.GO if state is StoryState.DONE else Decision.KILL
    stage_done(store, story_id, Role.CTO, decision=decision)


# Enqueue -----------------------------------------------------------------------------------------
def test_enqueue_writes_the_story_its_indexes_its_history_and_asks_the_supervisor_to_route_it(
    store: StoryStore, domains: Domains, redis: Redis, settings: Settings
) -> None:
    # Given an empty Redis
    keys = settings.keys

    # When one auth story is enqueued
    store.enqueue([story("AUTH-001")], domains)

    # Then it is queued in round 0, indexed fleet-wide and by domain, active, with one history entry
    record = store.get("AUTH-001")
    assert (record.domain, record.state, record.round, record.pending) == (
        "auth",
        StoryState.QUEUED,
        0,
        set(),
    )
    assert record.story == story("AUTH-001")
    assert (
        redis.zrange(keys.stories(), 0, -1)
        == redis.zrange(keys.domain_stories("auth"), 0, -1)
        == ["AUTH-001"]
    )
    assert store.active_ids() == ["AUTH-001"]
    assert [e["event"] for e in store.events("AUTH-001")] == ["enqueued"]
    assert [fields for _, fields in redis.xrange(keys.intake())] == [{"kind": "route", "story": "AUTH-001"}]


@pytest.mark.parametrize("blocking_state", [StoryState.QUEUED, StoryState.PLANNING])
def test_a_batch_with_one_active_duplicate_writes_nothing_at_all(
    store: StoryStore, domains: Domains, redis: Redis, blocking_state: StoryState
) -> None:
    # Given AUTH-002 already active
    store.enqueue([story("AUTH-002")], domains)
    if blocking_state is StoryState.PLANNING:
        store.apply("AUTH-002", Event(EventKind.ROUTE))
    before = everything(redis)

    # When a batch of three new stories and AUTH-002 again is enqueued
    batch = [story("AUTH-001"), story("AUTH-002", "changed"), story("PAYMENTS-001"), story("AUTH-003")]
    with pytest.raises(ConflictError) as excinfo:
        store.enqueue(batch, domains)

    # Then the one clash is named and not a single key changed
    assert str(excinfo.value) == (
        f"story AUTH-002 is already active ({blocking_state}); cancel it first or use another id"
    )
    assert everything(redis) == before


def test_a_batch_with_an_unknown_prefix_writes_nothing_and_names_every_bad_story(
    store: StoryStore, domains: Domains, redis: Redis
) -> None:
    # Given an empty Redis
    # When a batch with two stories of unknown domains is enqueued
    with pytest.raises(InvalidInputError) as excinfo:
        store.enqueue([story("AUTH-001"), story("BILLING-001"), story("HR-001")], domains)

    # Then both are named, and nothing was written
    assert str(excinfo.value).splitlines() == [
        "story BILLING-001: no domain has prefix 'BILLING' (known: AUTH, PAYMENTS)",
        "story HR-001: no domain has prefix 'HR' (known: AUTH, PAYMENTS)",
    ]
    assert everything(redis) == {}


@pytest.mark.parametrize("end_state", sorted(TERMINAL))
def test_a_finished_story_may_be_enqueued_again_and_keeps_its_attempts_and_history(
    store: StoryStore, domains: Domains, end_state: StoryState
) -> None:
    # Given AUTH-001 taken to an end state
    store.enqueue([story("AUTH-001")], domains)
    to_state(store, "AUTH-001", end_state)
    finished = store.get("AUTH-001")
    events_before = len(store.events("AUTH-001"))

    # When it is enqueued again with a new title
    store.enqueue([story("AUTH-001", "second go")], domains)

    # Then it is queued afresh, its old attempts kept (job ids never repeat) and its history continued
    again = store.get("AUTH-001")
    assert (again.state, again.round, again.title, again.reason) == (StoryState.QUEUED, 0, "second go", "")
    assert again.attempts == finished.attempts
    assert [e["event"] for e in store.events("AUTH-001")][events_before:] == ["enqueued"]
    assert store.active_ids() == ["AUTH-001"]


def test_re_enqueue_clears_the_old_stage_results(
    store: StoryStore, domains: Domains, redis: Redis, settings: Settings
) -> None:
    # Given a cancelled story with a stored stage result
    store.enqueue([story("AUTH-001")], domains)
    store.record_result("AUTH-001", 0, Role.PM, 1, job="job", result=StageResult(ok=True))
    store.apply("AUTH-001", Event(EventKind.CANCEL))

    # When it is enqueued again
    store.enqueue([story("AUTH-001")], domains)

    # Then the old result is gone
    assert not redis.exists(settings.keys.story_results("AUTH-001"))
    assert store.result("AUTH-001", 0, Role.PM, 1) is None


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@example(
    title='"quoted" \\ back\x00slash',
    description="é 🚀 \u2028 ]]--[[ %s",
    criteria=["\x00"],
    priority=Priority.URGENT,
)
@given(
    title=st.text(min_size=1, max_size=200).filter(str.strip),
    description=st.text(max_size=500),
    criteria=st.lists(st.text(min_size=1, max_size=50).filter(str.strip), max_size=5),
    priority=st.sampled_from(Priority),
)
def test_any_valid_story_reads_back_from_redis_exactly_as_enqueued(
    store: StoryStore,
    domains: Domains,
    redis: Redis,
    title: str,
    description: str,
    criteria: list[str],
    priority: Priority,
) -> None:
    # Given any valid story (any unicode, NULs, quotes: the enqueue script gets it as JSON)
    redis.flushdb()
    try:
        given_story = Story(
            id="PAYMENTS-001",
            title=title,
            description=description,
            acceptance_criteria=tuple(criteria),
            priority=priority,
        )
    except ValueError:  # e.g. only whitespace pydantic strips but str.strip keeps
        assume(False)
        raise

    # When it is enqueued and read back
    store.enqueue([given_story], domains)
    record = store.get("PAYMENTS-001")

    # Then nothing was altered on the way
    assert record.story == given_story
    assert record.title == given_story.title


# Transitions -------------------------------------------------------------------------------------
def test_the_same_stage_result_applied_twice_advances_the_story_once(
    store: StoryStore, domains: Domains, redis: Redis
) -> None:
    # Given a story in development, FE's result applied once
    to_developing(store, domains, "AUTH-001")
    event = stage_done(store, "AUTH-001", Role.FE)
    after_first = everything(redis)

    # When the same result is delivered again
    with pytest.raises(Rejected):
        store.apply("AUTH-001", event)

    # Then nothing at all changed: no state, no history, no intake message
    assert everything(redis) == after_first
    assert store.get("AUTH-001").pending == {Role.BE}


def test_applying_an_event_to_a_missing_story_is_not_found(store: StoryStore) -> None:
    # Given an empty Redis
    # When an event is applied to a story that does not exist
    with pytest.raises(NotFoundError) as excinfo:
        store.apply("AUTH-404", Event(EventKind.CANCEL))

    # Then it says so
    assert str(excinfo.value) == "no story AUTH-404"


def test_concurrent_fe_and_be_results_never_lose_an_update(store: StoryStore, domains: Domains) -> None:
    # Given 20 stories in development, FE and BE pending on each
    ids = [f"AUTH-{n:03d}" for n in range(1, 21)]
    to_developing(store, domains, *ids)
    barrier = threading.Barrier(2 * len(ids))
    errors: list[BaseException] = []

    def deliver(story_id: str, role: Role) -> None:
        try:
            barrier.wait()
            store.apply(story_id, Event(EventKind.STAGE_DONE, role=role, round=1, attempt=1))
        except BaseException as exc:
            errors.append(exc)

    # When the FE and BE results of every story are applied at the same moment from 40 threads
    threads = [threading.Thread(target=deliver, args=(i, r)) for i in ids for r in (Role.FE, Role.BE)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    # Then every story went to testing: neither half was lost to the other
    assert errors == []
    assert {store.get(i).state for i in ids} == {StoryState.TESTING}
    assert {frozenset(store.get(i).pending) for i in ids} == {frozenset({Role.QA})}


def test_many_threads_delivering_the_same_lost_stage_re_dispatch_it_exactly_once(
    store: StoryStore, domains: Domains
) -> None:
    # Given a story planning its first PM attempt
    store.enqueue([story("AUTH-001")], domains)
    store.apply("AUTH-001", Event(EventKind.ROUTE))
    lost = Event(EventKind.STAGE_LOST, role=Role.PM, round=0, attempt=1, reason="worker died")
    outcomes: list[str] = []
    barrier = threading.Barrier(8)

    def deliver() -> None:
        barrier.wait()
        try:
            store.apply("AUTH-001", lost)
            outcomes.append("applied")
        except Rejected:
            outcomes.append("rejected")

    # When 8 threads report the same loss at once
    threads = [threading.Thread(target=deliver) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    # Then exactly one took effect: one new attempt, one history entry
    assert sorted(outcomes) == ["applied"] + ["rejected"] * 7
    assert store.get("AUTH-001").attempts[Role.PM] == 2
    assert [e["event"] for e in store.events("AUTH-001")].count("stage_lost") == 1


def test_every_transition_is_recorded_in_order_with_its_time_in_both_histories(
    store: StoryStore, domains: Domains, redis: Redis, settings: Settings
) -> None:
    # Given a story taken through route, PM, FE and a cancel
    started = time.time()
    store.enqueue([story("AUTH-001")], domains)
    store.apply("AUTH-001", Event(EventKind.ROUTE))
    stage_done(store, "AUTH-001", Role.PM)
    stage_done(store, "AUTH-001", Role.FE)
    store.apply("AUTH-001", Event(EventKind.CANCEL, reason="not needed"))
    finished = time.time()

    # When its history is read
    events = store.events("AUTH-001")

    # Then each step is there in order, chained from state to state, stamped within the test's time
    assert [(e["event"], e.get("from"), e["to"], e.get("role")) for e in events] == [
        ("enqueued", None, "queued", None),
        ("route", "queued", "planning", ""),
        ("stage_done", "planning", "developing", "pm"),
        ("stage_done", "developing", "developing", "fe"),
        ("cancel", "developing", "cancelled", ""),
    ]
    stamps = [float(e["at"]) for e in events]
    assert stamps == sorted(stamps)
    assert started <= stamps[0] and stamps[-1] <= finished
    assert events[-1]["reason"] == "not needed"
    assert [fields for _, fields in redis.xrange(settings.keys.events())] == events


def test_an_end_state_leaves_the_active_set_and_retry_puts_the_story_back(
    store: StoryStore, domains: Domains, redis: Redis, settings: Settings
) -> None:
    # Given a cancelled story
    store.enqueue([story("AUTH-001")], domains)
    store.apply("AUTH-001", Event(EventKind.CANCEL))
    assert store.active_ids() == []

    # When it is retried
    store.apply("AUTH-001", Event(EventKind.RETRY))

    # Then it is active and queued again, and the supervisor is asked to route it
    assert store.active_ids() == ["AUTH-001"]
    assert store.get("AUTH-001").state is StoryState.QUEUED
    intake = [fields for _, fields in redis.xrange(settings.keys.intake())]
    assert intake[-1] == {"kind": "route", "story": "AUTH-001"}


def test_a_stage_result_is_stored_and_the_supervisor_is_told(
    store: StoryStore, domains: Domains, redis: Redis, settings: Settings
) -> None:
    # Given a story planning, its PM job marked running
    store.enqueue([story("AUTH-001")], domains)
    store.apply("AUTH-001", Event(EventKind.ROUTE))
    running = RunningStage(worker="w1", story="AUTH-001", role=Role.PM, round=0, attempt=1, started_at=1.0)
    store.mark_running("AUTH-001_r0_pm_a1", running)
    assert store.running() == {"AUTH-001_r0_pm_a1": running}

    # When the PM result is recorded
    store.record_result(
        "AUTH-001", 0, Role.PM, 1, job="AUTH-001_r0_pm_a1", result=StageResult(ok=True, output={"tasks": []})
    )

    # Then it can be read back, the job is no longer running and intake has a result
    record = store.get("AUTH-001")
    assert store.latest_result(record, Role.PM) == StageResult(ok=True, output={"tasks": []})
    stored = redis.hget(settings.keys.story_results("AUTH-001"), "r0.pm.a1")  # the wire form is kept
    assert stored is not None and json.loads(stored) == {"ok": True, "output": {"tasks": []}}
    assert redis.hgetall(settings.keys.running()) == {}
    last = [fields for _, fields in redis.xrange(settings.keys.intake())][-1]
    assert last == {"kind": "result", "story": "AUTH-001", "role": "pm", "round": "0", "attempt": "1"}


# Reading -----------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("domain", "state", "expected"),
    [
        (None, None, ["AUTH-001", "PAYMENTS-001", "AUTH-002", "PAYMENTS-002"]),
        ("auth", None, ["AUTH-001", "AUTH-002"]),
        ("payments", None, ["PAYMENTS-001", "PAYMENTS-002"]),
        (None, StoryState.CANCELLED, ["PAYMENTS-001", "AUTH-002"]),
        ("auth", StoryState.QUEUED, ["AUTH-001"]),
        ("payments", StoryState.CANCELLED, ["PAYMENTS-001"]),
        ("payments", StoryState.DONE, []),
        ("billing", None, []),
    ],
)
def test_list_filters_by_domain_and_state_in_creation_order(
    store: StoryStore, domains: Domains, domain: str | None, state: StoryState | None, expected: list[str]
) -> None:
    # Given four stories enqueued one after another, two of them cancelled
    for story_id in ("AUTH-001", "PAYMENTS-001", "AUTH-002", "PAYMENTS-002"):
        store.enqueue([story(story_id)], domains)
    for story_id in ("PAYMENTS-001", "AUTH-002"):
        store.apply(story_id, Event(EventKind.CANCEL))

    # When the stories are listed with a filter
    records = store.list(domain=domain, state=state)

    # Then exactly the matching ones come back, oldest first
    assert [r.id for r in records] == expected


def test_reading_a_missing_story_is_not_found_and_find_returns_none(store: StoryStore) -> None:
    # Given an empty Redis
    # When a missing story is read
    with pytest.raises(NotFoundError) as excinfo:
        store.get("AUTH-404")

    # Then get and events refuse, find answers None
    assert str(excinfo.value) == "no story AUTH-404"
    with pytest.raises(NotFoundError):
        store.events("AUTH-404")
    assert store.find("AUTH-404") is None


def test_a_record_serialises_to_the_fields_status_json_prints(store: StoryStore, domains: Domains) -> None:
    # Given a story in development
    to_developing(store, domains, "PAYMENTS-007")

    # When it is turned into a dict
    data = store.get("PAYMENTS-007").to_dict()

    # Then it has the documented fields, JSON-ready
    assert json.loads(json.dumps(data)) == data
    assert {k: data[k] for k in ("id", "domain", "state", "round", "stage")} == {
        "id": "PAYMENTS-007",
        "domain": "payments",
        "state": "developing",
        "round": 1,
        "stage": "be+fe",
    }
