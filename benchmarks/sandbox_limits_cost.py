"""Sandbox limits cost: what a command's cgroup (memory and pids limits) adds to a bwrap command.

Interleaved runs of `true` through `workers.commands.run_in`, with `BwrapSandbox(limits=...)` (a
cgroup made, joined by a `sh` prefix, watched, emptied and removed) and without limits; and, alone,
the cgroup's own work (make with limits, start and stop the watcher, remove) with no command in it.
Prints p50/p99 in ms. Needs root and a writable cgroupfs (exit 1 if no cgroup can be made).

    .venv/bin/python benchmarks/sandbox_limits_cost.py            # 50 runs of each
    .venv/bin/python benchmarks/sandbox_limits_cost.py --runs 200
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from wavefleet.sandbox import BwrapSandbox, Limits
from wavefleet.sandbox.limits import confined, parents
from workers import commands

LIMITS = Limits(memory_mb=1024, pids=256)  # the defaults of `settings.sandbox_container`


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(fraction * (len(ordered) - 1)))]


def timed(run: Callable[[], object]) -> float:
    started = time.perf_counter()
    run()
    return (time.perf_counter() - started) * 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=50)
    runs = parser.parse_args().runs
    if isinstance(found := parents(), str):
        raise SystemExit(f"no cgroup limits on this machine: {found}")
    plain, limited = BwrapSandbox(), BwrapSandbox(limits=LIMITS)
    times: dict[str, list[float]] = {"bwrap": [], "bwrap + cgroup limits": [], "cgroup alone": []}
    with tempfile.TemporaryDirectory() as folder:
        tree = Path(folder)

        def cgroup_alone() -> None:
            with confined(LIMITS):
                pass

        for _ in range(runs):
            times["bwrap"].append(timed(lambda: run(plain, tree)))
            times["bwrap + cgroup limits"].append(timed(lambda: run(limited, tree)))
            times["cgroup alone"].append(timed(cgroup_alone))
    print(f"cgroup v{found.version}, {runs} runs each, load {os.getloadavg()[0]:.1f}")
    for way, values in times.items():
        print(f"{way:24} p50 {statistics.median(values):7.2f} ms   p99 {percentile(values, 0.99):7.2f} ms")
    added = statistics.median(times["bwrap + cgroup limits"]) - statistics.median(times["bwrap"])
    print(f"added per command at p50: {added:+.2f} ms")


def run(sandbox: BwrapSandbox, tree: Path) -> None:
    outcome = commands.run_in(sandbox, ["true"], tree, timeout_s=60, max_output_bytes=1000)
    if outcome.exit_code != 0:
        raise SystemExit(f"`true` exited {outcome.exit_code}: {outcome.output.strip()}")


if __name__ == "__main__":
    main()
