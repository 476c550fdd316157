"""Where agents' events go: the story's history in Redis, shown by `wave events ID`.

Only what the story should show is written: a guard that stopped the loop, a blocked or escalated
tool call, the loop's end. Not one entry per tool call: a stage makes dozens, and the model calls
are already recorded (with cost) as the story's `llm_call` entries.
"""

from __future__ import annotations

from wavefleet import logs
from wavefleet.store import StoryStore
from wavefleet.text import terminal_safe

from ..roles import StageInput

MAX_REASON_CHARS = 2000  # a reason quotes model output (an error, a call): bounded in the stream


class StoryEventSink:
    """Writes agent events into the story's events stream, tagged with the stage's role and round."""

    def __init__(self, store: StoryStore, stage: StageInput) -> None:
        self.store = store
        self.story = stage.story.id
        self.tags: dict[str, str | int | float | bool] = {
            "role": stage.role.value,
            "round": stage.round,
            "attempt": stage.attempt,
            "worker": stage.worker,
        }

    def emit(self, event: str, reason: str, **fields: str | int | float | bool) -> None:
        reason = reason[:MAX_REASON_CHARS]
        logs.get().info(event, story=self.story, reason=terminal_safe(reason), **fields)
        self.store.record_agent_event(self.story, event, reason, {**self.tags, **fields})
