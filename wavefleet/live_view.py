"""The live view of `wave up` and `wave demo`: the halt banner on top while halted, the workers by
role (dead ones marked) and the sandbox runner, above the queue and story tables.

Everything shown that WAVE did not write (a halt reason, a worker name, story text) goes through
`wavefleet.text` first: it is data, never markup or a terminal instruction.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from redis import Redis
from rich.console import Group, RenderableType
from rich.panel import Panel
from rich.table import Table
from rich.text import Text

from .keys import Keys
from .lifecycle import Role
from .notifier_status import status_line as notifier_status
from .sandbox.container import runner_beat
from .status_view import age, halt_banner
from .store import StoryStore
from .text import terminal_safe

# A worker seen dying stays marked this long after it died (its replacement is started at once
# by `wave up`), then leaves the view so that a long run's restarts do not fill the screen.
DEAD_SHOWN_S = 600.0


def worker_role(name: str) -> Role | None:
    """The role in a worker's name (`auth-fe-1.3fa2c1.4242`: identity, random tag, pid), or None."""
    identity = name.split(".", 1)[0]
    parts = identity.rsplit("-", 2)
    if len(parts) != 3:
        return None
    try:
        return Role(parts[1].lower())
    except ValueError:
        return None


@dataclass
class WorkerWatch:
    """Which registered workers are alive (their heartbeat key exists) and which this view saw die.

    Only a worker seen alive by this view can be marked dead: the workers set keeps every name
    ever registered (a stopped fleet's workers among them), and those are history, not news.
    """

    redis: Redis
    keys: Keys
    seen_alive: set[str] = field(default_factory=set)
    died_at: dict[str, float] = field(default_factory=dict)

    def poll(self) -> tuple[dict[Role, list[str]], dict[Role, list[tuple[str, float]]]]:
        """(live worker names by role, dead (name, died at) by role)."""
        names = sorted(str(n) for n in self.redis.smembers(self.keys.workers()))
        with self.redis.pipeline(transaction=False) as pipe:
            for name in names:
                pipe.exists(self.keys.worker_heartbeat(name))
            beating = pipe.execute()
        now = time.time()
        live: dict[Role, list[str]] = {}
        dead: dict[Role, list[tuple[str, float]]] = {}
        for name, alive in zip(names, beating, strict=True):
            role = worker_role(name)
            if role is None:
                continue
            if alive:
                self.seen_alive.add(name)
                self.died_at.pop(name, None)
                live.setdefault(role, []).append(name)
            elif name in self.seen_alive:
                died = self.died_at.setdefault(name, now)
                if now - died < DEAD_SHOWN_S:
                    dead.setdefault(role, []).append((name, died))
        return live, dead


class LiveView:
    """Renders the top of the live view from Redis, once per refresh."""

    def __init__(self, store: StoryStore, *, sandbox: str) -> None:
        self.store = store
        self.sandbox = sandbox
        self.workers = WorkerWatch(store.redis, store.keys)

    def render(self, *below: RenderableType) -> Group:
        parts: list[RenderableType] = []
        banner = halt_banner(self.store)  # the line `wave status` opens with, the same words
        if banner is not None:
            parts.append(
                Panel(
                    Text(terminal_safe(banner), style="bold"),
                    title="EMERGENCY STOP",
                    border_style="red",
                    style="red",
                )
            )
        parts.append(self.workers_table())
        notifier = notifier_status(self.store.redis, self.store.keys)  # `wave status`'s line
        if notifier is not None:
            parts.append(Text(terminal_safe(notifier), style="yellow"))
        parts.extend(self.findings())
        return Group(*parts, *below)

    def findings(self) -> list[RenderableType]:
        """The monitor's open findings (what `wave monitor --once` prints), when there are any."""
        # imported here: the monitor's detectors read worker names with this module's worker_role
        from .monitor import findings_table, open_findings  # noqa: PLC0415

        found = open_findings(self.store.redis, self.store.keys)
        return [findings_table(found, time.time())] if found else []

    def workers_table(self) -> Table:
        live, dead = self.workers.poll()
        table = Table(title="workers")
        for column in ("role", "live", "dead"):
            table.add_column(column)
        now = time.time()
        for role in Role:
            gone = Text(style="bold red")
            for i, (name, died) in enumerate(dead.get(role, [])):
                gone.append(("\n" if i else "") + f"DEAD {terminal_safe(name)} ({age(now - died)} ago)")
            table.add_row(role.value, str(len(live.get(role, []))), gone)
        if self.sandbox == "container":
            table.add_row("sandbox runner", *self._runner())
        return table

    def _runner(self) -> tuple[Text, Text]:
        beat = runner_beat(self.store.redis, self.store.keys)
        if beat is None:
            return Text("0"), Text("DEAD: no `wave sandbox` heartbeat", style="bold red")
        what = ", ".join(v for v in (beat.get("name"), beat.get("image")) if v)
        return Text(f"1 {terminal_safe(what)}".strip()), Text("")
