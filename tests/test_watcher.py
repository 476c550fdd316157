"""The EMERGENCY-STOP watcher as a real `wave watch` process, against a real Redis."""

from __future__ import annotations

import os
import shutil
import socket
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from redis import Redis

from wavefleet.config import Settings
from wavefleet.halt import HaltState, read_halt
from wavefleet.testing import TEST_PASSWORD, Processes, run_wave, wait_until
from wavefleet.watcher import read_reason

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

    # The fleet halts on the file's presence, then takes its text as the reason.
    wait_until(
        lambda: (s := read_halt(redis, settings.keys)) and s.reason == "left from last night",
        timeout_s=10,
        message="the halt with the file's text as its reason",
        diagnose=procs.logs,
    )


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


# Hostile stop files ------------------------------------------------------------------------------
SECRET = "SECRET-MARKER-7f3a9c"  # in every hostile file's content or target; must never be shown


def _symlink_to_secret(path: Path) -> None:
    secret = path.parent.parent / "password.txt"
    secret.write_text(f"{SECRET}\n")
    path.symlink_to(secret)


def _symlink_to_environ(path: Path) -> None:
    path.symlink_to("/proc/self/environ")  # the watcher's own environment: the Redis password


def _fifo(path: Path) -> None:
    os.mkfifo(path)


def _socket(path: Path) -> None:
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(str(path))
    server.close()  # the socket file stays


HOSTILE: dict[str, tuple[Callable[[Path], object], str]] = {
    "symlink-to-a-secret": (_symlink_to_secret, "symbolic link"),
    "symlink-to-proc-environ": (_symlink_to_environ, "symbolic link"),
    "dangling-symlink": (lambda p: p.symlink_to(p.parent / "nowhere"), "symbolic link"),
    "fifo": (_fifo, "FIFO"),
    "socket": (_socket, "socket"),
    "directory": (lambda p: (p.mkdir(), (p / "reason").write_text(SECRET)), "directory"),
    "binary": (lambda p: p.write_bytes(b"\x00\xff\xfe" + SECRET.encode()), "not printable text"),
    "control-characters": (lambda p: p.write_text(f"\x1b]0;{SECRET}\x07stop"), "not printable text"),
    "too-long": (lambda p: p.write_text(SECRET + "x" * 5000), "longer than 4096 bytes"),
}


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    else:
        path.unlink()


@pytest.mark.parametrize("kind", list(HOSTILE))
def test_a_hostile_stop_file_halts_without_showing_its_content_and_removing_it_resumes(
    procs: Processes, redis: Redis, settings: Settings, kind: str
) -> None:
    make, named = HOSTILE[kind]
    watching(procs)

    make(settings.halt_file)

    state = wait_until(
        lambda: (s := read_halt(redis, settings.keys)) and named in s.reason and s,
        timeout_s=5,
        message=f"a halt whose reason names the {named}",
        diagnose=procs.logs,
    )
    assert state.by == f"file:{settings.halt_file.absolute()}"
    shown = {
        "wave status": run_wave(settings, "status").stdout,
        "wave status --json": run_wave(settings, "status", "--json").stdout,
        "the halt key": redis.get(settings.keys.halt()) or "",
        "the watcher's log": procs.logs(),
    }
    for secret in (SECRET, TEST_PASSWORD, "WAVE_REDIS"):
        assert not [where for where, text in shown.items() if secret in text], secret

    _remove(settings.halt_file)
    wait_until(lambda: not halted(redis, settings), timeout_s=5, message="the resume", diagnose=procs.logs)


def test_wave_resume_refuses_while_a_dangling_symlink_is_the_stop_file(
    redis: Redis, settings: Settings
) -> None:
    settings.halt_file.parent.mkdir(parents=True, exist_ok=True)
    settings.halt_file.symlink_to(settings.halt_file.parent / "nowhere")
    assert run_wave(settings, "stop", "--reason", "x").returncode == 0
    redis.set(settings.keys.halt(), HaltState("x", f"file:{settings.halt_file.absolute()}", 0).to_json())

    result = run_wave(settings, "resume")

    assert result.returncode == 75, result.stderr
    assert halted(redis, settings)


@pytest.mark.parametrize(
    ("content", "reason"),
    [
        (b"disk on fire\n", "disk on fire"),
        ("Wartung läuft\tbis 3 Uhr".encode(), "Wartung läuft\tbis 3 Uhr"),
        (b"", None),  # an empty file: the halt keeps its neutral reason
    ],
)
def test_a_short_printable_regular_file_is_the_reason(
    tmp_path: Path, content: bytes, reason: str | None
) -> None:
    path = tmp_path / "EMERGENCY-STOP"
    path.write_bytes(content)

    assert read_reason(path) == reason


def test_a_device_is_named_and_never_opened() -> None:
    assert "device" in str(read_reason(Path("/dev/zero")))
