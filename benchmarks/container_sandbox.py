"""Container sandbox cost: a command in a stage's warm container against the local sandbox, a stage
container's start, and the emergency stop's kill of every running stage container.

Real parts: a redis-server, a `wave sandbox` runner and a `wave watch` watcher as processes of their
own, the Docker engine, and the worker's own client (`ContainerSandbox`) asking the runner over Redis
exactly as a stage does. Stages are declared running as a live worker declares them (running entry,
heartbeat), so the runner's sweep leaves their containers alone.

1. exec: `true` and `python3 -c pass` in the warm container (`ContainerSandbox.execute`) against the
   same command in bubblewrap (`workers.commands.run_in`), interleaved; target <= 150 ms p50 added.
2. start: a new stage's first command (container create + start + the exec) minus the warm exec's
   p50; target <= 1 s p50.
3. halt: 10 stages each running `sleep 600` in its container; from the EMERGENCY-STOP file's creation
   to no container of the fleet running (polled from the engine every 5 ms); target p99 <= 1 s.

    .venv/bin/python benchmarks/container_sandbox.py --image wave-sandbox:latest
    .venv/bin/python benchmarks/container_sandbox.py --image IMG --runs 20 --starts 10 --halts 10
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

import docker  # before the repository goes on sys.path: its docker/ folder would shadow the SDK

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from wavefleet.config import Settings  # noqa: E402
from wavefleet.connection import connect  # noqa: E402
from wavefleet.lifecycle import Role  # noqa: E402
from wavefleet.messages import RunningStage  # noqa: E402
from wavefleet.sandbox import BwrapSandbox  # noqa: E402
from wavefleet.sandbox.container import ContainerSandbox  # noqa: E402
from wavefleet.sandbox.protocol import StageLabels  # noqa: E402
from wavefleet.testing import Processes, fast_settings, redis_server, wait_until  # noqa: E402
from workers import commands  # noqa: E402

TARGET_EXEC_ADDED_MS = 150.0
TARGET_START_MS = 1000.0
TARGET_HALT_P99_MS = 1000.0
HALT_STAGES = 10
COMMANDS = {"true": ["true"], "python3 -c pass": ["python3", "-c", "pass"]}


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def timed(action: Callable[[], object]) -> float:
    started = time.perf_counter()
    action()
    return (time.perf_counter() - started) * 1000


class Bench:
    """One fleet for the whole run: its settings, Redis, processes and a counter for stage names."""

    def __init__(self, settings: Settings, procs: Processes) -> None:
        self.settings, self.procs = settings, procs
        self.redis = connect(settings)
        self.client = ContainerSandbox(self.redis, settings)
        self.engine = docker.from_env()
        self.fleet = ""
        self.count = 0

    def stage(self, tree: Path) -> ContainerSandbox:
        """A new stage, declared running as a live worker does, bound to its own container."""
        self.count += 1
        labels = StageLabels(
            story=f"BENCH-{self.count:04d}",
            domain="bench",
            role="qa",
            round=1,
            attempt=0,
            job=f"BENCH-{self.count:04d}_r1_qa_a0",
            worker="bench-qa-1",
        )
        running = RunningStage(worker=labels.worker, story=labels.story, role=Role.QA, round=1, attempt=0)
        self.redis.hset(self.settings.keys.running(), labels.job, running.model_dump_json())
        self.redis.set(self.settings.keys.worker_heartbeat(labels.worker), "1", ex=3600)
        return self.client.for_stage(labels)

    def resumed(self) -> bool:
        return self.redis.get(self.settings.keys.halt()) is None

    def running_containers(self) -> int:
        return len(self.engine.api.containers(filters={"label": f"dev.wave.sandbox={self.fleet}"}))


def run_local(sandbox: BwrapSandbox, argv: list[str], tree: Path) -> None:
    commands.run_in(sandbox, argv, tree, timeout_s=60, max_output_bytes=10_000)


def run_ok(stage: ContainerSandbox, argv: list[str], tree: Path) -> None:
    outcome = stage.execute(argv, tree, timeout_s=60, max_output_bytes=10_000)
    if outcome.exit_code != 0:
        raise SystemExit(f"{argv} exited {outcome.exit_code} in the container: {outcome.output.strip()}")


def measure_exec(bench: Bench, tree: Path, runs: int) -> dict[str, dict[str, list[float]]]:
    bwrap = BwrapSandbox()
    stage = bench.stage(tree)
    results: dict[str, dict[str, list[float]]] = {}
    for name, argv in COMMANDS.items():
        local = ["/usr/bin/python3", "-c", "pass"] if argv[0] == "python3" else argv
        run_ok(stage, argv, tree)  # the container's start and a warm page cache: not counted
        commands.run_in(bwrap, local, tree, timeout_s=60, max_output_bytes=10_000)
        times: dict[str, list[float]] = {"bwrap": [], "container": []}
        for _ in range(runs):
            times["bwrap"].append(timed(functools.partial(run_local, bwrap, local, tree)))
            times["container"].append(timed(functools.partial(run_ok, stage, argv, tree)))
        results[name] = times
    stage.release()
    return results


def measure_start(bench: Bench, tree: Path, starts: int) -> list[float]:
    firsts = []
    for _ in range(starts):
        stage = bench.stage(tree)
        firsts.append(timed(functools.partial(run_ok, stage, ["true"], tree)))
        stage.release()
    return firsts


def measure_halt(bench: Bench, tree: Path, halts: int) -> list[float]:
    elapsed = []
    for _ in range(halts):
        stages = [bench.stage(tree) for _ in range(HALT_STAGES)]
        threads = [threading.Thread(target=_sleep_in, args=(stage, tree), daemon=True) for stage in stages]
        for thread in threads:
            thread.start()
        wait_until(
            lambda: bench.running_containers() == HALT_STAGES,
            timeout_s=120,
            interval_s=0.05,
            message=f"{HALT_STAGES} running stage containers",
        )
        time.sleep(0.3)  # the `sleep 600` execs are under way in every container
        created = time.perf_counter()
        bench.settings.halt_file.write_text("benchmark")
        while bench.running_containers():
            if time.perf_counter() - created > 30:
                raise SystemExit("the halt left stage containers running for 30 s")
            time.sleep(0.005)
        elapsed.append((time.perf_counter() - created) * 1000)
        for thread in threads:
            thread.join(timeout=120)
        bench.settings.halt_file.unlink()
        wait_until(bench.resumed, timeout_s=30, message="resume")
        for stage in stages:
            stage.release()
    return elapsed


def _sleep_in(stage: ContainerSandbox, tree: Path) -> None:
    with contextlib.suppress(Exception):  # killed by the halt: what is measured is the kill
        stage.execute(["sleep", "600"], tree, timeout_s=900, max_output_bytes=1000)


def report(results: dict[str, dict[str, list[float]]], firsts: list[float], halts: list[float]) -> None:
    print(f"{'what':<44} {'p50 ms':>8} {'p99 ms':>8} {'max ms':>8}")

    def row(label: str, values: list[float]) -> None:
        p50, p99 = statistics.median(values), percentile(values, 0.99)
        print(f"{label:<44} {p50:>8.1f} {p99:>8.1f} {max(values):>8.1f}")

    warm = statistics.median(results["true"]["container"])
    for name, times in results.items():
        row(f"{name}: bwrap", times["bwrap"])
        row(f"{name}: container exec (warm)", times["container"])
        added = statistics.median(times["container"]) - statistics.median(times["bwrap"])
        print(f"{name}: added at p50 {added:.1f} ms (target <= {TARGET_EXEC_ADDED_MS:g})")
    row("stage's first command (create+start+exec)", firsts)
    start = statistics.median(firsts) - warm
    print(f"container start at p50 (first - warm exec): {start:.1f} ms (target <= {TARGET_START_MS:g})")
    row(f"halt: stop file -> 0 of {HALT_STAGES} running", halts)
    print(f"halt p99 {percentile(halts, 0.99):.1f} ms (target <= {TARGET_HALT_P99_MS:g})")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--image", default="wave-sandbox:latest", help="make sandbox-image builds it")
    parser.add_argument("--runs", type=int, default=50)
    parser.add_argument("--starts", type=int, default=20)
    parser.add_argument("--halts", type=int, default=10)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="wave-bench-") as tmp:
        root = Path(tmp)
        tree = root / "data" / "repos" / "bench" / "worktrees" / "bench"  # where workers make worktrees
        tree.mkdir(parents=True)
        tree.chmod(0o775)  # a root worker's worktree: group-writable for the container user (gid 0)
        (root / "domains").mkdir()
        with redis_server(root / "redis") as server:
            settings = fast_settings(
                server,
                root / "data",
                root / "domains",
                sandbox="container",
                sandbox_container={"image": args.image, "sweep_interval_s": 2.0},
            )
            procs = Processes(settings, root / "logs")
            try:
                procs.wave("sandbox", name="sandbox")
                procs.watcher()
                bench = Bench(settings, procs)
                wait_until(bench.client.runner, timeout_s=60, message="the runner's heartbeat")
                bench.fleet = str(bench.redis.get(settings.keys.fleet_id()))
                results = measure_exec(bench, tree, args.runs)
                firsts = measure_start(bench, tree, args.starts)
                halts = measure_halt(bench, tree, args.halts)
            finally:
                procs.stop_all()
    report(results, firsts, halts)


if __name__ == "__main__":
    main()
