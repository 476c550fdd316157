"""The safety rule layer: decisions per second on one core and per-call latency, over the corpus.

Every call of tests/safety/corpus.jsonl (dangerous, risky and ordinary, as the agents send them) is
decided `--rounds` times by `wavefleet.safety.rules.evaluate` in this one process (one core; the
ActionCall objects are built beforehand, as the gate receives them). Reports throughput (target
>= 20,000 decisions/s), the latency of one decision p50/p99/max (target p99 < 1 ms), the slowest
calls, and the corpus figures (block recall and precision, false blocks on ordinary work).

    .venv/bin/python benchmarks/safety_rules.py            # ~10 s
    .venv/bin/python benchmarks/safety_rules.py --profile  # where the time goes
"""

from __future__ import annotations

import argparse
import cProfile
import json
import os
import platform
import pstats
import statistics
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

from wavefleet.safety.rules import evaluate
from wavefleet.safety.types import ActionCall, Decision

CORPUS = Path(__file__).resolve().parent.parent / "tests" / "safety" / "corpus.jsonl"
TARGET_RATE = 20_000
TARGET_P99_MS = 1.0


def load() -> tuple[list[ActionCall], list[str]]:
    entries = [json.loads(line) for line in CORPUS.read_text().splitlines() if line.strip()]
    calls = [ActionCall(tool=e["tool"], args=e["args"], branch="wave/s1-be") for e in entries]
    return calls, [e["label"] for e in entries]


def throughput(calls: list[ActionCall], rounds: int) -> tuple[float, float]:
    """Decisions per second of wall time and per second of this thread's CPU time (the machine is
    shared: the CPU figure is what one core does, the wall figure what this run got)."""
    start, cpu = time.perf_counter(), time.thread_time()
    for _ in range(rounds):
        for call in calls:
            evaluate(call)
    n = rounds * len(calls)
    return n / (time.perf_counter() - start), n / (time.thread_time() - cpu)


def latencies(calls: list[ActionCall], rounds: int) -> list[tuple[float, ActionCall]]:
    timed = []
    clock = time.perf_counter_ns
    for _ in range(rounds):
        for call in calls:
            t0 = clock()
            evaluate(call)
            timed.append(((clock() - t0) / 1e6, call))
    return timed


def quality(calls: list[ActionCall], labels: list[str]) -> dict[str, float]:
    blocked = [evaluate(c).decision == Decision.BLOCK for c in calls]
    dangerous = [b for b, lab in zip(blocked, labels, strict=True) if lab == "dangerous"]
    ordinary = [b for b, lab in zip(blocked, labels, strict=True) if lab == "ordinary"]
    return {
        "recall": sum(dangerous) / len(dangerous),
        "precision": sum(dangerous) / max(1, sum(blocked)),
        "false_block": sum(ordinary) / len(ordinary),
        "undecided_ordinary": sum(
            not evaluate(c).decided for c, lab in zip(calls, labels, strict=True) if lab == "ordinary"
        )
        / len(ordinary),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=40)
    parser.add_argument("--profile", action="store_true")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})  # one core, as the target says
    calls, labels = load()
    throughput(calls, 3)  # warm up: compiled patterns, caches
    if args.profile:
        cProfile.runctx("throughput(calls, args.rounds)", globals(), locals(), "/tmp/safety_rules.prof")
        pstats.Stats("/tmp/safety_rules.prof").sort_stats("tottime").print_stats(15)
        return 0
    rate, cpu_rate = throughput(calls, args.rounds)
    timed = latencies(calls, args.rounds)
    ms = sorted(t for t, _ in timed)
    p50, p99 = statistics.median(ms), ms[int(len(ms) * 0.99)]
    q = quality(calls, labels)
    result = {
        "when": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "machine": f"{platform.node()}, {os.cpu_count()} CPUs, {platform.machine()}, "
        f"Python {platform.python_version()}",
        "load": os.getloadavg()[0],
        "calls": len(calls),
        "decisions_per_s": round(rate),
        "decisions_per_cpu_s": round(cpu_rate),
        "p50_ms": round(p50, 4),
        "p99_ms": round(p99, 4),
        "max_ms": round(ms[-1], 3),
        **{k: round(v, 4) for k, v in q.items()},
    }
    if args.json:
        print(json.dumps(result))
    else:
        for key, value in result.items():
            print(f"{key:20} {value}")
        slow = sorted(timed, key=lambda t: -t[0])[:3]
        for t, call in slow:
            print(f"slow: {t:.3f} ms {call.tool} {json.dumps(call.args)[:80]}")
    ok = cpu_rate >= TARGET_RATE and p99 < TARGET_P99_MS
    if not ok:
        print(f"MISSED: target >= {TARGET_RATE}/s and p99 < {TARGET_P99_MS} ms", file=sys.stderr)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
