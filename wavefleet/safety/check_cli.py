"""`wave safety check`: tool calls as JSON lines on stdin, one decision per line on stdout (scripts, CI).

`--rules-only` asks the rule layer alone (no Redis, no model). A malformed line gets an error line of
its own (`{"error": ...}`) and the exit code says some failed; a blocked call is a result, not a
failure (exit 0).
"""

from __future__ import annotations

import argparse
import io
import json
import sys
from typing import IO, Any

from pydantic import ValidationError

from ..errors import ExitCode
from .rules import evaluate
from .types import ActionCall

__all__ = ["add_check_commands", "check_lines"]

_FIELDS = ("tool", "args", "story", "domain", "role", "branch")


def add_check_commands(sub: Any) -> None:
    """Register `safety check` on the `wave` parser's subparsers."""
    p = sub.add_parser("safety", help="the safety gate: check tool calls (wave safety check --help)")
    safety = p.add_subparsers(dest="safety_command", required=True, metavar="SUBCOMMAND")
    c = safety.add_parser(
        "check",
        help='JSON lines {"tool": ..., "args": {...}} on stdin -> one decision per line on stdout',
        description="Each input line is a tool call; each output line has decision (allow|escalate|block), "
        "score (1 = safe), rules (those that fired), reason and decided (false: the rules have no opinion, "
        "the judge would be asked). Exit 0 when every line was read, 65 when a line was malformed.",
    )
    c.add_argument("--rules-only", action="store_true", help="the deterministic rule layer alone (no judge)")
    c.set_defaults(handler=cmd_check)


def cmd_check(app: Any, args: argparse.Namespace) -> int:
    if not args.rules_only:
        sys.stderr.write(
            "wave safety check: the full gate (rules, judge, review queue) runs inside the workers, "
            "charged to a story's budget; from the command line use --rules-only\n"
        )
        return int(ExitCode.USAGE)
    # Bytes that are not UTF-8 become U+FFFD in that line's call, never a traceback.
    source = io.TextIOWrapper(sys.stdin.buffer, encoding="utf-8", errors="replace")
    return check_lines(source, sys.stdout)


def check_lines(source: IO[str], out: IO[str]) -> int:
    """Decide each JSON line of `source` onto `out`; INVALID_INPUT if any line was malformed."""
    failed = False
    for number, line in enumerate(source, start=1):
        if not line.strip():
            continue
        try:
            call = _parse(line)
        except ValueError as exc:
            failed = True
            out.write(json.dumps({"error": f"line {number}: {exc}"}) + "\n")
            out.flush()
            continue
        decision = evaluate(call)
        result = {
            "decision": decision.decision.value,
            "score": decision.score,
            "rules": list(decision.rules),
            "reason": decision.reason,
            "decided": decision.decided,
        }
        out.write(json.dumps(result) + "\n")
        out.flush()
    return int(ExitCode.INVALID_INPUT if failed else ExitCode.OK)


def _parse(line: str) -> ActionCall:
    try:
        value = json.loads(line)
    except json.JSONDecodeError as exc:
        raise ValueError(f"not JSON ({exc.msg} at column {exc.colno})") from None
    if not isinstance(value, dict):
        raise ValueError(f'expected an object {{"tool": ..., "args": {{...}}}}, got {type(value).__name__}')
    unknown = sorted(set(value) - set(_FIELDS))
    if unknown:
        raise ValueError(f"unknown field {unknown[0]!r} (fields: {', '.join(_FIELDS)})")
    try:
        return ActionCall.model_validate(value)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "call"
        raise ValueError(f"{where}: {first['msg']}") from None
