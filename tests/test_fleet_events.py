"""The fleet's events stream: halt, resume, a dead worker and budget thresholds on it, read back typed
through consumer groups and followed live by `wave events --follow`, with real processes."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time

from redis import Redis

from wavefleet.budget import Budget, scopes_for
from wavefleet.config import BudgetSettings, Settings
from wavefleet.domains import Domains
from wavefleet.fleet_events import (
    BudgetAlert,
    EventConsumer,
    FleetHalted,
    FleetResumed,
    StoryEvent,
    UnknownEvent,
    WorkerDead,
    parse_event,
)
from wavefleet.lifecycle import Role, StoryState
from wavefleet.money import NANO
from wavefleet.store import StoryStore
from wavefleet.stories import Story
from wavefleet.testing import Processes, env_of, run_wave, wait_until

HOSTILE = "smoke \x1b]0;owned\x07 \x1b[2J<b>*bold*</b>"


def fleet_events(redis: Redis, settings: Settings, kind: str) -> list[dict[str, str]]:
    return [f for _id, f in redis.xrange(settings.keys.events()) if f.get("event") == kind]


class Follower:
    """A real `wave events --follow` process whose output lines are collected as they come."""

    def __init__(self, settings: Settings, *argv: str) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "wavefleet.cli", "events", "--follow", *argv],
            env=env_of(settings),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        self.lines: list[str] = []
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.append(line)

    def seen(self, text: str) -> bool:
        return any(text in line for line in self.lines)

    def interrupt(self) -> tuple[int, str]:
        self.proc.send_signal(signal.SIGINT)
        rc = self.proc.wait(timeout=10)
        self.reader.join(timeout=5)
        assert self.proc.stderr is not None
        return rc, self.proc.stderr.read()

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=10)


def blocked_in_xread(redis: Redis) -> bool:
    """The follower has read where the stream ends and waits for more (nothing produced before
    this point can be missed, nothing after it is)."""
    return any(c.get("cmd") == "xread" for c in redis.client_list())


def test_wave_stop_and_resume_each_put_one_event_on_the_stream_and_a_follower_prints_them(
    settings: Settings, redis: Redis
) -> None:
    follower = Follower(settings)
    try:
        wait_until(lambda: blocked_in_xread(redis), message="the follower to wait on the stream")
        assert run_wave(settings, "stop", "--reason", HOSTILE).returncode == 0
        assert run_wave(settings, "stop", "--reason", "again").returncode == 0  # already halted: no event
        assert run_wave(settings, "resume").returncode == 0
        assert run_wave(settings, "resume").returncode == 0  # not halted: no event
        wait_until(
            lambda: follower.seen("fleet_resumed"),
            timeout_s=10,
            message="the resume printed",
            diagnose=lambda: "".join(follower.lines),
        )
        rc, err = follower.interrupt()
    finally:
        follower.kill()

    halted = [parse_event(f) for f in fleet_events(redis, settings, "fleet_halted")]
    resumed = [parse_event(f) for f in fleet_events(redis, settings, "fleet_resumed")]
    assert len(halted) == 1 and isinstance(halted[0], FleetHalted)
    assert halted[0].reason == HOSTILE.strip() and halted[0].by.startswith("cli:")
    assert len(resumed) == 1 and isinstance(resumed[0], FleetResumed)
    # Ctrl-C ends the follow quietly; the hostile reason reached the terminal without its escapes
    assert rc == 0 and "Traceback" not in err, err
    printed = "".join(follower.lines)
    assert "(fleet)" in printed and "fleet_halted" in printed and "smoke" in printed
    assert "\x1b" not in printed and "\x07" not in printed and "owned" not in printed


def test_the_watchers_halt_file_puts_the_halt_and_resume_on_the_stream(
    procs: Processes, settings: Settings, redis: Redis
) -> None:
    procs.watcher()
    wait_until(settings.halt_file.parent.is_dir, message="the watcher's halt folder")
    settings.halt_file.write_text("flood\n")
    event = wait_until(
        lambda: fleet_events(redis, settings, "fleet_halted"),
        timeout_s=10,
        message="a fleet_halted event",
        diagnose=procs.logs,
    )
    assert parse_event(event[0]).by.startswith("file:")  # type: ignore[union-attr]
    settings.halt_file.unlink()
    wait_until(
        lambda: fleet_events(redis, settings, "fleet_resumed"),
        timeout_s=10,
        message="a fleet_resumed event",
        diagnose=procs.logs,
    )


def test_a_worker_killed_mid_stage_is_reported_dead_once_on_the_stream(
    procs: Processes, store: StoryStore, domains: Domains, redis: Redis, settings: Settings
) -> None:
    procs.team("auth", {"pm": 1, "fe": 1, "be": 2, "qa": 1, "cto": 1})
    procs.supervisor()
    consumer = EventConsumer(redis, settings.keys, "monitor", "test")
    store.enqueue([Story(id="AUTH-040", title="Story", labels=("offline:slow=be:3",))], domains)
    be_job = wait_until(
        lambda: next((v for v in store.running().values() if v.role is Role.BE), None),
        message="the BE stage to start",
        diagnose=procs.logs,
    )
    assert be_job is not None
    os.kill(int(be_job.worker.rsplit(".", 1)[1]), signal.SIGKILL)
    # Done means many recovery passes (every 0.2 s) ran after the loss: none may report it again.
    wait_until(
        lambda: store.get("AUTH-040").state is StoryState.DONE,
        timeout_s=60,
        message="the story done after its BE stage ran again",
        diagnose=procs.logs,
    )

    read = [e for _id, e in consumer.read(count=1000)]
    dead = [e for e in read if isinstance(e, WorkerDead)]
    assert [(d.worker, d.stages) for d in dead] == [(be_job.worker, 1)]
    lost = [e for e in read if isinstance(e, StoryEvent) and e.event == "stage_lost"]
    assert [(e.story, e.role) for e in lost] == [("AUTH-040", "be")]
    assert lost[0].reason == f"worker {be_job.worker} died"


def test_budget_thresholds_of_a_story_and_its_domain_come_once_each_typed(
    redis: Redis, settings: Settings, domains: Domains
) -> None:
    budget = Budget(redis, settings.keys, BudgetSettings())
    domain = domains.get("auth")
    consumer = EventConsumer(redis, settings.keys, "notifier", "n1")
    story_limit = int(domain.budgets.story_usd * NANO)
    scopes = scopes_for(budget.settings, story="AUTH-050", domain=domain, at=time.time())[:2]
    # The story's spend in steps of 30%, 30%, 30%, then the rest: 60% crosses the warning, 90% the
    # critical threshold, 100% (exactly the limit, still allowed) exceeded; a last call adds nothing.
    steps = [story_limit * 3 // 10] * 3
    for amount in (*steps, story_limit - sum(steps), 0):
        res = budget.reserve(scopes, amount, 1)
        budget.alerts(res, budget.settle(res, amount, 1, story="AUTH-050"), "AUTH-050")

    alerts = [e for _id, e in consumer.read(count=100) if isinstance(e, BudgetAlert)]
    story_levels = [(a.level, a.story) for a in alerts if a.scope == "story:AUTH-050"]
    assert story_levels == [("warning", "AUTH-050"), ("critical", "AUTH-050"), ("exceeded", "AUTH-050")]
    assert all(a.event == f"budget_{a.level}" and a.fraction > 0 for a in alerts)
    # The domain's daily limit is larger than the story's: its thresholds are its own fractions.
    domain_limit = int(domain.budgets.daily_usd * NANO)
    expected = [
        lv
        for lv, f in (("warning", 0.5), ("critical", 0.8), ("exceeded", 1.0))
        if story_limit >= f * domain_limit
    ]
    assert [a.level for a in alerts if a.scope.startswith("domain:auth:")] == expected


def test_consumer_groups_each_get_every_entry_and_an_unacked_one_comes_back(
    redis: Redis, settings: Settings
) -> None:
    keys = settings.keys
    # The groups are made on a stream that does not exist yet (MKSTREAM)
    slack = EventConsumer(redis, keys, "notifier", "n1")
    tracer = EventConsumer(redis, keys, "langsmith", "l1")
    redis.xadd(keys.events(), {"event": "fleet_halted", "reason": HOSTILE, "by": "t", "story": "", "at": "1"})
    redis.xadd(keys.events(), {"event": "from_the_future", "x": "<y>", "at": "2"})
    redis.xadd(keys.events(), {"event": "worker_dead", "worker": "w", "stages": "not a number", "at": "3"})

    first = slack.read(count=10)
    assert [type(e) for _i, e in first] == [FleetHalted, UnknownEvent, UnknownEvent]
    assert first[0][1].reason == HOSTILE  # type: ignore[union-attr]
    unknown = first[1][1]
    assert isinstance(unknown, UnknownEvent) and unknown.raw == {
        "event": "from_the_future",
        "x": "<y>",
        "at": "2",
    }
    assert len(tracer.read(count=10)) == 3  # the other group gets them all too
    assert slack.read(count=10, block_ms=None) == []

    slack.ack([first[0][0]])
    again = EventConsumer(redis, keys, "notifier", "n1")  # the notifier restarted
    assert [i for i, _e in again.pending()] == [first[1][0], first[2][0]]


def test_a_read_acks_what_it_is_given_in_the_same_round_trip_before_waiting(
    redis: Redis, settings: Settings
) -> None:
    keys = settings.keys
    consumer = EventConsumer(redis, keys, "notifier", "n1")
    first = redis.xadd(keys.events(), {"event": "fleet_halted", "reason": "r", "by": "t", "at": "1"})
    [(taken, _event)] = consumer.read(count=10)
    second = redis.xadd(keys.events(), {"event": "fleet_resumed", "by": "t", "at": "2"})
    assert [i for i, _e in consumer.read(count=10, block_ms=100, ack=[taken])] == [second]
    assert taken == first and [
        p["message_id"]
        for p in redis.xpending_range(keys.events(), keys.events_group("notifier"), "-", "+", 10)
    ] == [second]  # the first acked by the read that took the second


def test_a_crossing_is_on_the_stream_with_its_flag_even_if_the_settling_worker_dies_at_once(
    redis: Redis, settings: Settings, domains: Domains
) -> None:
    # The worker settles (the script's reply may be lost, redis-py sends it again) and dies before
    # it reads the reply: the crossing it caused is on the stream all the same, and once.
    budget = Budget(redis, settings.keys, BudgetSettings())
    scopes = scopes_for(budget.settings, story="AUTH-060", domain=domains.get("auth"), at=time.time())
    limit = scopes[0].limit_nusd
    res = budget.reserve(scopes[:1], limit * 6 // 10, 1)
    budget.settle(res, limit * 6 // 10, 1, story="AUTH-060")
    budget.settle(res, limit * 6 // 10, 1, story="AUTH-060")  # the resend of a lost reply

    on_fleet = [parse_event(f) for f in fleet_events(redis, settings, "budget_warning")]
    on_story = [f for _id, f in redis.xrange(settings.keys.story_events("AUTH-060"))]
    assert [(e.scope, e.story) for e in on_fleet if isinstance(e, BudgetAlert)] == [
        ("story:AUTH-060", "AUTH-060")
    ]
    assert [f["event"] for f in on_story] == ["budget_warning"]
    assert on_story[0]["reason"].startswith("budget warning: story AUTH-060 at 60% of $")
