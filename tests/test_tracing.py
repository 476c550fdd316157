"""LangSmith tracing against a local collector with the real `langsmith` client: a work horse's runs
go to the Redis trace outbox in one command, the supervisor's sender posts them with its roots as one
tree; an outage or a full bound drops and counts runs and never blocks a stage; off does nothing."""

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
from wavefleet.tracing import (
    LangSmithTracer,
    NoTracer,
    OutboxTracer,
    TraceContext,
    new_trace,
    tracer_for,
)

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
    sender, horse = LangSmithTracer(live, redis), OutboxTracer(live, redis)
    root = new_trace()
    stage = root.child()
    sender.start(root, None, "S-1", "chain", inputs={"title": f"uses {SECRET}"})
    horse.start(stage, root, "pm r0", "chain", inputs={"opening": "x" * 500})
    horse.end(stage, root, outputs={"ok": True})
    horse.close()  # the stage's end: its runs to the outbox
    assert redis.llen(live.keys.trace_outbox()) == 1  # one entry for the stage
    wait_until(lambda: redis.llen(live.keys.trace_outbox()) == 0, timeout_s=10, message="outbox drained")
    sender.close(10)

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


def test_a_horse_never_talks_to_langsmith_and_costs_one_redis_command(
    settings: Settings, redis: Redis, collector: LangSmithServer
) -> None:
    live = traced(settings, collector)
    collector.close()  # LangSmith refuses connections: the horse must not notice
    horse, root = OutboxTracer(live, redis), new_trace()
    horse.outbox.push([])  # the script loaded once per Redis (a worker's first stage), not per stage
    before = threading.active_count()
    calls: list[tuple[object, ...]] = []
    original = redis.execute_command

    def counted(*args: object, **kwargs: object) -> object:
        calls.append(args)
        return original(*args, **kwargs)

    redis.execute_command = counted
    started = time.perf_counter()
    for _ in range(100):
        horse.start(root.child(), root, "tool", "tool", inputs={"args": {"path": "a.py"}})
    horse.close()
    # 100 runs recorded and handed on: appends, one Lua call. A horse that sent over HTTP, or
    # waited for a sender, would take the client's retries (seconds) during this outage.
    assert time.perf_counter() - started < 0.5
    assert [c[0] for c in calls] == ["EVALSHA"] or [c[0] for c in calls] == [
        "EVALSHA",
        "SCRIPT LOAD",
        "EVALSHA",
    ]
    assert threading.active_count() == before and collector.requests == []
    assert redis.llen(live.keys.trace_outbox()) == 1 and horse.sent == 100


def test_a_langsmith_outage_drops_the_supervisors_batches_with_a_count_and_logs_it_once(
    settings: Settings, redis: Redis, collector: LangSmithServer, capsys: pytest.CaptureFixture[str]
) -> None:
    live = traced(settings, collector)
    collector.close()  # connection refused from the first run on
    horse, root = OutboxTracer(live, redis), new_trace()
    for _ in range(3):  # three stages
        for _ in range(10):
            horse.start(root.child(), root, "tool", "tool")
        horse.close()
    sender = LangSmithTracer(live, redis)
    sender.start_sending()
    wait_until(
        lambda: counters(redis, live).get("trace_runs_dropped", 0) >= 30,
        timeout_s=30,  # each batch: the client's 3 attempts with 1 s and 2 s backoff
        message="the dropped counter to count the three stages' runs",
        diagnose=lambda: f"{counters(redis, live)} outbox={redis.llen(live.keys.trace_outbox())}",
    )
    assert redis.llen(live.keys.trace_outbox()) == 0
    collector.reopen()
    horse.start(root.child(), root, "tool", "tool")
    horse.close()
    wait_until(
        lambda: counters(redis, live).get("trace_runs_sent", 0) == 1, timeout_s=10, message="sent again"
    )
    sender.close(1)
    logged = capsys.readouterr()
    assert (logged.out + logged.err).count("LangSmith unreachable") == 1


def test_the_horses_bound_and_the_outboxs_bound_drop_and_count(
    settings: Settings, redis: Redis, collector: LangSmithServer
) -> None:
    live = traced(settings, collector, queue_size=5, outbox_size=2)
    horse, root = OutboxTracer(live, redis), new_trace()
    started = time.perf_counter()
    for _ in range(50):
        horse.start(root.child(), root, "x", "chain")
    assert time.perf_counter() - started < 0.5 and horse.dropped == 45  # never waits for room
    horse.close()
    for _ in range(2):  # no supervisor drains: the outbox fills (2 entries), the third stage is dropped
        for _ in range(3):
            horse.start(root.child(), root, "x", "chain")
        horse.close()
    assert redis.llen(live.keys.trace_outbox()) == 2
    assert counters(redis, live).get("trace_runs_dropped") == 45 + 3 and horse.dropped == 48


def test_a_full_supervisor_queue_drops_and_counts(
    settings: Settings, redis: Redis, collector: LangSmithServer
) -> None:
    live = traced(settings, collector, queue_size=5, batch=5, flush_interval_s=3600)
    collector.delay_s = 3.0  # the sender hangs on its first batch: nothing leaves the queue meanwhile
    tracer = LangSmithTracer(live, redis)
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
    tracer = tracer_for(settings, Redis())  # never connects: off
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


def test_the_supervisor_closing_waits_at_most_its_bound_for_a_hanging_langsmith(
    settings: Settings, redis: Redis, collector: LangSmithServer
) -> None:
    live = traced(settings, collector)
    collector.delay_s = 5.0  # accepts the connection, answers after the client's timeout (10 s) is far
    tracer, root = LangSmithTracer(live, redis), new_trace()
    for _ in range(10):
        tracer.start(root.child(), root, "x", "chain")
    started = time.perf_counter()
    tracer.close(0.5)
    assert 0.45 < time.perf_counter() - started < 1.0
    assert tracer.dropped >= 10 and counters(redis, live).get("trace_runs_dropped", 0) >= 10
