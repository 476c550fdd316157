"""Metric counts: what any fleet process adds to the metric hashes in Redis, for /metrics to read.

The fleet runs in many processes and containers that share no folder, so prometheus-client's
multiprocess mode cannot serve; instead each process HINCRBYs integers into Redis, in the same
round trip (often the same transaction) as the work it counts, and `metrics.FleetCollector` reads
them at scrape. Integers only: durations as milliseconds, cost as nano-USD.
"""

from __future__ import annotations

import math
from typing import Protocol

from .keys import Keys
from .messages import StageResult
from .sandbox.protocol import ExecReply

# Upper bounds (seconds) of the stage-duration histogram: a stage takes a second to two hours.
STAGE_BUCKETS = (1, 5, 15, 30, 60, 120, 300, 600, 1200, 1800, 3600, 7200, math.inf)
OUTCOMES = ("ok", "failed", "transient", "held")

# Fields of `Keys.metric_counters()` and the counter family each one feeds: (family, labels).
COUNTER_FIELDS: dict[str, tuple[str, dict[str, str]]] = {
    "halts": ("wave_halts", {}),
    "trace_runs_sent": ("wave_trace_runs_sent", {}),
    "trace_runs_dropped": ("wave_trace_runs_dropped", {}),
    "sandbox_commands": ("wave_sandbox_commands", {"mode": "container"}),  # the runner's
    "sandbox_containers": ("wave_sandbox_containers", {}),
    "safety_block": ("wave_safety_decisions", {"decision": "block"}),
    "safety_escalate": ("wave_safety_decisions", {"decision": "escalate"}),
}
SANDBOX_COMMANDS = "sandbox_commands"  # ``sandbox_commands:{bwrap|none}``: a local sandbox's, by mode
LOCAL_MODES = ("bwrap", "none")
LIMIT_HIT_PREFIX = "sandbox_limit_hits"  # ``sandbox_limit_hits:{limit}`` -> wave_sandbox_limit_hits
SANDBOX_LIMITS = ("memory", "pids", "time")  # the `limit` label; anything else counts as "other"


class Incrementer(Protocol):
    """A pipeline (or Redis) that HINCRBYs: the caller decides the round trip it rides on."""

    def hincrby(self, name: str, key: str, amount: int = 1) -> object: ...


def bucket_label(bound: float) -> str:
    return "+Inf" if math.isinf(bound) else str(bound)


def stage_outcome(result: StageResult) -> str:
    if result.ok:
        return "ok"
    if result.hold:
        return "held"
    return "transient" if result.transient else "failed"


def observe_stage(pipe: Incrementer, keys: Keys, domain: str, role: str, result: StageResult) -> None:
    """Queue one stage's duration on its domain and role's histogram (cumulative buckets)."""
    key, outcome = keys.metric_stage_durations(domain, role), stage_outcome(result)
    for bound in STAGE_BUCKETS:
        if result.duration_s <= bound:
            pipe.hincrby(key, f"{outcome}:le:{bucket_label(bound)}", 1)
    pipe.hincrby(key, f"{outcome}:count", 1)
    pipe.hincrby(key, f"{outcome}:sum_ms", round(result.duration_s * 1000))


def count(target: Incrementer, keys: Keys, field: str, n: int = 1) -> None:
    """Add `n` to one field of the fleet-wide counters (a name of COUNTER_FIELDS)."""
    target.hincrby(keys.metric_counters(), field, n)


def exec_counts(reply: ExecReply) -> dict[str, int]:
    """The counter fields one sandbox command adds (none when the runner could not run it)."""
    if reply.error is not None:
        return {}
    counts = {"sandbox_commands": 1, "sandbox_containers": int(reply.started_container)}
    hits = [h.split(" ", 1)[0] for h in (reply.limit or "").split("; ") if h]
    if reply.timed_out:
        hits.append("time")
    for hit in hits:  # a bounded label: the limits the runner knows, else "other"
        field = f"{LIMIT_HIT_PREFIX}:{hit if hit in SANDBOX_LIMITS else 'other'}"
        counts[field] = counts.get(field, 0) + 1
    return counts
