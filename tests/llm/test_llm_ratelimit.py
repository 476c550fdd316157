"""Fleet-wide token buckets per provider: requests/min and tokens/min, bounded waits, 429 feedback."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from conftest import with_llm
from redis import Redis
from servers.anthropic_server import AnthropicServer, Reply

from wavefleet.config import Settings
from wavefleet.domains import Domains
from wavefleet.errors import BudgetExceededError, RateLimitedError
from wavefleet.llm.client import LLMClient
from wavefleet.llm.ratelimit import Limit, RateLimiter
from wavefleet.llm.types import LLMRequest, Message, ProviderName, TaskKind
from wavefleet.store import StoryStore
from wavefleet.stories import Story

pytestmark = pytest.mark.timeout(10)


def limiter(redis: Redis, settings: Settings, rpm: int = 0, tpm: int = 0, wait_s: float = 0.0) -> RateLimiter:
    return RateLimiter(redis, settings.keys, {"anthropic": Limit(rpm, tpm)}, max_wait_s=wait_s)


def test_a_full_minute_of_requests_is_admitted_then_the_next_fails_clearly(
    redis: Redis, settings: Settings
) -> None:
    # Given 3 requests per minute and no waiting allowed
    bucket = limiter(redis, settings, rpm=3)

    # When four calls ask in a row
    for _ in range(3):
        bucket.acquire("anthropic", 10)

    # Then the fourth is refused, saying how long it would have had to wait
    with pytest.raises(RateLimitedError, match=r"anthropic: over the fleet's rate limit \(3 requests/min"):
        bucket.acquire("anthropic", 10)


def test_the_bucket_is_shared_by_every_client_of_the_fleet(redis: Redis, settings: Settings) -> None:
    # Given two limiters (two workers) on the same Redis, 2 requests per minute
    one, two = limiter(redis, settings, rpm=2), limiter(redis, settings, rpm=2)

    # When each takes one
    one.acquire("anthropic", 1)
    two.acquire("anthropic", 1)

    # Then neither has any left
    with pytest.raises(RateLimitedError):
        one.acquire("anthropic", 1)


def test_a_caller_over_the_limit_waits_for_the_refill_within_the_bound(
    redis: Redis, settings: Settings
) -> None:
    # Given 6,000 tokens per minute (100 per second), all taken, and waits of up to 1 s allowed
    bucket = limiter(redis, settings, tpm=6000, wait_s=1.0)
    bucket.acquire("anthropic", 6000)

    # When a call of 20 tokens asks
    started = time.monotonic()
    waited = bucket.acquire("anthropic", 20)

    # Then it waited about the 200 ms the bucket needs to refill 20 tokens, then went
    assert 0.1 < waited < 0.45 and time.monotonic() - started < 0.5


def test_tokens_per_minute_limit_like_requests(redis: Redis, settings: Settings) -> None:
    # Given 1,000 tokens per minute
    bucket = limiter(redis, settings, tpm=1000)

    # When 900 are taken, then 200 more do not fit, and a call larger than a minute's worth never can
    bucket.acquire("anthropic", 900)
    with pytest.raises(RateLimitedError, match="tokens/min"):
        bucket.acquire("anthropic", 200)
    with pytest.raises(RateLimitedError, match="can never fit"):
        bucket.acquire("anthropic", 1001)


def test_settling_gives_back_tokens_the_estimate_overtook(redis: Redis, settings: Settings) -> None:
    # Given 1,000 tokens per minute, 900 taken by an estimate
    bucket = limiter(redis, settings, tpm=1000)
    bucket.acquire("anthropic", 900)

    # When the call really used 100
    bucket.settle("anthropic", 900, 100)

    # Then 800 more fit at once
    bucket.acquire("anthropic", 800)


def test_a_provider_429_stops_the_whole_fleet_calling_it_for_its_retry_after(
    live: Settings, redis: Redis, anthropic_server: AnthropicServer
) -> None:
    # Given Claude answering 429 with retry-after 30 s, and a client allowed to wait 1 s
    settings = with_llm(live, rate_wait_max_s=1.0)
    client = LLMClient(settings, redis)
    anthropic_server.script(Reply(status=429, headers={"retry-after": "30"}))
    request = LLMRequest(task=TaskKind.PLANNING, messages=(Message.user("hello"),))
    first = client.call(request)

    # When another worker asks Claude directly through the limiter
    other = LLMClient(settings, redis)

    # Then the 429'd call fell back to Grok, and Claude is blocked fleet-wide beyond the wait bound
    assert first.provider is ProviderName.XAI and first.fallback_from is ProviderName.ANTHROPIC
    with pytest.raises(RateLimitedError, match="would wait"):
        other.limiter.acquire("anthropic", 10)
    assert len(anthropic_server.requests) == 1


def test_a_call_the_budget_refuses_gives_its_rate_limit_slot_back(
    live: Settings, redis: Redis, domains_dir: Path, store: StoryStore, domains: Domains
) -> None:
    # Given one request per minute for Claude, and an auth story whose budget cannot pay for a call
    toml = domains_dir / "auth" / "domain.toml"
    toml.write_text(toml.read_text().replace("story_usd = 5.0", "story_usd = 0.000001"))
    store.enqueue([Story(id="AUTH-001", title="t")], domains)
    client = LLMClient(with_llm(live, anthropic_requests_per_min=1), redis)
    request = LLMRequest(task=TaskKind.PLANNING, messages=(Message.user("hello"),))

    # When the refused story calls, then another caller does
    with pytest.raises(BudgetExceededError):
        client.call(request, story="AUTH-001")
    reply = client.call(request)

    # Then the refused call did not use up the one request of the minute
    assert reply.provider is ProviderName.ANTHROPIC
