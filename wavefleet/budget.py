"""Hard spend limits shared by the whole fleet: per story, per domain per day, and global per day.

Before a model call its estimated cost is reserved against every scope that applies, in one Lua
script that refuses the call if any scope would pass its limit; concurrent workers therefore can
never overshoot. After the call the reservation is settled to the real cost. Money is integer
nano-USD in Redis, so limits compare exactly. Crossing 50% and 80% records a warning and a critical
event; a refused call raises BudgetExceededError, a HoldStory, so the story is held with the reason.
A worker that dies between reserve and settle leaves a reservation that a later sweep frees.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, cast

from redis import Redis

from .batch import Batch
from .config import BudgetSettings
from .domains import Domain
from .errors import BudgetExceededError, InvalidInputError
from .history import EVENTS_MAXLEN, History
from .keys import ONCE_TTL_S, Keys
from .logs import get as get_log
from .money import NANO, to_nusd, to_usd
from .store import COST_FIELDS

DAILY_TTL_S = 8 * 86_400  # a day's scopes stay readable for a week
SWEEP_BATCH = 20
# The most one `wave budget grant` may add: ten times the default fleet-wide daily limits. A larger
# figure is a typo (or 1e30, which overflows Redis's 64-bit counters); grant again if it is meant.
MAX_GRANT_USD = 5_000.0
MAX_GRANT_TOKENS = 2_000_000_000
ALERT_EVENTS = {"warning": "budget_warning", "critical": "budget_critical", "exceeded": "budget_exceeded"}

# Amounts reach HINCRBY as the caller's integer strings, never as Lua numbers: Lua prints a number
# >= 1e14 as 1e+14 and a negated zero as -0, and Redis refuses both as integers.

# KEYS: reservations zset, reservation hash, scope 1..n. ARGV: id, ttl ms, nusd, tokens, n, scope keys
# JSON, then per scope: limit nusd, limit tokens, expire s (0: none). Returns {1} or {0, i, unit, used, cap}.
_RESERVE = """
if redis.call('EXISTS', KEYS[2]) == 1 then return {1} end  -- resent after a lost reply: already held
local n, est_u, est_t = tonumber(ARGV[5]), tonumber(ARGV[3]), tonumber(ARGV[4])
for i = 1, n do
  local b = 6 + (i - 1) * 3
  local h = redis.call('HMGET', KEYS[2 + i], 'spent_nusd', 'reserved_nusd', 'spent_tokens', 'reserved_tokens',
                       'grant_nusd', 'grant_tokens')
  local used_u = (tonumber(h[1]) or 0) + (tonumber(h[2]) or 0)
  local used_t = (tonumber(h[3]) or 0) + (tonumber(h[4]) or 0)
  local cap_u = tonumber(ARGV[b + 1]) + (tonumber(h[5]) or 0)
  local cap_t = tonumber(ARGV[b + 2]) + (tonumber(h[6]) or 0)
  if used_u + est_u > cap_u then return {0, i, 'usd', used_u, cap_u} end
  if used_t + est_t > cap_t then return {0, i, 'tokens', used_t, cap_t} end
end
for i = 1, n do
  local key, expire = KEYS[2 + i], tonumber(ARGV[6 + (i - 1) * 3 + 3])
  redis.call('HINCRBY', key, 'reserved_nusd', ARGV[3])
  redis.call('HINCRBY', key, 'reserved_tokens', ARGV[4])
  if expire > 0 then redis.call('EXPIRE', key, expire) end
end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('ZADD', KEYS[1], now + tonumber(ARGV[2]), ARGV[1])
redis.call('HSET', KEYS[2], 'nusd', ARGV[3], 'tokens', ARGV[4], 'scopes', ARGV[6])
redis.call('PEXPIRE', KEYS[2], tonumber(ARGV[2]) + 86400000)
return {1}
"""

# KEYS: reservations zset, reservation hash, story hash, story events, fleet events, scope 1..n. ARGV:
# id, nusd, tokens, cost usd, warn fraction, critical fraction, n, now, story id, events cap, then per
# scope: limit nusd, limit tokens, name, label, limits text; then the story hash's cost, tokens and
# calls field names (store.COST_FIELDS). Each threshold crossed is an event on the story's and the
# fleet's streams, written here with the flag that makes it once: no crossing without its event.
# Returns the alerts crossed: {scope index, level, fraction}... The reservation hash stays an hour as
# a "settled" mark: redis-py resends a script whose reply was lost, and the spend must count once.
_SETTLE = """
local function neg(s) if not s or s == '0' then return '0' end return '-' .. s end
local done = redis.call('HGET', KEYS[2], 'settled')
if done then return cjson.decode(done) end  -- resent after a lost reply: counted once, same alerts
local held = redis.call('ZREM', KEYS[1], ARGV[1]) == 1
local est = redis.call('HMGET', KEYS[2], 'nusd', 'tokens')
redis.call('DEL', KEYS[2])
local n, S = tonumber(ARGV[7]), 5  -- S: the scope stride in ARGV
local levels = {{'warning', tonumber(ARGV[5])}, {'critical', tonumber(ARGV[6])}, {'exceeded', 1}}
local alerts = {}
for i = 1, n do
  local key, b = KEYS[5 + i], 11 + (i - 1) * S
  if held then
    redis.call('HINCRBY', key, 'reserved_nusd', neg(est[1]))
    redis.call('HINCRBY', key, 'reserved_tokens', neg(est[2]))
  end
  local su = redis.call('HINCRBY', key, 'spent_nusd', ARGV[2])
  local st = redis.call('HINCRBY', key, 'spent_tokens', ARGV[3])
  redis.call('HINCRBY', key, 'calls', 1)
  local g = redis.call('HMGET', key, 'grant_nusd', 'grant_tokens')
  local cap_u = tonumber(ARGV[b]) + (tonumber(g[1]) or 0)
  local cap_t = tonumber(ARGV[b + 1]) + (tonumber(g[2]) or 0)
  local frac = math.max(su / cap_u, st / cap_t)
  for _, level in ipairs(levels) do
    if frac >= level[2] and redis.call('HSETNX', key, 'alert_' .. level[1], 1) == 1 then
      table.insert(alerts, {i, level[1], tostring(frac)})
      local reason = string.format('budget %s: %s at %d%% of %s', level[1], ARGV[b + 3],
                                   math.floor(frac * 100 + 0.5), ARGV[b + 4])
      local entry = {'event', 'budget_' .. level[1], 'to', '', 'scope', ARGV[b + 2], 'level', level[1],
                     'fraction', string.format('%.4f', frac), 'reason', reason,
                     'story', ARGV[9], 'at', ARGV[8]}
      if ARGV[9] ~= '' then redis.call('XADD', KEYS[4], '*', unpack(entry)) end
      redis.call('XADD', KEYS[5], 'MAXLEN', '~', ARGV[10], '*', unpack(entry))
    end
  end
end
local f = 11 + n * S  -- the story hash's field names follow the scopes' limits
if redis.call('EXISTS', KEYS[3]) == 1 then
  redis.call('HINCRBYFLOAT', KEYS[3], ARGV[f], ARGV[4])
  redis.call('HINCRBY', KEYS[3], ARGV[f + 1], ARGV[3])
  redis.call('HINCRBY', KEYS[3], ARGV[f + 2], 1)
end
redis.call('HSET', KEYS[2], 'settled', cjson.encode(alerts))
redis.call('EXPIRE', KEYS[2], 3600)
return alerts
"""

# KEYS: reservations zset, reservation hash, scope 1..n. Frees what the reservation held, once.
_RELEASE = """
local function neg(s) if not s or s == '0' then return '0' end return '-' .. s end
local held = redis.call('ZREM', KEYS[1], ARGV[1]) == 1
if not held then return 0 end  -- released or settled already (a settled mark is kept)
local est = redis.call('HMGET', KEYS[2], 'nusd', 'tokens')
redis.call('DEL', KEYS[2])
for i = 3, #KEYS do
  redis.call('HINCRBY', KEYS[i], 'reserved_nusd', neg(est[1]))
  redis.call('HINCRBY', KEYS[i], 'reserved_tokens', neg(est[2]))
end
return 1
"""

# KEYS: scope, this grant's once-key. ARGV: nusd, tokens, once-key TTL s, then the alert flags to
# re-arm. Adds once, even when redis-py resends it after a lost reply.
_GRANT = """
if not redis.call('SET', KEYS[2], '1', 'NX', 'EX', ARGV[3]) then return 0 end
redis.call('HINCRBY', KEYS[1], 'grant_nusd', ARGV[1])
redis.call('HINCRBY', KEYS[1], 'grant_tokens', ARGV[2])
for i = 4, #ARGV do redis.call('HDEL', KEYS[1], ARGV[i]) end
return 1
"""


@dataclass(frozen=True)
class Scope:
    """One budget: `name` keys it in Redis (``story:AUTH-001``, ``domain:auth:2025-01-31``, ``global:…``)."""

    name: str
    label: str
    limit_nusd: int
    limit_tokens: int
    expire_s: int = 0


@dataclass(frozen=True)
class Reservation:
    id: str
    scopes: tuple[Scope, ...]
    nusd: int
    tokens: int


@dataclass(frozen=True)
class Alert:
    scope: Scope
    level: str  # warning, critical, exceeded
    fraction: float


@dataclass(frozen=True)
class ScopeUse:
    scope: str
    spent_nusd: int
    reserved_nusd: int
    spent_tokens: int
    reserved_tokens: int
    grant_nusd: int
    grant_tokens: int
    calls: int

    @property
    def spent_usd(self) -> float:
        return to_usd(self.spent_nusd)


def day_of(at: float) -> str:
    return time.strftime("%Y-%m-%d", time.gmtime(at))


def scopes_for(
    settings: BudgetSettings, *, story: str | None, domain: Domain | None, at: float
) -> list[Scope]:
    """The scopes a call is charged to: its story's, its domain's today, and the fleet's today."""
    day = day_of(at)
    scopes = []
    if story is not None and domain is not None:
        scopes.append(
            Scope(
                f"story:{story}",
                f"story {story}",
                to_nusd(domain.budgets.story_usd),
                domain.budgets.story_tokens,
            )
        )
    if domain is not None:
        scopes.append(
            Scope(
                f"domain:{domain.name}:{day}",
                f"domain {domain.name} on {day}",
                to_nusd(domain.budgets.daily_usd),
                domain.budgets.daily_tokens,
                DAILY_TTL_S,
            )
        )
    scopes.append(
        Scope(
            f"global:{day}",
            f"the fleet on {day}",
            to_nusd(settings.global_daily_usd),
            settings.global_daily_tokens,
            DAILY_TTL_S,
        )
    )
    return scopes


class Budget:
    def __init__(
        self, redis: Redis, keys: Keys, settings: BudgetSettings, clock: Callable[[], float] = time.time
    ) -> None:
        self.redis = redis
        self.keys = keys
        self.settings = settings
        self.clock = clock
        self._reserve = redis.register_script(_RESERVE)
        self._settle = redis.register_script(_SETTLE)
        self._release = redis.register_script(_RELEASE)
        self._grant = redis.register_script(_GRANT)
        self._next_sweep = 0.0
        self.history = History(keys)

    def reserve(
        self, scopes: list[Scope], nusd: int, tokens: int, *, story: str | None = None
    ) -> Reservation:
        """Hold `nusd` and `tokens` in every scope, or none; BudgetExceededError names the scope refusing."""
        batch = Batch(self.redis)
        index, res = self.queue_reserve(batch, scopes, nusd, tokens)
        self.confirm(batch.execute()[index], res, story)
        return res

    def queue_reserve(
        self, batch: Batch, scopes: list[Scope], nusd: int, tokens: int
    ) -> tuple[int, Reservation]:
        """Queue the reservation on `batch`; pass its reply to `confirm()`."""
        self._maybe_sweep()
        res = Reservation(uuid.uuid4().hex, tuple(scopes), nusd, tokens)
        args: list[Any] = [
            res.id,
            int(self.settings.reservation_ttl_s * 1000),
            nusd,
            tokens,
            len(scopes),
            json.dumps([self.keys.budget(s.name) for s in scopes]),
        ]
        for scope in scopes:
            args += [scope.limit_nusd, scope.limit_tokens, scope.expire_s]
        keys = [
            self.keys.budget_reservations(),
            self.keys.budget_reservation(res.id),
            *(self.keys.budget(s.name) for s in scopes),
        ]
        return batch.script(self._reserve, keys, args), res

    def confirm(self, reply: Any, res: Reservation, story: str | None) -> None:
        """Raise BudgetExceededError (recording the event once) if the reservation was refused."""
        if int(reply[0]) == 1:
            return
        scope = res.scopes[int(reply[1]) - 1]
        raise self._refused(scope, str(reply[2]), (int(reply[3]), int(reply[4])), res, story)

    def _refused(
        self, scope: Scope, unit: str, used_cap: tuple[int, int], res: Reservation, story: str | None
    ) -> BudgetExceededError:
        used, cap = used_cap
        if unit == "usd":
            detail = (
                f"${to_usd(used):.4f} of ${to_usd(cap):.2f} spent or reserved; this call needs up to "
                f"${to_usd(res.nusd):.4f}"
            )
        else:
            detail = f"{used:,} of {cap:,} tokens used or reserved; this call needs up to {res.tokens:,}"
        grant = scope.name.rsplit(":", 1)[0] if scope.expire_s else scope.name
        message = (
            f"budget exceeded: {scope.label}: {detail} (raise it with `wave budget grant {grant} "
            f"--usd N --tokens N`, then `wave approve` the story)"
        )
        if self.redis.hsetnx(self.keys.budget(scope.name), "alert_exceeded", 1):
            self._record([Alert(scope, "exceeded", used / max(cap, 1))], story, message)
        return BudgetExceededError(message, scope=scope.name)

    def settle(
        self, res: Reservation, nusd: int, tokens: int, *, story: str | None, batch: Batch | None = None
    ) -> Any:
        """Replace the reservation by the real spend; adds the cost to the story's hash if it exists.

        Returns the crossed alerts' raw reply for `alerts()`; queued on `batch`, its index there.
        """
        args: list[Any] = [
            res.id,
            nusd,
            tokens,
            repr(to_usd(nusd)),
            self.settings.warn_fraction,
            self.settings.critical_fraction,
            len(res.scopes),
            f"{self.clock():.6f}",
            story or "",
            EVENTS_MAXLEN,
        ]
        for scope in res.scopes:
            limits = f"${to_usd(scope.limit_nusd):.2f} / {scope.limit_tokens:,} tokens"
            args += [scope.limit_nusd, scope.limit_tokens, scope.name, scope.label, limits]
        args += COST_FIELDS
        story = story or "-"  # no story: keys nobody has (the script touches them only for a story)
        keys = [
            self.keys.budget_reservations(),
            self.keys.budget_reservation(res.id),
            self.keys.story(story),
            self.keys.story_events(story),
            self.keys.events(),
            *(self.keys.budget(s.name) for s in res.scopes),
        ]
        if batch is not None:
            return batch.script(self._settle, keys, args)
        return self._settle(keys=keys, args=args)

    def alerts(self, res: Reservation, reply: Any, story: str | None) -> list[Alert]:
        """Turn settle's reply into alerts and log them (settle has put them on the events streams)."""
        alerts = [Alert(res.scopes[int(i) - 1], str(level), float(frac)) for i, level, frac in reply or ()]
        log = get_log(story=story or "-")
        for alert in alerts:
            log.warning(f"budget {alert.level}", scope=alert.scope.name, fraction=round(alert.fraction, 4))
        return alerts

    def release(self, res: Reservation) -> None:
        """The call was not made or failed: free what it held."""
        keys = [
            self.keys.budget_reservations(),
            self.keys.budget_reservation(res.id),
            *(self.keys.budget(s.name) for s in res.scopes),
        ]
        self._release(keys=keys, args=[res.id])

    def sweep(self, limit: int = SWEEP_BATCH) -> int:
        """Free reservations whose holder died before settling (expired); returns how many."""
        seconds, micros = self.redis.time()
        now_ms = int(seconds) * 1000 + int(micros) // 1000
        expired = cast(
            list[str],
            self.redis.zrangebyscore(self.keys.budget_reservations(), "-inf", now_ms, start=0, num=limit),
        )
        for res_id in expired:
            scopes = json.loads(self.redis.hget(self.keys.budget_reservation(res_id), "scopes") or "[]")
            keys = [self.keys.budget_reservations(), self.keys.budget_reservation(res_id), *scopes]
            self._release(keys=keys, args=[res_id])
        return len(expired)

    def _maybe_sweep(self) -> None:
        now = time.monotonic()
        if now >= self._next_sweep:
            self._next_sweep = now + 10.0
            self.sweep()

    def use(self, name: str) -> ScopeUse:
        h = self.redis.hgetall(self.keys.budget(name))
        return ScopeUse(
            name,
            *(
                int(float(h.get(f, 0)))
                for f in (
                    "spent_nusd",
                    "reserved_nusd",
                    "spent_tokens",
                    "reserved_tokens",
                    "grant_nusd",
                    "grant_tokens",
                    "calls",
                )
            ),
        )

    def grant(self, name: str, *, usd: float = 0.0, tokens: int = 0) -> ScopeUse:
        """Raise one scope's limit (an operator's decision after a hold); re-arms its alerts."""
        if not (0 <= usd <= MAX_GRANT_USD and 0 <= tokens <= MAX_GRANT_TOKENS and (usd or tokens)):
            # `not (...)`: a NaN fails every comparison, so it lands here too
            raise InvalidInputError(
                f"a grant adds more than 0 and at most ${MAX_GRANT_USD:,.0f} and {MAX_GRANT_TOKENS:,} tokens"
            )
        keys = [self.keys.budget(name), self.keys.once(uuid.uuid4().hex)]
        alerts = [f"alert_{level}" for level in ALERT_EVENTS]
        self._grant(keys=keys, args=[to_nusd(usd), tokens, ONCE_TTL_S, *alerts])
        return self.use(name)

    def scope_names(self) -> list[str]:
        prefix = self.keys.budget("")
        return sorted(k[len(prefix) :] for k in self.redis.scan_iter(self.keys.budget_pattern(), count=500))

    def _record(self, alerts: list[Alert], story: str | None, message: str = "") -> None:
        log = get_log(story=story or "-")
        now = self.clock()
        with self.redis.pipeline(transaction=False) as pipe:
            for alert in alerts:
                reason = message or (
                    f"budget {alert.level}: {alert.scope.label} at {alert.fraction:.0%} of "
                    f"${to_usd(alert.scope.limit_nusd):.2f} / {alert.scope.limit_tokens:,} tokens"
                )
                entry = {
                    "event": ALERT_EVENTS[alert.level],
                    "to": "",
                    "scope": alert.scope.name,
                    "level": alert.level,
                    "fraction": f"{alert.fraction:.4f}",
                    "reason": reason,
                }
                self.history.add(pipe, story, entry, now)
                log.warning(reason, scope=alert.scope.name, level=alert.level)
            pipe.execute()


__all__ = ["NANO", "Alert", "Budget", "Reservation", "Scope", "ScopeUse", "day_of", "scopes_for"]
