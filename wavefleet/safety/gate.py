"""The safety gate's decision on one action: the rule layer first, the judge when the rules have no
opinion, a human's one-use verdict when either escalates; blocks and escalations are counted.

Pure of the workers: `workers/agent/safety_gate.py` maps its outcome onto the tool loop's gate.
Where the judge cannot be asked (`safety.judge` off, or the LLM layer answering offline, whose echo is
no judgment), an action the rules leave undecided is allowed with the rules' score: the operator chose
rules-only, and escalating every ordinary call would hold every story (README "Safety").
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from redis import Redis

from ..keys import Keys
from .review import ReviewQueue, action_digest
from .types import ActionCall, Decision, RuleDecision

Rules = Callable[[ActionCall], RuleDecision]
BLOCK_COUNTER, ESCALATE_COUNTER = "safety_block", "safety_escalate"


class Scorer(Protocol):
    def score(self, action: ActionCall) -> RuleDecision: ...


@dataclass(frozen=True)
class GateOutcome:
    decision: Decision
    reason: str
    score: float
    rules: tuple[str, ...] = ()
    action_id: str = ""  # set when the action waits in the review queue


def _label(ruled: RuleDecision) -> str:
    named = f" [{', '.join(ruled.rules)}]" if ruled.rules else ""
    return f"{ruled.reason or ruled.decision.value}{named}"


class SafetyGate:
    def __init__(
        self, rules: Rules, judge: Scorer | None, queue: ReviewQueue, redis: Redis, keys: Keys
    ) -> None:
        self.rules = rules
        self.judge = judge
        self.queue = queue
        self.redis = redis
        self.keys = keys

    def check(self, action: ActionCall, *, round_: int) -> GateOutcome:
        ruled = self.rules(action)
        if not ruled.decided:
            if self.judge is None:
                return GateOutcome(Decision.ALLOW, "no rule fired; the judge is off", ruled.score)
            ruled = self.judge.score(action)
        if ruled.decision is Decision.ESCALATE:
            return self._escalated(action, ruled, round_)
        if ruled.decision is Decision.BLOCK:
            return self._count(GateOutcome(Decision.BLOCK, _label(ruled), ruled.score, ruled.rules))
        return GateOutcome(Decision.ALLOW, _label(ruled), ruled.score, ruled.rules)

    def _escalated(self, action: ActionCall, ruled: RuleDecision, round_: int) -> GateOutcome:
        """A human's verdict on this exact action if there is one (used up), else it joins the queue."""
        verdict = self.queue.consume(action.story, action_digest(action))
        if verdict == "approve":
            return GateOutcome(Decision.ALLOW, "approved by a human (wave approve)", ruled.score, ruled.rules)
        if verdict == "reject":
            reason = f"a human refused this action (wave reject); it was escalated for: {_label(ruled)}"
            return self._count(GateOutcome(Decision.BLOCK, reason, ruled.score, ruled.rules))
        pending = self.queue.submit(
            action, round_=round_, score=ruled.score, rules=ruled.rules, reason=_label(ruled)
        )
        reason = (
            f"{_label(ruled)}; it waits for review as {pending.id} "
            f"(wave review; wave approve {pending.id} or wave reject {pending.id})"
        )
        return self._count(GateOutcome(Decision.ESCALATE, reason, ruled.score, ruled.rules, pending.id))

    def _count(self, outcome: GateOutcome) -> GateOutcome:
        field = BLOCK_COUNTER if outcome.decision is Decision.BLOCK else ESCALATE_COUNTER
        self.redis.hincrby(self.keys.metric_counters(), field, 1)
        return outcome
