"""`wave review` (the actions waiting for a human) and the action half of `wave approve` / `wave reject`.

`wave approve ID` and `wave reject ID` take a story id (a held story, as before) or an action id from
`wave review` (`act-` and 12 hex digits, which no story id is): approving an action lets the story's
stage run exactly that action once; rejecting it refuses it (the agent sees the refusal). Either way
the held story resumes.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from typing import Any, Literal

from ..app_like import AppLike
from ..errors import ExitCode, NotFoundError
from ..lifecycle import Event, EventKind, Rejected
from ..status_view import age, show
from .review import ReviewQueue, is_action_id

__all__ = ["add_commands", "decide_action", "is_action_id"]


def _queue(app: AppLike) -> ReviewQueue:
    return ReviewQueue(app.store.redis, app.settings.keys, approval_ttl_s=app.settings.safety.approval_ttl_s)


def add_commands(sub: Any) -> None:
    """Register `review` on the `wave` parser's subparsers."""
    p = sub.add_parser("review", help="the actions the safety gate holds for a human (approve/reject them)")
    p.add_argument("--json", action="store_true", help="one JSON object per action, all fields")
    p.set_defaults(handler=cmd_review)


def cmd_review(app: AppLike, args: argparse.Namespace) -> int:
    pending = _queue(app).pending()
    if args.json:
        for action in pending:
            sys.stdout.write(action.model_dump_json() + "\n")  # data as it is: no terminal_safe
        return ExitCode.OK
    if not pending:
        show("review: no action waits for a human")
        return ExitCode.OK
    now = time.time()
    show(f"{'ACTION':<16} {'STORY':<12} {'ROLE':<4} {'RND':>3} {'AGE':>4} {'SCORE':>5} TOOL")
    for a in pending:
        show(
            f"{a.id:<16} {a.story:<12} {a.role:<4} {a.round:>3} {age(now - a.at):>4} {a.score:>5.2f} {a.tool}"
        )
        # in full: a human approves exactly what runs, so nothing of it is cut off; ASCII escapes make
        # a look-alike letter or an invisible character visible (`\u0430`, `\u200b`)
        show(f"{'':<16} args: {json.dumps(a.args, sort_keys=True, ensure_ascii=True)}")
        show(f"{'':<16} why:  {a.reason}")
    show("approve: wave approve ACTION   refuse: wave reject ACTION   (the story resumes either way)")
    return ExitCode.OK


def decide_action(app: AppLike, ident: str, verdict: Literal["approve", "reject"], reason: str) -> int:
    """Approve or reject a queued action, then resume its held story (its stage replays the action)."""
    action = _queue(app).decide(ident, verdict)
    what = "approved: it runs once" if verdict == "approve" else "rejected: the agent is refused"
    note = f"action {ident} ({action.tool}) {what}; {reason}"
    try:
        outcome = app.store.apply(action.story, Event(EventKind.APPROVE, reason=note))
    except (Rejected, NotFoundError) as exc:  # cancelled, resumed or deleted meanwhile: the verdict
        # waits for a replay of the action, if any (and expires)
        show(f"{ident}: {verdict}d; story {action.story} not resumed: {exc}")
        return ExitCode.OK
    show(f"{ident}: {verdict}d; {action.story}: {outcome.before.state} -> {outcome.after.state}")
    return ExitCode.OK
