"""Model replies are hostile data: what the real SDKs decode from a scripted server must not crash
the client's bookkeeping (the cache, the story's call record) nor the stage.

ATTACK tests: each fails while its hole is open and passes once it is closed.
"""

from __future__ import annotations

import json

import pytest
from conftest import live_settings
from redis import Redis
from servers.anthropic_server import AnthropicServer
from servers.anthropic_server import Reply as HttpReply
from servers.xai_server import Reply as GrpcReply
from servers.xai_server import XaiServer

from wavefleet.config import Settings
from wavefleet.errors import LLMError
from wavefleet.llm.accounting import story_calls
from wavefleet.llm.client import LLMClient
from wavefleet.llm.types import LLMRequest, Message, TaskKind

pytestmark = pytest.mark.timeout(20)


def _message(text: str, calls: list[dict[str, object]]) -> bytes:
    content: list[dict[str, object]] = [{"type": "text", "text": text}]
    content += [{"type": "tool_use", "id": f"toolu_{i}", **c} for i, c in enumerate(calls)]
    body = {
        "id": "msg_1",
        "type": "message",
        "role": "assistant",
        "model": "claude",
        "content": content,
        "stop_reason": "tool_use" if calls else "end_turn",
        "stop_sequence": None,
        "usage": {"input_tokens": 10, "output_tokens": 10},
    }
    return json.dumps(body).encode()  # ensure_ascii: "\ud800" is sent as the escape, valid JSON


def test_attack_a_lone_surrogate_in_a_claude_reply_is_made_safe_not_a_crash(
    client: LLMClient, anthropic_server: AnthropicServer, redis: Redis, live: Settings
) -> None:
    # ATTACK: JSON may escape half a surrogate pair; the SDK decodes it into a str that no encoder takes
    calls = [{"name": "read_file", "input": {"path": "a\ud800.py"}}]
    anthropic_server.script(HttpReply(raw=_message("bad \ud800 text", calls)))
    request = LLMRequest(
        task=TaskKind.CODE_GENERATION, system="sys", messages=(Message.user("go"),), use_cache=True
    )
    response = client.for_story("AUTH-001", "auth", "be").call(request)
    assert response.text == "bad \ufffd text"
    assert response.tool_calls[0].arguments == {"path": "a\ufffd.py"}
    # And the call is on the story's record, as every call is
    assert len(story_calls(redis, live.keys, "AUTH-001")) == 1


def test_attack_a_lone_surrogate_in_grok_tool_arguments_is_made_safe_not_a_crash(
    client: LLMClient, xai_server: XaiServer
) -> None:
    xai_server.script(GrpcReply(text="", tool_calls=[("read_file", '{"path": "a\\ud800.py"}')]))
    request = LLMRequest(task=TaskKind.CTO_REVIEW, system="sys", messages=(Message.user("go"),))
    response = client.for_story("AUTH-001", "auth", "cto").call(request)
    assert response.tool_calls[0].arguments == {"path": "a\ufffd.py"}


def _nested(depth: int) -> str:
    return '{"path": ' + "[" * depth + "]" * depth + "}"


@pytest.mark.parametrize("depth", [500, 100_000])
def test_attack_grok_tool_arguments_nested_deep_are_an_invalid_call_not_a_crash(
    client: LLMClient, xai_server: XaiServer, depth: int
) -> None:
    # ATTACK: json.loads raises RecursionError (no ValueError) past ~1000 levels; under it, every
    # later walk of the arguments (the next request's JSON, the cache key) may
    xai_server.script(GrpcReply(text="", tool_calls=[("read_file", _nested(depth))]))
    request = LLMRequest(task=TaskKind.CTO_REVIEW, system="sys", messages=(Message.user("go"),))
    response = client.for_story("AUTH-001", "auth", "cto").call(request)
    assert response.tool_calls[0].arguments == {}
    assert response.tool_calls[0].invalid_arguments.startswith('{"path": [[[')


def test_attack_claude_tool_arguments_nested_deep_are_an_invalid_call_not_a_crash(
    client: LLMClient, anthropic_server: AnthropicServer
) -> None:
    body = _message("", []).replace(b'"content": [', b'"content": [' + _tool_use(500) + b", ")
    anthropic_server.script(HttpReply(raw=body))
    request = LLMRequest(task=TaskKind.CODE_GENERATION, system="sys", messages=(Message.user("go"),))
    response = client.for_story("AUTH-001", "auth", "be").call(request)
    assert response.tool_calls[0].arguments == {}
    assert "nested deeper than" in response.tool_calls[0].invalid_arguments


def test_attack_a_claude_reply_nested_past_the_json_decoder_is_a_malformed_reply_not_a_crash(
    settings: Settings, anthropic_server: AnthropicServer, redis: Redis
) -> None:
    client = LLMClient(live_settings(settings, anthropic_server, None), redis)
    body = _message("", []).replace(b'"content": [', b'"content": [' + _tool_use(100_000) + b", ")
    anthropic_server.script(HttpReply(raw=body))
    request = LLMRequest(task=TaskKind.CODE_GENERATION, system="sys", messages=(Message.user("go"),))
    with pytest.raises(LLMError, match="malformed reply"):
        client.for_story("AUTH-001", "auth", "be").call(request)


def _tool_use(depth: int) -> bytes:
    return (
        b'{"type": "tool_use", "id": "toolu_d", "name": "read_file", "input": '
        + _nested(depth).encode()
        + b"}"
    )
