"""The response cache: exact match only, TTL, counters by provider and role, never an error."""

from __future__ import annotations

import time

import pytest
from conftest import with_llm
from redis import Redis
from servers.anthropic_server import AnthropicServer, Reply

from wavefleet.cli import main as wave
from wavefleet.config import Settings
from wavefleet.errors import ProviderError
from wavefleet.llm.cache import ResponseCache
from wavefleet.llm.client import LLMClient
from wavefleet.llm.types import LLMRequest, Message, TaskKind, ToolSpec

pytestmark = pytest.mark.timeout(10)
BASE = LLMRequest(
    task=TaskKind.PLANNING,
    system="plan well",
    messages=(Message.user("plan login"),),
    tools=(ToolSpec(name="finish"),),
    max_tokens=100,
)


def test_an_identical_request_is_answered_from_the_cache_at_no_cost(
    client: LLMClient, anthropic_server: AnthropicServer
) -> None:
    # Given one answered request
    first = client.call(BASE, role="pm")

    # When the identical request is made again
    second = client.call(BASE, role="pm")

    # Then the provider saw it once; the second reply is the same text, marked as a hit, free
    assert len(anthropic_server.requests) == 1
    assert second.cache_hit and not first.cache_hit
    assert second.text == first.text and second.cost_usd == 0.0 and first.cost_usd > 0


@pytest.mark.parametrize(
    "change",
    [
        {"messages": (Message.user("plan logout"),)},
        {"system": "plan badly"},
        {"tools": (ToolSpec(name="finish"), ToolSpec(name="read_file"))},
        {"tools": (ToolSpec(name="finish", description="done"),)},
        {"max_tokens": 101},
        {"temperature": 0.5},
        {"stop": ("END",)},
    ],
    ids=["messages", "system", "tools-added", "tool-changed", "max-tokens", "temperature", "stop"],
)
def test_any_change_to_the_request_misses(
    client: LLMClient, anthropic_server: AnthropicServer, change: dict[str, object]
) -> None:
    # Given one answered request
    client.call(BASE)

    # When a request differing in one field is made
    reply = client.call(BASE.model_copy(update=change))

    # Then it went to the provider
    assert not reply.cache_hit and len(anthropic_server.requests) == 2


def test_a_different_model_misses(live: Settings, redis: Redis, anthropic_server: AnthropicServer) -> None:
    # Given a reply cached for one model
    LLMClient(live, redis).call(BASE)

    # When the same request goes to another model
    opus = live.anthropic.model_copy(update={"model": "claude-opus-4-7"})
    other = live.model_copy(update={"anthropic": opus})
    reply = LLMClient(other, redis).call(BASE)

    # Then it is not served from the first model's entry
    assert not reply.cache_hit and [r["body"]["model"] for r in anthropic_server.requests] == [
        live.anthropic.model,
        "claude-opus-4-7",
    ]


def test_an_entry_expires_after_its_ttl(
    live: Settings, redis: Redis, anthropic_server: AnthropicServer
) -> None:
    # Given a cache TTL of one second
    client = LLMClient(with_llm(live, cache_ttl_s=1), redis)
    client.call(BASE)
    assert client.call(BASE).cache_hit

    # When the TTL passes
    time.sleep(1.1)

    # Then the same request goes to the provider again
    assert not client.call(BASE).cache_hit and len(anthropic_server.requests) == 2


def test_an_error_is_never_cached(client: LLMClient, anthropic_server: AnthropicServer) -> None:
    # Given both providers' first answers fail for this request
    anthropic_server.script(Reply(status=400))

    # When it fails, then is asked again
    with pytest.raises(ProviderError):
        client.call(BASE)
    reply = client.call(BASE)

    # Then the second call reached the provider and got a real answer
    assert not reply.cache_hit and len(anthropic_server.requests) == 2


def test_hits_and_misses_are_counted_by_provider_and_role(client: LLMClient) -> None:
    # Given calls from two roles, one repeated by the pm
    client.call(BASE, role="pm")
    client.call(BASE, role="pm")
    client.call(BASE.model_copy(update={"task": TaskKind.CTO_REVIEW}), role="cto")

    # When the stats are read
    stats = client.cache.stats()

    # Then the pm had one miss and one hit on anthropic; the cto one miss on xai
    assert stats.counts == {("anthropic", "pm"): (1, 1), ("xai", "cto"): (0, 1)}
    assert stats.entries == 2


def test_wave_cache_stats_and_clear(
    live: Settings,
    redis: Redis,
    client: LLMClient,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    # Given two cached replies
    client.call(BASE, role="pm")
    client.call(BASE, role="pm")
    client.call(BASE.model_copy(update={"system": "other"}), role="pm")
    monkeypatch.setenv("WAVE_REDIS__URL", live.redis.url)
    password = live.redis.password.get_secret_value() if live.redis.password else ""
    monkeypatch.setenv("WAVE_REDIS__PASSWORD", password)

    # When `wave cache stats`, `wave cache clear` and `wave cache stats` run
    codes = [wave(["cache", "stats"]), wave(["cache", "clear"]), wave(["cache", "stats"])]

    # Then stats show the hit rate and entries, clear removes the entries, counters stay
    out = capsys.readouterr().out
    assert codes == [0, 0, 0]
    assert "anthropic  pm              1        2     33.3%" in out
    assert "2 replies cached" in out and "cleared 2 cached replies" in out and "0 replies cached" in out
    assert ResponseCache(redis, live.keys, ttl_s=60).stats().hits == 1


def test_a_request_can_ask_for_a_fresh_answer_and_still_refreshes_the_cache(
    client: LLMClient, anthropic_server: AnthropicServer
) -> None:
    # Given a cached reply
    client.call(BASE)

    # When the same request is made twice without the cache, then once with it
    fresh = [client.call(BASE.model_copy(update={"use_cache": False})) for _ in range(2)]
    cached = client.call(BASE)

    # Then both fresh calls reached the provider, and the cache still answers the ordinary request
    assert not any(r.cache_hit for r in fresh) and len(anthropic_server.requests) == 3
    assert cached.cache_hit
