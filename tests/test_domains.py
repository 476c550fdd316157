"""Domains: loading `domains/*/domain.toml`, refusing malformed ones, and routing stories by prefix."""

from __future__ import annotations

from pathlib import Path

import pytest

from wavefleet.domains import DOMAIN_FILE, Domains, Team, load_domain, load_domains
from wavefleet.errors import ConfigError, InvalidInputError
from wavefleet.lifecycle import Role
from workers.agent.prompts import load_prompt

MINIMAL = 'prefix = "BILLING"\nrepo = "sample"\n'


def domain_file(root: Path, name: str, text: str) -> Path:
    """Write `<root>/<name>/domain.toml` (and its sample repo folder)."""
    (root / name / "sample").mkdir(parents=True, exist_ok=True)
    path = root / name / DOMAIN_FILE
    path.write_text(text, encoding="utf-8")
    return path


# The shipped domains -----------------------------------------------------------------------------
@pytest.mark.parametrize(("name", "prefix"), [("auth", "AUTH"), ("payments", "PAYMENTS")])
def test_a_shipped_domain_loads_with_its_prefix_the_seven_agent_team_and_its_sample_repo(
    domains_dir: Path, name: str, prefix: str
) -> None:
    # Given the shipped domains (a private copy)
    # When they are loaded
    domain = load_domains(domains_dir).get(name)

    # Then the domain has its prefix, the default team of 7 and a repo that is an existing folder
    assert domain.prefix == prefix
    assert {role: domain.team.size(role) for role in Role} == {
        Role.PM: 1,
        Role.CTO: 1,
        Role.FE: 2,
        Role.BE: 2,
        Role.QA: 1,
    }
    assert domain.repo == (domains_dir / name / "sample").resolve()
    assert domain.repo.is_absolute() and domain.repo.is_dir()
    assert domain.folder == domains_dir / name


def test_every_shipped_domain_has_a_prompt_for_every_role_that_the_strict_loader_reads(
    domains_dir: Path,
) -> None:
    # Given every shipped domain (a private copy)
    # When each role's prompt is read the way an LLM worker reads it (no links, UTF-8, not empty)
    prompts = {(d.name, role): load_prompt(d, role) for d in load_domains(domains_dir) for role in Role}

    # Then each is there and names its role first (the scripted test models read the role from it)
    assert prompts
    for (name, role), text in prompts.items():
        assert text.startswith(f"# Role: {role.value}\n"), (name, role)


def test_loading_finds_exactly_the_shipped_domains_sorted_by_name(domains_dir: Path) -> None:
    # Given the shipped domains
    # When they are loaded
    domains = load_domains(domains_dir)

    # Then both are there, once each
    assert domains.names() == ["auth", "payments"]
    assert len(domains) == 2
    assert [d.name for d in domains] == ["auth", "payments"]


def test_a_minimal_domain_file_gets_the_default_team_budgets_branch_and_test_command(tmp_path: Path) -> None:
    # Given a domain file with only its prefix and repo
    path = domain_file(tmp_path, "billing", MINIMAL)

    # When it is loaded
    domain = load_domain(path)

    # Then the name comes from the folder and everything else from the defaults
    assert domain.name == "billing"
    assert domain.team == Team(pm=1, cto=1, fe=2, be=2, qa=1)
    assert domain.base_branch == "main"
    assert domain.resolved_test_command("python3") == [
        "python3",
        "-m",
        "pytest",
        "-q",
        "-p",
        "no:cacheprovider",
    ]
    assert domain.repo == (tmp_path / "billing" / "sample").resolve()


def test_an_absolute_repo_path_is_kept_as_it_is(tmp_path: Path) -> None:
    # Given a domain whose repo is an absolute path elsewhere
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    path = domain_file(tmp_path / "domains", "billing", f'prefix = "BILLING"\nrepo = "{elsewhere}"\n')

    # When it is loaded
    domain = load_domain(path)

    # Then the repo is that path
    assert domain.repo == elsewhere


# Malformed files ---------------------------------------------------------------------------------
MALFORMED = [
    # (file text, the field the message names, a fragment of the message)
    ('prefix = "BILLING\nrepo = "sample"\n', None, "not a readable TOML file"),
    ('prefix = "BILLING"\nrepo = "sample"\ncolour = "red"\n', "colour", "Extra inputs are not permitted"),
    (MINIMAL + "[team]\nfe = -1\n", "team.fe", "greater than or equal to 0"),
    (MINIMAL + "[team]\nqa = 51\n", "team.qa", "less than or equal to 50"),
    (MINIMAL + "[team]\ndesigner = 1\n", "team.designer", "Extra inputs are not permitted"),
    (MINIMAL + '[team]\npm = "one"\n', "team.pm", "valid integer"),
    (MINIMAL + "[budgets]\nstory_usd = 0\n", "budgets.story_usd", "greater than 0"),
    ('prefix = "billing"\nrepo = "sample"\n', "prefix", "should match pattern"),
    ('prefix = "BILL-ING"\nrepo = "sample"\n', "prefix", "should match pattern"),
    ('prefix = "1BILLING"\nrepo = "sample"\n', "prefix", "should match pattern"),
    ('repo = "sample"\n', "prefix", "Field required"),
    ('prefix = "BILLING"\n', "repo", "Field required"),
    (MINIMAL + "test_command = []\n", "test_command", "must name a program to run"),
    (MINIMAL + 'base_branch = "main; rm -rf"\n', "base_branch", "should match pattern"),
    (MINIMAL + 'name = "Billing"\n', "name", "should match pattern"),
    (MINIMAL + 'folder = "/etc"\n', "folder", "unknown key"),
]


@pytest.mark.parametrize(
    ("text", "field", "fragment"),
    MALFORMED,
    ids=[f"{i}-{row[1] or 'toml'}" for i, row in enumerate(MALFORMED)],
)
def test_a_malformed_domain_file_is_refused_naming_the_file_and_the_field(
    tmp_path: Path, text: str, field: str | None, fragment: str
) -> None:
    # Given a domain file with one problem, among good domains
    domain_file(tmp_path, "auth", 'prefix = "AUTH"\nrepo = "sample"\n')
    path = domain_file(tmp_path, "billing", text)

    # When the domains are loaded
    with pytest.raises(ConfigError) as excinfo:
        load_domains(tmp_path)

    # Then one line names the file, the field and the problem
    message = str(excinfo.value)
    assert "\n" not in message
    assert message.startswith(f"{path}: {field}: " if field else f"{path}: ")
    assert fragment in message


def test_a_domain_file_that_is_not_utf8_is_refused_naming_the_file(tmp_path: Path) -> None:
    # Given a domain file in Latin-1
    path = domain_file(tmp_path, "billing", "")
    path.write_bytes('prefix = "BILLING"\ndescription = "Facturación"\n'.encode("latin-1"))

    # When it is loaded
    with pytest.raises(ConfigError) as excinfo:
        load_domains(tmp_path)

    # Then the file is named
    assert str(excinfo.value).startswith(f"{path}: not a readable TOML file")


def test_two_domains_with_the_same_prefix_are_refused_naming_the_second_file_and_the_first_domain(
    domains_dir: Path,
) -> None:
    # Given a third domain reusing the auth prefix
    path = domain_file(domains_dir, "identity", 'prefix = "AUTH"\nrepo = "sample"\n')

    # When the domains are loaded
    with pytest.raises(ConfigError) as excinfo:
        load_domains(domains_dir)

    # Then the clash is named
    assert str(excinfo.value) == (
        f"{path}: prefix: 'AUTH' is already used by domain 'auth'; each domain needs its own prefix"
    )


def test_two_domains_with_the_same_explicit_name_are_refused_rather_than_one_silently_dropped(
    domains_dir: Path,
) -> None:
    # Given a second folder that names itself "auth" (with its own prefix)
    path = domain_file(domains_dir, "zz-identity", 'name = "auth"\nprefix = "IDENTITY"\nrepo = "sample"\n')

    # When the domains are loaded
    with pytest.raises(ConfigError) as excinfo:
        load_domains(domains_dir)

    # Then the clash is named instead of one domain vanishing
    assert str(excinfo.value).startswith(f"{path}: name: 'auth' is already used by the domain in ")


@pytest.mark.parametrize(
    ("setup", "fragment"),
    [
        ("missing", "domains directory not found (set WAVE_DOMAINS_DIR)"),
        ("empty", f"no */{DOMAIN_FILE} found (set WAVE_DOMAINS_DIR)"),
    ],
)
def test_a_missing_or_empty_domains_directory_is_refused(tmp_path: Path, setup: str, fragment: str) -> None:
    # Given a domains directory that does not exist, or holds no domain file
    directory = tmp_path / "domains"
    if setup == "empty":
        (directory / "notes").mkdir(parents=True)

    # When the domains are loaded
    with pytest.raises(ConfigError) as excinfo:
        load_domains(directory)

    # Then the directory is named with the setting to fix
    assert str(excinfo.value) == f"{directory}: {fragment}"


# Routing stories ---------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("story_id", "domain"),
    [
        ("AUTH-001", "auth"),
        ("AUTH-99999", "auth"),
        ("PAYMENTS-001", "payments"),
        ("PAY-001", "pay"),
        ("PAYMENTS2-001", "payments2"),
    ],
)
def test_a_story_goes_to_the_domain_whose_prefix_is_exactly_its_own(
    tmp_path: Path, story_id: str, domain: str
) -> None:
    # Given domains whose prefixes start alike
    for name, prefix in (
        ("auth", "AUTH"),
        ("payments", "PAYMENTS"),
        ("pay", "PAY"),
        ("payments2", "PAYMENTS2"),
    ):
        domain_file(tmp_path, name, f'prefix = "{prefix}"\nrepo = "sample"\n')

    # When a story id is routed
    found = load_domains(tmp_path).for_story(story_id)

    # Then the whole prefix decides, never a leading part of it
    assert found.name == domain


@pytest.mark.parametrize(
    "story_id",
    [
        "auth-001",
        "AUTH-01",
        "AUTH001",
        "AUTH-",
        "-001",
        "",
        "AUTH-001 ",
        "AUTH-001\n",
        "AUTH-0a1",
        "AUTH-\u0661\u0662\u0663",
        "AU TH-001",
        "AUTH--001",
    ],
)
def test_a_malformed_story_id_is_refused_when_routing(domains_dir: Path, story_id: str) -> None:
    # Given the shipped domains
    domains = load_domains(domains_dir)

    # When a malformed id is routed
    with pytest.raises(InvalidInputError) as excinfo:
        domains.for_story(story_id)

    # Then the id is quoted and the right shape shown
    assert str(excinfo.value) == f"story id {story_id!r} is malformed: use PREFIX-NNN, e.g. AUTH-001"


def test_a_story_whose_prefix_no_domain_has_is_refused_listing_the_known_prefixes(domains_dir: Path) -> None:
    # Given the shipped domains
    domains = load_domains(domains_dir)

    # When a story with another prefix is routed
    with pytest.raises(InvalidInputError) as excinfo:
        domains.for_story("BILLING-001")

    # Then the message names the prefix and the known ones
    assert str(excinfo.value) == "story BILLING-001: no domain has prefix 'BILLING' (known: AUTH, PAYMENTS)"


def test_an_unknown_domain_name_is_refused_listing_the_known_names(domains_dir: Path) -> None:
    # Given the shipped domains
    domains: Domains = load_domains(domains_dir)

    # When an unknown domain is asked for
    with pytest.raises(InvalidInputError) as excinfo:
        domains.get("billing")

    # Then the known domains are listed
    assert str(excinfo.value) == "unknown domain 'billing': known domains are auth, payments"
