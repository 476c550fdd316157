"""`wave safety check` without `--rules-only` as a real process: the rules decide what they can, the
judge (Grok, through the real xai-sdk client to the local server) what they leave undecided, failing
closed; charged to the line's story when it names one; nothing is queued for review."""

from __future__ import annotations

import json
import subprocess
import sys
from typing import Any

import pytest
from agentkit import STORY
from conftest import llm_env
from redis import Redis
from servers.xai_server import Reply, XaiServer

from wavefleet.config import SafetySettings, Settings
from wavefleet.domains import Domains
from wavefleet.llm.accounting import story_calls
from wavefleet.store import StoryStore
from wavefleet.stories import Story

pytestmark = pytest.mark.timeout(60)
UNDECIDED = {"tool": "run", "args": {"command": "pip install requests"}}  # the rules ask the judge
DANGEROUS = {"tool": "run", "args": {"command": "rm -rf /"}}


def verdict(score: Any) -> Reply:
    body = {"score": score, "violations": ["security"], "risks": ["typosquatting"], "reasoning": "unsure"}
    return Reply(text="", tool_calls=[("verdict", json.dumps(body))])


def check(settings: Settings, *calls: dict[str, Any]) -> tuple[int, list[dict[str, Any]], str]:
    judged = settings.model_copy(update={"safety": SafetySettings(judge=True, judge_timeout_s=5.0)})
    done = subprocess.run(
        [sys.executable, "-m", "wavefleet.cli", "safety", "check"],
        input="".join(json.dumps(c) + "\n" for c in calls),
        capture_output=True,
        text=True,
        env=llm_env(judged),
        timeout=50,
        check=False,
    )
    return done.returncode, [json.loads(line) for line in done.stdout.splitlines()], done.stderr


def test_the_rules_decide_first_and_the_judge_scores_the_rest(live: Settings, xai_server: XaiServer) -> None:
    # Given Grok scoring every action 0.5 (below the 0.7 block threshold)
    xai_server.respond_with(lambda body: verdict(0.5))

    # When a call the rules block and one they leave undecided are checked
    code, lines, stderr = check(live, DANGEROUS, UNDECIDED)

    # Then the first is the rules' block without asking the model, the second the judge's block
    assert code == 0, stderr
    assert lines[0]["decision"] == "block" and lines[0]["rules"][0].startswith("destructive")
    assert lines[1]["decision"] == "block" and lines[1]["rules"] == ["judge", "judge:security"]
    assert "judge score 0.50" in lines[1]["reason"]
    assert len(xai_server.requests) == 1  # only the undecided call reached the judge


def test_a_judge_that_answers_garbage_fails_closed(live: Settings, xai_server: XaiServer) -> None:
    # Given Grok answering with a score out of range
    xai_server.respond_with(lambda body: verdict(7))

    # When an undecided call is checked
    code, lines, stderr = check(live, UNDECIDED)

    # Then it is blocked, and the reason says the judge failed closed
    assert code == 0, stderr
    assert lines[0]["decision"] == "block" and "fail closed" in lines[0]["reason"]


def test_a_line_naming_a_story_charges_it_and_an_unknown_story_is_that_lines_error(
    live: Settings, redis: Redis, store: StoryStore, domains: Domains, xai_server: XaiServer
) -> None:
    # Given an enqueued story and Grok judging an action safe
    store.enqueue([Story(id=STORY, title="add a login endpoint")], domains)
    xai_server.respond_with(lambda body: verdict(0.95))

    # When its action, and one of a story that does not exist, are checked
    code, lines, _ = check(live, {**UNDECIDED, "story": STORY}, {**UNDECIDED, "story": "AUTH-404"})

    # Then the first is allowed and recorded on the story; the second is an error line; exit 65
    assert lines[0]["decision"] == "allow"
    assert [c["role"] for c in story_calls(redis, live.keys, STORY)] == ["safety-check"]
    assert "error" in lines[1] and "AUTH-404" in lines[1]["error"]
    assert code == 65
    # And nothing waits in the review queue: a check decides nothing for the fleet
    assert not redis.exists(live.keys.safety_review())
