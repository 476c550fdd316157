"""Which provider answers a call: the task-kind table, per-domain routes, keys, offline, breakers.

The router returns the providers to try, in order: the routed one, then (only if that one fails in a
way that is the provider's fault) the other. A provider with no key is skipped; a provider whose
breaker is open is skipped until its cool-down passes and a probe call succeeds. The offline provider
is chosen only as the `llm.offline` setting says, never because a real provider failed.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from ..config import Settings
from ..errors import ConfigError, NoProviderError, ProvidersFailingError
from .breaker import Breakers, BreakerState
from .types import ProviderName, TaskKind

A, X = ProviderName.ANTHROPIC, ProviderName.XAI
DEFAULT_ROUTES: dict[TaskKind, ProviderName] = {
    TaskKind.CONSTITUTIONAL_CHECK: X,
    TaskKind.CTO_REVIEW: X,
    TaskKind.SAFETY_PROBE: X,
    TaskKind.ARCHITECTURE_VALIDATION: X,
    TaskKind.CODE_GENERATION: A,
    TaskKind.PLANNING: A,
    TaskKind.QA_ANALYSIS: A,
    TaskKind.DOCUMENTATION: A,
}
OTHER = {A: X, X: A}


@dataclass(frozen=True)
class Route:
    provider: ProviderName
    probe: bool = False  # this call is the probe of a breaker whose cool-down has passed
    fallback_from: ProviderName | None = None


def parse_routes(raw: Mapping[str, str], where: str) -> dict[TaskKind, ProviderName]:
    """Route overrides from settings or domain.toml; an unknown task kind is a configuration error."""
    routes = {}
    for task, provider in raw.items():
        try:
            routes[TaskKind(task)] = ProviderName(provider)
        except ValueError:
            kinds = ", ".join(k.value for k in TaskKind)
            raise ConfigError(f"{where}: unknown task kind {task!r} (known: {kinds})") from None
    return routes


class Router:
    def __init__(self, settings: Settings, breakers: Breakers) -> None:
        self.offline_mode = settings.llm.offline
        self.breakers = breakers
        self.keyed = {p for p, s in ((A, settings.anthropic), (X, settings.xai)) if s.api_key is not None}
        self.routes = {**DEFAULT_ROUTES, **parse_routes(settings.llm.routes, "WAVE_LLM__ROUTES")}

    @property
    def offline(self) -> bool:
        """True when every call is answered by the offline provider."""
        return self.offline_mode == "always" or (self.offline_mode == "auto" and not self.keyed)

    def routed(
        self, task: TaskKind, overrides: Mapping[TaskKind, ProviderName] | None = None
    ) -> ProviderName:
        """The provider the tables name for `task` (before keys and breakers are considered)."""
        return {**self.routes, **(overrides or {})}[task]

    def primary(
        self, task: TaskKind, overrides: Mapping[TaskKind, ProviderName] | None = None
    ) -> ProviderName:
        """The provider a call goes to if its breaker lets it: offline, the routed one, or, when the
        routed one has no key, the keyed one. Raises NoProviderError if no provider may answer."""
        if self.offline:
            return ProviderName.OFFLINE
        if not self.keyed:
            raise NoProviderError(
                "no model provider has an API key (set WAVE_ANTHROPIC__API_KEY or "
                "WAVE_XAI__API_KEY), and WAVE_LLM__OFFLINE=never forbids offline replies"
            )
        routed = self.routed(task, overrides)
        return routed if routed in self.keyed else OTHER[routed]

    def plan(self, primary: ProviderName, state: tuple[BreakerState, float]) -> list[Route]:
        """The providers to try, in order, given the primary's breaker `state` for this caller."""
        if primary is ProviderName.OFFLINE:
            return [Route(primary)]
        other = OTHER[primary] if OTHER[primary] in self.keyed else None
        breaker, left_s = state
        if breaker is not BreakerState.OPEN:
            first = Route(primary, probe=breaker is BreakerState.PROBE)
            return [first, Route(other, fallback_from=primary)] if other else [first]
        if other is None:
            raise ProvidersFailingError(
                f"{primary.value} is failing (fallback for {left_s:.0f} s more) and no "
                "other provider has a key"
            )
        fallback = self.check_fallback(Route(other, fallback_from=primary))
        if fallback is None:
            raise ProvidersFailingError(
                f"both providers are failing ({primary.value} for {left_s:.0f} s more, and "
                f"{other.value}); the call was not sent"
            )
        return [fallback]

    def check_fallback(self, route: Route) -> Route | None:
        """A fallback route if its own breaker lets it through now, else None."""
        state, _ = self.breakers.state(route.provider)
        if state is BreakerState.OPEN:
            return None
        return Route(route.provider, probe=state is BreakerState.PROBE, fallback_from=route.fallback_from)
