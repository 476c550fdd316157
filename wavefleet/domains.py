"""Business domains: one folder each under the domains dir, `domain.toml` plus role prompts."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path
from typing import Annotated, Any

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    ValidationError,
    ValidationInfo,
    field_validator,
)

from .config import MAX_LIMIT_TOKENS, MAX_LIMIT_USD, AnthropicSettings, XaiSettings
from .errors import ConfigError, InvalidInputError
from .lifecycle import Role

DOMAIN_FILE = "domain.toml"
# [0-9], not \d: \d also matches non-ASCII digits, which RQ refuses in the job ids built from story ids
# Where a provider's key goes: settings a domain file may never override.
OPERATOR_ONLY = frozenset({"base_url", "api_host", "use_insecure_channel"})
STORY_ID = re.compile(r"^(?P<prefix>[A-Z][A-Z0-9]*)-(?P<number>[0-9]{3,})$")


class Team(BaseModel):
    """How many workers of each role the domain runs: the default is the 7-agent team."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    pm: int = Field(default=1, ge=0, le=50)
    cto: int = Field(default=1, ge=0, le=50)
    fe: int = Field(default=2, ge=0, le=50)
    be: int = Field(default=2, ge=0, le=50)
    qa: int = Field(default=1, ge=0, le=50)

    def size(self, role: Role) -> int:
        return int(getattr(self, role.value))


class Budgets(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    story_usd: float = Field(default=5.0, gt=0, le=MAX_LIMIT_USD)  # also refuses inf (TOML has it)
    daily_usd: float = Field(default=100.0, gt=0, le=MAX_LIMIT_USD)
    story_tokens: int = Field(default=2_000_000, gt=0, le=MAX_LIMIT_TOKENS)
    daily_tokens: int = Field(default=50_000_000, gt=0, le=MAX_LIMIT_TOKENS)


class DomainModels(BaseModel):
    """`[models]`: this domain's LLM overrides: routes (task kind -> provider) and any `[anthropic]` or
    `[xai]` setting but the key and the endpoint, e.g. ``anthropic = { model = "claude-haiku-4-5" }``."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    # Task kind -> a provider's name. Only the name's form is checked here (the providers are
    # registered in the LLM layer, above this module): a worker refuses an unknown one at start.
    routes: dict[str, Annotated[str, StringConstraints(pattern=r"^[a-z][a-z0-9_-]{0,31}$")]] = {}
    anthropic: dict[str, Any] = {}
    xai: dict[str, Any] = {}

    @field_validator("anthropic", "xai")
    @classmethod
    def _known_settings(cls, values: dict[str, Any], info: ValidationInfo) -> dict[str, Any]:
        if "api_key" in values:
            raise ValueError("API keys belong in the environment (WAVE_*__API_KEY), not in domain.toml")
        for name in sorted(OPERATOR_ONLY & values.keys()):
            # A domain file may come with a repository from elsewhere: where the fleet's keys are sent
            # (and whether over TLS) is the operator's choice alone.
            variable = f"WAVE_{str(info.field_name).upper()}__{name.upper()}"
            raise ValueError(
                f"{name}: endpoints and channels are the operator's ({variable}), never a domain file's"
            )
        section = AnthropicSettings if info.field_name == "anthropic" else XaiSettings
        section.model_validate(values)  # unknown names and bad values fail at load, naming the field
        return values


class DomainSandbox(BaseModel):
    """`[sandbox]`: what this domain's commands may do inside the sandbox (no network by default)."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    network: bool = False


# A remote's name as `git remote` accepts it, never an option (a leading `-`) nor a URL.
REMOTE_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9._-]{0,99}$")


class DomainDelivery(BaseModel):
    """`[delivery]`: where a story's reviewed branch goes on GO, as `wave/<ID>`.

    `remote` names a remote of the fleet's clone (its `origin` is the domain's repository); `""` pushes
    nowhere (the branch stays in the clone). Absent means `origin`: a user who points `repo` at their
    repository expects the result there. A folder the fleet seeded a repository from (the samples)
    is never pushed to: the clone's `origin` is then the seed under the data dir, read by no one."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    remote: str | None = None

    @field_validator("remote")
    @classmethod
    def _remote_name(cls, remote: str | None) -> str | None:
        if remote and not REMOTE_NAME.fullmatch(remote):
            raise ValueError(
                f"{remote[:60]!r} is not a remote name: name a remote of the fleet's clone, "
                'e.g. "origin", or "" to keep the branch in the clone'
            )
        return remote


class Domain(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(pattern=r"^[a-z][a-z0-9_]*$")
    prefix: str = Field(pattern=r"^[A-Z][A-Z0-9]*$")
    description: str = ""
    repo: Path = Field(description="the target repository: a path, relative to the domain folder")
    base_branch: str = Field(default="main", pattern=r"^[A-Za-z0-9._/-]+$")
    test_command: tuple[str, ...] = ("{python}", "-m", "pytest", "-q", "-p", "no:cacheprovider")
    team: Team = Team()
    budgets: Budgets = Budgets()
    models: DomainModels = DomainModels()
    sandbox: DomainSandbox = DomainSandbox()
    delivery: DomainDelivery = DomainDelivery()
    folder: Path

    @field_validator("test_command")
    @classmethod
    def _non_empty(cls, command: tuple[str, ...]) -> tuple[str, ...]:
        if not command:
            raise ValueError("must name a program to run")
        return command

    def delivery_remote(self) -> str:
        """The remote a GO'd story is pushed to; "" for none. A folder the fleet seeded a repository
        from is never pushed to, whatever this says (workers/delivery.py)."""
        return "origin" if self.delivery.remote is None else self.delivery.remote

    def is_git_repo(self) -> bool:
        """A working repository, or a bare one (as a server keeps it): git's own test of a git dir."""
        if (self.repo / ".git").exists():
            return True
        return (
            (self.repo / "HEAD").is_file()
            and (self.repo / "objects").is_dir()
            and (self.repo / "refs").is_dir()
        )

    def resolved_test_command(self, python: str) -> list[str]:
        """The test command with `{python}` replaced by the sandbox's Python (`Sandbox.python`: the
        worker's own locally, the image's `python3` in a container)."""
        return [part.replace("{python}", python) for part in self.test_command]


class Domains:
    """Every domain of the fleet, found by name or by a story id's prefix."""

    def __init__(self, domains: list[Domain]) -> None:
        self._by_name = {d.name: d for d in domains}
        self._by_prefix = {d.prefix: d for d in domains}

    def __iter__(self):  # type: ignore[no-untyped-def]
        return iter(self._by_name.values())

    def __len__(self) -> int:
        return len(self._by_name)

    def names(self) -> list[str]:
        return sorted(self._by_name)

    def get(self, name: str) -> Domain:
        try:
            return self._by_name[name]
        except KeyError:
            raise InvalidInputError(
                f"unknown domain {name!r}: known domains are {', '.join(self.names())}"
            ) from None

    def for_story(self, story_id: str) -> Domain:
        match = STORY_ID.fullmatch(story_id)  # `$` alone would accept a trailing newline
        if not match:
            raise InvalidInputError(f"story id {story_id!r} is malformed: use PREFIX-NNN, e.g. AUTH-001")
        prefix = match["prefix"]
        if prefix not in self._by_prefix:
            known = ", ".join(sorted(self._by_prefix))
            raise InvalidInputError(f"story {story_id}: no domain has prefix {prefix!r} (known: {known})")
        return self._by_prefix[prefix]


def load_domains(domains_dir: Path) -> Domains:
    """Load every `<dir>/<name>/domain.toml`; a malformed one raises ConfigError naming file and field."""
    if not domains_dir.is_dir():
        raise ConfigError(f"{domains_dir}: domains directory not found (set WAVE_DOMAINS_DIR)")
    files = sorted(domains_dir.glob(f"*/{DOMAIN_FILE}"))
    if not files:
        raise ConfigError(f"{domains_dir}: no */{DOMAIN_FILE} found (set WAVE_DOMAINS_DIR)")
    domains = [load_domain(path) for path in files]
    _refuse_clashes(domains)
    return Domains(domains)


def load_domain(path: Path) -> Domain:
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(f"{path}: not a readable TOML file ({exc})") from None
    raw.setdefault("name", path.parent.name)
    if "folder" in raw:  # not a setting: it is where the file is, and would be silently replaced
        raise ConfigError(f"{path}: folder: unknown key (the domain's folder is the one holding the file)")
    raw["folder"] = path.parent
    try:
        domain = Domain.model_validate(raw)
    except ValidationError as exc:
        err = exc.errors()[0]
        field = ".".join(str(p) for p in err["loc"]) or "(file)"
        raise ConfigError(f"{path}: {field}: {err['msg']}") from None
    if not domain.repo.is_absolute():
        domain = domain.model_copy(update={"repo": (path.parent / domain.repo).resolve()})
    return domain


def _refuse_clashes(domains: list[Domain]) -> None:
    seen: dict[str, Domain] = {}
    names: dict[str, Domain] = {}
    for domain in domains:
        # an explicit `name =` can repeat another folder's name; one of them would silently vanish
        twin = names.setdefault(domain.name, domain)
        if twin is not domain:
            raise ConfigError(
                f"{domain.folder / DOMAIN_FILE}: name: {domain.name!r} is already used by the domain in "
                f"{twin.folder}; each domain needs its own name"
            )
        other = seen.get(domain.prefix)
        if other is not None:
            raise ConfigError(
                f"{domain.folder / DOMAIN_FILE}: prefix: {domain.prefix!r} is already used by "
                f"domain {other.name!r}; each domain needs its own prefix"
            )
        seen[domain.prefix] = domain
