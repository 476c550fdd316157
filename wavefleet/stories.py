"""User stories: the pydantic model, and reading them from CLI arguments or a YAML/JSON file."""

from __future__ import annotations

import json
from collections.abc import Iterable
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, StringConstraints, ValidationError

from .domains import STORY_ID
from .errors import InvalidInputError, NotFoundError

MAX_FILE_BYTES = 5_000_000
MAX_STORIES_PER_FILE = 1000

Line = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=1000)]
Label = Annotated[str, StringConstraints(strip_whitespace=True, pattern=r"^[A-Za-z0-9:._=-]{1,64}$")]


class Priority(StrEnum):
    LOW = "low"
    NORMAL = "normal"
    HIGH = "high"
    URGENT = "urgent"


class Story(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, str_strip_whitespace=True)

    id: str = Field(pattern=STORY_ID.pattern, max_length=64)
    title: str = Field(min_length=1, max_length=200)
    description: str = Field(default="", max_length=20_000)
    acceptance_criteria: tuple[Line, ...] = Field(default=(), max_length=50)
    priority: Priority = Priority.NORMAL
    labels: tuple[Label, ...] = Field(default=(), max_length=20)

    @property
    def prefix(self) -> str:
        return self.id.split("-", 1)[0]


def story_from_fields(fields: dict[str, Any]) -> Story:
    """Build one story (from CLI arguments); a problem raises InvalidInputError naming the field."""
    problems = _validate(fields, where="")
    if problems:
        raise InvalidInputError("\n".join(problems))
    return Story.model_validate(fields)


def stories_from_file(path: Path) -> list[Story]:
    """Read one story or a list of stories; every problem is reported, and none is accepted."""
    raw = _read(path)
    items = _items(raw, path)
    problems: list[str] = []
    stories: list[Story] = []
    for index, item in enumerate(items, start=1):
        named = isinstance(item, dict) and "id" in item
        where = f"{path}: story {index}" + (f" ({_shown(item['id'])})" if named else "")
        if not isinstance(item, dict):
            problems.append(f"{where}: must be a mapping of fields (id, title, ...)")
            continue
        item_problems = _validate(item, where=where + ": ")
        problems.extend(item_problems)
        if not item_problems:
            stories.append(Story.model_validate(item))
    problems.extend(_duplicates(items, path))
    if problems:
        raise InvalidInputError("\n".join(problems))
    return stories


def _read(path: Path) -> Any:
    if not path.is_file():
        raise NotFoundError(f"{path}: no such story file")
    if path.stat().st_size > MAX_FILE_BYTES:
        raise InvalidInputError(f"{path}: larger than {MAX_FILE_BYTES} bytes; split it into several files")
    text = path.read_text(encoding="utf-8", errors="replace")
    try:
        if path.suffix.lower() == ".json":
            return json.loads(text)
        return yaml.safe_load(text)
    except (ValueError, RecursionError, yaml.YAMLError) as exc:
        # ValueError: JSON syntax, a YAML date like 2024-13-45, an integer of over 4300 digits;
        # RecursionError: nesting too deep for the parser.
        detail = (str(exc).splitlines() or [type(exc).__name__])[0]
        raise InvalidInputError(f"{path}: not valid YAML or JSON ({detail})") from None


def _items(raw: Any, path: Path) -> list[Any]:
    if isinstance(raw, dict) and "stories" in raw and len(raw) == 1:
        raw = raw["stories"]
    items = [raw] if isinstance(raw, dict) else raw
    if not isinstance(items, list) or not items:
        raise InvalidInputError(
            f"{path}: expected a story (a mapping with id and title) or a non-empty list of stories"
        )
    if len(items) > MAX_STORIES_PER_FILE:
        raise InvalidInputError(f"{path}: {len(items)} stories; at most {MAX_STORIES_PER_FILE} per file")
    return items


def _validate(fields: dict[str, Any], where: str) -> list[str]:
    try:
        Story.model_validate(fields)
    except ValidationError as exc:
        return [_problem(where, err) for err in exc.errors()]
    return []


def _problem(where: str, err: Any) -> str:
    field = _shown(".".join(str(p) for p in err["loc"])) or "story"
    msg = err["msg"]
    if err["type"] == "string_pattern_mismatch" and field == "id":
        msg = "malformed id: use PREFIX-NNN, e.g. AUTH-001"
    elif err["type"] == "extra_forbidden":
        msg = "unknown field (known: id, title, description, acceptance_criteria, priority, labels)"
    return f"{where}{field}: {msg}"


def _shown(value: Any) -> str:
    """A value quoted from the input, kept to one line: a newline in a key or id must not split a problem."""
    text = str(value)
    return text if text.isprintable() else repr(text)


def _duplicates(items: Iterable[Any], path: Path) -> list[str]:
    first: dict[str, int] = {}
    problems = []
    for index, item in enumerate(items, start=1):
        story_id = item.get("id") if isinstance(item, dict) else None
        if not isinstance(story_id, str):
            continue
        story_id = story_id.strip()
        if story_id in first:
            problems.append(
                f"{path}: story {index} ({_shown(story_id)}): id: already used by story "
                f"{first[story_id]}; each id may appear once in a file"
            )
        else:
            first[story_id] = index
    return problems
