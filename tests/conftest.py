"""Shared fixtures: one real redis-server per test session (flushed per test), real processes."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from redis import Redis

from wavefleet.config import Settings
from wavefleet.connection import connect
from wavefleet.domains import Domains, load_domains
from wavefleet.embedded import EmbeddedRedis
from wavefleet.store import StoryStore
from wavefleet.testing import Processes, fast_settings, redis_server

REPO = Path(__file__).resolve().parent.parent
DOMAINS = REPO / "domains"


@pytest.fixture(scope="session")
def redis_proc(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmbeddedRedis]:
    with redis_server(tmp_path_factory.mktemp("redis")) as server:
        yield server


@pytest.fixture
def domains_dir(tmp_path: Path) -> Path:
    """A private copy of the shipped domains, so a test may edit it freely."""
    target = tmp_path / "domains"
    shutil.copytree(DOMAINS, target, ignore=shutil.ignore_patterns("__pycache__", ".pytest_cache"))
    return target


@pytest.fixture
def settings(redis_proc: EmbeddedRedis, tmp_path: Path, domains_dir: Path) -> Settings:
    redis_proc.client().flushall()
    return fast_settings(redis_proc, tmp_path / "data", domains_dir)


@pytest.fixture
def redis(settings: Settings) -> Redis:
    return connect(settings)


@pytest.fixture
def domains(settings: Settings) -> Domains:
    return load_domains(settings.domains_dir)


@pytest.fixture
def store(redis: Redis, settings: Settings) -> StoryStore:
    return StoryStore(redis, settings.keys, settings.pipeline.max_rounds)


@pytest.fixture
def procs(settings: Settings, tmp_path: Path) -> Iterator[Processes]:
    processes = Processes(settings, tmp_path / "logs")
    yield processes
    processes.stop_all()
