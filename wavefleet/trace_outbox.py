"""The trace outbox: a bounded Redis list where work horses leave their LangSmith runs for the supervisor.

A horse pushes one entry per stage (a JSON list of ``[op, run]``, op "post" or "patch") in ONE
command (a Lua script: RPUSH unless the list holds `langsmith.outbox_size` entries already, then the
runs are dropped and counted in ``trace_runs_dropped``). The supervisor's sender pops entries, oldest
first, and posts them. A horse so never opens a connection to LangSmith, nor waits for one.
"""

from __future__ import annotations

import json
from typing import Any

from redis import Redis

from . import logs
from .keys import Keys

Run = tuple[str, dict[str, Any]]  # ("post" | "patch", the run)

# KEYS: the outbox, the metric counters. ARGV: the bound (entries), the entry's runs, the runs the
# horse dropped already (its own bound), the entry. Returns the runs dropped in all.
_PUSH = """
local lost = tonumber(ARGV[3])
if redis.call('LLEN', KEYS[1]) >= tonumber(ARGV[1]) then
  lost = lost + tonumber(ARGV[2])
elseif tonumber(ARGV[2]) > 0 then
  redis.call('RPUSH', KEYS[1], ARGV[4])
end
if lost > 0 then
  redis.call('HINCRBY', KEYS[2], 'trace_runs_dropped', lost)
end
return lost
"""


class Outbox:
    """The outbox list: `push` (a work horse, once per stage), `take` (the supervisor's sender)."""

    def __init__(self, redis: Redis, keys: Keys, bound: int) -> None:
        self.redis, self.keys, self.bound = redis, keys, bound
        self._push = redis.register_script(_PUSH)

    def push(self, runs: list[Run], lost: int = 0) -> int:
        """Leave `runs` for the supervisor, and count `lost` runs dropped before; the runs dropped."""
        entry = json.dumps(runs, separators=(",", ":"), default=str)
        keys = [self.keys.trace_outbox(), self.keys.metric_counters()]
        return int(self._push(keys=keys, args=[self.bound, len(runs), lost, entry]))

    def take(self, most: int) -> list[Run]:
        """Whole entries, oldest first, until at least `most` runs (or the list is empty). Entries are
        popped several at a time (an entry holds at least one run): a round trip each would cost
        about what sending them does."""
        runs: list[Run] = []
        while len(runs) < most:
            raws = self.redis.lpop(self.keys.trace_outbox(), most - len(runs))
            if not raws:
                break
            for raw in raws:
                try:
                    runs.extend((str(op), dict(run)) for op, run in json.loads(raw))
                except (ValueError, TypeError) as exc:  # not ours: nothing to send of it
                    logs.get().warning("trace outbox: entry skipped", error=str(exc)[:200])
        return runs
