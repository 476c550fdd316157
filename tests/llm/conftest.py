"""Fixtures of the LLM-layer tests: the local Anthropic and xAI servers, settings pointing at them,
and helpers to run LLM calls from other processes against the same Redis."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from redis import Redis
from servers.anthropic_server import AnthropicServer
from servers.xai_server import XaiServer

from wavefleet.config import AnthropicSettings, LLMSettings, Settings, XaiSettings
from wavefleet.llm.client import LLMClient
from wavefleet.testing import env_of

HERE = Path(__file__).resolve().parent
TESTS = HERE.parent
ANTHROPIC_KEY = "test-anthropic-key"
XAI_KEY = "test-xai-key"


@pytest.fixture(scope="session")
def anthropic_session() -> Iterator[AnthropicServer]:
    server = AnthropicServer(api_key=ANTHROPIC_KEY).start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def xai_session() -> Iterator[XaiServer]:
    server = XaiServer(api_key=XAI_KEY).start()
    yield server
    server.stop()


@pytest.fixture
def anthropic_server(anthropic_session: AnthropicServer) -> AnthropicServer:
    anthropic_session.reset()
    return anthropic_session


@pytest.fixture
def xai_server(xai_session: XaiServer) -> XaiServer:
    xai_session.reset()
    return xai_session


def live_settings(
    settings: Settings, anthropic: AnthropicServer | None, xai: XaiServer | None, **llm: Any
) -> Settings:
    """`settings` with keys and endpoints of the local servers given (a provider left None has no key)."""
    anthropic_section = AnthropicSettings(
        api_key=ANTHROPIC_KEY if anthropic else None,
        base_url=anthropic.url if anthropic else "http://127.0.0.1:9",
        timeout_s=0.5,
        max_retries=0,
    )
    xai_section = XaiSettings(
        api_key=XAI_KEY if xai else None,
        api_host=xai.host if xai else "127.0.0.1:9",
        use_insecure_channel=True,
        timeout_s=0.5,
        max_retries=0,
    )
    llm_section = LLMSettings(**{"offline": "never", "cooldown_s": 60.0, **llm})
    return settings.model_copy(
        update={"anthropic": anthropic_section, "xai": xai_section, "llm": llm_section}
    )


def with_llm(settings: Settings, **changes: Any) -> Settings:
    """`settings` with some `llm` settings changed."""
    return settings.model_copy(update={"llm": settings.llm.model_copy(update=changes)})


@pytest.fixture
def live(settings: Settings, anthropic_server: AnthropicServer, xai_server: XaiServer) -> Settings:
    """Both providers keyed, pointing at the local servers; offline refused."""
    return live_settings(settings, anthropic_server, xai_server)


@pytest.fixture
def client(live: Settings, redis: Redis) -> LLMClient:
    return LLMClient(live, redis)


def llm_env(settings: Settings) -> dict[str, str]:
    """The WAVE_* variables that make a child process use `settings`, LLM sections included."""
    env = env_of(settings)
    env["PYTHONPATH"] = os.pathsep.join([str(TESTS.parent), env.get("PYTHONPATH", "")])
    return env


def start_helper(script: str, settings: Settings, *args: str, log: Path) -> subprocess.Popen[str]:
    """A helper process from tests/llm/ with `settings` in its environment: stdin and stdout are pipes,
    its log lines (stderr) go to `log`."""
    with log.open("a") as sink:
        return subprocess.Popen(
            [sys.executable, str(HERE / script), *args],
            env=llm_env(settings),
            text=True,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=sink,
        )
