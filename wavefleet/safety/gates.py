"""Keyword gates: the one regex pass that says which rules' keywords a text holds.

A rule's pattern is only tried when one of its gate words occurs in the text; finding every gate
word of every rule in one `findall` is several times cheaper than a substring test per rule word.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

__all__ = ["Gate"]


class Gate:
    """The union of some rules' gate words, compiled once; `present(text)` is the words found."""

    def __init__(self, words: Iterable[str]) -> None:
        unique = sorted(set(words), key=lambda w: (-len(w), w))  # longest first: "||" before "|"
        self.pattern = re.compile("|".join(re.escape(w) for w in unique))

    def present(self, text: str) -> frozenset[str]:
        return frozenset(self.pattern.findall(text))
