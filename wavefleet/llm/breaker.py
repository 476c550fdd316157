"""The fleet-wide circuit breaker of each provider, kept in Redis so every worker fails over together.

A provider's consecutive failures are counted in one hash. At the threshold the breaker opens for a
cool-down (Redis's clock, so workers on different machines agree); while open, calls go to the other
provider. After the cool-down exactly one call is let through as the probe: its success closes the
breaker, its failure opens it for another cool-down.
"""

from __future__ import annotations

import uuid
from enum import StrEnum
from typing import Any, cast

from redis import Redis

from ..batch import Batch
from ..keys import ONCE_TTL_S, Keys

# KEYS: breaker, probe lock. ARGV: probe lock ttl ms, probe token.
_STATE = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local open_until = tonumber(redis.call('HGET', KEYS[1], 'open_until') or '0')
if open_until == 0 then return {'closed', 0} end
if now < open_until then return {'open', open_until - now} end
if redis.call('SET', KEYS[2], ARGV[2], 'NX', 'PX', ARGV[1]) then return {'probe', 0} end
if redis.call('GET', KEYS[2]) == ARGV[2] then return {'probe', 0} end  -- resent: the probe is ours
return {'open', 0}
"""

# KEYS: breaker, probe lock, this failure's once-key. ARGV: threshold, cool-down ms, once-key TTL s.
# Returns the consecutive failure count. The once-key makes a resent script (redis-py resends after
# a lost reply) count its failure once: two would open the breaker after one real failure.
_FAILURE = """
if not redis.call('SET', KEYS[3], '1', 'NX', 'EX', ARGV[3]) then
  return tonumber(redis.call('HGET', KEYS[1], 'failures'))
end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local failures = redis.call('HINCRBY', KEYS[1], 'failures', 1)
if failures >= tonumber(ARGV[1]) then
  if not redis.call('HGET', KEYS[1], 'open_until') then redis.call('HINCRBY', KEYS[1], 'opened', 1) end
  redis.call('HSET', KEYS[1], 'open_until', now + tonumber(ARGV[2]), 'opened_at', now)
  redis.call('DEL', KEYS[2])
end
return failures
"""

# KEYS: breaker, probe lock. ARGV: 'probe' when this call was the probe. A success of an ordinary
# call resets the count but does not close a breaker another worker opened meanwhile.
_SUCCESS = """
if ARGV[1] == 'probe' then
  redis.call('HDEL', KEYS[1], 'open_until', 'opened_at')
  redis.call('HSET', KEYS[1], 'failures', 0)
  redis.call('DEL', KEYS[2])
  return 1
end
if not redis.call('HGET', KEYS[1], 'open_until') then redis.call('HSET', KEYS[1], 'failures', 0) end
return 0
"""


class BreakerState(StrEnum):
    CLOSED = "closed"  # calls go to the provider
    OPEN = "open"  # calls go elsewhere until the cool-down passes
    PROBE = "probe"  # cool-down over: this caller sends the one probe call


def parse_state(reply: Any) -> tuple[BreakerState, float]:
    state, left_ms = reply
    return BreakerState(state), int(left_ms) / 1000


class Breakers:
    def __init__(
        self, redis: Redis, keys: Keys, *, threshold: int, cooldown_s: float, probe_ttl_s: float
    ) -> None:
        self.redis = redis
        self.keys = keys
        self.threshold = threshold
        self.cooldown_ms = int(cooldown_s * 1000)
        self.probe_ttl_ms = max(1, int(probe_ttl_s * 1000))
        self._state = redis.register_script(_STATE)
        self._failure = redis.register_script(_FAILURE)
        self._success = redis.register_script(_SUCCESS)

    def _keys(self, provider: str) -> list[str]:
        return [self.keys.llm_breaker(provider), self.keys.llm_probe(provider)]

    def state(self, provider: str) -> tuple[BreakerState, float]:
        """The breaker's state for this caller, and the seconds left of an open breaker's cool-down."""
        return parse_state(self._state(keys=self._keys(provider), args=[self.probe_ttl_ms, uuid.uuid4().hex]))

    def queue_state(self, batch: Batch, provider: str) -> int:
        """Queue `state()` on `batch`; pass its reply to `parse_state()`."""
        return batch.script(self._state, self._keys(provider), [self.probe_ttl_ms, uuid.uuid4().hex])

    def failure(self, provider: str) -> int:
        """Count one failure; returns the consecutive count (the breaker opens at the threshold)."""
        keys = [*self._keys(provider), self.keys.once(uuid.uuid4().hex)]
        return int(self._failure(keys=keys, args=[self.threshold, self.cooldown_ms, ONCE_TTL_S]))

    def success(self, provider: str, *, probe: bool, batch: Batch | None = None) -> None:
        """Record a success (queued on `batch` when given)."""
        args = ["probe" if probe else "call"]
        if batch is not None:
            batch.script(self._success, self._keys(provider), args)
        else:
            self._success(keys=self._keys(provider), args=args)

    def release_probe(self, provider: str) -> None:
        self.redis.delete(self.keys.llm_probe(provider))

    def snapshot(self, provider: str) -> dict[str, str]:
        return cast(dict[str, str], self.redis.hgetall(self.keys.llm_breaker(provider)))
