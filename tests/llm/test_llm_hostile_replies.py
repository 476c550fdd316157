"""Model replies are hostile data: what the real SDKs decode from a scripted server must not crash
the client's bookkeeping (the cache, the story's call record) nor the stage.

ATTACK tests: each fails while its hole is open and passes once it is closed.
"""

from __future__ import annotations

import json

import pytest
from redis import Redis
from servers.anthropic_server import AnthropicServer
from servers.anthropic_server import Reply as HttpReply
from servers.xai_server import Reply as GrpcReply
from servers.xai_server import XaiServer

from wavefleet.config import Settings
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
