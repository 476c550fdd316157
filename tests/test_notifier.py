"""`wave notifier`: the events stream posted to a local Slack Web API by the real slack_sdk, with real
worker, supervisor and notifier processes on a real redis-server: one thread per story with its
events in order, 429s and outages waited out, a refused token reported once and dead-lettered,
hostile story text made inert and secrets redacted."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from pydantic import SecretStr
from redis import Redis

from wavefleet import acl
from wavefleet.config import Settings, SlackSettings
from wavefleet.domains import Domains, load_domains
from wavefleet.embedded import EmbeddedRedis, endpoint_of, free_port, operator_credentials
from wavefleet.fleet import Fleet
from wavefleet.fleet_events import (
    BudgetAlert,
    EventConsumer,
    MonitorCleared,
    MonitorFinding,
    StoryEvent,
    emit,
)
from wavefleet.lifecycle import Event, EventKind, StoryState
from wavefleet.store import StoryStore
from wavefleet.stories import Story
from wavefleet.testing import Processes, fast_settings, run_wave, wait_until

sys.path.insert(0, str(Path(__file__).parent))
from servers.slack_server import Posted, SlackServer

SECRET = "sk-ant-test-secret-0123456789abcdef"


@pytest.fixture
def slack() -> Iterator[SlackServer]:
    server = SlackServer()
    yield server
    server.close()


def with_slack(settings: Settings, server: SlackServer, **slack: object) -> Settings:
    values = {
        "bot_token": SecretStr(server.token),
        "base_url": server.url,
        "backoff_s": 0.2,
        "backoff_max_s": 1.0,
        "alerts_channel": "#alerts",
        "activity_channel": "#activity",
        **slack,
    }
    return settings.model_copy(update={"slack": SlackSettings(**values)})  # type: ignore[arg-type]


@pytest.fixture
def notified(settings: Settings, slack: SlackServer, tmp_path: Path) -> Iterator[tuple[Settings, Processes]]:
    """Settings pointing at the local Slack, and Processes using them (the notifier not yet started)."""
    slacked = with_slack(settings.model_copy(update={"dozzle_url": "https://logs.example"}), slack)
    procs = Processes(slacked, tmp_path / "logs")
    yield slacked, procs
    procs.stop_all()


def start_notifier(procs: Processes, redis: Redis, settings: Settings) -> None:
    """A notifier whose consumer group exists (made at the stream's end: earlier entries are not its)."""
    procs.wave("notifier", name="notifier")
    group = settings.keys.events_group("notifier")
    wait_until(
        lambda: (
            redis.exists(settings.keys.events())
            and any(g["name"] == group for g in redis.xinfo_groups(settings.keys.events()))
        ),
        message="the notifier's consumer group",
        diagnose=procs.logs,
    )


def story_kinds(redis: Redis, settings: Settings, story: str) -> list[str]:
    """The story's events after its enqueue, in stream order."""
    entries = redis.xrange(settings.keys.story_events(story))
    return [f["event"] for _id, f in entries if f.get("event") != "enqueued"]


def reply_kinds(replies: list[Posted]) -> list[str]:
    """The events of a thread's replies: each line of a reply's text opens with *kind* (one line per
    event: a reply merges several of a backlog's, README "Slack")."""
    return [line.split("*")[1] for r in replies for line in r.text.splitlines()]


def test_five_stories_across_worker_processes_give_five_threads_with_their_events_in_order(
    notified: tuple[Settings, Processes],
    redis: Redis,
    store: StoryStore,
    domains: Domains,
    slack: SlackServer,
) -> None:
    settings, procs = notified
    procs.team("auth", {"pm": 1, "fe": 2, "be": 2, "qa": 1, "cto": 1})
    procs.team("payments", {"pm": 1, "fe": 1, "be": 1, "qa": 1, "cto": 1})
    procs.supervisor()
    start_notifier(procs, redis, settings)
    ids = ["AUTH-101", "AUTH-102", "AUTH-103", "PAYMENTS-104", "PAYMENTS-105"]
    stories = [Story(id=i, title=f"story {i}") for i in ids[:4]]
    stories.append(Story(id=ids[4], title="gives up", labels=("offline:give-up=be",)))
    store.enqueue(stories, domains)
    wait_until(
        lambda: [store.get(i).state for i in ids] == [StoryState.DONE] * 4 + [StoryState.FAILED],
        timeout_s=120,
        message="four stories done, one failed",
        diagnose=procs.logs,
    )

    def threads_complete() -> bool:
        threads = slack.threads()
        return all(
            len(reply_kinds(threads.get(str(redis.get(settings.keys.notifier_thread(i))), [])))
            == len(story_kinds(redis, settings, i))
            for i in ids
        )

    wait_until(threads_complete, message="every story event posted in its thread", diagnose=procs.logs)
    parents = [p for p in slack.parents() if p.channel == "#activity"]
    assert sorted(p.text.split("*")[1] for p in parents) == ids  # one parent per story, nothing else
    assert all(p.blocks for p in parents)
    [alert] = [m for m in slack.messages if m.channel == "#alerts"]  # the failure needs a human
    assert (
        alert.text.startswith(":rotating_light: *PAYMENTS-105* *stage_failed*") and "→ failed" in alert.text
    )
    for story in ids:
        ts = str(redis.get(settings.keys.notifier_thread(story)))
        replies = slack.threads()[ts]
        assert reply_kinds(replies) == story_kinds(redis, settings, story)
        assert {r.channel for r in replies} == {"#activity"}
        assert "cost so far $" in replies[-1].text and store.get(story).state.value in replies[-1].text
    workers = {r.worker for i in ids for _name, r in store.results(i)}
    assert len(workers) > 5  # the stories went through several worker processes
    linked = [r for i in ids for r in slack.threads()[str(redis.get(settings.keys.notifier_thread(i)))]]
    links = [r.text for r in linked if "/show?name=wave-" in r.text]
    assert links and all("https://logs.example/show?name=wave-" in t for t in links)


def test_a_429_is_waited_out_for_its_retry_after(
    notified: tuple[Settings, Processes], redis: Redis, slack: SlackServer
) -> None:
    settings, procs = notified
    start_notifier(procs, redis, settings)
    slack.rate_limited(retry_after_s=2, times=1)
    assert run_wave(settings, "stop", "--reason", "drill").returncode == 0
    wait_until(lambda: slack.messages, message="the halt alert posted", diagnose=procs.logs)
    [refused] = slack.refused
    [alert] = slack.messages
    assert refused.status == 429
    assert alert.at - refused.at >= 2.0  # the SDK's handler slept Retry-After, not our 0.2 s backoff
    assert alert.channel == "#alerts" and "fleet_halted" in alert.text and alert.thread_ts is None


def test_slack_down_for_a_while_then_back_loses_no_message(
    notified: tuple[Settings, Processes], redis: Redis, slack: SlackServer
) -> None:
    settings, procs = notified
    start_notifier(procs, redis, settings)
    slack.close()
    for reason in ("one", "two", "three"):
        assert run_wave(settings, "stop", "--reason", reason).returncode == 0
        assert run_wave(settings, "resume").returncode == 0
    wait_until(
        lambda: redis.hget(settings.keys.notifier_state(), "problem"),
        message="the notifier finding Slack unreachable",
        diagnose=procs.logs,
    )
    slack.reopen()
    wait_until(lambda: len(slack.messages) == 6, message="all six alerts posted", diagnose=procs.logs)
    texts = [m.text for m in slack.messages]
    assert [t.split("*")[1] for t in texts] == ["fleet_halted", "fleet_resumed"] * 3
    assert [t for t in texts if "reason=" in t] == [
        m.text for m in slack.messages if "fleet_halted" in m.text
    ]
    assert ["one" in texts[0], "two" in texts[2], "three" in texts[4]] == [True] * 3
    assert redis.get(settings.keys.notifier_dead_total()) is None
    wait_until(
        lambda: not redis.hget(settings.keys.notifier_state(), "problem"), message="the problem cleared"
    )
    said = [line for line in procs.logs().splitlines() if '"level": "warning"' in line or "error" in line]
    assert len(said) == 1 and "Slack unreachable" in said[0], said  # once per outage, not per try


def test_a_message_slack_keeps_refusing_is_dead_lettered_after_its_tries_and_the_next_goes_through(
    settings: Settings, redis: Redis, slack: SlackServer, tmp_path: Path
) -> None:
    slacked = with_slack(settings, slack, retries=3)
    procs = Processes(slacked, tmp_path / "logs")
    try:
        start_notifier(procs, redis, slacked)
        slack.failing(500, times=3)  # each try of the halt alert (the SDK does not retry a 500)
        assert run_wave(slacked, "stop", "--reason", "lost").returncode == 0
        assert run_wave(slacked, "resume").returncode == 0
        wait_until(lambda: slack.messages, message="the resume alert", diagnose=procs.logs)
    finally:
        procs.stop_all()
    assert [r.status for r in slack.refused] == [500, 500, 500]
    assert [m.text.split("*")[1] for m in slack.messages] == ["fleet_resumed"]
    assert redis.get(slacked.keys.notifier_dead_total()) == "1"
    [letter] = [json.loads(x) for x in redis.lrange(slacked.keys.notifier_dead(), 0, -1)]
    assert letter["event"] == "fleet_halted" and "500" in letter["error"] and "lost" in letter["text"]


def test_a_refused_token_is_logged_once_and_dead_letters_are_counted_in_status(
    notified: tuple[Settings, Processes], redis: Redis, slack: SlackServer
) -> None:
    settings, procs = notified
    start_notifier(procs, redis, settings)
    slack.revoke("token_revoked")
    for reason in ("a", "b"):
        assert run_wave(settings, "stop", "--reason", reason).returncode == 0
        assert run_wave(settings, "resume").returncode == 0
    wait_until(
        lambda: redis.get(settings.keys.notifier_dead_total()) == "4",
        message="four dead letters",
        diagnose=procs.logs,
    )
    lines = [line for line in procs.logs().splitlines() if '"level": "error"' in line]
    assert len(lines) == 1, procs.logs()  # one error line, not one per message
    assert "refused the bot token" in lines[0]
    assert "WAVE_SLACK__BOT_TOKEN" in lines[0]
    status = run_wave(settings, "status")
    assert status.returncode == 0
    assert (
        "notifier: 0 waiting, 4 dead letters (Slack refused the bot token (token_revoked))" in status.stdout
    )
    letters = [json.loads(x) for x in redis.lrange(settings.keys.notifier_dead(), 0, -1)]
    assert [x["event"] for x in letters] == ["fleet_resumed", "fleet_halted"] * 2  # newest first


def test_hostile_story_text_cannot_ping_or_link_and_secrets_never_reach_slack(
    settings: Settings, redis: Redis, store: StoryStore, domains: Domains, slack: SlackServer, tmp_path: Path
) -> None:
    keyed = settings.model_copy(
        update={"anthropic": settings.anthropic.model_copy(update={"api_key": SecretStr(SECRET)})}
    )
    slacked = with_slack(keyed, slack)
    procs = Processes(slacked, tmp_path / "logs")
    try:
        start_notifier(procs, redis, slacked)
        title = f"<!channel> <https://evil.example|click> & <@U123> see https://evil.example {SECRET}"
        store.enqueue([Story(id="AUTH-201", title=title)], domains)
        assert run_wave(slacked, "stop", "--reason", f"<!here> leaked {SECRET}").returncode == 0
        wait_until(lambda: len(slack.messages) == 2, message="the parent and the halt", diagnose=procs.logs)
    finally:
        procs.stop_all()
    for message in slack.messages:
        shown = [message.text, *(json.dumps(b, ensure_ascii=False) for b in message.blocks)]
        for text in shown:
            assert "<" not in text and ">" not in text  # no <!channel>, <!here>, <@user>, <url|label>
            assert "://evil" not in text  # a bare URL is defused, Slack does not auto-link it
        assert SECRET not in message.raw and "[redacted]" in message.text
    assert "&lt;!channel&gt;" in slack.messages[0].text and "&amp;" in slack.messages[0].text


def test_a_webhook_posts_without_threads(
    settings: Settings, redis: Redis, store: StoryStore, domains: Domains, slack: SlackServer, tmp_path: Path
) -> None:
    slacked = with_slack(settings, slack, bot_token=None, webhook_url=SecretStr(slack.webhook_url))
    procs = Processes(slacked, tmp_path / "logs")
    try:
        start_notifier(procs, redis, slacked)
        store.enqueue([Story(id="AUTH-301", title="by webhook")], domains)
        assert run_wave(slacked, "stop", "--reason", "hook").returncode == 0
        wait_until(lambda: len(slack.messages) == 2, message="two webhook posts", diagnose=procs.logs)
    finally:
        procs.stop_all()
    assert all(m.webhook and m.thread_ts is None for m in slack.messages)
    assert slack.messages[0].text.startswith(":inbox_tray: *AUTH-301*")
    assert redis.get(slacked.keys.notifier_thread("AUTH-301")) is None


def test_the_notifier_without_slack_settings_refuses_in_one_line(settings: Settings) -> None:
    result = run_wave(settings, "notifier")
    assert result.returncode == 78  # EX_CONFIG
    assert result.stderr.strip().splitlines() == [
        "wave: error: Slack is not configured: set WAVE_SLACK__BOT_TOKEN (threads) or WAVE_SLACK__WEBHOOK_URL"
    ]


def test_wave_up_starts_a_notifier_only_when_slack_is_configured(
    settings: Settings, slack: SlackServer
) -> None:
    domains = load_domains(settings.domains_dir)
    without = {c.name for c in Fleet(settings, domains, None).children}
    with_it = {c.name for c in Fleet(with_slack(settings, slack), domains, None).children}

    assert with_it - without == {"NOTIFIER"}


def test_the_notifier_runs_as_its_own_narrow_redis_user(
    slack: SlackServer, tmp_path: Path, domains_dir: Path
) -> None:
    server = EmbeddedRedis(tmp_path / "redis", free_port())  # the ACL users of `wave up`
    server.start()
    try:
        base = fast_settings(server, tmp_path / "data", domains_dir)
        username, password = server.credentials(acl.NOTIFIER)
        redis_settings = base.redis.model_copy(update={"username": username, "password": SecretStr(password)})
        settings = with_slack(base.model_copy(update={"redis": redis_settings}), slack)
        admin = server.client(decode_responses=True)
        procs = Processes(settings, tmp_path / "logs")
        try:
            start_notifier(procs, admin, settings)
            store = StoryStore(admin, base.keys, base.pipeline.max_rounds)
            store.enqueue([Story(id="AUTH-401", title="narrow")], load_domains(domains_dir))
            store.apply("AUTH-401", Event(EventKind.CANCEL, reason="not needed"))
            wait_until(lambda: len(slack.messages) == 2, message="parent and reply", diagnose=procs.logs)
        finally:
            procs.stop_all()
    finally:
        server.stop()
    parent, reply = slack.messages
    assert reply.thread_ts == parent.ts and "cancelled" in reply.text


@pytest.mark.slow
def test_wave_up_with_slack_configured_runs_the_notifier_on_its_own_redis_user(
    slack: SlackServer, tmp_path: Path, domains_dir: Path
) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("WAVE_")}
    env.update(
        WAVE_DATA_DIR=str(tmp_path),
        WAVE_DOMAINS_DIR=str(domains_dir),
        WAVE_EMBEDDED_REDIS__PORT=str(free_port()),
        WAVE_SLACK__BOT_TOKEN=slack.token,
        WAVE_SLACK__BASE_URL=slack.url,
        WAVE_SLACK__ALERTS_CHANNEL="#alerts",
    )
    up = subprocess.Popen([sys.executable, "-m", "wavefleet.cli", "up", "--no-view"], env=env)
    try:
        directory = tmp_path / "redis"
        wait_until(lambda: endpoint_of(directory) and operator_credentials(directory), message="Redis up")
        username, password = operator_credentials(directory) or ("", "")
        operator = Redis.from_url(str(endpoint_of(directory)), username=username, password=password)
        wait_until(
            lambda: (
                operator.exists("wave:events")
                and any(g["name"] == b"wave:events:notifier" for g in operator.xinfo_groups("wave:events"))
            ),
            timeout_s=60,
            message="the notifier started by wave up",
        )
        stop = subprocess.run(
            [sys.executable, "-m", "wavefleet.cli", "stop", "--reason", "drill"], env=env, check=False
        )
        assert stop.returncode == 0
        wait_until(lambda: slack.messages, message="the halt alert", timeout_s=30)
    finally:
        up.send_signal(signal.SIGINT)
        up.wait(timeout=60)
    [alert] = slack.messages
    assert alert.channel == "#alerts" and "fleet_halted" in alert.text and "drill" in alert.text


def test_a_notifier_killed_during_an_outage_posts_what_it_had_taken_once_restarted(
    notified: tuple[Settings, Processes], redis: Redis, slack: SlackServer
) -> None:
    settings, procs = notified
    start_notifier(procs, redis, settings)
    slack.close()
    assert run_wave(settings, "stop", "--reason", "before the crash").returncode == 0
    assert run_wave(settings, "resume").returncode == 0
    group = settings.keys.events_group("notifier")
    wait_until(  # the halt taken, tried and not acked (the resume may still be unread)
        lambda: redis.hget(settings.keys.notifier_state(), "problem"),
        message="the notifier failing to post the halt",
        diagnose=procs.logs,
    )
    assert redis.xpending(settings.keys.events(), group)["pending"] >= 1
    procs.stop_all()  # SIGKILL: no chance to finish anything
    slack.reopen()
    procs.wave("notifier", name="notifier-again")
    wait_until(lambda: len(slack.messages) == 2, message="both alerts posted", diagnose=procs.logs)
    assert [m.text.split("*")[1] for m in slack.messages] == ["fleet_halted", "fleet_resumed"]
    wait_until(lambda: redis.xpending(settings.keys.events(), group)["pending"] == 0, message="acked")


def test_an_entry_trimmed_from_the_stream_while_taken_is_dead_lettered_not_posted_blank(
    notified: tuple[Settings, Processes], redis: Redis, slack: SlackServer
) -> None:
    settings, procs = notified
    start_notifier(procs, redis, settings)
    slack.close()
    assert run_wave(settings, "stop", "--reason", "trimmed").returncode == 0
    wait_until(
        lambda: redis.hget(settings.keys.notifier_state(), "problem"),
        message="the notifier failing to post the halt",
        diagnose=procs.logs,
    )
    procs.stop_all()
    redis.xtrim(settings.keys.events(), maxlen=0)  # the capped stream moved on during the outage
    slack.reopen()
    procs.wave("notifier", name="notifier-again")
    wait_until(
        lambda: redis.get(settings.keys.notifier_dead_total()) == "1",
        message="the trimmed entry dead-lettered",
        diagnose=procs.logs,
    )
    assert slack.messages == []
    [letter] = [json.loads(x) for x in redis.lrange(settings.keys.notifier_dead(), 0, -1)]
    assert "trimmed" in letter["error"]


def test_a_monitor_finding_is_an_alert_and_its_clearing_a_reply_in_its_thread(
    notified: tuple[Settings, Processes], redis: Redis, slack: SlackServer
) -> None:
    settings, procs = notified
    start_notifier(procs, redis, settings)
    found = MonitorFinding(
        detector="worker_silent", key="auth-be-1", severity="critical", summary="<!here> no beat"
    )
    for event in (found, MonitorCleared(detector="worker_silent", key="auth-be-1", summary="beats again")):
        pipe = redis.pipeline()
        emit(pipe, settings.keys, event, time.time())
        pipe.execute()
    wait_until(lambda: len(slack.messages) == 2, message="the finding and its clearing", diagnose=procs.logs)
    alert, cleared = slack.messages
    assert alert.channel == cleared.channel == "#alerts"
    assert alert.thread_ts is None and cleared.thread_ts == alert.ts
    assert "monitor_finding" in alert.text and "&lt;!here&gt;" in alert.text and "<!here>" not in alert.text
    assert "monitor_cleared" in cleared.text and "beats again" in cleared.text


def emit_all(redis: Redis, settings: Settings, events: list[Any]) -> None:
    pipe = redis.pipeline()
    for event in events:
        emit(pipe, settings.keys, event, time.time())
    pipe.execute()


def stage_events(story: str, roles: list[str]) -> list[StoryEvent]:
    """Ordinary replies: each role's stage started then done (activity, no alert)."""
    return [
        StoryEvent(story=story, event=kind, role=role, to=f"{role}-{kind}")
        for role in roles
        for kind in ("stage_retry", "stage_done")
    ]


def written_while_stopped(
    redis: Redis, settings: Settings, store: StoryStore, domains: Domains, ids: list[str], events: list[Any]
) -> None:
    """The stories enqueued and their events written with the notifier's group made but no notifier
    running: the notifier, once started, reads them as one backlog."""
    EventConsumer(redis, settings.keys, "notifier", "setup")
    store.enqueue([Story(id=i, title=f"story {i}") for i in ids], domains)
    emit_all(redis, settings, events)


def thread_of(redis: Redis, settings: Settings, slack: SlackServer, story: str) -> list[Posted]:
    return slack.threads()[str(redis.get(settings.keys.notifier_thread(story)))]


def lines(replies: list[Posted]) -> list[list[str]]:
    """Each reply's events (its fallback has one line per event, each opening with *kind*)."""
    return [
        [line.split("*")[1] + " " + line.split("→ ")[1].split()[0] for line in r.text.splitlines()]
        for r in replies
    ]


def test_a_backlog_of_one_storys_replies_is_posted_as_one_reply_in_order_and_all_acked(
    notified: tuple[Settings, Processes],
    redis: Redis,
    store: StoryStore,
    domains: Domains,
    slack: SlackServer,
) -> None:
    settings, procs = notified
    a = stage_events("AUTH-501", ["pm", "be", "qa"])
    b = stage_events("AUTH-502", ["pm", "fe"])
    interleaved = [e for pair in zip(a, b, strict=False) for e in pair] + a[len(b) :]
    written_while_stopped(redis, settings, store, domains, ["AUTH-501", "AUTH-502"], interleaved)
    start_notifier(procs, redis, settings)
    group = settings.keys.events_group("notifier")
    wait_until(
        lambda: len(slack.messages) == 4,
        message="two parents and two merged replies",
        diagnose=lambda: procs.logs() + "\n".join(m.text for m in slack.messages),
    )
    wait_until(
        lambda: (
            redis.xpending(settings.keys.events(), group)["pending"] == 0
            and redis.xinfo_groups(settings.keys.events())[0]["lag"] == 0
        ),
        message="every entry acked, nothing unread",
        diagnose=procs.logs,
    )
    for story, events in (("AUTH-501", a), ("AUTH-502", b)):
        [reply] = thread_of(redis, settings, slack, story)
        assert lines([reply]) == [[f"{e.event} {e.to}" for e in events]]  # every event, in stream order
        sections = [blk for blk in reply.blocks if blk["type"] == "section"]
        assert [s["text"]["text"].split("*")[1] for s in sections] == [e.event for e in events]
        assert reply.channel == "#activity" and "cost so far $" in reply.text
    parents = slack.parents()
    assert [p.text.split("*")[1] for p in parents] == ["AUTH-501", "AUTH-502"]
    assert all(
        slack.messages.index(p) < slack.messages.index(thread_of(redis, settings, slack, s)[0])
        for p, s in zip(parents, ["AUTH-501", "AUTH-502"], strict=True)
    )


def test_an_alert_in_a_backlog_stays_its_own_message_and_splits_the_merged_replies_around_it(
    notified: tuple[Settings, Processes],
    redis: Redis,
    store: StoryStore,
    domains: Domains,
    slack: SlackServer,
) -> None:
    settings, procs = notified
    before, after = stage_events("AUTH-601", ["pm", "be"]), stage_events("AUTH-601", ["qa"])
    critical = BudgetAlert(
        story="AUTH-601", event="budget_critical", scope="story", level="critical", fraction=0.8
    )
    many = [StoryEvent(story="AUTH-601", event="stage_waiting", role="be", to=f"wait{i}") for i in range(23)]
    written_while_stopped(redis, settings, store, domains, ["AUTH-601"], [*before, critical, *after, *many])
    start_notifier(procs, redis, settings)
    wait_until(lambda: len(slack.messages) == 6, message="parent, 4 replies, 1 alert", diagnose=procs.logs)
    group = settings.keys.events_group("notifier")
    wait_until(lambda: redis.xpending(settings.keys.events(), group)["pending"] == 0, message="all acked")
    replies = thread_of(redis, settings, slack, "AUTH-601")
    [alert] = [m for m in slack.messages if m.channel == "#alerts"]
    assert alert.thread_ts is None and "budget_critical" in alert.text
    assert [r.text.count("\n") + 1 for r in replies] == [4, 1, 20, 5]  # bounded at 20 events a reply
    assert "budget_critical" in replies[1].text and "budget_critical" not in replies[0].text + replies[2].text
    story: list[StoryEvent | BudgetAlert] = [*before, critical, *after, *many]
    kinds = [line.split("*")[1] for r in replies for line in r.text.splitlines()]
    assert kinds == [e.event for e in story]  # the story's order holds
    assert all(len(r.blocks) <= 50 for r in replies)


def test_a_merged_reply_slack_keeps_refusing_dead_letters_each_of_its_entries_with_its_own_text(
    settings: Settings, redis: Redis, store: StoryStore, domains: Domains, slack: SlackServer, tmp_path: Path
) -> None:
    slacked = with_slack(settings, slack, retries=3)
    procs = Processes(slacked, tmp_path / "logs")
    group = slacked.keys.events_group("notifier")
    try:
        start_notifier(procs, redis, slacked)
        store.enqueue([Story(id="AUTH-701", title="story AUTH-701")], domains)
        wait_until(lambda: slack.messages, message="the parent", diagnose=procs.logs)
        wait_until(lambda: redis.xpending(slacked.keys.events(), group)["pending"] == 0, message="acked")
        procs.stop_all()  # the events below are written with no notifier running: one backlog
        events = stage_events("AUTH-701", ["pm", "be"])
        emit_all(redis, slacked, events)
        slack.failing(500, times=3)  # each try of the merged reply (the SDK does not retry a 500)
        procs.wave("notifier", name="notifier-again")
        wait_until(
            lambda: redis.get(slacked.keys.notifier_dead_total()) == "4",
            message="the merged reply's four entries dead-lettered",
            diagnose=procs.logs,
        )
        wait_until(lambda: redis.xpending(slacked.keys.events(), group)["pending"] == 0, message="acked")
    finally:
        procs.stop_all()
    assert len(slack.refused) == 3 and len(slack.messages) == 1  # one merged reply tried, not four
    letters = [json.loads(x) for x in reversed(redis.lrange(slacked.keys.notifier_dead(), 0, -1))]
    assert [x["event"] for x in letters] == [e.event for e in events]  # stream order (oldest first)
    assert [x["text"].split("→ ")[1].split()[0] for x in letters] == [e.to for e in events]
    assert all("500" in x["error"] and "\n" not in x["text"] for x in letters)


def windowed(
    settings: Settings, slack: SlackServer, tmp_path: Path, **values: object
) -> tuple[Settings, Processes]:
    slacked = with_slack(settings, slack, **values)
    return slacked, Processes(slacked, tmp_path / "logs")


def notifier_with_parents(
    procs: Processes,
    redis: Redis,
    settings: Settings,
    fleet: tuple[StoryStore, Domains],
    slack: SlackServer,
    ids: list[str],
) -> None:
    """A notifier running, and stories `ids` enqueued with their parents posted."""
    store, domains = fleet
    start_notifier(procs, redis, settings)
    store.enqueue([Story(id=i, title=f"story {i}") for i in ids], domains)
    wait_until(lambda: len(slack.messages) == len(ids), message="the parents, at once", diagnose=procs.logs)


def test_a_storys_replies_coming_together_wait_for_each_other_and_go_as_one_reply_within_the_window(
    settings: Settings, redis: Redis, store: StoryStore, domains: Domains, slack: SlackServer, tmp_path: Path
) -> None:
    slacked, procs = windowed(settings, slack, tmp_path, merge_window_s=1.5)
    try:
        notifier_with_parents(procs, redis, slacked, (store, domains), slack, ["AUTH-801"])
        events = stage_events("AUTH-801", ["pm", "be"])
        first_at = time.time()
        for event in events:  # as a fleet writes them: one at a time, the notifier keeping up
            emit_all(redis, slacked, [event])
            time.sleep(0.1)
        wait_until(lambda: len(slack.messages) == 2, timeout_s=10, message="one reply", diagnose=procs.logs)
    finally:
        procs.stop_all()
    [reply] = thread_of(redis, slacked, slack, "AUTH-801")
    assert lines([reply]) == [[f"{e.event} {e.to}" for e in events]]  # all four, in order
    # it waited for the window (the last event came 0.3 s after the first), and no longer than it
    # plus a read's wait (1 s) and a loaded machine's margin
    assert 1.4 <= reply.at - first_at <= 1.5 + 1.0 + 2.0


def test_an_alert_posts_its_storys_waiting_replies_first_and_itself_at_once(
    settings: Settings, redis: Redis, store: StoryStore, domains: Domains, slack: SlackServer, tmp_path: Path
) -> None:
    # a 60 s window: the replies would wait a minute if the alert did not send them (the test's
    # wait is 15 s)
    slacked, procs = windowed(settings, slack, tmp_path, merge_window_s=60)
    try:
        notifier_with_parents(procs, redis, slacked, (store, domains), slack, ["AUTH-802"])
        replies = stage_events("AUTH-802", ["pm"])
        emit_all(redis, slacked, replies)
        group = slacked.keys.events_group("notifier")
        wait_until(  # taken and held (not acked), not posted
            lambda: redis.xpending(slacked.keys.events(), group)["pending"] == len(replies),
            message="the replies taken and waiting",
            diagnose=procs.logs,
        )
        assert len(slack.messages) == 1
        critical = BudgetAlert(
            story="AUTH-802", event="budget_critical", scope="story", level="critical", fraction=0.8
        )
        emit_all(redis, slacked, [critical])
        wait_until(
            lambda: len(slack.messages) == 4,
            timeout_s=15,
            message="replies, then the alert (in the thread and the alerts channel)",
            diagnose=lambda: procs.logs() + repr([m.text for m in slack.messages]),
        )
        wait_until(lambda: redis.xpending(slacked.keys.events(), group)["pending"] == 0, message="acked")
    finally:
        procs.stop_all()
    _parent, merged_reply, in_thread, alert = slack.messages
    assert lines([merged_reply]) == [[f"{e.event} {e.to}" for e in replies]]
    assert thread_of(redis, slacked, slack, "AUTH-802") == [merged_reply, in_thread]
    assert "budget_critical" in in_thread.text and "stage_done" not in in_thread.text
    assert alert.channel == "#alerts" and "budget_critical" in alert.text


def test_replies_waiting_when_the_notifier_is_killed_are_posted_at_once_by_the_next_one(
    settings: Settings, redis: Redis, store: StoryStore, domains: Domains, slack: SlackServer, tmp_path: Path
) -> None:
    # more held than one read's batch (5): the next notifier reads every pending page; a 60 s window
    # it does not wait again (what it finds pending is late already)
    slacked, procs = windowed(settings, slack, tmp_path, merge_window_s=60, batch=5)
    ids = ["AUTH-803", "AUTH-804", "AUTH-805"]
    try:
        notifier_with_parents(procs, redis, slacked, (store, domains), slack, ids)
        events = {i: stage_events(i, ["pm", "fe"]) for i in ids}
        group = slacked.keys.events_group("notifier")
        for i in ids:  # a read at a time: each smaller than the batch, so each reply waits
            emit_all(redis, slacked, events[i])
            wait_until(
                lambda i=i: redis.xpending(slacked.keys.events(), group)["pending"] == 4 * (ids.index(i) + 1),
                message="the replies taken and waiting",
                diagnose=procs.logs,
            )
        assert len(slack.messages) == 3
        procs.stop_all()  # SIGKILL: the held replies are unacked, not lost
        procs.wave("notifier", name="notifier-again")
        wait_until(lambda: len(slack.messages) == 6, timeout_s=15, message="three merged replies")
        wait_until(lambda: redis.xpending(slacked.keys.events(), group)["pending"] == 0, message="acked")
    finally:
        procs.stop_all()
    for i in ids:
        assert lines(thread_of(redis, slacked, slack, i)) == [[f"{e.event} {e.to}" for e in events[i]]]


@pytest.mark.parametrize(
    "values",
    [
        {"bot_token": None, "webhook_url": "webhook"},  # no threads: nothing to merge into
        {"merge_window_s": 0},
    ],
    ids=["webhook", "window-0"],
)
def test_without_threads_or_with_a_zero_window_each_reply_is_its_own_message_at_once(
    settings: Settings,
    redis: Redis,
    store: StoryStore,
    domains: Domains,
    slack: SlackServer,
    tmp_path: Path,
    values: dict[str, object],
) -> None:
    if values.get("webhook_url"):
        values = {**values, "webhook_url": SecretStr(slack.webhook_url)}
    # a 60 s window besides: a reply held for it would miss the 10 s wait below
    slacked, procs = windowed(settings, slack, tmp_path, **{"merge_window_s": 60, **values})
    try:
        notifier_with_parents(procs, redis, slacked, (store, domains), slack, ["AUTH-804"])
        events = stage_events("AUTH-804", ["pm"])
        for n, event in enumerate(events, start=2):  # one at a time, each posted before the next
            emit_all(redis, slacked, [event])
            wait_until(lambda n=n: len(slack.messages) == n, timeout_s=10, message=f"reply {n - 1}")
    finally:
        procs.stop_all()
    replies = slack.messages[1:]
    assert [r.text.count("\n") for r in replies] == [0, 0]  # one event each
    assert all(e.event in r.text for r, e in zip(replies, events, strict=True))


def test_a_stop_while_a_backlog_drains_into_a_slow_slack_is_quick_and_the_next_start_posts_the_rest_once(
    notified: tuple[Settings, Processes],
    redis: Redis,
    store: StoryStore,
    domains: Domains,
    slack: SlackServer,
) -> None:
    settings, procs = notified
    ids = [f"AUTH-{n}" for n in range(900, 930)]
    written_while_stopped(redis, settings, store, domains, ids, [])  # 30 parents: none waits
    slack.slow(0.3)  # draining all 30 would take 9 s
    notifier = procs.wave("notifier", name="notifier")
    wait_until(lambda: len(slack.messages) >= 2, message="the drain under way", diagnose=procs.logs)
    notifier.send_signal(signal.SIGTERM)
    notifier.wait(timeout=3)  # the post in flight (0.3 s) and the exit, not the 28 others (8 s)
    assert len(slack.messages) < len(ids)
    slack.healthy()
    procs.wave("notifier", name="notifier-again")
    wait_until(lambda: len(slack.messages) >= len(ids), message="every parent", diagnose=procs.logs)
    group = settings.keys.events_group("notifier")
    wait_until(lambda: redis.xpending(settings.keys.events(), group)["pending"] == 0, message="acked")
    assert sorted(m.text.split("*")[1] for m in slack.messages) == ids  # each exactly once


def test_replies_read_behind_a_full_batch_merge_at_once_and_only_a_short_last_read_waits(
    notified: tuple[Settings, Processes],
    redis: Redis,
    store: StoryStore,
    domains: Domains,
    slack: SlackServer,
) -> None:
    settings, procs = notified
    # batch 5, a 60 s window: reads that fill (the notifier is behind) post what they hold at once;
    # the last read, short, is keeping up, and its replies wait (the test's wait is 15 s)
    slacked = with_slack(settings, slack, batch=5, merge_window_s=60)
    procs = Processes(slacked, procs.log_dir)
    events = stage_events("AUTH-901", ["pm", "fe", "be", "qa", "cto", "qa"])  # 12 replies
    written_while_stopped(redis, slacked, store, domains, ["AUTH-901"], events)
    try:
        procs.wave("notifier", name="notifier")
        group = slacked.keys.events_group("notifier")
        wait_until(  # parent + 4, then 5: two full reads posted; the last 3 taken and held
            lambda: len(slack.messages) == 3 and redis.xpending(slacked.keys.events(), group)["pending"] == 3,
            timeout_s=15,
            message="two full reads posted at once, the short last one held",
            diagnose=lambda: procs.logs() + repr([m.text for m in slack.messages]),
        )
    finally:
        procs.stop_all()
    replies = thread_of(redis, slacked, slack, "AUTH-901")
    assert lines(replies) == [
        [f"{e.event} {e.to}" for e in events[:4]],
        [f"{e.event} {e.to}" for e in events[4:9]],
    ]
