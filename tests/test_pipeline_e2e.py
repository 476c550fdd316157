"""End to end with real processes: stories go through their domain's team to an end state."""

from __future__ import annotations

import json

import pytest
from redis import Redis

from wavefleet.config import Settings
from wavefleet.domains import Domains
from wavefleet.lifecycle import StoryState
from wavefleet.store import StoryStore
from wavefleet.stories import Story
from wavefleet.testing import Processes, wait_until

pytestmark = pytest.mark.slow


def story(story_id: str, *labels: str) -> Story:
    return Story(id=story_id, title=f"Story {story_id}", acceptance_criteria=("it works", "it is tested"),
                 labels=labels)


def wait_for_state(store: StoryStore, story_id: str, state: StoryState, timeout_s: float = 60) -> None:
    wait_until(lambda: store.get(story_id).state is state, timeout_s=timeout_s,
               message=f"{story_id} to be {state} (is {store.get(story_id).state})")


def test_auth_and_payments_stories_finish_in_parallel_each_on_its_own_team(
    procs: Processes, store: StoryStore, domains: Domains, redis: Redis, settings: Settings
) -> None:
    procs.team("auth")
    procs.team("payments")
    procs.supervisor()
    store.enqueue([story("AUTH-001"), story("PAYMENTS-001")], domains)

    wait_for_state(store, "AUTH-001", StoryState.DONE)
    wait_for_state(store, "PAYMENTS-001", StoryState.DONE)

    for name in redis.smembers(settings.keys.workers()):
        ran = [json.loads(x) for x in redis.lrange(settings.keys.worker_log(name), 0, -1)]
        domain = name.split("-")[0]
        assert ran, f"worker {name} recorded no job"
        assert {r["story"].split("-")[0].lower() for r in ran} == {domain}


def test_qa_failure_recycles_to_development_then_passes(
    procs: Processes, store: StoryStore, domains: Domains
) -> None:
    procs.team("auth")
    procs.supervisor()
    store.enqueue([story("AUTH-002", "offline:qa-fails=1")], domains)

    wait_for_state(store, "AUTH-002", StoryState.DONE)

    record = store.get("AUTH-002")
    assert record.round == 2
    events = [(e["from"], e["to"]) for e in store.events("AUTH-002") if e.get("from")]
    assert ("testing", "developing") in events
    assert not store.result("AUTH-002", 1, *_qa(record))["output"]["passed"]


def _qa(record):  # type: ignore[no-untyped-def]
    from wavefleet.lifecycle import Role

    return Role.QA, 1
