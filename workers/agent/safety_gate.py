"""The safety gate as the tool loop's `ToolGate`: each tool call of a stage is scored before it runs
(wavefleet/safety/gate.py), and the stage fails once `safety.blocks_per_stage` calls were refused.

Block: the loop shows the model the refusal; escalate: the loop holds the story while the action
waits in the review queue. `finish` is not gated: it runs nothing, it only returns the role's result;
nor is a call whose arguments are not JSON: the loop answers it with that error, nothing runs.
"""

from __future__ import annotations

from wavefleet.config import SafetySettings
from wavefleet.errors import SafetyBlocksError
from wavefleet.llm.client import LLMClient
from wavefleet.llm.types import ToolCall
from wavefleet.safety.gate import SafetyGate, Scorer
from wavefleet.safety.judge import Judge
from wavefleet.safety.review import ReviewQueue
from wavefleet.safety.rules import evaluate
from wavefleet.safety.types import ActionCall, Decision

from ..git import branch_name
from ..roles import StageInput
from .context import ALLOW, GateDecision, Verdict

FINISH = "finish"  # the loop's own tool (loop.FINISH; not imported: the loop imports the context)


class SafetyToolGate:
    def __init__(self, gate: SafetyGate, settings: SafetySettings) -> None:
        self.gate = gate
        self.settings = settings
        self.blocks = 0

    def authorize(self, call: ToolCall, stage: StageInput) -> GateDecision:
        if call.name == FINISH or call.invalid_arguments:  # runs nothing / refused by the loop itself
            return ALLOW
        action = ActionCall(
            tool=call.name,
            args=call.arguments,
            story=stage.story.id,
            domain=stage.domain.name,
            role=stage.role.value,
            branch=branch_name(stage.story.id, stage.role.value),
        )
        outcome = self.gate.check(action, round_=stage.round)
        if outcome.decision is Decision.BLOCK:
            self.blocks += 1
            if self.blocks >= self.settings.blocks_per_stage:
                raise SafetyBlocksError(
                    f"the safety gate refused {self.blocks} tool calls of this stage "
                    f"(safety.blocks_per_stage = {self.settings.blocks_per_stage}); the last, "
                    f"{call.name}: {outcome.reason}"
                )
        return GateDecision(Verdict(outcome.decision.value), outcome.reason)


def safety_gate_for(stage: StageInput, llm: LLMClient) -> SafetyToolGate:
    """The gate of one stage: the judge (if on and a model can answer) charged to the story."""
    settings = llm.settings.safety
    judge: Scorer | None = None
    if settings.judge and not llm.router.offline:
        judge = Judge(llm.for_story(stage.story.id, stage.domain.name, stage.role.value), settings)
    queue = ReviewQueue(llm.redis, llm.keys, approval_ttl_s=settings.approval_ttl_s)
    return SafetyToolGate(SafetyGate(evaluate, judge, queue, llm.redis, llm.keys), settings)
