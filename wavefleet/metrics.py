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

from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector
from redis import Redis

from .domains import Domains
from .keys import Keys
from .lifecycle import Role
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

    def collect(self) -> Iterator[GaugeMetricFamily]:
        yield self._stories()
        yield self._jobs()
        yield self._workers()
        yield self._halted()
        yield self._cache()

    def _stories(self) -> GaugeMetricFamily:
        family = GaugeMetricFamily("wave_stories", "Stories by domain and state", labels=["domain", "state"])
        active = list(
            itertools.islice(self.redis.sscan_iter(self.keys.active(), count=SCAN_COUNT), MAX_ITEMS)
        )
        finished = self.redis.zrevrange(self.keys.finished(), 0, MAX_ITEMS - 1)
        with self.redis.pipeline(transaction=False) as pipe:
            for story_id in [*active, *finished]:
                pipe.hmget(self.keys.story(story_id), ["domain", "state"])
            rows = pipe.execute()
        counts = Counter((d, s) for d, s in rows if d and s)
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


def worker_role(name: str) -> str:
    """The role in a worker's name (``auth-fe-1.3fa9c2.4242``), or ``unknown``: a bounded label."""
    role = name.split(".", 1)[0].rsplit("-", 2)
    return role[1] if len(role) == 3 and role[1] in set(Role) else "unknown"
