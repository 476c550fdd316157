"""A story's history: the entries of its events stream, copied to the fleet-wide stream.

The one writer of both streams, for transitions (the store), budget alerts (the budget) and notes
such as a cancelled stage, so every entry has the same shape and the fleet stream stays capped.
"""

from __future__ import annotations

from typing import Any

from redis.client import Pipeline

from .keys import Keys
from .redact import process_redactor

EVENTS_MAXLEN = 100_000  # fleet-wide event stream is capped (approximately); per-story streams are not


class History:
    def __init__(self, keys: Keys) -> None:
        self.keys = keys

    def add(self, pipe: Pipeline, story_id: str | None, fields: dict[str, Any], now: float) -> None:
        """Add one entry to `pipe`: on the story's stream (if it is about a story) and the fleet's,
        every value redacted (a reason quotes model output, an error, a story's text)."""
        redactor = process_redactor()
        entry: dict[Any, Any] = {
            **{k: redactor.text(str(v)) for k, v in fields.items()},
            "story": story_id or "",
            "at": f"{now:.6f}",
        }
        if story_id:
            pipe.xadd(self.keys.story_events(story_id), entry)
        pipe.xadd(self.keys.events(), entry, maxlen=EVENTS_MAXLEN, approximate=True)
