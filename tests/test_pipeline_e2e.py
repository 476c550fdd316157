"""End to end with real processes: stories go through their domain's team to an end state."""

from __future__ import annotations

import json

import pytest
from redis import Redis
from rq import Queue

from wavefleet.config import Settings
from wavefleet.connection import connect
from wavefleet.domains import Domains
from wavefleet.lifecycle import Event, EventKind, Role, StoryState
from wavefleet.queues import STAGE_FUNCTION
from wavefleet.store import StoryStore
from wavefleet.stories import Story
from wavefleet.testing import Processes, wait_until

pytestmark = pytest.mark.slow


def story(story_id: str, *labels: str) -> Story:
    return Story(
        id=story_id,
        title=f"Story {story_id}",
        acceptance_criteria=("it works", "it is tested"),
        labels=labels,
    )


def wait_for_state(store: StoryStore, story_id: str, state: StoryState, timeout_s: float = 60) -> None:
    wait_until(
        lambda: store.get(story_id).state is state,
        timeout_s=timeout_s,
        message=f"{story_id} to be {state} (is {store.get(story_id).state})",
    )


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
    first_report = store.latest_result(record, Role.QA, round_=1)
    assert first_report is not None and not first_report.output["passed"]
    assert "1 failed" in first_report.output["summary"]


@pytest.mark.parametrize(
    ("label", "state", "reason"),
    [
        ("offline:leak-secret", StoryState.KILLED, "credential"),
        ("offline:oversize", StoryState.HELD, "human review"),
    ],
)
def test_cto_kills_a_leaked_credential_and_holds_an_oversized_diff(
    procs: Processes, store: StoryStore, domains: Domains, label: str, state: StoryState, reason: str
) -> None:
    procs.team("payments")
    procs.supervisor()
    store.enqueue([story("PAYMENTS-007", label)], domains)

    wait_for_state(store, "PAYMENTS-007", state)

    assert reason in store.get("PAYMENTS-007").reason


def test_an_approved_hold_is_done_and_a_rejected_one_killed(
    procs: Processes, store: StoryStore, domains: Domains
) -> None:
    procs.team("auth")
    procs.supervisor()
    store.enqueue([story("AUTH-010", "offline:oversize"), story("AUTH-011", "offline:oversize")], domains)
    wait_for_state(store, "AUTH-010", StoryState.HELD)
    wait_for_state(store, "AUTH-011", StoryState.HELD)

    store.apply("AUTH-010", Event(EventKind.APPROVE, reason="looked at it"))
    store.apply("AUTH-011", Event(EventKind.REJECT, reason="too big"))

    assert store.get("AUTH-011").state is StoryState.KILLED
    wait_for_state(store, "AUTH-010", StoryState.DONE)  # the CTO stage delivers the human's GO


def test_an_agent_that_gives_up_fails_the_story_with_its_reason(
    procs: Processes, store: StoryStore, domains: Domains
) -> None:
    procs.team("auth")
    procs.supervisor()
    store.enqueue([story("AUTH-012", "offline:give-up=be")], domains)

    wait_for_state(store, "AUTH-012", StoryState.FAILED)

    assert "gave up" in store.get("AUTH-012").reason


def test_a_misrouted_job_is_refused_by_the_other_domain_and_rerouted(
    procs: Processes, store: StoryStore, domains: Domains, redis: Redis, settings: Settings
) -> None:
    store.enqueue([story("PAYMENTS-020")], domains)
    store.apply("PAYMENTS-020", Event(EventKind.ROUTE))
    record = store.get("PAYMENTS-020")
    wrong = Queue(settings.keys.queue("auth", "pm"), connection=connect(settings, decode=False))
    wrong.enqueue(
        STAGE_FUNCTION,
        story_id="PAYMENTS-020",
        domain="payments",
        role="pm",
        round_=0,
        attempt=1,
        job_id=record.job_id(Role.PM),
    )
    procs.worker("auth", "pm")

    wait_until(lambda: _intake_kinds(redis, settings).count("misrouted") == 1, message="the refusal")
    procs.team("payments")
    procs.supervisor()
    wait_for_state(store, "PAYMENTS-020", StoryState.DONE)

    auth_runs = [
        json.loads(x)
        for name in redis.smembers(settings.keys.workers())
        if name.startswith("auth")
        for x in redis.lrange(settings.keys.worker_log(name), 0, -1)
    ]
    assert auth_runs == []


def _intake_kinds(redis: Redis, settings: Settings) -> list[str]:
    return [fields["kind"] for _id, fields in redis.xrange(settings.keys.intake())]


def test_an_intake_message_that_can_never_apply_is_set_aside_and_routing_goes_on(
    procs: Processes, store: StoryStore, domains: Domains, redis: Redis, settings: Settings
) -> None:
    redis.xadd(
        settings.keys.intake(),
        {"kind": "result", "story": "AUTH-404", "role": "pm", "round": "0", "attempt": "1"},
    )
    redis.xadd(settings.keys.intake(), {"kind": "misrouted", "story": "AUTH-405", "role": "nope"})
    procs.team("auth")
    supervisor = procs.supervisor()
    store.enqueue([story("AUTH-406")], domains)

    wait_for_state(store, "AUTH-406", StoryState.DONE)

    assert supervisor.poll() is None
    assert [f["story"] for _id, f in redis.xrange(settings.keys.intake_dead())] == ["AUTH-405"]
