"""Halt latency: from creating EMERGENCY-STOP to (a) the last worker's ack and (b) the last running
stage stopped, reported twice: when the last SIGKILL was sent to a stage's process group (from then
on it runs no more code) and when the last stage's process was reaped with its job back on its queue.

Real processes on a real redis-server: the watcher (inotify), the supervisor and N role workers,
each in a running stage (a PM stage waiting on a child `sleep`). Each repetition creates the file,
waits for every ack and stop, removes the file and waits until all N stages run again.

    python benchmarks/halt_latency.py                   # 10, 50 and 100 workers, 20 repetitions each
    python benchmarks/halt_latency.py --workers 10 --repetitions 5
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from wavefleet.connection import connect  # noqa: E402
from wavefleet.domains import load_domains  # noqa: E402
from wavefleet.store import StoryStore  # noqa: E402
from wavefleet.stories import Story  # noqa: E402
from wavefleet.testing import Processes, fast_settings, redis_server, wait_until  # noqa: E402

DOMAIN = """prefix = "BENCH"
repo = "{repo}"
[team]
pm = 1  # workers are started by this program, not from the team size
"""


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def measure(workers: int, repetitions: int, root: Path) -> dict[str, list[float]]:
    domains = root / "domains"
    (domains / "bench").mkdir(parents=True)
    (domains / "bench" / "domain.toml").write_text(DOMAIN.format(repo=REPO / "domains/auth/sample"))
    with redis_server(root / "redis") as server:
        settings = fast_settings(server, root / "data", domains)
        redis = connect(settings)
        procs = Processes(settings, root / "logs")
        try:
            for index in range(1, workers + 1):
                procs.worker("bench", "pm", index)
            procs.supervisor()
            procs.watcher()
            store = StoryStore(redis, settings.keys, settings.pipeline.max_rounds)
            store.enqueue(
                [
                    Story(id=f"BENCH-{n:03d}", title="halt me", labels=("offline:slow=pm:600",))
                    for n in range(workers)
                ],
                load_domains(domains),
            )
            return _repeat(settings, redis, workers, repetitions)
        finally:
            procs.stop_all()


def _repeat(settings, redis, workers: int, repetitions: int) -> dict[str, list[float]]:  # type: ignore[no-untyped-def]
    acks, kills, stops = [], [], []
    for _ in range(repetitions):
        wait_until(
            lambda: redis.hlen(settings.keys.running()) == workers,
            timeout_s=300,
            message=f"{workers} running stages",
        )
        time.sleep(0.2)
        started = time.time()
        settings.halt_file.write_text("benchmark")
        try:
            done = wait_until(
                lambda: _complete(redis, settings, workers),
                timeout_s=60,
                interval_s=0.01,
                message="every ack and stop",
            )
        except AssertionError:
            found = {k: json.loads(v) for k, v in redis.hgetall(settings.keys.halt_acks()).items()}
            missing = {k: v for k, v in found.items() if not v.get("stopped_at")}
            raise AssertionError(
                f"{len(found)} acks, without a stop: {missing}; "
                f"running: {redis.hgetall(settings.keys.running())}"
            ) from None
        acks.append(max(a["at"] for a in done) - started)
        kills.append(max(a["killed_at"] for a in done) - started)
        stops.append(max(a["stopped_at"] for a in done) - started)
        settings.halt_file.unlink()
        wait_until(lambda: redis.get(settings.keys.halt()) is None, timeout_s=30, message="resume")
    return {"ack": acks, "killed": kills, "stopped": stops}


def _complete(redis, settings, workers: int) -> list[dict[str, float]] | None:  # type: ignore[no-untyped-def]
    acks = [json.loads(v) for v in redis.hgetall(settings.keys.halt_acks()).values()]
    stopped = [a for a in acks if a.get("stopped_at")]
    return stopped if len(stopped) == workers else None


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--workers", type=int, nargs="+", default=[10, 50, 100])
    parser.add_argument("--repetitions", type=int, default=20)
    args = parser.parse_args()
    print(f"{'workers':>7} {'what':<34} {'p50 ms':>8} {'p99 ms':>8} {'max ms':>8}")
    for workers in args.workers:
        with tempfile.TemporaryDirectory() as tmp:
            result = measure(workers, args.repetitions, Path(tmp))
        for name, label in (
            ("ack", "(a) last ack"),
            ("killed", "(b) last stage killed (SIGKILL sent)"),
            ("stopped", "(b) last stage reaped, job requeued"),
        ):
            ms = [v * 1000 for v in result[name]]
            print(
                f"{workers:>7} {label:<34} {statistics.median(ms):>8.1f} {percentile(ms, 0.99):>8.1f} "
                f"{max(ms):>8.1f}",
                flush=True,
            )


if __name__ == "__main__":
    main()
