"""The tool loop on the real LLM client and SDKs against the local servers: tools run in the jailed
worktree and the sandbox, results go back to the model, `finish` returns the typed output."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from agentkit import (
    STORY,
    Done,
    anthropic_script,
    assistant_turns,
    git_tree,
    stage_context,
    tool_results,
)
from redis import Redis
from servers.anthropic_server import AnthropicServer
from servers.xai_server import Reply as XaiReply
from servers.xai_server import XaiServer

from wavefleet.config import Settings
from wavefleet.domains import Domains
from wavefleet.errors import HoldStory
from wavefleet.llm.accounting import story_calls
from wavefleet.llm.client import LLMClient
from wavefleet.llm.types import LLMRequest, LLMResponse, TaskKind, ToolCall, ToolResult
from wavefleet.store import StoryStore
from workers.agent.context import GateDecision, Verdict
from workers.agent.loop import NUDGE, ToolLoop
from workers.agent.middleware import Middleware
from workers.agent.tools import file_tools, run_tool
from workers.roles import StageInput

pytestmark = pytest.mark.timeout(60)
SYSTEM = "You are the backend developer of the auth team. " + "Keep every change small and tested. " * 150
APP = "def login(user):\n    return False\n"


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    return git_tree(tmp_path / "tree", {"app.py": APP, "README.md": "# auth\n"})


def loop_for(ctx: Any, tree: Path, task: TaskKind = TaskKind.CODE_GENERATION) -> ToolLoop[Done]:
    tools = [*file_tools(tree, ctx.limits), run_tool(ctx.sandbox, tree, ctx.limits)]
    return ToolLoop(ctx, tools, Done, task)


def test_a_scripted_model_reads_edits_runs_in_the_sandbox_and_finishes_with_its_typed_output(
    live: Settings,
    client: LLMClient,
    store: StoryStore,
    domains: Domains,
    redis: Redis,
    tree: Path,
    anthropic_server: AnthropicServer,
) -> None:
    # Given a model scripted to list, read, edit, run a command and finish
    anthropic_server.respond_with(
        anthropic_script(
            [
                [("list_files", {})],
                [("read_file", {"path": "app.py"})],
                [("edit_file", {"path": "app.py", "old_text": "False", "new_text": "user == 'ada'"})],
                [("run", {"command": "cat app.py; echo in=$PWD; exit 3"})],
                [("finish", {"summary": "login checks the user", "files": ["app.py"]})],
            ]
        )
    )
    ctx = stage_context(live, client, store, domains, tree)

    # When the loop runs
    done = loop_for(ctx, tree).run(SYSTEM, "Make login accept ada.")

    # Then the finish arguments come back typed, and the file was really edited
    assert done == Done(summary="login checks the user", files=["app.py"])
    assert (tree / "app.py").read_text() == "def login(user):\n    return user == 'ada'\n"
    bodies = [r["body"] for r in anthropic_server.requests]
    assert len(bodies) == 5
    # and each tool's result reached the model in the next request
    listing, read, edit, ran = (tool_results(b)[0]["content"] for b in bodies[1:])
    assert "app.py  (34 bytes)" in listing and "README.md" in listing and ".git" not in listing
    assert read == APP
    assert edit == "edited app.py"
    assert ran.startswith("exit code 3\n") and "return user == 'ada'" in ran and f"in={tree}" in ran
    # and the system prompt and tools were identical on every call, with cache breakpoints on both
    assert all(b["system"] == bodies[0]["system"] and b["tools"] == bodies[0]["tools"] for b in bodies)
    assert bodies[0]["system"][-1]["cache_control"] == {"type": "ephemeral"}
    assert bodies[0]["tools"][-1]["cache_control"] == {"type": "ephemeral"}
    assert [t["name"] for t in bodies[0]["tools"]] == [
        "read_file",
        "write_file",
        "edit_file",
        "list_files",
        "search",
        "run",
        "finish",
    ]
    # so calls after the first read the cached prefix, all recorded on the story
    calls = story_calls(redis, live.keys, STORY)
    assert [int(c["cache_read_tokens"]) > 0 for c in calls] == [False, True, True, True, True]


def test_errors_are_results_the_model_sees_and_several_calls_run_in_order_in_one_turn(
    live: Settings,
    client: LLMClient,
    store: StoryStore,
    domains: Domains,
    tree: Path,
    anthropic_server: AnthropicServer,
) -> None:
    # Given a model that makes four calls in one reply (unknown tool, bad arguments, an ambiguous
    # edit, a good write), then finishes with invalid arguments, then talks, then finishes properly
    (tree / "twice.txt").write_text("x = 1\nx = 1\n")
    anthropic_server.respond_with(
        anthropic_script(
            [
                [
                    ("delete_everything", {}),
                    ("read_file", {"path": 7}),
                    ("edit_file", {"path": "twice.txt", "old_text": "x = 1", "new_text": "x = 2"}),
                    ("write_file", {"path": "new/notes.md", "content": "hello"}),
                ],
                [("finish", {"summary": "done"})],
                [],
                [("finish", {"summary": "done", "files": ["new/notes.md"]})],
            ]
        )
    )
    ctx = stage_context(live, client, store, domains, tree)

    # When the loop runs
    loop = loop_for(ctx, tree)
    done = loop.run(SYSTEM, "Write notes.")

    # Then all four results came back in one user turn, in order, the errors marked as errors
    bodies = [r["body"] for r in anthropic_server.requests]
    first = tool_results(bodies[1])
    assert [r["is_error"] for r in first] == [True, True, True, False]
    assert "no tool named 'delete_everything'" in first[0]["content"]
    assert "invalid arguments for read_file: path" in first[1]["content"]
    assert "old_text matches 2 times" in first[2]["content"]
    assert first[3]["content"] == "wrote new/notes.md (5 bytes)"
    # and the invalid finish was an error result naming the missing field
    finish_error = tool_results(bodies[2])[0]
    assert finish_error["is_error"] and "invalid arguments for finish: files" in finish_error["content"]
    # and the silent reply got the nudge, counted as an iteration
    assert bodies[3]["messages"][-1]["content"][-1]["text"] == NUDGE
    assert loop.iterations == 4
    assert done.files == ["new/notes.md"] and (tree / "new/notes.md").read_text() == "hello"
    assert (tree / "twice.txt").read_text() == "x = 1\nx = 1\n"


class Recorder(Middleware):
    def __init__(self) -> None:
        self.seen: list[str] = []

    def before_model_call(self, stage: StageInput, request: LLMRequest) -> None:
        self.seen.append(f"model:{len(request.messages)}")

    def after_model_call(self, stage: StageInput, request: LLMRequest, response: LLMResponse) -> None:
        self.seen.append("model-done")

    def after_tool_call(self, stage: StageInput, call: ToolCall, result: ToolResult) -> None:
        self.seen.append(f"tool:{call.name}:{'error' if result.is_error else 'ok'}")

    def on_tool_error(self, stage: StageInput, call: ToolCall, error: BaseException) -> None:
        self.seen.append(f"tool-raised:{call.name}:{type(error).__name__}")


class Gate:
    """Blocks writes to secrets.txt, escalates any `run`."""

    def authorize(self, call: ToolCall, stage: StageInput) -> GateDecision:
        if call.name == "run":
            return GateDecision(Verdict.ESCALATE, "commands need a human today")
        if call.arguments.get("path") == "secrets.txt":
            return GateDecision(Verdict.BLOCK, "secrets.txt is off limits")
        return GateDecision(Verdict.ALLOW)


def test_the_gate_blocks_with_a_reason_the_model_sees_and_escalation_holds_the_story(
    live: Settings,
    client: LLMClient,
    store: StoryStore,
    domains: Domains,
    tree: Path,
    anthropic_server: AnthropicServer,
) -> None:
    # Given a gate and a middleware, and a model that writes a blocked file, then runs a command
    anthropic_server.respond_with(
        anthropic_script(
            [
                [("write_file", {"path": "secrets.txt", "content": "x"})],
                [("run", {"command": "touch ran.txt"})],
            ]
        )
    )
    recorder = Recorder()
    ctx = stage_context(live, client, store, domains, tree, gate=Gate(), middleware=[recorder])

    # When the loop runs, the escalation holds the story with the gate's reason
    with pytest.raises(HoldStory, match="run awaits a human: commands need a human today"):
        loop_for(ctx, tree).run(SYSTEM, "Go.")

    # Then the block was an error result with its reason, and nothing was written or run
    blocked = tool_results(anthropic_server.requests[1]["body"])[0]
    assert blocked["is_error"] and blocked["content"] == "blocked: secrets.txt is off limits"
    assert not (tree / "secrets.txt").exists() and not (tree / "ran.txt").exists()
    # and the middleware saw every model call and tool call, the escalation as an error
    assert recorder.seen == [
        "model:1",
        "model-done",
        "tool:write_file:error",
        "model:3",
        "model-done",
        "tool-raised:run:HoldStory",
    ]
    # and the story's history has both
    events = [e for e in store.events(STORY) if e["event"].startswith("tool_")]
    assert [(e["event"], e["tool"], e["reason"]) for e in events] == [
        ("tool_blocked", "write_file", "secrets.txt is off limits"),
        ("tool_escalated", "run", "commands need a human today"),
    ]


def test_a_run_command_that_plants_a_link_out_cannot_be_followed_by_the_file_tools(
    live: Settings,
    client: LLMClient,
    store: StoryStore,
    domains: Domains,
    tree: Path,
    tmp_path: Path,
    anthropic_server: AnthropicServer,
) -> None:
    # Given a file outside the worktree, and a model that makes a link to it with `run`, then tries
    # to read, write and edit through it, and a link to the outside folder
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret.txt").write_text("SECRET\n")
    attempts = [  # ordered so that no error repeats three times in a row (the stuck detector)
        ("read_file", {"path": "leak.txt"}),
        ("list_files", {"path": "out"}),
        ("write_file", {"path": "leak.txt", "content": "pwned"}),
        ("write_file", {"path": "out/new.txt", "content": "pwned"}),
        ("edit_file", {"path": "leak.txt", "old_text": "SECRET", "new_text": "pwned"}),
        ("search", {"pattern": "SECRET"}),
    ]
    link = f"ln -s {outside}/secret.txt leak.txt && ln -s {outside} out && echo linked"
    anthropic_server.respond_with(anthropic_script([[("run", {"command": link})], attempts, []]))
    ctx = stage_context(live, client, store, domains, tree)

    # When the loop runs (the model ends up stuck on its silence)
    with pytest.raises(Exception, match="without calling a tool"):
        loop_for(ctx, tree).run(SYSTEM, "Go.")

    # Then the links were made inside the sandbox, but every use of them was refused or found nothing
    assert "linked" in tool_results(anthropic_server.requests[1]["body"])[0]["content"]
    results = tool_results(anthropic_server.requests[2]["body"])
    assert [r["is_error"] for r in results] == [True, True, True, True, True, False]
    assert all("symbolic link" in r["content"] for r in results[:5])
    assert "SECRET" not in json.dumps(results[:5]) and results[5]["content"].startswith("no match")
    # and the outside is as it was
    assert sorted(p.name for p in outside.iterdir()) == ["secret.txt"]
    assert (outside / "secret.txt").read_text() == "SECRET\n"


def grok_calling(tool: str, arguments: str) -> Callable[[dict[str, Any]], XaiReply]:
    """Grok scripted to make one tool call (its argument text as given), then finish with a GO."""

    def grok(body: dict[str, Any]) -> XaiReply:
        if assistant_turns(body) == 0:
            return XaiReply(text="", tool_calls=[(tool, arguments)])
        return XaiReply(text="", tool_calls=[("finish", json.dumps({"summary": "GO", "files": []}))])

    return grok


def test_function_calling_round_trips_through_xai_for_the_cto_review(
    live: Settings,
    client: LLMClient,
    store: StoryStore,
    domains: Domains,
    tree: Path,
    xai_server: XaiServer,
) -> None:
    # Given Grok (CTO_REVIEW routes to xAI) scripted to read a file, then finish
    xai_server.respond_with(grok_calling("read_file", json.dumps({"path": "app.py"})))
    ctx = stage_context(live, client, store, domains, tree)

    # When the loop runs with the CTO's task kind
    done = ToolLoop(ctx, file_tools(tree, ctx.limits, writable=False), Done, TaskKind.CTO_REVIEW).run(
        SYSTEM, "Review."
    )

    # Then the review came back, and the tool result reached Grok in the second request
    assert done == Done(summary="GO", files=[])
    second = xai_server.requests[1]["body"]
    tools = [t["function"]["name"] for t in second["tools"]]
    assert tools == ["read_file", "list_files", "search", "finish"]
    assert second["tools"] == xai_server.requests[0]["body"]["tools"]
    assert second["messages"][-1]["role"] == "ROLE_TOOL"
    assert second["messages"][-1]["content"][0]["text"] == APP


def test_tool_arguments_grok_could_not_parse_are_an_error_result_the_model_sees(
    live: Settings,
    client: LLMClient,
    store: StoryStore,
    domains: Domains,
    tree: Path,
    xai_server: XaiServer,
) -> None:
    # Given Grok whose first tool call has arguments cut short (not a JSON object), then finishes
    xai_server.respond_with(grok_calling("write_file", '{"path": "app.py", "content": "x'))
    ctx = stage_context(live, client, store, domains, tree)

    # When the loop runs
    done = ToolLoop(ctx, file_tools(tree, ctx.limits), Done, TaskKind.CTO_REVIEW).run(SYSTEM, "Review.")

    # Then the broken call ran nothing, and Grok was told why in a tool result
    assert done == Done(summary="GO", files=[])
    assert (tree / "app.py").read_text() == APP
    result = xai_server.requests[1]["body"]["messages"][-1]
    assert result["role"] == "ROLE_TOOL" and "not a JSON object" in result["content"][0]["text"]
