"""The typed language of the safety layer: an action to judge and a decision about it.

Shared by the rule layer, the constitutional judge, the gate, `wave safety check` and preflight, so
none of them reads another's dicts by name.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Any

from pydantic import BaseModel, ConfigDict, Field


class Decision(StrEnum):
    ALLOW = "allow"
    ESCALATE = "escalate"  # a human decides (`wave review`, `wave approve ID`)
    BLOCK = "block"  # refused; the agent sees the reason


class ActionCall(BaseModel):
    """One tool call to judge: the tool's name, its arguments as the model sent them, and where it
    would run. Every field is hostile input (story text, model output)."""

    model_config = ConfigDict(frozen=True)

    tool: str
    args: dict[str, Any] = Field(default_factory=dict)
    story: str = ""
    domain: str = ""
    role: str = ""
    branch: str = ""  # the stage's own branch (wave/<story>-<role>): pushes elsewhere are protected


class RuleDecision(BaseModel):
    """What a scorer decided: `score` in [0, 1] (1 = safe), the named rules that fired, one line why.
    `decided` is False when the rule layer has no opinion and the judge must be asked."""

    model_config = ConfigDict(frozen=True)

    decision: Decision
    score: float = Field(ge=0.0, le=1.0)
    rules: tuple[str, ...] = ()
    reason: str = ""
    decided: bool = True
