"""User stories: the pydantic model, and reading them from CLI arguments or a YAML/JSON file."""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, StringConstraints, ValidationError, model_validator

from .domains import STORY_ID
from .errors import InvalidInputError, NotFoundError
from .lifecycle import Role
from .strictdata import load_json, load_yaml

MAX_FILE_BYTES = 5_000_000
MAX_STORIES_PER_FILE = 1000

Line = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=1000)]
# Printable ASCII with no spaces or control characters, at most 64: a label is shown and matched as is.
Label = Annotated[str, StringConstraints(strip_whitespace=True, pattern=r"^[A-Za-z0-9:._=-]{1,64}$")]

# `offline:*` labels steer the offline agents (workers/offline.py); their bounds keep a story from
# holding a worker for ever (slow) or looping through QA rounds the pipeline would never reach.
OFFLINE = "offline:"
MAX_SLOW_S = 3600.0
MAX_QA_FAILS = 20
SECONDS = re.compile(r"[0-9]{1,4}(\.[0-9]{1,3})?")  # plain decimal: no exponent, nan or inf
OFFLINE_GRAMMAR = (
    "offline:qa-fails=N (0-20), offline:oversize, offline:leak-secret, offline:give-up=ROLE, "
    "offline:slow=SECONDS or offline:slow=ROLE:SECONDS (at most 3600)"
)


@dataclass(frozen=True)
class OfflineLabels:
    """What a story's `offline:*` labels ask of the offline agents, parsed and bounded."""

    qa_fails: int = 0
    oversize: bool = False
    leak_secret: bool = False
    give_up: Role | None = None
    slow: dict[Role | None, float] = field(default_factory=dict)  # None: every role

    def slow_s(self, role: Role) -> float:
        """How long `role`'s stages take at least: its own label, else the one for every role."""
        return self.slow.get(role, self.slow.get(None, 0.0))


def offline_labels(labels: Iterable[str]) -> OfflineLabels:
    """Parse the `offline:*` labels (others are ignored); a bad one raises ValueError naming it."""
    found: dict[str, Any] = {"slow": {}}
    for label in labels:
        if not label.startswith(OFFLINE):
            continue
        name, has_value, value = label.removeprefix(OFFLINE).partition("=")
        try:
            key, parsed = _offline_label(name, value if has_value else None)
        except ValueError as exc:
            raise ValueError(f"label {label!r}: {exc}") from None
        slot = found["slow"] if key == "slow" else found
        sub = parsed[0] if key == "slow" else key
        if sub in slot:
            raise ValueError(f"label {label!r}: given twice; keep one")
        slot[sub] = parsed[1] if key == "slow" else parsed
    return OfflineLabels(**found)


def _offline_label(name: str, value: str | None) -> tuple[str, Any]:
    if name in ("oversize", "leak-secret"):
        if value is not None:
            raise ValueError("takes no value")
        return name.replace("-", "_"), True
    if name == "qa-fails":  # bare: one failing round, as before values were checked
        if value is not None and not (value.isascii() and value.isdigit() and int(value) <= MAX_QA_FAILS):
            raise ValueError(f"N must be a whole number from 0 to {MAX_QA_FAILS}")
        return "qa_fails", int(value) if value is not None else 1
    if name == "give-up":
        return "give_up", _role(value)
    if name == "slow":
        role, _, seconds = (value or "").rpartition(":")
        if not SECONDS.fullmatch(seconds) or float(seconds) > MAX_SLOW_S:
            raise ValueError(f"SECONDS must be a decimal number from 0 to {MAX_SLOW_S:g}")
        return "slow", (_role(role) if role else None, float(seconds))
    raise ValueError(f"unknown offline label (known: {OFFLINE_GRAMMAR})")


def _role(value: str | None) -> Role:
    if value not in {r.value for r in Role}:
        raise ValueError(f"ROLE must be one of {', '.join(r.value for r in Role)}")
    return Role(value)


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

    @model_validator(mode="after")
    def _offline_labels_parse(self) -> Story:
        # Refused here, at intake, rather than crashing or stalling an agent later.
        try:
            offline_labels(self.labels)
        except ValueError as exc:
            raise ValueError(f"story {self.id}: {exc}") from None
        return self

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
            return load_json(text)  # aliases and duplicate keys refused, naming the line
        return load_yaml(text)
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
    msg = err["msg"]
    if err["type"] == "value_error" and not err["loc"]:  # the whole-story check: the offline labels
        return f"{where}labels: {err['ctx']['error']}"
    field = _shown(".".join(str(p) for p in err["loc"])) or "story"
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
