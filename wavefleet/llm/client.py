"""The facade agents call: one `call()` runs routing, cache, budget, rate limit, provider, accounting.

    llm = LLMClient(settings, redis).for_story(story_id, domain_name, role)
    reply = llm.call(LLMRequest(task=TaskKind.PLANNING, system=prompt, messages=(Message.user(text),)))

One call, in three Redis round trips around the provider: (1) the routed provider's breaker state
and the response cache (a hit costs nothing and ends the call, whatever the breaker says); (2) the
estimated cost reserved on every budget scope (story, domain today, fleet today: refused as a whole,
BudgetExceededError holds the story) and a first try at the rate limit (bounded waits after it);
then the provider; (3) settle budget and rate limit, close the breaker, store the reply, count the
miss and record the call on the story. A failure that is the provider's fault counts towards its
breaker, frees the reservation, and the same call is tried on the next keyed provider of
`llm.fallback_order` whose breaker lets it; a request the provider refused as invalid is raised as it
is. Providers come from the registry (`registry.py`). Offline answers only as `llm.offline` says.
"""

from __future__ import annotations

import hashlib
import os
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace
from typing import Any

from redis import Redis

from ..batch import Batch
from ..budget import Budget, Reservation, scopes_for
from ..config import Settings
from ..domains import Domain, Domains, load_domains
from ..errors import BudgetExceededError, InvalidInputError, ProviderError, ProviderRateLimitedError
from ..logs import get as get_log
from ..money import to_nusd
from .accounting import call_entry, count_call, record_call
from .breaker import Breakers, BreakerState, parse_state
from .cache import ResponseCache, canonical_json, request_digest
from .offline import OfflineProvider
from .pricing import Estimate, Prices, estimate
from .ratelimit import Limit, RateLimiter
from .registry import ProviderSection, Registration, registered
from .router import Route, Router, parse_routes
from .types import Completion, LLMRequest, LLMResponse, Provider, ProviderName, TaskKind

FREE = Prices(0.0, 0.0, 0.0, 0.0)


@dataclass(frozen=True)
class StoryLLM:
    """The client bound to one stage of one story: what an agent holds."""

    client: LLMClient
    story: str
    domain: str
    role: str

    def call(self, request: LLMRequest) -> LLMResponse:
        """`request` charged to this story; its calls share a prompt-cache key unless it names one."""
        if not request.cache_key:
            request = request.model_copy(update={"cache_key": self.cache_key})
        return self.client.call(request, story=self.story, domain=self.domain, role=self.role)

    @property
    def cache_key(self) -> str:
        # a digest: the provider needs a stable key, not the story's name
        digest = hashlib.sha256(f"{self.domain}\n{self.story}\n{self.role}".encode()).hexdigest()
        return f"wave-{digest[:24]}"


@dataclass(frozen=True)
class _Attempt:
    """One call on one provider."""

    route: Route
    provider: Provider
    request: LLMRequest
    domain: Domain | None
    story: str | None
    role: str
    max_tokens: int
    digest: str  # the response-cache key of this request on this provider and model
    size: int  # bytes of the request's content, for the estimate

    def response(
        self, completion: Completion, cost_usd: float, latency_ms: float, *, cache_hit: bool = False
    ) -> LLMResponse:
        return LLMResponse(
            provider=self.provider.name,
            model=self.provider.model,
            task=self.request.task,
            text=completion.text,
            tool_calls=completion.tool_calls,
            stop_reason=completion.stop_reason,
            usage=completion.usage,
            cost_usd=cost_usd,
            latency_ms=latency_ms,
            cache_hit=cache_hit,
            offline=self.provider.name is ProviderName.OFFLINE,
            fallback_from=self.route.fallback_from,
        )


@dataclass(frozen=True)
class _Spend:
    """What a successful call settles: its reservation, estimate and reply."""

    reservation: Reservation
    estimate: Estimate
    completion: Completion


class LLMClient:
    def __init__(
        self,
        settings: Settings,
        redis: Redis,
        *,
        domains: Domains | None = None,
        providers: Mapping[str, Provider] | None = None,
    ) -> None:
        self.settings = settings
        self.redis = redis
        self.keys = settings.keys
        self._domains = domains
        self._injected = dict(providers or {})  # tests and benchmarks may pass their own
        self._built: dict[tuple[str, str], Provider] = {}
        self._sections: dict[tuple[str, str], ProviderSection] = {}
        self._pid = os.getpid()
        llm = settings.llm
        providers_now = registered()
        self.breakers = Breakers(
            redis,
            self.keys,
            threshold=llm.failures_to_fallback,
            cooldown_s=llm.cooldown_s,
            probe_ttl_s=_longest_call_s(settings, providers_now.values()),
        )
        self.router = Router(settings, self.breakers)
        self.cache = ResponseCache(redis, self.keys, ttl_s=llm.cache_ttl_s, enabled=llm.cache_enabled)
        self.limiter = RateLimiter(
            redis,
            self.keys,
            {name: Limit(*r.limits(settings)) for name, r in providers_now.items()},
            max_wait_s=llm.rate_wait_max_s,
        )
        self.budget = Budget(redis, self.keys, settings.budgets)
        if self.router.offline:
            get_log().warning("LLM calls run OFFLINE: " + self.mode())

    def mode(self) -> str:
        """One line saying where calls go, for logs and `wave llm call`."""
        if self.router.offline_mode == "always":
            return "offline provider for every call (WAVE_LLM__OFFLINE=always); no model is called"
        if self.router.offline:
            variables = ", ".join(r.key_variable for r in self.router.registered.values())
            return f"no API key set ({variables}): deterministic offline replies, no model is called"
        return "live: " + ", ".join(sorted(self.router.keyed))

    def preload(self) -> None:
        """Import the SDKs of the keyed providers now (anthropic takes seconds to import).

        A forking worker calls this once before it forks, so no job pays the import; SDK clients
        themselves (sockets, gRPC channels) are still built after the fork, on first use.
        """
        if not self.router.offline:
            for name in sorted(self.router.keyed):
                self.router.registered[name].preload()

    def for_story(self, story: str, domain: str, role: str) -> StoryLLM:
        return StoryLLM(self, story, domain, role)

    def call(
        self, request: LLMRequest, *, story: str | None = None, domain: str | None = None, role: str = "-"
    ) -> LLMResponse:
        """Answer `request`, charging `story` (and its domain) and the fleet; see the module docstring."""
        dom = self._domain(story, domain)
        primary = self.router.primary(request.task, self._routes(dom))
        first = self._on(Route(primary), request, dom, story, role)
        state, cached = self._look_up(first)
        if cached is not None:  # a stored reply is served whatever the provider's health: no call is made
            return self._attempt(
                replace(first, route=Route(primary, probe=state[0] is BreakerState.PROBE)), cached
            )
        failure: ProviderError | None = None
        for planned in self.router.plan(primary, state):
            route = self.router.check_fallback(planned) if planned.fallback_from else planned
            if route is None:
                continue  # this fallback's breaker is open too: the next one in the order
            try:
                if route.provider == primary:
                    return self._attempt(replace(first, route=route), None)
                at = self._on(route, request, dom, story, role)
                return self._attempt(at, self._look_up(at, breaker=False)[1])
            except ProviderError as exc:
                if not exc.counts:
                    raise
                failure = exc
        raise failure if failure is not None else self.router.exhausted(primary, state)

    def _on(
        self, route: Route, request: LLMRequest, dom: Domain | None, story: str | None, role: str
    ) -> _Attempt:
        provider = self._provider(route.provider, dom)
        max_tokens = request.max_tokens or self.settings.llm.max_tokens
        canonical = canonical_json(request)
        digest = request_digest(str(provider.name), provider.model, max_tokens, canonical)
        return _Attempt(route, provider, request, dom, story, role, max_tokens, digest, len(canonical))

    def _look_up(
        self, at: _Attempt, *, breaker: bool = True
    ) -> tuple[tuple[BreakerState, float], Completion | None]:
        """One round trip: the provider's breaker state for this caller and its cache entry."""
        batch = Batch(self.redis)
        real = breaker and at.provider.name != ProviderName.OFFLINE
        state_index = self.breakers.queue_state(batch, str(at.provider.name)) if real else None
        entry_index = self.cache.queue_get(batch, at.digest) if at.request.use_cache else None
        replies = batch.execute() if batch.queued else []
        state = parse_state(replies[state_index]) if state_index is not None else (BreakerState.CLOSED, 0.0)
        return state, self.cache.parse(replies[entry_index]) if entry_index is not None else None

    # One provider ---------------------------------------------------------------------------------
    def _attempt(self, at: _Attempt, cached: Completion | None) -> LLMResponse:
        if cached is not None:
            self._unprobed(at.route)  # a cached reply says nothing of the provider's health
            return self._cache_hit(at, cached)
        prices = self._prices(at.route.provider, at.domain)
        est = estimate(
            at.size, bool(at.request.tools), at.max_tokens, prices, self.settings.llm.estimate_bytes_per_token
        )
        try:
            reservation, first_try = self._reserve(at, est)
        except BaseException:
            self._unprobed(at.route)
            raise
        try:
            self.limiter.acquire(str(at.provider.name), est.tokens, first=first_try)
            started = time.perf_counter()
            completion = at.provider.complete(at.request, at.max_tokens)
            latency_ms = (time.perf_counter() - started) * 1000
        except ProviderError as exc:
            self.budget.release(reservation)
            self._failed(at, exc)
            raise
        except BaseException:
            self.budget.release(reservation)
            self._unprobed(at.route)
            raise
        response = at.response(completion, _cost(completion, prices), latency_ms)
        self._settle(at, response, _Spend(reservation, est, completion))
        return response

    def _reserve(self, at: _Attempt, est: Estimate) -> tuple[Reservation, int | None]:
        """One round trip: reserve the estimate on every budget scope and try the rate limit."""
        name = str(at.provider.name)
        scopes = scopes_for(self.settings.budgets, story=at.story, domain=at.domain, at=time.time())
        batch = Batch(self.redis)
        reserved, reservation = self.budget.queue_reserve(batch, scopes, est.cost_nusd, est.tokens)
        tried = self.limiter.queue_acquire(batch, name, est.tokens)
        replies = batch.execute()
        first_try = int(replies[tried]) if tried is not None else None
        try:
            self.budget.confirm(replies[reserved], reservation, at.story)
        except BudgetExceededError:
            if first_try == 0:
                self.limiter.refund(name, est.tokens)
            self._count_miss(at, self.redis)
            raise
        return reservation, first_try

    def _count_miss(self, at: _Attempt, target: Redis | Batch) -> None:
        if at.request.use_cache:  # a request that skipped the cache did not miss it
            self.cache.count(target, provider=str(at.provider.name), role=at.role, hit=False)

    def _unprobed(self, route: Route) -> None:
        """This call was the probe but never reached the provider: let another call probe."""
        if route.probe:
            self.breakers.release_probe(str(route.provider))

    def _failed(self, at: _Attempt, exc: ProviderError) -> None:
        name = str(at.provider.name)
        if isinstance(exc, ProviderRateLimitedError):
            self.limiter.penalize(name, exc.retry_after_s or self.settings.llm.rate_penalty_s)
        if not exc.counts:
            self._unprobed(at.route)
        self._count_miss(at, self.redis)
        failures = self.breakers.failure(name) if exc.counts else 0
        get_log(story=at.story or "-").warning(
            "llm call failed",
            provider=name,
            model=at.provider.model,
            error=str(exc),
            consecutive_failures=failures,
            counts=exc.counts,
        )

    def _settle(self, at: _Attempt, response: LLMResponse, spend: _Spend) -> None:
        """Everything after a successful provider call, in one round trip."""
        name, tokens = str(response.provider), response.usage.total_tokens
        batch = Batch(self.redis)
        cost = to_nusd(response.cost_usd)
        settled = self.budget.settle(spend.reservation, cost, tokens, story=at.story, batch=batch)
        self.limiter.settle(name, spend.estimate.tokens, tokens, batch=batch)
        if response.provider != ProviderName.OFFLINE:
            self.breakers.success(name, probe=at.route.probe, batch=batch)
        self.cache.put(at.digest, spend.completion, batch=batch)
        self._count_miss(at, batch)
        count_call(batch, self.keys, response)
        if at.story:
            record_call(batch, self.keys, at.story, call_entry(response, role=at.role))
        replies = batch.execute()
        self.budget.alerts(spend.reservation, replies[settled], at.story)
        self._log(response, at)

    def _cache_hit(self, at: _Attempt, cached: Completion) -> LLMResponse:
        response = at.response(cached, 0.0, 0.0, cache_hit=True)
        batch = Batch(self.redis)
        self.cache.count(batch, provider=str(response.provider), role=at.role, hit=True)
        count_call(batch, self.keys, response)
        if at.story:
            record_call(batch, self.keys, at.story, call_entry(response, role=at.role))
        batch.execute()
        self._log(response, at)
        return response

    def _log(self, response: LLMResponse, at: _Attempt) -> None:
        event = "llm call (OFFLINE: no model was called)" if response.offline else "llm call"
        get_log(story=at.story or "-").info(
            event,
            provider=str(response.provider),
            model=response.model,
            offline=response.offline,
            task=response.task.value,
            role=at.role,
            tokens=response.usage.total_tokens,
            cost_usd=round(response.cost_usd, 6),
            cache_hit=response.cache_hit,
            latency_ms=round(response.latency_ms, 1),
            fallback_from=str(response.fallback_from) if response.fallback_from else None,
        )

    # Configuration --------------------------------------------------------------------------------
    def _routes(self, dom: Domain | None) -> dict[TaskKind, str] | None:
        return parse_routes(dom.models.routes, f"{dom.folder}/domain.toml [models.routes]") if dom else None

    def _domain(self, story: str | None, domain: str | None) -> Domain | None:
        if story is None and domain is None:
            return None
        if self._domains is None:
            self._domains = load_domains(self.settings.domains_dir)
        found = self._domains.for_story(story) if story else self._domains.get(str(domain))
        if domain is not None and found.name != domain:
            raise InvalidInputError(f"story {story} belongs to domain {found.name}, not {domain}")
        return found

    def _section(self, name: str, dom: Domain | None) -> ProviderSection:
        """The provider's settings with the domain's `[models]` overrides applied (built once each)."""
        key = (name, dom.name if dom else "")
        if key not in self._sections:
            registration = self.router.registered[name]
            base: Any = registration.section(self.settings)
            override = registration.domain_overrides(dom) if dom else {}
            self._sections[key] = type(base).model_validate({**dict(base), **override}) if override else base
        return self._sections[key]

    def _prices(self, name: str, dom: Domain | None) -> Prices:
        return FREE if name == ProviderName.OFFLINE else Prices.of(self._section(name, dom))

    def _provider(self, name: str, dom: Domain | None) -> Provider:
        if name in self._injected:
            return self._injected[name]
        if os.getpid() != self._pid:  # forked: gRPC channels and HTTP pools must not cross a fork
            self._built.clear()
            self._pid = os.getpid()
        if name == ProviderName.OFFLINE:
            return self._built.setdefault((name, ""), OfflineProvider())
        registration = self.router.registered[name]
        overrides = registration.domain_overrides(dom) if dom else {}
        cache_key = (name, repr(sorted(overrides.items())))  # domains with the same overrides share it
        if cache_key not in self._built:
            self._built[cache_key] = registration.build(self._section(name, dom))
        return self._built[cache_key]


def _longest_call_s(settings: Settings, providers: Iterable[Registration]) -> float:
    """How long one provider call may take with the SDK's retries: the probe's lock lasts that long."""
    sections = [r.section(settings) for r in providers]
    return max((s.timeout_s * (s.max_retries + 1) for s in sections), default=0.0) + 5.0


def _cost(completion: Completion, prices: Prices) -> float:
    """The provider's own bill when it reports one, else our prices applied to the usage."""
    if completion.reported_cost_usd is not None:
        return completion.reported_cost_usd
    return prices.cost_usd(completion.usage)
