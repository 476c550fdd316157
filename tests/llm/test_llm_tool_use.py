"""A tool loop's round trip through the router and both real SDKs: an assistant turn of several tool
calls, a user turn of their results (one an error), and what each service really receives and returns,
prompt caching included."""

from __future__ import annotations

import json
from typing import Any

import pytest
from redis import Redis
from servers.anthropic_server import AnthropicServer
from servers.anthropic_server import Reply as HttpReply
from servers.xai_server import Reply as GrpcReply
from servers.xai_server import XaiServer

from wavefleet.config import Settings
from wavefleet.llm.client import LLMClient
from wavefleet.llm.types import LLMRequest, LLMResponse, Message, TaskKind, ToolCall, ToolResult, ToolSpec

pytestmark = pytest.mark.timeout(10)
SYSTEM = "You are the backend developer of the auth team; work only through your tools. " * 80
TOOLS = (
    ToolSpec(
        name="read_file",
        description="read a file of the worktree",
        input_schema={"type": "object", "properties": {"path": {"type": "string"}}, "required": ["path"]},
    ),
    ToolSpec(
        name="run",
        description="run a command in the sandbox",
        input_schema={
            "type": "object",
            "properties": {"argv": {"type": "array", "items": {"type": "string"}}},
        },
    ),
    ToolSpec(name="finish", description="end the stage with its result"),
)
CALLS = (
    ToolCall(id="call_read", name="read_file", arguments={"path": "auth/login.py"}),
    ToolCall(id="call_run", name="run", arguments={"argv": ["pytest", "-q"]}),
)
RESULTS = (
    ToolResult(tool_call_id="call_read", content="def login(user): ..."),
    ToolResult(tool_call_id="call_run", content="1 failed: test_login_rejects_empty", is_error=True),
)


def conversation(task: TaskKind) -> LLMRequest:
    """Turn 3 of a tool loop: the model called two tools at once (with a blank text, as models do)."""
    messages = (Message.user("Fix the login bug."), Message.assistant("\n", CALLS), Message.results(*RESULTS))
    return LLMRequest(task=task, system=SYSTEM, tools=TOOLS, messages=messages, use_cache=False)


def twice(client: LLMClient, task: TaskKind) -> tuple[LLMResponse, LLMResponse]:
    """The same turn sent twice, as a loop's next call shares its system prompt and tools."""
    return client.call(conversation(task)), client.call(conversation(task))


def test_anthropic_receives_tool_use_and_tool_result_blocks_and_caches_system_and_tools(
    client: LLMClient, anthropic_server: AnthropicServer
) -> None:
    # Given Claude answering with two tool calls
    calls = [("edit_file", {"path": "auth/login.py", "old": "...", "new": "pass"}), ("finish", {})]
    anthropic_server.script(HttpReply(text="", tool_use=calls), HttpReply(text="", tool_use=calls))

    # When the loop's turn is sent twice through the router
    first, second = twice(client, TaskKind.CODE_GENERATION)

    # Then the service got its real shapes: blocks per call and per result, is_error, no blank text
    body = anthropic_server.requests[0]["body"]
    assert body["system"] == [{"type": "text", "text": SYSTEM, "cache_control": {"type": "ephemeral"}}]
    assert [t.get("cache_control") for t in body["tools"]] == [None, None, {"type": "ephemeral"}]
    assert body["tools"][0] == {
        "name": "read_file",
        "description": "read a file of the worktree",
        "input_schema": TOOLS[0].input_schema,
    }
    assert body["messages"][1:] == [
        {
            "role": "assistant",
            "content": [
                {"type": "tool_use", "id": c.id, "name": c.name, "input": c.arguments} for c in CALLS
            ],
        },
        {
            "role": "user",
            "content": [
                {
                    "type": "tool_result",
                    "tool_use_id": r.tool_call_id,
                    "content": r.content,
                    "is_error": r.is_error,
                }
                for r in RESULTS
            ],
        },
    ]
    # And our calls and usage came back; the second call read the cached system and tools
    assert [(c.name, c.arguments) for c in first.tool_calls] == calls
    assert first.tool_calls[0].id != first.tool_calls[1].id and first.stop_reason == "tool_use"
    assert first.usage.cache_write_tokens > 1000 and first.usage.cache_read_tokens == 0
    assert second.usage.cache_read_tokens == first.usage.cache_write_tokens
    assert second.usage.input_tokens == first.usage.input_tokens and second.cost_usd < first.cost_usd


def test_xai_receives_tool_messages_with_call_ids_and_typed_tool_calls_and_reports_cached_tokens(
    client: LLMClient, xai_server: XaiServer
) -> None:
    # Given Grok answering with two tool calls
    calls = [("read_file", '{"path": "auth/session.py"}'), ("finish", '{"decision": "GO"}')]
    xai_server.script(GrpcReply(text="", tool_calls=calls), GrpcReply(text="", tool_calls=calls))

    # When the loop's turn is sent twice through the router
    first, second = twice(client, TaskKind.CTO_REVIEW)

    # Then the service got its real shapes: the assistant's typed calls, one tool message per result
    body = xai_server.requests[0]["body"]
    assert body["messages"][0] == {"role": "ROLE_SYSTEM", "content": [{"text": SYSTEM}]}
    assert body["messages"][2] == {
        "role": "ROLE_ASSISTANT",
        "content": [{"text": "\n"}],  # as the SDK itself replays a reply
        "tool_calls": [
            {
                "id": c.id,
                "type": "TOOL_CALL_TYPE_CLIENT_SIDE_TOOL",
                "function": {"name": c.name, "arguments": json.dumps(c.arguments)},
            }
            for c in CALLS
        ],
    }
    assert body["messages"][3:] == [
        {"role": "ROLE_TOOL", "content": [{"text": "def login(user): ..."}], "tool_call_id": "call_read"},
        {
            "role": "ROLE_TOOL",
            "content": [{"text": "ERROR: 1 failed: test_login_rejects_empty"}],
            "tool_call_id": "call_run",
        },
    ]
    assert [_function(t) for t in body["tools"]] == [(t.name, t.description, t.input_schema) for t in TOOLS]
    # And our calls, usage and the service's cost came back; the second call's prefix was cached
    assert [(c.name, c.arguments) for c in first.tool_calls] == [(n, json.loads(a)) for n, a in calls]
    assert first.stop_reason == "REASON_TOOL_CALLS" and first.usage.cache_read_tokens == 0
    assert second.usage.cache_read_tokens > 1000 and second.cost_usd < first.cost_usd


def _function(tool: dict[str, Any]) -> tuple[str, str, dict[str, Any]]:
    function = tool["function"]
    return function["name"], function.get("description", ""), json.loads(function["parameters"])


def test_a_blank_assistant_text_is_never_sent_to_anthropic_as_a_text_block(
    live: Settings, redis: Redis, anthropic_server: AnthropicServer
) -> None:
    # Given a turn whose assistant text is only whitespace and that made no tool call
    messages = (Message.user("plan it"), Message.assistant(" \n "), Message.user("go on"))
    request = LLMRequest(task=TaskKind.PLANNING, messages=messages)

    # When it is sent
    LLMClient(live, redis).call(request)

    # Then neither a blank text block nor an empty turn went out (the API refuses both; it joins the
    # two user turns left as one)
    sent = anthropic_server.requests[0]["body"]["messages"]
    assert [(m["role"], [b["text"] for b in m["content"]]) for m in sent] == [
        ("user", ["plan it"]),
        ("user", ["go on"]),
    ]


def test_a_stages_calls_to_xai_share_one_conversation_id_so_they_reach_the_same_cache(
    client: LLMClient, xai_server: XaiServer
) -> None:
    # Given the CTO's and the QA's stages of one story, and a call made outside any story
    cto, qa = client.for_story("AUTH-001", "auth", "cto"), client.for_story("AUTH-001", "auth", "qa")

    # When the CTO calls Grok twice, QA once, and the bare client once
    for llm in (cto, cto, qa):
        llm.call(conversation(TaskKind.CTO_REVIEW))
    client.call(conversation(TaskKind.CTO_REVIEW))

    # Then each stage's calls carried its own stable x-grok-conv-id (a digest, not the story's name),
    # and the call with no key carried none
    sent = [r["metadata"].get("x-grok-conv-id") for r in xai_server.requests]
    assert sent[0] == sent[1] == cto.cache_key and sent[2] == qa.cache_key and sent[3] is None
    assert cto.cache_key != qa.cache_key and "AUTH" not in cto.cache_key


@pytest.mark.parametrize("arguments", ['{"path": "auth/lo', "[1, 2]", "null"])
def test_tool_arguments_from_grok_that_are_not_a_json_object_reach_the_loop_as_such_and_blame_no_provider(
    client: LLMClient, xai_server: XaiServer, anthropic_server: AnthropicServer, arguments: str
) -> None:
    # Given Grok calling a tool with arguments cut short or of the wrong shape (model output: data)
    xai_server.script(GrpcReply(text="", tool_calls=[("read_file", arguments)]))

    # When the call is made
    reply = client.call(conversation(TaskKind.CTO_REVIEW))

    # Then the call comes back with the text kept aside for the loop to answer with an error result,
    # and neither the xAI breaker nor a fallback to Claude was involved
    (call,) = reply.tool_calls
    assert (call.name, call.arguments, call.invalid_arguments) == ("read_file", {}, arguments)
    assert reply.provider == "xai" and reply.fallback_from is None and not anthropic_server.requests
    assert client.breakers.snapshot("xai").get("failures", "0") == "0"
