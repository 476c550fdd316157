"""The embedded fleet: a redis-server, the supervisor and every domain's team as local processes.

`wave up` runs it until Ctrl-C; `wave demo` runs it over the sample stories and prints a summary.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from pydantic import SecretStr
from rich.console import Console
from rich.live import Live
from rich.markup import escape
from rich.table import Table

from . import acl, logs
from .config import ENV_PREFIX, Settings, to_env
from .connection import connect
from .domains import Domains
from .embedded import EmbeddedRedis, free_port
from .lifecycle import TERMINAL, Role, StoryState
from .live_view import LiveView
from .processes import term_with_parent
from .queues import Dispatcher
from .sandbox.fleet import probe_before_start
from .store import StoryRecord, StoryStore
from .stories import stories_from_file
from .text import mask_url, shown

STOP_TIMEOUT_S = 30.0
WAITING_FOR_HUMAN = frozenset({StoryState.HELD})


@dataclass
class Child:
    name: str
    argv: list[str]
    process: subprocess.Popen[bytes] | None = None
    user: str = acl.WORKER  # its Redis ACL user on the embedded Redis
    restarts: int = 0
    log: IO[bytes] | None = field(default=None, repr=False)


class Fleet:
    """Starts, watches (restarting a crashed one) and stops the fleet's processes."""

    def __init__(
        self,
        settings: Settings,
        domains: Domains,
        log_dir: Path | None,
        embedded: EmbeddedRedis | None = None,
    ) -> None:
        self.settings = settings
        self.log_dir = log_dir
        self.embedded = embedded
        self.children = [
            Child("SUPERVISOR", ["supervisor"], user=acl.SUPERVISOR),
            Child("WATCHER", ["watch"], user=acl.WATCHER),
            # the monitor reads what the supervisor reads and writes only its findings and events
            Child("MONITOR", ["monitor"], user=acl.SUPERVISOR),
        ]
        if settings.sandbox == "container":  # the one process with Docker access runs the stages' commands
            self.children.append(Child("SANDBOX", ["sandbox"], user=acl.SANDBOX))
        if settings.slack.enabled:  # without a token or webhook `wave notifier` refuses to start
            self.children.append(Child("NOTIFIER", ["notifier"], user=acl.NOTIFIER))
        for domain in domains:
            for role in Role:
                for index in range(1, domain.team.size(role) + 1):
                    self.children.append(
                        Child(
                            logs.identity(domain.name, role.value, index),
                            ["worker", "--domain", domain.name, "--role", role.value, "--index", str(index)],
                        )
                    )

    def env(self, user: str = acl.WORKER) -> dict[str, str]:
        """The child's environment: the fleet's settings, with its own role's Redis user on the
        embedded Redis (the given Redis's user otherwise)."""
        update: dict[str, Any] = {
            "data_dir": self.settings.data_dir.resolve(),
            "domains_dir": self.settings.domains_dir.resolve(),
            "halt_dir": self.settings.halt_file.parent.resolve(),
        }
        if self.embedded is not None:
            username, password = self.embedded.credentials(user)
            update["redis"] = self.settings.redis.model_copy(
                update={"username": username, "password": SecretStr(password)}
            )
        resolved = self.settings.model_copy(update=update)
        return {**{k: v for k, v in os.environ.items() if not k.startswith(ENV_PREFIX)}, **to_env(resolved)}

    def start(self) -> None:
        for child in self.children:
            self._spawn(child)

    def _spawn(self, child: Child) -> None:
        if self.log_dir is not None:
            self.log_dir.mkdir(parents=True, exist_ok=True)
            child.log = (self.log_dir / f"{child.name.lower()}.log").open("ab")
        child.process = subprocess.Popen(
            [sys.executable, "-m", "wavefleet.cli", *child.argv],
            env=self.env(child.user),
            stdin=subprocess.DEVNULL,  # never the operator's terminal: stages read nothing from it
            stdout=child.log,
            stderr=child.log,
            preexec_fn=term_with_parent,  # noqa: PLW1509 - `wave up` runs no threads of its own
        )

    def watch(self) -> None:
        """Restart any child that exited; called from the view loop."""
        for child in self.children:
            if child.process is not None and child.process.poll() is not None:
                child.restarts += 1
                self._spawn(child)

    def alive(self) -> int:
        return sum(1 for c in self.children if c.process is not None and c.process.poll() is None)

    def stop(self) -> None:
        """SIGTERM lets each worker finish its stage; anything still running after the timeout is killed
        (its stage is re-run on the next start, so nothing is lost either way)."""
        for child in self.children:
            if child.process is not None and child.process.poll() is None:
                child.process.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + STOP_TIMEOUT_S
        for child in self.children:
            if child.process is None:
                continue
            try:
                child.process.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                child.process.kill()
                child.process.wait()
            if child.log is not None:
                child.log.close()


def start_redis(settings: Settings, directory: Path, port: int) -> tuple[EmbeddedRedis, Settings]:
    """The embedded Redis, and settings that reach it as the operator (what `wave up` itself does)."""
    embedded = EmbeddedRedis(
        directory,
        port,
        appendfsync=settings.embedded_redis.appendfsync,
        password=_secret(settings.embedded_redis.password),
        key_prefix=settings.redis.key_prefix,
        die_with_parent=True,
    )
    url = embedded.start()
    username, password = embedded.credentials(acl.OPERATOR)
    redis = settings.redis.model_copy(
        update={"url": url, "username": username, "password": SecretStr(password)}
    )
    return embedded, settings.model_copy(update={"redis": redis})


def _secret(value: SecretStr | None) -> str | None:
    return value.get_secret_value() if value else None


# Views ---------------------------------------------------------------------------------------
def queues_table(dispatcher: Dispatcher, domains: Domains, fleet: Fleet) -> Table:
    table = Table(title=f"queues  ({fleet.alive()}/{len(fleet.children)} processes up)")
    table.add_column("domain")
    for role in Role:
        table.add_column(role.value, justify="right")
    depths = dispatcher.depths(domains.names())
    for name in domains.names():
        table.add_row(
            shown(name), *(str(depths[dispatcher.settings.keys.queue(name, r.value)]) for r in Role)
        )
    return table


def stories_table(records: list[StoryRecord], title: str = "stories") -> Table:
    table = Table(title=title)
    for column in ("id", "domain", "state", "round", "stage", "age", "reason"):
        table.add_column(column)
    now = time.time()
    for r in records[-25:]:
        table.add_row(
            shown(r.id),
            shown(r.domain),
            _coloured(r.state),
            str(r.round),
            shown(r.stage),
            f"{int((r.updated_at if r.state in TERMINAL else now) - r.created_at)}s",
            shown(r.reason[:60]),
        )
    return table


def _coloured(state: StoryState) -> str:
    colour = {
        StoryState.DONE: "green",
        StoryState.FAILED: "red",
        StoryState.KILLED: "red",
        StoryState.HELD: "yellow",
    }.get(state, "cyan")
    return f"[{colour}]{state.value}[/{colour}]"


# Commands ------------------------------------------------------------------------------------
def run_up(settings: Settings, domains: Domains, *, live: bool) -> int:
    probe_before_start(settings)  # refuse here, in one line, not in every worker
    if settings.sandbox == "container":  # no engine or no image: refused here, not in a restart loop
        from .sandbox.docker_ops import DockerOps  # noqa: PLC0415 - only this mode needs the Docker SDK

        DockerOps(settings.sandbox_container, "", settings.data_dir).check_ready()
    console = Console(stderr=True)
    stopping = stop_on_signals()
    embedded, fleet = None, None
    try:
        if "url" not in settings.redis.model_fields_set:
            embedded, settings = start_redis(
                settings, settings.data_dir / "redis", settings.embedded_redis.port
            )
            _say(console, f"embedded Redis on {mask_url(settings.redis.url)} (AOF in {embedded.directory})")
            if not embedded.halt_protected:
                _say(console, HALT_UNPROTECTED)
        fleet = Fleet(settings, domains, settings.data_dir / "logs" if live else None, embedded)
        store = StoryStore(connect(settings), settings.keys, settings.pipeline.max_rounds)
        dispatcher = Dispatcher(settings, connect(settings, decode=False), store)
        _say(
            console,
            f"fleet starting: {len(fleet.children)} processes, agent={settings.agent_kind}"
            + (" (offline: deterministic, no LLM)" if settings.agent_kind == "offline" else ""),
        )
        if not stopping:
            fleet.start()
        view = LiveView(store, sandbox=settings.sandbox)
        _watch_loop(
            fleet,
            stopping,
            lambda: (
                view.render(queues_table(dispatcher, domains, fleet), stories_table(store.list()))
                if live
                else None
            ),
            console,
        )
    finally:
        _stop_all(console, fleet, embedded)
    return 0


HALT_UNPROTECTED = (
    "warning: this redis-server is older than 7: its ACL users are separated, but any worker could "
    "clear the halt key (read-only keys need Redis 7; install Debian's redis-server)"
)


def stop_on_signals() -> list[int]:
    """Ctrl-C, SIGTERM and SIGHUP (the terminal closed) all end the run the same way: the watch loop
    returns and everything started is stopped, the embedded Redis included."""
    stopping: list[int] = []
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, lambda signum, _frame: stopping.append(signum))
    return stopping


def _stop_all(console: Console, fleet: Fleet | None, embedded: EmbeddedRedis | None) -> None:
    if fleet is None and embedded is None:
        return  # refused before anything started: its one-line error says all
    _say(console, "stopping the fleet (workers finish their current stage)...")
    if fleet is not None:
        fleet.stop()
    if embedded is not None:
        embedded.stop()
    _say(console, "fleet stopped; run `wave up` again to carry on where it left off")


def _say(console: Console, message: str) -> None:
    # After SIGHUP the terminal may be gone: a failed write must not stop the shutdown.
    with contextlib.suppress(OSError):
        console.print(message, markup=False)  # paths and URLs are not markup


def _watch_loop(
    fleet: Fleet,
    stopping: list[int],
    render: Any,
    console: Console,
    *,
    until: Any = None,
    timeout_s: float | None = None,
) -> bool:
    """Refresh the view and restart crashed children until a signal (`stopping`), `until()` or the timeout."""
    deadline = time.monotonic() + timeout_s if timeout_s else None
    first = render()
    with (
        Live(first, console=console, refresh_per_second=4, transient=False)
        if first is not None
        else _Null() as view
    ):
        while not stopping:
            fleet.watch()
            if view is not None:
                view.update(render())
            if until is not None and until():
                return True
            if deadline is not None and time.monotonic() > deadline:
                return False
            time.sleep(0.25)
    return False


class _Null:
    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc: object) -> None:
        return None


def run_demo(settings: Settings, domains: Domains, *, timeout_s: float, stories_file: Path) -> int:
    probe_before_start(settings)
    console = Console()
    stories = stories_from_file(stories_file)
    demo_dir = (settings.data_dir / "demo").resolve()
    shutil.rmtree(demo_dir, ignore_errors=True)
    # The demo spends nothing unless asked to: `auto` means the offline agents here, keys or not.
    agent = "offline" if settings.agent == "auto" else settings.agent
    settings = settings.model_copy(update={"data_dir": demo_dir, "agent": agent})
    stopping = stop_on_signals()
    embedded, settings = start_redis(settings, demo_dir / "redis", free_port())
    fleet = Fleet(settings, domains, demo_dir / "logs", embedded)
    store = StoryStore(connect(settings), settings.keys, settings.pipeline.max_rounds)
    dispatcher = Dispatcher(settings, connect(settings, decode=False), store)
    finished = False
    started = time.monotonic()
    try:
        console.print(
            f"[bold]WAVE demo[/bold]: {len(stories)} stories, domains {escape(', '.join(domains.names()))}, "
            f"agent [yellow]{settings.agent_kind}[/yellow]"
            + (" (deterministic, no LLM, no API key)" if settings.agent_kind == "offline" else "")
        )
        console.print(
            f"embedded Redis {mask_url(settings.redis.url)}, AOF and logs in {demo_dir}", markup=False
        )
        if not embedded.halt_protected:
            console.print(HALT_UNPROTECTED, markup=False)
        fleet.start()
        store.enqueue(stories, domains)

        def all_settled() -> bool:
            return all(r.state in TERMINAL | WAITING_FOR_HUMAN for r in store.list())

        view = LiveView(store, sandbox=settings.sandbox)
        finished = _watch_loop(
            fleet,
            stopping,
            lambda: view.render(queues_table(dispatcher, domains, fleet), stories_table(store.list())),
            console,
            until=all_settled,
            timeout_s=timeout_s,
        )
    finally:
        records = store.list()
        fleet.stop()
        embedded.stop()
    console.print(summary_table(store_results(records), time.monotonic() - started))
    if not finished:
        console.print(
            f"demo did not finish within {timeout_s:.0f}s; logs in {demo_dir / 'logs'}",
            style="red",
            markup=False,
        )
        return 1
    console.print(
        f"branches (a GO's reviewed merge: wave/<ID>-qa): {demo_dir / 'repos'}; "
        f"worker logs: {demo_dir / 'logs'}",
        markup=False,
    )
    return 0


def store_results(records: list[StoryRecord]) -> list[StoryRecord]:
    return sorted(records, key=lambda r: r.id)


def summary_table(records: list[StoryRecord], elapsed_s: float) -> Table:
    table = Table(title=f"demo summary ({elapsed_s:.0f}s, offline agent)")
    for column in ("story", "domain", "final state", "rounds", "took", "why"):
        table.add_column(column)
    for r in records:
        table.add_row(
            shown(r.id),
            shown(r.domain),
            _coloured(r.state),
            str(r.round),
            f"{r.updated_at - r.created_at:.1f}s",
            shown(r.reason[:70]),
        )
    return table
