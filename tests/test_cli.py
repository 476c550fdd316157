"""The real `wave` command in a subprocess: exit codes, one-line errors, nothing written if refused."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml
from redis import Redis

from wavefleet.config import Settings
from wavefleet.domains import Domains
from wavefleet.embedded import free_port
from wavefleet.errors import ExitCode
from wavefleet.lifecycle import Decision, Event, EventKind, Role, StoryState
from wavefleet.messages import StageResult
from wavefleet.store import StoryStore
from wavefleet.stories import Story
from wavefleet.testing import env_of


def wave(settings: Settings, *argv: str, cwd: Path, **env: str) -> subprocess.CompletedProcess[str]:
    """Run `python -m wavefleet.cli ARGV` with the test's settings (plus `env` overrides)."""
    return subprocess.run(
        [sys.executable, "-m", "wavefleet.cli", *argv],
        env={**env_of(settings), **env},
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )


def assert_refused(result: subprocess.CompletedProcess[str], code: ExitCode, *fragments: str) -> list[str]:
    """The documented exit code, stderr one `wave: error:` line per problem, no traceback, no output."""
    lines = result.stderr.splitlines()
    assert result.returncode == code, result.stderr
    assert lines and all(line.startswith("wave: error: ") for line in lines), result.stderr
    assert "Traceback" not in result.stderr + result.stdout
    assert result.stdout == ""
    for fragment in fragments:
        assert fragment in result.stderr
    return lines


def keys_and_sizes(redis: Redis) -> dict[str, int]:
    """Every key with its size, enough to see that a refused command wrote nothing."""
    size = {
        "hash": redis.hlen,
        "set": redis.scard,
        "zset": redis.zcard,
        "stream": redis.xlen,
        "string": redis.strlen,
        "list": redis.llen,
    }
    return {key: size[redis.type(key)](key) for key in sorted(redis.scan_iter("*"))}


def story(story_id: str, title: str = "") -> Story:
    return Story(id=story_id, title=title or f"Story {story_id}")


# Enqueue -----------------------------------------------------------------------------------------
def test_enqueue_by_arguments_stores_every_field_and_names_the_domain(
    settings: Settings, store: StoryStore, tmp_path: Path
) -> None:
    # Given an empty fleet
    # When a story is enqueued with every option
    result = wave(
        settings,
        "enqueue",
        "AUTH-001",
        "--title",
        "Lock accounts",
        "--description",
        "after 5 tries",
        "-c",
        "five failures lock",
        "--criteria",
        "lock lifts",
        "--priority",
        "high",
        "-l",
        "security",
        "--label",
        "offline:qa-fails=1",
        cwd=tmp_path,
    )

    # Then it is queued with exactly those fields, and the output says where it went
    assert (result.returncode, result.stdout, result.stderr) == (0, "enqueued AUTH-001 -> auth\n", "")
    record = store.get("AUTH-001")
    assert record.state is StoryState.QUEUED
    assert record.story == Story(
        id="AUTH-001",
        title="Lock accounts",
        description="after 5 tries",
        acceptance_criteria=("five failures lock", "lock lifts"),
        priority="high",
        labels=("security", "offline:qa-fails=1"),
    )


def test_enqueue_by_file_adds_every_story_to_its_own_domain(
    settings: Settings, store: StoryStore, tmp_path: Path
) -> None:
    # Given a YAML file of three stories across both domains
    path = tmp_path / "stories.yaml"
    path.write_text(
        yaml.safe_dump(
            {
                "stories": [
                    {"id": "AUTH-001", "title": "a"},
                    {"id": "PAYMENTS-001", "title": "b"},
                    {"id": "AUTH-002", "title": "c"},
                ]
            }
        )
    )

    # When the file is enqueued
    result = wave(settings, "enqueue", "-f", str(path), cwd=tmp_path)

    # Then each one is reported and stored with its domain
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == [
        "enqueued AUTH-001 -> auth",
        "enqueued PAYMENTS-001 -> payments",
        "enqueued AUTH-002 -> auth",
    ]
    assert {(r.id, r.domain) for r in store.list()} == {
        ("AUTH-001", "auth"),
        ("PAYMENTS-001", "payments"),
        ("AUTH-002", "auth"),
    }


# Reading -----------------------------------------------------------------------------------------
def test_status_prints_a_table_of_every_story(
    settings: Settings, store: StoryStore, domains: Domains, tmp_path: Path
) -> None:
    # Given a queued auth story and a planning payments story
    store.enqueue([story("AUTH-001"), story("PAYMENTS-001")], domains)
    store.apply("PAYMENTS-001", Event(EventKind.ROUTE))

    # When the status is asked for
    result = wave(settings, "status", cwd=tmp_path)

    # Then a header and one row per story show id, domain, state, round and stage
    assert result.returncode == 0, result.stderr
    header, *rows = result.stdout.splitlines()
    assert header.split() == ["ID", "DOMAIN", "STATE", "ROUND", "STAGE", "AGE", "COST"]
    assert [row.split()[:5] for row in rows] == [
        ["AUTH-001", "auth", "queued", "0", "-"],
        ["PAYMENTS-001", "payments", "planning", "0", "pm"],
    ]


def test_status_json_is_a_list_of_objects_with_id_domain_state_and_round(
    settings: Settings, store: StoryStore, domains: Domains, tmp_path: Path
) -> None:
    # Given two stories, one cancelled
    store.enqueue([story("AUTH-001"), story("PAYMENTS-001")], domains)
    store.apply("AUTH-001", Event(EventKind.CANCEL))

    # When the status is asked for as JSON
    result = wave(settings, "status", "--json", cwd=tmp_path)

    # Then stdout is exactly that JSON list
    assert result.returncode == 0, result.stderr
    rows = json.loads(result.stdout)
    assert [{k: row[k] for k in ("id", "domain", "state", "round")} for row in rows] == [
        {"id": "AUTH-001", "domain": "auth", "state": "cancelled", "round": 0},
        {"id": "PAYMENTS-001", "domain": "payments", "state": "queued", "round": 0},
    ]


def test_status_shows_every_active_story_and_the_newest_finished_ones_and_counts_the_rest(
    settings: Settings, store: StoryStore, domains: Domains, tmp_path: Path
) -> None:
    # Given five finished stories enqueued one after another, then two active ones
    for n in range(1, 6):
        store.enqueue([story(f"AUTH-00{n}")], domains)
        store.apply(f"AUTH-00{n}", Event(EventKind.CANCEL))
    store.enqueue([story("PAYMENTS-001"), story("PAYMENTS-002")], domains)

    # When the status is asked for with room for two finished stories, then for all
    table = wave(settings, "status", "--recent", "2", cwd=tmp_path)
    as_json = wave(settings, "status", "--recent", "0", "--json", cwd=tmp_path)
    everything = wave(settings, "status", "--all", "--json", cwd=tmp_path)

    # Then the table shows the active two, the newest finished ones, oldest first, and the count left out
    assert table.returncode == 0, table.stderr
    _header, *rows, footer = table.stdout.splitlines()
    assert [row.split()[0] for row in rows] == ["AUTH-004", "AUTH-005", "PAYMENTS-001", "PAYMENTS-002"]
    assert footer.startswith("(3 stories finished earlier not shown")
    assert [r["id"] for r in json.loads(as_json.stdout)] == ["PAYMENTS-001", "PAYMENTS-002"]
    assert len(json.loads(everything.stdout)) == 7


def test_status_shows_the_stories_that_finished_last_not_those_enqueued_last(
    settings: Settings, store: StoryStore, domains: Domains, tmp_path: Path
) -> None:
    # Given three stories, the first enqueued finishing last
    store.enqueue([story("AUTH-001"), story("AUTH-002"), story("AUTH-003")], domains)
    for story_id in ("AUTH-002", "AUTH-003", "AUTH-001"):
        store.apply(story_id, Event(EventKind.CANCEL))

    # When the status shows one finished story, then none
    one = wave(settings, "status", "--recent", "1", cwd=tmp_path)
    none = wave(settings, "status", "--recent", "0", cwd=tmp_path)

    # Then it is the one that finished last; with none shown, the count says what there is
    assert [line.split()[0] for line in one.stdout.splitlines()[1:-1]] == ["AUTH-001"]
    assert none.stdout == "no active stories; 3 finished (wave status --all, or --recent N)\n"


def test_status_finds_stories_that_finished_before_the_finished_index_existed(
    settings: Settings, store: StoryStore, domains: Domains, redis: Redis, tmp_path: Path
) -> None:
    # Given two finished stories and no finished index (a fleet from before it existed)
    store.enqueue([story("AUTH-001"), story("AUTH-002")], domains)
    for story_id in ("AUTH-001", "AUTH-002"):
        store.apply(story_id, Event(EventKind.CANCEL))
    redis.delete(settings.keys.finished())

    result = wave(settings, "status", cwd=tmp_path)

    assert [line.split()[0] for line in result.stdout.splitlines()[1:]] == ["AUTH-001", "AUTH-002"]


def test_a_story_whose_record_cannot_be_read_is_reported_in_one_line(
    settings: Settings, store: StoryStore, domains: Domains, redis: Redis, tmp_path: Path
) -> None:
    store.enqueue([story("AUTH-001")], domains)
    redis.hset(settings.keys.story("AUTH-001"), "attempts", "not json")

    result = wave(settings, "status", "AUTH-001", cwd=tmp_path)

    assert assert_refused(result, ExitCode.INVALID_INPUT) == [
        "wave: error: story AUTH-001: its record in Redis cannot be read (JSONDecodeError: Expecting value: "
        "line 1 column 1 (char 0)); repair or delete its hash in Redis"
    ]


def test_status_refuses_a_recent_count_that_is_not_a_whole_number(settings: Settings, tmp_path: Path) -> None:
    result = wave(settings, "status", "--recent", "-3", cwd=tmp_path)

    assert result.returncode == ExitCode.USAGE
    assert result.stderr.splitlines() == [
        "wave status: error: argument --recent: '-3' is not a whole number from 0 to 100,000 "
        "(see wave status --help)"
    ]


def test_status_with_no_stories_says_so(settings: Settings, tmp_path: Path) -> None:
    # Given an empty fleet
    # When the status is asked for, as a table and as JSON
    table = wave(settings, "status", cwd=tmp_path)
    as_json = wave(settings, "status", "--json", cwd=tmp_path)

    # Then the table says there is nothing, and the JSON is an empty list
    assert (table.returncode, table.stdout) == (0, "no stories\n")
    assert (as_json.returncode, json.loads(as_json.stdout)) == (0, [])


def test_status_of_one_story_shows_its_details_and_stage_results(
    settings: Settings, store: StoryStore, domains: Domains, tmp_path: Path
) -> None:
    # Given a planning story whose PM stage has reported
    store.enqueue([story("AUTH-001", "Lock accounts")], domains)
    store.apply("AUTH-001", Event(EventKind.ROUTE))
    store.record_result(
        "AUTH-001",
        0,
        Role.PM,
        1,
        job="AUTH-001_r0_pm_a1",
        result=StageResult(ok=True, agent="offline", output={"summary": "planned it"}),
    )

    # When its status is asked for, as text and as JSON
    text = wave(settings, "status", "AUTH-001", cwd=tmp_path)
    as_json = wave(settings, "status", "AUTH-001", "--json", cwd=tmp_path)

    # Then both show the story, its state and the PM result
    assert text.returncode == 0, text.stderr
    fields = {
        key: value.strip()
        for key, _, value in (line.partition(":") for line in text.stdout.splitlines())
        if not key.startswith(" ")
    }
    assert (fields["id"], fields["title"], fields["state"], fields["stage"]) == (
        "AUTH-001",
        "Lock accounts",
        "planning",
        "pm",
    )
    assert "planned it" in text.stdout
    data = json.loads(as_json.stdout)
    assert (data["id"], data["story"]["title"], data["results"]["r0.pm.a1"]["ok"]) == (
        "AUTH-001",
        "Lock accounts",
        True,
    )


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (["--domain", "auth"], ["AUTH-001", "AUTH-002"]),
        (["--domain", "payments"], ["PAYMENTS-001"]),
        (["--state", "cancelled"], ["AUTH-002"]),
        (["--domain", "auth", "--state", "queued"], ["AUTH-001"]),
        (["--domain", "payments", "--state", "done"], []),
    ],
)
def test_list_filters_by_domain_and_state(
    settings: Settings,
    store: StoryStore,
    domains: Domains,
    tmp_path: Path,
    argv: list[str],
    expected: list[str],
) -> None:
    # Given two auth stories (one cancelled) and a payments story
    store.enqueue([story("AUTH-001"), story("PAYMENTS-001"), story("AUTH-002")], domains)
    store.apply("AUTH-002", Event(EventKind.CANCEL))

    # When they are listed with a filter
    result = wave(settings, "list", *argv, "--json", cwd=tmp_path)

    # Then exactly the matching stories come back
    assert result.returncode == 0, result.stderr
    assert [row["id"] for row in json.loads(result.stdout)] == expected


def test_events_prints_the_story_history_in_order(
    settings: Settings, store: StoryStore, domains: Domains, tmp_path: Path
) -> None:
    # Given a story routed and then cancelled
    store.enqueue([story("AUTH-001")], domains)
    store.apply("AUTH-001", Event(EventKind.ROUTE))
    store.apply("AUTH-001", Event(EventKind.CANCEL, reason="duplicate of AUTH-000"))

    # When its events are asked for, as text and as JSON
    text = wave(settings, "events", "AUTH-001", cwd=tmp_path)
    as_json = wave(settings, "events", "AUTH-001", "--json", cwd=tmp_path)

    # Then each transition is one line, in order, with its reason
    assert text.returncode == 0, text.stderr
    lines = text.stdout.splitlines()
    assert [line.split()[2:4] for line in lines] == [
        ["enqueued", "->"],
        ["route", "queued"],
        ["cancel", "planning"],
    ]
    assert lines[-1].endswith("duplicate of AUTH-000")
    assert [e["event"] for e in json.loads(as_json.stdout)] == ["enqueued", "route", "cancel"]


# Commands on the wrong state ---------------------------------------------------------------------
def held_story(store: StoryStore) -> None:
    store.apply("AUTH-001", Event(EventKind.ROUTE))
    for role in (Role.PM, Role.FE, Role.BE, Role.QA, Role.CTO):
        record = store.get("AUTH-001")
        store.apply(
            "AUTH-001",
            Event(
                EventKind.STAGE_DONE,
                role=role,
                round=record.round,
                attempt=record.attempts[role],
                passed=True,
                decision=Decision.HOLD,
            ),
        )


WRONG_STATE = [
    # (command, how the story is set up, a fragment of the one error line)
    ("approve", "queued", "only a held story can be approved; this one is queued"),
    ("reject", "queued", "only a held story can be rejected; this one is queued"),
    ("retry", "queued", "only a failed, killed or cancelled story can be retried; this one is queued"),
    ("retry", "held", "only a failed, killed or cancelled story can be retried; this one is held"),
    ("cancel", "cancelled", "cannot cancel a story that is cancelled"),
    ("approve", "cancelled", "only a held story can be approved; this one is cancelled"),
]


@pytest.mark.parametrize(
    ("command", "setup", "fragment"), WRONG_STATE, ids=[f"{r[0]}-{r[1]}" for r in WRONG_STATE]
)
def test_a_command_on_a_story_in_the_wrong_state_is_a_conflict_and_changes_nothing(
    settings: Settings,
    store: StoryStore,
    domains: Domains,
    redis: Redis,
    tmp_path: Path,
    command: str,
    setup: str,
    fragment: str,
) -> None:
    # Given AUTH-001 queued, held by the CTO, or cancelled
    store.enqueue([story("AUTH-001")], domains)
    if setup == "held":
        held_story(store)
    elif setup == "cancelled":
        store.apply("AUTH-001", Event(EventKind.CANCEL))
    before = keys_and_sizes(redis)

    # When a command that does not fit is given
    result = wave(settings, command, "AUTH-001", cwd=tmp_path)

    # Then it exits EX_TEMPFAIL with one line naming the story, and nothing was written
    assert assert_refused(result, ExitCode.CONFLICT) == [f"wave: error: AUTH-001: {fragment}"]
    assert keys_and_sizes(redis) == before
    assert store.get("AUTH-001").state is StoryState(setup)


@pytest.mark.parametrize(
    ("command", "after"), [("approve", "reviewing"), ("reject", "killed"), ("cancel", "cancelled")]
)
def test_a_command_on_a_held_story_moves_it_and_says_so(
    settings: Settings, store: StoryStore, domains: Domains, tmp_path: Path, command: str, after: str
) -> None:
    # Given a story the CTO put on hold
    store.enqueue([story("AUTH-001")], domains)
    held_story(store)

    # When the operator decides
    result = wave(settings, command, "AUTH-001", "--reason", "looked at it", cwd=tmp_path)

    # Then the story moves and the change is printed, with the reason in its history
    assert (result.returncode, result.stdout, result.stderr) == (0, f"AUTH-001: held -> {after}\n", "")
    assert store.get("AUTH-001").state is StoryState(after)
    assert store.events("AUTH-001")[-1]["reason"] == "looked at it"


# Bad input -------------------------------------------------------------------------------------
def bad_file(tmp_path: Path) -> Path:
    path = tmp_path / "bad.yaml"
    path.write_text(
        yaml.safe_dump(
            [
                {"id": "AUTH-001", "title": "fine"},
                {"id": "auth-2"},
                {"id": "AUTH-003", "title": "t", "owner": "me"},
            ]
        )
    )
    return path


BAD_INPUT: list[tuple[str, list[str], ExitCode, list[str]]] = [
    # (name, argv, exit code, the error lines after "wave: error: ")
    (
        "unknown prefix",
        ["enqueue", "BILLING-001", "--title", "t"],
        ExitCode.INVALID_INPUT,
        ["story BILLING-001: no domain has prefix 'BILLING' (known: AUTH, PAYMENTS)"],
    ),
    (
        "malformed id",
        ["enqueue", "auth-1", "--title", "t"],
        ExitCode.INVALID_INPUT,
        ["id: malformed id: use PREFIX-NNN, e.g. AUTH-001"],
    ),
    (
        "no title",
        ["enqueue", "AUTH-001"],
        ExitCode.INVALID_INPUT,
        ["title: String should have at least 1 character"],
    ),
    (
        "no story",
        ["enqueue"],
        ExitCode.INVALID_INPUT,
        ["name a story: wave enqueue AUTH-001 --title '...', or wave enqueue -f stories.yaml"],
    ),
    (
        "file and id",
        ["enqueue", "AUTH-001", "--title", "t", "-f", "{bad}"],
        ExitCode.INVALID_INPUT,
        ["give either -f FILE or a story id and --title, not both"],
    ),
    (
        "bad file",
        ["enqueue", "-f", "{bad}"],
        ExitCode.INVALID_INPUT,
        [
            "{bad}: story 2 (auth-2): id: malformed id: use PREFIX-NNN, e.g. AUTH-001",
            "{bad}: story 2 (auth-2): title: Field required",
            "{bad}: story 3 (AUTH-003): owner: unknown field "
            "(known: id, title, description, acceptance_criteria, priority, labels)",
        ],
    ),
    ("missing file", ["enqueue", "-f", "{missing}"], ExitCode.NOT_FOUND, ["{missing}: no such story file"]),
    (
        "unknown state",
        ["list", "--state", "finished"],
        ExitCode.INVALID_INPUT,
        [
            "unknown state 'finished': use one of queued, planning, developing, testing, reviewing, done, "
            "failed, killed, cancelled, held, halted"
        ],
    ),
    (
        "unknown domain",
        ["list", "--domain", "billing"],
        ExitCode.INVALID_INPUT,
        ["unknown domain 'billing': known domains are auth, payments"],
    ),
    ("missing story status", ["status", "AUTH-404"], ExitCode.NOT_FOUND, ["no story AUTH-404"]),
    ("missing story events", ["events", "AUTH-404"], ExitCode.NOT_FOUND, ["no story AUTH-404"]),
    ("missing story cancel", ["cancel", "AUTH-404"], ExitCode.NOT_FOUND, ["no story AUTH-404"]),
]


@pytest.mark.parametrize(("argv", "code", "lines"), [r[1:] for r in BAD_INPUT], ids=[r[0] for r in BAD_INPUT])
def test_bad_input_exits_with_its_code_one_line_per_problem_and_writes_nothing(
    settings: Settings,
    store: StoryStore,
    domains: Domains,
    redis: Redis,
    tmp_path: Path,
    argv: list[str],
    code: ExitCode,
    lines: list[str],
) -> None:
    # Given a fleet holding one story
    store.enqueue([story("PAYMENTS-001")], domains)
    before = keys_and_sizes(redis)
    paths = {"bad": str(bad_file(tmp_path)), "missing": str(tmp_path / "missing.yaml")}

    # When the command is given bad input
    result = wave(settings, *(a.format(**paths) for a in argv), cwd=tmp_path)

    # Then it exits with the documented code, one `wave: error:` line per problem, and wrote nothing
    assert assert_refused(result, code) == [f"wave: error: {line.format(**paths)}" for line in lines]
    assert keys_and_sizes(redis) == before


def test_a_file_with_one_active_story_enqueues_none_of_its_stories(
    settings: Settings, store: StoryStore, domains: Domains, redis: Redis, tmp_path: Path
) -> None:
    # Given AUTH-002 already queued, and a file of three stories including it
    store.enqueue([story("AUTH-002")], domains)
    before = keys_and_sizes(redis)
    path = tmp_path / "stories.json"
    path.write_text(json.dumps([{"id": f"AUTH-00{n}", "title": "t"} for n in (1, 2, 3)]))

    # When the file is enqueued
    result = wave(settings, "enqueue", "-f", str(path), cwd=tmp_path)

    # Then it is a conflict naming AUTH-002, and neither AUTH-001 nor AUTH-003 was added
    assert assert_refused(result, ExitCode.CONFLICT) == [
        "wave: error: story AUTH-002 is already active (queued); cancel it first or use another id"
    ]
    assert keys_and_sizes(redis) == before


# Environment problems ------------------------------------------------------------------------------
def test_an_unreachable_redis_exits_69_with_one_line_naming_it_and_no_traceback(
    settings: Settings, tmp_path: Path
) -> None:
    # Given a Redis URL on a port where nothing listens
    url = f"redis://127.0.0.1:{free_port()}/0"

    # When a command needing Redis is run
    result = wave(settings, "status", cwd=tmp_path, WAVE_REDIS__URL=url)

    # Then it exits EX_UNAVAILABLE with one line naming the URL (and never the password)
    (line,) = assert_refused(result, ExitCode.UNAVAILABLE, f"cannot reach Redis at {url}")
    assert settings.redis.password is not None
    assert settings.redis.password.get_secret_value() not in line


@pytest.mark.parametrize(
    ("env", "fragment"),
    [
        (
            {"WAVE_PIPELINE__MAX_ROUNDS": "0"},
            "WAVE_PIPELINE__MAX_ROUNDS: Input should be greater than or equal to 1",
        ),
        ({"WAVE_REDIS__URL": "http://localhost"}, "WAVE_REDIS__URL: Value error, must start with redis://"),
        ({"WAVE_REDIS_URL": "redis://x"}, "WAVE_REDIS_URL: unknown setting"),
        ({"WAVE_REDIS": "not json"}, "WAVE_REDIS: not valid JSON"),
        ({"WAVE_DOMAINS_DIR": "/nonexistent/domains"}, "/nonexistent/domains: domains directory not found"),
    ],
)
def test_a_bad_setting_exits_78_with_one_line_naming_it(
    settings: Settings, store: StoryStore, redis: Redis, tmp_path: Path, env: dict[str, str], fragment: str
) -> None:
    # Given one bad setting in the environment
    before = keys_and_sizes(redis)

    # When a story is enqueued
    result = wave(settings, "enqueue", "AUTH-001", "--title", "t", cwd=tmp_path, **env)

    # Then it exits EX_CONFIG with one line naming the setting, and nothing was written
    assert_refused(result, ExitCode.CONFIG, fragment)
    assert len(result.stderr.splitlines()) == 1
    assert keys_and_sizes(redis) == before


def test_a_malformed_domain_file_exits_78_naming_the_file_and_field(
    settings: Settings, redis: Redis, tmp_path: Path
) -> None:
    # Given a negative team size in the auth domain file
    path = settings.domains_dir / "auth" / "domain.toml"
    path.write_text(path.read_text().replace("fe = 2", "fe = -2"))

    # When a story is enqueued
    result = wave(settings, "enqueue", "AUTH-001", "--title", "t", cwd=tmp_path)

    # Then the file and field are named, and nothing was written
    assert assert_refused(result, ExitCode.CONFIG) == [
        f"wave: error: {path}: team.fe: Input should be greater than or equal to 0"
    ]
    assert keys_and_sizes(redis) == {}


def test_usage_errors_exit_2(settings: Settings, tmp_path: Path) -> None:
    # Given / When a command line argparse refuses (an unknown option value)
    result: Any = wave(settings, "enqueue", "AUTH-001", "--title", "t", "--priority", "asap", cwd=tmp_path)

    # Then it exits with the usage code and no traceback
    assert result.returncode == ExitCode.USAGE
    assert "invalid choice: 'asap'" in result.stderr
    assert "Traceback" not in result.stderr
