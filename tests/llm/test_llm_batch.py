"""A finished call's writes go out in one round trip and survive Redis forgetting its scripts."""

from __future__ import annotations

import pytest
from redis import Redis

from wavefleet.batch import Batch
from wavefleet.config import Settings
from wavefleet.domains import Domains
from wavefleet.llm.accounting import story_calls
from wavefleet.llm.client import LLMClient
from wavefleet.llm.types import LLMRequest, Message, TaskKind
from wavefleet.store import StoryStore
from wavefleet.stories import Story

pytestmark = pytest.mark.timeout(10)


def test_a_batch_reruns_only_the_scripts_redis_forgot(redis: Redis) -> None:
    # Given a script Redis does not know (its cache was flushed) queued with a plain command
    counter = redis.register_script("return redis.call('INCR', KEYS[1])")
    redis.script_flush()
    batch = Batch(redis)
    first = batch.script(counter, ["n"], [])
    second = batch.command("rpush", "log", "x")

    # When the batch runs
    results = batch.execute()

    # Then the script ran exactly once (loaded and rerun) and the plain command ran exactly once
    assert results[first] == 1 and results[second] == 1
    assert redis.get("n") == "1" and redis.llen("log") == 1


def test_a_call_after_a_script_flush_is_accounted_once(
    client: LLMClient, redis: Redis, settings: Settings, store: StoryStore, domains: Domains
) -> None:
    # Given a story, and a Redis that lost its scripts after the client was built
    store.enqueue([Story(id="AUTH-001", title="t")], domains)
    request = LLMRequest(task=TaskKind.PLANNING, messages=(Message.user("plan"),))
    client.call(request, story="AUTH-001")
    redis.script_flush()

    # When another call is made
    reply = client.call(request.model_copy(update={"messages": (Message.user("again"),)}), story="AUTH-001")

    # Then it succeeded and both calls are recorded once each, with their spend
    assert not reply.cache_hit
    assert len(story_calls(redis, settings.keys, "AUTH-001")) == 2
    assert redis.hget(settings.keys.story("AUTH-001"), "llm_calls") == "2"
