"""Where the fleet's API keys may go: https or loopback only, and never where a domain file says."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from conftest import ANTHROPIC_KEY, live_settings, llm_env
from redis import Redis
from servers.anthropic_server import AnthropicServer
from servers.xai_server import XaiServer

from wavefleet.config import Settings
from wavefleet.errors import ExitCode

pytestmark = pytest.mark.timeout(60)


def wave(env: dict[str, str], *argv: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "wavefleet.cli", *argv],
        env=env,
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )


def assert_one_line_refusal(
    result: subprocess.CompletedProcess[str], code: ExitCode, *fragments: str
) -> None:
    assert result.returncode == code, result.stderr
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("wave: error: "), result.stderr
    assert "Traceback" not in result.stderr + result.stdout
    for fragment in fragments:
        assert fragment in lines[0], lines[0]


@pytest.mark.parametrize(
    ("variable", "value", "fragment"),
    [
        ("WAVE_ANTHROPIC__BASE_URL", "http://evil.example:8080", "https"),
        ("WAVE_ANTHROPIC__BASE_URL", "http://127.0.0.1.evil.example", "https"),
        ("WAVE_ANTHROPIC__BASE_URL", "http://localhost@evil.example", "user"),
        ("WAVE_ANTHROPIC__BASE_URL", "ftp://api.anthropic.com", "https"),
        ("WAVE_ANTHROPIC__BASE_URL", "api.anthropic.com", "https"),
        ("WAVE_ANTHROPIC__BASE_URL", "https://", "host"),
        ("WAVE_XAI__USE_INSECURE_CHANNEL", "true", "loopback"),
    ],
)
def test_a_provider_endpoint_that_is_neither_https_nor_loopback_is_refused_at_start_up(
    settings: Settings, redis: Redis, tmp_path: Path, variable: str, value: str, fragment: str
) -> None:
    # Given a fleet whose settings would send the model key over plain text to a foreign host
    env = {**llm_env(settings), "WAVE_ANTHROPIC__API_KEY": ANTHROPIC_KEY, variable: value}
    # When any command starts
    result = wave(env, "status", cwd=tmp_path)
    # Then it refuses with one line naming the variable, exit 78, and nothing was written
    assert_one_line_refusal(result, ExitCode.CONFIG, variable, fragment)
    assert redis.dbsize() == 0


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("WAVE_ANTHROPIC__BASE_URL", "http://127.0.0.1:9"),
        ("WAVE_ANTHROPIC__BASE_URL", "http://127.8.9.10:9"),
        ("WAVE_ANTHROPIC__BASE_URL", "http://localhost:9"),
        ("WAVE_ANTHROPIC__BASE_URL", "http://[::1]:9"),
        ("WAVE_ANTHROPIC__BASE_URL", "https://gateway.example.com/anthropic"),
        ("WAVE_XAI__API_HOST", "localhost:9"),
        ("WAVE_XAI__API_HOST", "[::1]:9"),
    ],
)
def test_a_loopback_or_https_endpoint_is_accepted(
    settings: Settings, tmp_path: Path, variable: str, value: str
) -> None:
    env = {**llm_env(settings), "WAVE_XAI__USE_INSECURE_CHANNEL": "true", "WAVE_XAI__API_HOST": "127.0.0.1:9"}
    result = wave({**env, variable: value}, "status", cwd=tmp_path)
    assert result.returncode == ExitCode.OK, result.stderr


@pytest.mark.parametrize(
    ("section", "line", "field"),
    [
        ("anthropic", 'base_url = "http://{anthropic}"', "base_url"),
        ("anthropic", 'base_url = "https://api.anthropic.com"', "base_url"),
        ("xai", 'api_host = "{xai}"', "api_host"),
        ("xai", "use_insecure_channel = true", "use_insecure_channel"),
    ],
)
def test_a_domain_file_that_names_an_endpoint_or_channel_is_refused_and_no_key_is_sent(
    settings: Settings,
    redis: Redis,
    anthropic_server: AnthropicServer,
    xai_server: XaiServer,
    tmp_path: Path,
    section: str,
    line: str,
    field: str,
) -> None:
    # Given keyed providers, and a domain file that points one of them at a server of its author's
    # choosing (here the local fakes, which record every request and its key)
    live = live_settings(settings, anthropic_server, xai_server)
    domain_file = settings.domains_dir / "auth" / "domain.toml"
    chosen = line.format(anthropic=anthropic_server.url.removeprefix("http://"), xai=xai_server.host)
    routes = f'[models.routes]\nplanning = "{section}"\n'
    domain_file.write_text(f"{domain_file.read_text()}\n{routes}[models.{section}]\n{chosen}\n")
    # When a model call is made for that domain
    result = wave(
        llm_env(live), "llm", "call", "hello", "--task", "planning", "--domain", "auth", cwd=tmp_path
    )
    # Then the fleet refuses the file with one line naming it and the field; no request left
    assert_one_line_refusal(result, ExitCode.CONFIG, str(domain_file), f"models.{section}", field)
    assert anthropic_server.requests == []
    assert xai_server.requests == []
    assert redis.dbsize() == 0
