"""The supervisor's /metrics, /healthz and /readyz, scraped from a real supervisor process."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families
from redis import Redis

from wavefleet.config import MetricsSettings, Settings
from wavefleet.connection import connect
from wavefleet.domains import Domains
from wavefleet.embedded import free_port
from wavefleet.halt import send_halt, send_resume
from wavefleet.lifecycle import StoryState
from wavefleet.store import StoryStore
from wavefleet.stories import Story
from wavefleet.testing import Processes, env_of, fast_settings, redis_server, wait_until

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


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
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
    finally:
        procs.stop_all()


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
