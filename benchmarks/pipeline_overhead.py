"""Pipeline overhead: WAVE's stage jobs per second with zero-work agents, against bare RQ on the same Redis.

Phase 1 (WAVE): a real redis-server (AOF on, everysec), one real `wave worker` per role of one
domain (pm, fe, be, qa, cto: 5 processes) with WAVE_AGENT=noop, and a real `wave supervisor`.
`--stories` stories are enqueued at once; the clock runs from the first enqueue until the last
story is done. Every story runs 5 stage jobs (pm, fe and be in parallel, qa, cto).

Phase 2 (reference): the same Redis, flushed; the same number of plain `rq.Worker` processes, one per
queue, and 5 x `--stories` jobs of a function that does nothing, enqueued at once; the clock runs
from the first enqueue until the last job finished. Target: WAVE stage jobs/s >= 0.5 x bare jobs/s.

For both it prints CPU seconds per job by process group and Redis commands per job, which is where
a 2-core machine's time goes. `--profile` runs the supervisor under cProfile (slower) and prints its
Redis round trips per handled intake message and its hottest functions.

    .venv/bin/python benchmarks/pipeline_overhead.py                 # 500 stories, about 2 minutes
    .venv/bin/python benchmarks/pipeline_overhead.py --stories 100   # a quick run
"""

from __future__ import annotations

import argparse
import os
import pstats
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from redis import Redis
from rq import Queue, Worker
from rq.job import Job

from wavefleet.config import Settings, load_settings
from wavefleet.connection import connect
from wavefleet.domains import load_domains
from wavefleet.lifecycle import Role, StoryState
from wavefleet.store import StoryStore, job_id
from wavefleet.stories import Story
from wavefleet.testing import Processes, env_of, fast_settings, redis_server

REPO = Path(__file__).resolve().parent.parent
ROLES = [r.value for r in Role]  # pm, fe, be, qa, cto: 5 stage jobs per story
TARGET_RATIO = 0.5
POLL_S = 0.05
BARE_FUNCTION = "__main__.bare_job"  # defined in the bare worker's own __main__: imported before the fork
ENQUEUE_BATCH = 500


def bare_job(**_kwargs: Any) -> str:
    """The reference job: nothing at all."""
    return "ok"


@dataclass
class Phase:
    label: str
    jobs: int
    elapsed_s: float
    cpu_s: dict[str, float]
    commands: dict[str, int]
    notes: list[str] = field(default_factory=list)

    @property
    def rate(self) -> float:
        return self.jobs / self.elapsed_s


# Process bookkeeping ---------------------------------------------------------------------------
def cpu_of(pid: int) -> float:
    """CPU seconds of a process and its reaped children (RQ work-horses are reaped by their worker)."""
    try:
        rest = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return sum(int(x) for x in rest[11:15]) / os.sysconf("SC_CLK_TCK")


def redis_cpu(redis: Redis) -> float:
    info = redis.info("cpu")
    return float(info["used_cpu_user"]) + float(info["used_cpu_sys"])


def cpu_snapshot(redis: Redis, groups: dict[str, list[int]]) -> dict[str, float]:
    usage = os.times()
    snap = {name: sum(cpu_of(pid) for pid in pids) for name, pids in groups.items()}
    snap["redis-server"] = redis_cpu(redis)
    snap["benchmark driver"] = usage.user + usage.system
    return snap


def command_counts(redis: Redis) -> dict[str, int]:
    stats = redis.info("commandstats")
    return {name.removeprefix("cmdstat_"): int(v["calls"]) for name, v in stats.items()}


def wait_for(
    predicate: Callable[[], bool],
    procs: list[subprocess.Popen[bytes]],
    timeout_s: float,
    what: str,
    logs: Callable[[], str],
) -> None:
    """Poll until `predicate`; fail at once if a process died, or after `timeout_s`."""
    deadline = time.monotonic() + timeout_s
    while not predicate():
        dead = [p.args for p in procs if p.poll() is not None]
        if dead:
            raise SystemExit(f"a process exited while waiting for {what}: {dead}\n{logs()[-3000:]}")
        if time.monotonic() > deadline:
            raise SystemExit(f"timed out after {timeout_s:.0f}s waiting for {what}\n{logs()[-3000:]}")
        time.sleep(POLL_S)


def stop(procs: list[subprocess.Popen[bytes]]) -> None:
    for proc in procs:
        if proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
    for proc in procs:
        proc.wait(timeout=10)


# Phase 1: WAVE ---------------------------------------------------------------------------------
def run_wave(settings: Settings, args: argparse.Namespace, workdir: Path) -> Phase:
    redis, raw = connect(settings), connect(settings, decode=False)
    domains = load_domains(settings.domains_dir)
    domain = domains.get(args.domain)
    store = StoryStore(redis, settings.keys, settings.pipeline.max_rounds)
    procs = Processes(settings, workdir / "logs")
    try:
        workers = procs.team(domain.name, dict.fromkeys(ROLES, 1))
        supervisor = start_supervisor(procs, settings, workdir) if args.profile else procs.supervisor()

        def ready() -> bool:
            return Worker.count(connection=raw) == len(ROLES) and bool(
                redis.exists(settings.keys.supervisor_lock())
            )

        wait_for(ready, procs.started, 60, "workers and supervisor to start", procs.logs)
        groups = {"wave workers (incl. horses)": [p.pid for p in workers], "supervisor": [supervisor.pid]}
        stories = [
            Story(
                id=f"{domain.prefix}-{n:05d}",
                title=f"Pipeline benchmark story {n}",
                acceptance_criteria=("it works",),
            )
            for n in range(1, args.stories + 1)
        ]
        redis.config_resetstat()
        before = cpu_snapshot(redis, groups)
        started = time.perf_counter()
        for i in range(0, len(stories), ENQUEUE_BATCH):
            store.enqueue(stories[i : i + ENQUEUE_BATCH], domains)
        wait_for(
            lambda: redis.scard(settings.keys.active()) == 0,
            procs.started,
            args.timeout,
            "every story to finish",
            procs.logs,
        )
        elapsed = time.perf_counter() - started
        after = cpu_snapshot(redis, groups)
        commands = command_counts(redis)
        phase = Phase(
            "WAVE pipeline (noop agents)", 0, elapsed, {k: after[k] - before[k] for k in after}, commands
        )
        phase.jobs, phase.notes = wave_details(store, raw, domain.name, args.stories, started)
        if args.profile:
            supervisor.send_signal(signal.SIGTERM)  # a clean exit writes the profile
            supervisor.wait(timeout=30)
            phase.notes += profile_report(workdir / "supervisor.prof", args.stories)
        return phase
    finally:
        procs.stop_all()


def start_supervisor(procs: Processes, settings: Settings, workdir: Path) -> subprocess.Popen[bytes]:
    log = (workdir / "logs" / "supervisor.log").open("ab")
    argv = [
        sys.executable,
        "-m",
        "cProfile",
        "-o",
        str(workdir / "supervisor.prof"),
        "-m",
        "wavefleet.cli",
        "supervisor",
    ]
    proc = subprocess.Popen(argv, env=env_of(settings), stdout=log, stderr=log)
    log.close()
    procs.started.append(proc)
    return proc


def wave_details(
    store: StoryStore, raw: Redis, domain: str, count: int, started: float
) -> tuple[int, list[str]]:
    """Check every story is done; time each stage job from RQ's own timestamps."""
    records = store.list(domain=domain)
    states = {r.state for r in records}
    if len(records) != count or states != {StoryState.DONE}:
        raise SystemExit(f"expected {count} done stories, got {len(records)} in states {states}")
    with store.redis.pipeline(transaction=False) as pipe:
        for record in records:
            pipe.hkeys(store.keys.story_results(record.id))
        fields = pipe.execute()
    ids = []
    for record, names in zip(records, fields, strict=True):
        for name in names:  # r{round}.{role}.a{attempt}
            round_, role, attempt = name.split(".")
            ids.append(job_id(record.id, int(round_[1:]), Role(role), int(attempt[1:])))
    jobs = [j for j in Job.fetch_many(ids, connection=raw) if j is not None]
    return len(ids), job_timings(jobs, started)


def job_timings(jobs: list[Job], started: float) -> list[str]:
    """Per queue (one worker each), from RQ's own timestamps: the job function's median run time
    (RQ's started_at -> ended_at, both set in the work-horse), the median wait in the queue, and the
    worker's cycle (its last job's end / its jobs): the cycle minus the run time is RQ's per-job cost."""
    wall0 = time.time() - (time.perf_counter() - started)
    by_queue: dict[str, list[Job]] = {}
    for job in jobs:
        by_queue.setdefault(job.origin, []).append(job)
    header = f"{'queue':<16} {'jobs':>5} {'run ms':>8} {'wait s':>7} {'cycle ms':>9}"
    lines = [f"{header}  (run, wait: medians; cycle: mean)"]
    for queue, group in sorted(by_queue.items()):
        run = [(j.ended_at - j.started_at).total_seconds() for j in group if j.ended_at and j.started_at]
        wait = [
            (j.started_at - j.enqueued_at).total_seconds() for j in group if j.started_at and j.enqueued_at
        ]
        last = max(j.ended_at.timestamp() for j in group if j.ended_at) - wall0
        lines.append(
            f"{queue:<16} {len(group):>5} {1000 * statistics.median(run):8.1f} "
            f"{statistics.median(wait):7.2f} {1000 * last / len(group):9.1f}"
        )
    return lines


def profile_report(path: Path, stories: int) -> list[str]:
    """The supervisor's Redis round trips (socket writes) per intake message, and its hottest calls."""
    stats = pstats.Stats(str(path))
    raw: dict[Any, Any] = stats.stats  # type: ignore[attr-defined]
    writes = sum(v[1] for k, v in raw.items() if k[2] == "send_packed_command")
    messages = stories * (1 + len(ROLES))  # one route message, then one result message per stage job
    top = sorted(raw.items(), key=lambda kv: kv[1][3], reverse=True)
    lines = [
        f"supervisor (cProfile): {writes} Redis round trips for {messages} intake messages = "
        f"{writes / messages:.1f} per message; cumulative time of the hottest functions:"
    ]
    for (file, line, func), (_cc, calls, _tt, cum, _callers) in top[:40]:
        if "wavefleet" in file or "rq/" in file or func in ("read_response", "send_packed_command"):
            lines.append(f"  {cum:7.2f} s  {calls:>7} calls  {Path(file).name}:{line} {func}")
    return lines[:26]


# Phase 2: bare RQ ------------------------------------------------------------------------------
def run_bare(settings: Settings, args: argparse.Namespace, workdir: Path) -> Phase:
    redis, raw = connect(settings), connect(settings, decode=False)
    redis.flushall()
    names = [settings.keys.queue("bare", role) for role in ROLES]
    queues = [Queue(name, connection=raw) for name in names]
    procs = []
    (workdir / "logs").mkdir(exist_ok=True)
    try:
        for name in names:
            log = (workdir / "logs" / f"bare-{name.replace(':', '-')}.log").open("ab")
            procs.append(
                subprocess.Popen(
                    [sys.executable, __file__, "--bare-worker", name],
                    env=env_of(settings),
                    stdout=log,
                    stderr=log,
                )
            )
            log.close()
        ready = lambda: Worker.count(connection=raw) == len(names)  # noqa: E731
        wait_for(ready, procs, 60, "bare RQ workers to start", lambda: "")
        groups = {"bare RQ workers (incl. horses)": [p.pid for p in procs]}
        total = args.stories * len(queues)
        redis.config_resetstat()
        before = cpu_snapshot(redis, groups)
        started = time.perf_counter()
        for i in range(0, args.stories, ENQUEUE_BATCH):
            for queue in queues:
                queue.enqueue_many(
                    [bare_data(settings, queue, n) for n in range(i, min(i + ENQUEUE_BATCH, args.stories))]
                )
        finished = lambda: sum(q.finished_job_registry.count for q in queues) >= total  # noqa: E731
        wait_for(finished, procs, args.timeout, "every bare job to finish", lambda: "")
        elapsed = time.perf_counter() - started
        after = cpu_snapshot(redis, groups)
        failed = sum(q.failed_job_registry.count for q in queues)
        if failed:
            raise SystemExit(f"{failed} bare RQ jobs failed; see {workdir / 'logs'}")
        ids = [i for q in queues for i in q.finished_job_registry.get_job_ids()]
        jobs = [j for j in Job.fetch_many(ids, connection=raw) if j]
        phase = Phase(
            "bare RQ (trivial function)",
            total,
            elapsed,
            {k: after[k] - before[k] for k in after},
            command_counts(redis),
        )
        phase.notes = job_timings(jobs, started)
        return phase
    finally:
        stop(procs)


def bare_data(settings: Settings, queue: Queue, n: int) -> Any:
    """A job like a stage's (keyword arguments, deterministic id, same TTLs and timeout)."""
    role = queue.name.rsplit(":", 1)[1]
    return Queue.prepare_data(
        BARE_FUNCTION,
        kwargs={"story_id": f"BARE-{n:05d}", "round_": 0, "attempt": 1},
        job_id=f"BARE-{n:05d}_{role}",
        result_ttl=3600,
        failure_ttl=86400,
        timeout=settings.worker.job_timeout_s,
    )


def bare_worker(queue_name: str) -> None:
    """A plain RQ forking worker, configured like WAVE's (same client, same Redis), on one queue."""
    settings = load_settings()
    raw = connect(settings, decode=False)
    Worker([Queue(queue_name, connection=raw)], connection=raw).work(logging_level="WARNING")


# Report ----------------------------------------------------------------------------------------
def report(
    phases: list[Phase], stories: int, load: list[tuple[float, float, float]], *, against_bare: bool = True
) -> None:
    for phase in phases:
        print(f"\n== {phase.label}: {phase.jobs} jobs in {phase.elapsed_s:.2f} s = {phase.rate:.1f} jobs/s")
        if phase.label.startswith("WAVE"):
            print(
                f"   stories: {stories} in {phase.elapsed_s:.2f} s = "
                f"{stories / phase.elapsed_s:.2f} stories/s"
            )
        cpu = sum(phase.cpu_s.values())
        print(
            f"   CPU: {cpu:.1f} s in {phase.elapsed_s:.1f} s = {cpu / phase.elapsed_s:.2f} of "
            f"{os.cpu_count()} cores; {1000 * cpu / phase.jobs:.1f} ms per job:"
        )
        for name, seconds in sorted(phase.cpu_s.items(), key=lambda kv: -kv[1]):
            print(f"     {name:<32} {seconds:7.1f} s  {1000 * seconds / phase.jobs:6.1f} ms/job")
        calls = sum(phase.commands.values())
        top = ", ".join(
            f"{n} {c / phase.jobs:.1f}" for n, c in sorted(phase.commands.items(), key=lambda kv: -kv[1])[:8]
        )
        print(f"   Redis commands (incl. inside MULTI and Lua): {calls / phase.jobs:.1f} per job ({top})")
        for line in phase.notes:
            print(f"   {line}")
    start, end = (" / ".join(f"{x:.1f}" for x in avg) for avg in (load[0], load[-1]))
    print(
        f"\nload average (1 / 5 / 15 min): {start} at start, {end} at end, on {os.cpu_count()} cores"
        + ("  ** the machine was busy: wall-clock rates are pessimistic **" if load[0][0] > 1 else "")
    )
    if against_bare and len(phases) == 2:
        wave, bare = phases
        ratio = wave.rate / bare.rate
        cpu_ratio = (sum(bare.cpu_s.values()) / bare.jobs) / (sum(wave.cpu_s.values()) / wave.jobs)
        verdict = "PASS" if ratio >= TARGET_RATIO else "MISS"
        print(
            f"{verdict}: WAVE {wave.rate:.1f} stage jobs/s ({stories / wave.elapsed_s:.2f} stories/s) "
            f"vs bare RQ {bare.rate:.1f} jobs/s: ratio {ratio:.2f} (target >= {TARGET_RATIO}); "
            f"CPU per job says {cpu_ratio:.2f} (what a CPU-bound, otherwise idle machine would show)"
        )


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--stories", type=int, default=500, help="stories, and bare jobs per queue (default 500)"
    )
    parser.add_argument("--domain", default="auth", help="the domain whose team runs (default auth)")
    parser.add_argument(
        "--timeout", type=float, default=150.0, help="seconds allowed per phase (default 150)"
    )
    parser.add_argument(
        "--log-level",
        default="info",
        choices=("debug", "info", "warning", "error"),
        help="the wave processes' log level (default info, as in production)",
    )
    parser.add_argument("--only", choices=("wave", "bare"), help="run one phase only")
    parser.add_argument(
        "--profile",
        action="store_true",
        help="run the supervisor under cProfile (slower) and report its round trips",
    )
    parser.add_argument("--bare-worker", metavar="QUEUE", help=argparse.SUPPRESS)  # phase 2's workers
    args = parser.parse_args()
    if args.stories < 1 or args.timeout <= 0:
        parser.error("--stories and --timeout must be positive")
    return args


def main() -> int:
    args = parse_args()
    if args.bare_worker:
        bare_worker(args.bare_worker)
        return 0
    load = [os.getloadavg()]
    with (
        tempfile.TemporaryDirectory(prefix="wave-bench-") as tmp,
        redis_server(Path(tmp) / "redis") as server,
    ):
        workdir = Path(tmp)
        # production intervals (heartbeat 1 s, supervisor block 500 ms, recovery every 1 s), zero-work agents
        settings = fast_settings(
            server,
            workdir / "data",
            REPO / "domains",
            agent="noop",
            worker={},
            supervisor={},
            log_level=args.log_level,
        )
        phases = []
        if args.only != "bare":
            phases.append(run_wave(settings, args, workdir))
        if args.only != "wave":
            phases.append(run_bare(settings, args, workdir))
    load.append(os.getloadavg())
    report(phases, args.stories, load)
    return 0 if len(phases) < 2 or phases[0].rate >= TARGET_RATIO * phases[1].rate else 1


if __name__ == "__main__":
    sys.exit(main())
