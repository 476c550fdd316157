"""Observability overhead: stories per second with the Slack notifier, LangSmith tracing and /metrics on,
against all three off, in one run (issue 11's target: at most 10% fewer stories per second).

Each phase is the pipeline overhead benchmark's WAVE phase (benchmarks/pipeline_overhead.py: a real
redis-server with AOF, one real `wave worker` per role with zero-work agents, a real supervisor,
`--stories` stories enqueued at once, the clock running until the last is done), on a flushed Redis:

- off: no Slack token, no LangSmith key, no metrics port.
- on: a real `wave notifier` posting every story's thread (a parent message and a reply per event) to a
  local Slack Web API; every worker and the supervisor tracing to a local LangSmith collector (root
  runs, stage runs); the supervisor serving /metrics, scraped every `--scrape-s` seconds by this
  program (Prometheus scrapes every 15 s by default: once a second is pessimistic).

The local Slack and LangSmith servers run in a process of their own (`--serve`), so their CPU is not
charged to the fleet (in production they are someone else's machines); it is reported apart. Phases
run off, on, on, off, off, on ... (`--rounds` pairs, each pair's order the last one's reversed), so a
load change or a drift over the run (successive phases of one run get slower: ~2% a phase here) hits
both alike; the verdict compares the medians. After each "on" phase the program checks the observers
did their work (every event posted, runs collected, scrapes answered), so a silently broken observer
cannot look cheap.

    .venv/bin/python benchmarks/observability_overhead.py                  # 2 rounds of 200 stories
    .venv/bin/python benchmarks/observability_overhead.py --stories 500 --rounds 3
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import SecretStr
from redis import Redis

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
sys.path.insert(0, str(REPO / "tests"))
sys.path.insert(0, str(BENCH))

import pipeline_overhead as pipeline  # noqa: E402
from servers.langsmith_server import LangSmithServer  # noqa: E402
from servers.slack_server import SlackServer  # noqa: E402

from wavefleet.config import Settings  # noqa: E402
from wavefleet.connection import connect  # noqa: E402
from wavefleet.embedded import free_port  # noqa: E402
from wavefleet.testing import Processes, fast_settings, redis_server, wait_until  # noqa: E402

TARGET_RATIO = 0.9  # "on" may cost at most 10% of the stories per second


@dataclass
class Peers:
    """The local Slack and LangSmith servers, in their own process."""

    proc: subprocess.Popen[str]
    slack_url: str
    slack_token: str
    langsmith_url: str
    langsmith_key: str

    def counts(self) -> dict[str, Any]:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.write("counts\n")
        self.proc.stdin.flush()
        return dict(json.loads(self.proc.stdout.readline()))

    def close(self) -> None:
        if self.proc.stdin is not None:
            self.proc.stdin.close()
        self.proc.wait(timeout=10)


def start_peers() -> Peers:
    proc = subprocess.Popen(
        [sys.executable, __file__, "--serve"], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    assert proc.stdout is not None
    info = json.loads(proc.stdout.readline())
    return Peers(proc, info["slack_url"], info["slack_token"], info["langsmith_url"], info["langsmith_key"])


def serve() -> None:
    """`--serve`: both servers; answer `counts` lines on stdin with a JSON line; exit when stdin closes."""
    slack = SlackServer()
    langsmith = LangSmithServer()
    print(
        json.dumps(
            {
                "slack_url": slack.url,
                "slack_token": slack.token,
                "langsmith_url": langsmith.url,
                "langsmith_key": langsmith.api_key,
            }
        ),
        flush=True,
    )
    for line in sys.stdin:
        if line.strip() == "counts":
            counts = {
                "slack_messages": len(slack.messages),
                # a merged reply's fallback has a line per event, a parent or a single reply one
                "slack_events": sum(len(m.text.splitlines()) for m in slack.messages),
                "slack_last_at": max((m.at for m in slack.messages), default=0.0),
                "runs": len(langsmith.snapshot()),
            }
            print(json.dumps(counts), flush=True)
    slack.close()
    langsmith.close()


@dataclass
class Scraper:
    """GET /metrics every `interval_s` until stopped; counts answers, error answers, and connections
    that failed after the first answer (the last scrape can meet the supervisor killed with the clock)."""

    host: str
    port: int
    interval_s: float
    ok: int = 0
    failed: int = 0  # answered, but not 200: the collector broke
    unreachable: int = 0
    error: str = ""  # the first error answer
    seconds: list[float] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def start(self) -> Scraper:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=10)

    def _run(self) -> None:
        while not self._stop.wait(self.interval_s):
            started = time.perf_counter()
            try:
                conn = http.client.HTTPConnection(self.host, self.port, timeout=5)
                conn.request("GET", "/metrics")
                reply = conn.getresponse()
                body = reply.read()
                conn.close()
            except OSError:
                if self.ok:  # before the first answer the supervisor (started by run_wave) is not up yet
                    self.unreachable += 1
                continue
            if reply.status != 200:
                self.failed += 1
                self.error = self.error or f"HTTP {reply.status}: {body[:300]!r}"
                continue
            self.ok += 1
            self.seconds.append(time.perf_counter() - started)


OBSERVERS = ("slack", "tracing", "metrics")


def settings_on(settings: Settings, peers: Peers, observers: set[str]) -> Settings:
    update: dict[str, Any] = {}
    if "slack" in observers:
        update["slack"] = settings.slack.model_copy(
            update={"bot_token": SecretStr(peers.slack_token), "base_url": peers.slack_url}
        )
    if "tracing" in observers:
        update["langsmith"] = settings.langsmith.model_copy(
            update={"api_key": SecretStr(peers.langsmith_key), "endpoint": peers.langsmith_url}
        )
    if "metrics" in observers:
        update["metrics"] = settings.metrics.model_copy(update={"port": free_port()})
    return settings.model_copy(update=update)


def phase_off(settings: Settings, args: argparse.Namespace, workdir: Path) -> pipeline.Phase:
    connect(settings).flushall()
    phase = pipeline.run_wave(settings, args, workdir)
    phase.label = "observers off"
    return phase


def phase_on(settings: Settings, args: argparse.Namespace, workdir: Path, peers: Peers) -> pipeline.Phase:
    redis = connect(settings)
    redis.flushall()
    before = peers.counts()
    observers = Processes(settings, workdir / "logs")
    notifier = start_notifier(observers, settings, redis) if settings.slack.enabled else None
    # its start (interpreter, imports: ~0.45 s) is before the clock and not a per-message cost
    notifier_start_cpu = pipeline.cpu_of(notifier.pid) if notifier is not None else 0.0
    scraper = Scraper(settings.metrics.host, settings.metrics.port, args.scrape_s)
    if settings.metrics.port:
        scraper.start()
    try:
        phase = pipeline.run_wave(settings, args, workdir)
        clock_stopped = time.time()
        backlog = redis.llen(settings.keys.trace_outbox())  # the fleet is stopped (SIGKILL) with the clock
        events = int(redis.xlen(settings.keys.events()))
    finally:
        scraper.stop()
    try:
        phase.label = f"observers on ({', '.join(sorted(args.observers))})"
        if notifier is not None:
            phase.cpu_s["notifier"] = pipeline.cpu_of(notifier.pid) - notifier_start_cpu
        if settings.langsmith.enabled:  # what the killed supervisor left in the outbox: the next sends it
            observers.supervisor()
        wait_for_observers(
            settings, args.stories, events=events, peers=peers, before=before, observers=observers
        )
        notifier_cpu = pipeline.cpu_of(notifier.pid) - notifier_start_cpu if notifier is not None else 0.0
    finally:
        observers.stop_all()
    after = peers.counts()
    if settings.metrics.port and (scraper.ok == 0 or scraper.failed):
        raise SystemExit(
            f"/metrics answered {scraper.ok} scrapes and failed {scraper.failed}: {scraper.error}"
        )
    slack_notes = ""
    if notifier is not None:
        slack_notes = (
            f"Slack: {after['slack_events'] - before['slack_events']} events in "
            f"{after['slack_messages'] - before['slack_messages']} messages, the last posted "
            f"{after['slack_last_at'] - clock_stopped:.1f} s after the last story finished; notifier CPU "
            f"{phase.cpu_s['notifier']:.2f} s with the clock, {notifier_cpu:.2f} s once all was posted; "
        )
    phase.notes = [
        slack_notes + f"Slack messages posted: {after['slack_messages'] - before['slack_messages']}; "
        f"LangSmith runs collected: {after['runs'] - before['runs']}; /metrics scrapes: {scraper.ok} "
        f"(median {1000 * statistics.median(scraper.seconds or [0.0]):.1f} ms, {scraper.unreachable} "
        f"unreachable after the first); trace outbox entries "
        f"(stages) left when the last story finished: {backlog}"
    ]
    return phase


def start_notifier(observers: Processes, settings: Settings, redis: Redis) -> subprocess.Popen[bytes]:
    notifier = observers.wave("notifier", name="notifier")
    group = settings.keys.events_group("notifier")
    wait_until(
        lambda: (
            bool(redis.exists(settings.keys.events()))
            and any(g["name"] == group for g in redis.xinfo_groups(settings.keys.events()))
        ),
        message="the notifier's consumer group",
        diagnose=observers.logs,
    )
    return notifier


def wait_for_observers(
    settings: Settings,
    stories: int,
    *,
    events: int,
    peers: Peers,
    before: dict[str, Any],
    observers: Processes,
) -> None:
    """Every event of the stream posted (each a line of a message) and every root and stage run
    collected: an observer that did less than its work must not look cheap."""
    if settings.slack.enabled:
        wait_until(
            lambda: peers.counts()["slack_events"] - before["slack_events"] >= events,
            timeout_s=120,
            message=f"the notifier to post the stream's {events} events",
            diagnose=observers.logs,
        )
    if settings.langsmith.enabled:
        wanted_runs = stories * (1 + len(pipeline.ROLES))  # a root and 5 stages a story
        wait_until(
            lambda: peers.counts()["runs"] - before["runs"] >= wanted_runs,
            timeout_s=120,
            message=f"{wanted_runs} LangSmith runs",
        )


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--stories", type=int, default=200, help="stories per phase (default 200)")
    parser.add_argument("--rounds", type=int, default=2, help="off/on pairs (default 2)")
    parser.add_argument("--scrape-s", type=float, default=1.0, help="/metrics scrape interval (default 1 s)")
    parser.add_argument("--domain", default="auth")
    parser.add_argument("--timeout", type=float, default=300.0, help="seconds allowed per phase")
    parser.add_argument(
        "--observers",
        default=",".join(OBSERVERS),
        help=f"which to turn on in the 'on' phases, comma-separated (default {','.join(OBSERVERS)})",
    )
    parser.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    args.observers = {o.strip() for o in args.observers.split(",") if o.strip()}
    if not args.observers or args.observers - set(OBSERVERS):
        parser.error(f"--observers takes some of {', '.join(OBSERVERS)}")
    if not args.serve and (args.stories < 1 or args.rounds < 1 or args.scrape_s <= 0 or args.timeout <= 0):
        parser.error("--stories, --rounds, --scrape-s and --timeout must be positive")
    args.profile = False  # what pipeline.run_wave reads
    args.log_level = "info"
    return args


def report(offs: list[pipeline.Phase], ons: list[pipeline.Phase], stories: int, load: list[Any]) -> bool:
    pipeline.report([*offs, *ons], stories, load, against_bare=False)
    off = statistics.median(stories / p.elapsed_s for p in offs)
    on = statistics.median(stories / p.elapsed_s for p in ons)
    ratio = on / off
    ok = ratio >= TARGET_RATIO
    print(
        f"\n{'PASS' if ok else 'MISS'}: observers on {on:.2f} stories/s vs off {off:.2f} stories/s "
        f"(medians of {len(ons)} and {len(offs)} phases): {100 * (1 - ratio):.1f}% fewer "
        f"(target <= {100 * (1 - TARGET_RATIO):.0f}%)"
    )
    return ok


def main() -> int:
    args = parse_args()
    if args.serve:
        serve()
        return 0
    load = [os.getloadavg()]
    peers = start_peers()
    offs, ons = [], []
    try:
        with (
            tempfile.TemporaryDirectory(prefix="wave-obs-") as tmp,
            redis_server(Path(tmp) / "redis") as server,
        ):
            workdir = Path(tmp)
            settings = fast_settings(
                server, workdir / "data", REPO / "domains", agent="noop", worker={}, supervisor={}
            )
            for round_ in range(args.rounds):  # off, on, then on, off, ...: a drift hits both alike
                for kind in ("off", "on") if round_ % 2 == 0 else ("on", "off"):
                    if kind == "off":
                        offs.append(phase_off(settings, args, workdir))
                    else:
                        ons.append(
                            phase_on(settings_on(settings, peers, args.observers), args, workdir, peers)
                        )
    finally:
        peers.close()
    load.append(os.getloadavg())
    return 0 if report(offs, ons, args.stories, load) else 1


if __name__ == "__main__":
    sys.exit(main())
