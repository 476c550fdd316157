"""The monitor's named detectors: each reads one part of the fleet's state and says what is wrong.

A detector gets a `Tick` (Redis, settings, domains, the time, and the monitor's memory of earlier
ticks) and returns its open findings, or None when it cannot judge this tick (a queue's growth needs
two looks): then the findings it opened before are kept as they are. Every `key` and `summary` may
hold names that came from Redis (a worker's, a story's id): data, escaped where shown.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict
from redis import Redis

from .budget import day_of
from .config import Settings
from .domains import Domains
from .halt import read_halt
from .keys import Keys
from .lifecycle import TERMINAL, Role, StoryState
from .live_view import worker_role
from .messages import RunningStage
from .money import to_nusd, to_usd
from .status_view import age
from .store import StoryStore

DAY_S = 86_400
MAX_SCAN = 10_000  # workers, running stages, stories looked at per tick: far above any real fleet
RQ_QUEUE = "rq:queue:"  # RQ's key of a queue's job list (fixed by RQ)

Severity = Literal["warning", "critical"]


class Finding(BaseModel):
    """Something wrong, about `key` (a job id, a worker, a queue, a domain, a story, "fleet")."""

    model_config = ConfigDict(frozen=True)

    detector: str
    key: str
    severity: Severity
    summary: str
    opened_at: float = 0.0


@dataclass
class Tick:
    """What every detector reads in one pass of the monitor."""

    redis: Redis
    settings: Settings
    domains: Domains
    now: float
    memory: dict[str, Any] = field(default_factory=dict)  # kept across ticks by the monitor

    @property
    def keys(self) -> Keys:
        return self.settings.keys


Detector = Callable[[Tick], list[Finding] | None]


def stage_overdue(tick: Tick) -> list[Finding]:
    """A stage running longer than the worker's job timeout: RQ should have ended it by now."""
    limit = tick.settings.worker.job_timeout_s
    found = []
    for job, raw in list(tick.redis.hgetall(tick.keys.running()).items())[:MAX_SCAN]:
        try:
            info = RunningStage.model_validate_json(raw)
        except ValueError:
            continue
        ran = tick.now - info.started_at
        if info.started_at and ran > limit:
            found.append(
                Finding(
                    detector="stage_overdue",
                    key=str(job),
                    severity="warning",
                    summary=f"{info.story} {info.role.value} (round {info.round}) on {info.worker} "
                    f"running for {age(ran)}, past the {age(limit)} timeout",
                )
            )
    return found


def _worker_identity(name: str) -> tuple[str, Role] | None:
    """(domain, role) of a worker's name (`auth-fe-1.3fa2c1.4242`), or None."""
    role = worker_role(name)
    if role is None:
        return None
    return name.split(".", 1)[0].rsplit("-", 2)[0], role


def live_workers(tick: Tick) -> list[str]:
    """Registered workers whose heartbeat key exists (asked once per tick, shared by detectors)."""
    if "live" not in tick.memory.setdefault("_tick", {}):
        names = sorted(str(n) for n in tick.redis.smembers(tick.keys.workers()))[:MAX_SCAN]
        with tick.redis.pipeline(transaction=False) as pipe:
            for name in names:
                pipe.exists(tick.keys.worker_heartbeat(name))
            beating = pipe.execute()
        tick.memory["_tick"]["live"] = [n for n, b in zip(names, beating, strict=True) if b]
        tick.memory["_tick"]["silent"] = [n for n, b in zip(names, beating, strict=True) if not b]
    live: list[str] = tick.memory["_tick"]["live"]
    return live


def worker_silent(tick: Tick) -> list[Finding]:
    """A registered worker seen alive (by this or an earlier monitor: kept in Redis) whose heartbeat
    stopped. A worker that stopped cleanly leaves the workers set; a killed one stays there forever,
    so it is forgotten `worker_forget_s` after it was last seen."""
    live = live_workers(tick)
    seen_key = tick.keys.monitor_seen()
    forget = tick.settings.monitor.worker_forget_s
    with tick.redis.pipeline(transaction=False) as pipe:
        if live:
            pipe.hset(seen_key, mapping=dict.fromkeys(live, f"{tick.now:.3f}"))
        pipe.hgetall(seen_key)
        seen = pipe.execute()[-1]
    registered = set(live) | set(tick.memory["_tick"]["silent"])
    found, gone = [], []
    for name, at in seen.items():
        last = float(at)
        if name in live:
            continue
        # stopped cleanly (it left the workers set) or silent too long: no longer news
        if name not in registered or tick.now - last > forget:
            gone.append(name)
            continue
        found.append(
            Finding(
                detector="worker_silent",
                key=str(name),
                severity="critical",
                summary=f"worker {name} has sent no heartbeat for {age(tick.now - last)}",
            )
        )
    if gone:
        tick.redis.hdel(seen_key, *gone)
    return found


def queue_stalled(tick: Tick) -> list[Finding] | None:
    """A queue holding jobs, not shrinking since the last tick, with no live worker of its domain
    and role to take them. None on a monitor's first tick: growth needs two looks."""
    consumers = {ident for n in live_workers(tick) if (ident := _worker_identity(n)) is not None}
    queues = [(d, r) for d in tick.domains.names() for r in Role]
    with tick.redis.pipeline(transaction=False) as pipe:
        for d, r in queues:
            pipe.llen(RQ_QUEUE + tick.keys.queue(d, r))
        depths = dict(zip(queues, pipe.execute(), strict=True))
    before: dict[tuple[str, Role], int] | None = tick.memory.get("queue_depths")
    tick.memory["queue_depths"] = depths
    if before is None:
        return None
    return [
        Finding(
            detector="queue_stalled",
            key=tick.keys.queue(d, r),
            severity="critical",
            summary=f"queue {tick.keys.queue(d, r)} holds {n} job(s) (was {before.get((d, r), 0)}) "
            f"and no live {d} {r.value} worker takes them",
        )
        for (d, r), n in depths.items()
        if n > 0 and n >= before.get((d, r), 0) and (d, r) not in consumers
    ]


def failures_rising(tick: Tick) -> list[Finding]:
    """At least `failures_threshold` stories of one domain failed within `failures_window_s`
    (the events stream's entries, whose ids are their times)."""
    mon = tick.settings.monitor
    start = int((tick.now - mon.failures_window_s) * 1000)
    entries = tick.redis.xrange(tick.keys.events(), min=f"{start}-0", max="+", count=MAX_SCAN)
    failed = {f.get("story", "") for _id, f in entries if f.get("to") == StoryState.FAILED.value}
    failed.discard("")
    per_domain: dict[str, int] = {}
    with tick.redis.pipeline(transaction=False) as pipe:
        for story in sorted(failed):
            pipe.hget(tick.keys.story(story), "domain")
        for domain in pipe.execute():
            per_domain[str(domain or "?")] = per_domain.get(str(domain or "?"), 0) + 1
    return [
        Finding(
            detector="failures_rising",
            key=domain,
            severity="warning",
            summary=f"{n} {domain} stories failed in the last {age(mon.failures_window_s)}",
        )
        for domain, n in sorted(per_domain.items())
        if n >= mon.failures_threshold
    ]


def budget_burn(tick: Tick) -> list[Finding]:
    """A domain spending today at a rate that reaches its daily limit (grants included) before the
    UTC day ends. Not before `burn_min_elapsed_s` of the day: one early call is no rate."""
    elapsed = tick.now % DAY_S
    if elapsed < max(tick.settings.monitor.burn_min_elapsed_s, 1.0):
        return []
    found = []
    for domain in tick.domains:
        scope = f"domain:{domain.name}:{day_of(tick.now)}"
        spent, grant = (
            int(float(v or 0)) for v in tick.redis.hmget(tick.keys.budget(scope), "spent_nusd", "grant_nusd")
        )
        limit = to_nusd(domain.budgets.daily_usd) + grant
        projected = spent * DAY_S / elapsed
        if spent and projected > limit:
            found.append(
                Finding(
                    detector="budget_burn",
                    key=domain.name,
                    severity="warning" if spent < limit else "critical",
                    summary=f"{domain.name} spent ${to_usd(spent):.2f} of ${to_usd(limit):.2f} today; "
                    f"at this rate ${to_usd(int(projected)):.2f} by midnight UTC",
                )
            )
    return found


def halt_old(tick: Tick) -> list[Finding]:
    """The fleet halted longer than `halt_age_s`: someone pulled the stop and may have forgotten."""
    halt = read_halt(tick.redis, tick.keys)
    if halt is None or tick.now - halt.at <= tick.settings.monitor.halt_age_s:
        return []
    summary = f"fleet halted for {age(tick.now - halt.at)} by {halt.by}: {halt.reason}"
    return [Finding(detector="halt_old", key="fleet", severity="critical", summary=summary)]


def qa_recycles(tick: Tick) -> list[Finding]:
    """An active story that QA sent back to development `qa_recycles` times or more (its round
    goes up by one per recycle only, from 1)."""
    store = StoryStore(tick.redis, tick.keys, tick.settings.pipeline.max_rounds)
    records = store.records(store.active_ids()[:MAX_SCAN], skip_corrupt=True)
    limit = tick.settings.monitor.qa_recycles
    return [
        Finding(
            detector="qa_recycles",
            key=r.id,
            severity="warning",
            summary=f"{r.id} ({r.domain}) failed QA and was recycled {r.round - 1} times, "
            f"now {r.state.value}",
        )
        for r in records
        if r.round - 1 >= limit and r.state not in TERMINAL
    ]


DETECTORS: dict[str, Detector] = {
    "stage_overdue": stage_overdue,
    "worker_silent": worker_silent,
    "queue_stalled": queue_stalled,
    "failures_rising": failures_rising,
    "budget_burn": budget_burn,
    "halt_old": halt_old,
    "qa_recycles": qa_recycles,
}

__all__ = ["DETECTORS", "Detector", "Finding", "Tick"]
