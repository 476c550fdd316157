"""The supervisor's /metrics, /healthz and /readyz, scraped from a real supervisor process."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import urllib.error
import urllib.request
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families
from redis import Redis

from wavefleet import notifier_status
from wavefleet.config import MetricsSettings, Settings
from wavefleet.connection import connect
from wavefleet.domains import Domains
from wavefleet.embedded import free_port
from wavefleet.fleet_events import EventConsumer
from wavefleet.halt import send_halt, send_resume
from wavefleet.lifecycle import StoryState
from wavefleet.metrics import FleetCollector
from wavefleet.queues import Dispatcher
from wavefleet.store import StoryStore
from wavefleet.stories import Story
from wavefleet.testing import Processes, env_of, fast_settings, redis_server, run_wave, wait_until

pytestmark = pytest.mark.slow


def with_metrics(settings: Settings) -> Settings:
    return settings.model_copy(update={"metrics": MetricsSettings(port=free_port())})


def get(settings: Settings, path: str) -> tuple[int, str]:
    """(status, body) of one request to the supervisor; (0, why) while nothing listens."""
    url = f"http://127.0.0.1:{settings.metrics.port}{path}"
    try:
        with urllib.request.urlopen(url, timeout=5) as reply:
            return reply.status, reply.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()
    except OSError as exc:
        return 0, str(exc)


Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def samples(text: str) -> Samples:
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def test_metrics_scraped_during_a_run_show_the_counts_it_produced(
    settings: Settings, tmp_path: Path, store: StoryStore, domains: Domains
) -> None:
    settings = with_metrics(settings)
    procs = Processes(settings, tmp_path / "logs")
    try:
        procs.team("auth")
        procs.supervisor()
        wait_until(lambda: get(settings, "/healthz")[0] == 200, message="/healthz", diagnose=procs.logs)
        ids = ["AUTH-101", "AUTH-102", "AUTH-103"]
        store.enqueue(
            [Story(id=i, title=f"Story {i}", acceptance_criteria=("it works",)) for i in ids], domains
        )
        # Scraped while the run goes on: a scrape never disturbs it, and never names a story.
        status, during = get(settings, "/metrics")
        assert status == 200 and "AUTH-1" not in during
        wait_until(
            lambda: all(store.get(i).state is StoryState.DONE for i in ids),
            timeout_s=90,
            message="three stories done",
            diagnose=procs.logs,
        )
        status, text = get(settings, "/metrics")
        assert status == 200, text
        seen = samples(text)
        assert seen[("wave_stories", (("domain", "auth"), ("state", "done")))] == 3
        for role in ("pm", "fe", "be", "qa", "cto"):
            assert seen[("rq_workers", (("role", role), ("state", "alive")))] == 1, role
            assert seen[("rq_jobs", (("queue", f"wave:auth:{role}"), ("status", "queued")))] == 0
        assert seen[("wave_halted", ())] == 0
        assert "AUTH-1" not in text
        assert_stage_histograms(seen, store, ids)
        # QA ran the domain's tests once per story, under bwrap (the default sandbox), in its worker
        assert seen[("wave_sandbox_commands_total", (("mode", "bwrap"),))] == len(ids)
        assert seen[("wave_sandbox_commands_total", (("mode", "container"),))] == 0

        # Model calls from another process (`wave llm call`, no key: the offline provider), the
        # second one a cache hit: counted by provider, offline, at no cost for the hit.
        replies = [llm_call(settings, "AUTH-101") for _ in range(2)]
        assert [r["cache_hit"] for r in replies] == [False, True], replies
        seen = samples(get(settings, "/metrics")[1])
        assert seen[("wave_llm_calls_total", (("offline", "true"), ("provider", "offline")))] == 2
        usage = replies[0]["usage"]
        assert usage["input_tokens"] > 0 and usage["output_tokens"] > 0, usage
        for kind in ("input", "output", "cache_read", "cache_write"):
            label = (("kind", kind), ("provider", "offline"))
            assert seen[("wave_llm_tokens_total", label)] == usage[f"{kind}_tokens"], kind
        assert seen[("wave_llm_cost_usd_total", (("provider", "offline"),))] == pytest.approx(
            replies[0]["cost_usd"], abs=1e-9
        )

        # A real stop counts one halt; a repeated stop of the halted fleet counts none.
        assert seen[("wave_halts_total", ())] == 0
        for _ in range(2):
            assert run_wave(settings, "stop", "--reason", "metrics test").returncode == 0
        seen = samples(get(settings, "/metrics")[1])
        assert seen[("wave_halts_total", ())] == 1 and seen[("wave_halted", ())] == 1
    finally:
        procs.stop_all()


def assert_stage_histograms(seen: Samples, store: StoryStore, ids: list[str]) -> None:
    """Each role's histogram counts exactly the stage attempts the stories' results record."""
    ran: Counter[str] = Counter()
    took: Counter[str] = Counter()
    for story_id in ids:
        for field, raw in store.redis.hgetall(store.keys.story_results(story_id)).items():
            result = json.loads(raw)
            assert result["ok"] is True, (field, result)
            role = field.split(".")[1]
            ran[role] += 1
            took[role] += result.get("duration_s", 0.0)
    assert set(ran) == {"pm", "fe", "be", "qa", "cto"}, ran
    for role, n in ran.items():
        labels = (("domain", "auth"), ("outcome", "ok"), ("role", role))
        assert seen[("wave_stage_duration_seconds_count", labels)] == n, role
        assert seen[("wave_stage_duration_seconds_bucket", (labels[0], ("le", "+Inf"), *labels[1:]))] == n
        assert abs(seen[("wave_stage_duration_seconds_sum", labels)] - took[role]) < 0.001 * n, role
        failed = (("domain", "auth"), ("outcome", "failed"), ("role", role))
        assert ("wave_stage_duration_seconds_count", failed) not in seen


def llm_call(settings: Settings, story: str) -> dict[str, Any]:
    out = run_wave(settings, "llm", "call", "say hello", "--task", "planning", "--story", story, "--json")
    assert out.returncode == 0, out.stderr
    reply: dict[str, Any] = json.loads(out.stdout)["response"]
    return reply


def test_readyz_fails_while_redis_is_down_or_the_fleet_is_halted_and_healthz_stays_ok(
    tmp_path: Path, domains_dir: Path
) -> None:
    with redis_server(tmp_path / "redis") as server:
        settings = with_metrics(fast_settings(server, tmp_path / "data", domains_dir))
        redis: Redis = connect(settings)
        procs = Processes(settings, tmp_path / "logs")
        try:
            procs.supervisor()
            wait_until(lambda: get(settings, "/healthz")[0] == 200, message="/healthz", diagnose=procs.logs)
            status, body = get(settings, "/readyz")
            assert status == 503 and "watcher" in json.loads(body)["reason"], body
            procs.watcher()
            wait_until(lambda: get(settings, "/readyz")[0] == 200, message="ready", diagnose=procs.logs)

            send_halt(redis, settings.keys, "test stop", "test")
            status, body = get(settings, "/readyz")
            assert status == 503 and "halted" in json.loads(body)["reason"], body
            assert get(settings, "/healthz")[0] == 200  # a halted fleet is not a dead supervisor
            send_resume(redis, settings.keys, "test")
            assert get(settings, "/readyz")[0] == 200

            server.kill()
            status, body = get(settings, "/readyz")
            assert status == 503 and json.loads(body)["reason"].startswith("Redis unreachable"), body
            assert len(body.strip().splitlines()) == 1
            assert get(settings, "/healthz")[0] == 200
            status, body = get(settings, "/metrics")
            assert status == 503 and "Redis unreachable" in body, body

            # Redis back on its port (its AOF kept the data): ready again without a restart.
            server.start()
            wait_until(
                lambda: get(settings, "/readyz")[0] == 200,
                message="ready once Redis is back",
                diagnose=lambda: f"{get(settings, '/readyz')}\n{procs.logs()}",
            )
            assert get(settings, "/metrics")[0] == 200
        finally:
            procs.stop_all()


def run_supervisor(settings: Settings, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "wavefleet.cli", "supervisor", "--burst"],
        env={**env_of(settings), **env},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_a_bad_metrics_port_is_refused_in_one_line(settings: Settings) -> None:
    out = run_supervisor(settings, WAVE_METRICS__PORT="70000")
    assert out.returncode != 0
    assert len(out.stderr.strip().splitlines()) == 1 and "WAVE_METRICS__PORT" in out.stderr, out.stderr

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        out = run_supervisor(settings, WAVE_METRICS__PORT=str(taken.getsockname()[1]))
    assert out.returncode != 0
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and "WAVE_METRICS__PORT" in lines[0], out.stderr


def scrape_in_process(settings: Settings, redis: Redis, store: StoryStore, domains: Domains) -> Samples:
    """One scrape of the supervisor's collector, without the HTTP server (the same text format)."""
    registry = CollectorRegistry(auto_describe=False)
    dispatcher = Dispatcher(settings, connect(settings, decode=False), store)
    registry.register(FleetCollector(redis, settings.keys, domains, dispatcher))
    return samples(generate_latest(registry).decode())


def test_counters_other_processes_write_are_exposed_by_family_and_unknown_fields_ignored(
    settings: Settings, redis: Redis, store: StoryStore, domains: Domains
) -> None:
    seen = scrape_in_process(settings, redis, store, domains)
    for name in ("wave_halts_total", "wave_trace_runs_sent_total", "wave_trace_runs_dropped_total"):
        assert seen[(name, ())] == 0, name  # every known counter exists from the start, at 0
    assert seen[("wave_notifier_backlog", ())] == 0  # no events stream yet

    counters = settings.keys.metric_counters()
    for field, n in [("trace_runs_sent", 7), ("trace_runs_dropped", 2), ("safety_block", 3)]:
        redis.hincrby(counters, field, n)
    redis.hincrby(counters, "safety_escalate", 1)
    redis.hincrby(counters, "sandbox_limit_hits:memory", 4)
    redis.hincrby(counters, "sandbox_commands", 6)  # the container runner's
    redis.hincrby(counters, "a_field_of_a_newer_version", 9)
    # The notifier's group has read one event of five and acknowledged none: five are owed.
    for _ in range(2):
        send_halt(redis, settings.keys, "backlog test", "test")
        send_resume(redis, settings.keys, "test")
    send_halt(redis, settings.keys, "backlog test", "test")
    consumer = EventConsumer(redis, settings.keys, notifier_status.GROUP, "n1", start="0")
    assert len(consumer.read(count=1)) == 1
    redis.incrby(settings.keys.notifier_dead_total(), 2)

    seen = scrape_in_process(settings, redis, store, domains)
    assert seen[("wave_trace_runs_sent_total", ())] == 7
    assert seen[("wave_trace_runs_dropped_total", ())] == 2
    assert seen[("wave_safety_decisions_total", (("decision", "block"),))] == 3
    assert seen[("wave_safety_decisions_total", (("decision", "escalate"),))] == 1
    assert seen[("wave_sandbox_limit_hits_total", (("limit", "memory"),))] == 4
    assert seen[("wave_sandbox_commands_total", (("mode", "container"),))] == 6
    assert seen[("wave_halts_total", ())] == 3
    assert seen[("wave_notifier_backlog", ())] == 5
    assert seen[("wave_notifier_dead_letters_total", ())] == 2
    assert not [name for name, _ in seen if "newer_version" in name]


def test_story_counts_stay_right_as_stories_finish_go_round_again_and_finish_again(
    settings: Settings, redis: Redis, store: StoryStore, domains: Domains
) -> None:
    """The collector reads a finished story's domain and state once (its finished score unchanged),
    not at every scrape; what it shows must still be what Redis holds."""
    registry = CollectorRegistry(auto_describe=False)
    dispatcher = Dispatcher(settings, connect(settings, decode=False), store)
    registry.register(FleetCollector(redis, settings.keys, domains, dispatcher))
    keys = settings.keys

    def story(story_id: str, state: str, finished_at: float | None) -> None:
        redis.hset(keys.story(story_id), mapping={"domain": "auth", "state": state})
        if finished_at is None:
            redis.sadd(keys.active(), story_id)
        else:
            redis.srem(keys.active(), story_id)
            redis.zadd(keys.finished(), {story_id: finished_at})

    def stories() -> dict[str, float]:
        seen = samples(generate_latest(registry).decode())
        return {dict(labels)["state"]: n for (name, labels), n in seen.items() if name == "wave_stories"}

    def hmgets() -> int:
        return int(redis.info("commandstats").get("cmdstat_hmget", {}).get("calls", 0))

    story("AUTH-1", "done", 1.0)
    story("AUTH-2", "killed", 2.0)
    story("AUTH-3", "building", None)
    assert stories() == {"done": 1, "killed": 1, "building": 1}
    before = hmgets()
    story("AUTH-4", "done", 3.0)
    assert stories() == {"done": 2, "killed": 1, "building": 1}
    assert hmgets() - before == 2  # the active story and the newly finished one, not the others
    story("AUTH-1", "planning", None)  # sent round again: active, still in the finished set
    story("AUTH-3", "failed", 4.0)
    assert stories() == {"done": 1, "killed": 1, "planning": 1, "failed": 1}
    story("AUTH-1", "failed", 5.0)  # finished again: a new score, read again
    assert stories() == {"done": 1, "killed": 1, "failed": 2}
