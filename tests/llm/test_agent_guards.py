"""A model scripted to loop forever is stopped by each guard, with its reason in `wave events`."""

from __future__ import annotations

import re
import time
from pathlib import Path
from typing import Any

import pytest
from agentkit import STORY, Done, assistant_turns, git_tree, stage_context, wave_events
from redis import Redis
from servers.anthropic_server import AnthropicServer, Reply

from wavefleet.config import Settings
from wavefleet.domains import Domains, load_domains
from wavefleet.errors import BudgetExceededError, LoopStopped
from wavefleet.llm.accounting import story_calls
from wavefleet.llm.client import LLMClient
from wavefleet.llm.types import TaskKind
from wavefleet.store import StoryStore
from workers.agent.context import LoopLimits
from workers.agent.loop import ToolLoop
from workers.agent.tools import file_tools, run_tool

pytestmark = pytest.mark.timeout(60)
SYSTEM = "You are the backend developer. " * 200


def forever(turn_calls: Any) -> Any:
    """A model that never finishes: at turn n it makes the calls `turn_calls(n)`."""

    def respond(body: dict[str, Any]) -> Reply:
        return Reply(text="", tool_use=list(turn_calls(assistant_turns(body))))

    return respond


GUARDS = {
    "same call, same result": (
        lambda n: [("read_file", {"path": "app.py"})],
        LoopLimits(),
        "stuck",
        r"stuck: the same call read_file \{\"path\":\"app.py\"\} gave the same result 3 times in a row",
    ),
    "same error": (
        lambda n: [("read_file", {"path": "gone.py", "offset": n})],
        LoopLimits(),
        "stuck",
        r"stuck: the same error 3 times in a row: gone.py: no such file or folder in the worktree",
    ),
    "ping-pong": (
        lambda n: [("read_file", {"path": "app.py" if n % 2 else "README.md"})],
        LoopLimits(),
        "stuck",
        r"stuck: ping-pong between read_file \{\"path\":\"README.md\"\} and read_file "
        r"\{\"path\":\"app.py\"\} for 6 steps",
    ),
    "iteration cap": (
        lambda n: [("write_file", {"path": f"step{n}.txt", "content": str(n)})],
        LoopLimits(max_iterations=4),
        "iterations",
        r"iteration cap: 4 model calls without finishing \(loop.max_iterations = 4\)",
    ),
    "wall-clock cap": (
        lambda n: [("run", {"command": f"sleep 0.3; echo {n}"})],
        LoopLimits(wall_clock_s=1.0),
        "wall_clock",
        r"wall-clock cap: 1\.\d s without finishing \(loop.wall_clock_s = 1\)",
    ),
    # one command far longer than the cap: it is cut at the cap, not at its own 300 s timeout
    "wall-clock cap during a run": (
        lambda n: [("run", {"command": "sleep 60"})],
        LoopLimits(wall_clock_s=1.0),
        "wall_clock",
        r"wall-clock cap: 1\.\d s without finishing \(loop.wall_clock_s = 1\)",
    ),
}


@pytest.mark.parametrize("name", GUARDS)
def test_a_model_that_never_finishes_is_stopped_by_the_guard_with_its_reason_in_wave_events(
    name: str,
    live: Settings,
    client: LLMClient,
    store: StoryStore,
    domains: Domains,
    tmp_path: Path,
    anthropic_server: AnthropicServer,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    turn_calls, limits, guard, reason = GUARDS[name]
    tree = git_tree(tmp_path / "tree", {"app.py": "x = 1\n", "README.md": "# r\n"})
    # Given a model scripted never to finish
    anthropic_server.respond_with(forever(turn_calls))
    ctx = stage_context(live, client, store, domains, tree, limits=limits)
    loop = ToolLoop(
        ctx, [*file_tools(tree, limits), run_tool(ctx.sandbox, tree, limits)], Done, TaskKind.CODE_GENERATION
    )

    # When the loop runs, the guard stops it with its reason
    started = time.monotonic()
    with pytest.raises(LoopStopped, match=reason) as stopped:
        loop.run(SYSTEM, "Go.")
    assert stopped.value.guard == guard
    assert time.monotonic() - started < 10

    # Then `wave events` shows the stop, its guard and its reason
    shown = [line for line in wave_events(live, monkeypatch, capsys).splitlines() if "agent_stopped" in line]
    assert len(shown) == 1 and f"guard={guard}" in shown[0] and re.search(reason, shown[0]), shown
    assert "role=be" in shown[0] and f"iterations={loop.iterations}" in shown[0]


def test_a_model_that_never_finishes_is_stopped_by_the_story_budget_and_the_story_is_held(
    live: Settings,
    store: StoryStore,
    redis: Redis,
    tmp_path: Path,
    anthropic_server: AnthropicServer,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    # Given a tiny story budget, and a model making progress forever (new files: no stuck pattern)
    toml = live.domains_dir / "auth" / "domain.toml"
    toml.write_text(toml.read_text().replace("story_usd = 5.0", "story_usd = 0.05"))
    live = live.model_copy(update={"llm": live.llm.model_copy(update={"max_tokens": 200})})
    client, domains = LLMClient(live, redis), load_domains(live.domains_dir)
    tree = git_tree(tmp_path / "tree", {"app.py": "x = 1\n"})
    anthropic_server.respond_with(
        forever(lambda n: [("write_file", {"path": f"step{n}.txt", "content": str(n)})])
    )
    ctx = stage_context(live, client, store, domains, tree)

    # When the loop runs, the budget stops it before the call that would pass the limit: a HoldStory
    with pytest.raises(BudgetExceededError) as stopped:
        ToolLoop(ctx, file_tools(tree, ctx.limits), Done, TaskKind.CODE_GENERATION).run(SYSTEM, "Go.")

    # Then some calls were made and recorded, their cost within the limit
    calls = story_calls(redis, live.keys, STORY)
    assert len(calls) >= 2 and sum(float(c["cost_usd"]) for c in calls) <= 0.05
    # and `wave events` shows the stop with the budget's own reason
    shown = [line for line in wave_events(live, monkeypatch, capsys).splitlines() if "agent_stopped" in line]
    assert len(shown) == 1 and "guard=budget" in shown[0], shown
    assert str(stopped.value).split(":")[0] in shown[0]
