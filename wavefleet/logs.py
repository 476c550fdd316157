"""structlog set-up for every WAVE process: identity prefix, the job's story, console or JSON lines.

One pipeline for every line: structlog's own and the standard library's (rq, redis-py, httpx,
anthropic, grpc, urllib3, docker) meet in one root handler whose ProcessorFormatter runs the same
processors, so each line has the same shape, the running job's fields and the redactor's pass.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
from collections.abc import Iterable, Iterator
from typing import TYPE_CHECKING, Any

import structlog

from .redact import Redactor, redactor_for, secret_values, use_for_process
from .text import terminal_safe

if TYPE_CHECKING:
    from .config import Settings

LEVELS = {"debug": logging.DEBUG, "info": logging.INFO, "warning": logging.WARNING, "error": logging.ERROR}
# Fields every line of this process carries from the moment they are set (threads and forked work
# horses included): a worker running work unsandboxed says so in each line.
_process_fields: dict[str, str] = {}
# The job's fields, bound for the time a worker runs one job (contextvars: this thread and the work
# horse it forks, never another job's thread).
JOB_FIELDS = ("story", "stage", "round")


class _RootHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """The handler `setup` installs on the root logger (told apart from pytest's and others')."""


def identity(domain: str, role: str, index: int) -> str:
    """The log prefix of a role worker: ``AUTH-FE-2``."""
    return f"{domain}-{role}-{index}".upper()


def setup_for(process: str, settings: Settings, *, level: str | None = None) -> None:
    """`setup` with the format, level and secrets the settings give; their redactor becomes the
    process's (the events stream and stored results use it too)."""
    use_for_process(redactor_for(settings))
    setup(
        process,
        fmt=settings.log_format,
        level=level or settings.log_level,
        secrets=secret_values(settings),
    )


def setup(process: str, *, fmt: str = "auto", level: str = "info", secrets: Iterable[str] = ()) -> None:
    """Configure logging for this process; `process` becomes the ``[PREFIX]`` of every line and
    each value in `secrets` is shown as ``[redacted]`` wherever it appears."""
    json_lines = fmt == "json" or (fmt == "auto" and not sys.stderr.isatty())
    renderer: Any = structlog.processors.JSONRenderer() if json_lines else structlog.dev.ConsoleRenderer()
    shared: list[Any] = [
        structlog.contextvars.merge_contextvars,
        structlog.stdlib.add_logger_name,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        _bind_worker(process),
    ]
    # The redactor runs on the formatted exception too, so it comes after format_exc_info.
    final: list[Any] = [structlog.processors.format_exc_info, Redactor(secrets)]
    if not json_lines:
        final += [_terminal_safe_values, _prefix_event]
    formatter = structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=shared,
        processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, *final, renderer],
    )
    _install_root_handler(formatter, LEVELS[level])
    structlog.configure(
        processors=[*shared, structlog.stdlib.ProcessorFormatter.wrap_for_formatter],
        wrapper_class=structlog.make_filtering_bound_logger(LEVELS[level]),
        logger_factory=structlog.stdlib.LoggerFactory(ignore_frame_names=[__name__]),  # `get`'s caller
        cache_logger_on_first_use=False,
    )


def _install_root_handler(formatter: logging.Formatter, level: int) -> None:
    """One handler on the root logger, at the configured level: a second `setup` (or an earlier
    basicConfig) replaces, never doubles, it. rq adds its own handler only where none is found."""
    root = logging.getLogger()
    for old in list(root.handlers):
        if isinstance(old, _RootHandler) or type(old) is logging.StreamHandler:
            root.removeHandler(old)
    handler = _RootHandler(sys.stderr)
    handler.setFormatter(formatter)
    root.addHandler(handler)
    root.setLevel(level)


def _bind_worker(process: str) -> Any:
    def processor(_logger: Any, _name: str, event: dict[str, Any]) -> dict[str, Any]:
        event.setdefault("worker", process)
        event.update(_process_fields)
        return event

    return processor


def _terminal_safe_values(_logger: Any, _name: str, event: dict[str, Any]) -> dict[str, Any]:
    """Console lines reach a terminal and carry story text and reasons: no escape sequence may pass
    (JSON lines escape them already). A traceback keeps its lines."""
    return {
        k: terminal_safe(v, multiline=k == "exception") if isinstance(v, str) else v for k, v in event.items()
    }


def mark_process(**fields: str) -> None:
    """Add `fields` to every later line of this process, the standard library's lines included."""
    _process_fields.update(fields)


def _prefix_event(_logger: Any, _name: str, event: dict[str, Any]) -> dict[str, Any]:
    event["event"] = f"[{event.pop('worker')}] {event['event']}"
    return event


@contextlib.contextmanager
def job_context(story: str, stage: str, round_: int) -> Iterator[None]:
    """Every line logged in this thread (and a work horse it forks) carries the job's story, stage
    and round until the block ends; the fields of a previous job, had any survived, are cleared at
    the start and nothing of this one survives the end, whether the job succeeded, failed or raised."""
    structlog.contextvars.clear_contextvars()
    structlog.contextvars.bind_contextvars(story=story, stage=stage, round=round_)
    try:
        yield
    finally:
        structlog.contextvars.clear_contextvars()


def _fresh_write_locks() -> None:
    # structlog guards each output file with a lock. A worker forks its work horse while its listener
    # or heartbeat thread may be writing a line; the horse would inherit that lock held, forever, and
    # hang on its first log line. The child starts with new locks instead. (The standard library's
    # handler locks are renewed in the child by `logging` itself.)
    structlog._output.WRITE_LOCKS.clear()


os.register_at_fork(after_in_child=_fresh_write_locks)


def get(**bound: Any) -> Any:
    return structlog.get_logger().bind(**bound)
