"""A rule's finding: its name, what it asks for (block or escalate), a score and one line why."""

from __future__ import annotations

import posixpath
import re
from typing import NamedTuple

from ..types import Decision

__all__ = ["BLOCK", "ESCALATE", "OUTSIDE", "PROTECTED", "Hit", "block", "escalate", "is_outside_path"]

BLOCK_SCORE = 0.1
ESCALATE_SCORE = 0.6
BLOCK = Decision.BLOCK
ESCALATE = Decision.ESCALATE

# Branches other agents and people share: a push, reset, commit or delete there is refused.
PROTECTED = re.compile(
    r"(?:^|[:/])(?:main|master|trunk|develop|development|dev|release(?:[/-][\w./-]*)?|prod|production"
    r"|staging|stable|gh-pages|live)$"
)
# A path (lower case, normalised) outside the worktree: absolute, home, a parent, an env expansion.
# /tmp/<name> and the harmless devices are exempt: tools write scratch files there.
OUTSIDE = re.compile(
    r"^(?:/(?!tmp/[^/\s]|dev/(?:null|stdout|stderr|tty|fd/\d+)$)|~|\$\{?(?:home|pwd|oldpwd|user|tmpdir)\b"
    r"|\.\.(?:/|$)|[a-z]:[\\/]|\\\\)"
)


class Hit(NamedTuple):
    rule: str
    decision: Decision
    score: float
    why: str


def block(rule: str, why: str, score: float = BLOCK_SCORE) -> Hit:
    return Hit(rule, BLOCK, score, why)


def escalate(rule: str, why: str, score: float = ESCALATE_SCORE) -> Hit:
    return Hit(rule, ESCALATE, score, why)


def is_outside_path(arg: str) -> bool:
    """`arg` names a place outside the worktree (lower-case normalised text), `..` inside included."""
    if OUTSIDE.match(arg):
        return True
    if ".." in arg and arg.startswith("/"):
        return bool(OUTSIDE.match(posixpath.normpath(arg)))
    depth = 0
    for part in arg.split("/"):
        if part == "..":
            depth -= 1
            if depth < 0:
                return True
        elif part not in ("", "."):
            depth += 1
    return False
