"""Fallback and recovery are fleet-wide: two worker processes share one breaker through Redis."""

from __future__ import annotations

import json
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import live_settings, start_helper
from redis import Redis
from servers.anthropic_server import AnthropicServer, Reply
from servers.xai_server import XaiServer

from wavefleet.embedded import EmbeddedRedis
from wavefleet.testing import fast_settings

DOMAINS = Path(__file__).resolve().parents[2] / "domains"

pytestmark = pytest.mark.timeout(20)


class Worker:
    """One `llm_proc.py` process: send a call, read its result line."""

    def __init__(self, proc: subprocess.Popen[str]) -> None:
        self.proc = proc

    def ready(self) -> None:
        assert self.proc.stdout is not None
        started = json.loads(self.proc.stdout.readline() or "{}")
        assert started.get("ready"), "the helper did not start: see its log"

    def call(self, prompt: str, task: str = "planning") -> dict[str, object]:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.write(json.dumps({"task": task, "prompt": prompt}) + "\n")
        self.proc.stdin.flush()
        return dict(json.loads(self.proc.stdout.readline()))


@pytest.fixture(scope="module")
def fleet(
    redis_proc: EmbeddedRedis,
    tmp_path_factory: pytest.TempPathFactory,
    anthropic_session: AnthropicServer,
    xai_session: XaiServer,
) -> Iterator[tuple[Worker, Worker]]:
    """Two worker processes for the whole module (they take seconds to import the SDKs); each test's
    `redis` fixture flushes the shared Redis, so every test starts with closed breakers."""
    tmp = tmp_path_factory.mktemp("fleet")
    base = fast_settings(redis_proc, tmp / "data", DOMAINS)
    settings = live_settings(base, anthropic_session, xai_session, cooldown_s=0.5)
    procs = [start_helper("llm_proc.py", settings, log=tmp / f"worker-{i}.log") for i in range(2)]
    pair = (Worker(procs[0]), Worker(procs[1]))
    try:
        for worker in pair:
            worker.ready()
        yield pair
    finally:
        for proc in procs:
            proc.kill()
            proc.wait(timeout=10)


@pytest.fixture
def workers(
    fleet: tuple[Worker, Worker], redis: Redis, anthropic_server: AnthropicServer, xai_server: XaiServer
) -> tuple[Worker, Worker]:
    return fleet


def test_two_failures_in_two_processes_switch_both_to_the_other_provider(
    workers: tuple[Worker, Worker], anthropic_server: AnthropicServer, xai_server: XaiServer
) -> None:
    # Given Claude failing, and two worker processes
    first, second = workers
    anthropic_server.script(*[Reply(status=503)] * 10)

    # When one failure happens in each process, then each process makes another call
    failed_here = first.call("one")
    failed_there = second.call("two")
    after = [first.call("three"), second.call("four")]

    # Then each failed call fell back to Grok, and after the second failure neither process tries Claude
    assert failed_here["fallback_from"] == failed_there["fallback_from"] == "anthropic"
    assert len(anthropic_server.requests) == 2
    assert all(r["provider"] == "xai" for r in [failed_here, failed_there, *after])
    assert len(xai_server.requests) == 4


def test_after_the_cool_down_a_probe_from_one_process_brings_both_back(
    workers: tuple[Worker, Worker], anthropic_server: AnthropicServer
) -> None:
    # Given the breaker opened by one failure in each process
    first, second = workers
    anthropic_server.script(Reply(status=500), Reply(status=500))
    first.call("one")
    second.call("two")
    assert second.call("three")["provider"] == "xai"

    # When the cool-down passes, one process probes Claude (healthy again), then the other calls
    time.sleep(0.55)
    probe = first.call("four")
    other = second.call("five")

    # Then the probe went to Claude and the other process follows it there
    assert probe["provider"] == "anthropic" and other["provider"] == "anthropic"
    assert len(anthropic_server.requests) == 4
