"""The response cache: exact-match model replies in Redis, with a TTL and hit/miss counters.

The key is the sha256 of the provider, model and the whole request (system prompt, messages, tools,
max tokens, temperature, stop sequences); any change to any of them is a different key. Only
successful replies are stored. Counters are kept per provider and per agent role.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import Any, cast

from redis import Redis

from ..keys import Keys
from .types import Completion, LLMRequest

CLEAR_BATCH = 500
CLEAR_MAX_ROUNDS = 100_000  # a bound on the SCAN loop: 50 M keys

# KEYS: entry, counters. ARGV: "{provider}:{role}". One round trip for the lookup and its count.
_LOOKUP = """
local value = redis.call('GET', KEYS[1])
redis.call('HINCRBY', KEYS[2], ARGV[1] .. (value and ':hit' or ':miss'), 1)
return value
"""


def request_digest(provider: str, model: str, request: LLMRequest, max_tokens: int) -> str:
    body = request.model_dump(mode="json", exclude={"task", "max_tokens"})
    canonical = json.dumps({"provider": provider, "model": model, "max_tokens": max_tokens, **body},
                           sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(canonical.encode()).hexdigest()


@dataclass(frozen=True)
class CacheStats:
    counts: dict[tuple[str, str], tuple[int, int]]  # (provider, role) -> (hits, misses)
    entries: int

    @property
    def hits(self) -> int:
        return sum(h for h, _ in self.counts.values())

    @property
    def misses(self) -> int:
        return sum(m for _, m in self.counts.values())


class ResponseCache:
    def __init__(self, redis: Redis, keys: Keys, *, ttl_s: int, enabled: bool = True) -> None:
        self.redis = redis
        self.keys = keys
        self.ttl_s = ttl_s
        self.enabled = enabled
        self._lookup = redis.register_script(_LOOKUP)

    def get(self, digest: str, *, provider: str, role: str) -> Completion | None:
        """The stored reply for this exact request, counting the hit or miss."""
        if not self.enabled:
            return None
        raw = self._lookup(keys=[self.keys.llm_cache(digest), self.keys.llm_cache_stats()],
                           args=[f"{provider}:{role}"])
        return Completion.model_validate_json(raw) if raw else None

    def put(self, digest: str, completion: Completion, *, client: Any = None) -> None:
        """Store a successful reply (on `client`, e.g. a pipeline, when given)."""
        if self.enabled:
            target = client or self.redis
            target.set(self.keys.llm_cache(digest), completion.model_dump_json(), ex=self.ttl_s)

    def stats(self) -> CacheStats:
        counts: dict[tuple[str, str], tuple[int, int]] = {}
        raw = cast(dict[str, str], self.redis.hgetall(self.keys.llm_cache_stats()))
        for field, value in raw.items():
            provider, role, outcome = field.rsplit(":", 2)
            hits, misses = counts.get((provider, role), (0, 0))
            hit = outcome == "hit"
            counts[(provider, role)] = (hits + int(value), misses) if hit else (hits, misses + int(value))
        entries = sum(1 for _ in self._scan(limit_rounds=CLEAR_MAX_ROUNDS))
        return CacheStats(counts, entries)

    def clear(self, *, counters: bool = False) -> int:
        """Delete every cached reply (and the counters if asked); returns how many replies."""
        deleted = 0
        batch: list[str] = []
        for key in self._scan(limit_rounds=CLEAR_MAX_ROUNDS):
            batch.append(key)
            if len(batch) >= CLEAR_BATCH:
                deleted += int(self.redis.unlink(*batch))
                batch.clear()
        if batch:
            deleted += int(self.redis.unlink(*batch))
        if counters:
            self.redis.delete(self.keys.llm_cache_stats())
        return deleted

    def _scan(self, *, limit_rounds: int) -> Any:
        cursor = 0
        for _ in range(limit_rounds):
            cursor, found = self.redis.scan(cursor, match=self.keys.llm_cache_pattern(), count=CLEAR_BATCH)
            yield from found
            if cursor == 0:
                return
