"""The live view of `wave up`: the halt banner on top while halted, workers by role with dead ones
marked, the sandbox runner; hostile text shown as text. Rendered from a real Redis here, and in a
real terminal (tmux) in tests/test_live_view_tmux.py."""

from __future__ import annotations

import io
import json

import pytest
from redis import Redis
from rich.console import Console

from wavefleet.config import Settings
from wavefleet.halt import record_ack, send_halt
from wavefleet.lifecycle import Role
from wavefleet.live_view import LiveView, worker_role
from wavefleet.store import StoryStore

pytestmark = pytest.mark.timeout(60)

HOSTILE = "[bold red]PWNED[/] [link=http://evil]x[/link] \x1b]52;c;aGk=\x07\x1b[2J\x1b]2;HACKED\x07 end"


def painted(view: LiveView) -> str:
    """What a colour terminal receives for one refresh."""
    out = io.StringIO()
    Console(file=out, force_terminal=True, width=200, color_system="truecolor").print(view.render())
    return out.getvalue()


def test_the_halt_banner_opens_the_view_with_since_by_reason_and_acks_and_goes_on_resume(
    store: StoryStore, redis: Redis, settings: Settings
) -> None:
    keys = settings.keys
    view = LiveView(store, sandbox="none")
    assert "FLEET HALTED" not in painted(view)
    for name in ("auth-fe-1.aaaaaa.11", "auth-qa-1.bbbbbb.12"):
        redis.sadd(keys.workers(), name)
        redis.set(keys.worker_heartbeat(name), "1", px=60_000)
    send_halt(redis, keys, "disk full on the build host", "operator:ana")
    record_ack(redis, keys, "auth-fe-1.aaaaaa.11")

    text = painted(view)
    banner = text.index("FLEET HALTED since ")
    assert banner < text.index("workers")  # on top
    assert "by operator:ana: disk full on the build host (1/2 live workers acked)" in text

    redis.delete(keys.halt())
    assert "FLEET HALTED" not in painted(view)


def test_a_hostile_halt_reason_is_shown_as_text_never_as_markup_or_terminal_control(
    store: StoryStore, redis: Redis, settings: Settings
) -> None:
    send_halt(redis, settings.keys, HOSTILE, "file:EMERGENCY-STOP")
    text = painted(LiveView(store, sandbox="none"))
    assert "[bold red]PWNED[/] [link=http://evil]x[/link]" in text  # the markup, as written
    assert "\x1b]52" not in text  # no clipboard write
    assert "\x1b]2;" not in text  # no window title
    assert "\x1b[2J" not in text  # no screen clear
    assert "\x1b]8;" not in text  # no hyperlink made from the reason's [link]


def test_a_worker_whose_heartbeat_stops_is_marked_dead_under_its_role(
    store: StoryStore, redis: Redis, settings: Settings
) -> None:
    keys = settings.keys
    view = LiveView(store, sandbox="none")
    names = ["auth-fe-1.aaaaaa.11", "auth-fe-2.cccccc.13", "payments-cto-1.dddddd.14"]
    for name in names:
        redis.sadd(keys.workers(), name)
        redis.set(keys.worker_heartbeat(name), "1", px=60_000)
    redis.sadd(keys.workers(), "auth-be-1.eeeeee.15")  # an earlier run's worker: history, not news
    live, dead = view.workers.poll()
    assert set(live) == {Role.FE, Role.CTO} and not dead

    redis.delete(keys.worker_heartbeat("auth-fe-2.cccccc.13"))  # what its TTL does after a SIGKILL
    live, dead = view.workers.poll()
    assert live[Role.FE] == ["auth-fe-1.aaaaaa.11"]
    assert [name for name, _ in dead[Role.FE]] == ["auth-fe-2.cccccc.13"]
    rows = [line for line in painted(view).splitlines() if "│ fe " in line]
    assert "DEAD auth-fe-2.cccccc.13" in rows[0] and "│ 1 " in rows[0]
    assert "auth-be-1" not in painted(view)


def test_the_sandbox_runner_is_shown_in_container_mode_and_marked_dead_without_its_heartbeat(
    store: StoryStore, redis: Redis, settings: Settings
) -> None:
    keys = settings.keys
    redis.set(keys.sandbox_runner(), json.dumps({"name": "sandbox.[red]x[/].1", "image": "wave-sandbox:abc"}))
    text = painted(LiveView(store, sandbox="container"))
    runner = next(line for line in text.splitlines() if "sandbox runner" in line)
    assert "sandbox.[red]x[/].1, wave-sandbox:abc" in runner
    assert "sandbox runner" not in painted(LiveView(store, sandbox="bwrap"))

    redis.delete(keys.sandbox_runner())
    runner = next(
        line for line in painted(LiveView(store, sandbox="container")).splitlines() if "runner" in line
    )
    assert "DEAD: no `wave sandbox` heartbeat" in runner


def test_a_worker_name_gives_its_role_or_none() -> None:
    assert worker_role("payments-cto-1.3fa2c1.4242") == Role.CTO
    assert worker_role("my-domain-qa-12.3fa2c1.4242") == Role.QA
    assert worker_role("sandbox.1") is None
    assert worker_role("auth-xx-1.a.1") is None


def test_the_notifiers_backlog_and_dead_letters_are_shown_when_there_are_any(
    store: StoryStore, redis: Redis, settings: Settings
) -> None:
    view = LiveView(store, sandbox="none")
    assert "notifier:" not in painted(view)
    redis.set(settings.keys.notifier_dead_total(), 3)
    redis.hset(settings.keys.notifier_state(), "problem", "Slack refused the bot token (invalid_auth)")

    assert "notifier: 0 waiting, 3 dead letters (Slack refused the bot token (invalid_auth))" in painted(view)
