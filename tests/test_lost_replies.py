"""Writes whose reply never arrives: Redis ran them, the connection dropped before the answer came back.

This is what the Redis-kill recovery test ran into once in a few hundred runs: the supervisor's
transition landed, redis-py reported a WatchError, the retry judged the event "already applied" and
the next stage was never dispatched. Each write the fleet makes is checked here through a proxy
that loses exactly one reply from a real redis-server.
"""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest
from redis import Redis
from rq import Queue
from rq.job import Job
from servers.redis_proxy import ReplyLosingProxy

from wavefleet.batch import Batch
from wavefleet.budget import Budget, Scope
from wavefleet.config import BudgetSettings, Settings
from wavefleet.connection import connect
from wavefleet.domains import Domains
from wavefleet.embedded import EmbeddedRedis
from wavefleet.lifecycle import Event, EventKind, Role, StoryState
from wavefleet.llm.accounting import call_entry, record_call, story_calls
from wavefleet.llm.breaker import Breakers, BreakerState
from wavefleet.llm.types import LLMResponse, ProviderName, TaskKind, Usage
from wavefleet.money import NANO
from wavefleet.queues import Dispatcher
from wavefleet.store import StoryStore
from wavefleet.stories import Story
from wavefleet.supervisor import Supervisor
from workers.runtime import Runtime
from workers.worker import HaltGate, WaveQueue, WaveWorker

pytestmark = pytest.mark.timeout(30)


def story(story_id: str) -> Story:
    return Story(id=story_id, title=f"Story {story_id}")


@pytest.fixture
def proxy(redis_proc: EmbeddedRedis) -> Iterator[ReplyLosingProxy]:
    server = ReplyLosingProxy(redis_proc.port)
    yield server
    server.close()


@pytest.fixture
def lossy(settings: Settings, proxy: ReplyLosingProxy) -> Settings:
    """The test's settings with Redis reached through the proxy."""
    url = f"redis://127.0.0.1:{proxy.port}/0"
    return settings.model_copy(update={"redis": settings.redis.model_copy(update={"url": url})})


@pytest.fixture
def lossy_store(lossy: Settings) -> StoryStore:
    return StoryStore(connect(lossy), lossy.keys, lossy.pipeline.max_rounds)


def intake_messages(redis: Redis, settings: Settings, story_id: str) -> list[dict[str, str]]:
    return [f for _id, f in redis.xrange(settings.keys.intake()) if f.get("story") == story_id]


def test_a_transition_whose_reply_is_lost_returns_its_outcome_and_is_recorded_once(
    store: StoryStore, lossy_store: StoryStore, proxy: ReplyLosingProxy, domains: Domains
) -> None:
    store.enqueue([story("AUTH-001")], domains)

    proxy.lose_reply_to(b"EXEC")
    outcome = lossy_store.apply("AUTH-001", Event(EventKind.ROUTE))

    assert proxy.lost.is_set()
    # The caller gets the outcome (so it dispatches the PM stage), not "already routed"
    assert outcome.after.state is StoryState.PLANNING
    assert outcome.dispatch == (Role.PM,)
    assert [e["event"] for e in store.events("AUTH-001")] == ["enqueued", "route"]


def test_a_transition_whose_reply_is_lost_is_recognised_even_after_another_lands_on_the_story(
    store: StoryStore, lossy_store: StoryStore, proxy: ReplyLosingProxy, domains: Domains
) -> None:
    store.enqueue([story("AUTH-001")], domains)

    # An operator's cancel lands between our commit and our check
    proxy.lose_reply_to(b"EXEC", meanwhile=lambda: store.apply("AUTH-001", Event(EventKind.CANCEL)))
    outcome = lossy_store.apply("AUTH-001", Event(EventKind.ROUTE))

    assert (proxy.lost.is_set(), proxy.errors) == (True, [])
    assert outcome.after.state is StoryState.PLANNING  # ours, not a rejection
    assert [e["event"] for e in store.events("AUTH-001")] == ["enqueued", "route", "cancel"]


def test_an_enqueue_whose_reply_is_lost_succeeds_once(
    store: StoryStore,
    lossy_store: StoryStore,
    proxy: ReplyLosingProxy,
    domains: Domains,
    redis: Redis,
    settings: Settings,
) -> None:
    lossy_store.enqueue([story("AUTH-001")], domains)  # loads the script: the next call is one EVALSHA

    proxy.lose_reply_to(b"EVALSHA")
    lossy_store.enqueue([story("AUTH-002"), story("AUTH-003")], domains)  # not "already active"

    assert proxy.lost.is_set()
    for story_id in ("AUTH-002", "AUTH-003"):
        assert [e["event"] for e in store.events(story_id)] == ["enqueued"]
        assert intake_messages(redis, settings, story_id) == [{"kind": "route", "story": story_id}]


def test_a_dispatch_whose_reply_is_lost_puts_the_job_on_its_queue_once(
    store: StoryStore,
    lossy_store: StoryStore,
    lossy: Settings,
    proxy: ReplyLosingProxy,
    domains: Domains,
    settings: Settings,
) -> None:
    store.enqueue([story("AUTH-001")], domains)
    store.apply("AUTH-001", Event(EventKind.ROUTE))
    record = store.get("AUTH-001")
    dispatcher = Dispatcher(lossy, connect(lossy, decode=False), lossy_store)

    proxy.lose_reply_to(b"EXEC")
    dispatcher.ensure(record)
    dispatcher.ensure(record)  # and once more, as the supervisor's audit would

    assert proxy.lost.is_set()
    raw = connect(settings, decode=False)
    queue = Queue(settings.keys.queue("auth", "pm"), connection=raw)
    assert queue.get_job_ids() == [record.job_id(Role.PM)]


def test_a_budget_reservation_and_settlement_whose_replies_are_lost_count_once(
    lossy: Settings, proxy: ReplyLosingProxy, redis: Redis, settings: Settings
) -> None:
    budget = Budget(connect(lossy), lossy.keys, BudgetSettings())
    scope = Scope("story:AUTH-001", "story AUTH-001", NANO, 10**6)
    budget.settle(budget.reserve([scope], 100, 1), 100, 1, story=None)  # loads both scripts
    truth = Budget(redis, settings.keys, BudgetSettings())

    proxy.lose_reply_to(b"EVALSHA")
    reservation = budget.reserve([scope], 5_000, 50)
    assert proxy.lost.is_set()
    assert truth.use(scope.name).reserved_nusd == 5_000

    proxy.lose_reply_to(b"EVALSHA")
    budget.settle(reservation, 4_000, 40, story=None)
    assert proxy.lost.is_set()
    use = truth.use(scope.name)
    assert (use.spent_nusd, use.reserved_nusd, use.spent_tokens, use.calls) == (4_100, 0, 41, 2)


def test_the_supervisors_audit_dispatches_again_a_stage_whose_job_vanished(
    settings: Settings, store: StoryStore, redis: Redis, domains: Domains
) -> None:
    raw = connect(settings, decode=False)
    supervisor = Supervisor(settings, redis, raw, domains)
    store.enqueue([story("AUTH-001")], domains)
    supervisor.run_once()
    job_id = store.get("AUTH-001").job_id(Role.PM)
    Job.fetch(job_id, connection=raw).delete()  # gone from its queue, no result: the story would wait

    assert supervisor.audit() == 1
    assert Queue(settings.keys.queue("auth", "pm"), connection=raw).get_job_ids() == [job_id]
    assert supervisor.audit() == 0


def test_a_job_put_back_whose_reply_is_lost_is_on_its_queue_once(
    store: StoryStore, lossy: Settings, proxy: ReplyLosingProxy, domains: Domains, settings: Settings
) -> None:
    # Given a PM job a worker has just taken (in RQ's intermediate queue) while the fleet halts
    store.enqueue([story("AUTH-001")], domains)
    store.apply("AUTH-001", Event(EventKind.ROUTE))
    raw = connect(settings, decode=False)
    Dispatcher(settings, raw, store).ensure(store.get("AUTH-001"))
    queue = WaveQueue(settings.keys.queue("auth", "pm"), connection=connect(lossy, decode=False))
    job_id = raw.lmove(queue.key, queue.intermediate_queue_key)
    rt = Runtime(lossy, connect(lossy), store, domains.get("auth"), Role.PM, "AUTH-PM-1", "auth-pm-1.test")
    worker = WaveWorker(rt, queue, HaltGate(rt))

    # When the worker puts it back and the reply is lost (redis-py sends the transaction again)
    proxy.lose_reply_to(b"EXEC")
    worker._put_back(Job.fetch(job_id.decode(), connection=raw), queue)

    # Then it is at the front of its queue once, and gone from the intermediate queue
    assert proxy.lost.is_set()
    assert raw.lrange(queue.key, 0, -1) == [job_id]
    assert raw.lrange(queue.intermediate_queue_key, 0, -1) == []


def test_a_provider_failure_whose_reply_is_lost_counts_once(
    lossy: Settings, proxy: ReplyLosingProxy, redis: Redis, settings: Settings
) -> None:
    breakers = Breakers(connect(lossy), lossy.keys, threshold=3, cooldown_s=30, probe_ttl_s=5)
    assert breakers.failure("anthropic") == 1  # loads the script: the next call is one EVALSHA

    proxy.lose_reply_to(b"EVALSHA")
    count = breakers.failure("anthropic")

    # Two failures, not three: the breaker (threshold 3) is still closed
    assert proxy.lost.is_set()
    assert count == 2
    truth = Breakers(redis, settings.keys, threshold=3, cooldown_s=30, probe_ttl_s=5)
    assert truth.state("anthropic")[0] is BreakerState.CLOSED


def test_taking_the_probe_whose_reply_is_lost_still_makes_this_caller_the_probe(
    lossy: Settings, proxy: ReplyLosingProxy
) -> None:
    breakers = Breakers(connect(lossy), lossy.keys, threshold=1, cooldown_s=0.05, probe_ttl_s=30)
    breakers.failure("xai")  # open for 50 ms
    assert breakers.state("xai")[0] is BreakerState.OPEN  # and the state script is loaded
    time.sleep(0.1)

    proxy.lose_reply_to(b"EVALSHA")
    state, _ = breakers.state("xai")

    # Not "open": the probe lock is this caller's, and nobody else may probe for 30 s
    assert proxy.lost.is_set()
    assert state is BreakerState.PROBE


def test_a_settlement_resent_after_a_lost_reply_still_reports_the_alerts_it_crossed(
    lossy: Settings, proxy: ReplyLosingProxy
) -> None:
    budget = Budget(connect(lossy), lossy.keys, BudgetSettings())
    scope = Scope("story:AUTH-001", "story AUTH-001", 1_000, 10**6)
    budget.settle(budget.reserve([scope], 10, 1), 10, 1, story=None)  # loads both scripts; 1% spent
    reservation = budget.reserve([scope], 600, 1)

    proxy.lose_reply_to(b"EVALSHA")
    reply = budget.settle(reservation, 600, 1, story=None)  # 61%: past the 50% warning

    assert proxy.lost.is_set()
    assert [a.level for a in budget.alerts(reservation, reply, None)] == ["warning"]


def test_a_call_recorded_twice_by_a_resent_write_is_listed_once(
    lossy: Settings, proxy: ReplyLosingProxy, redis: Redis, settings: Settings
) -> None:
    batch = Batch(connect(lossy))
    response = LLMResponse(
        text="ok",
        provider=ProviderName.OFFLINE,
        model="offline-1",
        task=TaskKind.PLANNING,
        usage=Usage(input_tokens=10, output_tokens=5),
        cost_usd=0.0,
        latency_ms=1.0,
        offline=True,
    )
    record_call(batch, settings.keys, "AUTH-001", call_entry(response, role="pm"))

    proxy.lose_reply_to(b"XADD")
    batch.execute()

    assert proxy.lost.is_set()
    assert redis.xlen(settings.keys.story_llm_calls("AUTH-001")) == 2  # what the resend left behind
    assert len(story_calls(redis, settings.keys, "AUTH-001")) == 1


def test_a_budget_grant_whose_reply_is_lost_is_granted_once(
    lossy: Settings, proxy: ReplyLosingProxy, redis: Redis, settings: Settings
) -> None:
    budget = Budget(connect(lossy), lossy.keys, BudgetSettings())
    budget.grant("story:AUTH-001", usd=0.5)  # loads the script

    proxy.lose_reply_to(b"EVALSHA")
    budget.grant("story:AUTH-001", usd=0.25, tokens=1000)

    assert proxy.lost.is_set()
    use = Budget(redis, settings.keys, BudgetSettings()).use("story:AUTH-001")
    assert (use.grant_nusd, use.grant_tokens) == (int(0.75 * NANO), 1000)


def test_a_failure_whose_reply_is_lost_counts_once_even_if_another_worker_fails_meanwhile(
    lossy: Settings, proxy: ReplyLosingProxy, redis: Redis, settings: Settings
) -> None:
    breakers = Breakers(connect(lossy), lossy.keys, threshold=5, cooldown_s=30, probe_ttl_s=5)
    other_worker = Breakers(redis, settings.keys, threshold=5, cooldown_s=30, probe_ttl_s=5)
    breakers.failure("anthropic")  # loads the script

    proxy.lose_reply_to(b"EVALSHA", meanwhile=lambda: other_worker.failure("anthropic"))
    count = breakers.failure("anthropic")

    assert (proxy.lost.is_set(), proxy.errors) == (True, [])
    assert count == 3  # ours, the other worker's, ours again would make 4
