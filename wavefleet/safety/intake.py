"""The story intake check: a story whose text holds a prompt injection or a credential is flagged.

Run at `wave enqueue`, on the story as the operator gave it; the story is then stored redacted (a
credential in a story must reach no log, event, Slack post or model) with the names of the rules that
fired, and the supervisor holds a flagged story instead of planning it (`wave approve ID` plans it,
`wave reject ID` kills it).
"""

from __future__ import annotations

from ..redact import CREDENTIALS
from ..stories import Story
from .injection import find_injection

SHAPE_RULE = "secret."  # a credential shape's rule name: secret.aws_access_key_id, ...


def _texts(story: Story) -> list[str]:
    return [story.title, story.description, *story.acceptance_criteria]


def story_flags(story: Story) -> tuple[str, ...]:
    """The rules the story's text trips, injection rules first (empty: the story may be planned)."""
    injection: set[str] = set()
    shapes: set[str] = set()
    texts = _texts(story)
    for text in texts:  # credentials one field at a time: no key is made of two fields' ends
        shapes.update(CREDENTIALS.find(text))
    # a phrase is read as the planner reads the story, fields one after another: an author who
    # splits "ignore all previous" / "instructions" across the title and the description is caught
    injection.update(find_injection("\n".join(texts)))
    return (*sorted(injection), *(SHAPE_RULE + name for name in sorted(shapes)))


def redacted(story: Story) -> Story:
    """`story` with every credential in its text blanked (not re-validated: `[redacted]` may be a
    few characters longer than what it replaced)."""
    clean = CREDENTIALS.text
    return story.model_copy(
        update={
            "title": clean(story.title),
            "description": clean(story.description),
            "acceptance_criteria": tuple(clean(line) for line in story.acceptance_criteria),
        }
    )


def hold_reason(flags: tuple[str, ...]) -> str:
    """Why the story is held, naming the rules, and how to go on."""
    return (
        f"story intake flagged {', '.join(flags)}: held before planning "
        "(`wave approve ID` plans it, `wave reject ID` kills it)"
    )
