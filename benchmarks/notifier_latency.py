"""How long a halt takes to reach Slack: `wave stop`'s write to the halt alert posted.

A real redis-server, a real `wave notifier` process and the real slack_sdk against the local Slack
Web API (tests/servers/slack_server.py, in this process: it stamps when it accepted each message).
Each round halts the fleet (`send_halt`, what `wave stop` calls), waits for the alert, resumes and
waits for that alert too. Latency: the server's accept time minus the time just before the halt was
written. Target: p99 <= 1 s over 20 halts.

    .venv/bin/python benchmarks/notifier_latency.py             # about 10 s
    .venv/bin/python benchmarks/notifier_latency.py --halts 100
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from pydantic import SecretStr

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tests"))

from servers.slack_server import SlackServer  # noqa: E402

from wavefleet.config import SlackSettings  # noqa: E402
from wavefleet.connection import connect  # noqa: E402
from wavefleet.halt import send_halt, send_resume  # noqa: E402
from wavefleet.testing import env_of, fast_settings, redis_server, wait_until  # noqa: E402

TARGET_S = 1.0


def posted(slack: SlackServer, count: int) -> Callable[[], bool]:
    return lambda: len(slack.messages) >= count


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--halts", type=int, default=20)
    args = parser.parse_args()
    slack = SlackServer()
    with tempfile.TemporaryDirectory() as tmp, redis_server(Path(tmp) / "redis") as server:
        settings = fast_settings(server, Path(tmp) / "data", REPO / "domains")
        slacked = SlackSettings(bot_token=SecretStr(slack.token), base_url=slack.url)
        settings = settings.model_copy(update={"slack": slacked})
        redis = connect(settings)
        log = (Path(tmp) / "notifier.log").open("wb")
        notifier = subprocess.Popen(
            [sys.executable, "-m", "wavefleet.cli", "notifier"], env=env_of(settings), stdout=log, stderr=log
        )
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
                send_halt(redis, settings.keys, f"drill {index}", "benchmark")
                wait_until(posted(slack, before + 1), interval_s=0.001, message="the halt alert")
                latencies.append(slack.messages[before].at - started)
                send_resume(redis, settings.keys, "benchmark")
                wait_until(posted(slack, before + 2), interval_s=0.001, message="the resume")
        finally:
            notifier.terminate()
            notifier.wait(timeout=10)
            slack.close()
    latencies.sort()
    p99 = latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))]
    result = {
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
