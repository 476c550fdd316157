"""Every Redis key, queue and stream name WAVE uses, built from one configurable prefix.

No other module writes a key string: they all call these functions, and `tests/test_keys.py`
pins the layout. RQ keeps its own bookkeeping under ``rq:`` (``rq:queue:<queue name>``, job hashes,
registries); the queue names it is given come from here.
"""

from __future__ import annotations

from dataclasses import dataclass

DEFAULT_PREFIX = "wave"
ONCE_TTL_S = 60  # how long a `once` key lives: far longer than redis-py takes to resend a write


@dataclass(frozen=True)
class Keys:
    """Names under one prefix; ``Keys("wave").story("AUTH-001") == "wave:story:AUTH-001"``."""

    prefix: str = DEFAULT_PREFIX

    def _k(self, *parts: str | int) -> str:
        return ":".join([self.prefix, *(str(p) for p in parts)])

    # Stories
    def story(self, story_id: str) -> str:
        """Hash: state, domain, round, pending stages, attempts, timestamps, cost, spec."""
        return self._k("story", story_id)

    def story_results(self, story_id: str) -> str:
        """Hash: ``r{round}.{role}.a{attempt}`` -> the stage's JSON result."""
        return self._k("story", story_id, "results")

    def once(self, token: str) -> str:
        """String, kept ONCE_TTL_S: the write tagged `token` has run. A copy of it that redis-py
        resends after a lost reply does nothing (breaker failures, budget grants), and a transition
        whose reply was lost can tell that it committed."""
        return self._k("once", token)

    def finished(self) -> str:
        """Sorted set of story ids in an end state, scored by when they got there (`wave status`)."""
        return self._k("finished")

    def active(self) -> str:
        """Set of story ids not yet in an end state (what the supervisor reconciles)."""
        return self._k("active")

    def story_events(self, story_id: str) -> str:
        """Stream: this story's lifecycle history, one entry per transition."""
        return self._k("story", story_id, "events")

    def stories(self) -> str:
        """Sorted set of every story id, scored by creation time."""
        return self._k("stories")

    def domain_stories(self, domain: str) -> str:
        """Sorted set of a domain's story ids, scored by creation time."""
        return self._k("stories", domain)

    # Fleet-wide streams
    def events(self) -> str:
        """Stream of every story's lifecycle events, fleet-wide."""
        return self._k("events")

    def events_group(self, consumer: str) -> str:
        """Consumer group name of one reader of the events stream (``notifier``, ``monitor``...)."""
        return self._k("events", consumer)

    def intake(self) -> str:
        """Stream the supervisor consumes: new stories, stage results, misrouted jobs, nudges."""
        return self._k("intake")

    def intake_dead(self) -> str:
        """Stream of intake messages the supervisor could not apply (unknown story, malformed), kept
        for the operator instead of being retried forever."""
        return self._k("intake", "dead")

    def supervisor_group(self) -> str:
        """Consumer group name of the supervisor on the intake stream."""
        return self._k("supervisor")

    def supervisor_lock(self) -> str:
        """Leader lock: one supervisor routes at a time."""
        return self._k("supervisor", "lock")

    # Queues and workers
    def queue(self, domain: str, role: str) -> str:
        """RQ queue name of one domain's role, e.g. ``wave:auth:fe``."""
        return self._k(domain, role)

    def running(self) -> str:
        """Hash: RQ job id -> JSON {worker, story, started_at} of stages being worked right now."""
        return self._k("running")

    def stage_retries(self) -> str:
        """Sorted set: JSON of a stage attempt waiting to be retried after a transient failure ->
        when the retry is due (epoch seconds). Durable, so a restarted supervisor still retries it."""
        return self._k("retries")

    def worker_heartbeat(self, worker: str) -> str:
        """String with a TTL: present while the worker is alive."""
        return self._k("worker", worker, "hb")

    def worker_log(self, worker: str) -> str:
        """List of the job ids this worker ran (newest first, capped): the worker's own record."""
        return self._k("worker", worker, "jobs")

    def workers(self) -> str:
        """Set of worker names that have registered and not stopped cleanly (a killed one stays)."""
        return self._k("workers")

    def worker_sandboxes(self) -> str:
        """Hash: worker name -> JSON {mode, label, domain, network} of the sandbox it runs work in."""
        return self._k("sandboxes")

    # The container sandbox (wavefleet/sandbox/protocol.py)
    def sandbox_requests(self) -> str:
        """List: JSON requests from workers to the `wave sandbox` runner (LPUSH; the runner BLPOPs)."""
        return self._k("sandbox", "requests")

    def sandbox_reply(self, request_id: str) -> str:
        """List with a TTL: the runner's JSON reply to one request; the asking worker BLPOPs it."""
        return self._k("sandbox", "reply", request_id)

    def fleet_id(self) -> str:
        """String: this fleet's random id, made once (SET NX). Labels the fleet's sandbox containers,
        so a runner's sweep or halt never touches another fleet's containers on the same engine."""
        return self._k("fleet", "id")

    def sandbox_runner(self) -> str:
        """String with a TTL: present while a `wave sandbox` runner is alive, JSON {name, image, engine}."""
        return self._k("sandbox", "runner")

    # Emergency stop
    def watcher_heartbeat(self) -> str:
        """String with a TTL: present while an EMERGENCY-STOP watcher is alive (the supervisor's /readyz)."""
        return self._k("watcher", "hb")

    def preflight_pass(self) -> str:
        """String with a TTL (24 h): the last passing `wave preflight`, JSON {at, by, digest, sandbox};
        the digest is of the safety-relevant settings it proved, which autonomous workers must match."""
        return self._k("preflight", "pass")

    def halt(self) -> str:
        """String: the durable halt flag, JSON {reason, by, at}; absent while the fleet runs."""
        return self._k("halt")

    def halt_channel(self) -> str:
        """Pub/sub channel carrying ``halt`` and ``resume`` messages (the flag is the durable copy)."""
        return self._k("halt")

    def halt_acks(self) -> str:
        """Hash: worker name -> JSON {at, job stopped} written when the worker obeyed a halt."""
        return self._k("halt", "acks")

    def halted_jobs(self) -> str:
        """Hash: RQ job id -> queue name of stages stopped by a halt, put back on resume."""
        return self._k("halt", "jobs")

    # The monitor (wavefleet/monitor.py)
    def monitor_findings(self) -> str:
        """Hash: ``detector:key`` -> JSON of an open finding (so a restarted monitor does not re-alert)."""
        return self._k("monitor", "findings")

    def monitor_seen(self) -> str:
        """Hash: worker name -> when the monitor last saw its heartbeat (worker_silent's memory)."""
        return self._k("monitor", "seen")

    # Cancelling one story
    def cancel_channel(self) -> str:
        """Pub/sub channel carrying ``cancel`` messages naming a story; the story's CANCELLED state
        is the durable copy, so a worker that missed one re-checks its running stage on reconnect."""
        return self._k("cancel")

    # LLM layer
    def llm_cache(self, digest: str) -> str:
        """String with a TTL: one cached model reply (JSON), under the sha256 of its exact request."""
        return self._k("llm", "cache", digest)

    def llm_cache_pattern(self) -> str:
        """SCAN pattern matching every cached model reply (and nothing else)."""
        return self._k("llm", "cache", "*")

    def llm_cache_stats(self) -> str:
        """Hash: ``{provider}:{role}:hit`` / ``:miss`` -> count of response-cache lookups."""
        return self._k("llm", "stats", "cache")

    def llm_breaker(self, provider: str) -> str:
        """Hash: a provider's circuit breaker: consecutive failures, open_until, opened count."""
        return self._k("llm", "breaker", provider)

    def llm_probe(self, provider: str) -> str:
        """String with a TTL: held by the one call probing a provider whose cool-down has passed."""
        return self._k("llm", "breaker", provider, "probe")

    def ratelimit(self, provider: str) -> str:
        """Hash: a provider's token buckets (requests and tokens per minute), shared by the fleet."""
        return self._k("ratelimit", provider)

    def budget(self, scope: str) -> str:
        """Hash: spend of one budget scope (``story:AUTH-001``, ``domain:auth:2025-01-31``,
        ``global:2025-01-31``): spent and reserved nano-USD and tokens, grants, alert flags."""
        return self._k("budget", scope)

    def budget_pattern(self) -> str:
        """SCAN pattern matching every budget scope hash."""
        return self._k("budget", "*")

    def budget_reservations(self) -> str:
        """Sorted set: open reservation id -> expiry time (an expired one is freed by a sweep)."""
        return self._k("budgetres")

    def budget_reservation(self, reservation: str) -> str:
        """Hash with a TTL: what one open reservation holds (amounts and scope keys)."""
        return self._k("budgetres", reservation)

    def story_llm_calls(self, story_id: str) -> str:
        """Stream: one entry per model call made for the story (provider, model, tokens, cost, latency,
        cache hit, offline)."""
        return self._k("story", story_id, "llm")

    # The Slack notifier
    def notifier_thread(self, story_id: str) -> str:
        """String with a TTL: the ts of the story's parent message in Slack (its thread), so any
        notifier process replies in the same thread."""
        return self._k("notifier", "thread", story_id)

    def notifier_dead(self) -> str:
        """List (newest first, bounded): messages Slack never took, as JSON {entry, event, error, at}."""
        return self._k("notifier", "dead")

    def notifier_dead_total(self) -> str:
        """Counter: every message ever dead-lettered (the list keeps only the newest)."""
        return self._k("notifier", "deadtotal")

    def notifier_state(self) -> str:
        """Hash: the notifier's last problem (``problem``, ``since``) and heartbeat (``seen``),
        which `wave status` shows."""
        return self._k("notifier", "state")

    # Counters kept for /metrics (the supervisor reads them at scrape; any process writes them)
    def metric_counters(self) -> str:
        """Hash: fleet-wide counters that no other key holds (field -> integer), e.g.
        ``halts``, ``trace_runs_dropped``; HINCRBY by whichever process counts."""
        return self._k("metrics", "counters")

    def trace_outbox(self) -> str:
        """List: LangSmith runs work horses left for the supervisor to send, one JSON entry per
        stage (wavefleet/trace_outbox.py); bounded by ``langsmith.outbox_size`` entries."""
        return self._k("trace", "outbox")

    def metric_stage_durations(self, domain: str, role: str) -> str:
        """Hash: one domain and role's stage-duration histogram: ``{outcome}:le:{bound}`` cumulative
        counts, ``{outcome}:count`` and ``{outcome}:sum_ms`` (outcome: ok, failed, transient, held)."""
        return self._k("metrics", "stage", domain, role)

    def metric_llm(self) -> str:
        """Hash: answered model calls by provider: ``{provider}:calls:{offline 0|1}``,
        ``{provider}:cost_nusd``, ``{provider}:tokens:{input|output|cache_read|cache_write}``."""
        return self._k("metrics", "llm")

    # The safety gate's review queue (wavefleet/safety/review.py)
    def safety_review(self) -> str:
        """Hash: the actions waiting for a human (action id -> JSON: story, role, round, tool,
        arguments as they run, the rules' and the judge's reasons, when)."""
        return self._k("safety", "review")

    def safety_verdict(self, story: str, digest: str) -> str:
        """String with a TTL: a human's ``approve`` or ``reject`` of one exact action of a story (the
        sha256 of its tool and exact arguments), consumed (GETDEL) by the stage that replays it."""
        return self._k("safety", "verdict", story, digest)
