"""The TraceMiddleware on the real tool loop: each tool call is a `tool` run carrying the gate's
decision (allow, block, escalate), each model call an `llm` run with tokens, under the stage run."""

from __future__ import annotations

from pathlib import Path

import pytest
from agentkit import STORY, anthropic_script, stage_context
from redis import Redis
from servers.anthropic_server import AnthropicServer
from servers.langsmith_server import LangSmithServer
from test_agent_loop import Gate, loop_for, tree  # noqa: F401 - tree: a fixture

from wavefleet.config import LangSmithSettings, Settings
from wavefleet.domains import Domains
from wavefleet.errors import HoldStory
from wavefleet.llm.client import LLMClient
from wavefleet.store import StoryStore
from wavefleet.testing import wait_until
from wavefleet.tracing import LangSmithTracer, OutboxTracer, new_trace
from workers.agent.tracing import TraceMiddleware

SYSTEM = "You are a careful engineer."


def test_tool_runs_carry_the_gate_decision_and_llm_runs_their_tokens(
    live: Settings,
    client: LLMClient,
    redis: Redis,
    store: StoryStore,
    domains: Domains,
    tree: Path,  # noqa: F811
    anthropic_server: AnthropicServer,
) -> None:
    collector = LangSmithServer()
    traced = live.model_copy(
        update={"langsmith": LangSmithSettings(api_key=collector.api_key, endpoint=collector.url)}
    )
    anthropic_server.respond_with(
        anthropic_script(
            [
                [("read_file", {"path": "README.md"})],
                [("write_file", {"path": "secrets.txt", "content": "x"})],
                [("run", {"command": "touch ran.txt"})],
            ]
        )
    )
    tracer, root = OutboxTracer(traced, redis), new_trace()  # a work horse's
    tracing = TraceMiddleware(tracer, root)
    ctx = stage_context(live, client, store, domains, tree, gate=Gate(), middleware=[tracing])
    try:
        tracing.before_stage(ctx.stage)  # as Middlewares.around_stage does for a role's agent
        with pytest.raises(HoldStory) as held:  # the escalation holds the story
            loop_for(ctx, tree).run(SYSTEM, "Go.")
        tracing.on_stage_error(ctx.stage, held.value)
        tracer.close()  # the stage's end: to the trace outbox; the supervisor's sender posts them
        sender = LangSmithTracer(traced, redis)
        sender.start_sending()
        outbox = traced.keys.trace_outbox()
        wait_until(lambda: redis.llen(outbox) == 0, timeout_s=10, message="the outbox drained")
        sender.close(10)
        runs = list(collector.snapshot().values())
    finally:
        collector.close()

    (stage,) = [r for r in runs if r["run_type"] == "chain"]
    assert (
        stage["parent_run_id"] == root.run_id and stage["name"] == "be r1" and "HoldStory" in stage["error"]
    )
    assert stage["extra"]["metadata"]["story"] == STORY
    tools = sorted((r for r in runs if r["run_type"] == "tool"), key=lambda r: r["dotted_order"])
    assert [(r["name"], r["extra"]["metadata"]["verdict"]) for r in tools] == [
        ("read_file", "allow"),
        ("write_file", "block"),
        ("run", "escalate"),
    ]
    assert tools[1]["error"] == "blocked: secrets.txt is off limits"
    llm = [r for r in runs if r["run_type"] == "llm"]
    assert len(llm) == 3 and all(r["parent_run_id"] == stage["id"] for r in llm + tools)
    assert all(r["outputs"]["usage_metadata"]["total_tokens"] > 0 for r in llm)
    assert all(r["extra"]["metadata"]["provider"] == "anthropic" for r in llm)
