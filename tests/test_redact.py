"""The redactor: every credential shape blanked, ordinary text left alone, known values longest first."""

from __future__ import annotations

import json
import time

import pytest
from redis import Redis
from secret_shapes import SHAPES

from wavefleet.config import Settings
from wavefleet.domains import Domains
from wavefleet.fleet_events import FleetHalted, emit
from wavefleet.lifecycle import Role
from wavefleet.messages import StageResult
from wavefleet.redact import CREDENTIALS, REDACTED, SHAPES_ONLY, Redactor
from wavefleet.store import StoryStore
from wavefleet.stories import Story

ORDINARY = [
    "2026-12-02T07:10:00Z [info] [AUTH-BE-1] stage finished agent=offline ok=True duration_s=1.2",
    "pip install scikit-learn; sk-learn-is-a-library-name-without-digits",
    "GET https://api.example.com/v1/stories?id=AUTH-007 200",
    "max_tokens=4096 cache_read_tokens=120 tokens=929",
    "password = ask_for_it()",  # a call, not a value: left alone by the shapes
    "see docs at http://localhost:8080/path and ftp://files.example.org",
    "the task-0123456789abcdefghij0 was scheduled",  # `sk-` inside a word
]


@pytest.mark.parametrize("name", list(SHAPES))
def test_every_shape_is_redacted_and_named(name: str) -> None:
    text, secret = SHAPES[name]
    cleaned = CREDENTIALS.text(text)
    assert secret not in cleaned and REDACTED in cleaned
    assert CREDENTIALS.find(text), f"{name} not found"
    assert CREDENTIALS.text(cleaned) == cleaned  # idempotent: redacting twice changes nothing
    assert CREDENTIALS.find(cleaned) == ()  # and redacted text is no longer flagged (a story's, a diff's)


@pytest.mark.parametrize("text", ORDINARY)
def test_ordinary_text_is_left_alone(text: str) -> None:
    assert SHAPES_ONLY.text(text) == text and SHAPES_ONLY.find(text) == ()


def test_a_private_key_block_cut_short_blanks_its_base64_lines_not_the_rest_of_the_text() -> None:
    text = 'x = 1\nHEADER = "-----BEGIN RSA PRIVATE KEY-----"\nMIIEpAIBAAKCAQEA7abc0123456789\ndef load():\n'
    assert CREDENTIALS.text(text) == 'x = 1\nHEADER = "[redacted]\ndef load():\n'


def test_only_the_value_is_blanked_where_there_is_a_context() -> None:
    assert CREDENTIALS.text("redis://wave:hunter2hunter2@redis:6379") == "redis://wave:[redacted]@redis:6379"
    assert CREDENTIALS.text("password='hunter2hunter2'") == "password='[redacted]'"


def test_shapes_only_keeps_assignments_for_code_a_model_reads() -> None:
    text, secret = SHAPES["password_assignment"]
    assert secret in SHAPES_ONLY.text(text)
    text, secret = SHAPES["anthropic_key"]
    assert secret not in SHAPES_ONLY.text(text)


def test_known_values_longest_first_in_the_same_pass() -> None:
    redactor = Redactor(["abcdefgh", "abcdefgh-and-more"])
    assert redactor.text("x abcdefgh-and-more y abcdefgh") == "x [redacted] y [redacted]"
    assert redactor.find("x abcdefgh") == ("known",)
    # a known value with no shape at all, in mixed case around it
    assert Redactor(["Plain0ldValue"]).text("[Plain0ldValue]") == "[[redacted]]"


def test_the_structlog_processor_cleans_nested_values() -> None:
    key = SHAPES["github_pat_classic"][1]
    event = CREDENTIALS(None, "info", {"event": f"push with {key}", "args": ("x", {"h": [key]}), "n": 3})
    assert event == {"event": f"push with {REDACTED}", "args": ["x", {"h": [REDACTED]}], "n": 3}


def test_the_events_streams_and_stored_results_are_redacted_where_they_are_written(
    store: StoryStore, domains: Domains, redis: Redis, settings: Settings
) -> None:
    # Given a story, and texts holding every shape
    store.enqueue([Story(id="AUTH-001", title="a story")], domains)
    texts = "\n".join(text for text, _secret in SHAPES.values())

    # When an agent reports them, a fleet event carries them and a stage result quotes them
    store.record_agent_event("AUTH-001", "tool_blocked", texts, {"role": "be", "detail": texts})
    with redis.pipeline() as pipe:
        emit(pipe, settings.keys, FleetHalted(reason=texts, by="ops"), time.time())
        pipe.execute()
    result = StageResult(ok=False, error=texts, output={"summary": texts, "lines": [texts]})
    store.record_result("AUTH-001", 0, Role.PM, 1, job="AUTH-001_r0_pm_a1", result=result)

    # Then no secret is in either stream or the stored result, and the entries still say something
    written = [
        json.dumps(f)
        for s in (settings.keys.events(), settings.keys.story_events("AUTH-001"))
        for _, f in redis.xrange(s)
    ]
    written.append(json.dumps(redis.hgetall(settings.keys.story_results("AUTH-001"))))
    everything = "\n".join(written)
    assert [n for n, (_t, secret) in SHAPES.items() if secret in everything] == []
    assert everything.count(REDACTED) >= 4 * len(SHAPES)


def test_a_path_ending_in_password_is_a_file_name_not_an_assignment() -> None:
    # a sandbox attack report keyed by the files it tried (tests/test_sandbox.py) kept its findings
    report = '{"/data/redis/password": "FileNotFoundError", "C:\\\\cfg\\\\password": "PermissionError"}'
    assert CREDENTIALS.text(report) == report
    # while a dotted configuration key is still an assignment of a secret
    assert "hunter22hunter" not in CREDENTIALS.text("spring.datasource.password=hunter22hunter")
