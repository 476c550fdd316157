"""`wave monitor`: a loop running the named detectors (wavefleet/detectors.py) over the fleet's state,
keeping one open finding per (detector, key) in Redis and telling the events stream when one opens
or clears, so the Slack notifier posts each once and a restarted monitor does not re-alert.
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
import threading
import time
from collections.abc import Callable
from typing import Any

from redis import Redis
from redis.exceptions import RedisError, WatchError
from rich.console import Console
from rich.table import Table
from rich.text import Text

from . import logs
from .app_like import AppLike
from .config import Settings
from .detectors import DETECTORS, Detector, Finding, Tick
from .domains import Domains
from .errors import ExitCode
from .fleet_events import MonitorCleared, MonitorFinding, emit
from .keys import Keys
from .status_view import age
from .text import shown

PIPED_WIDTH = 200  # columns of the --once table when stdout is not a terminal


def _field(detector: str, key: str) -> str:
    # detector names hold no ":", so the first one splits the field again
    return f"{detector}:{key}"


def open_findings(redis: Redis, keys: Keys) -> list[Finding]:
    """The findings open now (written by whichever monitor ran last), oldest first."""
    found = []
    for raw in redis.hvals(keys.monitor_findings()):
        try:
            found.append(Finding.model_validate_json(raw))
        except ValueError:
            continue
    return sorted(found, key=lambda f: (f.opened_at, f.detector, f.key))


class Monitor:
    """One pass (`tick`) runs every detector and reconciles their findings with the open ones."""

    def __init__(
        self,
        redis: Redis,
        settings: Settings,
        domains: Domains,
        *,
        detectors: dict[str, Detector] | None = None,
        clock: Callable[[], float] = time.time,
        announce: bool = True,
    ) -> None:
        self.redis, self.settings, self.domains = redis, settings, domains
        self.detectors = DETECTORS if detectors is None else detectors
        self.clock = clock
        self.memory: dict[str, Any] = {}  # detectors' memory across ticks (queue depths)
        self.log = logs.get()
        self.announce = announce  # log each opening and clearing (not `--once`: it prints a table)

    def tick(self) -> list[Finding]:
        """Run every detector once; open what is new, clear what went away; the open findings."""
        tick = Tick(self.redis, self.settings, self.domains, self.clock(), self.memory)
        self.memory.pop("_tick", None)  # per-tick cache shared by detectors (live workers)
        current: dict[str, Finding] = {}
        judged: set[str] = set()
        for name, detect in self.detectors.items():
            try:
                found = detect(tick)
            except (RedisError, ValueError) as exc:  # one broken detector does not blind the rest
                self.log.warning("monitor detector failed", detector=name, error=str(exc))
                continue
            if found is None:
                continue
            judged.add(name)
            current.update({_field(f.detector, f.key): f for f in found})
        opened = {_field(f.detector, f.key): f for f in open_findings(self.redis, self.settings.keys)}
        for field, finding in current.items():
            if field not in opened:
                self._open(field, finding.model_copy(update={"opened_at": tick.now}), tick.now)
        for field, finding in opened.items():
            if field not in current and finding.detector in judged:
                self._clear(field, finding, tick.now)
        return open_findings(self.redis, self.settings.keys)

    def _open(self, field: str, finding: Finding, now: float) -> None:
        event = MonitorFinding(
            detector=finding.detector, key=finding.key, severity=finding.severity, summary=finding.summary
        )
        if self._change(field, finding.model_dump_json(), event, now) and self.announce:
            self.log.warning(finding.summary, detector=finding.detector, key=finding.key)

    def _clear(self, field: str, finding: Finding, now: float) -> None:
        summary = f"cleared after {age(now - finding.opened_at)}: {finding.summary}"
        event = MonitorCleared(detector=finding.detector, key=finding.key, summary=summary)
        if self._change(field, None, event, now) and self.announce:
            self.log.info(summary, detector=finding.detector, key=finding.key)

    def _change(
        self, field: str, value: str | None, event: MonitorFinding | MonitorCleared, now: float
    ) -> bool:
        """Open (`value`) or clear (None) one finding and write its event in one transaction, only
        if no other monitor did it first: each opening and clearing is told exactly once."""
        key = self.settings.keys.monitor_findings()
        with self.redis.pipeline() as pipe:
            try:
                pipe.watch(key)
                if bool(pipe.hexists(key, field)) == (value is not None):
                    return False
                pipe.multi()
                if value is None:
                    pipe.hdel(key, field)
                else:
                    pipe.hset(key, field, value)
                emit(pipe, self.settings.keys, event, now)
                pipe.execute()
            except WatchError:  # another monitor changed the findings meanwhile: look again next tick
                return False
        return True

    def run(self, stopping: threading.Event) -> None:
        """Tick every `monitor.interval_s` until `stopping` is set; Redis outages are waited out."""
        interval = self.settings.monitor.interval_s
        self.log.info("monitor started", interval_s=interval, detectors=",".join(self.detectors))
        while not stopping.is_set():
            try:
                self.tick()
            except RedisError as exc:
                self.log.warning("monitor cannot reach Redis; trying again", error=str(exc))
            stopping.wait(interval)
        self.log.info("monitor stopped")


# The command ---------------------------------------------------------------------------------
def add_commands(sub: Any) -> None:
    """Register `monitor` on the `wave` parser's subparsers."""
    p = sub.add_parser("monitor", help="watch the fleet for trouble; --once: print open findings (cron/CI)")
    p.add_argument(
        "--once",
        action="store_true",
        help="one pass: print the open findings; exit 3 if any is open, 0 if none (cron, CI)",
    )
    p.add_argument("--json", action="store_true", help="with --once: the findings as JSON")
    p.set_defaults(handler=cmd_monitor)


def cmd_monitor(app: AppLike, args: argparse.Namespace) -> int:
    logs.setup_for("MONITOR", app.settings)  # on stderr: stdout is the table or the JSON
    monitor = Monitor(app.store.redis, app.settings, app.domains, announce=not args.once)
    if args.once:
        findings = monitor.tick()
        if args.json:
            print(json.dumps([f.model_dump(mode="json") for f in findings], indent=2))
        else:
            print_findings(findings, monitor.clock())
        return ExitCode.FINDINGS if findings else ExitCode.OK
    stopping = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stopping.set())
    monitor.run(stopping)
    return ExitCode.OK


def findings_table(findings: list[Finding], now: float) -> Table:
    """The open findings, every value from Redis escaped (worker names and story ids are data)."""
    table = Table(title=f"monitor: {len(findings)} open finding(s)")
    for column in ("severity", "detector", "about", "since", "summary"):
        table.add_column(column, overflow="fold")
    for f in findings:
        style = "bold red" if f.severity == "critical" else "yellow"
        table.add_row(
            Text(f.severity, style=style),
            shown(f.detector),
            shown(f.key),
            age(now - f.opened_at),
            shown(f.summary),
        )
    return table


def print_findings(findings: list[Finding], now: float) -> None:
    if not findings:
        print("monitor: no open findings")
        return
    # cron mail and CI logs have no terminal width: wide enough that a summary stays on its line
    width = None if sys.stdout.isatty() else PIPED_WIDTH
    Console(highlight=False, width=width).print(findings_table(findings, now))
