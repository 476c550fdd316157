"""The stuck detector's three patterns, exactly as defined in workers/agent/stuck.py."""

from __future__ import annotations

import pytest

from wavefleet.llm.types import ToolCall, ToolResult
from workers.agent.stuck import StuckDetector

Step = tuple[str, dict[str, object], str, bool]  # tool, arguments, result, is_error


def feed(steps: list[Step], repeats: int = 3) -> list[str | None]:
    detector = StuckDetector(repeats)
    return [
        detector.observe(
            ToolCall(id=str(i), name=n, arguments=a), ToolResult(tool_call_id=str(i), content=r, is_error=e)
        )
        for i, (n, a, r, e) in enumerate(steps)
    ]


A: Step = ("read_file", {"path": "a.py", "offset": 0}, "x = 1", False)
A_REORDERED: Step = ("read_file", {"offset": 0, "path": "a.py"}, "x = 1", False)
A_CHANGED: Step = ("read_file", {"path": "a.py", "offset": 0}, "x = 2", False)
B: Step = ("list_files", {"path": "."}, "a.py", False)
C: Step = ("search", {"pattern": "x"}, "a.py:1: x = 1", False)
E1: Step = ("read_file", {"path": "gone.py"}, "gone.py: no such file", True)
E2: Step = ("read_file", {"path": "gone.py", "offset": 5}, "gone.py: no such file", True)
E3: Step = ("edit_file", {"path": "gone.py", "old_text": "a", "new_text": "b"}, "gone.py: no such file", True)


@pytest.mark.parametrize(
    ("steps", "stops_at", "reason"),
    [
        ([A, A_REORDERED, A], 2, "the same call read_file"),  # canonical arguments: key order is no matter
        ([A, A, A_CHANGED, A], None, None),  # a new result is progress
        ([A, A, B, A, A], None, None),
        ([E1, E2, E3], 2, "the same error 3 times in a row: gone.py: no such file"),
        ([E1, E2, B, E3], None, None),
        ([A, B, A, B, A, B], 5, "ping-pong between read_file"),
        ([A, B, A, B, A], None, None),  # five steps are not yet six
        ([A, B, A, C, A, B], None, None),
        ([A, B, A, B, A_CHANGED, B], None, None),  # A's result changed: progress
        ([C, A, B, A, B, A, B], 6, "for 6 steps"),
    ],
)
def test_each_pattern_stops_exactly_when_defined(
    steps: list[Step], stops_at: int | None, reason: str | None
) -> None:
    reasons = feed(steps)
    stopped = [i for i, r in enumerate(reasons) if r is not None]
    assert stopped[:1] == ([] if stops_at is None else [stops_at])
    if reason is not None:
        assert reason in str(reasons[stops_at])  # type: ignore[index]


def test_silence_counts_as_the_same_error() -> None:
    detector = StuckDetector(3)
    assert detector.observe_silence("call a tool") is None
    assert detector.observe_silence("call a tool") is None
    assert "without calling a tool 3 times" in str(detector.observe_silence("call a tool"))
