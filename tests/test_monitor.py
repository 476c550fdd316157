"""`wave monitor`: each named detector on a fleet state that triggers it and one that does not, the
findings de-duplicated in Redis (one event per opening, one per clearing, none again after a
restart), and `wave monitor --once` as cron and CI use it (exit code, escaped table, JSON)."""

from __future__ import annotations

import json
import signal
import time
from collections.abc import Callable

import pytest
from redis import Redis

from wavefleet.config import Settings
from wavefleet.detectors import Finding
from wavefleet.domains import Domains
from wavefleet.errors import ExitCode
from wavefleet.halt import send_halt, send_resume
from wavefleet.lifecycle import Event, EventKind, Role, StoryState
from wavefleet.live_view import LiveView
from wavefleet.messages import RunningStage
from wavefleet.money import to_nusd
from wavefleet.monitor import Monitor
from wavefleet.store import StoryStore
from wavefleet.stories import Story
from wavefleet.testing import Processes, run_wave, wait_until

NOON = 1_767_268_800.0  # 2026-01-01 12:00 UTC: half the day gone
HOSTILE = "auth-pm-1.\x1b]52;c;aGk=\x07[bold red]boom[/].\x1b[2J42"


def monitor_settings(settings: Settings, **monitor: object) -> Settings:
    values = {**settings.monitor.model_dump(), **monitor}
    return settings.model_copy(update={"monitor": settings.monitor.model_validate(values)})


def make(
    redis: Redis, settings: Settings, domains: Domains, clock: Callable[[], float] = time.time
) -> Monitor:
    return Monitor(redis, settings, domains, clock=clock)


def about(findings: list[Finding], detector: str) -> list[Finding]:
    return [f for f in findings if f.detector == detector]


def events_of(redis: Redis, settings: Settings, kind: str) -> list[dict[str, str]]:
    return [f for _id, f in redis.xrange(settings.keys.events()) if f.get("event") == kind]


def enqueue(store: StoryStore, domains: Domains, *ids: str) -> None:
    store.enqueue([Story(id=i, title=f"story {i}") for i in ids], domains)


def drive(store: StoryStore, story: str, qa_fails: int) -> StoryState:
    """Take a story through its stages with real transitions, QA failing its first `qa_fails` runs
    (in the last round that fails the story); it ends in review or failed."""
    store.apply(story, Event(EventKind.ROUTE))
    fails = 0
    while (rec := store.get(story)).state not in (StoryState.REVIEWING, StoryState.FAILED):
        for role in sorted(rec.pending):
            passed = None
            if role is Role.QA:
                passed, fails = fails >= qa_fails, fails + 1
            event = Event(
                EventKind.STAGE_DONE, role=role, round=rec.round, attempt=rec.attempts[role], passed=passed
            )
            store.apply(story, event)
    return rec.state


# Detectors -----------------------------------------------------------------------------------
def test_stage_overdue_finds_a_stage_running_past_the_job_timeout_and_not_one_within_it(
    redis: Redis, settings: Settings, domains: Domains, store: StoryStore
) -> None:
    now = time.time()
    timeout = settings.worker.job_timeout_s
    for job, started in (("job-late", now - timeout - 5), ("job-fine", now - timeout + 60)):
        store.mark_running(
            job,
            RunningStage(
                worker="auth-fe-1.ab.1",
                story="AUTH-001",
                role=Role.FE,
                round=1,
                attempt=1,
                started_at=started,
            ),
        )

    found = about(make(redis, settings, domains).tick(), "stage_overdue")

    assert [f.key for f in found] == ["job-late"]
    assert "AUTH-001 fe" in found[0].summary and found[0].severity == "warning"


def test_worker_silent_finds_a_killed_worker_seen_alive_but_not_one_never_seen_or_alive(
    redis: Redis, settings: Settings, domains: Domains, procs: Processes
) -> None:
    redis.sadd(settings.keys.workers(), "auth-qa-1.old.1")  # a past fleet's worker: history, not news
    worker = procs.worker("auth", "pm")

    def live() -> list[str]:
        names = redis.smembers(settings.keys.workers())
        return [n for n in names if redis.exists(settings.keys.worker_heartbeat(n))]

    (name,) = wait_until(live, message="the worker's heartbeat", diagnose=procs.logs)
    monitor = make(redis, settings, domains)
    assert about(monitor.tick(), "worker_silent") == []

    worker.send_signal(signal.SIGKILL)
    worker.wait(timeout=10)
    # its heartbeat key expires heartbeat_ttl_s (1 s here) after its last beat
    wait_until(lambda: not live(), timeout_s=10, message="the heartbeat to expire")
    found = about(monitor.tick(), "worker_silent")

    assert [(f.key, f.severity) for f in found] == [(name, "critical")]


def test_worker_silent_leaves_alone_a_worker_stopped_cleanly(
    redis: Redis, settings: Settings, domains: Domains, procs: Processes
) -> None:
    worker = procs.worker("auth", "pm")
    (name,) = wait_until(
        lambda: redis.smembers(settings.keys.workers()), message="the worker registered", diagnose=procs.logs
    )
    # RQ installs its SIGTERM handler (a warm shutdown) just before it first waits for a job, idle
    wait_until(lambda: redis.hget(f"rq:worker:{name}", "state") == "idle", message="the worker idle")
    monitor = make(redis, settings, domains)
    monitor.tick()

    worker.send_signal(signal.SIGTERM)
    assert worker.wait(timeout=30) == 0, procs.logs()

    assert about(monitor.tick(), "worker_silent") == []
    assert redis.scard(settings.keys.workers()) == 0


def test_worker_silent_forgets_a_worker_silent_longer_than_worker_forget_s_and_clears_it(
    redis: Redis, settings: Settings, domains: Domains
) -> None:
    redis.sadd(settings.keys.workers(), "auth-fe-1.ab.1")
    redis.hset(settings.keys.monitor_seen(), "auth-fe-1.ab.1", f"{time.time():.3f}")
    later = time.time() + settings.monitor.worker_forget_s + 1
    monitor = make(redis, settings, domains)
    assert about(monitor.tick(), "worker_silent")

    assert about(make(redis, settings, domains, clock=lambda: later).tick(), "worker_silent") == []
    assert redis.hlen(settings.keys.monitor_seen()) == 0
    assert [e["key"] for e in events_of(redis, settings, "monitor_cleared")] == ["auth-fe-1.ab.1"]


def test_queue_stalled_finds_a_queue_no_worker_takes_and_clears_once_one_does(
    redis: Redis, settings: Settings, domains: Domains, store: StoryStore, procs: Processes
) -> None:
    procs.supervisor()
    enqueue(store, domains, "AUTH-001")
    queue = settings.keys.queue("auth", "pm")
    wait_until(lambda: redis.llen(f"rq:queue:{queue}"), message="the PM job queued", diagnose=procs.logs)
    monitor = make(redis, settings, domains)

    assert about(monitor.tick(), "queue_stalled") == []  # the first look: no growth seen yet
    found = about(monitor.tick(), "queue_stalled")
    assert [(f.key, f.severity) for f in found] == [(queue, "critical")]

    procs.worker("auth", "pm")
    wait_until(
        lambda: queue not in [f.key for f in about(monitor.tick(), "queue_stalled")],
        message="the PM queue's finding to clear",
        diagnose=procs.logs,
    )
    assert [e["key"] for e in events_of(redis, settings, "monitor_cleared")] == [queue]


def test_failures_rising_counts_stories_failed_in_the_window_per_domain(
    redis: Redis, settings: Settings, domains: Domains, store: StoryStore
) -> None:
    settings = monitor_settings(settings, failures_threshold=2)
    enqueue(store, domains, "AUTH-001", "AUTH-002", "PAYMENTS-001")
    assert drive(store, "AUTH-001", qa_fails=3) is StoryState.FAILED
    assert drive(store, "PAYMENTS-001", qa_fails=3) is StoryState.FAILED
    monitor = make(redis, settings, domains)
    assert about(monitor.tick(), "failures_rising") == []  # one failure per domain: below 2

    assert drive(store, "AUTH-002", qa_fails=3) is StoryState.FAILED
    found = about(monitor.tick(), "failures_rising")

    assert [f.key for f in found] == ["auth"] and found[0].summary.startswith("2 auth stories failed")
    window_later = time.time() + settings.monitor.failures_window_s + 1
    assert about(make(redis, settings, domains, clock=lambda: window_later).tick(), "failures_rising") == []


def test_budget_burn_projects_todays_spend_to_midnight_against_the_daily_limit(
    redis: Redis, settings: Settings, domains: Domains
) -> None:
    limit = domains.get("auth").budgets.daily_usd

    def scope(domain: str) -> str:
        return settings.keys.budget(f"domain:{domain}:2026-01-01")

    redis.hset(scope("auth"), "spent_nusd", to_nusd(limit * 0.6))  # 120% by midnight
    redis.hset(scope("payments"), "spent_nusd", to_nusd(limit * 0.2))  # 40%

    found = about(make(redis, settings, domains, clock=lambda: NOON).tick(), "budget_burn")

    assert [(f.key, f.severity) for f in found] == [("auth", "warning")]
    redis.hset(scope("auth"), "grant_nusd", to_nusd(limit))  # an operator's grant raises the limit
    assert about(make(redis, settings, domains, clock=lambda: NOON).tick(), "budget_burn") == []


def test_halt_old_finds_a_halt_older_than_halt_age_s_only(
    redis: Redis, settings: Settings, domains: Domains
) -> None:
    send_halt(redis, settings.keys, "drill", "ops")
    assert about(make(redis, settings, domains).tick(), "halt_old") == []

    later = time.time() + settings.monitor.halt_age_s + 1
    found = about(make(redis, settings, domains, clock=lambda: later).tick(), "halt_old")

    assert [(f.key, f.severity) for f in found] == [("fleet", "critical")]
    assert "by ops: drill" in found[0].summary


def test_qa_recycles_finds_a_story_qa_sent_back_n_times_not_one_sent_back_less(
    redis: Redis, settings: Settings, domains: Domains, store: StoryStore
) -> None:
    enqueue(store, domains, "AUTH-001", "AUTH-002")
    drive(store, "AUTH-001", qa_fails=settings.monitor.qa_recycles)
    drive(store, "AUTH-002", qa_fails=settings.monitor.qa_recycles - 1)

    found = about(make(redis, settings, domains).tick(), "qa_recycles")

    assert [f.key for f in found] == ["AUTH-001"]


# De-duplication ------------------------------------------------------------------------------
def test_a_finding_is_told_once_kept_across_a_restart_and_cleared_once(
    redis: Redis, settings: Settings, domains: Domains
) -> None:
    send_halt(redis, settings.keys, "drill", "ops")
    later = time.time() + settings.monitor.halt_age_s + 1
    first = make(redis, settings, domains, clock=lambda: later)
    first.tick()
    first.tick()
    make(redis, settings, domains, clock=lambda: later).tick()  # a restarted monitor

    opened = events_of(redis, settings, "monitor_finding")
    assert [(e["detector"], e["key"], e["severity"]) for e in opened] == [("halt_old", "fleet", "critical")]

    send_resume(redis, settings.keys, "ops")
    assert make(redis, settings, domains, clock=lambda: later).tick() == []
    first.tick()

    cleared = events_of(redis, settings, "monitor_cleared")
    assert [(e["detector"], e["key"]) for e in cleared] == [("halt_old", "fleet")]
    assert "cleared after" in cleared[0]["summary"]


def test_a_detector_that_cannot_judge_yet_keeps_its_open_findings(
    redis: Redis, settings: Settings, domains: Domains, store: StoryStore
) -> None:
    enqueue(store, domains, "AUTH-001")
    store.apply("AUTH-001", Event(EventKind.ROUTE))
    redis.rpush(f"rq:queue:{settings.keys.queue('auth', 'pm')}", "job-1")  # nobody takes it
    monitor = make(redis, settings, domains)
    monitor.tick()
    assert about(monitor.tick(), "queue_stalled")

    # a restarted monitor has not looked twice yet: the finding stays open, no cleared event
    assert about(make(redis, settings, domains).tick(), "queue_stalled")
    assert events_of(redis, settings, "monitor_cleared") == []


# The command ---------------------------------------------------------------------------------
def test_wave_monitor_once_exits_0_with_nothing_open_and_3_with_an_escaped_table(
    redis: Redis, settings: Settings, domains: Domains, store: StoryStore
) -> None:
    clean = run_wave(settings, "monitor", "--once")
    assert (clean.returncode, clean.stdout.strip()) == (ExitCode.OK, "monitor: no open findings"), (
        clean.stderr
    )

    redis.sadd(settings.keys.workers(), HOSTILE)
    redis.hset(settings.keys.monitor_seen(), HOSTILE, f"{time.time():.3f}")
    started = time.time() - settings.worker.job_timeout_s - 5
    stage = RunningStage(
        worker=HOSTILE, story="AUTH-1\x1b[31m[red]x", role=Role.QA, round=2, attempt=1, started_at=started
    )
    store.mark_running("job-\x1b[2J", stage)

    table = run_wave(settings, "monitor", "--once")
    as_json = run_wave(settings, "monitor", "--once", "--json")

    assert table.returncode == ExitCode.FINDINGS, table.stderr
    assert "\x1b" not in table.stdout and "\x07" not in table.stdout and "Traceback" not in table.stderr
    assert "[bold red]boom[/]" in table.stdout  # shown as written, not read as markup
    assert "worker_silent" in table.stdout and "stage_overdue" in table.stdout
    assert as_json.returncode == ExitCode.FINDINGS
    assert {(f["detector"], f["key"]) for f in json.loads(as_json.stdout)} == {
        ("worker_silent", HOSTILE),
        ("stage_overdue", "job-\x1b[2J"),
    }


def test_wave_monitor_runs_until_sigterm_posts_a_finding_and_exits_0(
    redis: Redis, settings: Settings, procs: Processes
) -> None:
    procs.settings = monitor_settings(settings, interval_s=0.2, halt_age_s=0.5)
    monitor = procs.wave("monitor", name="monitor")
    send_halt(redis, settings.keys, "drill", "ops")

    wait_until(
        lambda: events_of(redis, settings, "monitor_finding"),
        message="the halt_old finding",
        diagnose=procs.logs,
    )
    monitor.send_signal(signal.SIGTERM)

    assert monitor.wait(timeout=10) == 0
    assert "Traceback" not in procs.logs()


def test_the_live_view_shows_the_open_findings(
    redis: Redis, settings: Settings, domains: Domains, store: StoryStore
) -> None:
    from rich.console import Console  # noqa: PLC0415

    view = LiveView(store, sandbox="bwrap")
    console = Console(width=200, record=True, file=open("/dev/null", "w"))  # noqa: SIM115, PTH123
    console.print(view.render())
    assert "open finding" not in console.export_text()

    send_halt(redis, settings.keys, "drill", "ops")
    later = time.time() + settings.monitor.halt_age_s + 1
    make(redis, settings, domains, clock=lambda: later).tick()
    console.print(view.render())

    text = console.export_text()  # (it empties the record)
    assert "monitor: 1 open finding(s)" in text and "halt_old" in text


@pytest.fixture(autouse=True)
def _no_model_keys(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("WAVE_ANTHROPIC__API_KEY", raising=False)


def test_queue_stalled_leaves_alone_a_queue_a_live_worker_of_its_role_serves(
    redis: Redis, settings: Settings, domains: Domains
) -> None:
    # the keys a live auth PM worker keeps (registered, heartbeat); the job waits its turn behind
    # the worker's current stage
    redis.sadd(settings.keys.workers(), "auth-pm-1.ab12cd.42")
    redis.set(settings.keys.worker_heartbeat("auth-pm-1.ab12cd.42"), "1", ex=60)
    redis.rpush(f"rq:queue:{settings.keys.queue('auth', 'pm')}", "job-1")
    redis.rpush(f"rq:queue:{settings.keys.queue('auth', 'fe')}", "job-2")  # no FE worker
    monitor = make(redis, settings, domains)
    monitor.tick()

    assert [f.key for f in about(monitor.tick(), "queue_stalled")] == [settings.keys.queue("auth", "fe")]
