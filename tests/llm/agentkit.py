"""Helpers of the tool-loop tests: a story, a stage context on the real LLM client, a scripted model.

A scripted model answers by the request's content: `Script` maps the number of assistant turns
so far to the tool calls to make, so one script serves the Anthropic and the xAI server alike.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import pytest
from pydantic import BaseModel
from servers.anthropic_server import Reply

from wavefleet.cli import main
from wavefleet.config import Settings, to_env
from wavefleet.domains import Domains
from wavefleet.lifecycle import Role
from wavefleet.llm.client import LLMClient
from wavefleet.sandbox import BwrapSandbox
from wavefleet.store import StoryStore
from wavefleet.stories import Story
from workers.agent.assemble import context_for
from workers.agent.context import AgentContext, LoopLimits, ToolGate
from workers.agent.events import StoryEventSink
from workers.agent.middleware import Middleware
from workers.roles import StageInput

STORY = "AUTH-001"
Call = tuple[str, dict[str, Any]]


class Done(BaseModel):
    """A finish schema for the loop tests (the roles' own outputs are tested by their helper)."""

    summary: str
    files: list[str]


def git_tree(path: Path, files: dict[str, str]) -> Path:
    """A real git repository with `files` committed (so `.git/hooks` is there to attack)."""
    path.mkdir(parents=True, exist_ok=True)
    for name, text in files.items():
        (path / name).parent.mkdir(parents=True, exist_ok=True)
        (path / name).write_text(text)
    env = {**os.environ, "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@x", "GIT_COMMITTER_NAME": "t"}
    env["GIT_COMMITTER_EMAIL"] = "t@x"
    for argv in (["init", "-q", "-b", "main"], ["add", "-A"], ["commit", "-qm", "start"]):
        subprocess.run(["git", *argv], cwd=path, check=True, env=env)
    return path


def stage_context(
    settings: Settings,
    client: LLMClient,
    store: StoryStore,
    domains: Domains,
    tree: Path,
    *,
    role: Role = Role.BE,
    limits: LoopLimits | None = None,
    gate: ToolGate | None = None,
    middleware: Sequence[Middleware] = (),
) -> AgentContext:
    """The stage's context on the real client, with the story `STORY` enqueued (budgets key on it)."""
    if store.find(STORY) is None:
        store.enqueue([Story(id=STORY, title="add a login endpoint")], domains)
    domain = domains.get("auth")
    stage = StageInput(
        story=store.get(STORY).story,
        domain=domain,
        role=role,
        round=1,
        attempt=1,
        worker="worker-test",
        data_dir=settings.data_dir,
    )
    return context_for(
        stage,
        client,
        BwrapSandbox(),
        events=StoryEventSink(store, stage),
        limits=limits,
        gate=gate,
        middleware=middleware,
    )


def assistant_turns(body: dict[str, Any]) -> int:
    """How many times the model has answered in this conversation (both servers' request shapes)."""
    return sum(1 for m in body.get("messages", []) if m.get("role") in ("assistant", "ROLE_ASSISTANT"))


def anthropic_script(turns: Sequence[Sequence[Call]]) -> Callable[[dict[str, Any]], Reply]:
    """Reply at turn n with the tool calls `turns[n]`; past the end, repeat the last turn."""

    def respond(body: dict[str, Any]) -> Reply:
        calls = turns[min(assistant_turns(body), len(turns) - 1)]
        return Reply(text="working" if calls else "I think I am done.", tool_use=list(calls))

    return respond


def tool_results(body: dict[str, Any]) -> list[dict[str, Any]]:
    """The tool_result blocks of the last user turn of an Anthropic request."""
    content = body["messages"][-1]["content"]
    return [b for b in content if isinstance(b, dict) and b.get("type") == "tool_result"]


def wave_events(
    settings: Settings, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> str:
    """`wave events STORY` through the real CLI entry point, as the operator runs it."""
    for name in [n for n in os.environ if n.startswith("WAVE_")]:
        monkeypatch.delenv(name)
    for name, value in to_env(settings).items():
        monkeypatch.setenv(name, value)
    monkeypatch.chdir(settings.domains_dir)  # no stray .env of the checkout
    capsys.readouterr()
    assert main(["events", STORY]) == 0
    return capsys.readouterr().out
