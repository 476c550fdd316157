"""Sandbox cost: what bubblewrap adds to one command, against a bare subprocess of the same command.

Three ways, same command, runs interleaved (bare, bwrap, bwrap+net, bare, ...) so machine load hits
all alike, each started the way a stage starts it (`workers.commands.run_capped`, setpriv included):

- bare:         the command with the sandbox's allow-listed environment, no bwrap
- bwrap:        `BwrapSandbox(network=True)`: own user, PID, IPC, UTS namespaces, the host's network
- bwrap+netns:  `BwrapSandbox()`, the default: a network namespace too (no network)

Two commands: the system's `python3 -c pass` and the fleet's own `{python} -c pass` (the venv
Python a domain's test command runs). Prints p50/p99 per way and what each adds to bare at p50.
Target: <= 25 ms p50 added.

    .venv/bin/python benchmarks/sandbox_cost.py              # 100 runs of each, about a minute
    .venv/bin/python benchmarks/sandbox_cost.py --runs 20
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

from wavefleet.sandbox import BwrapSandbox, Invocation, NoSandbox, Sandbox
from workers import commands

TARGET_ADDED_MS = 25.0


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(fraction * (len(ordered) - 1)))]


def timed(invocation: Invocation) -> float:
    started = time.perf_counter()
    outcome = commands.run_capped(
        invocation.argv, cwd=invocation.cwd, env=invocation.env, timeout_s=60, max_output_bytes=10_000
    )
    elapsed = (time.perf_counter() - started) * 1000
    if outcome.exit_code != 0:
        raise SystemExit(f"{invocation.argv[0]} exited {outcome.exit_code}: {outcome.output.strip()}")
    return elapsed


def measure(argv: list[str], ways: dict[str, Sandbox], runs: int, tree: Path) -> dict[str, list[float]]:
    times: dict[str, list[float]] = {name: [] for name in ways}
    invocations = {name: sandbox.wrap(argv, tree) for name, sandbox in ways.items()}
    for name in ways:  # warm the page cache; not counted
        timed(invocations[name])
    for _ in range(runs):
        for name, invocation in invocations.items():
            times[name].append(timed(invocation))
    return times


def report(label: str, times: dict[str, list[float]]) -> bool:
    bare_p50 = statistics.median(times["bare"])
    print(f"\n{label}")
    print(f"  {'way':<12} {'p50 ms':>8} {'p99 ms':>8} {'added p50':>10}")
    within = True
    for name, values in times.items():
        added = statistics.median(values) - bare_p50
        shown = "" if name == "bare" else f"{added:+.1f}"
        print(f"  {name:<12} {statistics.median(values):>8.1f} {percentile(values, 0.99):>8.1f} {shown:>10}")
        within = within and (name == "bare" or added <= TARGET_ADDED_MS)
    return within


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=100, help="runs of each way per command (default 100)")
    args = parser.parse_args()
    if args.runs < 1 or shutil.which("bwrap") is None:
        raise SystemExit("need --runs >= 1 and bwrap on PATH (apt-get install bubblewrap)")
    ways: dict[str, Sandbox] = {
        "bare": NoSandbox(),
        "bwrap": BwrapSandbox(network=True),
        "bwrap+netns": BwrapSandbox(),
    }
    system_python = shutil.which("python3", path="/usr/bin:/bin") or "python3"
    print(f"load: {' '.join(f'{x:.2f}' for x in os.getloadavg())} (1/5/15 min), {os.cpu_count()} cores")
    with tempfile.TemporaryDirectory(prefix="wave-sandbox-bench-") as scratch:
        ok = True
        for label, argv in (
            (f"{system_python} -c pass", [system_python, "-c", "pass"]),
            (f"{{python}} -c pass ({sys.executable})", [sys.executable, "-c", "pass"]),
        ):
            ok = report(label, measure(argv, ways, args.runs, Path(scratch))) and ok
    print(f"\ntarget: <= {TARGET_ADDED_MS:.0f} ms p50 added: {'met' if ok else 'NOT met'}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
