"""The EMERGENCY-STOP watcher as a real `wave watch` process, against a real Redis."""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path

import pytest
from redis import Redis

from wavefleet.config import Settings
from wavefleet.halt import read_halt
from wavefleet.testing import Processes, wait_until

pytestmark = pytest.mark.slow

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    """User plus system CPU a process has used so far, from /proc."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


def watching(procs: Processes) -> int:
    watcher = procs.watcher()
    wait_until(lambda: "watching for the emergency-stop file" in procs.logs(), message="the watcher to start")
    return watcher.pid


def halted(redis: Redis, settings: Settings) -> bool:
    return read_halt(redis, settings.keys) is not None


def test_a_file_that_exists_before_the_watcher_starts_halts_the_fleet(
    procs: Processes, redis: Redis, settings: Settings
) -> None:
    settings.halt_file.parent.mkdir(parents=True, exist_ok=True)
    settings.halt_file.write_text("left from last night")

    watching(procs)

    state = wait_until(lambda: read_halt(redis, settings.keys), timeout_s=10, message="the halt")
    assert state.reason == "left from last night"


def test_the_watcher_carries_on_when_the_halt_directory_is_removed_and_created_again(
    procs: Processes, redis: Redis, settings: Settings
) -> None:
    watching(procs)
    directory = settings.halt_file.parent
    shutil.rmtree(directory)
    time.sleep(0.2)  # let the watcher see the directory go before it comes back
    directory.mkdir(parents=True)

    settings.halt_file.touch()
    wait_until(lambda: halted(redis, settings), timeout_s=5, message="a halt from the new directory")
    settings.halt_file.unlink()
    wait_until(lambda: not halted(redis, settings), timeout_s=5, message="the resume")


def test_the_watcher_sits_idle_while_the_fleet_is_halted(
    procs: Processes, redis: Redis, settings: Settings
) -> None:
    # It reads the file on every event; if reading raised events of its own it would spin a core
    # for the whole halt, taking the CPU the workers need to stop.
    pid = watching(procs)
    settings.halt_file.write_text("stop")
    wait_until(lambda: halted(redis, settings), timeout_s=5, message="the halt")
    time.sleep(0.2)  # the reason's update, once
    before = cpu_seconds(pid)
    time.sleep(2.0)

    used = cpu_seconds(pid) - before

    assert used < 0.2, f"the watcher used {used:.2f} s of CPU in 2 s of halt"
