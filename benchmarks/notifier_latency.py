"""How long a halt takes to reach Slack: the EMERGENCY-STOP file created to the halt alert posted.

A real redis-server, a real `wave watch` process (inotify on the halt folder), a real `wave notifier`
process and the real slack_sdk against the local Slack Web API (tests/servers/slack_server.py, in
this process: it stamps when it accepted each message). Each round creates the stop file, waits for
the halt alert, removes the file, resumes (what `wave resume` does) and waits for that alert too.
Latency: the server's accept time minus the time just before the file was created, so it spans the
whole path: inotify, the watcher's halt write, the events stream, the notifier, one HTTPS-less
request on loopback. Target (issue 11): p99 <= 1 s over 20 halts.

`--from send` starts the clock at `send_halt` instead (what `wave stop` calls; no watcher), which
isolates the notifier's part.

    .venv/bin/python benchmarks/notifier_latency.py             # about 15 s
    .venv/bin/python benchmarks/notifier_latency.py --halts 100
    .venv/bin/python benchmarks/notifier_latency.py --from send
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
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
from wavefleet.halt import send_halt, send_resume  # noqa: E402
from wavefleet.testing import Processes, fast_settings, redis_server, wait_until  # noqa: E402

TARGET_S = 1.0


def posted(slack: SlackServer, count: int) -> Callable[[], bool]:
    return lambda: len(slack.messages) >= count


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
    args = parser.parse_args()
    if args.halts < 1:
        parser.error("--halts must be positive")
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
        try:
            group = settings.keys.events_group("notifier")
            wait_until(
                lambda: (
                    redis.exists(settings.keys.events())
                    and any(g["name"] == group for g in redis.xinfo_groups(settings.keys.events()))
                ),
                message="the notifier's group",
            )
            latencies = []
            for index in range(args.halts):
                before = len(slack.messages)
                started = time.time()
                halt(index)
                wait_until(
                    posted(slack, before + 1), interval_s=0.001, message="the halt alert", diagnose=procs.logs
                )
                latencies.append(slack.messages[before].at - started)
                settings.halt_file.unlink(missing_ok=True)  # else the watcher halts again at once
                send_resume(redis, settings.keys, "benchmark")
                wait_until(posted(slack, before + 2), interval_s=0.001, message="the resume")
        finally:
            procs.stop_all()
            slack.close()
    latencies.sort()
    p99 = latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))]
    result = {
        "from": "stop file created" if args.start == "file" else "send_halt",
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
