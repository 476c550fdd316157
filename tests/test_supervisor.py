"""The supervisor's recovery pass, in-process against a real Redis: what it runs again and when."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import SecretStr
from redis import Redis
from rq import Queue, Worker
from rq.job import Job

from wavefleet.config import Settings
from wavefleet.connection import connect
from wavefleet.domains import Domains, load_domains
from wavefleet.lifecycle import Event, EventKind, Role
from wavefleet.messages import RunningStage
from wavefleet.store import StoryStore
from wavefleet.stories import Story
from wavefleet.supervisor import RECONNECT_GRACE_S, Supervisor
from wavefleet.testing import fast_settings, redis_server, wait_until

pytestmark = pytest.mark.timeout(60)


@pytest.fixture
def raw(settings: Settings) -> Redis:
    return connect(settings, decode=False)  # RQ's client: raw bytes


@pytest.fixture
def supervisor(settings: Settings, redis: Redis, raw: Redis, domains: Domains) -> Supervisor:
    return Supervisor(settings, redis, raw, domains)


def planning(store: StoryStore, supervisor: Supervisor, domains: Domains, story_id: str) -> str:
    """Enqueue a story and let the supervisor route it: returns its PM job id."""
    store.enqueue([Story(id=story_id, title=f"Story {story_id}")], domains)
    supervisor.run_once()
    return store.get(story_id).job_id(Role.PM)


def mark_running_on_a_dead_worker(store: StoryStore, job_id: str, story_id: str) -> None:
    """A running entry whose worker has no heartbeat (it died, or Redis lost the key)."""
    gone = RunningStage(worker="auth-pm-1.gone.1", story=story_id, role=Role.PM, round=0, attempt=1)
    store.mark_running(job_id, gone)


def past_restart_grace(redis: Redis, settings: Settings) -> None:
    """Wait until Redis has been up long enough for a missing heartbeat to mean a dead worker."""
    grace = settings.worker.heartbeat_ttl_s + RECONNECT_GRACE_S
    wait_until(lambda: int(redis.info("server")["uptime_in_seconds"]) >= grace, timeout_s=grace + 5)


def test_a_failed_stage_job_leaves_the_failed_registry_only_once_its_loss_is_applied(
    settings: Settings, store: StoryStore, redis: Redis, raw: Redis, supervisor: Supervisor, domains: Domains
) -> None:
    job_id = planning(store, supervisor, domains, "AUTH-001")
    queue = Queue(settings.keys.queue("auth", "pm"), connection=raw)
    job = Job.fetch(job_id, connection=raw)
    queue.remove(job)
    Worker([queue], connection=raw).handle_job_failure(
        job, queue, exc_string="Job was stuck in intermediate queue."
    )
    # The story cannot be read this pass (a hand-edited hash): the loss cannot be applied
    key = settings.keys.story("AUTH-001")
    attempts = redis.hget(key, "attempts")
    redis.hset(key, "attempts", "not json")

    supervisor.recover()  # logs the story and carries on

    assert job_id in queue.failed_job_registry.get_job_ids()
    redis.hset(key, "attempts", attempts)
    supervisor.recover()
    assert store.get("AUTH-001").attempts[Role.PM] == 2
    assert job_id not in queue.failed_job_registry.get_job_ids()


def test_a_missing_heartbeat_right_after_a_redis_restart_is_not_taken_for_a_dead_worker(
    tmp_path: Path, domains_dir: Path
) -> None:
    with redis_server(tmp_path / "redis") as server:  # just started: uptime 0
        settings = fast_settings(server, tmp_path / "data", domains_dir)
        redis = connect(settings)
        store = StoryStore(redis, settings.keys, settings.pipeline.max_rounds)
        domains = load_domains(settings.domains_dir)
        supervisor = Supervisor(settings, redis, connect(settings, decode=False), domains)
        job_id = planning(store, supervisor, domains, "AUTH-001")
        mark_running_on_a_dead_worker(store, job_id, "AUTH-001")

        supervisor.recover()
        assert store.get("AUTH-001").attempts[Role.PM] == 1  # the worker may yet beat again

        past_restart_grace(redis, settings)
        supervisor.recover()
        assert store.get("AUTH-001").attempts[Role.PM] == 2  # now it is dead: its stage runs again


def test_a_redis_user_without_info_still_has_dead_workers_stages_run_again(
    settings: Settings, store: StoryStore, redis: Redis, domains: Domains
) -> None:
    # A managed Redis or an ACL that forbids INFO: the restart check cannot tell, so it does not hold back
    redis.acl_setuser(
        "no-info",
        enabled=True,
        passwords=["+no-info-pw"],
        keys=["*"],
        channels=["*"],
        commands=["+@all", "-info"],
    )
    try:
        url = settings.redis.url.replace("redis://", "redis://no-info@")
        limited = settings.model_copy(
            update={
                "redis": settings.redis.model_copy(update={"url": url, "password": SecretStr("no-info-pw")})
            }
        )
        lredis = connect(limited)
        supervisor = Supervisor(limited, lredis, connect(limited, decode=False), domains)
        job_id = planning(store, supervisor, domains, "AUTH-001")
        mark_running_on_a_dead_worker(store, job_id, "AUTH-001")

        supervisor.recover()

        assert store.get("AUTH-001").attempts[Role.PM] == 2
        assert redis.hgetall(settings.keys.running()) == {}
    finally:
        redis.acl_deluser("no-info")


def test_a_story_whose_hash_cannot_be_read_does_not_stop_the_audit_or_a_halt_for_the_others(
    settings: Settings, store: StoryStore, redis: Redis, raw: Redis, supervisor: Supervisor, domains: Domains
) -> None:
    stranded = planning(store, supervisor, domains, "AUTH-001")
    planning(store, supervisor, domains, "AUTH-002")
    Job.fetch(stranded, connection=raw).delete()
    redis.hset(settings.keys.story("AUTH-002"), "attempts", "not json")

    assert supervisor.audit() == 1  # AUTH-001's stage, despite AUTH-002
    supervisor.halt_stories("test")  # does not raise
    assert store.get("AUTH-001").state.value == "halted"


def test_a_loss_applied_on_an_earlier_pass_whose_dispatch_was_cut_off_is_dispatched_on_the_next(
    settings: Settings, store: StoryStore, redis: Redis, raw: Redis, supervisor: Supervisor, domains: Domains
) -> None:
    past_restart_grace(redis, settings)
    first = planning(store, supervisor, domains, "AUTH-001")
    mark_running_on_a_dead_worker(store, first, "AUTH-001")
    # The earlier pass applied the loss (attempt 2) and was cut off before enqueueing attempt 2
    store.apply("AUTH-001", Event(EventKind.STAGE_LOST, Role.PM, 0, 1, reason="worker died"))
    second = store.get("AUTH-001").job_id(Role.PM)
    assert not Job.exists(second, connection=raw)

    supervisor.recover()

    assert Job.exists(second, connection=raw)
    assert redis.hgetall(settings.keys.running()) == {}
