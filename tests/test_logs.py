"""Logging: the identity prefix and JSON fields, and a fork while another thread writes."""

from __future__ import annotations

import io
import json
import logging
import os
import re
import threading
import time

import pytest
import structlog

from wavefleet import logs, redact
from wavefleet.config import Settings


def test_json_lines_carry_level_event_timestamp_worker_and_story(capsys) -> None:  # type: ignore[no-untyped-def]
    logs.setup("AUTH-FE-2", fmt="json")

    logs.get(story="AUTH-001").info("stage started")

    line = json.loads(capsys.readouterr().err.strip().splitlines()[-1])
    assert {k: line[k] for k in ("level", "event", "worker", "story")} == {
        "level": "info",
        "event": "stage started",
        "worker": "AUTH-FE-2",
        "story": "AUTH-001",
    }
    assert line["timestamp"].endswith("Z")


def test_console_lines_start_with_the_process_identity(capsys) -> None:  # type: ignore[no-untyped-def]
    logs.setup("SUPERVISOR", fmt="console")

    logs.get().info("story moved")

    assert "[SUPERVISOR] story moved" in capsys.readouterr().err


def test_a_child_forked_while_another_thread_holds_the_log_lock_can_still_log() -> None:
    sink = io.StringIO()
    structlog.reset_defaults()  # an earlier test's `setup` routes lines through the standard library
    structlog.configure(logger_factory=structlog.PrintLoggerFactory(file=sink))
    structlog.get_logger().info("warm up")  # creates the file's write lock
    lock = structlog._output.WRITE_LOCKS[sink]
    held, release = threading.Event(), threading.Event()

    def writer_mid_line() -> None:
        with lock:
            held.set()
            release.wait(10)

    thread = threading.Thread(target=writer_mid_line)
    thread.start()
    held.wait(5)
    pid = os.fork()
    if pid == 0:  # the child: without fresh locks this call never returns
        structlog.get_logger().info("child logs")
        os._exit(0)
    release.set()
    thread.join()
    deadline = time.monotonic() + 10
    while (done := os.waitpid(pid, os.WNOHANG))[0] == 0 and time.monotonic() < deadline:
        time.sleep(0.01)
    if done[0] == 0:
        os.kill(pid, 9)
        os.waitpid(pid, 0)
    structlog.reset_defaults()
    assert done[0] == pid and os.waitstatus_to_exitcode(done[1]) == 0, "the child hung on the log lock"


def test_structlog_private_write_locks_still_exist() -> None:
    # logs.py clears this private dict in every forked horse; pyproject pins structlog's minor
    # version for it, and this says what to check when that pin is raised.
    assert hasattr(getattr(structlog._output, "WRITE_LOCKS", None), "clear"), (
        f"structlog {structlog.__version__} no longer has _output.WRITE_LOCKS: redo logs._fresh_write_locks"
    )


def test_a_standard_library_line_goes_through_the_same_processors_once_at_the_configured_level(
    capsys: pytest.CaptureFixture[str],
) -> None:
    logs.setup("AUTH-QA-1", fmt="console", level="info", secrets=["hunter2-long-secret"])
    try:
        with logs.job_context("AUTH-007", "qa", 2):
            logging.getLogger("rq.worker").info("Job OK (%s)", "hunter2-long-secret")
            logging.getLogger("httpx").debug("below the configured level")
        logging.getLogger("rq.worker").warning("between jobs")
    finally:
        structlog.reset_defaults()
    err = re.sub(r"\x1b\[[0-9;]*m", "", capsys.readouterr().err).splitlines()  # the renderer's colours
    assert len(err) == 2, err  # once each (no second handler), the debug line filtered
    assert "[AUTH-QA-1] Job OK ([redacted])" in err[0] and "story=AUTH-007" in err[0] and "round=2" in err[0]
    assert "[rq.worker]" in err[0] and "hunter2" not in err[0]
    assert "between jobs" in err[1] and "AUTH-007" not in err[1]


def test_the_redactor_knows_every_secret_in_the_settings_but_not_short_ones() -> None:
    settings = Settings(
        redis={"url": "redis://fleet:url-password-42@db:6379/0", "password": "redis-password-1"},
        anthropic={"api_key": "sk-ant-0123456789"},
        xai={"api_key": "short"},  # under 8 characters: not a secret worth blanking every "short"
    )

    found = redact.secret_values(settings)

    assert set(found) >= {"url-password-42", "redis-password-1", "sk-ant-0123456789"}
    assert "short" not in found
    redactor = redact.Redactor(found)
    line = redactor(
        None,
        "info",
        {"event": "short: redis-password-1", "args": ("x", {"k": ValueError("sk-ant-0123456789")})},
    )
    assert line == {"event": "short: [redacted]", "args": ["x", {"k": "[redacted]"}]}
