"""How long a halt takes to reach Slack: the EMERGENCY-STOP file created to the halt alert posted.

A real redis-server, a real `wave watch` process (inotify on the halt folder), a real `wave notifier`
process and the real slack_sdk against the local Slack Web API (tests/servers/slack_server.py, in
this process: it stamps when it accepted each message). Each round creates the stop file, waits for
the halt alert, removes the file, resumes (what `wave resume` does) and waits for that alert too.
Latency: the server's accept time minus the time just before the file was created, so it spans the
whole path: inotify, the watcher's halt write, the events stream, the notifier, one HTTPS-less
request on loopback. Target (issue 11): p99 <= 1 s over 20 halts.

`--from send` starts the clock at `send_halt` instead (what `wave stop` calls; no watcher), which
isolates the notifier's part. `--busy RATE` writes ordinary story replies (20 stories in turn) at RATE
events a second throughout, so the notifier is holding replies for their merge window and gathering
its reads when each halt comes (an idle fleet is the default).

    .venv/bin/python benchmarks/notifier_latency.py             # about 15 s
    .venv/bin/python benchmarks/notifier_latency.py --halts 100
    .venv/bin/python benchmarks/notifier_latency.py --from send
    .venv/bin/python benchmarks/notifier_latency.py --busy 100
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

from pydantic import SecretStr

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tests"))

from redis import Redis  # noqa: E402
from servers.slack_server import SlackServer  # noqa: E402

from wavefleet.config import Settings, SlackSettings  # noqa: E402
from wavefleet.connection import connect  # noqa: E402
from wavefleet.fleet_events import StoryEvent, emit  # noqa: E402
from wavefleet.halt import send_halt, send_resume  # noqa: E402
from wavefleet.testing import Processes, fast_settings, redis_server, wait_until  # noqa: E402

TARGET_S = 1.0


def alert(slack: SlackServer, since: int, kind: str) -> Callable[[], float | None]:
    """When the first `kind` alert after message `since` was accepted (None: not yet)."""

    def posted() -> float | None:
        return next((m.at for m in slack.messages[since:] if kind in m.text), None)

    return posted


def busy(settings: Settings, rate: float, stop: threading.Event) -> threading.Thread:
    """Ordinary story replies at `rate` a second, 20 stories in turn, until `stop`."""

    def write() -> None:
        redis = connect(settings)
        for n in range(10**9):  # bounded by `stop`, set when the halts are done
            if stop.wait(1 / rate):
                return
            pipe = redis.pipeline()
            event = StoryEvent(story=f"AUTH-{n % 20:03d}", event="stage_done", role="be", to="building")
            emit(pipe, settings.keys, event, time.time())
            pipe.execute()

    thread = threading.Thread(target=write, daemon=True)
    thread.start()
    return thread


def halt_by_file(settings: Settings) -> Callable[[int], None]:
    def halt(index: int) -> None:
        settings.halt_file.write_text(f"drill {index}\n")

    return halt


def halt_by_send(settings: Settings, redis: Redis) -> Callable[[int], None]:
    def halt(index: int) -> None:
        send_halt(redis, settings.keys, f"drill {index}", "benchmark")

    return halt


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--halts", type=int, default=20)
    parser.add_argument(
        "--from",
        dest="start",
        choices=("file", "send"),
        default="file",
        help="start the clock at the stop file's creation (default) or at send_halt",
    )
    parser.add_argument(
        "--busy", type=float, default=0.0, help="story replies a second meanwhile (default 0)"
    )
    args = parser.parse_args()
    if args.halts < 1 or args.busy < 0:
        parser.error("--halts must be positive, --busy not negative")
    slack = SlackServer()
    with tempfile.TemporaryDirectory() as tmp, redis_server(Path(tmp) / "redis") as server:
        settings = fast_settings(server, Path(tmp) / "data", REPO / "domains")
        slacked = SlackSettings(bot_token=SecretStr(slack.token), base_url=slack.url)
        settings = settings.model_copy(update={"slack": slacked})
        redis = connect(settings)
        procs = Processes(settings, Path(tmp) / "logs")
        procs.wave("notifier", name="notifier")
        halt = halt_by_send(settings, redis)
        if args.start == "file":
            settings.halt_file.parent.mkdir(parents=True, exist_ok=True)
            procs.watcher()
            wait_until(
                lambda: redis.exists(settings.keys.watcher_heartbeat()),
                message="the watcher's heartbeat",
                diagnose=procs.logs,
            )
            halt = halt_by_file(settings)
        stop = threading.Event()
        try:
            group = settings.keys.events_group("notifier")
            wait_until(
                lambda: (
                    redis.exists(settings.keys.events())
                    and any(g["name"] == group for g in redis.xinfo_groups(settings.keys.events()))
                ),
                message="the notifier's group",
            )
            writer = busy(settings, args.busy, stop) if args.busy else None
            time.sleep(3 if writer else 0)  # replies held and merged by the time the first halt comes
            latencies = []
            for index in range(args.halts):
                before = len(slack.messages)
                started = time.time()
                halt(index)
                at = wait_until(
                    alert(slack, before, "fleet_halted"),
                    interval_s=0.001,
                    message="the halt alert",
                    diagnose=procs.logs,
                )
                latencies.append(float(at or 0.0) - started)  # wait_until returns a posted time
                settings.halt_file.unlink(missing_ok=True)  # else the watcher halts again at once
                send_resume(redis, settings.keys, "benchmark")
                wait_until(alert(slack, before, "fleet_resumed"), interval_s=0.001, message="the resume")
        finally:
            stop.set()
            procs.stop_all()
            slack.close()
    latencies.sort()
    p99 = latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))]
    result = {
        "from": "stop file created" if args.start == "file" else "send_halt",
        "busy_events_per_s": args.busy,
        "halts": len(latencies),
        "p50_ms": round(statistics.median(latencies) * 1000, 1),
        "p99_ms": round(p99 * 1000, 1),
        "max_ms": round(latencies[-1] * 1000, 1),
        "target_p99_ms": TARGET_S * 1000,
        "ok": p99 <= TARGET_S,
    }
    print(json.dumps(result))
    sys.exit(0 if result["ok"] else 1)


if __name__ == "__main__":
    main()
