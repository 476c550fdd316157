"""The `wave` command: enqueue and inspect stories, run workers, the supervisor and the embedded fleet."""

from __future__ import annotations

import argparse
import errno
import os
import signal
import socket
import sys
import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

from pydantic import SecretStr
from redis.exceptions import RedisError

from . import logs
from .arguments import amount, whole
from .config import Settings, load_settings
from .connection import check, connect
from .domains import Domains, load_domains
from .embedded import endpoint_of, operator_credentials
from .errors import ConflictError, ExitCode, InvalidInputError, RedisUnavailableError, WaveError
from .halt import read_halt, send_cancel, send_halt, send_resume
from .lifecycle import Event, EventKind, Rejected, Role, StoryState
from .llm.cli import add_commands as add_llm_commands
from .monitor import add_commands as add_monitor_commands
from .notifier_status import status_line as notifier_status
from .safety.autonomy import record_pass, require_pass
from .safety.autonomy import status_line as preflight_status
from .safety.check_cli import add_check_commands
from .safety.cli import add_commands as add_safety_commands
from .safety.cli import decide_action, is_action_id
from .safety.intake import story_flags
from .sandbox.fleet import summary as sandbox_summary
from .status_view import follow_events, halt_banner, print_history, print_records, print_story, show
from .store import StoryStore
from .stories import Priority, Story, stories_from_file, story_from_fields
from .text import terminal_safe
from .watcher import FILE_SOURCE, MAX_REASON_CHARS, HaltFileWatcher, stop_file_present

if TYPE_CHECKING:
    from .dockerproxy import Profile
    from .health import HealthServer
    from .supervisor import Supervisor
    from .trace_roots import StoryTraces

EMBEDDED_DIR = "redis"
OUTPUT_ERRORS = (errno.ENOSPC, errno.EDQUOT, errno.EFBIG, errno.EIO)  # writing stdout failed
# Bounds of the numeric options: far above any real use, low enough for Redis and the clock.
MAX_RECENT = 100_000
MAX_WORKER_INDEX = 1_000
MAX_DEMO_TIMEOUT_S = 86_400.0


class App:
    """What every command needs, built once from the settings."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._domains: Domains | None = None
        self._store: StoryStore | None = None

    @property
    def domains(self) -> Domains:
        if self._domains is None:
            self._domains = load_domains(self.settings.domains_dir)
        return self._domains

    @property
    def store(self) -> StoryStore:
        if self._store is None:
            redis = connect(self.settings)
            check(redis, self.settings)
            self._store = StoryStore(redis, self.settings.keys, self.settings.pipeline.max_rounds)
        return self._store


def fleet_settings(settings: Settings) -> Settings:
    """Point at the embedded Redis a running `wave up` started, unless a Redis URL was given."""
    if "url" in settings.redis.model_fields_set:
        return settings
    directory = settings.data_dir / EMBEDDED_DIR
    url, credentials = endpoint_of(directory), operator_credentials(directory)
    if url is None or credentials is None:
        return settings
    username, password = credentials  # the CLI is the operator: never the admin
    redis = settings.redis.model_copy(
        update={"url": url, "username": username, "password": SecretStr(password)}
    )
    return settings.model_copy(update={"redis": redis})


# Story commands ------------------------------------------------------------------------------
def cmd_enqueue(app: App, args: argparse.Namespace) -> int:
    stories = _stories_from_args(args)
    app.store.enqueue(stories, app.domains)
    for story in stories:
        flags = story_flags(story)  # the store checked the same: said here so the operator knows now
        held = f" (flagged at intake: {', '.join(flags)}; held for review)" if flags else ""
        show(f"enqueued {story.id} -> {app.domains.for_story(story.id).name}{held}")
    return ExitCode.OK


def _stories_from_args(args: argparse.Namespace) -> list[Story]:
    if args.file:
        if args.id or args.title:
            raise InvalidInputError("give either -f FILE or a story id and --title, not both")
        return stories_from_file(Path(args.file))
    if not args.id:
        raise InvalidInputError(
            "name a story: wave enqueue AUTH-001 --title '...', or wave enqueue -f stories.yaml"
        )
    fields: dict[str, Any] = {"id": args.id, "title": args.title or ""}
    if args.description:
        fields["description"] = args.description
    if args.criteria:
        fields["acceptance_criteria"] = args.criteria
    if args.priority:
        fields["priority"] = args.priority
    if args.label:
        fields["labels"] = args.label
    return [story_from_fields(fields)]


def cmd_status(app: App, args: argparse.Namespace) -> int:
    if args.id:
        print_story(app.store, app.store.get(args.id), as_json=args.json)
        return ExitCode.OK
    if args.all:
        records, left_out = app.store.list(), 0
    else:
        records, left_out = app.store.overview(recent=args.recent)
    banner = halt_banner(app.store)
    if banner and not args.json:
        show(banner)
    sandboxes = sandbox_summary(app.store.redis, app.settings.keys)
    if sandboxes and not args.json:
        show(sandboxes)
    notifier = notifier_status(app.store.redis, app.settings.keys)
    if notifier and not args.json:
        show(notifier)
    preflight = preflight_status(app.store.redis, app.settings)
    if preflight and not args.json:
        show(preflight)
    if left_out and not args.json:
        if not records:
            show(f"no active stories; {left_out} finished (wave status --all, or --recent N)")
            return ExitCode.OK
        print_records(records, as_json=False)
        show(f"({left_out} stories finished earlier not shown: wave status --all, or wave list)")
        return ExitCode.OK
    print_records(records, as_json=args.json)
    return ExitCode.OK


def cmd_list(app: App, args: argparse.Namespace) -> int:
    if args.domain:
        app.domains.get(args.domain)
    state = _parse_state(args.state) if args.state else None
    print_records(app.store.list(domain=args.domain, state=state), as_json=args.json)
    return ExitCode.OK


def _parse_state(value: str) -> StoryState:
    try:
        return StoryState(value)
    except ValueError:
        raise InvalidInputError(
            f"unknown state {value!r}: use one of {', '.join(s.value for s in StoryState)}"
        ) from None


def cmd_events(app: App, args: argparse.Namespace) -> int:
    if args.follow:
        follow_events(app.store, args.id, as_json=args.json)  # until Ctrl-C
        return ExitCode.OK
    if args.id is None:
        raise InvalidInputError(
            "name a story (`wave events ID`), or follow the fleet's: `wave events --follow`"
        )
    print_history(app.store, args.id, as_json=args.json)
    return ExitCode.OK


def _transition(kind: EventKind, verb: str) -> Callable[[App, argparse.Namespace], int]:
    def command(app: App, args: argparse.Namespace) -> int:
        reason = args.reason or f"{verb} by {_operator()}"
        if kind in (EventKind.APPROVE, EventKind.REJECT) and is_action_id(args.id):  # `wave review`'s
            return decide_action(app, args.id, "approve" if kind is EventKind.APPROVE else "reject", reason)
        try:
            outcome = app.store.apply(args.id, Event(kind, reason=reason))
        except Rejected as exc:
            raise ConflictError(f"{args.id}: {exc}") from None
        if kind is EventKind.CANCEL:  # committed: now the worker running its stage kills it
            send_cancel(app.store.redis, app.settings.keys, args.id)
        show(f"{args.id}: {outcome.before.state} -> {outcome.after.state}")
        return ExitCode.OK

    return command


# Emergency stop ------------------------------------------------------------------------------
def _operator() -> str:
    return f"cli:{os.environ.get('USER') or 'unknown'}@{socket.gethostname()}"


def cmd_stop(app: App, args: argparse.Namespace) -> int:
    if not args.reason.strip():
        raise InvalidInputError("--reason must say why the fleet is stopped")
    if len(args.reason) > MAX_REASON_CHARS:
        raise InvalidInputError(f"--reason is {len(args.reason)} characters: at most {MAX_REASON_CHARS}")
    state = send_halt(app.store.redis, app.settings.keys, args.reason.strip(), _operator())
    show(f"fleet HALTED: {state.reason} (by {state.by}); `wave resume` or `wave status` to follow")
    return ExitCode.OK


def cmd_resume(app: App, args: argparse.Namespace) -> int:
    state = read_halt(app.store.redis, app.settings.keys)
    if state is None:
        show("fleet is not halted")
        return ExitCode.OK
    if state.by.startswith(FILE_SOURCE) and stop_file_present(app.settings.halt_file):
        where = app.settings.halt_file_on_host
        raise ConflictError(f"halted by {where} (the watcher's halt folder): remove that file to resume")
    send_resume(app.store.redis, app.settings.keys, _operator())
    show("fleet resumed: halted stories continue from their stage")
    return ExitCode.OK


def cmd_watch(app: App, args: argparse.Namespace) -> int:
    logs.setup_for("WATCHER", app.settings)
    stopping = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stopping.set())
    HaltFileWatcher(app.store.redis, app.settings.keys, app.settings.halt_file).run(stopping)
    return ExitCode.OK


def cmd_docker_proxy(app: App, args: argparse.Namespace) -> int:
    from . import dockerproxy  # noqa: PLC0415

    listen = dockerproxy.parse_listen(args.listen)
    dockerproxy.check_daemon(args.socket)
    logs.setup_for("DOCKER-PROXY", app.settings)
    log = logs.get()

    def report(event: str, detail: str, client: str) -> None:
        log.warning(event, detail=detail, client=client)

    with dockerproxy.DockerProxy(listen, args.socket, _proxy_profile(app, args), report) as proxy:
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, lambda *_: threading.Thread(target=proxy.shutdown).start())
        log.info("docker proxy listening", listen=args.listen, profile=args.profile, socket=args.socket)
        proxy.serve_forever()
    return ExitCode.OK


def _proxy_profile(app: App, args: argparse.Namespace) -> Profile:
    from . import dockerproxy, dockersandbox  # noqa: PLC0415

    if args.profile == "read-only":
        return dockerproxy.READ_ONLY
    policy = dockersandbox.policy_from(
        app.settings.sandbox_container,
        args.socket,
        image=args.image,
        volume=args.volume,
        volume_seen_at=args.volume_seen_at,
        bind_root=args.bind_root,
        max_memory_mb=args.max_memory_mb,
        max_pids=args.max_pids,
        max_cpus=args.max_cpus,
        allow_network=args.allow_network,
        user=args.user,
    )
    return dockersandbox.sandbox_profile(policy)


# Processes -----------------------------------------------------------------------------------
def cmd_sandbox(app: App, args: argparse.Namespace) -> int:
    from .sandbox.runner import SandboxRunner  # noqa: PLC0415 - only this command needs the Docker SDK

    logs.setup_for("SANDBOX", app.settings)
    runner = SandboxRunner(app.settings, app.store.redis)
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: runner.stopping.set())
    runner.start()
    runner.run()
    return ExitCode.OK


def cmd_worker(app: App, args: argparse.Namespace) -> int:
    from workers.worker import run_worker  # noqa: PLC0415 - the CLI's other commands do not need RQ workers

    require_pass(app.store.redis, app.settings)  # WAVE_AUTONOMOUS: only after a matching `wave preflight`
    domain = app.domains.get(args.domain)
    role = Role(args.role)
    logs.setup_for(logs.identity(domain.name, role.value, args.index), app.settings)
    run_worker(app.settings, domain, role, args.index, burst=args.burst)
    return ExitCode.OK


def cmd_preflight(app: App, args: argparse.Namespace) -> int:
    # as `wave worker` does: the probes attack through the workers' layers
    from workers.preflight import stage_gate, worker_probes  # noqa: PLC0415

    from .safety import preflight  # noqa: PLC0415

    logs.setup_for("PREFLIGHT", app.settings)
    redis = app.store.redis
    domain = next(iter(app.domains))
    gate = stage_gate(app.settings, redis, domain)  # the gate every stage gets: unwired, its probes fail
    probes = worker_probes(app.settings, redis, domain, gate)
    results = preflight.run_all(
        [*probes, *preflight.fleet_probes(app.settings, redis, preflight.capture_log, gate)]
    )
    if args.json:
        sys.stdout.write(preflight.report(results, as_json=True) + "\n")  # data as it is
    else:
        for line in preflight.report(results, as_json=False).splitlines():
            show(line)
    if not all(r.passed for r in results):
        return ExitCode.PREFLIGHT_FAILED
    record_pass(redis, app.settings, _operator())
    return ExitCode.OK


def cmd_notifier(app: App, args: argparse.Namespace) -> int:
    from .notifier import Notifier, sender_for  # noqa: PLC0415 - only this command needs slack_sdk

    sender = sender_for(app.settings.slack)  # not configured: one line, exit 3, before any Redis
    logs.setup_for("NOTIFIER", app.settings)
    notifier = Notifier(app.settings, app.store.redis, sender, args.consumer)
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: notifier.stopping.set())
    notifier.run()
    return ExitCode.OK


def cmd_supervisor(app: App, args: argparse.Namespace) -> int:
    from .supervisor import Supervisor  # noqa: PLC0415

    logs.setup_for("SUPERVISOR", app.settings)
    domains = app.domains
    supervisor = Supervisor(app.settings, app.store.redis, connect(app.settings, decode=False), domains)
    server = _health_server(app, supervisor)
    traces = _story_traces(app)
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: supervisor.stopping.set())
    try:
        supervisor.run(burst=args.burst)
    finally:
        if server is not None:
            server.close()
        if traces is not None:
            traces.close()
    return ExitCode.OK


def _story_traces(app: App) -> StoryTraces | None:
    """The stories' LangSmith root runs and the workers' runs (the trace outbox), sent by a thread of
    the supervisor, when `langsmith.api_key` is set."""
    from .trace_roots import StoryTraces  # noqa: PLC0415
    from .tracing import LangSmithTracer  # noqa: PLC0415

    if not app.settings.langsmith.enabled:
        return None
    traces = StoryTraces(app.settings, app.store.redis, LangSmithTracer(app.settings, app.store.redis))
    traces.start()
    return traces


def _health_server(app: App, supervisor: Supervisor) -> HealthServer | None:
    """The supervisor's /metrics, /healthz and /readyz, when `metrics.port` is set."""
    from .health import HealthServer  # noqa: PLC0415
    from .metrics import FleetCollector  # noqa: PLC0415

    if not app.settings.metrics.port:
        return None
    keys = app.settings.keys
    collector = FleetCollector(app.store.redis, keys, app.domains, supervisor.dispatcher)
    server = HealthServer(app.settings.metrics, app.store.redis, keys, collector)
    server.start()
    return server


def cmd_up(app: App, args: argparse.Namespace) -> int:
    from .fleet import run_up  # noqa: PLC0415

    return run_up(app.settings, app.domains, live=not args.no_view)


def cmd_demo(app: App, args: argparse.Namespace) -> int:
    from .fleet import run_demo  # noqa: PLC0415

    return run_demo(app.settings, app.domains, timeout_s=args.timeout, stories_file=Path(args.stories))


# Parser --------------------------------------------------------------------------------------
class _Parser(argparse.ArgumentParser):
    """argparse with its refusals on one line, as every other error of `wave` (the usage is one
    `--help` away); its subcommands' parsers are of this class too."""

    def error(self, message: str) -> NoReturn:
        self.exit(ExitCode.USAGE, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="wave", description="Run teams of AI development agents as a fleet.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    _add_story_commands(sub)
    _add_halt_commands(sub)
    _add_process_commands(sub)
    add_llm_commands(sub)
    add_monitor_commands(sub)
    add_safety_commands(sub)
    add_check_commands(sub)
    return parser


def _add_story_commands(sub: Any) -> None:
    p = sub.add_parser("enqueue", help="add stories (arguments or -f FILE); all or nothing")
    p.add_argument("id", nargs="?", help="story id, e.g. AUTH-001 (its prefix picks the domain)")
    p.add_argument("--title")
    p.add_argument("--description")
    p.add_argument("--criteria", "-c", action="append", help="an acceptance criterion (repeatable)")
    p.add_argument("--priority", choices=[p.value for p in Priority])
    p.add_argument("--label", "-l", action="append", help="a label (repeatable)")
    p.add_argument("-f", "--file", help="a YAML or JSON file of one story or a list of stories")
    p.set_defaults(handler=cmd_enqueue)

    p = sub.add_parser(
        "status", help="every active story and those that finished last, or one story in detail"
    )
    p.add_argument("id", nargs="?")
    p.add_argument("--json", action="store_true")
    p.add_argument(
        "--recent",
        type=whole(0, MAX_RECENT),
        default=20,
        metavar="N",
        help="how many of the stories that finished last to show (default 20)",
    )
    p.add_argument("--all", action="store_true", help="every story ever enqueued")
    p.set_defaults(handler=cmd_status)

    p = sub.add_parser("list", help="stories filtered by domain and state")
    p.add_argument("--domain")
    p.add_argument("--state")
    p.add_argument("--json", action="store_true")
    p.set_defaults(handler=cmd_list)

    p = sub.add_parser(
        "events", help="a story's history; --follow: the fleet's (or a story's) events as they come"
    )
    p.add_argument(
        "id", nargs="?", help="the story (with --follow: optional, default every event of the fleet)"
    )
    p.add_argument("--json", action="store_true", help="one JSON object per event")
    p.add_argument("--follow", "-f", action="store_true", help="keep printing new events until Ctrl-C")
    p.set_defaults(handler=cmd_events)

    for name, kind, verb, text in (
        ("cancel", EventKind.CANCEL, "cancelled", "stop working on a story"),
        ("retry", EventKind.RETRY, "retried", "start a failed, killed or cancelled story again"),
        (
            "approve",
            EventKind.APPROVE,
            "approved",
            "approve a held story: GO after a CTO HOLD (then delivered), else resume it; or an "
            "action of `wave review` (act-...): it runs once and its story resumes",
        ),
        (
            "reject",
            EventKind.REJECT,
            "rejected",
            "reject a held story (it is killed), or an action of `wave review` (refused; the story resumes)",
        ),
    ):
        p = sub.add_parser(name, help=text)
        p.add_argument("id")
        p.add_argument("--reason")
        p.set_defaults(handler=_transition(kind, verb))


def _add_halt_commands(sub: Any) -> None:
    p = sub.add_parser("stop", help="EMERGENCY STOP: halt the whole fleet now (nothing is lost)")
    p.add_argument("--reason", required=True)
    p.set_defaults(handler=cmd_stop)

    p = sub.add_parser("resume", help="lift an emergency stop: halted stories continue")
    p.set_defaults(handler=cmd_resume)

    p = sub.add_parser("watch", help="watch for the EMERGENCY-STOP file (halt on create, resume on delete)")
    p.set_defaults(handler=cmd_watch)


def _add_process_commands(sub: Any) -> None:
    p = sub.add_parser("worker", help="run one role worker of a domain")
    p.add_argument("--domain", required=True)
    p.add_argument("--role", required=True, choices=[r.value for r in Role])
    p.add_argument("--index", type=whole(1, MAX_WORKER_INDEX), default=1)
    p.add_argument("--burst", action="store_true", help="exit when the queue is empty")
    p.set_defaults(handler=cmd_worker)

    p = sub.add_parser(
        "preflight", help="the safety probes, as real attacks on this setup (README Safety: preflight)"
    )
    p.add_argument("--json", action="store_true", help="one JSON object: passed, and each probe")
    p.set_defaults(handler=cmd_preflight)

    p = sub.add_parser("sandbox", help="run agent commands in hardened containers (the one Docker client)")
    p.set_defaults(handler=cmd_sandbox)

    p = sub.add_parser("notifier", help="post the events stream to Slack (WAVE_SLACK__*; README Slack)")
    # Stable by default: a restarted notifier takes back the entries it had read and not acked.
    p.add_argument("--consumer", default="notifier", help="its name in the consumer group (one per process)")
    p.set_defaults(handler=cmd_notifier)

    p = sub.add_parser("supervisor", help="route stories and advance the pipeline")
    p.add_argument("--burst", action="store_true", help="exit when nothing is waiting or running")
    p.set_defaults(handler=cmd_supervisor)

    p = sub.add_parser(
        "docker-proxy", help="serve an allow-listed view of the Docker API (Dozzle, the sandbox)"
    )
    p.add_argument("--profile", choices=["read-only", "sandbox"], default="read-only")
    p.add_argument("--listen", default="127.0.0.1:2375", help="HOST:PORT (default 127.0.0.1:2375)")
    p.add_argument("--socket", default="/var/run/docker.sock", help="the Docker daemon's socket")
    # --profile sandbox: each defaults to the runner's WAVE_SANDBOX_CONTAINER__* setting
    p.add_argument("--image", help="the one image sandbox containers may run")
    p.add_argument("--volume", help="the data volume worktrees are bound from (compose)")
    p.add_argument("--volume-seen-at", help="where this process has that volume mounted (symlink checks)")
    p.add_argument("--bind-root", help="the host directory worktrees are bound from (no volume)")
    p.add_argument("--max-memory-mb", type=whole(16, 1_048_576))
    p.add_argument("--max-pids", type=whole(16, 1_000_000))
    p.add_argument("--max-cpus", type=amount(256))
    p.add_argument("--allow-network", action="store_true", help='allow NetworkMode "bridge" too')
    p.add_argument(
        "--user", help="UID:GID the one user containers and execs may run as (default: any non-root)"
    )
    p.set_defaults(handler=cmd_docker_proxy)

    p = sub.add_parser("up", help="the whole fleet on an embedded Redis, no Docker needed")
    p.add_argument("--no-view", action="store_true", help="log lines instead of the live view")
    p.set_defaults(handler=cmd_up)

    p = sub.add_parser("demo", help="sample stories through both sample domains, then a summary")
    p.add_argument("--timeout", type=amount(MAX_DEMO_TIMEOUT_S), default=600.0)
    p.add_argument("--stories", default="domains/demo-stories.yaml")
    p.set_defaults(handler=cmd_demo)


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        settings = load_settings()
        if args.command not in ("up", "demo"):
            settings = fleet_settings(settings)
        # Until a service sets its own logging up (`wave worker`, `supervisor`, ...), a command logs
        # warnings only, on stderr, redacted: never structlog's default (every line, on stdout, where
        # it would corrupt `--json` and JSON-lines output and skip the redactor).
        logs.setup_for("WAVE", settings, level="warning")
        code = int(args.handler(App(settings), args))
        sys.stdout.flush()  # a closed pipe shows here, inside the try, not at interpreter exit
        return code
    except WaveError as exc:
        for line in str(exc).splitlines():
            print(f"wave: error: {terminal_safe(line)}", file=sys.stderr)
        return int(exc.exit_code)
    except RedisError as exc:
        print(f"wave: error: {terminal_safe(str(RedisUnavailableError(exc)))}", file=sys.stderr)
        return int(ExitCode.UNAVAILABLE)
    except BrokenPipeError:
        return _reader_went_away()
    except OSError as exc:  # `wave status > file` on a full disk: say so in one line
        if exc.filename is not None or exc.errno not in OUTPUT_ERRORS:  # a bug: keep its traceback
            raise
        _drop_pending_output()
        print(f"wave: error: cannot write the output: {exc.strerror or exc}", file=sys.stderr)
        return int(ExitCode.OUTPUT_FAILED)
    except KeyboardInterrupt:
        return 130


def _reader_went_away() -> int:
    """`wave status | head`: the reader has all it wanted. End quietly, with the status a shell gives
    a tool killed by SIGPIPE; what is still buffered goes to /dev/null, or Python would report the
    broken pipe again when it flushes stdout at exit (the way Python's signal docs recommend)."""
    _drop_pending_output()
    return int(ExitCode.BROKEN_PIPE)


def _drop_pending_output() -> None:
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
    os.close(devnull)


if __name__ == "__main__":
    sys.exit(main())
