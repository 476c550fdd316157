"""The gate's human verdicts on real Redis: an approval runs that exact action once, never a similar
one, and expires; a rejection refuses it; two operators cannot both decide one action; bad ids are
one line and a non-zero exit."""

from __future__ import annotations

from dataclasses import dataclass, field

import pytest
from redis import Redis

from wavefleet.config import Settings
from wavefleet.errors import ExitCode
from wavefleet.safety.gate import SafetyGate
from wavefleet.safety.review import ReviewQueue, action_digest
from wavefleet.safety.rules import evaluate
from wavefleet.safety.types import ActionCall, Decision, RuleDecision
from wavefleet.testing import run_wave, wait_until

STORY = "AUTH-001"
ACTION = ActionCall(
    tool="run",
    args={"command": "python3 -c \"print('ship it')\""},
    story=STORY,
    domain="auth",
    role="be",
)


@dataclass
class Grok:
    """A judge that escalates every action (the real one is tested in tests/llm/test_safety_judge.py)."""

    asked: list[ActionCall] = field(default_factory=list)

    def score(self, action: ActionCall) -> RuleDecision:
        self.asked.append(action)
        return RuleDecision(
            decision=Decision.ESCALATE, score=0.8, rules=("judge",), reason="judge score 0.80"
        )


def gate_of(settings: Settings, redis: Redis) -> tuple[SafetyGate, ReviewQueue]:
    queue = ReviewQueue(redis, settings.keys, approval_ttl_s=settings.safety.approval_ttl_s)
    return SafetyGate(evaluate, Grok(), queue, redis, settings.keys), queue


def test_an_approval_runs_the_exact_action_once_and_never_a_similar_one(
    settings: Settings, redis: Redis
) -> None:
    gate, queue = gate_of(settings, redis)
    # Given an escalated action, queued with its context
    held = gate.check(ACTION, round_=1)
    assert held.decision is Decision.ESCALATE and held.action_id in held.reason
    [pending] = queue.pending()
    assert (pending.id, pending.story, pending.role, pending.round, pending.tool) == (
        held.action_id,
        STORY,
        "be",
        1,
        "run",
    )

    # When a human approves it
    assert run_wave(settings, "approve", held.action_id).returncode == 0
    assert queue.pending() == []
    key = settings.keys.safety_verdict(STORY, action_digest(ACTION))
    assert 0 < redis.ttl(key) <= settings.safety.approval_ttl_s

    # Then a similar action (another character, another story) is not approved: it waits again
    similar = ACTION.model_copy(update={"args": {"command": "python3 -c \"print('ship it!')\""}})
    assert gate.check(similar, round_=1).decision is Decision.ESCALATE
    other_story = ACTION.model_copy(update={"story": "AUTH-002"})
    assert gate.check(other_story, round_=1).decision is Decision.ESCALATE
    # ... nor one the normaliser reads the same but that runs differently (an invisible character,
    # a Cyrillic look-alike): an approval is for the characters that run, not their normal form
    invisible = ACTION.model_copy(update={"args": {"command": "python3 -c \"print('ship\u200b it')\""}})
    assert gate.check(invisible, round_=1).decision is Decision.ESCALATE
    lookalike = ACTION.model_copy(update={"args": {"command": "python3 -c \"print('ship \u0456t')\""}})
    assert gate.check(lookalike, round_=1).decision is Decision.ESCALATE
    # ... the exact one runs, once
    assert gate.check(ACTION, round_=1).decision is Decision.ALLOW
    assert gate.check(ACTION, round_=1).decision is Decision.ESCALATE
    assert int(redis.hget(settings.keys.metric_counters(), "safety_escalate") or 0) == 6


def test_an_expired_approval_is_not_used(settings: Settings, redis: Redis) -> None:
    gate, queue = gate_of(settings, redis)
    held = gate.check(ACTION, round_=1)
    assert run_wave(settings, "approve", held.action_id).returncode == 0
    # When the approval's TTL runs out (shortened here: the setting's minimum is 60 s)
    key = settings.keys.safety_verdict(STORY, action_digest(ACTION))
    redis.pexpire(key, 1)
    wait_until(lambda: not redis.exists(key), timeout_s=5, message="the approval to expire")
    # Then the action waits for a human again
    again = gate.check(ACTION, round_=1)
    assert again.decision is Decision.ESCALATE and [p.id for p in queue.pending()] == [held.action_id]


def test_a_rejected_action_is_refused_once_with_the_reason(settings: Settings, redis: Redis) -> None:
    gate, _ = gate_of(settings, redis)
    held = gate.check(ACTION, round_=1)
    done = run_wave(settings, "reject", held.action_id, "--reason", "not in this story")
    assert done.returncode == 0, done.stderr
    refused = gate.check(ACTION, round_=1)
    assert refused.decision is Decision.BLOCK
    assert refused.reason.startswith("a human refused this action (wave reject)")
    assert int(redis.hget(settings.keys.metric_counters(), "safety_block") or 0) == 1


def test_wave_review_lists_the_pending_actions_with_their_context(settings: Settings, redis: Redis) -> None:
    gate, _ = gate_of(settings, redis)
    held = gate.check(ACTION, round_=2)
    table = run_wave(settings, "review")
    assert table.returncode == 0
    assert held.action_id in table.stdout and STORY in table.stdout and "run" in table.stdout
    assert "print('ship it')" in table.stdout and "judge score 0.80" in table.stdout
    listed = run_wave(settings, "review", "--json")
    import json  # noqa: PLC0415

    [entry] = [json.loads(line) for line in listed.stdout.splitlines()]
    assert entry["id"] == held.action_id and entry["round"] == 2 and entry["args"] == ACTION.args


@pytest.mark.parametrize(
    ("argv", "error"),
    [
        (["approve", "act-000000000000"], "no action act-000000000000 waits for review"),
        (["reject", "act-000000000000"], "no action act-000000000000 waits for review"),
        (["approve", "AUTH-404"], "AUTH-404"),
    ],
)
def test_an_unknown_id_is_one_line_and_a_non_zero_exit(
    settings: Settings, argv: list[str], error: str
) -> None:
    done = run_wave(settings, *argv)
    assert done.returncode != ExitCode.OK
    assert done.stderr.count("\n") == 1 and error in done.stderr and "Traceback" not in done.stderr
    assert done.stdout == ""


def test_two_operators_cannot_both_decide_one_action(settings: Settings, redis: Redis) -> None:
    gate, queue = gate_of(settings, redis)
    held = gate.check(ACTION, round_=1)
    assert queue.decide(held.action_id, "approve").id == held.action_id
    second = run_wave(settings, "reject", held.action_id)
    assert second.returncode == ExitCode.NOT_FOUND and "waits for review" in second.stderr
    assert redis.get(settings.keys.safety_verdict(STORY, action_digest(ACTION))) == "approve"
