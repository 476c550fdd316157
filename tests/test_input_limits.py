"""Hostile numbers, files and labels through the real `wave` command: refused in one line, nothing written."""

from __future__ import annotations

import argparse
import json
import math
import subprocess
import time
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st
from redis import Redis
from test_cli import keys_and_sizes, wave

from wavefleet.arguments import amount, whole
from wavefleet.budget import MAX_GRANT_TOKENS, MAX_GRANT_USD, Budget, day_of
from wavefleet.config import Settings
from wavefleet.domains import Domains
from wavefleet.errors import ExitCode, InvalidInputError
from wavefleet.lifecycle import Role
from wavefleet.store import StoryStore
from wavefleet.stories import MAX_QA_FAILS, MAX_SLOW_S, Story, offline_labels


def assert_one_line(result: subprocess.CompletedProcess[str], code: ExitCode, *fragments: str) -> str:
    """Exit `code`, exactly one stderr line, no traceback, nothing on stdout."""
    assert result.returncode == code, result.stderr
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert "Traceback" not in result.stderr and result.stdout == ""
    for fragment in fragments:
        assert fragment in lines[0], lines[0]
    return lines[0]


# Budget amounts ----------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("option", "value"),
    [
        ("--usd", "-5"),
        ("--usd", "nan"),
        ("--usd", "inf"),
        ("--usd", "-inf"),
        ("--usd", "1e30"),
        ("--usd", "0"),
        ("--usd", str(MAX_GRANT_USD + 1)),
        ("--tokens", "-5"),
        ("--tokens", "0"),
        ("--tokens", "99999999999999999999"),
        ("--tokens", str(MAX_GRANT_TOKENS + 1)),
        ("--tokens", "1.5"),
    ],
)
def test_budget_grant_refuses_an_amount_that_is_not_finite_positive_and_capped(
    settings: Settings,
    store: StoryStore,
    domains: Domains,
    redis: Redis,
    tmp_path: Path,
    option: str,
    value: str,
) -> None:
    # Given a story with a budget
    store.enqueue([Story(id="AUTH-001", title="login")], domains)
    before = keys_and_sizes(redis)
    # When a hostile amount is granted to it
    result = wave(settings, "budget", "grant", "story:AUTH-001", f"{option}={value}", cwd=tmp_path)
    # Then argparse refuses it in one line, and no budget key changed
    assert_one_line(
        result, ExitCode.USAGE, f"argument {option}:", "from" if option == "--tokens" else "above 0"
    )
    assert keys_and_sizes(redis) == before


def test_budget_grant_refuses_a_hostile_amount_given_in_code_too(settings: Settings, redis: Redis) -> None:
    budget = Budget(redis, settings.keys, settings.budgets)
    for usd, tokens in ((-1.0, 0), (math.nan, 0), (math.inf, 0), (0.0, -5), (0.0, MAX_GRANT_TOKENS + 1)):
        with pytest.raises(InvalidInputError):
            budget.grant("global:2026-01-01", usd=usd, tokens=tokens)
    assert redis.dbsize() == 0


def test_budget_show_survives_a_limit_granted_down_to_zero_before_the_checks(
    settings: Settings, redis: Redis, tmp_path: Path
) -> None:
    # Given a grant written by an older version that took negative amounts: the fleet's limit is 0
    limit_nusd = int(settings.budgets.global_daily_usd * 1e9)
    scope = settings.keys.budget(f"global:{day_of(time.time())}")
    redis.hset(
        scope, mapping={"grant_nusd": -limit_nusd, "grant_tokens": -settings.budgets.global_daily_tokens}
    )
    # When the budgets are shown
    result = wave(settings, "budget", cwd=tmp_path)
    # Then they are, with no division by zero
    assert result.returncode == ExitCode.OK, result.stderr
    assert "global" in result.stdout and "over" in result.stdout


@given(st.one_of(st.floats().map(str), st.integers().map(str), st.text(max_size=60)))
def test_any_string_given_as_an_amount_is_accepted_within_bounds_or_refused_in_one_line(value: str) -> None:
    try:
        number = amount(MAX_GRANT_USD)(value)
    except argparse.ArgumentTypeError as exc:
        assert len(str(exc).splitlines()) == 1 and len(str(exc)) < 200
    else:
        assert math.isfinite(number) and 0 < number <= MAX_GRANT_USD


@given(st.one_of(st.integers().map(str), st.floats().map(str), st.text(max_size=60)))
def test_any_string_given_as_a_whole_number_is_accepted_within_bounds_or_refused_in_one_line(
    value: str,
) -> None:
    try:
        number = whole(1, 1000)(value)
    except argparse.ArgumentTypeError as exc:
        assert len(str(exc).splitlines()) == 1 and len(str(exc)) < 200
    else:
        assert 1 <= number <= 1000


# Numeric options ---------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "argv",
    [
        ("status", "--recent", "99999999999999999999"),
        ("status", "--recent", "²"),
        ("llm", "call", "hi", "--task", "planning", "--max-tokens", "-5"),
        ("llm", "call", "hi", "--task", "planning", "--max-tokens", "0"),
        ("llm", "call", "hi", "--task", "planning", "--max-tokens", "99999999999999999999"),
        ("worker", "--domain", "auth", "--role", "pm", "--index", "-1"),
        ("demo", "--timeout", "nan"),
        ("demo", "--timeout", "inf"),
        ("demo", "--timeout", "-1"),
        ("budget", "--date", "2026-13-45"),
        ("budget", "--date", "*"),
    ],
)
def test_every_numeric_option_is_bounded(
    settings: Settings, redis: Redis, tmp_path: Path, argv: tuple[str, ...]
) -> None:
    result = wave(settings, *argv, cwd=tmp_path)
    assert_one_line(result, ExitCode.USAGE, f"argument {argv[-2]}:")
    assert redis.dbsize() == 0


# Story files -------------------------------------------------------------------------------------
# The "billion laughs": nine levels of nine aliases, 9**9 strings once expanded (a MemoryError before
# aliases were refused); refused at its first anchor, before anything is expanded.
LAUGHS = "\n".join(["a0: &a0 lol", *(f"a{n}: &a{n} [{', '.join([f'*a{n - 1}'] * 9)}]" for n in range(1, 10))])


@pytest.mark.parametrize(
    ("name", "text", "fragments"),
    [
        ("bomb.yaml", f"{LAUGHS}\nid: *a9\ntitle: t\n", ("line 1", "anchors")),
        ("alias.yaml", "- {id: AUTH-001, title: t}\n- {id: AUTH-002, title: *x}\n", ("line 2", "aliases")),
        ("dup.yaml", "id: AUTH-001\ntitle: kept?\ntitle: last\n", ("line 3", "duplicate key 'title'")),
        (
            "dup.json",
            '[{"id": "AUTH-001",\n "title": "a",\n "title": "b"}]',
            ("line 3", "duplicate key 'title'"),
        ),
        (
            "dupid.json",
            '{"id": "AUTH-001", "id": "AUTH-002", "title": "a"}',
            ("line 1", "duplicate key 'id'"),
        ),
    ],
)
def test_a_story_file_with_aliases_or_duplicate_keys_is_refused_naming_the_line(
    settings: Settings, redis: Redis, tmp_path: Path, name: str, text: str, fragments: tuple[str, ...]
) -> None:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    result = wave(settings, "enqueue", "-f", str(path), cwd=tmp_path)
    assert_one_line(result, ExitCode.INVALID_INPUT, str(path), *fragments)
    assert redis.dbsize() == 0


def test_duplicate_routes_in_the_routes_variable_are_refused(settings: Settings, tmp_path: Path) -> None:
    routes = '{"planning": "xai", "planning": "anthropic"}'
    result = wave(settings, "status", cwd=tmp_path, WAVE_LLM__ROUTES=routes)
    assert_one_line(result, ExitCode.CONFIG, "WAVE_LLM__ROUTES", "duplicate key 'planning'")


# Labels ------------------------------------------------------------------------------------------
BAD_LABELS = [
    "offline:slow=pm:inf",
    "offline:slow=inf",
    "offline:slow=nan",
    "offline:slow=1e9",
    f"offline:slow={MAX_SLOW_S + 1:g}",
    "offline:slow=zz:1",
    "offline:slow=",
    "offline:slow",
    "offline:qa-fails=x",
    "offline:qa-fails=-1",
    f"offline:qa-fails={MAX_QA_FAILS + 1}",
    "offline:give-up=nobody",
    "offline:give-up",
    "offline:oversize=maybe",
    "offline:frobnicate",
]


@pytest.mark.parametrize("label", BAD_LABELS)
def test_a_bad_offline_label_is_refused_at_enqueue_naming_the_story_and_label(
    settings: Settings, redis: Redis, tmp_path: Path, label: str
) -> None:
    result = wave(
        settings, "enqueue", "AUTH-001", "--title", "t", "-l", "security", "-l", label, cwd=tmp_path
    )
    assert_one_line(result, ExitCode.INVALID_INPUT, "AUTH-001", repr(label))
    assert redis.dbsize() == 0


def test_a_bad_offline_label_in_a_file_is_refused_naming_file_story_and_label(
    settings: Settings, redis: Redis, tmp_path: Path
) -> None:
    path = tmp_path / "stories.json"
    path.write_text(
        json.dumps(
            [
                {"id": "AUTH-001", "title": "t"},
                {"id": "AUTH-002", "title": "t", "labels": ["offline:slow=pm:inf"]},
            ]
        )
    )
    result = wave(settings, "enqueue", "-f", str(path), cwd=tmp_path)
    assert_one_line(result, ExitCode.INVALID_INPUT, str(path), "story 2 (AUTH-002)", "'offline:slow=pm:inf'")
    assert redis.dbsize() == 0


def test_the_same_offline_label_twice_is_refused(settings: Settings, redis: Redis, tmp_path: Path) -> None:
    labels = ("-l", "offline:qa-fails=1", "-l", "offline:qa-fails=2")
    result = wave(settings, "enqueue", "AUTH-001", "--title", "t", *labels, cwd=tmp_path)
    assert_one_line(result, ExitCode.INVALID_INPUT, "AUTH-001", "'offline:qa-fails=2'", "twice")
    assert redis.dbsize() == 0


def test_good_offline_labels_parse_into_one_typed_value() -> None:
    labels = offline_labels(
        [
            "security",
            "offline:slow=0.5",
            "offline:slow=be:6",
            "offline:qa-fails=2",
            "offline:give-up=qa",
            "offline:oversize",
        ]
    )
    assert labels.slow_s(Role.BE) == 6.0 and labels.slow_s(Role.PM) == 0.5
    assert labels.qa_fails == 2 and labels.give_up is Role.QA and labels.oversize and not labels.leak_secret


@given(st.text(max_size=40))
def test_any_offline_label_text_is_parsed_within_bounds_or_refused_with_a_value_error(text: str) -> None:
    try:
        labels = offline_labels([f"offline:{text}"])
    except ValueError as exc:
        assert len(str(exc).splitlines()) == 1
    else:
        assert 0 <= labels.qa_fails <= MAX_QA_FAILS
        assert all(0 <= labels.slow_s(role) <= MAX_SLOW_S for role in Role)


def test_a_refused_amount_of_astral_characters_is_shown_cut_short_after_quoting() -> None:
    # Given an amount of characters that each quote as ten (found by hypothesis: a 200-char line)
    value = "0" * 23 + "\x1f" * 4 + "\U00012544" * 33

    # When it is refused, Then the one-line error stays short
    with pytest.raises(argparse.ArgumentTypeError) as refused:
        amount(MAX_GRANT_USD)(value)
    assert len(str(refused.value)) < 200 and "\n" not in str(refused.value)
