"""Notifier backlog drain: what a backlog of story events costs the Slack notifier to post, messages and
CPU per event (README "Slack": a backlog's ordinary replies of one story are merged into one reply).

A real redis-server, a real `wave notifier` process (its start is before the clock) posting with the
real slack_sdk to the local Slack Web API in a process of its own (observability_overhead.py
`--serve`, so its CPU is not the notifier's). `--stories` stories are enqueued and each gets
`--events` ordinary events (activity: a stage retried, a stage done), all written in one MULTI so
the notifier finds them as one backlog (as after an outage, or a fleet faster than Slack's one
message a second a channel); the clock runs until every entry is acked.

    .venv/bin/python benchmarks/notifier_backlog.py --stories 200 --events 6
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

from pydantic import SecretStr

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
sys.path.insert(0, str(REPO / "tests"))
sys.path.insert(0, str(BENCH))

import observability_overhead as obs  # noqa: E402
import pipeline_overhead as pipeline  # noqa: E402

from wavefleet.connection import connect  # noqa: E402
from wavefleet.domains import load_domains  # noqa: E402
from wavefleet.fleet_events import StoryEvent, emit  # noqa: E402
from wavefleet.store import StoryStore  # noqa: E402
from wavefleet.stories import Story  # noqa: E402
from wavefleet.testing import Processes, fast_settings, redis_server, wait_until  # noqa: E402

ROLES = ("pm", "fe", "be", "qa", "cto")


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--stories", type=int, default=200)
    parser.add_argument("--events", type=int, default=6, help="ordinary events per story after its enqueue")
    return parser.parse_args()


def main() -> int:
    args = parse_args()
    peers = obs.start_peers()
    try:
        with (
            tempfile.TemporaryDirectory(prefix="wave-backlog-") as tmp,
            redis_server(Path(tmp) / "r") as server,
        ):
            base = fast_settings(server, Path(tmp) / "data", REPO / "domains")
            slack = base.slack.model_copy(
                update={"bot_token": SecretStr(peers.slack_token), "base_url": peers.slack_url}
            )
            settings = base.model_copy(update={"slack": slack})
            redis = connect(settings)
            procs = Processes(settings, Path(tmp) / "logs")
            try:
                notifier = obs.start_notifier(procs, settings, redis)
                time.sleep(1.0)  # its imports and first read done: not a per-event cost
                store = StoryStore(redis, settings.keys, settings.pipeline.max_rounds)
                ids = [f"AUTH-{9000 + i}" for i in range(args.stories)]
                before, cpu0, t0 = (
                    peers.counts()["slack_messages"],
                    pipeline.cpu_of(notifier.pid),
                    time.perf_counter(),
                )
                pipe = redis.pipeline(transaction=True)  # one MULTI: the notifier wakes to all of it
                store.enqueue(
                    [Story(id=i, title=f"story {i}") for i in ids], load_domains(settings.domains_dir)
                )
                for n in range(args.events):
                    for story in ids:
                        role = ROLES[n // 2 % len(ROLES)]
                        kind = "stage_retry" if n % 2 == 0 else "stage_done"
                        emit(pipe, settings.keys, StoryEvent(story=story, event=kind, role=role), time.time())
                pipe.execute()
                group = settings.keys.events_group("notifier")
                wait_until(
                    lambda: (
                        redis.xinfo_groups(settings.keys.events())[0]["lag"] == 0
                        and redis.xpending(settings.keys.events(), group)["pending"] == 0
                    ),
                    timeout_s=600,
                    message="every entry acked",
                    diagnose=procs.logs,
                )
                elapsed, cpu = time.perf_counter() - t0, pipeline.cpu_of(notifier.pid) - cpu0
            finally:
                procs.stop_all()
        messages = peers.counts()["slack_messages"] - before
    finally:
        peers.close()
    events = args.stories * (1 + args.events)
    print(
        f"{events} events ({args.stories} stories x (enqueued + {args.events})) drained in {elapsed:.2f} s: "
        f"{messages} Slack messages ({messages / events:.2f} per event); notifier CPU {cpu:.2f} s = "
        f"{1000 * cpu / events:.2f} ms per event, {1000 * cpu / max(messages, 1):.2f} ms per message"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
