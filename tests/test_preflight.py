"""`wave preflight` as a real process against a real setup: a password- and AOF-protected redis-server,
a real `wave watch`, the bwrap sandbox; and each deliberately broken setup fails naming its probe.
Autonomous workers start only after a pass recorded for their own safety settings."""

from __future__ import annotations

import json
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from redis import Redis
from redis.exceptions import RedisError

from wavefleet.config import Settings
from wavefleet.embedded import free_port
from wavefleet.errors import ExitCode
from wavefleet.safety.autonomy import PASS_TTL_S, safety_digest
from wavefleet.safety.preflight import Probe, run_all
from wavefleet.testing import Processes, run_wave, wait_until

PROBES = [
    "jail",
    "default-branch",
    "loop",
    "sandbox-limits",
    "sandbox-network",
    "budget",
    "redaction",
    "exfiltration",
    "redis-aof",
    "redis-password",
    "halt-watcher",
    "block-threshold",
]


def with_(settings: Settings, **changes: Any) -> Settings:
    return Settings(**{**settings.model_dump(), **changes})


def watching(procs: Processes, redis: Redis, settings: Settings) -> None:
    proc = procs.watcher()
    wait_until(
        lambda: redis.exists(settings.keys.watcher_heartbeat()),
        timeout_s=15,
        message="the watcher's heartbeat",
        diagnose=lambda: f"watcher exit {proc.poll()}\n{procs.logs()}",
    )


def preflight(settings: Settings) -> tuple[int, dict[str, Any], subprocess.CompletedProcess[str]]:
    done = run_wave(settings, "preflight", "--json", timeout_s=90)
    try:
        report = json.loads(done.stdout)
    except ValueError:
        raise AssertionError(f"not JSON: exit {done.returncode}\n{done.stdout}\n{done.stderr}") from None
    return done.returncode, {p["name"]: p for p in report["probes"]}, done


def scratch_dirs(settings: Settings) -> set[Path]:
    """Scratch folders: under the data dir's repos (where the sandbox may bind them), or /tmp."""
    return {*Path("/tmp").glob("wave-preflight-*"), *(settings.data_dir / "repos").glob("wave-preflight-*")}


@pytest.fixture
def watched(procs: Processes, redis: Redis, settings: Settings) -> Iterator[None]:
    watching(procs, redis, settings)
    yield


def test_passes_on_a_correct_setup_and_records_the_pass(
    watched: None, redis: Redis, settings: Settings
) -> None:
    dirs_before = scratch_dirs(settings)
    keys_before = set(redis.keys("*"))
    counters = settings.keys.metric_counters()
    code, probes, done = preflight(settings)
    failed = {name: p["detail"] for name, p in probes.items() if not p["passed"]}
    assert code == ExitCode.OK and not failed, f"{failed}\n{done.stderr}"
    assert list(probes) == PROBES
    recorded = json.loads(redis.get(settings.keys.preflight_pass()) or "{}")
    assert recorded["digest"] == safety_digest(settings)
    assert 0 < redis.ttl(settings.keys.preflight_pass()) <= PASS_TTL_S
    # nothing left behind: no scratch folder, no key but the pass (the watcher's heartbeat was there)
    # and the counters, where the gate a stage gets counted the 8 pushes and uploads it blocked: the
    # gate probes went through it, not around it
    assert scratch_dirs(settings) == dirs_before
    assert set(redis.keys("*")) - keys_before == {settings.keys.preflight_pass(), counters}
    assert redis.hget(counters, "safety_block") == "8"
    table = run_wave(settings, "preflight")
    assert table.returncode == 0 and "preflight passed" in table.stdout, table.stdout + table.stderr
    assert "sandbox-network  PASS" in table.stdout
    # the bombs were stopped by the bwrap sandbox's cgroup limits, not by the time bound
    limits = probes["sandbox-limits"]["detail"]
    assert (
        "memory bomb stopped by the memory limit (" in limits
        and "fork bomb stopped by the pids limit (" in limits
    )


@pytest.mark.parametrize(
    ("broken", "changes", "expected"),
    [
        ("no sandbox", {"sandbox": "none"}, {"sandbox-limits", "sandbox-network", "jail"}),
        ("a low block threshold", {"safety": {"block_below": 0.5, "judge": False}}, {"block-threshold"}),
    ],
)
def test_a_broken_setting_fails_its_probe(
    watched: None, redis: Redis, settings: Settings, broken: str, changes: dict[str, Any], expected: set[str]
) -> None:
    code, probes, done = preflight(with_(settings, **changes))
    failed = {name for name, p in probes.items() if not p["passed"]}
    assert code == ExitCode.PREFLIGHT_FAILED, done.stderr
    assert failed == expected, {n: probes[n]["detail"] for n in failed}
    assert redis.get(settings.keys.preflight_pass()) is None
    if "sandbox" in changes:
        assert "WAVE_SANDBOX=none" in probes["sandbox-limits"]["detail"]


def test_aof_off_fails_the_aof_check(watched: None, redis: Redis, settings: Settings) -> None:
    redis.config_set("appendonly", "no")
    try:
        code, probes, _done = preflight(settings)
    finally:
        redis.config_set("appendonly", "yes")
    assert code == ExitCode.PREFLIGHT_FAILED
    assert [n for n, p in probes.items() if not p["passed"]] == ["redis-aof"]
    assert "AOF is off" in probes["redis-aof"]["detail"]


def test_no_watcher_fails_the_watcher_check(settings: Settings) -> None:
    code, probes, done = preflight(settings)
    assert code == ExitCode.PREFLIGHT_FAILED
    assert [n for n, p in probes.items() if not p["passed"]] == ["halt-watcher"], done.stdout
    table = run_wave(settings, "preflight")
    assert "halt-watcher" in table.stdout and "preflight FAILED: halt-watcher" in table.stdout


def test_a_redis_without_a_password_fails_the_password_check(tmp_path: Path, settings: Settings) -> None:
    port = free_port()  # a plain redis-server, as installed: no password (the fixture's always has one)
    argv = ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--dir", str(tmp_path)]
    server = subprocess.Popen([*argv, "--appendonly", "yes"], stdout=subprocess.DEVNULL)
    try:
        wait_until(lambda: _answers(port), timeout_s=15, message="the plain redis-server")
        open_settings = with_(settings, redis={"url": f"redis://127.0.0.1:{port}/0"})
        code, probes, done = preflight(open_settings)
    finally:
        server.kill()
        server.wait(timeout=10)
    assert code == ExitCode.PREFLIGHT_FAILED, done.stderr
    assert not probes["redis-password"]["passed"]
    assert "without a password" in probes["redis-password"]["detail"]


def _answers(port: int) -> bool:
    try:
        return bool(Redis(port=port, socket_connect_timeout=0.5).ping())
    except RedisError:
        return False


def worker(settings: Settings) -> subprocess.CompletedProcess[str]:
    return run_wave(settings, "worker", "--domain", "auth", "--role", "be", "--burst", timeout_s=60)


def test_an_autonomous_worker_starts_only_after_a_matching_pass(
    watched: None, redis: Redis, settings: Settings
) -> None:
    autonomous = with_(settings, autonomous=True)
    refused = worker(autonomous)
    assert refused.returncode == ExitCode.PREFLIGHT_FAILED, refused.stderr
    assert "autonomous mode needs a passing `wave preflight`" in refused.stderr
    assert len(refused.stderr.strip().splitlines()) == 1, refused.stderr  # one line, no traceback
    assert "preflight: missing" in run_wave(autonomous, "status").stdout

    code, _probes, done = preflight(autonomous)
    assert code == ExitCode.OK, done.stdout
    started = worker(autonomous)
    assert started.returncode == 0, started.stderr
    status = run_wave(autonomous, "status").stdout
    assert "autonomous mode on; preflight: passed at" in status, status

    changed = with_(autonomous, safety={"block_below": 0.8, "escalate_below": 0.9, "judge": False})
    again = worker(changed)
    assert again.returncode == ExitCode.PREFLIGHT_FAILED, again.stderr
    assert "other safety settings" in again.stderr
    assert "preflight: stale" in run_wave(changed, "status").stdout


def test_a_crashing_or_overrunning_probe_is_a_one_line_fail() -> None:
    def crash() -> str:
        raise RuntimeError("boom\nsecond line")

    release = threading.Event()  # the overrunning probe waits on it; set afterwards, so its thread ends
    results = run_all(
        [
            Probe("crash", "raises", crash),
            Probe("hang", "overruns", lambda: str(release.wait(30)), timeout_s=0.2),
            Probe("fine", "passes", lambda: "ok"),
        ]
    )
    release.set()
    assert [(r.name, r.passed) for r in results] == [("crash", False), ("hang", False), ("fine", True)]
    assert results[0].detail == "the probe crashed: RuntimeError: boom second line"
    assert results[1].detail == "no answer within 0.2 s" and results[1].seconds < 5
