"""The review queue: escalated actions waiting for a human, and the human's one-use verdict on each.

An action is known by the sha256 of its exact form (tool and the canonical JSON of its arguments as
they run: keys sorted, every character kept), per story. `wave approve ACTION-ID` stores `approve`
under that digest (with a TTL) and removes the action from the queue in one script; the story's stage,
replaying the action, consumes the verdict with GETDEL: one approval runs one action once, never a
similar one, and expires unused.
"""

from __future__ import annotations

import hashlib
import json
import time
from typing import Any, Literal, cast

from pydantic import BaseModel, ConfigDict
from redis import Redis

from ..errors import InvalidInputError, NotFoundError
from ..keys import Keys
from .types import ActionCall

ACTION_ID_PREFIX = "act-"
ACTION_ID_HEX = 12
Verdict = Literal["approve", "reject"]


def action_digest(action: ActionCall) -> str:
    """The sha256 of the exact action: any difference in tool or arguments differs. Not normalised:
    `ex\u0430mple.com` (a Cyrillic "a") or a zero-width space in a branch name is another action that
    runs differently, so an approval of one must not run the other."""
    canonical = json.dumps(action.args, sort_keys=True, separators=(",", ":"), ensure_ascii=True, default=str)
    return hashlib.sha256(f"{action.tool}\n{canonical}".encode()).hexdigest()


def action_id(story: str, digest: str) -> str:
    """The short id an operator types: unique per story and action."""
    return ACTION_ID_PREFIX + hashlib.sha256(f"{story}\n{digest}".encode()).hexdigest()[:ACTION_ID_HEX]


def is_action_id(text: str) -> bool:
    tail = text[len(ACTION_ID_PREFIX) :]
    return (
        text.startswith(ACTION_ID_PREFIX)
        and len(tail) == ACTION_ID_HEX
        and all(c in "0123456789abcdef" for c in tail)
    )


class PendingAction(BaseModel):
    """One escalated action and its context, as `wave review` shows it."""

    model_config = ConfigDict(frozen=True)

    id: str
    digest: str
    story: str
    domain: str
    role: str
    round: int
    tool: str
    args: dict[str, Any]
    score: float
    rules: tuple[str, ...]
    reason: str
    at: float


# Take the action off the queue and store the human's verdict on it; nothing if another operator
# decided it first (HDEL is the one winner).
_DECIDE = """
if redis.call('HDEL', KEYS[1], ARGV[1]) == 0 then return 0 end
redis.call('SET', KEYS[2], ARGV[2], 'EX', tonumber(ARGV[3]))
return 1
"""


class ReviewQueue:
    def __init__(self, redis: Redis, keys: Keys, *, approval_ttl_s: int) -> None:
        self.redis = redis
        self.keys = keys
        self.approval_ttl_s = approval_ttl_s

    def submit(
        self, action: ActionCall, *, round_: int, score: float, rules: tuple[str, ...], reason: str
    ) -> PendingAction:
        """Queue an escalated action (the same action of a story again: the same entry, refreshed)."""
        digest = action_digest(action)
        pending = PendingAction(
            id=action_id(action.story, digest),
            digest=digest,
            story=action.story,
            domain=action.domain,
            role=action.role,
            round=round_,
            tool=action.tool,
            args=action.args,  # as it runs: the human approves what runs, not its normal form
            score=score,
            rules=rules,
            reason=reason,
            at=time.time(),
        )
        self.redis.hset(self.keys.safety_review(), pending.id, pending.model_dump_json())
        return pending

    def pending(self) -> list[PendingAction]:
        raw = cast(dict[str, str], self.redis.hgetall(self.keys.safety_review()))
        return sorted((PendingAction.model_validate_json(v) for v in raw.values()), key=lambda p: p.at)

    def decide(self, ident: str, verdict: Verdict) -> PendingAction:
        """Approve or reject a queued action (atomically: two operators cannot both decide it)."""
        if not is_action_id(ident):
            raise InvalidInputError(
                f"{ident!r} is not an action id (act- and {ACTION_ID_HEX} hex digits; see wave review)"
            )
        raw = cast(str | None, self.redis.hget(self.keys.safety_review(), ident))
        pending = PendingAction.model_validate_json(raw) if raw else None
        if pending is not None:
            verdict_key = self.keys.safety_verdict(pending.story, pending.digest)
            args = (self.keys.safety_review(), verdict_key, ident, verdict, self.approval_ttl_s)
            if not self.redis.eval(_DECIDE, 2, *args):
                pending = None
        if pending is None:
            raise NotFoundError(f"no action {ident} waits for review (see wave review)")
        return pending

    def consume(self, story: str, digest: str) -> Verdict | None:
        """A human's verdict on this exact action of this story, used up by reading it."""
        raw = cast(str | None, self.redis.getdel(self.keys.safety_verdict(story, digest)))
        return "approve" if raw == "approve" else "reject" if raw == "reject" else None
