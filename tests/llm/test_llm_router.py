"""Routing: the task-kind table, keys, offline only when configured, fallback after exactly 2 failures,
recovery after the cool-down through one probe (in one process here; across processes elsewhere)."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from conftest import live_settings, with_llm
from redis import Redis
from servers.anthropic_server import AnthropicServer
from servers.anthropic_server import Reply as HttpReply
from servers.xai_server import XaiServer
from structlog.testing import capture_logs

from wavefleet.config import Settings
from wavefleet.errors import ConfigError, NoProviderError, ProviderError
from wavefleet.llm.breaker import Breakers, BreakerState
from wavefleet.llm.client import LLMClient
from wavefleet.llm.types import LLMRequest, Message, ProviderName, TaskKind

pytestmark = pytest.mark.timeout(10)
GROK = {"constitutional_check", "cto_review", "safety_probe", "architecture_validation"}
CLAUDE = {"code_generation", "planning", "qa_analysis", "documentation"}


def ask(task: TaskKind | str = TaskKind.PLANNING, text: str = "hello") -> LLMRequest:
    return LLMRequest(task=TaskKind(task), messages=(Message.user(text),))


@pytest.mark.parametrize("task", sorted(GROK | CLAUDE))
def test_each_task_kind_goes_to_the_provider_the_issue_names(
    client: LLMClient, anthropic_server: AnthropicServer, xai_server: XaiServer, task: str
) -> None:
    # Given both providers keyed and healthy
    # When a call of this task kind is made
    reply = client.call(ask(task))

    # Then it went to Grok for judgement work and to Claude for building work, and nowhere else
    expected = ProviderName.XAI if task in GROK else ProviderName.ANTHROPIC
    assert reply.provider is expected and reply.fallback_from is None
    assert (len(xai_server.requests), len(anthropic_server.requests)) == ((1, 0) if task in GROK else (0, 1))


def test_a_provider_without_a_key_is_skipped(settings: Settings, redis: Redis, xai_server: XaiServer) -> None:
    # Given only the xAI key
    client = LLMClient(live_settings(settings, None, xai_server), redis)

    # When a planning call (Claude's) is made
    reply = client.call(ask(TaskKind.PLANNING))

    # Then Grok answers it, as configuration, not as a fallback
    assert reply.provider is ProviderName.XAI and reply.fallback_from is None


def test_without_any_key_auto_mode_answers_offline_and_says_so_in_the_result_and_the_log(
    settings: Settings, redis: Redis
) -> None:
    # Given no key and the default offline mode
    client = LLMClient(live_settings(settings, None, None, offline="auto"), redis)

    # When a call is made
    with capture_logs() as logs:
        reply = client.call(ask())

    # Then the offline provider answered, labelled offline in the result and in the log line
    assert reply.offline and reply.provider is ProviderName.OFFLINE and reply.label.startswith("OFFLINE")
    assert reply.text.startswith("[OFFLINE ")
    assert any("OFFLINE" in entry["event"] and entry["offline"] for entry in logs)


def test_without_any_key_and_offline_refused_the_call_fails_clearly(settings: Settings, redis: Redis) -> None:
    # Given no key and WAVE_LLM__OFFLINE=never
    client = LLMClient(live_settings(settings, None, None, offline="never"), redis)

    # When a call is made, then it is refused naming the settings to set
    with pytest.raises(NoProviderError, match="WAVE_ANTHROPIC__API_KEY"):
        client.call(ask())


def test_offline_always_never_calls_a_keyed_provider(
    settings: Settings, redis: Redis, anthropic_server: AnthropicServer, xai_server: XaiServer
) -> None:
    # Given keys but WAVE_LLM__OFFLINE=always
    client = LLMClient(live_settings(settings, anthropic_server, xai_server, offline="always"), redis)

    # When calls of both kinds are made
    replies = [client.call(ask(TaskKind.PLANNING)), client.call(ask(TaskKind.CTO_REVIEW))]

    # Then both are offline and no server saw a request
    assert all(r.offline for r in replies)
    assert not anthropic_server.requests and not xai_server.requests


def test_when_both_providers_fail_the_call_fails_and_never_falls_back_to_offline(
    client: LLMClient, anthropic_server: AnthropicServer, xai_server: XaiServer
) -> None:
    # Given both providers failing (offline is allowed as "auto", but keys are set)
    anthropic_server.script(HttpReply(status=500))
    import grpc  # noqa: PLC0415
    from servers.xai_server import Reply as GrpcReply  # noqa: PLC0415

    xai_server.script(GrpcReply(code=grpc.StatusCode.UNAVAILABLE))

    # When a call is made, then the last provider's error is raised: no silent offline reply
    with pytest.raises(ProviderError, match="xai: UNAVAILABLE"):
        client.call(ask())


def test_the_fleet_falls_back_after_exactly_two_consecutive_failures(
    client: LLMClient, anthropic_server: AnthropicServer, xai_server: XaiServer
) -> None:
    # Given Claude failing every call
    anthropic_server.script(*[HttpReply(status=529)] * 5)

    # When three planning calls are made
    replies = [client.call(ask(text=f"call {i}")) for i in range(3)]

    # Then the first two were tried on Claude and answered by Grok; the third went straight to Grok
    assert [r.provider for r in replies] == [ProviderName.XAI] * 3
    assert all(r.fallback_from is ProviderName.ANTHROPIC for r in replies)
    assert len(anthropic_server.requests) == 2
    assert client.breakers.state("anthropic")[0] is BreakerState.OPEN


def test_a_success_between_failures_resets_the_count(
    client: LLMClient, anthropic_server: AnthropicServer
) -> None:
    # Given failure, success, failure on Claude
    anthropic_server.script(HttpReply(status=500), HttpReply(), HttpReply(status=500))

    # When four calls are made
    for i in range(4):
        client.call(ask(text=f"call {i}"))

    # Then no two failures were consecutive: all four calls reached Claude
    assert len(anthropic_server.requests) == 4
    assert client.breakers.snapshot("anthropic")["failures"] == "0"


def test_a_request_the_provider_refuses_as_invalid_is_raised_and_does_not_count(
    client: LLMClient, anthropic_server: AnthropicServer, xai_server: XaiServer
) -> None:
    # Given Claude refusing the request itself (400)
    anthropic_server.script(HttpReply(status=400), HttpReply(status=400))

    # When two calls are made
    for _ in range(2):
        with pytest.raises(ProviderError, match="request refused"):
            client.call(ask())

    # Then neither was sent to Grok, and the breaker did not move
    assert not xai_server.requests
    assert client.breakers.snapshot("anthropic").get("failures", "0") == "0"


def test_after_the_cool_down_one_probe_success_closes_the_breaker(
    live: Settings, redis: Redis, anthropic_server: AnthropicServer
) -> None:
    # Given Claude's breaker opened by two failures, with a short cool-down
    client = LLMClient(with_llm(live, cooldown_s=0.3), redis)
    anthropic_server.script(HttpReply(status=500), HttpReply(status=500))
    client.call(ask(text="a"))
    client.call(ask(text="b"))
    assert client.call(ask(text="c")).provider is ProviderName.XAI  # open: Claude not tried

    # When the cool-down passes and calls go on
    time.sleep(0.35)
    probe = client.call(ask(text="d"))
    after = client.call(ask(text="e"))

    # Then the probe went to Claude, succeeded and closed the breaker for the next call
    assert probe.provider is ProviderName.ANTHROPIC and after.provider is ProviderName.ANTHROPIC
    assert client.breakers.state("anthropic")[0] is BreakerState.CLOSED


def test_a_failed_probe_opens_the_breaker_for_another_cool_down(
    live: Settings, redis: Redis, anthropic_server: AnthropicServer
) -> None:
    # Given an opened breaker whose cool-down has passed, and Claude still failing
    client = LLMClient(with_llm(live, cooldown_s=0.3), redis)
    anthropic_server.script(*[HttpReply(status=500)] * 3)
    client.call(ask(text="a"))
    client.call(ask(text="b"))
    time.sleep(0.35)

    # When the probe call is made, and another right after
    probe = client.call(ask(text="c"))
    next_call = client.call(ask(text="d"))

    # Then the probe reached Claude, failed, fell back to Grok, and the breaker is open again
    assert len(anthropic_server.requests) == 3
    assert probe.fallback_from is ProviderName.ANTHROPIC
    assert next_call.provider is ProviderName.XAI and len(anthropic_server.requests) == 3


def test_only_one_caller_gets_the_probe(redis: Redis, settings: Settings) -> None:
    # Given an opened breaker with a cool-down that has passed
    breakers = Breakers(redis, settings.keys, threshold=2, cooldown_s=0.05, probe_ttl_s=10)
    breakers.failure("anthropic")
    breakers.failure("anthropic")
    time.sleep(0.08)

    # When five callers ask for the state
    states = [breakers.state("anthropic")[0] for _ in range(5)]

    # Then exactly one is the probe; the rest still route elsewhere
    assert states.count(BreakerState.PROBE) == 1
    assert states.count(BreakerState.OPEN) == 4


def test_a_domain_can_route_a_task_kind_to_the_other_provider(
    live: Settings, redis: Redis, domains_dir: Path, xai_server: XaiServer
) -> None:
    # Given the auth domain routing planning to Grok in its domain.toml
    toml = domains_dir / "auth" / "domain.toml"
    toml.write_text(toml.read_text() + '\n[models.routes]\nplanning = "xai"\n')
    client = LLMClient(live, redis)

    # When auth and payments each make a planning call
    auth = client.call(ask(text="auth plan"), domain="auth")
    payments = client.call(ask(text="payments plan"), domain="payments")

    # Then auth's went to Grok and payments' to Claude
    assert auth.provider is ProviderName.XAI and payments.provider is ProviderName.ANTHROPIC


def test_settings_can_override_the_table_and_an_unknown_task_kind_fails_at_start(
    live: Settings, redis: Redis
) -> None:
    # Given WAVE_LLM__ROUTES sending cto_review to Claude
    routed = with_llm(live, routes={"cto_review": "anthropic"})

    # When a CTO review is made, then Claude answers it
    assert LLMClient(routed, redis).call(ask(TaskKind.CTO_REVIEW)).provider is ProviderName.ANTHROPIC

    # And a route for a task kind that does not exist is refused when the client is built
    wrong = with_llm(live, routes={"reviewing": "xai"})
    with pytest.raises(ConfigError, match="unknown task kind 'reviewing'"):
        LLMClient(wrong, redis)


def test_a_cached_reply_is_served_even_while_its_provider_is_failing_over(
    client: LLMClient, anthropic_server: AnthropicServer, xai_server: XaiServer
) -> None:
    # Given a planning reply in the cache, then Claude's breaker opened by two failures
    cached = client.call(ask(text="plan the login page"))
    anthropic_server.script(HttpReply(status=500), HttpReply(status=500))
    client.call(ask(text="a"))
    client.call(ask(text="b"))

    # When the cached request is made again
    reply = client.call(ask(text="plan the login page"))

    # Then the stored reply answers it: no provider is called, and it is not a fallback
    assert reply.cache_hit and reply.text == cached.text and reply.fallback_from is None
    assert len(anthropic_server.requests) == 3 and len(xai_server.requests) == 2
