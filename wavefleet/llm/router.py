"""Which provider answers a call: the task-kind table, per-domain routes, keys, fallback order, breakers.

The router returns the providers to try, in order: the routed one, then (only if that one fails in a
way that is the provider's fault) the next keyed providers of `llm.fallback_order`. A provider with
no key is skipped; a provider whose breaker is open is skipped until its cool-down passes and a probe
call succeeds. Providers are known by name from the registry (`registry.py`). The offline provider is
chosen only as the `llm.offline` setting says, never because a real provider failed.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from ..config import Settings
from ..errors import ConfigError, NoProviderError, ProvidersFailingError
from .breaker import Breakers, BreakerState
from .registry import Registration, check_known, registered
from .types import ProviderName, TaskKind, provider_name

A, X = ProviderName.ANTHROPIC, ProviderName.XAI
DEFAULT_ROUTES: dict[TaskKind, str] = {
    TaskKind.CONSTITUTIONAL_CHECK: X,
    TaskKind.CTO_REVIEW: X,
    TaskKind.SAFETY_PROBE: X,
    TaskKind.ARCHITECTURE_VALIDATION: X,
    TaskKind.CODE_GENERATION: A,
    TaskKind.PLANNING: A,
    TaskKind.QA_ANALYSIS: A,
    TaskKind.DOCUMENTATION: A,
}


@dataclass(frozen=True)
class Route:
    provider: str
    probe: bool = False  # this call is the probe of a breaker whose cool-down has passed
    fallback_from: str | None = None


def parse_routes(raw: Mapping[str, str], where: str) -> dict[TaskKind, str]:
    """Route overrides from settings or domain.toml; an unknown task kind or provider is a configuration
    error."""
    routes = {}
    for task, provider in raw.items():
        try:
            kind = TaskKind(task)
        except ValueError:
            kinds = ", ".join(k.value for k in TaskKind)
            raise ConfigError(f"{where}: unknown task kind {task!r} (known: {kinds})") from None
        try:
            check_known(provider)
        except ValueError as exc:
            raise ConfigError(f"{where}: {task}: {exc}") from None
        routes[kind] = provider_name(provider)
    return routes


class Router:
    def __init__(self, settings: Settings, breakers: Breakers) -> None:
        self.offline_mode = settings.llm.offline
        self.breakers = breakers
        self.registered: dict[str, Registration] = registered()
        self.keyed = {n for n, r in self.registered.items() if r.section(settings).api_key is not None}
        self.order = [provider_name(n) for n in settings.llm.fallback_order]
        self.routes = {**DEFAULT_ROUTES, **parse_routes(settings.llm.routes, "WAVE_LLM__ROUTES")}

    @property
    def offline(self) -> bool:
        """True when every call is answered by the offline provider."""
        return self.offline_mode == "always" or (self.offline_mode == "auto" and not self.keyed)

    def routed(self, task: TaskKind, overrides: Mapping[TaskKind, str] | None = None) -> str:
        """The provider the tables name for `task` (before keys and breakers are considered)."""
        return {**self.routes, **(overrides or {})}[task]

    def primary(self, task: TaskKind, overrides: Mapping[TaskKind, str] | None = None) -> str:
        """The provider a call goes to if its breaker lets it: offline, the routed one, or, when the
        routed one has no key, the first keyed one of the fallback order. Raises NoProviderError if
        no provider may answer."""
        if self.offline:
            return ProviderName.OFFLINE
        routed = self.routed(task, overrides)
        for name in (routed, *self.order):
            if name in self.keyed:
                return name
        variables = " or ".join(r.key_variable for r in self.registered.values())
        if not self.keyed:
            raise NoProviderError(
                f"no model provider has an API key (set {variables}), and WAVE_LLM__OFFLINE=never "
                "forbids offline replies"
            )
        raise NoProviderError(
            f"{routed} has no key and no keyed provider is in WAVE_LLM__FALLBACK_ORDER "
            f"({', '.join(self.order) or 'empty'})"
        )

    def fallbacks(self, primary: str) -> list[Route]:
        """The keyed providers after `primary` in the fallback order (breakers not yet consulted)."""
        return [Route(n, fallback_from=primary) for n in self.order if n != primary and n in self.keyed]

    def plan(self, primary: str, state: tuple[BreakerState, float]) -> list[Route]:
        """The providers to try, in order, given the primary's breaker `state` for this caller; each
        fallback's own breaker is consulted (`check_fallback`) only when the call reaches it."""
        if primary == ProviderName.OFFLINE:
            return [Route(primary)]
        others = self.fallbacks(primary)
        breaker, left_s = state
        if breaker is not BreakerState.OPEN:
            return [Route(primary, probe=breaker is BreakerState.PROBE), *others]
        if not others:
            raise ProvidersFailingError(
                f"{primary} is failing (fallback for {left_s:.0f} s more) and no other provider has a key"
            )
        return others

    def exhausted(self, primary: str, state: tuple[BreakerState, float]) -> ProvidersFailingError:
        """The error of a call that no provider could take: the primary's breaker is open and so is
        every fallback's (not the story's fault: the stage is retried later)."""
        others = ", ".join(r.provider for r in self.fallbacks(primary))
        return ProvidersFailingError(
            f"every provider is failing ({primary} for {state[1]:.0f} s more, and {others}); "
            "the call was not sent"
        )

    def check_fallback(self, route: Route) -> Route | None:
        """A fallback route if its own breaker lets it through now, else None."""
        state, _ = self.breakers.state(route.provider)
        if state is BreakerState.OPEN:
            return None
        return Route(route.provider, probe=state is BreakerState.PROBE, fallback_from=route.fallback_from)
