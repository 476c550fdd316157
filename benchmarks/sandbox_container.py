"""Container sandbox cost: a stage container's start, a command's added cost in the warm container
over the local sandbox, and the halt's kill of every running sandbox container.

A real `wave sandbox` process against a real redis-server and the local Docker engine, asked exactly
as a worker asks (LPUSH an ExecRequest, BLPOP its reply), so every figure includes the Redis round
trip and the runner's own work (the exec, the limit-counter reader):

- start:  a new stage's first command (`true`): create + start the container, then the command
- exec:   `true` and `python3 -c pass` in a warm container, interleaved with the same command in the
          default `BwrapSandbox` (`workers.commands.run_capped`), same run; the added p50 is the cost
- halt:   10 stages each running `sleep 300`; from `send_halt` (what the stop-file watcher calls) to
          no container of the fleet running (the engine polled every 10 ms)

Targets (issue 10): exec added <= 150 ms p50, start <= 1 s p50, halt p99 <= 1 s with 10.

    .venv/bin/python benchmarks/sandbox_container.py --image wave-sandbox:latest
    .venv/bin/python benchmarks/sandbox_container.py --image IMAGE --runs 20 --halts 5
"""

from __future__ import annotations

import argparse
import secrets
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from pydantic import SecretStr
from redis import Redis

from wavefleet.config import Settings
from wavefleet.halt import send_halt, send_resume
from wavefleet.messages import RunningStage
from wavefleet.sandbox import BwrapSandbox
from wavefleet.sandbox.docker_ops import DockerOps
from wavefleet.sandbox.protocol import (
    REPLY,
    ContainerSpec,
    ExecReply,
    ExecRequest,
    ReleaseRequest,
    StageLabels,
)
from wavefleet.testing import env_of, redis_server
from workers import commands

REPO = Path(__file__).resolve().parent.parent
HALT_STAGES = 10
ENV = {"PATH": "/opt/sandbox/bin:/usr/local/bin:/usr/bin:/bin", "HOME": "/workspace"}


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(fraction * (len(ordered) - 1)))]


class Bench:
    def __init__(self, settings: Settings, redis: Redis, root: Path) -> None:
        self.settings, self.redis, self.root = settings, redis, root
        self.keys = settings.keys
        self.trees = 0

    def stage(self, job: str) -> tuple[StageLabels, Path]:
        labels = StageLabels(
            story=f"B-{job}", domain="bench", role="qa", round=1, attempt=0, job=job, worker="W-1"
        )
        entry = RunningStage(worker="W-1", story=labels.story, role="qa", round=1, attempt=0)  # type: ignore[arg-type]
        self.redis.hset(self.keys.running(), job, entry.model_dump_json())
        self.redis.set(self.keys.worker_heartbeat("W-1"), "1", ex=3600)
        tree = self.root / "data" / "trees" / job
        tree.mkdir(parents=True)
        tree.chmod(0o777)
        return labels, tree

    def send(self, labels: StageLabels, tree: Path, argv: list[str], timeout_s: float = 60) -> str:
        request = ExecRequest(
            spec=ContainerSpec(labels=labels, worktree=str(tree), user="10001:0"),
            argv=argv, env=ENV, timeout_s=timeout_s, max_output_bytes=10_000, sent_at=time.time(),
        )  # fmt: skip
        self.redis.lpush(self.keys.sandbox_requests(), request.model_dump_json())
        return request.request_id

    def reply(self, request_id: str) -> ExecReply:
        popped = self.redis.blpop([self.keys.sandbox_reply(request_id)], timeout=120)
        if popped is None:
            raise SystemExit("no reply from the runner within 120 s")
        reply = REPLY.validate_json(popped[1])
        assert isinstance(reply, ExecReply)
        return reply

    def timed(self, labels: StageLabels, tree: Path, argv: list[str]) -> tuple[float, ExecReply]:
        started = time.perf_counter()
        reply = self.reply(self.send(labels, tree, argv))
        if reply.exit_code != 0 or reply.error:
            raise SystemExit(f"{argv} in the container: {reply}")
        return (time.perf_counter() - started) * 1000, reply

    def release(self, labels: StageLabels) -> None:
        request = ReleaseRequest(labels=labels)
        self.redis.lpush(self.keys.sandbox_requests(), request.model_dump_json())
        self.redis.blpop([self.keys.sandbox_reply(request.request_id)], timeout=120)


def bench_start(bench: Bench, runs: int) -> list[float]:
    times = []
    for n in range(runs):
        labels, tree = bench.stage(f"start-{n}")
        elapsed, reply = bench.timed(labels, tree, ["true"])
        assert reply.started_container
        times.append(elapsed)
        bench.release(labels)
    return times


def bench_exec(bench: Bench, runs: int) -> dict[str, dict[str, list[float]]]:
    labels, tree = bench.stage("exec")
    bwrap = BwrapSandbox()
    results: dict[str, dict[str, list[float]]] = {}
    for name, argv in (("true", ["true"]), ("python3 -c pass", ["python3", "-c", "pass"])):
        local = bwrap.wrap(argv, tree)
        times: dict[str, list[float]] = {"bwrap": [], "container": []}
        bench.timed(labels, tree, argv)  # warm: not counted
        for _ in range(runs):
            started = time.perf_counter()
            commands.run_capped(
                local.argv, cwd=local.cwd, env=local.env, timeout_s=60, max_output_bytes=10_000
            )
            times["bwrap"].append((time.perf_counter() - started) * 1000)
            times["container"].append(bench.timed(labels, tree, argv)[0])
        results[name] = times
    bench.release(labels)
    return results


def bench_halt(bench: Bench, ops: DockerOps, rounds: int) -> list[float]:
    times = []
    for r in range(rounds):
        for n in range(HALT_STAGES):
            labels, tree = bench.stage(f"halt-{r}-{n}")
            bench.send(labels, tree, ["sleep", "300"], timeout_s=600)
        deadline = time.monotonic() + 120
        while sum(1 for f in ops.find() if f.running) < HALT_STAGES or not _all_busy(ops):
            if time.monotonic() > deadline:
                found = [(f.name, f.running) for f in ops.find()]
                raise SystemExit(f"the 10 stages did not start within 120 s: {found}")
            time.sleep(0.05)
        started = time.perf_counter()
        send_halt(bench.redis, bench.keys, "benchmark", "bench")
        while any(f.running for f in ops.find()):
            time.sleep(0.01)
        times.append((time.perf_counter() - started) * 1000)
        send_resume(bench.redis, bench.keys, "bench")
        # The runner hears the resume on its own thread: a request it takes before that is refused.
        probe, tree = bench.stage(f"resumed-{r}")
        while bench.reply(bench.send(probe, tree, ["true"])).error:
            time.sleep(0.05)
        bench.release(probe)
        while ops.find():  # removed after the kill; the next round starts clean
            time.sleep(0.05)
    return times


def _all_busy(ops: DockerOps) -> bool:
    return all(ops.api.inspect_container(f.id)["ExecIDs"] for f in ops.find())


def line(name: str, values: list[float], target: str = "") -> None:
    p50, p99 = statistics.median(values), percentile(values, 0.99)
    print(f"  {name:<28} p50 {p50:8.1f} ms   p99 {p99:8.1f} ms  {target}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--image", default="wave-sandbox:latest")
    parser.add_argument("--runs", type=int, default=50, help="commands per measure (default 50)")
    parser.add_argument("--halts", type=int, default=10, help="halts of 10 running stages (default 10)")
    args = parser.parse_args()
    with (
        tempfile.TemporaryDirectory(prefix="wave-bench-") as scratch,
        redis_server(Path(scratch) / "redis") as server,
    ):
        root = Path(scratch)
        settings = Settings(
            redis={"url": server.url, "password": SecretStr(server.password)},
            data_dir=root / "data",
            domains_dir=REPO / "domains",
            sandbox="container",
            sandbox_container={"image": args.image, "concurrency": 32, "sweep_interval_s": 5},
            log_format="json",
        )
        redis = server.client(decode_responses=True)
        fleet = f"bench{secrets.token_hex(4)}"
        redis.set(settings.keys.fleet_id(), fleet)
        ops = DockerOps(settings.sandbox_container, fleet, settings.data_dir)
        log = (root / "sandbox.log").open("wb")
        runner = subprocess.Popen(
            [sys.executable, "-m", "wavefleet.cli", "sandbox"], env=env_of(settings), stdout=log, stderr=log
        )
        try:
            while not redis.exists(settings.keys.sandbox_runner()):
                if runner.poll() is not None:
                    raise SystemExit((root / "sandbox.log").read_text()[-2000:])
                time.sleep(0.1)
            bench = Bench(settings, redis, root)
            print(f"container sandbox, image {args.image}, {args.runs} runs, {args.halts} halts of 10")
            line("stage start + `true`", bench_start(bench, args.runs), "(target p50 <= 1000 ms)")
            for name, times in bench_exec(bench, args.runs).items():
                line(f"bwrap     {name}", times["bwrap"])
                line(f"container {name}", times["container"])
                added = statistics.median(times["container"]) - statistics.median(times["bwrap"])
                print(f"  {'added by the container':<28} p50 {added:+8.1f} ms   (target <= 150 ms)")
            line(f"halt: {HALT_STAGES} killed", bench_halt(bench, ops, args.halts), "(target p99 <= 1000 ms)")
        finally:
            runner.terminate()
            runner.wait(timeout=60)
            ops.end(f.id for f in ops.find())
    return 0


if __name__ == "__main__":
    sys.exit(main())
