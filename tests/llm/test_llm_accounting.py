"""Every call is recorded on its story (tokens, cost, provider, model, latency, cache hit, offline), and the
offline provider is deterministic and labelled."""

from __future__ import annotations

import pytest
from redis import Redis

from wavefleet.config import Settings
from wavefleet.domains import Domains
from wavefleet.keys import Keys
from wavefleet.llm.accounting import CallTotals, format_call, story_calls
from wavefleet.llm.client import LLMClient
from wavefleet.llm.offline import OfflineProvider
from wavefleet.llm.types import LLMRequest, Message, TaskKind
from wavefleet.store import StoryStore
from wavefleet.stories import Story

pytestmark = pytest.mark.timeout(10)
PLAN = LLMRequest(task=TaskKind.PLANNING, messages=(Message.user("plan the login page"),))


def test_each_call_is_recorded_on_the_story_and_its_cost_added_to_the_story(
    client: LLMClient, redis: Redis, settings: Settings, store: StoryStore, domains: Domains
) -> None:
    # Given a story and its PM's bound client
    store.enqueue([Story(id="AUTH-001", title="login")], domains)
    pm = client.for_story("AUTH-001", "auth", "pm")

    # When the PM makes a call, repeats it (a cache hit) and makes a review call
    replies = [pm.call(PLAN), pm.call(PLAN), pm.call(PLAN.model_copy(update={"task": TaskKind.CTO_REVIEW}))]

    # Then three calls are recorded with their provider, model, tokens, cost, latency and cache flag
    calls = story_calls(redis, settings.keys, "AUTH-001")
    assert [(c["provider"], c["cache_hit"], c["role"]) for c in calls] == [
        ("anthropic", "0", "pm"),
        ("anthropic", "1", "pm"),
        ("xai", "0", "pm"),
    ]
    assert float(calls[0]["cost_usd"]) == pytest.approx(replies[0].cost_usd)
    assert int(calls[0]["input_tokens"]) == replies[0].usage.input_tokens
    assert float(calls[0]["latency_ms"]) > 0
    # And the story's cost is what was paid (the hit was free), as `wave status` shows it
    assert store.get("AUTH-001").cost_usd == pytest.approx(replies[0].cost_usd + replies[2].cost_usd)
    totals = CallTotals.of(calls)
    assert (totals.calls, totals.cache_hits) == (3, 1)
    assert "anthropic claude-sonnet-4-6" in format_call(calls[0]) and "cache-hit" in format_call(calls[1])


def test_a_call_for_an_unknown_story_prefix_is_refused_before_anything_is_spent(client: LLMClient) -> None:
    # Given / When a call names a story whose prefix is no domain's
    from wavefleet.errors import InvalidInputError  # noqa: PLC0415

    with pytest.raises(InvalidInputError, match="no domain has prefix"):
        client.call(PLAN, story="NOPE-001")


def test_the_offline_provider_is_deterministic_and_labelled(settings: Settings, redis: Redis) -> None:
    # Given the offline provider
    offline = OfflineProvider()

    # When the same request is answered twice, and a different one once
    a, b = offline.complete(PLAN, 100), offline.complete(PLAN, 100)
    c = offline.complete(PLAN.model_copy(update={"messages": (Message.user("other"),)}), 100)

    # Then the same request gets the same reply, a different one differs, and both say OFFLINE
    assert a == b and a.text != c.text
    assert a.text.startswith("[OFFLINE ") and a.reported_cost_usd == 0.0


def test_offline_calls_are_recorded_as_offline_on_the_story(
    settings: Settings, redis: Redis, store: StoryStore, domains: Domains
) -> None:
    # Given a fleet with no keys (offline "auto") and a story
    store.enqueue([Story(id="PAYMENTS-001", title="refunds")], domains)
    client = LLMClient(settings, redis)

    # When its QA agent calls
    reply = client.for_story("PAYMENTS-001", "payments", "qa").call(PLAN)

    # Then the call is recorded, flagged offline, at no cost
    entry = story_calls(redis, Keys(settings.redis.key_prefix), "PAYMENTS-001")[0]
    assert reply.offline and entry["offline"] == "1" and entry["provider"] == "offline"
    assert float(entry["cost_usd"]) == 0.0 and "OFFLINE" in format_call(entry)
