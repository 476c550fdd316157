"""Logging: the identity prefix and JSON fields, and a fork while another thread writes."""

from __future__ import annotations

import io
import json
import os
import threading
import time

import structlog

from wavefleet import logs


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
