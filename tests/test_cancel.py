"""`wave cancel` with real processes: the running stage and everything it started die within a
second, nothing is handed on, the worker takes the next job and the story can be retried."""

from __future__ import annotations

import json
import time

import pytest
from redis import Redis
from rq import Queue
from rq.registry import FailedJobRegistry

from wavefleet.config import Settings
from wavefleet.connection import connect
from wavefleet.domains import Domains
from wavefleet.lifecycle import Event, EventKind, Role, StoryState
from wavefleet.store import StoryStore
from wavefleet.stories import Story
from wavefleet.testing import Processes, process_group, run_wave, wait_until

pytestmark = pytest.mark.slow
CANCEL_LATENCY_S = 1.0  # the bound: the stage is gone within a second of `wave cancel`


def running_stage(redis: Redis, settings: Settings, story_id: str, role: Role) -> dict[str, object] | None:
    for raw in redis.hgetall(settings.keys.running()).values():
        info = json.loads(raw)
        if info["story"] == story_id and info["role"] == role.value:
            return dict(info)
    return None


def busy_stage(procs: Processes, redis: Redis, settings: Settings, story_id: str) -> int:
    """The pid of the story's running BE stage, once the child command it started is running."""
    info = wait_until(
        lambda: running_stage(redis, settings, story_id, Role.BE),
        timeout_s=60,
        message="the BE stage to run",
        diagnose=procs.logs,
    )
    pid = int(str(info["pid"]))
    wait_until(lambda: "sleep" in process_group(pid).values(), timeout_s=10, message="the stage's child")
    return pid


def queue(settings: Settings, role: str) -> Queue:
    return Queue(settings.keys.queue("auth", role), connection=connect(settings, decode=False))


def test_wave_cancel_kills_the_running_stage_within_a_second_and_hands_nothing_on(
    procs: Processes, store: StoryStore, domains: Domains, redis: Redis, settings: Settings
) -> None:
    procs.team("auth")
    procs.supervisor()
    store.enqueue([Story(id="AUTH-400", title="slow build", labels=("offline:slow=be:60",))], domains)
    pid = busy_stage(procs, redis, settings, "AUTH-400")

    result = run_wave(settings, "cancel", "AUTH-400")

    assert result.returncode == 0, result.stderr
    wait_until(
        lambda: not process_group(pid),
        timeout_s=CANCEL_LATENCY_S,
        message="the stage's process group to be gone",
        diagnose=lambda: f"{process_group(pid)}\n{procs.logs()}",
    )
    noted = wait_until(
        lambda: [e for e in store.events("AUTH-400") if e["event"] == "stage_cancelled"],
        timeout_s=10,
        message="the stage_cancelled event",
        diagnose=procs.logs,
    )
    assert noted[0]["role"] == "be" and "the story is cancelled" in noted[0]["reason"]
    # The supervisor reads its intake every 50 ms and runs recovery every 0.2 s (fast_settings):
    # in 1.5 s it has had seven chances to dispatch, advance or re-run something.
    time.sleep(1.5)
    assert store.get("AUTH-400").state is StoryState.CANCELLED
    assert store.result("AUTH-400", 1, Role.BE, 1) is None
    assert running_stage(redis, settings, "AUTH-400", Role.BE) is None
    assert len(queue(settings, "qa")) == 0 and len(queue(settings, "be")) == 0
    assert FailedJobRegistry(queue=queue(settings, "be")).count == 0
    transitions = [e["event"] for e in store.events("AUTH-400") if e.get("from")]
    assert transitions[-1] == "cancel", transitions

    store.enqueue([Story(id="AUTH-401", title="next")], domains)
    wait_until(lambda: store.get("AUTH-401").state is StoryState.DONE, timeout_s=60, message="the next story")

    assert run_wave(settings, "retry", "AUTH-400").returncode == 0
    wait_until(
        lambda: (info := running_stage(redis, settings, "AUTH-400", Role.BE)) and info["attempt"] == 2,
        timeout_s=60,
        message="the retried story's BE stage to run again",
        diagnose=procs.logs,
    )


def test_a_worker_that_missed_the_cancel_message_stops_the_stage_when_it_reconnects(
    procs: Processes, store: StoryStore, domains: Domains, redis: Redis, settings: Settings
) -> None:
    procs.team("auth")
    procs.supervisor()
    store.enqueue([Story(id="AUTH-410", title="slow", labels=("offline:slow=be:60",))], domains)
    pid = busy_stage(procs, redis, settings, "AUTH-410")

    redis.client_kill_filter(_type="pubsub")  # every subscriber loses its connection...
    store.apply("AUTH-410", Event(EventKind.CANCEL, reason="cancelled, message lost"))  # ...no publish

    wait_until(lambda: not process_group(pid), timeout_s=10, message="the stage to be stopped")
    assert store.get("AUTH-410").state is StoryState.CANCELLED


def test_a_queued_stage_of_a_cancelled_story_never_starts(
    procs: Processes, store: StoryStore, domains: Domains, redis: Redis, settings: Settings
) -> None:
    procs.team("auth", {"pm": 1, "fe": 1})  # no BE worker yet: the BE stage waits on its queue
    procs.supervisor()
    store.enqueue([Story(id="AUTH-420", title="waits")], domains)
    wait_until(lambda: len(queue(settings, "be")) == 1, timeout_s=60, message="the BE stage queued")
    assert run_wave(settings, "cancel", "AUTH-420").returncode == 0

    procs.worker("auth", "be")

    wait_until(lambda: "stale stage skipped" in procs.logs(), timeout_s=30, message="the stage skipped")
    assert store.result("AUTH-420", 1, Role.BE, 1) is None
    assert store.get("AUTH-420").state is StoryState.CANCELLED
