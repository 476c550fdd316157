"""What `wave` shows is safe to show: no secret from a URL, no terminal escape or markup from a story,
and a closed pipe ends the command quietly."""

from __future__ import annotations

import io
import json
import logging
import subprocess
import sys
import unicodedata
from pathlib import Path
from urllib.parse import quote

import pytest
import structlog
from hypothesis import assume, given
from hypothesis import strategies as st
from rich.console import Console
from test_cli import wave

from wavefleet import logs
from wavefleet.config import Settings
from wavefleet.domains import Domains
from wavefleet.embedded import EmbeddedRedis, free_port
from wavefleet.errors import ExitCode
from wavefleet.halt import send_halt
from wavefleet.lifecycle import Event, EventKind, Role
from wavefleet.messages import StageResult
from wavefleet.store import StoryStore
from wavefleet.stories import Story
from wavefleet.testing import env_of
from wavefleet.text import mask_url, terminal_safe

pytestmark = pytest.mark.timeout(60)

SCHEMES = st.sampled_from(["redis://", "rediss://", "unix://"])
PLACES = st.sampled_from(["127.0.0.1:6379/0", "redis.internal:6380/2", "/run/redis/redis.sock"])


# Masking URLs ------------------------------------------------------------------------------------
def _unprovable(password: str, skeleton: str) -> bool:
    """A password made only of the URL's own characters (or of the mask) could be "found" in any
    masked output; those prove nothing either way."""
    return set(password) <= set(skeleton + "*")


@given(SCHEMES, PLACES, st.sampled_from(["", "user", "wave-worker"]), st.text(min_size=1))
def test_a_password_in_the_user_part_never_appears_masked_whatever_it_holds(
    scheme: str, place: str, user: str, password: str
) -> None:
    url = f"{scheme}{user}:{password}@{place}"
    assume(not _unprovable(password, f"{scheme}{user}:@{place}"))
    assert password not in mask_url(url)


@given(
    SCHEMES,
    PLACES,
    st.sampled_from(["password", "pass", "pwd", "token", "secret", "api_key", "auth", "PASSWORD"]),
    st.text(min_size=1),
    st.sampled_from(["", "&db=1", "&socket_timeout=5"]),
)
def test_a_secret_query_value_never_appears_masked_raw_or_percent_encoded(
    scheme: str, place: str, name: str, password: str, tail: str
) -> None:
    for value in (quote(password, safe=""), password.replace("&", "")):
        assume(value)
        skeleton = f"{scheme}{place}?db=0&{name}={tail}"
        url = f"{scheme}{place}?db=0&{name}={value}{tail}"
        assume(not _unprovable(value, skeleton))
        masked = mask_url(url)
        assert value not in masked
        assert password not in masked or _unprovable(password, skeleton)


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("redis://user:p@ss@db.example:6379/0", "redis://user:***@db.example:6379/0"),
        ("redis://:secret@db.example", "redis://***@db.example"),
        ("redis://db.example/0?password=secret", "redis://db.example/0?password=***"),
        ("rediss://u:x@h:6380/0?ssl_cert_reqs=none", "rediss://u:***@h:6380/0?ssl_cert_reqs=none"),
        ("unix:///run/r.sock?password=x&db=2", "unix:///run/r.sock?password=***&db=2"),
        ("https://api.anthropic.com", "https://api.anthropic.com"),
    ],
)
def test_masking_keeps_what_locates_the_server(url: str, shown: str) -> None:
    assert mask_url(url) == shown


@pytest.mark.parametrize(
    "url",
    [
        "redis://user:p@ss{secret}@127.0.0.1:{port}/0",
        "redis://:{secret}@127.0.0.1:{port}",
        "redis://127.0.0.1:{port}/0?password={secret}",
        "rediss://:x@{secret}@127.0.0.1:{port}/0",
        "unix:///nonexistent/redis.sock?password={secret}",
    ],
)
@pytest.mark.parametrize("reachable", [True, False])
def test_wave_never_prints_a_password_from_the_redis_url(
    settings: Settings, redis_proc: EmbeddedRedis, tmp_path: Path, url: str, reachable: bool
) -> None:
    # Given a Redis URL carrying a (wrong) password, pointing at the real server or at a closed port
    port = redis_proc.port if reachable else free_port()
    secret = "Sup3rS3cret"
    # When any command has to connect
    result = wave(settings, "status", cwd=tmp_path, WAVE_REDIS__URL=url.format(secret=secret, port=port))
    # Then it is refused in one line that names the server but not the password
    assert result.returncode in (ExitCode.UNAVAILABLE, ExitCode.CONFIG), result.stderr
    assert result.stderr.startswith("wave: error: ") and len(result.stderr.splitlines()) == 1, result.stderr
    assert secret not in result.stderr + result.stdout
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize(
    "url",
    [
        "redis://:{secret}/x@127.0.0.1:6379/0",  # an unencoded "/" ends the host part: port = secret
        "redis://:{secret}?x@127.0.0.1:6379/0",
        "redis://127.0.0.1:6379/0?password=a&{secret}=1",  # an unknown option, named after the "&"
    ],
)
def test_a_redis_url_that_cannot_be_read_is_refused_without_quoting_it(
    settings: Settings, tmp_path: Path, url: str
) -> None:
    secret = "Sup3rS3cret"
    result = wave(settings, "status", cwd=tmp_path, WAVE_REDIS__URL=url.format(secret=secret))
    assert result.returncode == ExitCode.CONFIG, result.stderr
    assert result.stderr.startswith("wave: error: WAVE_REDIS__URL") and len(result.stderr.splitlines()) == 1
    assert secret not in result.stderr + result.stdout


# Control characters ------------------------------------------------------------------------------
HOSTILE = "\x1b[2J\x1b]52;c;ZWNobyBwd25lZA==\x07\u202eevil\u2066\x9b31m\x07\x00\x08\rrest"
ARGV_HOSTILE = HOSTILE.replace("\x00", "")  # an argument cannot hold NUL
HOSTILE_MARKUP = "[/red] [link=https://evil.example]click[/link] [bold"


def _hostile_story(store: StoryStore, domains: Domains) -> str:
    """AUTH-001 with hostile text in every free field, a cancelled reason and a stage result."""
    story = Story(
        id="AUTH-001",
        title=f"title {HOSTILE} {HOSTILE_MARKUP}",
        description=f"description {HOSTILE}",
        acceptance_criteria=(f"criterion {HOSTILE}",),
    )
    store.enqueue([story], domains)
    store.record_result(
        "AUTH-001",
        1,
        Role.PM,
        1,
        job="job-1",
        result=StageResult(ok=True, agent=f"pm {HOSTILE}", output={"summary": f"summary {HOSTILE}"}),
    )
    store.apply("AUTH-001", Event(EventKind.CANCEL, reason=f"reason {HOSTILE} {HOSTILE_MARKUP}"))
    send_halt(store.redis, store.keys, f"halt {HOSTILE} {HOSTILE_MARKUP}", "test")
    return "AUTH-001"


@pytest.mark.parametrize(
    "argv",
    [
        ["status", "AUTH-001"],
        ["status"],
        ["status", "--all"],
        ["list"],
        ["events", "AUTH-001"],
        ["cancel", "AUTH-001", "--reason", ARGV_HOSTILE],
        ["stop", "--reason", ARGV_HOSTILE],
    ],
)
def test_story_text_reaches_the_terminal_without_control_characters(
    settings: Settings, store: StoryStore, domains: Domains, tmp_path: Path, argv: list[str]
) -> None:
    # Given a story whose title, reason, result and the fleet's halt reason hold escape sequences
    # (clear screen, OSC 52 clipboard write, 8-bit CSI), bidi overrides and other controls
    _hostile_story(store, domains)
    # When a human-readable command shows it
    result = wave(settings, *argv, cwd=tmp_path)
    # Then nothing in it can drive the terminal
    shown = result.stdout + result.stderr
    assert "Traceback" not in shown
    for char in ("\x1b", "\x9b", "\x07", "\x00", "\x08", "\r", "\u202e", "\u2066"):
        assert char not in shown, (argv, shown)
    assert "[2J" not in shown and "ZWNobyBwd25lZA" not in shown


def test_a_model_reply_reaches_the_terminal_without_control_characters(
    settings: Settings, tmp_path: Path
) -> None:
    # Given the offline model, which echoes the prompt back as its reply (a real model may be led to)
    # When `wave llm call` prints a reply full of escape sequences
    result = wave(settings, "llm", "call", "--task", "planning", f"say {ARGV_HOSTILE}", cwd=tmp_path)
    # Then the reply is shown, but cannot drive the terminal
    assert result.returncode == 0, result.stderr
    assert "evil" in result.stdout
    assert "\x1b" not in result.stdout and "\u202e" not in result.stdout and "\x9b" not in result.stdout


@pytest.mark.parametrize(
    "argv", [["status", "AUTH-001", "--json"], ["list", "--json"], ["events", "AUTH-001", "--json"]]
)
def test_json_output_keeps_story_text_exactly_with_controls_escaped(
    settings: Settings, store: StoryStore, domains: Domains, tmp_path: Path, argv: list[str]
) -> None:
    _hostile_story(store, domains)
    result = wave(settings, *argv, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "\x1b" not in result.stdout and "\u202e" not in result.stdout
    assert any(HOSTILE in text for text in _strings(json.loads(result.stdout)))


def _strings(data: object) -> list[str]:
    if isinstance(data, str):
        return [data]
    if isinstance(data, dict):
        data = list(data.values())
    return [s for item in data for s in _strings(item)] if isinstance(data, list) else []


def test_console_log_lines_carry_no_control_characters(capsys: pytest.CaptureFixture[str]) -> None:
    # Given a worker logging for a terminal (`wave up --no-view` shows its children's lines)
    handlers = list(logging.getLogger().handlers)
    logs.setup("AUTH-PM-1", fmt="console")
    # When a line carries story text
    try:
        logs.get(story="AUTH-001", title=HOSTILE).warning(f"stage failed: {HOSTILE}")
    finally:
        structlog.reset_defaults()
        logging.getLogger().handlers[:] = handlers
    # Then no escape or control character reaches the terminal but those the renderer adds itself
    err = capsys.readouterr().err
    assert "evil" in err and "[2J" not in err and "\u202e" not in err and "\x00" not in err
    assert "\x1b]52" not in err and "\x9b" not in err and "\x07" not in err


@given(st.text(alphabet=st.characters(codec=None)), st.booleans())
def test_terminal_safe_text_never_holds_a_control_or_bidi_character(text: str, multiline: bool) -> None:
    allowed = {"\n"} if multiline else set()
    shown = terminal_safe(text, multiline=multiline)
    assert not [c for c in shown if unicodedata.category(c) == "Cc" and c not in allowed]
    assert not set(shown) & set(
        "\u061c\u200e\u200f\u2028\u2029\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069"
    )


def test_terminal_safe_keeps_newlines_only_when_asked_and_plain_text_as_it_is() -> None:
    assert terminal_safe("a\nb") == "a\u21b5b"
    assert terminal_safe("a\nb", multiline=True) == "a\nb"
    assert terminal_safe("Lock accounts après 5 tries: 名前 [ok]") == "Lock accounts après 5 tries: 名前 [ok]"


# Rich markup -------------------------------------------------------------------------------------
def test_the_live_view_shows_markup_from_a_reason_literally_instead_of_crashing(
    settings: Settings, store: StoryStore, domains: Domains, tmp_path: Path
) -> None:
    from wavefleet.fleet import stories_table, summary_table  # noqa: PLC0415 - as `wave up` imports it

    # Given a story cancelled through the real CLI with a reason full of rich markup
    store.enqueue([Story(id="AUTH-001", title=HOSTILE_MARKUP)], domains)
    assert wave(settings, "cancel", "AUTH-001", "--reason", HOSTILE_MARKUP, cwd=tmp_path).returncode == 0
    # When the live view's tables are rendered as `wave up` and `wave demo` render them
    console = Console(file=io.StringIO(), width=400, force_terminal=True, color_system=None)
    console.print(stories_table(store.list()))
    console.print(summary_table(store.list(), 1.0))
    # Then the reason is shown as written
    assert console.file.getvalue().count(HOSTILE_MARKUP) == 2  # type: ignore[attr-defined]


# Closed pipes ------------------------------------------------------------------------------------
def test_wave_status_into_a_pipe_closed_early_ends_quietly(
    settings: Settings, store: StoryStore, domains: Domains, tmp_path: Path
) -> None:
    # Given far more stories than a pipe buffers (64 KiB), so the writer meets the closed end
    store.enqueue([Story(id=f"AUTH-{n:04d}", title=f"story {n}") for n in range(1, 2001)], domains)
    # When the reader (`head -1`) takes one line and goes away
    wave_status = subprocess.Popen(
        [sys.executable, "-m", "wavefleet.cli", "status"],
        env=env_of(settings),
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    assert wave_status.stdout is not None
    assert wave_status.stdout.readline().startswith(b"ID")
    wave_status.stdout.close()
    _, stderr = wave_status.communicate(timeout=30)
    # Then it ends as a shell's own tools do after SIGPIPE: exit 141, nothing on stderr
    assert stderr == b""
    assert wave_status.returncode == ExitCode.BROKEN_PIPE == 141
