"""The real `anthropic` SDK against the local Messages API: replies, tool use, prompt caching, errors."""

from __future__ import annotations

import pytest
from servers.anthropic_server import AnthropicServer, Reply

from wavefleet.config import AnthropicSettings
from wavefleet.errors import ProviderError, ProviderRateLimitedError
from wavefleet.llm.anthropic_provider import AnthropicProvider
from wavefleet.llm.pricing import Prices
from wavefleet.llm.types import LLMRequest, Message, TaskKind, ToolCall, ToolResult, ToolSpec

pytestmark = pytest.mark.timeout(10)
LONG_SYSTEM = "You are the planning agent of the auth team. " * 120  # ~1,400 tokens: cacheable
FINISH = ToolSpec(
    name="finish",
    description="end the task",
    input_schema={"type": "object", "properties": {"summary": {"type": "string"}}},
)


def provider(server: AnthropicServer, **overrides: object) -> AnthropicProvider:
    values = {
        "api_key": "test-anthropic-key",
        "base_url": server.url,
        "timeout_s": 0.5,
        "max_retries": 0,
        **overrides,
    }
    return AnthropicProvider(AnthropicSettings.model_validate(values))


def ask(text: str, **fields: object) -> LLMRequest:
    return LLMRequest.model_validate({"task": TaskKind.PLANNING, "messages": [Message.user(text)], **fields})


def test_a_text_reply_comes_back_with_usage_and_the_sdk_sends_its_real_headers(
    anthropic_server: AnthropicServer,
) -> None:
    # Given the provider pointed at the local Messages API
    claude = provider(anthropic_server)

    # When one prompt is sent
    completion = claude.complete(ask("plan the login page"), 256)

    # Then the reply and its token counts arrive, and the request carried the key and version headers
    assert completion.text == "echo: plan the login page"
    assert completion.usage.input_tokens > 0 and completion.usage.output_tokens > 0
    headers = anthropic_server.requests[0]["headers"]
    assert headers["authorization"] == "Bearer test-anthropic-key"
    assert headers["anthropic-version"]
    assert anthropic_server.requests[0]["body"]["max_tokens"] == 256


def test_tool_use_blocks_become_tool_calls_and_tool_results_go_back_as_tool_result_blocks(
    anthropic_server: AnthropicServer,
) -> None:
    # Given a scripted reply that calls the finish tool
    anthropic_server.script(Reply(text="", tool_use=[("finish", {"summary": "done"})]))
    claude = provider(anthropic_server)

    # When the model is asked, then its tool call is answered in a second turn
    first = claude.complete(ask("do it", tools=[FINISH]), 256)
    call = first.tool_calls[0]
    follow_up = ask("do it", tools=[FINISH]).model_copy(
        update={
            "messages": (
                Message.user("do it"),
                Message.assistant("", (call,)),
                Message.results(ToolResult(tool_call_id=call.id, content="ok")),
            )
        }
    )
    claude.complete(follow_up, 256)

    # Then the call was parsed, and the SDK sent tool_use and tool_result blocks with the same id
    assert first.tool_calls == (ToolCall(id=call.id, name="finish", arguments={"summary": "done"}),)
    assert first.stop_reason == "tool_use"
    sent = anthropic_server.requests[1]["body"]["messages"]
    assert sent[1]["content"][0] == {
        "type": "tool_use",
        "id": call.id,
        "name": "finish",
        "input": {"summary": "done"},
    }
    assert sent[2]["content"][0]["type"] == "tool_result"
    assert sent[2]["content"][0]["tool_use_id"] == call.id


def test_prompt_caching_marks_system_and_tools_and_the_second_call_reads_the_cache_for_less(
    anthropic_server: AnthropicServer,
) -> None:
    # Given a long system prompt and tools, sent twice with different questions
    claude = provider(anthropic_server)
    prices = Prices.of(AnthropicSettings())

    # When both calls are made
    first = claude.complete(ask("first question", system=LONG_SYSTEM, tools=[FINISH]), 64)
    second = claude.complete(ask("second question", system=LONG_SYSTEM, tools=[FINISH]), 64)

    # Then the breakpoints were sent, the first call wrote the cache and the second read it, cheaper
    body = anthropic_server.requests[0]["body"]
    assert body["system"][0]["cache_control"] == {"type": "ephemeral"}
    assert body["tools"][-1]["cache_control"] == {"type": "ephemeral"}
    assert first.usage.cache_write_tokens > 1000 and first.usage.cache_read_tokens == 0
    assert second.usage.cache_read_tokens == first.usage.cache_write_tokens
    assert prices.cost_usd(second.usage) < prices.cost_usd(first.usage) / 3


def test_prompt_caching_can_be_turned_off(anthropic_server: AnthropicServer) -> None:
    # Given caching disabled
    claude = provider(anthropic_server, prompt_caching=False)

    # When a call with system prompt and tools is made
    claude.complete(ask("q", system=LONG_SYSTEM, tools=[FINISH]), 64)

    # Then no block carries cache_control
    body = anthropic_server.requests[0]["body"]
    assert "cache_control" not in body["system"][0] and "cache_control" not in body["tools"][-1]


@pytest.mark.parametrize(
    ("reply", "error", "counts", "says"),
    [
        (
            Reply(status=429, headers={"retry-after": "7"}),
            ProviderRateLimitedError,
            True,
            "rate limited (429)",
        ),
        (Reply(status=529), ProviderError, True, "overloaded (529)"),
        (Reply(status=500), ProviderError, True, "HTTP 500"),
        (Reply(status=503), ProviderError, True, "HTTP 503"),
        (Reply(delay_s=1.5), ProviderError, True, "timed out"),
        (Reply(raw=b"<html>bad gateway</html>"), ProviderError, True, "malformed reply"),
        (Reply(raw=b'{"id": "msg_1"}'), ProviderError, True, "malformed reply"),
        (Reply(status=400), ProviderError, False, "request refused (400)"),
    ],
    ids=["429", "529", "500", "503", "timeout", "not-json", "missing-fields", "400"],
)
def test_every_failure_is_one_of_our_errors_saying_whether_it_is_the_providers_fault(
    anthropic_server: AnthropicServer, reply: Reply, error: type[ProviderError], counts: bool, says: str
) -> None:
    # Given a scripted failure
    anthropic_server.script(reply)

    # When a call meets it
    with pytest.raises(ProviderError) as raised:
        provider(anthropic_server).complete(ask("hello"), 64)

    # Then it is our error of the right class, counted (or not) towards fallback, with a clear message
    assert type(raised.value) is error
    assert raised.value.counts is counts
    assert says in str(raised.value) and str(raised.value).startswith("anthropic: ")


def test_a_429_carries_the_retry_after_the_provider_asked_for(anthropic_server: AnthropicServer) -> None:
    # Given a 429 with retry-after-ms
    anthropic_server.script(Reply(status=429, headers={"retry-after-ms": "1500"}))

    # When the call fails
    with pytest.raises(ProviderRateLimitedError) as raised:
        provider(anthropic_server).complete(ask("hello"), 64)

    # Then the pause is known to the rate limiter
    assert raised.value.retry_after_s == 1.5


def test_a_wrong_key_is_the_providers_fault_and_counts(anthropic_server: AnthropicServer) -> None:
    # Given a key the server does not know
    claude = provider(anthropic_server, api_key="wrong")

    # When a call is made
    with pytest.raises(ProviderError) as raised:
        claude.complete(ask("hello"), 64)

    # Then it fails as HTTP 401 and counts towards fallback (a bad key makes the provider unusable)
    assert "HTTP 401" in str(raised.value) and raised.value.counts
