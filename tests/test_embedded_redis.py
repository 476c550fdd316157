"""The embedded Redis as an attacker and a careless user meet it: its files, its password, its lifetime."""

from __future__ import annotations

import json
import os
import signal
import socket
import stat
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from test_fleet import user_env, wave

from wavefleet.embedded import EmbeddedRedis, free_port, port_is_free
from wavefleet.errors import ExitCode
from wavefleet.testing import wait_until

pytestmark = pytest.mark.slow
UP = [sys.executable, "-m", "wavefleet.cli", "up", "--no-view"]


@contextmanager
def wave_up(env: dict[str, str]) -> Iterator[subprocess.Popen[bytes]]:
    """`wave up --no-view` in its own process group (as a terminal runs it); killed at the end."""
    up = subprocess.Popen(
        UP, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True
    )
    try:
        yield up
    finally:
        if up.poll() is None:
            up.send_signal(signal.SIGTERM)
            up.wait(timeout=60)
        assert up.stderr is not None
        up.stderr.close()


def endpoint(data_dir: Path) -> dict[str, object]:
    path = data_dir / "redis" / "endpoint.json"
    wait_until(path.exists, timeout_s=30, message="the embedded Redis up")
    return dict(json.loads(path.read_text()))


def children_of(pid: int) -> set[int]:
    """Live processes whose parent is `pid`, from /proc."""
    found = set()
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                rest = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(rest[1]) == pid and rest[0] != "Z":
                found.add(int(entry.name))
    return found


def command_line(pid: int) -> str:
    """What a process runs, for a failure's message ("" once it is gone)."""
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")[:200]
    except OSError:
        return ""


def alive(pid: int) -> bool:
    try:
        return (Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]) != "Z"
    except OSError:
        return False


def test_passwords_aof_and_logs_are_readable_by_their_owner_only(tmp_path: Path) -> None:
    old = os.umask(0)  # the loosest umask a user may have: nothing may depend on it
    try:
        server = EmbeddedRedis(tmp_path / "redis", free_port())
        server.start()
    finally:
        os.umask(old)
    try:
        server.client().set("wave:x", "1")
        wait_until(lambda: list((tmp_path / "redis").rglob("*.aof")), message="an AOF written")
        assert stat.S_IMODE((tmp_path / "redis").stat().st_mode) == 0o700
        loose = {
            str(p.relative_to(tmp_path)): oct(stat.S_IMODE(p.stat().st_mode))
            for p in (tmp_path / "redis").rglob("*")
            if stat.S_IMODE(p.stat().st_mode) & 0o077
        }
        assert loose == {}
        secret = server.password
        leaked = [
            p.name
            for p in (tmp_path / "redis").rglob("*")
            if p.is_file() and secret in p.read_text("latin-1")
        ]
        assert leaked == [f for f in leaked if f == "passwords.json"]  # only the 0600 passwords file holds it
    finally:
        server.stop()


def test_a_line_break_in_the_password_variable_is_refused_in_one_line_and_nothing_starts(
    tmp_path: Path, domains_dir: Path
) -> None:
    port = free_port()
    env = user_env(
        tmp_path,
        domains_dir,
        WAVE_EMBEDDED_REDIS__PORT=str(port),
        WAVE_EMBEDDED_REDIS__PASSWORD="long-enough-password\nbind 0.0.0.0\nprotected-mode no",
    )
    result = subprocess.run(UP, env=env, capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == ExitCode.CONFIG
    assert result.stderr.strip().count("\n") == 0
    assert "WAVE_EMBEDDED_REDIS__PASSWORD" in result.stderr
    assert "Traceback" not in result.stderr
    assert port_is_free(port)
    assert not (tmp_path / "redis" / "redis.conf").exists()


def test_a_password_given_by_the_environment_works_for_every_later_command(
    tmp_path: Path, domains_dir: Path
) -> None:
    env = user_env(
        tmp_path,
        domains_dir,
        WAVE_EMBEDDED_REDIS__PORT=str(free_port()),
        WAVE_EMBEDDED_REDIS__PASSWORD="given-by-the-operator-0123",
    )
    with wave_up(env):
        endpoint(tmp_path)
        enqueued = wave(env, "enqueue", "AUTH-700", "--title", "given password")
        assert enqueued.returncode == 0, enqueued.stderr
        status = wave(env, "status", "AUTH-700")
        assert status.returncode == 0, status.stderr


@pytest.mark.parametrize("sig", [signal.SIGHUP, signal.SIGTERM])
def test_hangup_or_terminate_of_wave_up_stops_its_redis_and_every_worker(
    tmp_path: Path, domains_dir: Path, sig: signal.Signals
) -> None:
    port = free_port()
    env = user_env(tmp_path, domains_dir, WAVE_EMBEDDED_REDIS__PORT=str(port))
    with wave_up(env) as up:
        redis_pid = int(str(endpoint(tmp_path)["pid"]))
        children = wait_until(lambda: children_of(up.pid) - {redis_pid}, message="the fleet's processes")
        if sig == signal.SIGHUP:
            os.killpg(up.pid, sig)  # a closed terminal hangs up its whole foreground process group
        else:
            up.send_signal(sig)
        up.wait(timeout=60)
        left = lambda: {p for p in {redis_pid, *children} if alive(p)}  # noqa: E731
        wait_until(
            lambda: not left(), timeout_s=30, message="every process gone", diagnose=lambda: str(left())
        )
        assert port_is_free(port)
        assert wave(env, "status").returncode == ExitCode.UNAVAILABLE  # nothing answers any more


def test_after_wave_up_is_killed_the_next_wave_up_starts(tmp_path: Path, domains_dir: Path) -> None:
    env = user_env(tmp_path, domains_dir, WAVE_EMBEDDED_REDIS__PORT=str(free_port()))
    with wave_up(env) as first:
        old_redis = int(str(endpoint(tmp_path)["pid"]))
        workers = wait_until(lambda: children_of(first.pid) - {old_redis}, message="the fleet's processes")
        first.send_signal(signal.SIGKILL)
        first.wait(timeout=10)
    # Its workers and Redis die with it (a SIGTERM each: they finish cleanly), so no fleet runs headless.
    orphans = lambda: {p: command_line(p) for p in {old_redis, *workers} if alive(p)}  # noqa: E731
    wait_until(lambda: not orphans(), timeout_s=30, message="orphans gone", diagnose=lambda: str(orphans()))
    with wave_up(env) as second:
        wait_until(lambda: int(str(endpoint(tmp_path)["pid"])) != old_redis, message="a new Redis")
        assert second.poll() is None
        assert wave(env, "status").returncode == 0


def test_a_redis_left_running_from_the_same_data_dir_is_stopped_and_replaced(
    tmp_path: Path, domains_dir: Path
) -> None:
    port = free_port()
    # As an older `wave up` killed by SIGKILL leaves it: running, its own session, no parent to follow.
    leftover = EmbeddedRedis(tmp_path / "redis", port)
    leftover.start()
    assert leftover.process is not None
    try:
        leftover.client().set("wave:kept", "1")
        env = user_env(tmp_path, domains_dir, WAVE_EMBEDDED_REDIS__PORT=str(port))
        with wave_up(env) as up:
            wait_until(
                lambda: int(str(endpoint(tmp_path)["pid"])) != leftover.process.pid, message="a new Redis"
            )
            assert leftover.process.wait(timeout=30) == 0  # SIGTERM: a clean shutdown, AOF flushed
            assert up.poll() is None
            assert wave(env, "status").returncode == 0
    finally:
        leftover.kill()


def test_a_foreign_process_on_the_port_is_refused_in_one_line(tmp_path: Path, domains_dir: Path) -> None:
    with socket.socket() as foreign:
        foreign.bind(("127.0.0.1", 0))
        foreign.listen()
        port = foreign.getsockname()[1]
        env = user_env(tmp_path, domains_dir, WAVE_EMBEDDED_REDIS__PORT=str(port))
        result = subprocess.run(UP, env=env, capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == ExitCode.CONFIG
    assert result.stderr.strip().count("\n") == 0, result.stderr
    assert f"port {port} is already in use" in result.stderr
