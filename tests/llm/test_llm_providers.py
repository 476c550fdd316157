"""Providers are registered by name and the fallback order is a setting: a third provider is one class
plus its registration, and routing, fallback, breakers, prices and accounting reach it unchanged."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from conftest import live_settings, llm_env
from pydantic import BaseModel, SecretStr
from redis import Redis
from servers.anthropic_server import AnthropicServer
from servers.anthropic_server import Reply as HttpReply
from servers.xai_server import Reply as GrpcReply
from servers.xai_server import XaiServer
from test_llm_endpoints import assert_one_line_refusal, wave

from wavefleet.config import Settings
from wavefleet.errors import ExitCode, ProviderError, ProvidersFailingError
from wavefleet.llm.breaker import Breakers
from wavefleet.llm.client import LLMClient
from wavefleet.llm.registry import Registration, register, unregister
from wavefleet.llm.types import Completion, LLMRequest, Message, ProviderName, TaskKind, Usage

pytestmark = pytest.mark.timeout(20)
THIRD_KEY = "third-key"


class ThirdSettings(BaseModel):
    """The third provider's settings section."""

    api_key: SecretStr | None = None
    base_url: str
    model: str = "third-model-1"
    price_input_per_mtok_usd: float = 1.0
    price_output_per_mtok_usd: float = 2.0
    price_cache_read_per_mtok_usd: float = 0.1
    timeout_s: float = 2.0
    max_retries: int = 0


class PlainMessagesProvider:
    """The whole third provider: the Messages API over plain HTTP with the standard library, no SDK."""

    name = "third"

    def __init__(self, settings: ThirdSettings) -> None:
        self.model = settings.model
        self._settings = settings

    def complete(self, request: LLMRequest, max_tokens: int) -> Completion:
        body = {
            "model": self.model,
            "max_tokens": max_tokens,
            "messages": [{"role": m.role, "content": m.text} for m in request.messages],
        }
        key = self._settings.api_key.get_secret_value() if self._settings.api_key else ""
        sent = urllib.request.Request(  # noqa: S310 - an http URL from the test's own settings
            f"{self._settings.base_url}/v1/messages",
            data=json.dumps(body).encode(),
            headers={"x-api-key": key, "anthropic-version": "2023-06-01", "content-type": "application/json"},
        )
        try:
            with urllib.request.urlopen(sent, timeout=self._settings.timeout_s) as reply:  # noqa: S310 - as above
                message = json.load(reply)
        except (urllib.error.URLError, TimeoutError) as exc:
            raise ProviderError(self.name, f"failed: {exc}") from None
        usage = Usage(
            input_tokens=message["usage"]["input_tokens"], output_tokens=message["usage"]["output_tokens"]
        )
        text = "".join(b["text"] for b in message["content"] if b["type"] == "text")
        return Completion(text=text, stop_reason=message["stop_reason"], usage=usage)


@pytest.fixture
def third() -> Iterator[AnthropicServer]:
    """The third provider registered (its server is a second local Messages API), unregistered after."""
    server = AnthropicServer(api_key=THIRD_KEY).start()
    section = ThirdSettings(api_key=SecretStr(THIRD_KEY), base_url=server.url)
    register(
        Registration("third", PlainMessagesProvider, lambda s: section, key_variable="WAVE_THIRD__API_KEY")
    )
    yield server
    unregister("third")
    server.stop()


def ask(task: TaskKind = TaskKind.PLANNING) -> LLMRequest:
    return LLMRequest(task=task, messages=(Message.user("plan the login page"),))


def test_the_fallback_order_leads_past_two_failing_providers_to_a_registered_third(
    settings: Settings,
    redis: Redis,
    anthropic_server: AnthropicServer,
    xai_server: XaiServer,
    third: AnthropicServer,
) -> None:
    # Given Claude (routed) and Grok both failing, and the third provider last in the fallback order
    live = live_settings(settings, anthropic_server, xai_server, fallback_order=["anthropic", "xai", "third"])
    anthropic_server.script(HttpReply(status=500))
    xai_server.script(GrpcReply(code=grpc.StatusCode.UNAVAILABLE))

    # When a planning call is made
    reply = LLMClient(live, redis).call(ask())

    # Then each was tried once in order and the third answered, priced by its own settings section
    assert (len(anthropic_server.requests), len(xai_server.requests), len(third.requests)) == (1, 1, 1)
    assert reply.provider == "third" and reply.fallback_from is ProviderName.ANTHROPIC
    assert reply.text == "echo: plan the login page" and reply.label == "third third-model-1"
    assert reply.cost_usd == pytest.approx(
        (reply.usage.input_tokens * 1.0 + reply.usage.output_tokens * 2.0) / 1e6
    )
    # And both failures counted towards their own breakers, as for the built-in providers
    breakers = Breakers(redis, live.keys, threshold=2, cooldown_s=60.0, probe_ttl_s=10.0)
    assert [breakers.snapshot(p).get("failures") for p in ("anthropic", "xai")] == ["1", "1"]


def test_a_call_passes_every_open_breaker_in_the_order_and_is_refused_when_all_are_open(
    settings: Settings,
    redis: Redis,
    anthropic_server: AnthropicServer,
    xai_server: XaiServer,
    third: AnthropicServer,
) -> None:
    # Given Claude's and Grok's breakers open (2 failures each), the third last in the order
    live = live_settings(settings, anthropic_server, xai_server, fallback_order=["anthropic", "xai", "third"])
    client = LLMClient(live, redis)
    for name in ("anthropic", "xai", "anthropic", "xai"):
        client.breakers.failure(name)

    # When a planning call is made
    reply = client.call(ask())

    # Then neither open provider was sent anything and the third answered
    assert reply.provider == "third" and reply.fallback_from is ProviderName.ANTHROPIC
    assert (len(anthropic_server.requests), len(xai_server.requests), len(third.requests)) == (0, 0, 1)
    # And once the third's breaker is open too, the call is refused unsent (transient: retried later)
    client.breakers.failure("third")
    client.breakers.failure("third")
    with pytest.raises(ProvidersFailingError, match="every provider is failing"):
        client.call(LLMRequest(task=TaskKind.PLANNING, messages=(Message.user("again"),)))
    assert len(third.requests) == 1


def test_a_route_can_name_a_registered_third_provider(
    settings: Settings,
    redis: Redis,
    anthropic_server: AnthropicServer,
    xai_server: XaiServer,
    third: AnthropicServer,
) -> None:
    # Given WAVE_LLM__ROUTES sending planning to the third provider
    live = live_settings(settings, anthropic_server, xai_server, routes={"planning": "third"})

    # When a planning call is made
    reply = LLMClient(live, redis).call(ask())

    # Then the third answered it as its route, not as a fallback
    assert reply.provider == "third" and reply.fallback_from is None
    assert (len(anthropic_server.requests), len(third.requests)) == (0, 1)


def test_a_domain_file_can_route_a_task_kind_to_a_registered_third_provider(
    settings: Settings,
    redis: Redis,
    anthropic_server: AnthropicServer,
    xai_server: XaiServer,
    third: AnthropicServer,
) -> None:
    # Given the auth domain's domain.toml sending planning to the third provider
    toml = settings.domains_dir / "auth" / "domain.toml"
    toml.write_text(toml.read_text() + '\n[models.routes]\nplanning = "third"\n')
    client = LLMClient(live_settings(settings, anthropic_server, xai_server), redis)

    # When auth and payments each make a planning call
    auth = client.call(ask(), domain="auth")
    payments = client.call(ask(), domain="payments")

    # Then auth's went to the third provider by its route, payments' to Claude
    assert (auth.provider, auth.fallback_from, payments.provider) == ("third", None, ProviderName.ANTHROPIC)
    assert (len(anthropic_server.requests), len(third.requests)) == (1, 1)


def test_a_keyed_provider_left_out_of_the_fallback_order_is_never_a_fallback(
    settings: Settings, redis: Redis, anthropic_server: AnthropicServer, xai_server: XaiServer
) -> None:
    # Given both providers keyed but only Claude in the fallback order
    live = live_settings(settings, anthropic_server, xai_server, fallback_order=["anthropic"])
    anthropic_server.script(HttpReply(status=500))

    # When Claude fails a planning call
    with pytest.raises(ProviderError, match="HTTP 500"):
        LLMClient(live, redis).call(ask())

    # Then its failure is raised and Grok was never asked
    assert len(xai_server.requests) == 0


@pytest.mark.parametrize(
    ("variable", "value", "fragment"),
    [
        ("WAVE_LLM__FALLBACK_ORDER", '["anthropic", "mistral"]', "unknown provider 'mistral'"),
        ("WAVE_LLM__FALLBACK_ORDER", '["xai", "anthropic", "xai"]', "'xai' is listed twice"),
        ("WAVE_LLM__FALLBACK_ORDER", '["offline"]', "WAVE_LLM__OFFLINE"),
        ("WAVE_LLM__FALLBACK_ORDER", "xai", "not valid JSON"),
        ("WAVE_LLM__ROUTES", '{"planning": "mistral"}', "unknown provider 'mistral'"),
    ],
)
def test_a_fallback_order_or_route_naming_no_registered_provider_is_refused_at_start_up(
    settings: Settings, redis: Redis, tmp_path: Path, variable: str, value: str, fragment: str
) -> None:
    # Given a fleet whose settings name a provider that is not registered, twice, or offline
    env = {**llm_env(settings), variable: value}
    # When any command starts
    result = wave(env, "status", cwd=tmp_path)
    # Then it refuses with one line naming the variable and what is wrong, and wrote nothing
    assert_one_line_refusal(result, ExitCode.CONFIG, variable, fragment)
    assert redis.dbsize() == 0
