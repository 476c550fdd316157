"""Per-call accounting on the story: one stream entry per model call (tokens, cost, provider, model,
latency, cache hit, offline), read back by `wave llm calls ID` and by `wave status` / `wave events`.

The story hash's ``cost_usd``, ``llm_tokens`` and ``llm_calls`` are added to by the budget's settle
script, in the same step that moves the spend, so the two never disagree.
"""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass
from typing import Any, cast

from redis import Redis

from ..batch import Batch
from ..keys import Keys
from ..money import to_nusd
from .types import LLMResponse

CALLS_MAXLEN = 10_000  # per story; a story making more calls than this has other problems
TOKEN_KINDS = ("input", "output", "cache_read", "cache_write")  # the `kind` label of wave_llm_tokens


def call_entry(response: LLMResponse, *, role: str, at: float | None = None) -> dict[str, str]:
    usage = response.usage
    return {
        "id": uuid.uuid4().hex,  # redis-py resends an XADD whose reply was lost: readers skip the copy
        "at": f"{time.time() if at is None else at:.6f}",
        "task": response.task.value,
        "role": role,
        "provider": str(response.provider),
        "model": response.model,
        "input_tokens": str(usage.input_tokens),
        "output_tokens": str(usage.output_tokens),
        "cache_read_tokens": str(usage.cache_read_tokens),
        "cache_write_tokens": str(usage.cache_write_tokens),
        "cost_usd": f"{response.cost_usd:.9f}",
        "latency_ms": f"{response.latency_ms:.1f}",
        "cache_hit": "1" if response.cache_hit else "0",
        "offline": "1" if response.offline else "0",
        "fallback_from": str(response.fallback_from or ""),
    }


def record_call(target: Redis | Batch, keys: Keys, story: str, entry: dict[str, str]) -> None:
    """Append one call to the story's calls stream (now, or queued on a Batch)."""
    fields: dict[Any, Any] = entry
    if isinstance(target, Batch):
        target.command("xadd", keys.story_llm_calls(story), fields, maxlen=CALLS_MAXLEN, approximate=True)
    else:
        target.xadd(keys.story_llm_calls(story), fields, maxlen=CALLS_MAXLEN, approximate=True)


def count_call(batch: Batch, keys: Keys, response: LLMResponse) -> None:
    """Queue the fleet-wide metric counts of one answered call (a cache hit is a call at no cost
    and no tokens: nothing was spent on it)."""
    key, provider, usage = keys.metric_llm(), str(response.provider), response.usage
    batch.command("hincrby", key, f"{provider}:calls:{1 if response.offline else 0}", 1)
    if response.cache_hit:
        return
    batch.command("hincrby", key, f"{provider}:cost_nusd", to_nusd(response.cost_usd))
    for kind in TOKEN_KINDS:
        batch.command("hincrby", key, f"{provider}:tokens:{kind}", getattr(usage, f"{kind}_tokens"))


def story_calls(redis: Redis, keys: Keys, story: str) -> list[dict[str, str]]:
    """The story's calls, oldest first, each once (an entry written twice by a resent XADD is one)."""
    entries = cast(list[tuple[str, dict[str, str]]], redis.xrange(keys.story_llm_calls(story)))
    seen: set[str] = set()
    calls = []
    for _id, fields in entries:
        call = fields.get("id", _id)
        if call not in seen:
            seen.add(call)
            calls.append(fields)
    return calls


@dataclass(frozen=True)
class CallTotals:
    calls: int
    cache_hits: int
    tokens: int
    cost_usd: float

    @classmethod
    def of(cls, entries: list[dict[str, str]]) -> CallTotals:
        tokens = sum(
            int(e[f])
            for e in entries
            if e.get("cache_hit") != "1"
            for f in ("input_tokens", "output_tokens", "cache_read_tokens", "cache_write_tokens")
        )
        return cls(
            len(entries),
            sum(e.get("cache_hit") == "1" for e in entries),
            tokens,
            sum(float(e["cost_usd"]) for e in entries),
        )


def format_call(entry: dict[str, str]) -> str:
    """One line per call, for `wave status ID` / `wave events ID` / `wave llm calls ID`."""
    stamp = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(float(entry["at"])))
    offline = entry.get("offline") == "1"
    who = f"OFFLINE {entry['model']}" if offline else f"{entry['provider']} {entry['model']}"
    cache = f"cache r{entry['cache_read_tokens']}/w{entry['cache_write_tokens']}"
    tokens = f"in {entry['input_tokens']} ({cache}) out {entry['output_tokens']}"
    cost = float(entry["cost_usd"])
    extra = " cache-hit" if entry.get("cache_hit") == "1" else f" {float(entry['latency_ms']):.0f}ms"
    if entry.get("fallback_from"):
        extra += f" fallback-from={entry['fallback_from']}"
    return f"{stamp}  llm_call     {entry['task']:<24} {who:<32} {tokens}  ${cost:.6f}{extra}"
