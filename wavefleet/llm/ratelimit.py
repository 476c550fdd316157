"""Fleet-wide rate limits: two token buckets per provider (requests/min, tokens/min) in Redis.

One Lua script refills both buckets from Redis's clock and takes a call's request and estimated
tokens from both, or neither, and says how long to wait. A caller waits (bounded) and tries again,
or fails with RateLimitedError when the wait would be too long. After the call the estimate is
corrected to the real token count; a provider 429 blocks the provider for its retry-after.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import cast

from redis import Redis

from ..batch import Batch
from ..errors import RateLimitedError
from ..keys import Keys

MAX_ROUNDS = 1_000  # a bound on the wait loop besides the time bound
BUCKET_TTL_MS = 120_000  # an idle bucket is full again after a minute; drop it after two

# KEYS: bucket. ARGV: requests/min, tokens/min (0: no limit), requests wanted, tokens wanted.
# Returns 0 when taken, else the milliseconds to wait before both buckets hold enough.
_ACQUIRE = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local rcap, tcap = tonumber(ARGV[1]), tonumber(ARGV[2])
local want_r, want_t = tonumber(ARGV[3]), tonumber(ARGV[4])
local b = redis.call('HMGET', KEYS[1], 'req', 'tok', 'ts', 'blocked_until')
local req, tok = tonumber(b[1]) or rcap, tonumber(b[2]) or tcap
local elapsed = math.max(0, now - (tonumber(b[3]) or now))
req = math.min(rcap, req + elapsed * rcap / 60000)
tok = math.min(tcap, tok + elapsed * tcap / 60000)
local wait = math.max(0, (tonumber(b[4]) or 0) - now)
if rcap > 0 and req < want_r then wait = math.max(wait, math.ceil((want_r - req) * 60000 / rcap)) end
if tcap > 0 and tok < want_t then wait = math.max(wait, math.ceil((want_t - tok) * 60000 / tcap)) end
if wait == 0 then
  req = req - want_r
  tok = tok - want_t
end
redis.call('HSET', KEYS[1], 'req', req, 'tok', tok, 'ts', now)
redis.call('PEXPIRE', KEYS[1], ARGV[5])
return wait
"""

# KEYS: bucket. ARGV: tokens to give back (negative: take more), requests to give back. Only an
# existing bucket changes; the next refill caps both at the bucket's size.
_ADJUST = """
if redis.call('EXISTS', KEYS[1]) == 1 then
  redis.call('HINCRBYFLOAT', KEYS[1], 'tok', ARGV[1])
  if ARGV[2] ~= '0' then redis.call('HINCRBYFLOAT', KEYS[1], 'req', ARGV[2]) end
end
return 0
"""

# KEYS: bucket. ARGV: milliseconds the provider asked us to stay away.
_PENALIZE = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local current = tonumber(redis.call('HGET', KEYS[1], 'blocked_until') or '0')
redis.call('HSET', KEYS[1], 'blocked_until', math.max(current, now + tonumber(ARGV[1])))
redis.call('PEXPIRE', KEYS[1], math.max(tonumber(ARGV[2]), tonumber(ARGV[1]) + 1000))
return 0
"""


@dataclass(frozen=True)
class Limit:
    requests_per_min: int  # 0: no limit
    tokens_per_min: int  # 0: no limit


class RateLimiter:
    def __init__(
        self,
        redis: Redis,
        keys: Keys,
        limits: dict[str, Limit],
        *,
        max_wait_s: float,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.redis = redis
        self.keys = keys
        self.limits = limits
        self.max_wait_s = max_wait_s
        self._sleep = sleep
        self._acquire = redis.register_script(_ACQUIRE)
        self._adjust = redis.register_script(_ADJUST)
        self._penalize = redis.register_script(_PENALIZE)

    def _limit(self, provider: str, tokens: int) -> Limit | None:
        """The provider's limit, None if it has none; a call that can never fit is refused here."""
        limit = self.limits.get(provider)
        if limit is None or (limit.requests_per_min == 0 and limit.tokens_per_min == 0):
            return None
        if 0 < limit.tokens_per_min < tokens:
            raise RateLimitedError(
                f"{provider}: a call estimated at {tokens} tokens can never fit the limit of "
                f"{limit.tokens_per_min} tokens/min (raise WAVE_LLM__{provider.upper()}_TOKENS_PER_MIN "
                "or lower max_tokens)"
            )
        return limit

    def queue_acquire(self, batch: Batch, provider: str, tokens: int) -> int | None:
        """Queue a first try at `acquire` on `batch`; pass its reply to `acquire(first=...)`."""
        limit = self._limit(provider, tokens)
        if limit is None:
            return None
        args = [limit.requests_per_min, limit.tokens_per_min, 1, tokens, BUCKET_TTL_MS]
        return batch.script(self._acquire, [self.keys.ratelimit(provider)], args)

    def acquire(self, provider: str, tokens: int, *, first: int | None = None) -> float:
        """Take one request and `tokens` from the provider's buckets, waiting if need be (bounded).

        `first` is the reply of a try queued with `queue_acquire`. Returns the seconds waited;
        raises RateLimitedError when the wait would pass the bound.
        """
        limit = self._limit(provider, tokens)
        if limit is None:
            return 0.0
        started = time.monotonic()
        for attempt in range(MAX_ROUNDS):
            args = [limit.requests_per_min, limit.tokens_per_min, 1, tokens, BUCKET_TTL_MS]
            if attempt == 0 and first is not None:
                wait_ms = int(first)
            else:
                wait_ms = int(self._acquire(keys=[self.keys.ratelimit(provider)], args=args))
            waited = time.monotonic() - started
            if wait_ms == 0:
                return waited
            if waited + wait_ms / 1000 > self.max_wait_s:
                raise RateLimitedError(
                    f"{provider}: over the fleet's rate limit ({limit.requests_per_min} requests/min, "
                    f"{limit.tokens_per_min} tokens/min); the call would wait {wait_ms / 1000:.1f} s more, "
                    f"past WAVE_LLM__RATE_WAIT_MAX_S={self.max_wait_s:g}"
                )
            self._sleep(wait_ms / 1000 * random.uniform(1.0, 1.1))  # jitter: waiters do not wake together
        raise RateLimitedError(f"{provider}: still over the rate limit after {MAX_ROUNDS} tries")

    def settle(self, provider: str, estimated: int, actual: int, *, batch: Batch | None = None) -> None:
        """Correct the tokens taken at `acquire` to the call's real count (queued on `batch` if given)."""
        if provider not in self.limits or estimated == actual:
            return
        keys, args = [self.keys.ratelimit(provider)], [estimated - actual, 0]
        if batch is not None:
            batch.script(self._adjust, keys, args)
        else:
            self._adjust(keys=keys, args=args)

    def refund(self, provider: str, tokens: int) -> None:
        """Give back a request and its tokens taken for a call that was then not made."""
        if provider in self.limits:
            self._adjust(keys=[self.keys.ratelimit(provider)], args=[tokens, 1])

    def penalize(self, provider: str, retry_after_s: float) -> None:
        """The provider answered 429: no one in the fleet calls it for `retry_after_s`."""
        self._penalize(keys=[self.keys.ratelimit(provider)], args=[int(retry_after_s * 1000), BUCKET_TTL_MS])

    def snapshot(self, provider: str) -> dict[str, str]:
        return cast(dict[str, str], self.redis.hgetall(self.keys.ratelimit(provider)))
