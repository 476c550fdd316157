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

from ..batch import Batch
from ..keys import Keys
from .types import Completion, LLMRequest

CLEAR_BATCH = 500
CLEAR_MAX_ROUNDS = 100_000  # a bound on the SCAN loop: 50 M keys


def canonical_json(request: LLMRequest) -> str:
    """The request's content (system, messages, tools, sampling parameters) as one stable text.

    ASCII-only, so its length in bytes is never below the UTF-8 size of the content (estimates use it).
    """
    body = request.model_dump(mode="json", exclude={"task", "max_tokens", "use_cache", "cache_key"})
    return json.dumps(body, sort_keys=True, separators=(",", ":"))


def request_digest(provider: str, model: str, max_tokens: int, canonical: str) -> str:
    """The cache key of a request on one provider and model: any difference gives another key."""
    return hashlib.sha256(f"{provider}\n{model}\n{max_tokens}\n{canonical}".encode()).hexdigest()


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

    def queue_get(self, batch: Batch, digest: str) -> int | None:
        """Queue the lookup of this exact request on `batch` (None when the cache is off)."""
        return batch.command("get", self.keys.llm_cache(digest)) if self.enabled else None

    @staticmethod
    def parse(raw: str | None) -> Completion | None:
        return Completion.model_validate_json(raw) if raw else None

    def count(self, target: Redis | Batch, *, provider: str, role: str, hit: bool) -> None:
        """Count one lookup as a hit or a miss, now or queued on a Batch."""
        if not self.enabled:
            return
        field = f"{provider}:{role}:{'hit' if hit else 'miss'}"
        if isinstance(target, Batch):
            target.command("hincrby", self.keys.llm_cache_stats(), field, 1)
        else:
            target.hincrby(self.keys.llm_cache_stats(), field, 1)

    def put(self, digest: str, completion: Completion, *, batch: Batch | None = None) -> None:
        """Store a successful reply (queued on `batch` when given)."""
        if not self.enabled:
            return
        key, value = self.keys.llm_cache(digest), completion.model_dump_json()
        if batch is not None:
            batch.command("set", key, value, ex=self.ttl_s)
        else:
            self.redis.set(key, value, ex=self.ttl_s)

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
