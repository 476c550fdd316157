"""The story parser: CLI fields and YAML/JSON files, every refusal reported, all or nothing."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from wavefleet.errors import InvalidInputError, NotFoundError
from wavefleet.stories import (
    MAX_FILE_BYTES,
    MAX_STORIES_PER_FILE,
    Priority,
    Story,
    stories_from_file,
    story_from_fields,
)

FULL = {
    "id": "AUTH-001",
    "title": "Lock an account after five failed logins",
    "description": "Repeated wrong passwords lock the account.",
    "acceptance_criteria": ["five failures lock it", "the lock lifts after fifteen minutes"],
    "priority": "high",
    "labels": ["security", "offline:qa-fails=1"],
}
EXPECTED = Story(
    id="AUTH-001",
    title="Lock an account after five failed logins",
    description="Repeated wrong passwords lock the account.",
    acceptance_criteria=("five failures lock it", "the lock lifts after fifteen minutes"),
    priority=Priority.HIGH,
    labels=("security", "offline:qa-fails=1"),
)


def write(tmp_path: Path, name: str, content: Any) -> Path:
    """Write `content` as YAML or JSON by the file's suffix (a str is written verbatim)."""
    path = tmp_path / name
    if isinstance(content, str):
        path.write_text(content, encoding="utf-8")
    elif path.suffix == ".json":
        path.write_text(json.dumps(content, ensure_ascii=False), encoding="utf-8")
    else:
        # escaped, not allow_unicode=True: PyYAML's emitter then writes a raw NEL (U+0085) that its
        # own reader folds into a space, a writer bug outside WAVE (which only reads YAML)
        path.write_text(yaml.safe_dump(content), encoding="utf-8")
    return path


def problems_of(excinfo: pytest.ExceptionInfo[InvalidInputError]) -> list[str]:
    return str(excinfo.value).splitlines()


# CLI fields ------------------------------------------------------------------------------------
def test_story_from_cli_fields_keeps_every_field_and_strips_whitespace() -> None:
    # Given every field, padded with whitespace as a shell might pass it
    fields = {**FULL, "title": f"  {FULL['title']}\n", "labels": [" security ", "offline:qa-fails=1"]}

    # When the story is built
    story = story_from_fields(fields)

    # Then it holds exactly the cleaned values, and its prefix picks the domain
    assert story == EXPECTED
    assert story.prefix == "AUTH"


def test_story_from_only_id_and_title_gets_the_documented_defaults() -> None:
    # Given the two required fields
    fields = {"id": "PAYMENTS-1234", "title": "Refund"}

    # When the story is built
    story = story_from_fields(fields)

    # Then the optional fields take their defaults
    assert (story.description, story.acceptance_criteria, story.labels) == ("", (), ())
    assert story.priority is Priority.NORMAL


REFUSALS = [
    # (fields, the field named, a fragment of the message)
    ({"id": "auth-001", "title": "t"}, "id", "malformed id: use PREFIX-NNN"),
    ({"id": "AUTH-01", "title": "t"}, "id", "malformed id"),
    ({"id": "AUTH001", "title": "t"}, "id", "malformed id"),
    (
        {"id": "AUTH-00\u0661", "title": "t"},
        "id",
        "malformed id",
    ),  # a non-ASCII digit: RQ refuses it in job ids
    ({"id": "1AUTH-001", "title": "t"}, "id", "malformed id"),
    ({"id": "AUTH-" + "0" * 60, "title": "t"}, "id", "at most 64 characters"),
    ({"title": "t"}, "id", "Field required"),
    ({"id": "AUTH-001"}, "title", "Field required"),
    ({"id": "AUTH-001", "title": "   "}, "title", "at least 1 character"),
    ({"id": "AUTH-001", "title": "x" * 201}, "title", "at most 200 characters"),
    (
        {"id": "AUTH-001", "title": "t", "description": "x" * 20_001},
        "description",
        "at most 20000 characters",
    ),
    (
        {"id": "AUTH-001", "title": "t", "acceptance_criteria": ["c"] * 51},
        "acceptance_criteria",
        "at most 50",
    ),
    (
        {"id": "AUTH-001", "title": "t", "acceptance_criteria": ["x" * 1001]},
        "acceptance_criteria.0",
        "at most 1000 characters",
    ),
    (
        {"id": "AUTH-001", "title": "t", "acceptance_criteria": ["ok", " "]},
        "acceptance_criteria.1",
        "at least 1 character",
    ),
    ({"id": "AUTH-001", "title": "t", "labels": ["l"] * 21}, "labels", "at most 20"),
    ({"id": "AUTH-001", "title": "t", "labels": ["has space"]}, "labels.0", "should match pattern"),
    ({"id": "AUTH-001", "title": "t", "labels": ["x" * 65]}, "labels.0", "should match pattern"),
    ({"id": "AUTH-001", "title": "t", "priority": "asap"}, "priority", "'low', 'normal', 'high' or 'urgent'"),
    ({"id": "AUTH-001", "title": "t", "owner": "me"}, "owner", "unknown field (known: id, title"),
    ({"id": "AUTH-001", "title": ["not", "text"]}, "title", "valid string"),
]


@pytest.mark.parametrize(
    ("fields", "field", "fragment"), REFUSALS, ids=[f"{i}-{r[1]}" for i, r in enumerate(REFUSALS)]
)
def test_malformed_cli_fields_are_refused_with_one_line_naming_the_field(
    fields: dict[str, Any], field: str, fragment: str
) -> None:
    # Given fields with exactly one problem
    # When the story is built
    with pytest.raises(InvalidInputError) as excinfo:
        story_from_fields(fields)

    # Then the one line names the field and says what is wrong
    assert problems_of(excinfo) == [f"{field}: {problems_of(excinfo)[0].split(': ', 1)[1]}"]
    assert fragment in str(excinfo.value)


def test_every_problem_of_cli_fields_is_reported_at_once() -> None:
    # Given fields with three problems
    fields = {"id": "nope", "title": "", "colour": "red"}

    # When the story is built
    with pytest.raises(InvalidInputError) as excinfo:
        story_from_fields(fields)

    # Then each problem has its own line naming its field
    assert sorted(line.split(":")[0] for line in problems_of(excinfo)) == ["colour", "id", "title"]


# Files: the accepted shapes --------------------------------------------------------------------
@pytest.mark.parametrize("name", ["story.yaml", "story.yml", "story.json"])
@pytest.mark.parametrize("shape", ["one", "list", "wrapped"])
def test_a_file_may_hold_one_story_a_list_or_a_stories_mapping(tmp_path: Path, name: str, shape: str) -> None:
    # Given the same stories in one of the three shapes
    second = {"id": "PAYMENTS-001", "title": "Refund"}
    content = {"one": FULL, "list": [FULL, second], "wrapped": {"stories": [FULL, second]}}[shape]
    path = write(tmp_path, name, content)

    # When the file is read
    stories = stories_from_file(path)

    # Then every story comes back, in file order
    expected = [EXPECTED] if shape == "one" else [EXPECTED, Story(id="PAYMENTS-001", title="Refund")]
    assert stories == expected


def test_the_shipped_demo_stories_file_parses() -> None:
    # Given the sample stories `wave demo` uses
    path = Path(__file__).resolve().parent.parent / "domains" / "demo-stories.yaml"

    # When it is read
    stories = stories_from_file(path)

    # Then it holds stories for both sample domains, each id once
    assert {s.prefix for s in stories} == {"AUTH", "PAYMENTS"}
    assert len({s.id for s in stories}) == len(stories)


def test_exactly_the_maximum_number_of_stories_is_accepted(tmp_path: Path) -> None:
    # Given a file at the limit
    items = [{"id": f"AUTH-{n:04d}", "title": f"story {n}"} for n in range(MAX_STORIES_PER_FILE)]
    path = write(tmp_path, "many.json", items)

    # When it is read
    stories = stories_from_file(path)

    # Then all of them are accepted
    assert len(stories) == MAX_STORIES_PER_FILE


# Files: refusals -------------------------------------------------------------------------------
def test_each_problem_in_a_file_is_its_own_line_naming_file_story_index_and_field(tmp_path: Path) -> None:
    # Given a file whose first story is fine and the other three are not
    items = [
        {"id": "AUTH-001", "title": "fine"},
        {"id": "auth-2", "description": "no title"},
        {"id": "AUTH-003", "title": "t", "owner": "me"},
        {"title": "no id", "priority": "asap"},
    ]
    path = write(tmp_path, "stories.yaml", items)

    # When the file is read
    with pytest.raises(InvalidInputError) as excinfo:
        stories_from_file(path)

    # Then every problem is reported, each on its own line, and none names the good story
    assert problems_of(excinfo) == [
        f"{path}: story 2 (auth-2): id: malformed id: use PREFIX-NNN, e.g. AUTH-001",
        f"{path}: story 2 (auth-2): title: Field required",
        f"{path}: story 3 (AUTH-003): owner: unknown field "
        "(known: id, title, description, acceptance_criteria, priority, labels)",
        f"{path}: story 4: id: Field required",
        f"{path}: story 4: priority: Input should be 'low', 'normal', 'high' or 'urgent'",
    ]


def test_a_duplicate_id_in_a_file_is_refused_naming_both_story_indexes(tmp_path: Path) -> None:
    # Given two stories with the same id (one padded with spaces) among valid ones
    items = [
        {"id": "AUTH-001", "title": "a"},
        {"id": "AUTH-002", "title": "b"},
        {"id": " AUTH-001 ", "title": "c"},
    ]
    path = write(tmp_path, "dupes.yaml", items)

    # When the file is read
    with pytest.raises(InvalidInputError) as excinfo:
        stories_from_file(path)

    # Then the later one is named by index and field, pointing at the first
    assert problems_of(excinfo) == [
        f"{path}: story 3 (AUTH-001): id: already used by story 1; each id may appear once in a file"
    ]


def test_one_bad_story_among_many_good_ones_refuses_the_whole_file(tmp_path: Path) -> None:
    # Given 500 good stories and one with an oversized title in the middle
    items = [{"id": f"AUTH-{n:03d}", "title": "fine"} for n in range(500)]
    items[250]["title"] = "x" * 201
    path = write(tmp_path, "stories.json", items)

    # When the file is read
    with pytest.raises(InvalidInputError) as excinfo:
        stories_from_file(path)

    # Then nothing is returned and the only problem is story 251's title
    assert problems_of(excinfo) == [
        f"{path}: story 251 (AUTH-250): title: String should have at most 200 characters"
    ]


FILE_REFUSALS = [
    # (file name, raw content, a fragment of the single problem line)
    ("empty.yaml", "", "expected a story (a mapping with id and title) or a non-empty list of stories"),
    ("blank.yaml", "  \n# only a comment\n", "expected a story"),
    ("empty.json", "", "not valid YAML or JSON"),
    ("scalar.yaml", "just some text\n", "expected a story"),
    ("number.json", "42", "expected a story"),
    ("empty-list.yaml", "[]\n", "non-empty list"),
    ("empty-wrapped.yaml", "stories: []\n", "non-empty list"),
    ("unclosed.yaml", "id: [AUTH-001\ntitle: t\n", "not valid YAML or JSON"),
    ("tabs.yaml", "id: AUTH-001\n\ttitle: t\n", "not valid YAML or JSON"),
    ("broken.json", '{"id": "AUTH-001",', "not valid YAML or JSON"),
    ("python-tag.yaml", "!!python/object/apply:os.system ['true']\n", "not valid YAML or JSON"),
    ("bad-date.yaml", "id: AUTH-001\ntitle: t\ndescription: 2024-13-45\n", "not valid YAML or JSON"),
    ("huge-int.json", '{"id": "AUTH-001", "title": ' + "9" * 5000 + "}", "not valid YAML or JSON"),
    ("deep.json", "[" * 3000 + "]" * 3000, "not valid YAML or JSON"),
    ("deep.yaml", "[" * 700 + "]" * 700, "not valid YAML or JSON"),
]


@pytest.mark.parametrize(("name", "content", "fragment"), FILE_REFUSALS, ids=[r[0] for r in FILE_REFUSALS])
def test_a_file_that_is_not_stories_is_refused_with_one_line_naming_the_file(
    tmp_path: Path, name: str, content: str, fragment: str
) -> None:
    # Given a file that cannot hold stories
    path = write(tmp_path, name, content)

    # When it is read
    with pytest.raises(InvalidInputError) as excinfo:
        stories_from_file(path)

    # Then one line names the file and says what is wrong
    (line,) = problems_of(excinfo)
    assert line.startswith(f"{path}: ")
    assert fragment in line


def test_a_newline_in_an_id_or_a_field_name_cannot_split_a_problem_over_two_lines(tmp_path: Path) -> None:
    # Given a story whose id and an unknown key hold newlines (each problem must stay one line)
    path = write(tmp_path, "newlines.json", [{"id": "AUTH\n001", "title": "t", "own\ner": 1}])

    # When it is read
    with pytest.raises(InvalidInputError) as excinfo:
        stories_from_file(path)

    # Then there are exactly two lines, the newlines shown escaped
    assert problems_of(excinfo) == [
        f"{path}: story 1 ('AUTH\\n001'): id: malformed id: use PREFIX-NNN, e.g. AUTH-001",
        f"{path}: story 1 ('AUTH\\n001'): 'own\\ner': unknown field "
        "(known: id, title, description, acceptance_criteria, priority, labels)",
    ]


def test_a_list_item_that_is_not_a_mapping_is_refused_by_index(tmp_path: Path) -> None:
    # Given a list holding a story, a string and a list
    path = write(tmp_path, "mixed.yaml", [{"id": "AUTH-001", "title": "t"}, "AUTH-002", ["AUTH-003"]])

    # When it is read
    with pytest.raises(InvalidInputError) as excinfo:
        stories_from_file(path)

    # Then items 2 and 3 are named, one line each
    assert problems_of(excinfo) == [
        f"{path}: story 2: must be a mapping of fields (id, title, ...)",
        f"{path}: story 3: must be a mapping of fields (id, title, ...)",
    ]


def test_more_stories_than_the_limit_are_refused_before_any_is_checked(tmp_path: Path) -> None:
    # Given one story too many, all of them malformed
    path = write(tmp_path, "many.json", [{"id": "bad"}] * (MAX_STORIES_PER_FILE + 1))

    # When the file is read
    with pytest.raises(InvalidInputError) as excinfo:
        stories_from_file(path)

    # Then the single problem is the count (not a thousand lines about each story)
    assert problems_of(excinfo) == [f"{path}: 1001 stories; at most {MAX_STORIES_PER_FILE} per file"]


def test_a_file_over_the_size_limit_is_refused_without_being_parsed(tmp_path: Path) -> None:
    # Given a file one byte over the limit
    path = tmp_path / "big.yaml"
    path.write_bytes(b"#" * (MAX_FILE_BYTES + 1))

    # When it is read
    with pytest.raises(InvalidInputError) as excinfo:
        stories_from_file(path)

    # Then the problem is its size
    assert problems_of(excinfo) == [
        f"{path}: larger than {MAX_FILE_BYTES} bytes; split it into several files"
    ]


@pytest.mark.parametrize("name", ["missing.yaml", "a-directory"])
def test_a_missing_story_file_is_not_found(tmp_path: Path, name: str) -> None:
    # Given a path that is no file
    (tmp_path / "a-directory").mkdir()
    path = tmp_path / name

    # When it is read
    with pytest.raises(NotFoundError) as excinfo:
        stories_from_file(path)

    # Then the error names the path
    assert str(excinfo.value) == f"{path}: no such story file"


# Properties ------------------------------------------------------------------------------------
ids = st.from_regex(r"\A[A-Z][A-Z0-9]{0,9}-[0-9]{3,6}\Z")
lines = st.text(min_size=1, max_size=60)
labels = st.from_regex(r"\A[A-Za-z0-9:._=-]{1,20}\Z")


@st.composite
def valid_stories(draw: st.DrawFn) -> Story:
    fields = {
        "id": draw(ids),
        "title": draw(st.text(min_size=1, max_size=200)),
        "description": draw(st.text(max_size=300)),
        "acceptance_criteria": draw(st.lists(lines, max_size=5)),
        "priority": draw(st.sampled_from(Priority)),
        "labels": draw(st.lists(labels, max_size=4)),
    }
    try:
        return Story.model_validate(fields)
    except ValidationError:
        assume(False)
        raise


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(stories=st.lists(valid_stories(), min_size=1, max_size=4, unique_by=lambda s: s.id))
def test_any_valid_stories_round_trip_through_a_yaml_and_a_json_file_unchanged(
    tmp_path: Path, stories: list[Story]
) -> None:
    # Given valid stories written as a YAML file and as a JSON file
    dumped = [s.model_dump(mode="json") for s in stories]
    yaml_path = write(tmp_path, "stories.yaml", {"stories": dumped})
    json_path = write(tmp_path, "stories.json", dumped)

    # When both files are read back
    from_yaml, from_json = stories_from_file(yaml_path), stories_from_file(json_path)

    # Then each gives back exactly the stories written
    assert from_yaml == stories
    assert from_json == stories


yaml_fragments = st.sampled_from(
    [
        "id: ",
        "title: ",
        "stories:",
        "- ",
        "  ",
        "\n",
        "AUTH-001",
        "[",
        "]",
        "{",
        "}",
        ",",
        ":",
        "&a ",
        "*a",
        "!!str ",
        "!!binary ",
        "!!python/name:os.system",
        "2024-13-45",
        "9" * 4400,
        "? ",
        "|",
        ">",
        '"',
        "'",
        "\t",
        "\x00",
        "\ufeff",
        "%YAML 1.1\n",
        "---\n",
        "...\n",
        "null",
        "~",
        "1e999",
        "labels: [x]",
        "#",
    ]
)
FIELDS = ("id", "title", "description", "acceptance_criteria", "priority", "labels")
junk_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=10),
    lambda inner: (
        st.lists(inner, max_size=3)
        | st.dictionaries(st.sampled_from([*FIELDS, "stories"]) | st.text(max_size=3), inner, max_size=3)
    ),
    max_leaves=8,
)
junk_fields = st.fixed_dictionaries(
    {},
    optional={
        "id": ids | junk_values,
        "title": st.text(max_size=30) | junk_values,
        **dict.fromkeys(FIELDS[2:], junk_values),
        "priority": st.sampled_from(Priority) | junk_values,
        "labels": st.lists(labels, max_size=3) | junk_values,
        "": junk_values,
        "owner\n": junk_values,
    },
)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    content=st.one_of(
        st.binary(max_size=200),
        st.lists(yaml_fragments, max_size=30).map(lambda parts: "".join(parts).encode()),
        junk_values.map(lambda v: json.dumps(v).encode()),
        junk_values.map(lambda v: yaml.safe_dump(v).encode()),
        st.lists(junk_fields, max_size=3).map(lambda v: json.dumps(v).encode()),
    ),
    suffix=st.sampled_from([".yaml", ".json", ".yml", ".txt"]),
)
def test_any_junk_file_either_parses_or_is_refused_as_invalid_input(
    tmp_path: Path, content: bytes, suffix: str
) -> None:
    # Given arbitrary bytes in a story file
    path = tmp_path / f"junk{suffix}"
    path.write_bytes(content)

    # When it is read
    try:
        stories = stories_from_file(path)
    except InvalidInputError as exc:
        # Then a refusal is one or more lines, each naming the file
        assert all(line.startswith(f"{path}: ") for line in str(exc).splitlines())
        return

    # Then anything accepted is a non-empty list of valid stories
    assert stories
    assert all(isinstance(s, Story) for s in stories)


@settings(max_examples=150, deadline=None)
@given(fields=junk_fields)
def test_any_junk_cli_fields_either_build_a_story_or_are_refused_as_invalid_input(
    fields: dict[str, Any],
) -> None:
    # Given arbitrary field values
    # When a story is built from them
    try:
        story = story_from_fields(fields)
    except InvalidInputError as exc:
        # Then a refusal is at least one line
        assert str(exc).strip()
        return

    # Then a built story is exactly what the model validates
    assert story == Story.model_validate(fields)
