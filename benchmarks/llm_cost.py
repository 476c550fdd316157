"""LLM cost: what the response cache and prompt caching save on an agent workload, and what the
router itself adds to each call.

200 agent calls (PM planning, FE/BE code generation with tools and history, QA analysis, CTO review
and safety checks, spread over 10 stories of two domains), of which 30% repeat an earlier call
exactly, go through the real `LLMClient` (router, cache, budgets, rate limits, accounting) to the
local Anthropic and xAI servers of tests/servers, which bill per token like the services. Four
configurations run on a fresh Redis and fresh servers each: nothing cached, prompt caching only,
response cache only, both (the fleet's default). Reports cost, the hit rate on the repeated calls,
and the router's added latency (call time minus time in the provider).

    .venv/bin/python benchmarks/llm_cost.py            # ~30 s on 2 cores
    .venv/bin/python benchmarks/llm_cost.py --json     # the figures as JSON
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import random
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
from wavefleet import logs  # noqa: E402
from wavefleet.config import AnthropicSettings, LLMSettings, Settings, XaiSettings  # noqa: E402
from wavefleet.connection import connect  # noqa: E402
from wavefleet.domains import load_domains  # noqa: E402
from wavefleet.llm.anthropic_provider import AnthropicProvider  # noqa: E402
from wavefleet.llm.client import LLMClient  # noqa: E402
from wavefleet.llm.types import (  # noqa: E402
    Completion,
    LLMRequest,
    LLMResponse,
    Message,
    Provider,
    ProviderName,
    TaskKind,
    ToolCall,
    ToolResult,
    ToolSpec,
)
from wavefleet.llm.xai_provider import XaiProvider  # noqa: E402
from wavefleet.store import StoryStore  # noqa: E402
from wavefleet.stories import Story  # noqa: E402
from wavefleet.testing import fast_settings, redis_server  # noqa: E402

CALLS = 200
REPEAT_SHARE = 0.30
REPLY_CHARS = 1_600  # ~400 output tokens per reply, a typical agent turn
TARGET_SAVING = 0.25
TARGET_HIT_RATE = 0.95
TARGET_P99_MS = 2.0
HOUSE_RULES = (
    "Follow the repository's conventions. Keep changes small and reviewed. Never touch files outside the "
    "worktree. Write tests first for every behaviour you add, and run them. Explain each decision in one "
    "sentence. Prefer the standard library. Do not add dependencies without a reason. Report what you could "
    "not do. Keep secrets out of code, logs and commits. "
) * 14  # ~5,000 characters: agent system prompts are long, which is what prompt caching is for
CONFIGURATIONS = (  # name, response cache, prompt caching
    ("nothing cached", False, False),
    ("prompt caching only", False, True),
    ("response cache only", True, False),
    ("response cache + prompt caching", True, True),
)
ROLES: dict[str, tuple[TaskKind, bool]] = {  # role -> (task kind, uses tools)
    "pm": (TaskKind.PLANNING, False),
    "fe": (TaskKind.CODE_GENERATION, True),
    "be": (TaskKind.CODE_GENERATION, True),
    "qa": (TaskKind.QA_ANALYSIS, False),
    "cto": (TaskKind.CTO_REVIEW, False),
    "safety": (TaskKind.CONSTITUTIONAL_CHECK, False),
}
TOOLS = tuple(
    ToolSpec(
        name=name,
        description=text,
        input_schema={
            "type": "object",
            "properties": {arg: {"type": "string", "description": f"the {arg}"} for arg in args},
            "required": list(args),
        },
    )
    for name, text, args in (
        ("read_file", "Read a file of the worktree", ("path",)),
        ("write_file", "Write a file of the worktree", ("path", "content")),
        ("list_files", "List a directory of the worktree", ("path",)),
        ("search", "Search the worktree for a pattern", ("pattern",)),
        ("run_command", "Run a command in the sandbox", ("command",)),
        ("finish", "Finish the task with a summary", ("summary",)),
    )
)


@dataclass(frozen=True)
class Call:
    story: str
    role: str
    request: LLMRequest
    repeat: bool


def workload(seed: int = 7) -> list[Call]:
    """CALLS calls; REPEAT_SHARE of them repeat an earlier call exactly, every other call is different."""
    rng = random.Random(seed)
    repeats = set(rng.sample(range(10, CALLS), round(CALLS * REPEAT_SHARE)))
    calls: list[Call] = []
    for index in range(CALLS):
        if index in repeats:
            original = rng.choice([c for c in calls if not c.repeat])
            calls.append(Call(original.story, original.role, original.request, repeat=True))
            continue
        role = rng.choice(list(ROLES))
        story = f"{rng.choice(['AUTH', 'PAYMENTS'])}-{rng.randint(1, 5):03d}"
        task, tools = ROLES[role]
        prompt_file = REPO / "domains" / "auth" / "prompts" / f"{role}.md"
        prompt = prompt_file.read_text() if prompt_file.is_file() else f"You are the {role} agent."
        request = LLMRequest(
            task=task,
            system=f"{prompt}\n\n{HOUSE_RULES}",
            tools=TOOLS if tools else (),
            max_tokens=1024,
            messages=_turns(story, role, index, tools, rng),
        )
        calls.append(Call(story, role, request, repeat=False))
    return calls


def _turns(story: str, role: str, index: int, tools: bool, rng: random.Random) -> tuple[Message, ...]:
    action = rng.choice(["sign in", "reset a password", "refund"])
    ask = Message.user(
        f"Story {story}, step {index}: {role} work on acceptance criterion "
        f"{rng.randint(1, 9)}: users can {action} within {rng.randint(1, 60)} seconds. " * 3
    )
    if not tools:
        return (ask,)
    history: list[Message] = [ask]
    for turn in range(rng.randint(1, 4)):
        call = ToolCall(
            id=f"call_{index}_{turn}", name="read_file", arguments={"path": f"src/module_{turn}.py"}
        )
        source = f"def handler_{turn}():\n    pass\n" * 20
        history += [
            Message.assistant(f"Reading module {turn}.", (call,)),
            Message.results(ToolResult(tool_call_id=call.id, content=source)),
        ]
    return tuple(history)


class Timed:
    """Wraps a provider to keep the CPU time this thread spends inside it (the SDK) apart."""

    def __init__(self, inner: Provider) -> None:
        self.inner, self.name, self.model = inner, inner.name, inner.model
        self.cpu_s = 0.0

    def complete(self, request: LLMRequest, max_tokens: int) -> Completion:
        started = time.thread_time()
        try:
            return self.inner.complete(request, max_tokens)
        finally:
            self.cpu_s += time.thread_time() - started


@dataclass
class Run:
    name: str
    cost_usd: float
    repeats: int
    repeat_hits: int
    unique_hits: int
    overhead_ms: list[float]
    hit_overhead_ms: list[float]
    cpu_ms: list[float]
    budget_spent_usd: float


def run(name: str, calls: list[Call], *, response_cache: bool, prompt_caching: bool, base: Settings) -> Run:
    """One configuration on a fresh Redis and fresh servers (in a process of their own, like a real
    provider: their work does not count against the router's CPU and GIL here)."""
    min_cache_tokens = 1024 if prompt_caching else 10**9  # the local services cache prefixes this long
    servers = subprocess.Popen(
        [
            sys.executable,
            str(REPO / "tests" / "servers" / "run.py"),
            "--reply-chars",
            str(REPLY_CHARS),
            "--min-cache-tokens",
            str(min_cache_tokens),
        ],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert servers.stdout is not None
        where = json.loads(servers.stdout.readline())
        settings = base.model_copy(
            update={
                "anthropic": AnthropicSettings(
                    api_key="test-anthropic-key",
                    base_url=where["anthropic_url"],
                    prompt_caching=prompt_caching,
                    max_retries=0,
                ),
                "xai": XaiSettings(
                    api_key="test-xai-key",
                    api_host=where["xai_host"],
                    use_insecure_channel=True,
                    max_retries=0,
                ),
                "llm": LLMSettings(
                    offline="never",
                    cache_enabled=response_cache,
                    anthropic_requests_per_min=100_000,
                    anthropic_tokens_per_min=100_000_000,
                    xai_requests_per_min=100_000,
                    xai_tokens_per_min=100_000_000,
                ),
            }
        )
        return _run_on(name, calls, settings)
    finally:
        servers.communicate(timeout=30)  # closing its stdin stops it


def _run_on(name: str, calls: list[Call], settings: Settings) -> Run:
    redis = connect(settings)
    domains = load_domains(settings.domains_dir)
    providers = {
        ProviderName.ANTHROPIC: Timed(AnthropicProvider(settings.anthropic)),
        ProviderName.XAI: Timed(XaiProvider(settings.xai)),
    }
    client = LLMClient(settings, redis, domains=domains, providers=providers)
    for task in (TaskKind.DOCUMENTATION, TaskKind.CTO_REVIEW):  # open both connections first
        client.call(LLMRequest(task=task, messages=(Message.user("warm-up"),)))
    redis.flushall()
    stories = [Story(id=s, title=f"story {s}") for s in sorted({c.story for c in calls})]
    StoryStore(redis, settings.keys, 3).enqueue(stories, domains)
    return _measure(name, client, calls, providers)


def _measure(name: str, client: LLMClient, calls: list[Call], providers: dict[ProviderName, Timed]) -> Run:
    """Each call's wall time minus its time in the provider; and the same in this thread's CPU time."""
    result = Run(name, 0.0, 0, 0, 0, [], [], [], 0.0)
    for call in calls:
        in_sdk = sum(p.cpu_s for p in providers.values())
        cpu, started = time.thread_time(), time.perf_counter()
        reply: LLMResponse = client.call(call.request, story=call.story, role=call.role)
        overhead = (time.perf_counter() - started) * 1000 - reply.latency_ms
        sdk_ms = (sum(p.cpu_s for p in providers.values()) - in_sdk) * 1000
        result.cpu_ms.append((time.thread_time() - cpu) * 1000 - sdk_ms)
        result.cost_usd += reply.cost_usd
        (result.hit_overhead_ms if reply.cache_hit else result.overhead_ms).append(overhead)
        if call.repeat:
            result.repeats += 1
            result.repeat_hits += reply.cache_hit
        else:
            result.unique_hits += reply.cache_hit
    day = time.strftime("%Y-%m-%d", time.gmtime())
    result.budget_spent_usd = client.budget.use(f"global:{day}").spent_usd
    return result


def percentile(values: list[float], share: float) -> float:
    if not values:
        return 0.0
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(share * len(ordered)))]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    calls = workload()
    with (
        tempfile.TemporaryDirectory() as tmp,
        redis_server(Path(tmp) / "redis") as server,
        Path(os.devnull).open("w") as devnull,
        contextlib.redirect_stderr(devnull),
    ):
        logs.setup("BENCH", fmt="json", level="info")  # every call logs, as in the fleet; to /dev/null here
        base = fast_settings(server, Path(tmp) / "data", REPO / "domains")
        runs = [
            run(name, calls, response_cache=cache, prompt_caching=prompt, base=base)
            for name, cache, prompt in CONFIGURATIONS
        ]
    report = _report(runs, calls)
    print(json.dumps(report, indent=2) if args.json else _text(report))
    return 0 if report["targets_met"] else 1


def _report(runs: list[Run], calls: list[Call]) -> dict[str, Any]:
    baseline, best = runs[0], runs[-1]
    saving = 1 - best.cost_usd / baseline.cost_usd
    hit_rate = best.repeat_hits / best.repeats
    all_overheads = best.overhead_ms + best.hit_overhead_ms
    p99 = percentile(all_overheads, 0.99)
    return {
        "calls": len(calls),
        "repeats": sum(c.repeat for c in calls),
        "runs": [
            {
                "name": r.name,
                "cost_usd": round(r.cost_usd, 6),
                "budget_spent_usd": round(r.budget_spent_usd, 6),
                "saving": round(1 - r.cost_usd / baseline.cost_usd, 4),
                "repeat_hit_rate": round(r.repeat_hits / r.repeats, 4),
                "unique_hits": r.unique_hits,
            }
            for r in runs
        ],
        "saving": round(saving, 4),
        "repeat_hit_rate": round(hit_rate, 4),
        "router_cpu_ms": {
            "p50": round(statistics.median(best.cpu_ms), 3),
            "p99": round(percentile(best.cpu_ms, 0.99), 3),
        },
        "router_ms": {
            "p50": round(statistics.median(all_overheads), 3),
            "p99": round(p99, 3),
            "max": round(max(all_overheads), 3),
            "miss_p99": round(percentile(best.overhead_ms, 0.99), 3),
            "hit_p99": round(percentile(best.hit_overhead_ms, 0.99), 3),
        },
        "targets": {
            "saving": TARGET_SAVING,
            "repeat_hit_rate": TARGET_HIT_RATE,
            "router_p99_ms": TARGET_P99_MS,
        },
        "targets_met": saving >= TARGET_SAVING and hit_rate >= TARGET_HIT_RATE and p99 < TARGET_P99_MS,
        "machine": f"{platform.node()} {platform.machine()} {os.cpu_count()} cpus, "
        f"Python {platform.python_version()}, load {os.getloadavg()[0]:.1f}",
        "date": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
    }


def _text(report: dict[str, Any]) -> str:
    lines = [
        f"LLM cost: {report['calls']} agent calls, {report['repeats']} exact repeats of earlier calls",
        f"{'configuration':<34} {'cost':>10} {'saving':>8} {'repeat hits':>12} {'false hits':>11}",
    ]
    for r in report["runs"]:
        lines.append(
            f"{r['name']:<34} {'$' + format(r['cost_usd'], '.4f'):>10} {r['saving']:>8.1%} "
            f"{r['repeat_hit_rate']:>12.1%} {r['unique_hits']:>11}"
        )
    ms = report["router_ms"]
    cpu = report["router_cpu_ms"]
    lines += [
        f"cost saving {report['saving']:.1%} (target >= {TARGET_SAVING:.0%}); hit rate on exact "
        f"repeats {report['repeat_hit_rate']:.1%} (target >= {TARGET_HIT_RATE:.0%})",
        f"router added latency per call: p50 {ms['p50']} ms, p99 {ms['p99']} ms "
        f"(target < {TARGET_P99_MS} ms), max {ms['max']} ms; misses p99 {ms['miss_p99']} ms, "
        f"cache hits p99 {ms['hit_p99']} ms",
        f"router CPU time per call (this thread, SDK excluded): p50 {cpu['p50']} ms, p99 {cpu['p99']} ms",
        f"{report['machine']}; {report['date']}",
    ]
    checks = (
        ("cost saving", report["saving"] >= TARGET_SAVING),
        ("hit rate on exact repeats", report["repeat_hit_rate"] >= TARGET_HIT_RATE),
        ("router p99", ms["p99"] < TARGET_P99_MS),
    )
    lines += [f"{'PASS' if ok else 'MISS'}: {name}" for name, ok in checks]
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
