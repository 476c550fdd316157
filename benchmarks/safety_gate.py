"""The safety gate's added latency per tool call when the rules decide (issue 12: p99 < 1 ms).

Every call of tests/safety/corpus.jsonl goes, as a `ToolCall` from a model, through the gate the
workers use (`workers/agent/safety_gate.SafetyToolGate.authorize`: arguments to an ActionCall, the
rule layer, and for a block the counter write to a real redis-server, for an escalation the review
queue's write), and, in the same run, through `AllowAll` (the gate before safety existed) as the
reference. Only the calls the rules decide are timed (an undecided call waits for the judge, a model
call measured with the LLM layer). The judge is off, so nothing leaves this machine.

Reported by decision: p50 / p99 / max of the gate's time minus the reference's median, and the p99 of
its CPU time (this thread's), which a loaded machine's scheduling does not inflate: when wall p99 is
far above CPU p99 the machine was busy, not the gate slow (a block's Redis round trip is wall, not CPU).

    .venv/bin/python benchmarks/safety_gate.py             # ~10 s
    .venv/bin/python benchmarks/safety_gate.py --rounds 20
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

from wavefleet.connection import connect
from wavefleet.domains import load_domains
from wavefleet.lifecycle import Role
from wavefleet.llm.client import LLMClient
from wavefleet.llm.types import ToolCall
from wavefleet.safety.rules import evaluate
from wavefleet.safety.types import ActionCall
from wavefleet.stories import Story
from wavefleet.testing import fast_settings, redis_server
from workers.agent.context import AllowAll, ToolGate
from workers.agent.safety_gate import safety_gate_for
from workers.roles import StageInput

REPO = Path(__file__).resolve().parent.parent
CORPUS = REPO / "tests" / "safety" / "corpus.jsonl"
TARGET_P99_MS = 1.0


def load() -> list[ToolCall]:
    """The corpus calls the rules decide, as a model sends them."""
    entries = [json.loads(line) for line in CORPUS.read_text().splitlines() if line.strip()]
    calls = []
    for n, entry in enumerate(entries):
        action = ActionCall(tool=entry["tool"], args=entry["args"], branch="wave/AUTH-001-be")
        if evaluate(action).decided:
            calls.append(ToolCall(id=f"call_{n}", name=entry["tool"], arguments=entry["args"]))
    return calls


Timings = dict[str, list[tuple[float, float]]]  # verdict -> (wall s, CPU s) per call


def time_gate(gate: ToolGate, stage: StageInput, calls: list[ToolCall], rounds: int) -> Timings:
    """Wall and CPU seconds per `authorize`, by the verdict it gave."""
    seen: Timings = {}
    for _ in range(rounds):
        for call in calls:
            if hasattr(gate, "blocks"):
                gate.blocks = 0  # the stage-failing third block is the loop's business, not timed here
            cpu, started = time.thread_time(), time.perf_counter()
            decision = gate.authorize(call, stage)
            elapsed, used = time.perf_counter() - started, time.thread_time() - cpu
            seen.setdefault(decision.verdict.value, []).append((elapsed, used))
    return seen


def quantile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=10, help="passes over the corpus (default 10)")
    args = parser.parse_args()
    if args.rounds < 1:
        parser.error("--rounds must be positive")
    load_before = os.getloadavg()
    calls = load()
    with tempfile.TemporaryDirectory(prefix="wave-gate-") as tmp, redis_server(Path(tmp) / "redis") as server:
        settings = fast_settings(server, Path(tmp) / "data", REPO / "domains")
        domains = load_domains(settings.domains_dir)
        stage = StageInput(
            story=Story(id="AUTH-001", title="gate benchmark"),
            domain=domains.get("auth"),
            role=Role.BE,
            round=1,
            attempt=1,
            worker="bench",
            data_dir=settings.data_dir,
        )
        gate = safety_gate_for(stage, LLMClient(settings, connect(settings)))
        time_gate(gate, stage, calls, 1)  # warm: compiled patterns, the Redis connection, scripts
        reference = [wall for wall, _ in time_gate(AllowAll(), stage, calls, args.rounds)["allow"]]
        seen = time_gate(gate, stage, calls, args.rounds)
    base = statistics.median(reference)
    print(
        f"safety gate, rules deciding: {len(calls)} corpus calls x {args.rounds} rounds; reference "
        f"(AllowAll) median {1e6 * base:.1f} us; {platform.node()}, {os.cpu_count()} cores, "
        f"{datetime.now(UTC):%Y-%m-%d %H:%M} UTC, load {load_before[0]:.1f} -> {os.getloadavg()[0]:.1f}"
    )
    for verdict, times in sorted(seen.items()):
        added = [wall - base for wall, _ in times]
        cpu = [used for _, used in times]
        print(
            f"  {verdict:<9} {len(times):>6} calls: added p50 {1000 * statistics.median(added):.3f} ms, "
            f"p99 {1000 * quantile(added, 0.99):.3f} ms, max {1000 * max(added):.3f} ms; "
            f"CPU p50 {1000 * statistics.median(cpu):.3f} ms, p99 {1000 * quantile(cpu, 0.99):.3f} ms"
        )
    every = [wall - base for v, times in seen.items() if v != "escalate" for wall, _ in times]
    p99_all = quantile(every, 0.99)
    ok = p99_all < TARGET_P99_MS / 1000
    print(
        f"{'PASS' if ok else 'MISS'}: allow and block together, added p99 {1000 * p99_all:.3f} ms "
        f"(target < {TARGET_P99_MS} ms; an escalation holds the story, so its time is not a tool call's)"
    )
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
