"""Crashes with real processes: a worker, the supervisor or Redis killed mid-run loses nothing."""

from __future__ import annotations

import json
import os
import signal
import time
from collections import Counter
from pathlib import Path

import pytest
from redis import Redis
from rq import Queue
from rq.job import Job

from wavefleet.config import Settings
from wavefleet.connection import connect
from wavefleet.domains import Domains, load_domains
from wavefleet.lifecycle import TERMINAL, Role, StoryState
from wavefleet.store import StoryStore
from wavefleet.stories import Story
from wavefleet.testing import Processes, fast_settings, process_group, redis_server, wait_until
from workers.worker import MAINTENANCE_INTERVAL_S, WaveQueue

pytestmark = pytest.mark.slow


def story(story_id: str, *labels: str) -> Story:
    return Story(id=story_id, title=f"Story {story_id}", labels=labels)


def terminal_events(store: StoryStore, story_id: str) -> list[str]:
    return [e["to"] for e in store.events(story_id) if e.get("from") and StoryState(e["to"]) in TERMINAL]


def running_entries(redis: Redis, settings: Settings) -> dict[str, dict[str, str]]:
    return {k: json.loads(v) for k, v in redis.hgetall(settings.keys.running()).items()}


def test_a_worker_killed_mid_stage_has_its_stage_rerun_by_another_worker_of_that_role(
    procs: Processes, store: StoryStore, domains: Domains, redis: Redis, settings: Settings
) -> None:
    procs.team("auth", {"pm": 1, "fe": 1, "be": 2, "qa": 1, "cto": 1})
    procs.supervisor()
    store.enqueue([story("AUTH-030", "offline:slow=be:8")], domains)
    be_job = wait_until(
        lambda: next((i for i in running_entries(redis, settings).values() if i["role"] == "be"), None),
        message="the BE stage to start",
    )
    horse = int(be_job["pid"])  # the work horse leads the process group of everything the stage runs
    wait_until(lambda: "sleep" in process_group(horse).values(), message="the BE stage to run a command")

    os.kill(int(be_job["worker"].rsplit(".", 1)[1]), signal.SIGKILL)
    killed_at = time.monotonic()
    # The horse dies with its worker, and the stage's command with the horse: no orphan (its
    # `sleep` would otherwise run on for seconds).
    wait_until(
        lambda: not process_group(horse), timeout_s=2, message="the stage's processes to die with the worker"
    )
    wait_until(
        lambda: store.get("AUTH-030").attempts.get(Role.BE) == 2,
        timeout_s=15,
        message="a second attempt",
        diagnose=lambda: f"{store.events('AUTH-030')}\n{procs.logs()}",
    )
    rerun_after = time.monotonic() - killed_at
    wait_until(lambda: store.get("AUTH-030").state is StoryState.DONE, timeout_s=60, message="done")

    # heartbeat TTL 1 s + recovery interval 0.2 s; RQ alone would take minutes. Room for a loaded machine.
    assert rerun_after < 10
    assert terminal_events(store, "AUTH-030") == ["done"]
    rerun = store.result("AUTH-030", 1, Role.BE, 2)
    assert rerun is not None and rerun.worker != be_job["worker"]


def test_a_stage_job_left_in_rqs_intermediate_queue_is_run_again_within_seconds(
    procs: Processes, store: StoryStore, domains: Domains, settings: Settings
) -> None:
    procs.supervisor()
    store.enqueue([story("AUTH-040")], domains)
    raw = connect(settings, decode=False)
    first = "AUTH-040_r0_pm_a1"
    wait_until(lambda: Job.exists(first, connection=raw), message="the PM job on its queue")

    # What a dequeue whose reply was lost leaves behind (redis-py resends the BLMOVE, which takes
    # the next job): the job moved to RQ's intermediate queue, and no worker holding it.
    queue = Queue(settings.keys.queue("auth", "pm"), connection=raw)
    assert raw.lmove(queue.key, queue.intermediate_queue_key) == first.encode()
    stranded_at = time.monotonic()
    procs.team("auth")

    wait_until(
        lambda: store.get("AUTH-040").attempts.get(Role.PM) == 2,
        timeout_s=60,
        message="a new attempt",
        diagnose=procs.logs,
    )
    # Two maintenance passes 15 s apart (seen, then more than 10 s later failed); RQ's own check
    # waits a minute. Room for a loaded machine.
    assert time.monotonic() - stranded_at < 40
    wait_until(lambda: store.get("AUTH-040").state is StoryState.DONE, timeout_s=60, message="done")
    lost = [e for e in store.events("AUTH-040") if e["event"] == "stage_lost"]
    assert len(lost) == 1 and "stuck in intermediate queue" in lost[0]["reason"]
    assert terminal_events(store, "AUTH-040") == ["done"]


def test_the_supervisor_killed_repeatedly_still_finishes_every_story_exactly_once(
    procs: Processes, store: StoryStore, domains: Domains
) -> None:
    procs.team("payments")
    supervisor = procs.supervisor()
    ids = [f"PAYMENTS-{n:03d}" for n in range(100, 108)]
    store.enqueue([story(i) for i in ids], domains)

    for _ in range(4):
        time.sleep(1.0)
        supervisor.send_signal(signal.SIGKILL)
        supervisor.wait()
        supervisor = procs.supervisor()
    wait_until(
        lambda: all(store.get(i).state is StoryState.DONE for i in ids),
        timeout_s=120,
        message="every story done",
    )

    for story_id in ids:
        path = [
            (e["from"], e["to"]) for e in store.events(story_id) if e.get("from") and e["from"] != e["to"]
        ]
        assert path == [
            ("queued", "planning"),
            ("planning", "developing"),
            ("developing", "testing"),
            ("testing", "reviewing"),
            ("reviewing", "done"),
        ], story_id


@pytest.mark.timeout(400)
def test_redis_killed_mid_run_and_restarted_from_its_aof_loses_none_of_200_stories(
    tmp_path: Path, domains_dir: Path
) -> None:
    with redis_server(tmp_path / "redis", appendfsync="always") as server:
        settings = fast_settings(server, tmp_path / "data", domains_dir, agent="noop")
        procs = Processes(settings, tmp_path / "logs")
        try:
            store = StoryStore(connect(settings), settings.keys, settings.pipeline.max_rounds)
            procs.team("auth", {"pm": 1, "fe": 2, "be": 2, "qa": 1, "cto": 1})
            procs.supervisor()
            ids = [f"AUTH-{n:03d}" for n in range(200)]
            store.enqueue([story(i) for i in ids], load_domains(settings.domains_dir))
            wait_until(lambda: _count_done(store) >= 20, timeout_s=120, message="the run to be under way")

            server.kill()
            time.sleep(1.0)
            server.start()
            try:
                wait_until(
                    lambda: _settled(store, ids), timeout_s=300, interval_s=0.5, message="all 200 settled"
                )
            except AssertionError as exc:
                states = Counter(r.state.value for r in store.list())
                raise AssertionError(f"{exc}: states {dict(states)}") from None

            for story_id in ids:
                assert store.get(story_id).state is StoryState.DONE, story_id
                assert terminal_events(store, story_id) == ["done"], story_id
        finally:
            procs.stop_all()


@pytest.mark.timeout(120)
def test_a_redis_restart_does_not_make_a_live_workers_stage_count_as_lost(
    tmp_path: Path, domains_dir: Path
) -> None:
    # Restarted from its AOF, Redis finds every heartbeat expired: the worker is alive all the same
    with redis_server(tmp_path / "redis", appendfsync="always") as server:
        settings = fast_settings(server, tmp_path / "data", domains_dir)
        procs = Processes(settings, tmp_path / "logs")
        try:
            redis = connect(settings)
            store = StoryStore(redis, settings.keys, settings.pipeline.max_rounds)
            procs.team("auth")
            procs.supervisor()
            store.enqueue([story("AUTH-050", "offline:slow=be:6")], load_domains(settings.domains_dir))
            wait_until(
                lambda: any(i["role"] == "be" for i in running_entries(redis, settings).values()),
                timeout_s=60,
                message="the BE stage to start",
            )

            server.kill()
            time.sleep(1.5)  # longer than the heartbeat TTL (1 s)
            server.start()

            wait_until(
                lambda: store.get("AUTH-050").state is StoryState.DONE,
                timeout_s=90,
                message="done",
                diagnose=procs.logs,
            )
            assert [e for e in store.events("AUTH-050") if e["event"] == "stage_lost"] == []
            assert store.get("AUTH-050").attempts[Role.BE] == 1
        finally:
            procs.stop_all()


def _count_done(store: StoryStore) -> int:
    try:
        return len(store.list(state=StoryState.DONE))
    except Exception:
        return 0


def _settled(store: StoryStore, ids: list[str]) -> bool:
    try:
        return all(r.state in TERMINAL for r in store.list()) and len(store.list()) == len(ids)
    except Exception:
        return False


def test_a_maintenance_lock_left_by_a_holder_cut_off_mid_clean_lapses_within_one_interval(
    settings: Settings,
) -> None:
    # RQ's own lock would block every worker's clean-up of this queue for 15 minutes
    raw = connect(settings, decode=False)
    queue = WaveQueue(settings.keys.queue("auth", "pm"), connection=raw)

    assert queue.acquire_maintenance_lock()  # and its holder never releases it

    assert not queue.acquire_maintenance_lock()
    assert 0 < raw.ttl(queue.registry_cleaning_key) <= MAINTENANCE_INTERVAL_S
