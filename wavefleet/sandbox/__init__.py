"""Sandboxes: where the commands that run work (a domain's tests, agent commands) are run.

`Sandbox` is the interface, of two kinds: local (`BwrapSandbox`, bubblewrap, the default without
Docker; `NoSandbox`, the operator's explicit, loudly labelled opt-out, `WAVE_SANDBOX=none`) and
remote (`ContainerSandbox`: a hardened container per stage, made by the `wave sandbox` runner).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .base import (
    UNSANDBOXED,
    Invocation,
    LocalSandbox,
    NoSandbox,
    Outcome,
    RemoteSandbox,
    Sandbox,
    allowed_env,
)
from .bwrap import BwrapSandbox, bwrap_binary
from .container import ContainerSandbox
from .limits import Limits

if TYPE_CHECKING:
    from redis import Redis

    from wavefleet.config import Settings

__all__ = [
    "UNSANDBOXED",
    "BwrapSandbox",
    "ContainerSandbox",
    "Invocation",
    "Limits",
    "LocalSandbox",
    "NoSandbox",
    "Outcome",
    "RemoteSandbox",
    "Sandbox",
    "allowed_env",
    "bwrap_binary",
    "sandbox_for",
]


def sandbox_for(settings: Settings, *, network: bool = False, redis: Redis | None = None) -> Sandbox:
    """The sandbox `settings.sandbox` (`WAVE_SANDBOX`) names, for a domain that does or does not
    allow network; the container one asks its runner over `redis`, the fleet's."""
    if settings.sandbox == "none":
        return NoSandbox()
    if settings.sandbox == "container":
        if redis is None:
            raise TypeError("the container sandbox needs the fleet's Redis")
        return ContainerSandbox(redis, settings, network=network)
    box = settings.sandbox_container  # the same limits as a container's, per command here
    return BwrapSandbox(network=network, limits=Limits(box.memory_mb, box.pids))
