"""A human's approval of a CTO HOLD, standing in for the CTO agent when the review stage runs again.

`wave approve` of a story the CTO held sends it back to review with the approval remembered on the
story (lifecycle `_approve`). Its CTO stage then asks no agent: the approval is the review, a GO whose
reason is the approver's, and delivery follows it exactly as it follows a model's GO.
"""

from __future__ import annotations

from wavefleet.lifecycle import Decision, Role
from wavefleet.store import StoryRecord

from .agent.context import AgentContext
from .roles import Review, StageInput, StageOutput


class HumanApproval:
    """The CTO stage of an approved story: the human's GO, labelled `human` in `wave status`."""

    label = "human"

    def __init__(self, reason: str) -> None:
        self.reason = reason

    def run(self, stage: StageInput, ctx: AgentContext) -> StageOutput:
        return Review(agent=self.label, decision=Decision.GO, reasons=[self.reason])


def approved_review(record: StoryRecord, role: Role) -> HumanApproval | None:
    """The approval that plays this stage, if a human approved the story's HOLD; else None."""
    if role is Role.CTO and record.approved:
        return HumanApproval(record.approved)
    return None
