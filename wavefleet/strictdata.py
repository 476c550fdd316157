"""Strict readers for YAML and JSON written by users: no aliases, no duplicate keys, one-line errors.

A YAML alias is a pointer, so a few hundred bytes of nested aliases expand into gigabytes once
printed or validated (the "billion laughs"); a duplicate key makes YAML and JSON keep the last value
silently, so the text a reviewer read is not what runs. Both are refused while the document is read,
before anything is built from it, with a ValueError naming the line.
"""

from __future__ import annotations

import json
from typing import Any

import yaml
from yaml.events import AliasEvent
from yaml.nodes import MappingNode, Node


class _StrictLoader(yaml.SafeLoader):
    """PyYAML's safe loader, refusing aliases as they are composed and duplicate mapping keys."""

    def compose_node(self, parent: Node | None, index: int) -> Node | None:
        event = self.peek_event()  # type: ignore[no-untyped-call]
        if isinstance(event, AliasEvent):
            raise ValueError(
                f"{_line(event.start_mark)}YAML aliases (*{event.anchor}) are not accepted; "
                f"write the value out"
            )
        if getattr(event, "anchor", None) is not None:
            raise ValueError(f"{_line(event.start_mark)}YAML anchors (&{event.anchor}) are not accepted")
        node: Node | None = super().compose_node(parent, index)
        return node

    def construct_mapping(self, node: MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: set[Any] = set()
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":
                raise ValueError(
                    f"line {key_node.start_mark.line + 1}: YAML merge keys (<<) are not accepted"
                )
            key = self.construct_object(key_node, deep=True)
            try:
                duplicate = key in seen
            except TypeError:  # an unhashable key: the constructor names it below
                break
            if duplicate:
                raise ValueError(f"line {key_node.start_mark.line + 1}: duplicate key {key!r}")
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


def _line(mark: Any) -> str:
    return f"line {mark.line + 1}: " if mark is not None else ""


def load_yaml(text: str) -> Any:
    """Parse YAML safely; an alias, anchor, merge key or duplicate key raises ValueError naming the line
    (a syntax error raises yaml.YAMLError, as yaml.safe_load does)."""
    return yaml.load(text, Loader=_StrictLoader)  # noqa: S506 (a SafeLoader subclass)


def load_json(text: str) -> Any:
    """Parse JSON; a duplicate key in any object raises ValueError naming it and its line."""
    return json.loads(text, object_pairs_hook=_unique_pairs(text))


def _unique_pairs(text: str) -> Any:
    def build(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
        result: dict[str, Any] = {}
        for key, value in pairs:
            if key in result:
                raise ValueError(f"{_json_line(text, key)}duplicate key {key!r}")
            result[key] = value
        return result

    return build


def _json_line(text: str, key: str) -> str:
    """`line N: ` of the key's second occurrence (json gives no position to an object hook)."""
    quoted = json.dumps(key)
    first = text.find(quoted)
    second = text.find(quoted, first + 1) if first >= 0 else -1
    return f"line {text.count(chr(10), 0, second) + 1}: " if second >= 0 else ""
