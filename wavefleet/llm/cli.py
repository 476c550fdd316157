"""The `wave llm`, `wave cache` and `wave budget` commands (registered by `add_commands`)."""

from __future__ import annotations

import argparse
import json
import time
from typing import Any

from .. import logs
from ..app_like import AppLike
from ..arguments import amount, day, whole
from ..budget import MAX_GRANT_TOKENS, MAX_GRANT_USD, Budget, Scope, day_of, scopes_for
from ..domains import Domain
from ..errors import ExitCode, InvalidInputError
from ..money import to_nusd, to_usd
from ..text import terminal_safe
from .accounting import CallTotals, format_call, story_calls
from .cache import ResponseCache
from .client import LLMClient
from .router import DEFAULT_ROUTES
from .types import MAX_TOKENS_PER_CALL, LLMRequest, LLMResponse, Message, TaskKind


def add_commands(sub: Any) -> None:
    """Register `llm`, `cache` and `budget` on the `wave` parser's subparsers."""
    llm = sub.add_parser("llm", help="model calls: try one, list a story's calls, see routing")
    llm_sub = llm.add_subparsers(dest="llm_command", required=True, metavar="SUBCOMMAND")
    p = llm_sub.add_parser("call", help="one model call through the whole LLM layer, end to end")
    p.add_argument("prompt")
    p.add_argument("--task", required=True, choices=[t.value for t in TaskKind])
    p.add_argument("--story", help="charge this story (and its domain) and record the call on it")
    p.add_argument("--domain", help="charge this domain (default: the story's)")
    p.add_argument("--role", default="cli", help="the agent role the call is counted under")
    p.add_argument("--system", default="", help="a system prompt")
    p.add_argument("--max-tokens", type=whole(1, MAX_TOKENS_PER_CALL))
    p.add_argument("--json", action="store_true")
    p.set_defaults(handler=cmd_llm_call)
    p = llm_sub.add_parser("calls", help="every model call recorded on a story")
    p.add_argument("id")
    p.add_argument("--json", action="store_true")
    p.set_defaults(handler=cmd_llm_calls)
    p = llm_sub.add_parser("status", help="where calls go: keys, routes, breakers, rate buckets")
    p.set_defaults(handler=cmd_llm_status)

    p = sub.add_parser("cache", help="the LLM response cache: stats or clear")
    p.add_argument("action", choices=["stats", "clear"])
    p.add_argument("--counters", action="store_true", help="with clear: reset the hit/miss counters too")
    p.set_defaults(handler=cmd_cache)

    p = sub.add_parser("budget", help="spend per scope (fleet and domains today, stories); grant more")
    p.add_argument("action", nargs="?", choices=["show", "grant"], default="show")
    p.add_argument("scope", nargs="?", help="for grant: story:AUTH-001, domain:auth or global (today's)")
    p.add_argument("--story", help="for show: also this story")
    p.add_argument("--date", type=day, help="for show: the UTC day, YYYY-MM-DD (default today)")
    p.add_argument(
        "--usd",
        type=amount(MAX_GRANT_USD),
        help=f"for grant: USD to add to the scope's limit (<= {MAX_GRANT_USD:,.0f})",
    )
    p.add_argument(
        "--tokens",
        type=whole(1, MAX_GRANT_TOKENS),
        help=f"for grant: tokens to add to the scope's limit (<= {MAX_GRANT_TOKENS:,})",
    )
    p.set_defaults(handler=cmd_budget)


# wave llm ------------------------------------------------------------------------------------
def cmd_llm_call(app: AppLike, args: argparse.Namespace) -> int:
    # Warnings (offline, a provider failing over, budget alerts) to stderr; the result is on stdout.
    logs.setup_for("CLI", app.settings, level="warning")
    redis = app.store.redis
    if args.story:
        app.store.get(args.story)  # NotFoundError: never charge or record on a story that does not exist
    client = LLMClient(app.settings, redis)
    request = LLMRequest(
        task=TaskKind(args.task),
        system=args.system,
        messages=(Message.user(args.prompt),),
        max_tokens=args.max_tokens,
    )
    response = client.call(request, story=args.story, domain=args.domain, role=args.role)
    scopes = _call_scopes(app, args)
    uses = [(scope, client.budget.use(scope.name)) for scope in scopes]
    if args.json:
        budget = [
            {
                "scope": s.name,
                "spent_usd": u.spent_usd,
                "limit_usd": to_usd(s.limit_nusd + u.grant_nusd),
                "spent_tokens": u.spent_tokens,
                "limit_tokens": s.limit_tokens + u.grant_tokens,
            }
            for s, u in uses
        ]
        reply = response.model_dump(mode="json")
        print(json.dumps({"mode": client.mode(), "response": reply, "budget": budget}, indent=2))
        return ExitCode.OK
    _print_response(client, response, app.settings.llm.cache_ttl_s)
    for index, (scope, use) in enumerate(uses):
        limit_nusd = scope.limit_nusd + use.grant_nusd
        limit_tokens = scope.limit_tokens + use.grant_tokens
        print(
            f"{'budget:' if index == 0 else '':<10}{scope.label}: ${use.spent_usd:.6f} "
            f"of ${to_usd(limit_nusd):.2f} "
            f"({_share(use.spent_nusd, limit_nusd)}), {use.spent_tokens:,} of {limit_tokens:,} tokens"
        )
    print("--- reply ---")
    print(terminal_safe(response.text, multiline=True))  # a model's reply is untrusted text
    for call in response.tool_calls:
        print(terminal_safe(f"tool call: {call.name}({json.dumps(call.arguments)})"))
    return ExitCode.OK


def _call_scopes(app: AppLike, args: argparse.Namespace) -> list[Scope]:
    domain: Domain | None = None
    if args.story:
        domain = app.domains.for_story(args.story)
    elif args.domain:
        domain = app.domains.get(args.domain)
    return scopes_for(app.settings.budgets, story=args.story, domain=domain, at=time.time())


def _print_response(client: LLMClient, response: LLMResponse, ttl_s: int) -> None:
    usage = response.usage
    if response.offline:
        print(f"{'mode:':<10}OFFLINE: {client.mode()}")
    else:
        print(f"{'mode:':<10}{client.mode()}")
    fallback = f" (fallback from {response.fallback_from})" if response.fallback_from else ""
    print(f"{'provider:':<10}{response.label}{fallback}")
    print(
        f"{'tokens:':<10}in {usage.input_tokens:,} (cache read {usage.cache_read_tokens:,}, write "
        f"{usage.cache_write_tokens:,}) out {usage.output_tokens:,} = {usage.total_tokens:,}"
    )
    print(f"{'cost:':<10}${response.cost_usd:.6f}")
    cache = "HIT: no provider call, $0" if response.cache_hit else f"miss (reply stored for {ttl_s} s)"
    print(f"{'cache:':<10}{cache}")
    print(f"{'latency:':<10}{response.latency_ms:.0f} ms in the provider")


def cmd_llm_calls(app: AppLike, args: argparse.Namespace) -> int:
    app.store.get(args.id)
    entries = story_calls(app.store.redis, app.settings.keys, args.id)
    if args.json:
        print(json.dumps(entries, indent=2))
        return ExitCode.OK
    for entry in entries:
        print(terminal_safe(format_call(entry)))
    totals = CallTotals.of(entries)
    print(
        f"{totals.calls} calls ({totals.cache_hits} from the response cache), {totals.tokens:,} tokens, "
        f"${totals.cost_usd:.6f}"
    )
    return ExitCode.OK


def cmd_llm_status(app: AppLike, args: argparse.Namespace) -> int:
    client = LLMClient(app.settings, app.store.redis)
    print(f"mode: {client.mode()}")
    for task in TaskKind:
        print(
            f"  {task.value:<24} -> {client.router.routed(task)}"
            f"{'' if client.router.routed(task) == DEFAULT_ROUTES[task] else ' (WAVE_LLM__ROUTES)'}"
        )
    for name in client.router.registered:
        breaker = client.breakers.snapshot(name)
        bucket = client.limiter.snapshot(name)
        opened = float(breaker.get("open_until", 0)) / 1000
        state = f"OPEN until {time.strftime('%H:%M:%S', time.localtime(opened))}" if opened else "closed"
        left = (
            f"{float(bucket['req']):.1f} requests and {float(bucket['tok']):,.0f} tokens left"
            if bucket
            else "full (unused for a minute)"
        )
        print(
            f"{name}: breaker {state}, {breaker.get('failures', 0)} consecutive failures, opened "
            f"{breaker.get('opened', 0)} times; rate bucket {left}"
        )
    return ExitCode.OK


# wave cache ----------------------------------------------------------------------------------
def cmd_cache(app: AppLike, args: argparse.Namespace) -> int:
    llm = app.settings.llm
    cache = ResponseCache(
        app.store.redis, app.settings.keys, ttl_s=llm.cache_ttl_s, enabled=llm.cache_enabled
    )
    if args.action == "clear":
        deleted = cache.clear(counters=args.counters)
        print(f"cleared {deleted} cached replies{' and the counters' if args.counters else ''}")
        return ExitCode.OK
    stats = cache.stats()
    print(f"{'PROVIDER':<10} {'ROLE':<8} {'HITS':>8} {'MISSES':>8} {'HIT RATE':>9}")
    for (provider, role), (hits, misses) in sorted(stats.counts.items()):
        print(f"{provider:<10} {role:<8} {hits:>8} {misses:>8} {_rate(hits, misses):>9}")
    print(f"{'all':<10} {'':<8} {stats.hits:>8} {stats.misses:>8} {_rate(stats.hits, stats.misses):>9}")
    print(f"{stats.entries} replies cached (TTL {llm.cache_ttl_s} s, {'on' if llm.cache_enabled else 'OFF'})")
    return ExitCode.OK


def _rate(hits: int, misses: int) -> str:
    return f"{hits / (hits + misses):.1%}" if hits + misses else "-"


# wave budget ---------------------------------------------------------------------------------
def cmd_budget(app: AppLike, args: argparse.Namespace) -> int:
    budget = Budget(app.store.redis, app.settings.keys, app.settings.budgets)
    if args.action == "grant":
        return _grant(app, budget, args)
    day = args.date or day_of(time.time())
    rows = [Scope(f"global:{day}", "global", *_limits(app, None))]
    rows += [
        Scope(f"domain:{d.name}:{day}", f"domain {d.name}", *_limits(app, d, daily=True)) for d in app.domains
    ]
    stories = set(app.store.active_ids()) | ({args.story} if args.story else set())
    for story in sorted(stories):
        domain = app.domains.for_story(story)
        rows.append(Scope(f"story:{story}", f"story {story}", *_limits(app, domain)))
    print(f"budgets on {day} (UTC)")
    print(
        f"{'SCOPE':<22} {'SPENT':>11} {'RESERVED':>10} {'LIMIT':>10} {'USE':>6} {'TOKENS':>13} "
        f"{'LIMIT TOKENS':>14} {'CALLS':>6}"
    )
    for scope in rows:
        use = budget.use(scope.name)
        limit = scope.limit_nusd + use.grant_nusd
        limit_tokens = scope.limit_tokens + use.grant_tokens
        share = _share(use.spent_nusd, limit, use.spent_tokens, limit_tokens)
        print(
            f"{scope.label:<22} {f'${use.spent_usd:.4f}':>11} {f'${to_usd(use.reserved_nusd):.4f}':>10} "
            f"{f'${to_usd(limit):.2f}':>10} {share:>6} {use.spent_tokens:>13,} {limit_tokens:>14,} "
            f"{use.calls:>6}"
        )
    return ExitCode.OK


def _share(*spent_and_limits: int) -> str:
    """The larger of spent/limit over (spent, limit) pairs; "over" for a limit at or below zero (a
    negative grant written before grants were checked must not divide by zero)."""
    pairs = list(zip(spent_and_limits[::2], spent_and_limits[1::2], strict=True))
    if any(limit <= 0 for _, limit in pairs):
        return "over"
    return f"{max(spent / limit for spent, limit in pairs):.1%}"


def _limits(app: AppLike, domain: Domain | None, *, daily: bool = False) -> tuple[int, int]:
    if domain is None:
        return to_nusd(app.settings.budgets.global_daily_usd), app.settings.budgets.global_daily_tokens
    if daily:
        return to_nusd(domain.budgets.daily_usd), domain.budgets.daily_tokens
    return to_nusd(domain.budgets.story_usd), domain.budgets.story_tokens


def _grant(app: AppLike, budget: Budget, args: argparse.Namespace) -> int:
    if not args.scope or (args.usd is None and args.tokens is None):
        raise InvalidInputError("name a scope and an amount: wave budget grant story:AUTH-001 --usd 2")
    kind, _, rest = args.scope.partition(":")
    today = day_of(time.time())
    if kind == "story" and rest:
        app.store.get(rest)
        name = args.scope
    elif kind == "domain" and rest:
        name = f"domain:{app.domains.get(rest).name}:{today}"
    elif kind == "global" and not rest:
        name = f"global:{today}"
    else:
        raise InvalidInputError(f"unknown scope {args.scope!r}: use story:ID, domain:NAME or global")
    usd, tokens = args.usd or 0.0, args.tokens or 0
    use = budget.grant(name, usd=usd, tokens=tokens)
    print(
        f"{name}: limit raised by ${usd:.2f} and {tokens:,} tokens (granted in total "
        f"${to_usd(use.grant_nusd):.2f}, {use.grant_tokens:,} tokens)"
    )
    return ExitCode.OK
