"""The Tracer against a local LangSmith collector with the real `langsmith` client: runs arrive as a
tree, an outage or a full queue drops and counts runs and never blocks the caller, off does nothing."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import pytest
from pydantic import SecretStr
from redis import Redis
from servers.langsmith_server import LangSmithServer

from wavefleet.config import LangSmithSettings, Settings
from wavefleet.testing import wait_until
from wavefleet.tracing import NoTracer, TraceContext, Tracer, new_trace, tracer_for

SECRET = "sk-ant-tracing-secret-value-0001"


@pytest.fixture
def collector() -> Iterator[LangSmithServer]:
    server = LangSmithServer()
    yield server
    server.close()


def traced(settings: Settings, collector: LangSmithServer, **overrides: object) -> Settings:
    config = {"api_key": collector.api_key, "endpoint": collector.url, "flush_interval_s": 0.05, **overrides}
    return settings.model_copy(
        update={
            "langsmith": LangSmithSettings(**config),
            "anthropic": settings.anthropic.model_copy(update={"api_key": SecretStr(SECRET)}),
        }
    )


def counters(redis: Redis, settings: Settings) -> dict[str, int]:
    return {k: int(v) for k, v in redis.hgetall(settings.keys.metric_counters()).items()}


def test_runs_arrive_as_one_tree_redacted_and_cut(
    settings: Settings, redis: Redis, collector: LangSmithServer
) -> None:
    live = traced(settings, collector, text_max_chars=100)
    tracer = Tracer(live, redis)
    root = new_trace()
    stage = root.child()
    tracer.start(root, None, "S-1", "chain", inputs={"title": f"uses {SECRET}"})
    tracer.start(stage, root, "pm r0", "chain", inputs={"opening": "x" * 500})
    tracer.end(stage, root, outputs={"ok": True})
    tracer.close(10)

    runs = collector.snapshot()
    assert set(runs) == {root.run_id, stage.run_id}
    assert (
        runs[stage.run_id]["parent_run_id"] == root.run_id and runs[stage.run_id]["trace_id"] == root.run_id
    )
    assert runs[stage.run_id]["dotted_order"].startswith(root.dotted_order + ".")
    assert runs[stage.run_id]["outputs"] == {"ok": True} and runs[stage.run_id]["end_time"]
    assert len(runs[stage.run_id]["inputs"]["opening"]) < 160  # cut to text_max_chars, and says so
    assert (
        SECRET not in b"".join(collector.bodies).decode()
        and "[redacted]" in runs[root.run_id]["inputs"]["title"]
    )
    assert counters(redis, live).get("trace_runs_sent") == 3


def test_a_collector_outage_never_slows_the_caller_and_drops_with_a_count(
    settings: Settings, redis: Redis, collector: LangSmithServer
) -> None:
    live = traced(settings, collector)
    collector.close()  # connection refused from the first run on
    tracer = Tracer(live, redis)
    root = new_trace()
    started = time.perf_counter()
    for _ in range(1000):
        tracer.start(root.child(), root, "tool", "tool", inputs={"args": {"path": "a.py"}})
    per_run_us = (time.perf_counter() - started) / 1000 * 1e6
    # A put is a queue append and a redaction: tens of µs. 2 ms each would mean the caller waits on HTTP
    # (one refused connection with the client's retries takes over a second).
    assert per_run_us < 2000, per_run_us
    wait_until(
        lambda: counters(redis, live).get("trace_runs_dropped", 0) >= 1,
        timeout_s=20,  # one batch: the client's 3 attempts with 1 s and 2 s backoff
        message="the dropped counter to rise",
    )
    collector.failing(503)
    collector.reopen()
    started = time.perf_counter()
    tracer.start(root.child(), root, "tool", "tool")
    assert time.perf_counter() - started < 0.01
    tracer.close(0.1)  # bounded: returns even while the sender is retrying


def test_a_full_queue_drops_and_counts(settings: Settings, redis: Redis, collector: LangSmithServer) -> None:
    live = traced(settings, collector, queue_size=5, batch=5, flush_interval_s=3600)
    collector.delay_s = 3.0  # the sender hangs on its first batch: nothing leaves the queue meanwhile
    tracer = Tracer(live, redis)
    root = new_trace()
    started = time.perf_counter()
    for _ in range(50):
        tracer.start(root.child(), root, "x", "chain")
    assert time.perf_counter() - started < 0.5  # never waits for room
    # the sender holds at most one batch (5) out of the queue (5): at least 50 - 5 - 5 were dropped
    assert tracer.dropped >= 40
    wait_until(
        lambda: counters(redis, live).get("trace_runs_dropped", 0) >= 40, timeout_s=20, message="reported"
    )


def test_off_means_no_thread_and_no_request(settings: Settings, collector: LangSmithServer) -> None:
    assert not settings.langsmith.enabled
    tracer = tracer_for(settings)
    assert isinstance(tracer, NoTracer)
    before = threading.active_count()
    root = new_trace()
    tracer.start(root, None, "S-1", "chain", inputs={"title": "t"})
    tracer.end(root, None, outputs={})
    tracer.close()
    assert threading.active_count() == before and collector.requests == []


def test_a_trace_context_survives_its_wire_form_and_refuses_garbage() -> None:
    root = new_trace()
    assert TraceContext.parse(root.to_json()) == root
    assert TraceContext.parse("") is None and TraceContext.parse("{not json") is None
    assert TraceContext.parse('{"run_id": 1}') is None


def test_closing_waits_at_most_its_bound_for_a_hanging_langsmith_then_not_at_all(
    settings: Settings, redis: Redis, collector: LangSmithServer
) -> None:
    live = traced(settings, collector)
    collector.delay_s = 5.0  # accepts the connection, answers after the client's timeout (10 s) is far
    tracer, root = Tracer(live, redis), new_trace()
    for _ in range(10):
        tracer.start(root.child(), root, "x", "chain")
    started = time.perf_counter()
    tracer.close(0.5)
    first = time.perf_counter() - started
    assert 0.45 < first < 1.0 and tracer.outage(), first
    # the next work horse (here: the same process going on) knows of the outage and does not wait
    for _ in range(10):
        tracer.start(root.child(), root, "x", "chain")
    started = time.perf_counter()
    tracer.close(5)
    assert time.perf_counter() - started < 0.1
    assert tracer.dropped >= 20 and counters(redis, live).get("trace_runs_dropped", 0) >= 20


def test_closing_returns_as_soon_as_a_refused_connection_is_seen(
    settings: Settings, redis: Redis, collector: LangSmithServer
) -> None:
    live = traced(settings, collector)
    collector.close()
    tracer, root = Tracer(live, redis), new_trace()
    for _ in range(10):
        tracer.start(root.child(), root, "x", "chain")
    started = time.perf_counter()
    tracer.close(5)  # the client would sleep 1 s and 2 s between its attempts before it reports the failure
    assert time.perf_counter() - started < 0.5 and tracer.outage()
    assert tracer.dropped == 10
