"""The one settings object: read once at process start from ``WAVE_*`` variables and ``.env``."""

from __future__ import annotations

import ipaddress
import json
import os
import re
from collections.abc import Iterator
from functools import cached_property
from pathlib import Path
from typing import Any, Literal, get_origin
from urllib.parse import urlsplit

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic_settings import BaseSettings, SettingsConfigDict, SettingsError
from redis import ConnectionPool

from . import acl
from .errors import ConfigError
from .keys import DEFAULT_PREFIX, Keys
from .strictdata import load_json

ENV_PREFIX = "WAVE_"
HALT_FILE_NAME = "EMERGENCY-STOP"
NESTED = "__"


# A spending limit above these is no limit; beyond them nano-USD and token sums overflow (1e308 USD is inf).
MAX_LIMIT_USD = 1_000_000.0
MAX_LIMIT_TOKENS = 10**12


class _Section(BaseModel):
    # inf passes gt=0 and le-less bounds: an infinite timeout, price or limit is never meant.
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    @field_validator("*", mode="before")
    @classmethod
    def _empty_secret_is_none(cls, value: Any, info: ValidationInfo) -> Any:
        # `WAVE_ANTHROPIC__API_KEY=` (set but empty, as compose passes an unset variable) means no key.
        field = cls.model_fields.get(info.field_name or "")
        if value == "" and field is not None and "SecretStr" in str(field.annotation):
            return None
        return value


class RedisSettings(_Section):
    url: str = "redis://127.0.0.1:6379/0"
    username: str | None = None  # an ACL user (worker, supervisor, ...); None: Redis's `default` user
    password: SecretStr | None = None
    socket_timeout_s: float = Field(default=10.0, gt=0)
    key_prefix: str = Field(default=DEFAULT_PREFIX, pattern=r"^[a-z][a-z0-9_-]*$")

    @field_validator("url")
    @classmethod
    def _redis_scheme(cls, url: str) -> str:
        if not url.startswith(("redis://", "rediss://", "unix://")):
            raise ValueError("must start with redis://, rediss:// or unix://")
        _refuse_unreadable_redis_url(url)
        return url


def _refuse_unreadable_redis_url(url: str) -> None:
    """Build (never connect) the client redis-py would build, so a URL it cannot read is refused here
    in one line instead of a traceback later; redis-py's own message is not shown, as it may quote a
    piece of a password (an unencoded "/" makes the password the port)."""
    try:
        ConnectionPool.from_url(url).make_connection()
    except (TypeError, ValueError):
        raise ValueError(
            "cannot be read as a Redis URL (an unknown option, a bad port or number, or an "
            "unencoded @ : / ? # & in a password: percent-encode them, or use WAVE_REDIS__PASSWORD)"
        ) from None


class EmbeddedRedisSettings(_Section):
    """The redis-server `wave up` and `wave demo` start when no Redis is given."""

    port: int = Field(default=6399, ge=1, le=65535)
    appendfsync: Literal["always", "everysec", "no"] = "everysec"
    password: SecretStr | None = None  # the admin user's; the roles' are generated (all kept 0600)

    @field_validator("password")
    @classmethod
    def _one_token(cls, password: SecretStr | None) -> SecretStr | None:
        if password is not None and (problem := acl.password_problem(password.get_secret_value())):
            raise ValueError(problem)
        return password


class ContainerSandboxSettings(_Section):
    """`WAVE_SANDBOX=container`: each stage's commands run in a hardened container of its own, made
    by the `wave sandbox` runner (the one component with Docker access; workers ask it over Redis)."""

    image: str = Field(default="wave-sandbox:latest", pattern=r"^[a-z0-9][a-z0-9._/:@-]{0,254}$")
    memory_mb: int = Field(default=1024, ge=16, le=1_048_576)  # per stage container
    cpus: float = Field(default=1.0, gt=0, le=256)
    pids: int = Field(default=256, ge=16, le=1_000_000)
    tmp_mb: int = Field(default=256, ge=1, le=65_536)  # the tmpfs /tmp
    # Who runs the commands when the worker is root (a worktree owned by uid 0): never root itself.
    fallback_uid: int = Field(default=10001, ge=1, le=2**31 - 1)
    # The runner's side. docker_host: the Docker API (compose: the sandbox proxy); None: DOCKER_HOST
    # or the local socket. data_volume: the named volume holding the workers' data dir, mounted
    # at data_mount in their containers (compose); None: worktree paths are host paths (`wave up`).
    docker_host: str | None = None
    data_volume: str | None = None
    data_mount: Path = Path("/data")
    concurrency: int = Field(default=32, ge=1, le=1024)  # requests served at once
    # Stage containers alive at once: beyond it a new stage's first command is refused (the worker
    # retries the stage later), so a worker faking running stages cannot fill the machine.
    max_containers: int = Field(default=64, ge=1, le=4096)
    sweep_interval_s: float = Field(default=10.0, gt=0, le=3600)
    # A worker waits for a reply this long past the command's own timeout (a container start, a
    # busy engine) before it takes the runner to be down: SandboxUnavailableError, retried later.
    reply_grace_s: float = Field(default=30.0, gt=0, le=3600)


class MetricsSettings(_Section):
    """The supervisor's /metrics, /healthz and /readyz (wavefleet/health.py). Port 0: off (the default:
    two supervisors on one host, a leader and a standby, would otherwise fight over one port)."""

    host: str = "127.0.0.1"  # 0.0.0.0 only where the network around it is trusted (compose)
    port: int = Field(default=0, ge=0, le=65535)


class MonitorSettings(_Section):
    """`wave monitor` (wavefleet/monitor.py): how often it looks, and when each detector speaks."""

    interval_s: float = Field(default=15.0, gt=0, le=3600)
    halt_age_s: float = Field(default=1800.0, gt=0)  # halted longer than this: halt_old
    qa_recycles: int = Field(default=2, ge=1, le=20)  # a story QA sent back this many times
    # A worker seen alive whose heartbeat stopped stays a finding this long, then is forgotten:
    # the workers set keeps every name ever registered, and a stopped fleet's are history.
    worker_forget_s: float = Field(default=3600.0, gt=0)
    failures_window_s: float = Field(default=900.0, gt=0)  # stories failed in this window...
    failures_threshold: int = Field(default=3, ge=1)  # ...at least this many, in one domain
    # No burn-rate projection before this much of the UTC day has passed (one early call is no rate).
    burn_min_elapsed_s: float = Field(default=3600.0, ge=0, lt=86_400)


class WorkerSettings(_Section):
    heartbeat_interval_s: float = Field(default=1.0, gt=0)
    heartbeat_ttl_s: float = Field(default=5.0, gt=0)
    job_timeout_s: int = Field(default=1800, gt=0)
    command_timeout_s: float = Field(default=300.0, gt=0)
    # How much lower than the worker's halt listener and heartbeat its job loop and stages run
    # (Linux nice steps, per thread): on a saturated machine the stop and liveness signals win.
    work_niceness: int = Field(default=10, ge=0, le=19)


class SupervisorSettings(_Section):
    block_ms: int = Field(default=500, ge=1)
    recovery_interval_s: float = Field(default=1.0, gt=0)
    audit_interval_s: float = Field(default=30.0, gt=0)
    lock_ttl_s: float = Field(default=10.0, gt=0)


class PipelineSettings(_Section):
    max_rounds: int = Field(default=3, ge=1, le=20)
    # A stage that fails for a reason not the story's (a provider outage past the fallback, a 429
    # storm, a sandbox that cannot start) is run again after a backoff, this many times per stage
    # run, before the story fails with the last reason; the backoff doubles from the first delay up
    # to the cap, with jitter, and is at least what the provider asked for (Retry-After).
    transient_retries: int = Field(default=5, ge=0, le=100)
    transient_backoff_s: float = Field(default=5.0, ge=0, le=3600)
    transient_backoff_max_s: float = Field(default=300.0, ge=0, le=86400)


class LoopSettings(_Section):
    """The agents' tool loop: its guards and its tools' caps (see workers/agent/loop.py)."""

    max_iterations: int = Field(default=40, ge=1, le=1000)  # model calls per stage
    wall_clock_s: float = Field(default=1200.0, gt=0, le=86_400)  # per stage
    repeats_to_stop: int = Field(default=3, ge=2, le=20)  # same call and result, or same error
    run_timeout_s: float = Field(default=300.0, gt=0, le=86_400)  # one `run` command
    run_output_bytes: int = Field(default=64_000, ge=1_000, le=10_000_000)  # its output's end shown
    read_window_bytes: int = Field(default=64_000, ge=1_000, le=10_000_000)  # a read of a larger file


def is_loopback(host: str) -> bool:
    """Whether `host` (a name or an IP address, IPv6 with or without brackets) is this machine."""
    host = host.removeprefix("[").removesuffix("]")
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback  # 127.0.0.0/8 and ::1
    except ValueError:
        return False


def _plain_host(authority: str) -> str:
    """The host of `host:port` or `[v6]:port` (the xAI SDK's api_host form)."""
    if authority.startswith("["):
        return authority[1 : authority.find("]")] if "]" in authority else authority
    return authority.rsplit(":", 1)[0] if authority.count(":") == 1 else authority


class AnthropicSettings(_Section):
    """Claude through the `anthropic` SDK; prices are USD per million tokens (check your contract)."""

    api_key: SecretStr | None = None
    base_url: str = "https://api.anthropic.com"
    model: str = "claude-sonnet-4-6"
    price_input_per_mtok_usd: float = Field(default=3.0, ge=0)
    price_output_per_mtok_usd: float = Field(default=15.0, ge=0)
    price_cache_read_per_mtok_usd: float = Field(default=0.30, ge=0)
    price_cache_write_per_mtok_usd: float = Field(default=3.75, ge=0)
    prompt_caching: bool = True  # cache_control on the system prompt and the tools
    timeout_s: float = Field(default=120.0, gt=0)
    max_retries: int = Field(default=2, ge=0, le=10)

    @field_validator("base_url")
    @classmethod
    def _key_goes_over_tls(cls, url: str) -> str:
        # The API key travels in every request's headers: in clear text only to this machine.
        parts = urlsplit(url)
        if parts.scheme not in ("https", "http") or not parts.hostname:
            raise ValueError(f"{url!r} needs a scheme and a host: https://HOST (http:// only for loopback)")
        if parts.username is not None or parts.password is not None:
            raise ValueError("must not hold a user or password (the API key is sent in headers)")
        if parts.scheme == "http" and not is_loopback(parts.hostname):
            raise ValueError(
                f"{url!r} would send the API key in clear text: use https (http:// only for a "
                f"loopback host: 127.0.0.1, ::1, localhost)"
            )
        return url


class XaiSettings(_Section):
    """Grok through `xai-sdk` (gRPC); `use_insecure_channel` only for a local or in-cluster gateway."""

    api_key: SecretStr | None = None
    api_host: str = "api.x.ai"
    model: str = "grok-4"
    price_input_per_mtok_usd: float = Field(default=3.0, ge=0)
    price_output_per_mtok_usd: float = Field(default=15.0, ge=0)
    price_cache_read_per_mtok_usd: float = Field(default=0.75, ge=0)
    use_server_cost: bool = True  # bill what the service reports (cost_in_usd_ticks) when it does
    timeout_s: float = Field(default=120.0, gt=0)
    max_retries: int = Field(default=2, ge=0, le=10)
    use_insecure_channel: bool = False

    @field_validator("use_insecure_channel")
    @classmethod
    def _insecure_only_to_loopback(cls, insecure: bool, info: ValidationInfo) -> bool:
        # Without TLS the API key crosses the network in clear text: only to this machine.
        host = str(info.data.get("api_host", ""))
        if insecure and not is_loopback(_plain_host(host)):
            raise ValueError(
                f"sends the API key in clear text, so the api_host must be a loopback host "
                f"(127.0.0.1, ::1, localhost), not {host!r}"
            )
        return insecure


def _https_unless_loopback(url: str, what: str) -> str:
    """Refuse a URL that would carry a credential in clear text off this machine."""
    parts = urlsplit(url)
    if parts.scheme not in ("https", "http") or not parts.hostname:
        raise ValueError(f"needs a scheme and a host: https://HOST (http:// only for loopback), not {url!r}")
    if parts.scheme == "http" and not is_loopback(parts.hostname):
        raise ValueError(
            f"would send {what} in clear text: use https (http:// only for a loopback host: "
            f"127.0.0.1, ::1, localhost)"
        )
    return url


class SlackSettings(_Section):
    """`wave notifier`: the events stream posted to Slack (README "Slack"). Off unless a bot token or
    an incoming-webhook URL is set; with both, the token (threads) is used."""

    bot_token: SecretStr | None = None
    webhook_url: SecretStr | None = None  # no threads, one channel: the webhook's own
    base_url: str = "https://slack.com/api/"
    alerts_channel: str = Field(default="#wave-alerts", min_length=1, max_length=80)
    activity_channel: str = Field(default="#wave-activity", min_length=1, max_length=80)
    timeout_s: float = Field(default=10.0, gt=0, le=300)
    # 429s the SDK itself waits out (Retry-After) before a try counts as failed
    rate_limit_retries: int = Field(default=3, ge=0, le=20)
    # A message's tries (an outage, a 5xx) before it goes to the dead letters; the wait between
    # them doubles from backoff_s up to backoff_max_s.
    retries: int = Field(default=8, ge=1, le=1000)
    backoff_s: float = Field(default=1.0, gt=0, le=3600)
    backoff_max_s: float = Field(default=60.0, gt=0, le=86_400)
    dead_letters_max: int = Field(default=1000, ge=1, le=1_000_000)  # the newest kept
    batch: int = Field(default=100, ge=1, le=10_000)  # entries taken from the stream at once
    # How long a story's ordinary reply waits for the story's next events, posted with it as one
    # reply (alerts never wait); 0: each event its own reply, at once. Slack takes about a message
    # a second a channel.
    merge_window_s: float = Field(default=2.0, ge=0, le=60)
    thread_ttl_s: int = Field(default=30 * 86_400, ge=60)  # how long a story's thread ts is kept

    @property
    def enabled(self) -> bool:
        return self.bot_token is not None or self.webhook_url is not None

    @field_validator("base_url")
    @classmethod
    def _token_over_tls(cls, url: str) -> str:
        return _https_unless_loopback(url if url.endswith("/") else url + "/", "the bot token")

    @field_validator("webhook_url")
    @classmethod
    def _webhook_over_tls(cls, url: SecretStr | None) -> SecretStr | None:
        if url is not None:
            try:
                _https_unless_loopback(url.get_secret_value(), "the webhook (its URL is its secret)")
            except ValueError:  # the message must not quote the secret URL
                raise ValueError("must be https:// (http:// only for a loopback host)") from None
        return url


class LangSmithSettings(_Section):
    """LangSmith tracing (README "LangSmith"): one trace per story. Off unless an API key is set.
    A work horse leaves its runs in a bounded Redis list (the trace outbox) in one command; the
    supervisor's thread sends them. Beyond a bound a run is dropped and counted
    (`wave_trace_runs_dropped_total`), never waited for."""

    api_key: SecretStr | None = None
    endpoint: str = "https://api.smith.langchain.com"
    project: str = Field(default="wave", min_length=1, max_length=200)
    queue_size: int = Field(default=10_000, ge=1, le=1_000_000)  # runs waiting to be sent, per process
    # stage entries waiting in the trace outbox (Redis) for the supervisor; beyond, dropped and counted
    outbox_size: int = Field(default=10_000, ge=1, le=1_000_000)
    batch: int = Field(default=100, ge=1, le=10_000)  # runs sent in one request
    flush_interval_s: float = Field(default=1.0, gt=0, le=3600)
    timeout_s: float = Field(default=10.0, gt=0, le=300)
    text_max_chars: int = Field(default=20_000, ge=100, le=10_000_000)  # of a prompt or reply traced

    @property
    def enabled(self) -> bool:
        return self.api_key is not None

    @field_validator("endpoint")
    @classmethod
    def _key_over_tls(cls, url: str) -> str:
        return _https_unless_loopback(url.rstrip("/"), "the LangSmith API key")


class SafetySettings(_Section):
    """The safety gate (README "Safety"): every tool call scored before it runs."""

    # A judge's score below block_below blocks; below escalate_below waits for a human; else allowed.
    block_below: float = Field(default=0.7, ge=0, le=1)
    escalate_below: float = Field(default=0.85, ge=0, le=1)
    blocks_per_stage: int = Field(default=3, ge=1, le=100)  # this many blocks fail the stage
    approval_ttl_s: int = Field(default=86_400, ge=60, le=30 * 86_400)  # an approval unused this long expires
    judge: bool = True  # ask the constitutional judge (Grok) when the rules do not decide
    judge_timeout_s: float = Field(default=30.0, gt=0, le=600)

    @model_validator(mode="after")
    def _ordered(self) -> SafetySettings:
        if self.escalate_below < self.block_below:
            raise ValueError("escalate_below must be at least block_below")
        return self


class LLMSettings(_Section):
    """The router, response cache and rate limits shared by the whole fleet (flat: one nesting level)."""

    # offline: "auto" answers offline only when no provider has a key (and says so in every result
    # and log line); "always" answers every call offline (tests, demo); "never" refuses to.
    offline: Literal["auto", "always", "never"] = "auto"
    routes: dict[str, str] = {}  # task kind -> provider, over the built-in table
    # Where a call goes when its provider fails (in a way that is the provider's fault) or has no
    # key: the next keyed providers in this order, each behind its breaker; never offline.
    fallback_order: list[str] = ["anthropic", "xai"]
    max_tokens: int = Field(default=4096, ge=1)
    cache_enabled: bool = True
    cache_ttl_s: int = Field(default=86_400, ge=1)
    failures_to_fallback: int = Field(default=2, ge=1)
    cooldown_s: float = Field(default=60.0, gt=0)
    anthropic_requests_per_min: int = Field(default=50, ge=0)  # 0: no limit
    anthropic_tokens_per_min: int = Field(default=200_000, ge=0)
    xai_requests_per_min: int = Field(default=60, ge=0)
    xai_tokens_per_min: int = Field(default=200_000, ge=0)
    rate_wait_max_s: float = Field(default=30.0, ge=0)  # longer than this: fail with RateLimitedError
    rate_penalty_s: float = Field(default=5.0, ge=0)  # pause after a provider 429 with no retry-after
    estimate_bytes_per_token: float = Field(default=3.0, gt=0)  # 1.0 makes estimates an upper bound

    @field_validator("routes")
    @classmethod
    def _routed_to_registered(cls, routes: dict[str, str]) -> dict[str, str]:
        from .llm.registry import check_known  # noqa: PLC0415 - the registry reads no settings: no cycle

        for provider in routes.values():
            check_known(provider)
        return routes

    @field_validator("fallback_order")
    @classmethod
    def _registered_once(cls, order: list[str]) -> list[str]:
        from .llm.registry import check_order  # noqa: PLC0415 - the registry reads no settings: no cycle

        check_order(order)
        return order


class BudgetSettings(_Section):
    """Fleet-wide hard limits per UTC day; per-story and per-domain limits are in domain.toml."""

    global_daily_usd: float = Field(default=500.0, gt=0, le=MAX_LIMIT_USD)
    global_daily_tokens: int = Field(default=200_000_000, gt=0, le=MAX_LIMIT_TOKENS)
    warn_fraction: float = Field(default=0.5, gt=0, lt=1)
    critical_fraction: float = Field(default=0.8, gt=0, lt=1)
    reservation_ttl_s: float = Field(default=900.0, gt=0)  # a crashed call's reservation is freed after


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX,
        env_nested_delimiter=NESTED,
        env_file=".env",
        extra="forbid",
        frozen=True,
    )

    redis: RedisSettings = RedisSettings()
    embedded_redis: EmbeddedRedisSettings = EmbeddedRedisSettings()
    worker: WorkerSettings = WorkerSettings()
    supervisor: SupervisorSettings = SupervisorSettings()
    metrics: MetricsSettings = MetricsSettings()
    monitor: MonitorSettings = MonitorSettings()
    pipeline: PipelineSettings = PipelineSettings()
    loop: LoopSettings = LoopSettings()
    anthropic: AnthropicSettings = AnthropicSettings()
    xai: XaiSettings = XaiSettings()
    llm: LLMSettings = LLMSettings()
    budgets: BudgetSettings = BudgetSettings()
    data_dir: Path = Path(".wave")
    halt_dir: Path | None = None  # where EMERGENCY-STOP is watched for; default: the data dir
    # The same folder as the operator's host names it, where it is mounted into a container
    # (compose: HALT_DIR at /halt): what `wave resume` tells them to look in.
    halt_host_dir: Path | None = None
    domains_dir: Path = Path("domains")
    log_format: Literal["auto", "console", "json"] = "auto"
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    # Who plays the roles: "llm" (models through the tool loop), "offline" (deterministic stand-ins,
    # no model), "noop" (benchmarks); "auto" is llm when a provider has a key and `llm.offline` is
    # not "always", else offline (workers/agents.py resolves it once, at worker start).
    agent: Literal["auto", "llm", "offline", "noop"] = "auto"
    # Where commands that run work (QA's tests, agents' `run`) run: bubblewrap, a container per stage
    # made by `wave sandbox` (compose), or `none` (the operator's explicit opt-out, said in every log
    # line and `wave status`). A worker whose sandbox cannot run refuses to start.
    sandbox: Literal["bwrap", "container", "none"] = "bwrap"
    sandbox_container: ContainerSandboxSettings = ContainerSandboxSettings()
    slack: SlackSettings = SlackSettings()
    langsmith: LangSmithSettings = LangSmithSettings()
    safety: SafetySettings = SafetySettings()
    # Workers with autonomous=true refuse to start until `wave preflight` has passed (README "Safety").
    autonomous: bool = False
    # Dozzle's address as operators open it (https://logs.example): Slack messages link a story's
    # worker logs at <dozzle_url>/show?name=<container>; None: no links.
    dozzle_url: str | None = None
    # A worker's container is this prefix and its identity (compose: COMPOSE_PROJECT_NAME "-").
    dozzle_container_prefix: str = Field(default="wave-", pattern=r"^[a-zA-Z0-9_.-]{0,64}$")

    @field_validator("dozzle_url")
    @classmethod
    def _dozzle_is_a_url(cls, url: str | None) -> str | None:
        if url == "":  # compose passes an unset variable as empty: no Dozzle
            return None
        if url is not None:
            parts = urlsplit(url)
            if parts.scheme not in ("https", "http") or not parts.hostname:
                raise ValueError(f"needs a scheme and a host: https://HOST, not {url!r}")
            return url.rstrip("/")
        return url

    @property
    def halt_file(self) -> Path:
        return (self.halt_dir or self.data_dir) / HALT_FILE_NAME

    @property
    def halt_file_on_host(self) -> Path:
        return self.halt_host_dir / HALT_FILE_NAME if self.halt_host_dir else self.halt_file

    @property
    def agent_kind(self) -> Literal["llm", "offline", "noop"]:
        """The `agent` setting with `auto` resolved: llm when a provider has a key and offline
        replies are not forced (`llm.offline = always`), else offline."""
        if self.agent != "auto":
            return self.agent
        keyed = self.anthropic.api_key is not None or self.xai.api_key is not None
        return "llm" if keyed and self.llm.offline != "always" else "offline"

    @cached_property
    def keys(self) -> Keys:
        return Keys(self.redis.key_prefix)


def load_settings(**overrides: Any) -> Settings:
    """Read the settings once; a malformed or unknown ``WAVE_*`` variable raises ConfigError."""
    _refuse_unknown_variables()
    _refuse_duplicate_json_keys()
    try:
        return Settings(**overrides)
    except ValidationError as exc:
        raise ConfigError(_describe(exc)) from None
    except SettingsError as exc:
        raise ConfigError(_describe_unparsable(exc)) from None


def _describe_unparsable(exc: SettingsError) -> str:
    """pydantic-settings could not decode a JSON value: a whole section (WAVE_REDIS=...) or a
    mapping such as WAVE_LLM__ROUTES; its message names only the top-level field."""
    match = re.search(r'field "(\w+)"', str(exc))
    top = f"{ENV_PREFIX}{match[1].upper()}" if match else "a WAVE_* variable"
    for var in sorted(os.environ):
        if var.upper().startswith(f"{top}{NESTED}") and not _is_json(os.environ[var]):
            section = Settings.model_fields[match[1]].annotation if match else None
            sub = var.upper().removeprefix(f"{top}{NESTED}").lower()
            fields = getattr(section, "model_fields", {})
            if sub in fields and get_origin(fields[sub].annotation) in (dict, list, tuple, set):
                top = var
                break
    return f"{top}: not valid JSON (set nested settings one by one, e.g. WAVE_REDIS__URL)"


def _is_json(value: str) -> bool:
    try:
        json.loads(value)
    except ValueError:
        return False
    return True


def to_env(settings: Settings) -> dict[str, str]:
    """The WAVE_* variables that reproduce `settings` in another process (secrets included)."""
    env = {}
    for name in type(settings).model_fields:  # not the instance dict: it caches `keys` too
        value = getattr(settings, name)
        if isinstance(value, BaseModel):
            for sub in type(value).model_fields:
                sub_value = getattr(value, sub)
                if sub_value is not None:
                    env[f"{ENV_PREFIX}{name.upper()}{NESTED}{sub.upper()}"] = _env_value(sub_value)
        elif value is not None:
            env[f"{ENV_PREFIX}{name.upper()}"] = _env_value(value)
    return env


def _env_value(value: Any) -> str:
    if isinstance(value, SecretStr):
        return value.get_secret_value()
    if isinstance(value, dict | list | tuple):
        return json.dumps(value)
    return str(value)


def _variables() -> Iterator[tuple[str, Any]]:
    """Every WAVE_* variable the settings read, with its field's type (a whole section's too)."""
    for name, field in Settings.model_fields.items():
        top = f"{ENV_PREFIX}{name.upper()}"
        section = field.annotation
        yield top, section
        if isinstance(section, type) and issubclass(section, BaseModel):
            for sub, sub_field in section.model_fields.items():
                yield f"{top}{NESTED}{sub.upper()}", sub_field.annotation


def _is_section(annotation: Any) -> bool:
    return isinstance(annotation, type) and issubclass(annotation, BaseModel)


def _known_variables() -> set[str]:
    return {name for name, _ in _variables()}


def _refuse_unknown_variables() -> None:
    # pydantic-settings ignores environment variables it has no field for, so a typo such as
    # WAVE_REDIS_URL (one underscore) would silently fall back to the default Redis.
    known = _known_variables()
    for var in sorted(os.environ):
        # pydantic-settings reads names case-insensitively, so check them the same way
        if var.upper().startswith(ENV_PREFIX) and var.upper() not in known:
            raise ConfigError(
                f"{var}: unknown setting (nested settings use a double underscore, "
                f"e.g. WAVE_REDIS__URL; see the README's configuration table)"
            )


def _refuse_duplicate_json_keys() -> None:
    # pydantic-settings decodes a JSON value (WAVE_LLM__ROUTES, a whole section) with json.loads,
    # which keeps the last of two equal keys: the route an operator read first would be ignored.
    decoded = _json_variables()
    for var in sorted(os.environ):
        if var.upper() not in decoded:
            continue
        try:
            load_json(os.environ[var])
        except json.JSONDecodeError:
            continue  # malformed JSON: pydantic-settings refuses it, naming the variable
        except ValueError as exc:  # a duplicate key
            raise ConfigError(f"{var}: {exc}") from None


def _json_variables() -> set[str]:
    """The variables pydantic-settings decodes as JSON: whole sections, and mappings or lists (never
    a secret, whose text must not appear in an error)."""
    collections = (dict, list, tuple, set)
    return {name for name, kind in _variables() if _is_section(kind) or get_origin(kind) in collections}


def _describe(exc: ValidationError) -> str:
    error = exc.errors()[0]
    path = NESTED.join(str(p).upper() for p in error["loc"])
    more = f" (and {exc.error_count() - 1} more)" if exc.error_count() > 1 else ""
    # an unknown name from .env already carries the prefix (the loc is the variable's own name)
    name = path if path.startswith(ENV_PREFIX) else f"{ENV_PREFIX}{path}"
    return f"{name}: {error['msg']}{more}"
