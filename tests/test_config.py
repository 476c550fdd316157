"""Settings: read once from WAVE_* variables and .env; a bad or unknown one fails naming the variable."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest
from pydantic import SecretStr

from wavefleet.config import Settings, load_settings, to_env
from wavefleet.errors import ConfigError, ExitCode

SECRET = "hunter2-do-not-print"


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """No WAVE_* variable from the caller, and a working directory without a .env file."""
    for name in list(os.environ):
        if name.upper().startswith("WAVE_"):
            monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)
    return tmp_path


def test_with_no_variables_every_setting_has_its_documented_default() -> None:
    # Given an empty environment
    # When the settings are loaded
    settings = load_settings()

    # Then the defaults apply
    assert settings.redis.url == "redis://127.0.0.1:6379/0"
    assert settings.redis.password is None
    assert settings.keys.prefix == "wave"
    assert settings.pipeline.max_rounds == 3
    assert (settings.data_dir, settings.domains_dir) == (Path(".wave"), Path("domains"))
    assert (settings.worker.heartbeat_interval_s, settings.worker.heartbeat_ttl_s) == (1.0, 5.0)
    assert (settings.supervisor.block_ms, settings.embedded_redis.port) == (500, 6399)
    assert (settings.log_format, settings.log_level, settings.agent) == ("auto", "info", "auto")
    assert settings.agent_kind == "offline"  # no provider key: the offline agents


NESTED = [
    # (variable, value, path to the setting, the value read)
    ("WAVE_REDIS__URL", "redis://127.0.0.1:6380/2", ("redis", "url"), "redis://127.0.0.1:6380/2"),
    ("WAVE_REDIS__URL", "unix:///run/redis.sock", ("redis", "url"), "unix:///run/redis.sock"),
    ("WAVE_REDIS__SOCKET_TIMEOUT_S", "2.5", ("redis", "socket_timeout_s"), 2.5),
    ("WAVE_REDIS__KEY_PREFIX", "acme-prod", ("redis", "key_prefix"), "acme-prod"),
    ("WAVE_PIPELINE__MAX_ROUNDS", "5", ("pipeline", "max_rounds"), 5),
    ("WAVE_WORKER__HEARTBEAT_TTL_S", "2", ("worker", "heartbeat_ttl_s"), 2.0),
    ("WAVE_WORKER__JOB_TIMEOUT_S", "60", ("worker", "job_timeout_s"), 60),
    ("WAVE_SUPERVISOR__BLOCK_MS", "50", ("supervisor", "block_ms"), 50),
    ("WAVE_EMBEDDED_REDIS__APPENDFSYNC", "always", ("embedded_redis", "appendfsync"), "always"),
    ("WAVE_DATA_DIR", "/var/lib/wave", ("data_dir",), Path("/var/lib/wave")),
    ("WAVE_LOG_LEVEL", "debug", ("log_level",), "debug"),
    ("WAVE_PIPELINE", '{"max_rounds": 7}', ("pipeline", "max_rounds"), 7),
]


@pytest.mark.parametrize(("variable", "value", "path", "expected"), NESTED, ids=[r[0] for r in NESTED])
def test_a_variable_sets_its_nested_setting(
    monkeypatch: pytest.MonkeyPatch, variable: str, value: str, path: tuple[str, ...], expected: Any
) -> None:
    # Given one variable set
    monkeypatch.setenv(variable, value)

    # When the settings are loaded
    found: Any = load_settings()
    for part in path:
        found = getattr(found, part)

    # Then the nested setting holds the value, parsed to its type
    assert found == expected


def test_the_key_prefix_setting_moves_every_key() -> None:
    # Given a custom key prefix
    settings = load_settings(redis={"key_prefix": "acme"})

    # When a key is built
    key = settings.keys.story("AUTH-001")

    # Then it lives under the prefix
    assert key == "acme:story:AUTH-001"


def test_the_environment_is_read_when_settings_are_loaded_not_when_the_module_is_imported(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Given settings loaded once, then a variable changed
    first = load_settings()
    monkeypatch.setenv("WAVE_PIPELINE__MAX_ROUNDS", "9")

    # When the settings are loaded again
    second = load_settings()

    # Then only the new load sees the change
    assert (first.pipeline.max_rounds, second.pipeline.max_rounds) == (3, 9)


def test_a_dotenv_file_in_the_working_directory_is_read(clean_env: Path) -> None:
    # Given a .env file
    (clean_env / ".env").write_text("WAVE_PIPELINE__MAX_ROUNDS=4\nWAVE_REDIS__KEY_PREFIX=fromfile\n")

    # When the settings are loaded
    settings = load_settings()

    # Then its values apply
    assert (settings.pipeline.max_rounds, settings.keys.prefix) == (4, "fromfile")


@pytest.mark.parametrize("source", ["env", "dotenv"])
def test_the_redis_password_never_appears_in_the_printed_settings(
    monkeypatch: pytest.MonkeyPatch, clean_env: Path, source: str
) -> None:
    # Given a Redis password from the environment or a .env file
    if source == "env":
        monkeypatch.setenv("WAVE_REDIS__PASSWORD", SECRET)
    else:
        (clean_env / ".env").write_text(f"WAVE_REDIS__PASSWORD={SECRET}\n")

    # When the settings are loaded and printed every usual way
    settings = load_settings()
    printed = [
        repr(settings),
        str(settings),
        repr(settings.redis),
        str(settings.redis),
        settings.model_dump_json(),
        str(settings.model_dump()),
        f"{settings}",
    ]

    # Then the password is in none of them, but is there for the connection
    assert all(SECRET not in text for text in printed)
    assert settings.redis.password is not None
    assert settings.redis.password.get_secret_value() == SECRET


MALFORMED = [
    # (variable, value, a fragment of the message)
    ("WAVE_REDIS__URL", "http://localhost:6379", "must start with redis://, rediss:// or unix://"),
    ("WAVE_REDIS__URL", "localhost", "must start with redis://"),
    ("WAVE_REDIS__SOCKET_TIMEOUT_S", "0", "greater than 0"),
    ("WAVE_REDIS__KEY_PREFIX", "Wave!", "should match pattern"),
    ("WAVE_PIPELINE__MAX_ROUNDS", "0", "greater than or equal to 1"),
    ("WAVE_PIPELINE__MAX_ROUNDS", "21", "less than or equal to 20"),
    ("WAVE_PIPELINE__MAX_ROUNDS", "three", "valid integer"),
    ("WAVE_WORKER__HEARTBEAT_TTL_S", "-1", "greater than 0"),
    ("WAVE_EMBEDDED_REDIS__PORT", "70000", "less than or equal to 65535"),
    ("WAVE_EMBEDDED_REDIS__APPENDFSYNC", "sometimes", "'always', 'everysec' or 'no'"),
    ("WAVE_LOG_LEVEL", "verbose", "'debug', 'info', 'warning' or 'error'"),
    ("WAVE_LOG_FORMAT", "xml", "'auto', 'console' or 'json'"),
    ("WAVE_AGENT", "gpt", "'offline' or 'noop'"),
    ("WAVE_REDIS", "redis://localhost", "not valid JSON"),
    ("WAVE_PIPELINE", "{max_rounds: 2", "not valid JSON"),
]


@pytest.mark.parametrize(
    ("variable", "value", "fragment"), MALFORMED, ids=[f"{r[0]}={r[1]}" for r in MALFORMED]
)
def test_a_malformed_value_is_refused_naming_the_variable(
    monkeypatch: pytest.MonkeyPatch, variable: str, value: str, fragment: str
) -> None:
    # Given one malformed variable
    monkeypatch.setenv(variable, value)

    # When the settings are loaded
    with pytest.raises(ConfigError) as excinfo:
        load_settings()

    # Then one line names the variable and the problem, and the CLI exits with EX_CONFIG
    message = str(excinfo.value)
    assert message.startswith(f"{variable}: ")
    assert fragment in message
    assert "\n" not in message
    assert excinfo.value.exit_code is ExitCode.CONFIG


def test_several_malformed_values_name_the_first_and_count_the_rest(monkeypatch: pytest.MonkeyPatch) -> None:
    # Given two malformed variables
    monkeypatch.setenv("WAVE_PIPELINE__MAX_ROUNDS", "0")
    monkeypatch.setenv("WAVE_REDIS__URL", "http://x")

    # When the settings are loaded
    with pytest.raises(ConfigError) as excinfo:
        load_settings()

    # Then the message is one line that says there is more to fix
    assert str(excinfo.value).endswith("(and 1 more)")
    assert str(excinfo.value).startswith(("WAVE_REDIS__URL: ", "WAVE_PIPELINE__MAX_ROUNDS: "))


@pytest.mark.parametrize(
    "variable",
    [
        "WAVE_REDIS_URL",
        "WAVE_REDIS__HOST",
        "WAVE_PIPELINE__MAXROUNDS",
        "WAVE_DOMAINS",
        "WAVE_",
        "wave_redis_url",
        "Wave_Pipeline_Max_Rounds",
    ],
)
def test_an_unknown_wave_variable_is_refused_naming_it(
    monkeypatch: pytest.MonkeyPatch, variable: str
) -> None:
    # Given a variable that looks like a setting but is none (a typo would silently use a default)
    monkeypatch.setenv(variable, "redis://elsewhere:6379/0")

    # When the settings are loaded
    with pytest.raises(ConfigError) as excinfo:
        load_settings()

    # Then it is named, with the double-underscore hint
    assert str(excinfo.value).startswith(
        f"{variable}: unknown setting (nested settings use a double underscore"
    )


def test_an_unknown_wave_variable_in_the_dotenv_file_is_refused_naming_it_once(clean_env: Path) -> None:
    # Given a typo in .env
    (clean_env / ".env").write_text("WAVE_REDIS_URL=redis://elsewhere:6379/0\n")

    # When the settings are loaded
    with pytest.raises(ConfigError) as excinfo:
        load_settings()

    # Then the variable is named as written (not WAVE_WAVE_REDIS_URL)
    assert str(excinfo.value) == "WAVE_REDIS_URL: Extra inputs are not permitted"


def test_other_variables_are_ignored(monkeypatch: pytest.MonkeyPatch) -> None:
    # Given variables of other programs, one merely containing WAVE
    monkeypatch.setenv("REDIS_URL", "http://not-ours")
    monkeypatch.setenv("MY_WAVE_SETTING", "x")

    # When the settings are loaded
    settings = load_settings()

    # Then they change nothing
    assert settings.redis.url == "redis://127.0.0.1:6379/0"


def test_a_malformed_override_is_refused_naming_its_variable() -> None:
    # Given an override passed in code (as tests and the embedded fleet do)
    # When the settings are loaded
    with pytest.raises(ConfigError) as excinfo:
        load_settings(pipeline={"max_rounds": 0})

    # Then it is named as the variable that would set it
    assert str(excinfo.value).startswith("WAVE_PIPELINE__MAX_ROUNDS: ")


def test_settings_are_frozen_once_loaded() -> None:
    # Given loaded settings
    settings: Settings = load_settings()

    # When code tries to change one
    with pytest.raises(ValueError, match="frozen"):
        settings.log_level = "debug"  # type: ignore[misc]

    # Then it is unchanged
    assert settings.log_level == "info"


def test_to_env_reproduces_the_settings_in_another_process(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    original = Settings(
        redis={"url": "redis://127.0.0.1:6380/2", "password": SecretStr("s3cret")},
        data_dir=tmp_path,
        llm={"routes": {"planning": "xai"}},
        worker={"heartbeat_ttl_s": 2.5},
    )
    _ = original.keys  # a cached property must not leak into the variables

    for name, value in to_env(original).items():
        monkeypatch.setenv(name, value)

    assert load_settings() == original


@pytest.mark.parametrize("variable", ["WAVE_ANTHROPIC__API_KEY", "WAVE_XAI__API_KEY", "WAVE_REDIS__PASSWORD"])
def test_a_secret_set_but_empty_means_none(monkeypatch: pytest.MonkeyPatch, variable: str) -> None:
    monkeypatch.setenv(variable, "")

    section, field = variable.removeprefix("WAVE_").lower().split("__")

    assert getattr(getattr(load_settings(), section), field) is None
