"""Sandboxes: where the commands that run work (a domain's tests, agent commands) are run.

`Sandbox` is the interface; `BwrapSandbox` (bubblewrap) is the local one and the default,
`NoSandbox` the operator's explicit, loudly labelled opt-out (`WAVE_SANDBOX=none`). The container
sandbox of a later issue plugs in behind the same interface.
"""

from __future__ import annotations

from .base import UNSANDBOXED, Invocation, NoSandbox, Sandbox, allowed_env
from .bwrap import BwrapSandbox, bwrap_binary

__all__ = [
    "UNSANDBOXED",
    "BwrapSandbox",
    "Invocation",
    "NoSandbox",
    "Sandbox",
    "allowed_env",
    "bwrap_binary",
    "sandbox_for",
]


def sandbox_for(mode: str, *, network: bool = False) -> Sandbox:
    """The sandbox a `WAVE_SANDBOX` mode names, for a domain that does or does not allow network."""
    if mode == "none":
        return NoSandbox()
    return BwrapSandbox(network=network)
