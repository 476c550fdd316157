"""The facade agents call: one `call()` runs routing, cache, budget, rate limit, provider, accounting.

    llm = LLMClient(settings, redis).for_story(story_id, domain_name, role)
    reply = llm.call(LLMRequest(task=TaskKind.PLANNING, system=prompt, messages=(Message.user(text),)))

Order of one call: route (task kind, domain routes, keys, breakers) -> response cache (a hit costs
nothing and ends the call) -> reserve the estimated cost on every budget scope -> take the rate
limit -> the provider -> settle budget and rate limit, close the breaker, store in the cache, record
the call on the story (one pipeline). A provider failure that is the provider's fault counts towards
its breaker, frees the reservation, and the same call is tried once on the other provider.
"""

from __future__ import annotations

import os
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from redis import Redis

from ..budget import Budget, Reservation, scopes_for
from ..config import AnthropicSettings, Settings, XaiSettings
from ..domains import Domain, Domains, load_domains
from ..errors import InvalidInputError, ProviderError, ProviderRateLimitedError
from ..logs import get as get_log
from .accounting import call_entry, record_call
from .breaker import Breakers
from .cache import ResponseCache, request_digest
from .offline import OfflineProvider
from .pricing import Estimate, Prices, estimate, to_nusd
from .ratelimit import Limit, RateLimiter
from .router import Route, Router, parse_routes
from .types import Completion, LLMRequest, LLMResponse, Provider, ProviderName

FREE = Prices(0.0, 0.0, 0.0, 0.0)


@dataclass(frozen=True)
class StoryLLM:
    """The client bound to one stage of one story: what an agent holds."""

    client: LLMClient
    story: str
    domain: str
    role: str

    def call(self, request: LLMRequest) -> LLMResponse:
        return self.client.call(request, story=self.story, domain=self.domain, role=self.role)


class LLMClient:
    def __init__(self, settings: Settings, redis: Redis, *, domains: Domains | None = None,
                 providers: Mapping[ProviderName, Provider] | None = None) -> None:
        self.settings = settings
        self.redis = redis
        self.keys = settings.keys
        self._domains = domains
        self._injected = dict(providers or {})  # tests and benchmarks may pass their own
        self._built: dict[tuple[ProviderName, str], Provider] = {}
        self._pid = os.getpid()
        llm = settings.llm
        self.breakers = Breakers(redis, self.keys, threshold=llm.failures_to_fallback,
                                 cooldown_s=llm.cooldown_s, probe_ttl_s=_longest_call_s(settings))
        self.router = Router(settings, self.breakers)
        self.cache = ResponseCache(redis, self.keys, ttl_s=llm.cache_ttl_s, enabled=llm.cache_enabled)
        self.limiter = RateLimiter(redis, self.keys, {
            ProviderName.ANTHROPIC: Limit(llm.anthropic_requests_per_min, llm.anthropic_tokens_per_min),
            ProviderName.XAI: Limit(llm.xai_requests_per_min, llm.xai_tokens_per_min),
        }, max_wait_s=llm.rate_wait_max_s)
        self.budget = Budget(redis, self.keys, settings.budgets)
        if self.router.offline:
            get_log().warning("LLM calls run OFFLINE: " + self.mode())

    def mode(self) -> str:
        """One line saying where calls go, for logs and `wave llm call`."""
        if self.router.offline_mode == "always":
            return "offline provider for every call (WAVE_LLM__OFFLINE=always); no model is called"
        if self.router.offline:
            return ("no API key set (WAVE_ANTHROPIC__API_KEY, WAVE_XAI__API_KEY): deterministic offline "
                    "replies, no model is called")
        return "live: " + ", ".join(sorted(p.value for p in self.router.keyed))

    def for_story(self, story: str, domain: str, role: str) -> StoryLLM:
        return StoryLLM(self, story, domain, role)

    def call(self, request: LLMRequest, *, story: str | None = None, domain: str | None = None,
             role: str = "-") -> LLMResponse:
        """Answer `request`, charging `story` (and its domain) and the fleet; see the module docstring."""
        dom = self._domain(story, domain)
        where = f"{dom.folder}/domain.toml [models.routes]" if dom else ""
        overrides = parse_routes(dom.models.routes, where) if dom else None
        routes = self.router.plan(request.task, overrides)
        failure: ProviderError | None = None
        for index, planned in enumerate(routes):
            route = planned if index == 0 else self.router.check_fallback(planned)
            if route is None:
                break
            try:
                return self._call_on(route, request, dom, story, role)
            except ProviderError as exc:
                if not exc.counts:
                    raise
                failure = exc
        assert failure is not None
        raise failure

    # One provider ---------------------------------------------------------------------------------
    def _call_on(self, route: Route, request: LLMRequest, dom: Domain | None, story: str | None,
                 role: str) -> LLMResponse:
        provider = self._provider(route.provider, dom)
        max_tokens = request.max_tokens or self.settings.llm.max_tokens
        digest = request_digest(provider.name.value, provider.model, request, max_tokens)
        cached = self.cache.get(digest, provider=provider.name.value, role=role)
        if cached is not None:
            self._unprobed(route)  # a cached reply says nothing of the provider's health
            return self._cache_hit(cached, provider, request, route, story, role)
        prices = self._prices(route.provider, dom)
        est = estimate(request, max_tokens, prices, self.settings.llm.estimate_bytes_per_token)
        scopes = scopes_for(self.settings.budgets, story=story, domain=dom, at=time.time())
        try:
            reservation = self.budget.reserve(scopes, est.cost_nusd, est.tokens, story=story)
        except BaseException:
            self._unprobed(route)
            raise
        try:
            self.limiter.acquire(provider.name.value, est.tokens)
            started = time.perf_counter()
            completion = provider.complete(request, max_tokens)
            latency_ms = (time.perf_counter() - started) * 1000
        except ProviderError as exc:
            self.budget.release(reservation)
            self._failed(provider, exc, route, story)
            raise
        except BaseException:
            self.budget.release(reservation)
            self._unprobed(route)
            raise
        response = self._response(completion, provider, request, route, prices, latency_ms)
        self._settle(response, reservation, est, digest, completion, route, story, role)
        return response

    def _unprobed(self, route: Route) -> None:
        """This call was the probe but never reached the provider: let another call probe."""
        if route.probe:
            self.breakers.release_probe(route.provider.value)

    def _failed(self, provider: Provider, exc: ProviderError, route: Route, story: str | None) -> None:
        if isinstance(exc, ProviderRateLimitedError):
            self.limiter.penalize(provider.name.value, exc.retry_after_s or self.settings.llm.rate_penalty_s)
        if not exc.counts:
            self._unprobed(route)
        failures = self.breakers.failure(provider.name.value) if exc.counts else 0
        get_log(story=story or "-").warning(
            "llm call failed", provider=provider.name.value, model=provider.model, error=str(exc),
            consecutive_failures=failures, counts=exc.counts)

    def _settle(self, response: LLMResponse, reservation: Reservation, est: Estimate, digest: str,
                completion: Completion, route: Route, story: str | None, role: str) -> None:
        name = response.provider.value
        actual_nusd = to_nusd(response.cost_usd)
        with self.redis.pipeline(transaction=False) as pipe:
            tokens = response.usage.total_tokens
            self.budget.settle(reservation, actual_nusd, tokens, story=story, client=pipe)
            self.limiter.settle(name, est.tokens, response.usage.total_tokens, client=pipe)
            if response.provider is not ProviderName.OFFLINE:
                self.breakers.success(name, probe=route.probe, client=pipe)
            self.cache.put(digest, completion, client=pipe)
            if story:
                record_call(pipe, self.keys, story, call_entry(response, role=role))
            replies = pipe.execute()
        self.budget.alerts(reservation, replies[0], story)
        self._log(response, story, role)

    def _cache_hit(self, cached: Completion, provider: Provider, request: LLMRequest, route: Route,
                   story: str | None, role: str) -> LLMResponse:
        response = self._response(cached, provider, request, route, FREE, 0.0, cache_hit=True)
        if story:
            record_call(self.redis, self.keys, story, call_entry(response, role=role))
        self._log(response, story, role)
        return response

    def _response(self, completion: Completion, provider: Provider, request: LLMRequest, route: Route,
                  prices: Prices, latency_ms: float, *, cache_hit: bool = False) -> LLMResponse:
        if cache_hit:
            cost = 0.0
        elif completion.reported_cost_usd is not None:
            cost = completion.reported_cost_usd
        else:
            cost = prices.cost_usd(completion.usage)
        return LLMResponse(
            provider=provider.name, model=provider.model, task=request.task, text=completion.text,
            tool_calls=completion.tool_calls, stop_reason=completion.stop_reason, usage=completion.usage,
            cost_usd=cost, latency_ms=latency_ms, cache_hit=cache_hit,
            offline=provider.name is ProviderName.OFFLINE, fallback_from=route.fallback_from,
        )

    def _log(self, response: LLMResponse, story: str | None, role: str) -> None:
        event = "llm call (OFFLINE: no model was called)" if response.offline else "llm call"
        get_log(story=story or "-").info(
            event, provider=response.provider.value, model=response.model, offline=response.offline,
            task=response.task.value, role=role, tokens=response.usage.total_tokens,
            cost_usd=round(response.cost_usd, 6), cache_hit=response.cache_hit,
            latency_ms=round(response.latency_ms, 1),
            fallback_from=response.fallback_from.value if response.fallback_from else None)

    # Configuration --------------------------------------------------------------------------------
    def _domain(self, story: str | None, domain: str | None) -> Domain | None:
        if story is None and domain is None:
            return None
        if self._domains is None:
            self._domains = load_domains(self.settings.domains_dir)
        found = self._domains.for_story(story) if story else self._domains.get(str(domain))
        if domain is not None and found.name != domain:
            raise InvalidInputError(f"story {story} belongs to domain {found.name}, not {domain}")
        return found

    def _section(self, name: ProviderName, dom: Domain | None) -> AnthropicSettings | XaiSettings:
        if name is ProviderName.ANTHROPIC:
            override = dom.models.anthropic if dom else {}
            return AnthropicSettings.model_validate({**dict(self.settings.anthropic), **override})
        override = dom.models.xai if dom else {}
        return XaiSettings.model_validate({**dict(self.settings.xai), **override})

    def _prices(self, name: ProviderName, dom: Domain | None) -> Prices:
        return FREE if name is ProviderName.OFFLINE else Prices.of(self._section(name, dom))

    def _provider(self, name: ProviderName, dom: Domain | None) -> Provider:
        if name in self._injected:
            return self._injected[name]
        if os.getpid() != self._pid:  # forked: gRPC channels and HTTP pools must not cross a fork
            self._built.clear()
            self._pid = os.getpid()
        overrides: dict[str, Any] = {}
        if dom is not None:
            overrides = dom.models.anthropic if name is ProviderName.ANTHROPIC else dom.models.xai
        cache_key = (name, repr(sorted(overrides.items())))
        if cache_key not in self._built:
            self._built[cache_key] = _build(name, self._section(name, dom) if name is not ProviderName.OFFLINE
                                            else None)
        return self._built[cache_key]


def _build(name: ProviderName, section: Any) -> Provider:
    # Each SDK is imported only when its provider is first used: an offline fleet never loads them.
    if name is ProviderName.ANTHROPIC:
        from .anthropic_provider import AnthropicProvider  # noqa: PLC0415

        return AnthropicProvider(section)
    if name is ProviderName.XAI:
        from .xai_provider import XaiProvider  # noqa: PLC0415

        return XaiProvider(section)
    return OfflineProvider()


def _longest_call_s(settings: Settings) -> float:
    """How long one provider call may take with the SDK's retries: the probe's lock lasts that long."""
    return max(s.timeout_s * (s.max_retries + 1) for s in (settings.anthropic, settings.xai)) + 5.0
