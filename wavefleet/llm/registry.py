"""The provider registry: every model service the router may use, by name, with its settings section.

A provider is one class (`complete(request, max_tokens) -> Completion`, see `types.Provider`) built
from its settings section; registering it here, and naming it in `llm.fallback_order` (or a route),
is all the router, budgets, rate limits, breakers and accounting need:

    register(Registration("mistral", "wavefleet.llm.mistral_provider:MistralProvider",
                          section=lambda s: s.mistral, key_variable="WAVE_MISTRAL__API_KEY"))

The class is named by its import path so its SDK is imported only when the provider is first used
(or by `LLMClient.preload` in a forking worker): an offline fleet never loads any SDK. This module
imports nothing of the settings at run time, so `config` may consult it while validating.
"""

from __future__ import annotations

import importlib
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

from .types import ProviderName

if TYPE_CHECKING:
    from pydantic import SecretStr

    from ..config import Settings
    from ..domains import Domain
    from .types import Provider

NAME = re.compile(r"^[a-z][a-z0-9_]{0,31}$")


class ProviderSection(Protocol):
    """What the fleet reads from a provider's settings section (a pydantic model)."""

    @property
    def api_key(self) -> SecretStr | None: ...
    @property
    def model(self) -> str: ...
    @property
    def price_input_per_mtok_usd(self) -> float: ...
    @property
    def price_output_per_mtok_usd(self) -> float: ...
    @property
    def price_cache_read_per_mtok_usd(self) -> float: ...
    @property
    def timeout_s(self) -> float: ...
    @property
    def max_retries(self) -> int: ...


def _no_limit(settings: Settings) -> tuple[int, int]:
    return (0, 0)


def _no_overrides(domain: Domain) -> Mapping[str, Any]:
    return {}


@dataclass(frozen=True)
class Registration:
    """One provider: its name, its class, and where its settings, rate limits and overrides are."""

    name: str
    provider: str | Callable[[Any], Provider]  # "module:Class" (imported on first use) or the class
    section: Callable[[Settings], ProviderSection]  # its settings; keyed when `api_key` is set
    key_variable: str  # where an operator sets its key, for messages
    # (requests/min, tokens/min) shared by the fleet; 0 means no limit
    limits: Callable[[Settings], tuple[int, int]] = field(default=_no_limit)
    # a domain's `[models.<name>]` settings over the section's
    domain_overrides: Callable[[Domain], Mapping[str, Any]] = field(default=_no_overrides)

    def factory(self) -> Callable[[Any], Provider]:
        if not isinstance(self.provider, str):
            return self.provider
        module, _, attribute = self.provider.partition(":")
        built: Callable[[Any], Provider] = getattr(importlib.import_module(module), attribute)
        return built

    def build(self, section: ProviderSection) -> Provider:
        return self.factory()(section)

    def preload(self) -> None:
        """Import the provider's module (and so its SDK) now."""
        self.factory()


_REGISTRY: dict[str, Registration] = {}


def register(registration: Registration) -> Registration:
    """Add a provider (or replace one of the same name); the registration order is the listing order."""
    if not NAME.match(registration.name) or registration.name == ProviderName.OFFLINE:
        raise ValueError(
            f"provider name {registration.name!r}: lower-case letters, digits and _, not 'offline'"
        )
    _REGISTRY[registration.name] = registration
    return registration


def unregister(name: str) -> None:
    _REGISTRY.pop(name, None)


def registered() -> dict[str, Registration]:
    """The providers by name, in registration order (a copy: a client keeps the set it started with)."""
    return dict(_REGISTRY)


def check_known(name: str) -> None:
    """Raise ValueError (one line, for a settings validator) unless `name` is a registered provider."""
    if name == ProviderName.OFFLINE:
        raise ValueError("'offline' is chosen only by WAVE_LLM__OFFLINE, never by a route or a fallback")
    if name not in _REGISTRY:
        raise ValueError(f"unknown provider {name!r} (registered: {', '.join(_REGISTRY)})")


def check_order(names: list[str]) -> None:
    """Raise ValueError if a name in a fallback order is unknown or repeated."""
    for index, name in enumerate(names):
        check_known(name)
        if name in names[:index]:
            raise ValueError(f"{name!r} is listed twice")


register(
    Registration(
        ProviderName.ANTHROPIC,
        "wavefleet.llm.anthropic_provider:AnthropicProvider",
        section=lambda s: s.anthropic,
        key_variable="WAVE_ANTHROPIC__API_KEY",
        limits=lambda s: (s.llm.anthropic_requests_per_min, s.llm.anthropic_tokens_per_min),
        domain_overrides=lambda d: d.models.anthropic,
    )
)
register(
    Registration(
        ProviderName.XAI,
        "wavefleet.llm.xai_provider:XaiProvider",
        section=lambda s: s.xai,
        key_variable="WAVE_XAI__API_KEY",
        limits=lambda s: (s.llm.xai_requests_per_min, s.llm.xai_tokens_per_min),
        domain_overrides=lambda d: d.models.xai,
    )
)
