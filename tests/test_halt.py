"""Emergency stop with real processes: everything halts, nothing is lost, resume finishes each story once."""

from __future__ import annotations

import json
import os
import subprocess
import time
from pathlib import Path

import pytest
from redis import Redis
from rq import Queue
from rq.registry import FailedJobRegistry

from wavefleet.config import Settings
from wavefleet.connection import connect
from wavefleet.domains import Domains
from wavefleet.halt import HaltState
from wavefleet.lifecycle import TERMINAL, Role, StoryState
from wavefleet.store import StoryStore
from wavefleet.stories import Story
from wavefleet.testing import Processes, process_group, run_wave, wait_until

pytestmark = pytest.mark.slow
# Waits here are generous bounds for a loaded CI machine; the latency itself is measured by
# benchmarks/halt_latency.py, not asserted by tests.
ONE_EACH = {"pm": 1, "fe": 1, "be": 1, "qa": 1, "cto": 1}


def story(story_id: str, *labels: str) -> Story:
    return Story(id=story_id, title=f"Story {story_id}", labels=labels)


def running(redis: Redis, settings: Settings) -> dict[str, dict[str, object]]:
    return {k: json.loads(v) for k, v in redis.hgetall(settings.keys.running()).items()}


def live_workers(redis: Redis, settings: Settings) -> set[str]:
    return {
        w for w in redis.smembers(settings.keys.workers()) if redis.exists(settings.keys.worker_heartbeat(w))
    }


def wave(settings: Settings, *argv: str) -> subprocess.CompletedProcess[str]:
    return run_wave(settings, *argv)


def assert_finished_once_without_burning_a_retry(store: StoryStore, ids: list[str], role: Role) -> None:
    for story_id in ids:
        record = store.get(story_id)
        assert record.state is StoryState.DONE, story_id
        assert record.attempts[role] == 1, f"{story_id}: a halt burned a retry"
        ends = [e["to"] for e in store.events(story_id) if e.get("from") and StoryState(e["to"]) in TERMINAL]
        assert ends == ["done"], story_id


def test_the_emergency_stop_file_halts_ten_busy_workers_and_removing_it_finishes_every_story_once(
    procs: Processes, store: StoryStore, domains: Domains, redis: Redis, settings: Settings
) -> None:
    procs.team("auth", {**ONE_EACH, "pm": 10})
    procs.supervisor()
    procs.watcher()
    ids = [f"AUTH-{n:03d}" for n in range(300, 310)]
    store.enqueue([story(i, "offline:slow=pm:4") for i in ids], domains)
    busy = wait_until(
        lambda: (r := running(redis, settings)) and len(r) == 10 and r,
        timeout_s=60,
        message="ten running PM stages",
    )

    settings.halt_file.write_text("smoke in the server room\n")
    wait_until(
        lambda: len(_acks(redis, settings)) == len(live_workers(redis, settings)),
        timeout_s=10,
        message="every live worker to ack",
    )
    wait_until(
        lambda: all(store.get(i).state is StoryState.HALTED for i in ids),
        timeout_s=10,
        message="every story halted",
    )

    assert not any(process_group(int(str(info["pid"]))) for info in busy.values())
    assert running(redis, settings) == {}
    assert len(Queue(settings.keys.queue("auth", "pm"), connection=connect(settings, decode=False))) == 10
    wait_until(
        lambda: "smoke in the server room" in (redis.get(settings.keys.halt()) or ""),
        timeout_s=10,
        message="the file's text as the halt reason",
    )
    assert "EMERGENCY STOP" in procs.logs()

    settings.halt_file.unlink()
    wait_until(
        lambda: all(store.get(i).state is StoryState.DONE for i in ids),
        timeout_s=120,
        message="every story done after resume",
    )
    assert_finished_once_without_burning_a_retry(store, ids, Role.PM)
    assert (
        FailedJobRegistry(settings.keys.queue("auth", "pm"), connection=connect(settings, decode=False)).count
        == 0
    )


def _acks(redis: Redis, settings: Settings) -> dict[str, str]:
    return redis.hgetall(settings.keys.halt_acks())


@pytest.mark.parametrize(
    "roles", [(Role.FE, Role.BE), (Role.QA,), (Role.CTO,)], ids=["fe-and-be", "qa", "cto"]
)
def test_wave_stop_halts_a_story_in_any_stage_and_wave_resume_continues_it(
    procs: Processes,
    store: StoryStore,
    domains: Domains,
    redis: Redis,
    settings: Settings,
    roles: tuple[Role, ...],
) -> None:
    procs.team("payments")
    procs.supervisor()
    store.enqueue([story("PAYMENTS-300", *(f"offline:slow={r.value}:4" for r in roles))], domains)
    wait_until(
        lambda: {r.value for r in roles} <= {i["role"] for i in running(redis, settings).values()},
        timeout_s=60,
        message=f"the {'+'.join(r.value for r in roles)} stages to run",
    )

    stopped = wave(settings, "stop", "--reason", "deploy freeze")
    assert stopped.returncode == 0, stopped.stderr
    wait_until(lambda: store.get("PAYMENTS-300").state is StoryState.HALTED, timeout_s=10, message="halted")
    wait_until(lambda: not running(redis, settings), timeout_s=10, message="every stopped stage requeued")
    assert "FLEET HALTED" in wave(settings, "status").stdout

    assert wave(settings, "resume").returncode == 0
    wait_until(lambda: store.get("PAYMENTS-300").state is StoryState.DONE, timeout_s=60, message="done")
    for role in roles:
        assert_finished_once_without_burning_a_retry(store, ["PAYMENTS-300"], role)


def test_a_worker_that_missed_the_halt_message_still_halts_from_the_flag(
    procs: Processes, store: StoryStore, domains: Domains, redis: Redis, settings: Settings
) -> None:
    procs.team("auth")
    procs.supervisor()
    store.enqueue([story("AUTH-320", "offline:slow=pm:6")], domains)
    busy = wait_until(lambda: running(redis, settings), timeout_s=60, message="the PM stage to run")

    redis.client_kill_filter(_type="pubsub")  # every subscriber loses its connection...
    redis.set(
        settings.keys.halt(), json.dumps(HaltState("flag only", "test", time.time()).__dict__)
    )  # ...no publish

    pid = int(str(next(iter(busy.values()))["pid"]))
    wait_until(lambda: not process_group(pid), timeout_s=10, message="the stage to be stopped")
    wait_until(lambda: store.get("AUTH-320").state is StoryState.HALTED, timeout_s=10, message="halted")


def test_a_worker_started_during_a_halt_stays_idle_until_resume(
    procs: Processes, store: StoryStore, domains: Domains, redis: Redis, settings: Settings
) -> None:
    assert wave(settings, "stop", "--reason", "maintenance").returncode == 0
    store.enqueue([story("AUTH-330")], domains)
    procs.supervisor()
    procs.team("auth")
    wait_until(lambda: len(_acks(redis, settings)) == 5, timeout_s=30, message="five idle acks")
    time.sleep(1.0)

    assert store.get("AUTH-330").state is StoryState.QUEUED
    assert redis.hlen(settings.keys.running()) == 0

    assert wave(settings, "resume").returncode == 0
    wait_until(lambda: store.get("AUTH-330").state is StoryState.DONE, timeout_s=60, message="done")


def test_resume_refuses_while_the_emergency_stop_file_exists(settings: Settings, redis: Redis) -> None:
    settings.halt_file.parent.mkdir(parents=True, exist_ok=True)
    settings.halt_file.write_text("")
    redis.set(
        settings.keys.halt(), json.dumps(HaltState("x", f"file:{settings.halt_file.absolute()}", 0).__dict__)
    )

    result = wave(settings, "resume")

    assert result.returncode == 75
    assert "remove that file" in result.stderr
    assert redis.exists(settings.keys.halt())
    settings.halt_file.unlink()


def test_resume_in_a_container_names_the_stop_file_by_its_host_path(settings: Settings, redis: Redis) -> None:
    # In Docker the halt folder is the host's HALT_DIR mounted at /halt: a path inside the container
    # tells the operator nothing, so `wave resume` names the file where they can remove it.
    in_container = settings.model_copy(update={"halt_host_dir": Path("/srv/fleet/halt")})
    in_container.halt_file.parent.mkdir(parents=True, exist_ok=True)
    in_container.halt_file.write_text("")
    state = HaltState("x", f"file:{in_container.halt_file.absolute()}", 0)
    redis.set(settings.keys.halt(), json.dumps(state.__dict__))

    result = wave(in_container, "resume")

    assert result.returncode == 75
    assert result.stderr.strip() == (
        "wave: error: halted by /srv/fleet/halt/EMERGENCY-STOP (the watcher's halt folder): "
        "remove that file to resume"
    )
    in_container.halt_file.unlink()


def niceness(pid: int, tid: int) -> int:
    return int((Path(f"/proc/{pid}/task/{tid}/stat").read_text().rsplit(")", 1)[1].split())[16])


def test_a_workers_stages_run_below_its_halt_listener_and_heartbeat(
    procs: Processes, store: StoryStore, domains: Domains, redis: Redis, settings: Settings
) -> None:
    # On a saturated machine the stop and liveness signals must get the CPU before stage work.
    worker = procs.worker("auth", "pm", 1)
    procs.supervisor()
    store.enqueue([story("AUTH-330", "offline:slow=pm:30")], domains)
    busy = wait_until(lambda: running(redis, settings), timeout_s=60, message="the PM stage to run")
    horse = int(str(next(iter(busy.values()))["pid"]))
    base = os.getpriority(os.PRIO_PROCESS, 0)
    lowered = base + settings.worker.work_niceness

    threads = {int(t.name) for t in Path(f"/proc/{worker.pid}/task").iterdir()} - {worker.pid}

    assert niceness(worker.pid, worker.pid) == lowered  # the RQ loop
    assert niceness(horse, horse) == lowered  # the stage it forked
    # The halt listener and the heartbeat, started before the lowering (RQ's own command thread,
    # started after it, runs lowered).
    assert sum(niceness(worker.pid, tid) == base for tid in threads) == 2
