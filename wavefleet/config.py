"""The one settings object: read once at process start from ``WAVE_*`` variables and ``.env``."""

from __future__ import annotations

import os
import re
from functools import cached_property
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict, SettingsError

from .errors import ConfigError
from .keys import DEFAULT_PREFIX, Keys

ENV_PREFIX = "WAVE_"
NESTED = "__"


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class RedisSettings(_Section):
    url: str = "redis://127.0.0.1:6379/0"
    password: SecretStr | None = None
    socket_timeout_s: float = Field(default=10.0, gt=0)
    key_prefix: str = Field(default=DEFAULT_PREFIX, pattern=r"^[a-z][a-z0-9_-]*$")

    @field_validator("url")
    @classmethod
    def _redis_scheme(cls, url: str) -> str:
        if not url.startswith(("redis://", "rediss://", "unix://")):
            raise ValueError("must start with redis://, rediss:// or unix://")
        return url


class EmbeddedRedisSettings(_Section):
    """The redis-server `wave up` and `wave demo` start when no Redis is given."""

    port: int = Field(default=6399, ge=1, le=65535)
    appendfsync: Literal["always", "everysec", "no"] = "everysec"
    password: SecretStr | None = None


class WorkerSettings(_Section):
    heartbeat_interval_s: float = Field(default=1.0, gt=0)
    heartbeat_ttl_s: float = Field(default=5.0, gt=0)
    job_timeout_s: int = Field(default=1800, gt=0)
    command_timeout_s: float = Field(default=300.0, gt=0)


class SupervisorSettings(_Section):
    block_ms: int = Field(default=500, ge=1)
    recovery_interval_s: float = Field(default=1.0, gt=0)
    lock_ttl_s: float = Field(default=10.0, gt=0)


class PipelineSettings(_Section):
    max_rounds: int = Field(default=3, ge=1, le=20)


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
    pipeline: PipelineSettings = PipelineSettings()
    data_dir: Path = Path(".wave")
    domains_dir: Path = Path("domains")
    log_format: Literal["auto", "console", "json"] = "auto"
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    agent: Literal["offline", "noop"] = "offline"

    @cached_property
    def keys(self) -> Keys:
        return Keys(self.redis.key_prefix)


def load_settings(**overrides: Any) -> Settings:
    """Read the settings once; a malformed or unknown ``WAVE_*`` variable raises ConfigError."""
    _refuse_unknown_variables()
    try:
        return Settings(**overrides)
    except ValidationError as exc:
        raise ConfigError(_describe(exc)) from None
    except SettingsError as exc:
        # A whole section given as one variable (WAVE_REDIS=...) that is not JSON.
        match = re.search(r'field "(\w+)"', str(exc))
        name = f"{ENV_PREFIX}{match[1].upper()}" if match else "a WAVE_* variable"
        raise ConfigError(f"{name}: not valid JSON (set nested settings one by one, e.g. "
                          f"WAVE_REDIS__URL)") from None


def _known_variables() -> set[str]:
    names = set()
    for name, field in Settings.model_fields.items():
        top = f"{ENV_PREFIX}{name.upper()}"
        names.add(top)
        annotation = field.annotation
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            names.update(f"{top}{NESTED}{sub.upper()}" for sub in annotation.model_fields)
    return names


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


def _describe(exc: ValidationError) -> str:
    error = exc.errors()[0]
    path = NESTED.join(str(p).upper() for p in error["loc"])
    more = f" (and {exc.error_count() - 1} more)" if exc.error_count() > 1 else ""
    return f"{ENV_PREFIX}{path}: {error['msg']}{more}"
