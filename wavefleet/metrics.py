"""Fleet metrics: a Prometheus collector that reads Redis at scrape time, so any process's work counts.

Nothing is counted in the supervisor's memory: every figure is read from what the fleet already
keeps in Redis (story hashes, RQ's queues and registries, worker heartbeats, the halt flag, the
response cache's counters), in a fixed number of pipelined round trips per scrape. Labels are only
bounded values (domain, role, state, provider, status), never a story or worker id.
"""

from __future__ import annotations

import itertools
from collections import Counter
from collections.abc import Iterator
from typing import Any

from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector
from redis import Redis
from redis.exceptions import ResponseError

from .domains import Domains
from .keys import Keys
from .lifecycle import Role
from .llm.accounting import TOKEN_KINDS
from .metric_counts import (
    COUNTER_FIELDS,
    LIMIT_HIT_PREFIX,
    LOCAL_MODES,
    OUTCOMES,
    SANDBOX_COMMANDS,
    STAGE_BUCKETS,
    bucket_label,
)
from .notifier_status import backlog
from .queues import Dispatcher

# A scrape reads at most this many story hashes of each kind (active, most recently finished) and
# this many worker names: its cost stays bounded however long the fleet has run.
MAX_ITEMS = 10_000
SCAN_COUNT = 1_000


class FleetCollector(Collector):
    """Gauges computed from Redis on each scrape (rq-exporter's names for queues and workers)."""

    def __init__(self, redis: Redis, keys: Keys, domains: Domains, dispatcher: Dispatcher) -> None:
        self.redis = redis
        self.keys = keys
        self.domains = domains
        self.dispatcher = dispatcher
        # finished story id -> (its score in the finished set, (domain, state)) as last read
        self._finished: dict[str, tuple[float, tuple[str | None, ...]]] = {}

    def collect(self) -> Iterator[Metric]:
        yield self._stories()
        yield self._jobs()
        yield self._workers()
        yield self._halted()
        yield self._cache()
        yield from self._counted()

    def _stories(self) -> GaugeMetricFamily:
        family = GaugeMetricFamily("wave_stories", "Stories by domain and state", labels=["domain", "state"])
        active = list(
            itertools.islice(self.redis.sscan_iter(self.keys.active(), count=SCAN_COUNT), MAX_ITEMS)
        )
        in_flight = set(active)  # a finished story sent round again is counted as what it is now
        finished = [
            (story_id, score)
            for story_id, score in self.redis.zrevrange(
                self.keys.finished(), 0, MAX_ITEMS - 1, withscores=True
            )
            if story_id not in in_flight
        ]
        # A finished story's domain and state do not change while it stays finished (the same score):
        # read once, not at every scrape (a scrape's cost was mostly these reads).
        known = self._finished
        unread = [story_id for story_id, score in finished if known.get(story_id, (None, None))[0] != score]
        with self.redis.pipeline(transaction=False) as pipe:
            for story_id in [*active, *unread]:
                pipe.hmget(self.keys.story(story_id), ["domain", "state"])
            rows = pipe.execute()
        read = dict(zip(unread, rows[len(active) :], strict=True))
        self._finished = {
            story_id: (score, tuple(read[story_id]) if story_id in read else known[story_id][1])
            for story_id, score in finished
        }
        counts = Counter(
            (d, s)
            for d, s in [*rows[: len(active)], *(row for _score, row in self._finished.values())]
            if d and s
        )
        for (domain, state), n in sorted(counts.items()):
            family.add_metric([domain, state], n)
        return family

    def _jobs(self) -> GaugeMetricFamily:
        family = GaugeMetricFamily("rq_jobs", "RQ jobs by queue and status", labels=["queue", "status"])
        queues = [self.dispatcher.queue(d, r) for d in self.domains.names() for r in Role]
        with self.redis.pipeline(transaction=False) as pipe:
            for q in queues:
                pipe.llen(q.key)
                pipe.zcard(q.started_job_registry.key)
                pipe.zcard(q.failed_job_registry.key)
            replies = pipe.execute()
        for i, q in enumerate(queues):
            queued, started, failed = replies[3 * i : 3 * i + 3]
            for status, n in (("queued", queued), ("started", started), ("failed", failed)):
                family.add_metric([q.name, status], n)
        return family

    def _workers(self) -> GaugeMetricFamily:
        family = GaugeMetricFamily("rq_workers", "Workers by role and state", labels=["role", "state"])
        names = list(
            itertools.islice(self.redis.sscan_iter(self.keys.workers(), count=SCAN_COUNT), MAX_ITEMS)
        )
        with self.redis.pipeline(transaction=False) as pipe:
            for name in names:
                pipe.exists(self.keys.worker_heartbeat(name))
            alive = pipe.execute()
        counts = Counter(
            (worker_role(n), "alive" if a else "dead") for n, a in zip(names, alive, strict=True)
        )
        for role in Role:
            for state in ("alive", "dead"):
                family.add_metric([role.value, state], counts[(role.value, state)])
        return family

    def _halted(self) -> GaugeMetricFamily:
        family = GaugeMetricFamily("wave_halted", "1 while the fleet is under an emergency stop")
        family.add_metric([], 1 if self.redis.exists(self.keys.halt()) else 0)
        return family

    def _cache(self) -> GaugeMetricFamily:
        family = GaugeMetricFamily(
            "wave_llm_cache_lookups",
            "Model response-cache lookups by provider, role and result (hit, miss)",
            labels=["provider", "role", "result"],
        )
        for field, n in sorted(self.redis.hgetall(self.keys.llm_cache_stats()).items()):
            parts = field.split(":")
            if len(parts) == 3:
                family.add_metric(parts, float(n))
        return family

    def _counted(self) -> list[Metric]:
        """The families processes count into Redis (metric_counts.py), read in one round trip."""
        pairs = [(d, r.value) for d in self.domains.names() for r in Role]
        with self.redis.pipeline(transaction=False) as pipe:
            for domain, role in pairs:
                pipe.hgetall(self.keys.metric_stage_durations(domain, role))
            pipe.hgetall(self.keys.metric_llm())
            pipe.hgetall(self.keys.metric_counters())
            pipe.get(self.keys.notifier_dead_total())
            pipe.xinfo_groups(self.keys.events())
            *stages, llm, counters, dead, groups = pipe.execute(raise_on_error=False)
        for reply in [*stages, llm, counters, dead]:
            if isinstance(reply, Exception):
                raise reply
        groups = [] if isinstance(groups, ResponseError) else groups  # no events stream yet
        return [
            _stage_histogram(zip(pairs, stages, strict=True)),
            *_llm_families(llm),
            *_counter_families(counters),
            GaugeMetricFamily(
                "wave_notifier_backlog",
                "Events the notifier has not handled yet",
                value=backlog(groups, self.keys),
            ),
            CounterMetricFamily(
                "wave_notifier_dead_letters", "Slack messages given up on", value=int(dead or 0)
            ),
        ]


def _stage_histogram(rows: Iterator[tuple[tuple[str, str], dict[str, str]]]) -> HistogramMetricFamily:
    family = HistogramMetricFamily(
        "wave_stage_duration_seconds",
        "Stage attempts' durations by domain, role and outcome (ok, failed, transient, held)",
        labels=["domain", "role", "outcome"],
    )
    for (domain, role), fields in rows:
        for outcome in OUTCOMES:
            if f"{outcome}:count" not in fields:
                continue
            le = [bucket_label(b) for b in STAGE_BUCKETS]
            buckets = [(b, float(fields.get(f"{outcome}:le:{b}", 0))) for b in le]
            sum_s = int(fields.get(f"{outcome}:sum_ms", 0)) / 1000
            family.add_metric([domain, role, outcome], buckets, sum_s)
    return family


def _llm_families(fields: dict[str, str]) -> list[Metric]:
    calls = CounterMetricFamily(
        "wave_llm_calls",
        "Answered model calls (cache hits included) by provider",
        labels=["provider", "offline"],
    )
    tokens = CounterMetricFamily(
        "wave_llm_tokens", "Model tokens by provider and kind", labels=["provider", "kind"]
    )
    cost = CounterMetricFamily("wave_llm_cost_usd", "Model spend in USD by provider", labels=["provider"])
    for field, raw in sorted(fields.items()):
        provider, _, what = field.partition(":")
        if what in ("calls:0", "calls:1"):
            calls.add_metric([provider, "true" if what == "calls:1" else "false"], int(raw))
        elif what == "cost_nusd":
            cost.add_metric([provider], int(raw) / 1e9)
        elif what.startswith("tokens:") and what[7:] in TOKEN_KINDS:
            tokens.add_metric([provider, what[7:]], int(raw))
    return [calls, tokens, cost]


def _counter_families(fields: dict[str, str]) -> list[Metric]:
    """Every known field of the fleet-wide counters (0 when none counted yet); others are ignored."""
    families: dict[str, CounterMetricFamily] = {}
    for field, (name, labels) in COUNTER_FIELDS.items():
        family = families.get(name) or CounterMetricFamily(name, _HELP[name], labels=list(labels))
        families[name] = family
        family.add_metric(list(labels.values()), _int(fields.get(field)))
    commands = families["wave_sandbox_commands"]
    for mode in LOCAL_MODES:
        commands.add_metric([mode], _int(fields.get(f"{SANDBOX_COMMANDS}:{mode}")))
    hits = CounterMetricFamily(
        "wave_sandbox_limit_hits", "Sandbox commands stopped by a limit", labels=["limit"]
    )
    for field, raw in sorted(fields.items()):
        if field.startswith(LIMIT_HIT_PREFIX + ":"):
            hits.add_metric([field.partition(":")[2]], _int(raw))
    return [*families.values(), hits]


def _int(raw: Any) -> int:
    try:
        return int(raw or 0)
    except ValueError:  # a field some other version wrote differently: not worth failing a scrape
        return 0


_HELP = {
    "wave_halts": "Emergency stops that halted a running fleet",
    "wave_trace_runs_sent": "LangSmith runs sent",
    "wave_trace_runs_dropped": "LangSmith runs dropped (queue full or collector unreachable)",
    "wave_sandbox_commands": "Commands run in sandboxes, by mode (container, bwrap, none)",
    "wave_sandbox_containers": "Sandbox containers started",
    "wave_safety_decisions": "Tool calls the safety gate did not simply allow, by decision",
}


def worker_role(name: str) -> str:
    """The role in a worker's name (``auth-fe-1.3fa9c2.4242``), or ``unknown``: a bounded label."""
    role = name.split(".", 1)[0].rsplit("-", 2)
    return role[1] if len(role) == 3 and role[1] in set(Role) else "unknown"
