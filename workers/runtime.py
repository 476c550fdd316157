"""The per-process context a role worker sets up once and its forked work horses inherit."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from redis import Redis

from wavefleet.config import Settings
from wavefleet.domains import Domain
from wavefleet.lifecycle import Role
from wavefleet.llm.client import LLMClient
from wavefleet.sandbox import Sandbox
from wavefleet.store import StoryStore


@dataclass(frozen=True)
class Runtime:
    settings: Settings
    redis: Redis
    store: StoryStore
    domain: Domain
    role: Role
    identity: str  # the log prefix, AUTH-FE-2
    name: str  # unique per process: the heartbeat and RQ worker name
    # Built once per worker process (SDKs imported before the fork), bound per stage to the story.
    llm: LLMClient | None = None
    sandbox: Sandbox | None = None  # probed at worker start
    agent: Literal["llm", "offline", "noop"] = "offline"  # the `agent` setting, `auto` resolved


_current: Runtime | None = None


def install(runtime: Runtime) -> None:
    global _current  # noqa: PLW0603 - one context per worker process, set once before forking
    _current = runtime


def current() -> Runtime:
    if _current is None:
        raise RuntimeError("stage jobs run only inside a `wave worker` process")
    return _current


def installed() -> Runtime | None:
    """The worker's context, or None outside a `wave worker` process (a test, a CLI)."""
    return _current
