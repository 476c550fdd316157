"""structlog set-up for every WAVE process: identity prefix, story id, console or JSON lines."""

from __future__ import annotations

import logging
import os
import sys
from typing import Any

import structlog

from .text import terminal_safe

LEVELS = {"debug": logging.DEBUG, "info": logging.INFO, "warning": logging.WARNING, "error": logging.ERROR}
# Fields every line of this process carries from the moment they are set (threads and forked work
# horses included): a worker running work unsandboxed says so in each line.
_process_fields: dict[str, str] = {}
STDLIB_FORMAT = "[{process}] %(name)s: %(message)s"
_stdlib_format = [STDLIB_FORMAT]  # this process's, set by `setup`


def identity(domain: str, role: str, index: int) -> str:
    """The log prefix of a role worker: ``AUTH-FE-2``."""
    return f"{domain}-{role}-{index}".upper()


def setup(process: str, *, fmt: str = "auto", level: str = "info") -> None:
    """Configure structlog for this process; `process` becomes the ``[PREFIX]`` of every line."""
    json_lines = fmt == "json" or (fmt == "auto" and not sys.stderr.isatty())
    renderer: Any = structlog.processors.JSONRenderer() if json_lines else structlog.dev.ConsoleRenderer()
    processors: list[Any] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        _bind_worker(process),
        structlog.processors.format_exc_info,
    ]
    if not json_lines:
        processors += [_terminal_safe_values, _prefix_event]
    structlog.configure(
        processors=[*processors, renderer],
        wrapper_class=structlog.make_filtering_bound_logger(LEVELS[level]),
        logger_factory=structlog.PrintLoggerFactory(file=sys.stderr),
        cache_logger_on_first_use=False,
    )
    _stdlib_format[0] = STDLIB_FORMAT.format(process=process)
    # RQ and redis-py log through the standard library; keep their warnings, in the same stream.
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr, format=_stdlib_format[0])


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
    shown = " ".join(f"{k}={v}" for k, v in _process_fields.items())
    for handler in logging.getLogger().handlers:
        handler.setFormatter(logging.Formatter(f"{_stdlib_format[0]} {shown}"))


def _prefix_event(_logger: Any, _name: str, event: dict[str, Any]) -> dict[str, Any]:
    event["event"] = f"[{event.pop('worker')}] {event['event']}"
    return event


def _fresh_write_locks() -> None:
    # structlog guards each output file with a lock. A worker forks its work horse while its listener
    # or heartbeat thread may be writing a line; the horse would inherit that lock held, forever, and
    # hang on its first log line. The child starts with new locks instead.
    structlog._output.WRITE_LOCKS.clear()


os.register_at_fork(after_in_child=_fresh_write_locks)


def get(**bound: Any) -> Any:
    return structlog.get_logger().bind(**bound)
