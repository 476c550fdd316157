"""The stuck detector: a model repeating itself without progress is stopped, with the pattern as reason.

Each tool call the loop runs is observed as a step: the call (its name and canonical arguments:
JSON with sorted keys) and its result. Three patterns, checked on the most recent steps only:
- the same call with the same result `repeats` times in a row (OpenHands waits for 4);
- an error result with the same text `repeats` times in a row, whatever the calls were;
- ping-pong: two different steps A and B alternating for `2 * repeats` steps (A-B-A-B-A-B: the
  same six-step window as OpenHands), each A and each B with the same result every time.
A reply without any tool call is observed as an error step, so a model that only talks is caught
by the second pattern after `repeats` nudges. Progress (any new step) breaks every pattern.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from wavefleet.llm.types import ToolCall, ToolResult

NO_TOOL_CALL = "(no tool call)"


@dataclass(frozen=True)
class Step:
    call: str  # name and canonical arguments
    result: str
    is_error: bool


def canonical(name: str, arguments: dict[str, Any]) -> str:
    return f"{name} {json.dumps(arguments, sort_keys=True, separators=(',', ':'), default=str)}"


class StuckDetector:
    def __init__(self, repeats: int = 3) -> None:
        if repeats < 2:
            raise ValueError("repeats must be at least 2")
        self.repeats = repeats
        self.steps: list[Step] = []

    def observe(self, call: ToolCall, result: ToolResult) -> str | None:
        """Record one step; the reason to stop if the recent steps show the model is stuck."""
        return self._add(Step(canonical(call.name, call.arguments), result.content, result.is_error))

    def observe_silence(self, nudge: str) -> str | None:
        """Record a reply that called no tool (the loop nudged the model with `nudge`)."""
        return self._add(Step(NO_TOOL_CALL, nudge, True))

    def _add(self, step: Step) -> str | None:
        self.steps.append(step)
        del self.steps[: -2 * self.repeats]  # older steps cannot be part of any pattern
        return self._repeated() or self._same_error() or self._ping_pong()

    def _repeated(self) -> str | None:
        recent = self.steps[-self.repeats :]
        if len(recent) == self.repeats and all(s == recent[0] for s in recent):
            if recent[0].call == NO_TOOL_CALL:
                return f"stuck: the model replied without calling a tool {self.repeats} times in a row"
            return (
                f"stuck: the same call {_short(recent[0].call)} gave the same result "
                f"{self.repeats} times in a row"
            )
        return None

    def _same_error(self) -> str | None:
        recent = self.steps[-self.repeats :]
        if len(recent) == self.repeats and all(s.is_error and s.result == recent[0].result for s in recent):
            return f"stuck: the same error {self.repeats} times in a row: {_short(recent[0].result)}"
        return None

    def _ping_pong(self) -> str | None:
        window = self.steps[-2 * self.repeats :]
        if len(window) < 2 * self.repeats or window[-1] == window[-2]:
            return None
        if all(window[i] == window[i - 2] for i in range(2, len(window))):
            return (
                f"stuck: ping-pong between {_short(window[-2].call)} and {_short(window[-1].call)} "
                f"for {len(window)} steps"
            )
        return None


def _short(text: str, limit: int = 160) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 3] + "..."
