"""The real `xai-sdk` over gRPC against the local Chat service: replies, tool calls, usage, cost, codes."""

from __future__ import annotations

import grpc
import pytest
from servers.xai_server import Reply, XaiServer

from wavefleet.config import XaiSettings
from wavefleet.errors import ProviderError, ProviderRateLimitedError
from wavefleet.llm.types import LLMRequest, Message, TaskKind, ToolCall, ToolResult, ToolSpec
from wavefleet.llm.xai_provider import XaiProvider

pytestmark = pytest.mark.timeout(10)
LONG_SYSTEM = "You judge whether an agent's action is safe. " * 120
VERDICT = ToolSpec(
    name="verdict",
    description="the safety verdict",
    input_schema={"type": "object", "properties": {"score": {"type": "number"}}},
)


def provider(server: XaiServer, **overrides: object) -> XaiProvider:
    values = {
        "api_key": "test-xai-key",
        "api_host": server.host,
        "use_insecure_channel": True,
        "timeout_s": 0.5,
        "max_retries": 0,
        **overrides,
    }
    return XaiProvider(XaiSettings.model_validate(values))


def ask(text: str, **fields: object) -> LLMRequest:
    return LLMRequest.model_validate(
        {"task": TaskKind.CONSTITUTIONAL_CHECK, "messages": [Message.user(text)], **fields}
    )


def test_a_reply_comes_back_with_usage_and_the_services_own_cost(xai_server: XaiServer) -> None:
    # Given the provider pointed at the local Chat service
    grok = provider(xai_server)

    # When a prompt with a system prompt is sampled
    completion = grok.complete(ask("is rm -rf safe?", system="be strict"), 128)

    # Then text, usage and the cost the service reported (in USD ticks) arrive; the key went as a bearer
    assert completion.text == "echo: is rm -rf safe?"
    assert completion.usage.input_tokens > 0 and completion.usage.output_tokens > 0
    expected = (completion.usage.input_tokens * 3.0 + completion.usage.output_tokens * 15.0) / 1e6
    assert completion.reported_cost_usd == pytest.approx(expected, rel=1e-6)
    request = xai_server.requests[0]
    assert request["metadata"]["authorization"] == "Bearer test-xai-key"
    assert [m["role"] for m in request["body"]["messages"]] == ["ROLE_SYSTEM", "ROLE_USER"]
    assert request["body"]["max_tokens"] == 128


def test_tool_calls_are_parsed_and_tool_results_go_back_as_tool_messages(xai_server: XaiServer) -> None:
    # Given a scripted reply calling the verdict tool
    xai_server.script(Reply(text="", tool_calls=[("verdict", '{"score": 0.2}')]))
    grok = provider(xai_server)

    # When the call is answered in a second turn
    first = grok.complete(ask("judge", tools=[VERDICT]), 128)
    call = first.tool_calls[0]
    grok.complete(
        ask("judge", tools=[VERDICT]).model_copy(
            update={
                "messages": (
                    Message.user("judge"),
                    Message.assistant("", (call,)),
                    Message.results(ToolResult(tool_call_id=call.id, content="noted")),
                )
            }
        ),
        128,
    )

    # Then the call was parsed; the tools and the tool turn were sent as the service expects
    assert first.tool_calls == (ToolCall(id=call.id, name="verdict", arguments={"score": 0.2}),)
    assert first.stop_reason == "REASON_TOOL_CALLS"
    body = xai_server.requests[1]["body"]
    assert body["tools"][0]["function"]["name"] == "verdict"
    roles = [m["role"] for m in body["messages"]]
    assert roles == ["ROLE_USER", "ROLE_ASSISTANT", "ROLE_TOOL"]
    assert body["messages"][1]["tool_calls"][0]["id"] == call.id
    assert body["messages"][2]["tool_call_id"] == call.id


def test_a_repeated_prefix_is_reported_as_cached_prompt_tokens(xai_server: XaiServer) -> None:
    # Given the same long conversation prefix twice
    grok = provider(xai_server)
    history = (Message.user(LONG_SYSTEM), Message.assistant("understood"))

    # When two follow-ups are sent
    first = grok.complete(ask("x").model_copy(update={"messages": (*history, Message.user("one"))}), 64)
    second = grok.complete(ask("x").model_copy(update={"messages": (*history, Message.user("two"))}), 64)

    # Then the second call's prefix is read from the service's cache and billed lower
    assert first.usage.cache_read_tokens == 0
    assert second.usage.cache_read_tokens > 1000
    assert second.reported_cost_usd is not None and first.reported_cost_usd is not None
    assert second.reported_cost_usd < first.reported_cost_usd


@pytest.mark.parametrize(
    ("reply", "error", "counts", "says"),
    [
        (
            Reply(code=grpc.StatusCode.RESOURCE_EXHAUSTED, trailers=(("retry-after", "4"),)),
            ProviderRateLimitedError,
            True,
            "RESOURCE_EXHAUSTED",
        ),
        (Reply(code=grpc.StatusCode.UNAVAILABLE), ProviderError, True, "UNAVAILABLE"),
        (Reply(delay_s=1.5), ProviderError, True, "DEADLINE_EXCEEDED"),
        (Reply(code=grpc.StatusCode.INTERNAL), ProviderError, True, "INTERNAL"),
        (Reply(code=grpc.StatusCode.INVALID_ARGUMENT), ProviderError, False, "request refused"),
    ],
    ids=[
        "resource-exhausted",
        "unavailable",
        "deadline",
        "internal",
        "invalid-argument",
    ],
)
def test_every_grpc_failure_is_one_of_our_errors_saying_whether_it_is_the_providers_fault(
    xai_server: XaiServer, reply: Reply, error: type[ProviderError], counts: bool, says: str
) -> None:
    # Given a scripted failure
    xai_server.script(reply)

    # When a call meets it
    with pytest.raises(ProviderError) as raised:
        provider(xai_server).complete(ask("hello", tools=[VERDICT]), 64)

    # Then it is our error of the right class, counted (or not) towards fallback, with a clear message
    assert type(raised.value) is error
    assert raised.value.counts is counts
    assert says in str(raised.value) and str(raised.value).startswith("xai: ")


def test_resource_exhausted_carries_the_retry_after_trailer(xai_server: XaiServer) -> None:
    # Given RESOURCE_EXHAUSTED with a retry-after trailer
    xai_server.script(Reply(code=grpc.StatusCode.RESOURCE_EXHAUSTED, trailers=(("retry-after", "4"),)))

    # When the call fails
    with pytest.raises(ProviderRateLimitedError) as raised:
        provider(xai_server).complete(ask("hello"), 64)

    # Then the rate limiter will know how long to stay away
    assert raised.value.retry_after_s == 4.0


def test_max_retries_makes_the_sdk_retry_unavailable_as_configured(xai_server: XaiServer) -> None:
    # Given one UNAVAILABLE and a provider allowed one retry
    xai_server.script(Reply(code=grpc.StatusCode.UNAVAILABLE))

    # When a call is made
    completion = provider(xai_server, max_retries=1).complete(ask("hello"), 64)

    # Then the channel retried once and the call succeeded
    assert completion.text == "echo: hello"
    assert len(xai_server.requests) == 2


def test_a_wrong_key_is_refused_and_counts(xai_server: XaiServer) -> None:
    # Given a key the service does not know
    with pytest.raises(ProviderError) as raised:
        provider(xai_server, api_key="wrong").complete(ask("hello"), 64)

    # Then UNAUTHENTICATED is the provider's fault (the provider is unusable) and counts
    assert "UNAUTHENTICATED" in str(raised.value) and raised.value.counts
