"""End to end with the safety gate on: real workers and supervisor, the scripted team on the local
model servers and Grok's server also judging every tool call. BE's first act is one the judge
escalates: the story is held, `wave review` shows the action, and `wave approve ID` lets exactly that
action run (a slightly different one waits again) until the story is done; `wave reject ID` refuses
it, the agent sees the refusal and goes on."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import pytest
from scripted_team import STORY, STORY_ID, Call, ScriptedTeam
from servers.anthropic_server import AnthropicServer
from servers.xai_server import Reply, XaiServer
from test_agents_e2e import anthropic, llm_fleet, wait_finished, xai  # noqa: F401 - fixtures

from wavefleet.config import SafetySettings, Settings
from wavefleet.domains import Domains
from wavefleet.lifecycle import StoryState
from wavefleet.safety.judge import VERDICT_TOOL
from wavefleet.safety.review import ReviewQueue, action_digest
from wavefleet.safety.types import ActionCall
from wavefleet.store import StoryStore
from wavefleet.stories import Story
from wavefleet.testing import Processes, run_wave, wait_until
from workers.git import git

pytestmark = pytest.mark.slow
NOTES = "deploy-notes.md"
REFUSED = "a human refused this action"


class Escalating(ScriptedTeam):
    """The scripted team, BE starting round 1 by running a command that writes deployment notes
    (the judge escalates any command naming them; everything else it allows). `contents` are the
    notes' text at each try."""

    def __init__(self, *contents: str) -> None:
        super().__init__()
        self.contents = list(contents)
        self.tries = 0
        self.judged: list[dict[str, Any]] = []
        self.refusals: list[str] = []

    def xai(self, body: dict[str, Any]) -> Reply | None:
        if not any(t.get("function", {}).get("name") == VERDICT_TOOL for t in body.get("tools", [])):
            return super().xai(body)
        text = body["messages"][-1]["content"][0]["text"]
        action = json.loads(text.split("\n")[2])
        with self.seen.lock:
            self.judged.append(action)
        risky = NOTES in str(action["arguments"].get("command", ""))
        verdict = {"score": 0.8 if risky else 0.95, "violations": [], "risks": [], "reasoning": "checked"}
        return Reply(text="", tool_calls=[(VERDICT_TOOL, json.dumps(verdict))])

    def _decide(self, provider: str, system: str, turns: list[tuple[str, str]]) -> Call | None:
        if turns and REFUSED in turns[-1][1]:
            with self.seen.lock:
                self.refusals.append(turns[-1][1])
        if "# Role: be" in system and _round(turns) == 1:
            if sum(1 for who, _ in turns if who == "assistant") == 0:
                content = self.contents[min(self.tries, len(self.contents) - 1)]
                self.tries += 1
                return ("run", write_notes(content))
            turns = [turns[0], *turns[3:]]  # the rest of BE's script, one step behind
        return super()._decide(provider, system, turns)


def write_notes(content: str) -> dict[str, str]:
    """A command no rule decides (the judge is asked) that writes the deployment notes."""
    return {"command": f"{sys.executable} -c \"open('{NOTES}', 'w').write('{content}')\""}


def _round(turns: list[tuple[str, str]]) -> int:
    opening = next((text for who, text in turns if who == "user"), "")
    try:
        return int(json.loads(opening[opening.index("{") :]).get("round", 0))
    except ValueError:
        return 0


def judged(settings: Settings) -> Settings:
    return settings.model_copy(update={"safety": SafetySettings(judge=True, judge_timeout_s=20)})


def held_action(store: StoryStore, queue: ReviewQueue, procs: Processes, but: set[str]) -> str:
    """Wait for the story to be held with an action other than `but` waiting; its id."""

    def found() -> str | None:
        ids = {p.id for p in queue.pending()} - but
        return next(iter(ids)) if ids and store.get(STORY_ID).state is StoryState.HELD else None

    action = wait_until(
        found,
        timeout_s=150,
        interval_s=0.2,
        message="the story held with an action in review",
        diagnose=lambda: f"{store.get(STORY_ID)}\n{procs.logs()[-5000:]}",
    )
    assert action is not None
    return action


@pytest.mark.timeout(400)
def test_an_escalated_action_holds_the_story_and_wave_approve_runs_exactly_that_action(
    settings: Settings,
    anthropic: AnthropicServer,  # noqa: F811
    xai: XaiServer,  # noqa: F811
    store: StoryStore,
    domains: Domains,
    tmp_path: Path,
) -> None:
    # BE writes "v1" first; asked again after the approval, it writes "v1!" (slightly different)
    team = Escalating("ship v1", "ship v1!")
    with llm_fleet(team, judged(settings), anthropic, xai, tmp_path / "logs") as (live, procs):
        queue = ReviewQueue(store.redis, live.keys, approval_ttl_s=live.safety.approval_ttl_s)
        store.enqueue([Story.model_validate(STORY)], domains)

        # The escalated write holds the story; `wave review` shows it with its context
        first = held_action(store, queue, procs, set())
        review = run_wave(live, "review")
        assert review.returncode == 0 and first in review.stdout and NOTES in review.stdout
        [pending] = [json.loads(line) for line in run_wave(live, "review", "--json").stdout.splitlines()]
        assert pending["args"] == write_notes("ship v1") and pending["role"] == "be"

        # When the operator approves it, the stage runs again; its model now asks for a slightly
        # different action, which the approval does not cover: the story is held again
        assert run_wave(live, "approve", first).returncode == 0
        second = held_action(store, queue, procs, {first})
        [again] = queue.pending()
        assert again.args == write_notes("ship v1!")
        unused = ActionCall(tool="run", args=write_notes("ship v1"))
        assert store.redis.get(live.keys.safety_verdict(STORY_ID, action_digest(unused))) == "approve"

        # And approving that one lets it run once; the story finishes
        assert run_wave(live, "approve", second).returncode == 0
        wait_finished(store, lambda: f"{store.get(STORY_ID)}\n{procs.logs()[-5000:]}")
        assert store.get(STORY_ID).state is StoryState.DONE, procs.logs()[-5000:]
    assert queue.pending() == []
    clone = settings.data_dir / "repos" / "auth" / "clone"
    assert git(clone, "show", f"wave/{STORY_ID}-be:{NOTES}") == "ship v1!"
    assert team.judged and not team.refusals and not team.seen.unexpected


@pytest.mark.timeout(400)
def test_wave_reject_refuses_the_action_and_the_agent_goes_on(
    settings: Settings,
    anthropic: AnthropicServer,  # noqa: F811
    xai: XaiServer,  # noqa: F811
    store: StoryStore,
    domains: Domains,
    tmp_path: Path,
) -> None:
    team = Escalating("ship v1")
    with llm_fleet(team, judged(settings), anthropic, xai, tmp_path / "logs") as (live, procs):
        queue = ReviewQueue(store.redis, live.keys, approval_ttl_s=live.safety.approval_ttl_s)
        store.enqueue([Story.model_validate(STORY)], domains)
        action = held_action(store, queue, procs, set())

        # When the operator rejects it, the story resumes; the replayed action is refused, the
        # model reads the refusal and goes on with its work
        assert run_wave(live, "reject", action, "--reason", "no deploy notes here").returncode == 0
        wait_finished(store, lambda: f"{store.get(STORY_ID)}\n{procs.logs()[-5000:]}")
        assert store.get(STORY_ID).state is StoryState.DONE, procs.logs()[-5000:]
    assert len(team.refusals) == 1 and "blocked: " in team.refusals[0]
    clone = settings.data_dir / "repos" / "auth" / "clone"
    assert NOTES not in git(clone, "ls-tree", "-r", "--name-only", f"wave/{STORY_ID}-be")
