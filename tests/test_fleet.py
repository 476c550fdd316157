"""The embedded fleet as a user runs it: `wave demo`, and `wave up` stopped with Ctrl-C and started again."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from wavefleet.embedded import free_port
from wavefleet.testing import wait_until

pytestmark = pytest.mark.slow


def user_env(data_dir: Path, domains_dir: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("WAVE_")}
    return {**env, "WAVE_DATA_DIR": str(data_dir), "WAVE_DOMAINS_DIR": str(domains_dir), **extra}


def wave(env: dict[str, str], *argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "wavefleet.cli", *argv],
        env=env,
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )


def test_wave_demo_takes_both_domains_sample_stories_to_their_end_states(
    tmp_path: Path, domains_dir: Path
) -> None:
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "wavefleet.cli",
            "demo",
            "--timeout",
            "240",
            "--stories",
            str(domains_dir / "demo-stories.yaml"),
        ],
        env=user_env(tmp_path, domains_dir, COLUMNS="200"),
        capture_output=True,
        text=True,
        check=False,
        timeout=300,
    )

    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    summary = result.stdout[result.stdout.index("demo summary") :]
    rows = {
        line.split("│")[1].strip(): line.split("│")[3].strip()
        for line in summary.splitlines()
        if line.startswith("│") and "-" in line.split("│")[1]
    }
    assert rows == {
        "AUTH-001": "done",
        "AUTH-002": "done",
        "AUTH-003": "killed",
        "PAYMENTS-001": "done",
        "PAYMENTS-002": "done",
        "PAYMENTS-003": "held",
    }
    assert "offline" in result.stdout


def test_wave_up_stopped_with_ctrl_c_carries_on_where_it_left_off_when_started_again(
    tmp_path: Path, domains_dir: Path
) -> None:
    env = user_env(tmp_path, domains_dir, WAVE_EMBEDDED_REDIS__PORT=str(free_port()))
    up = subprocess.Popen(
        [sys.executable, "-m", "wavefleet.cli", "up", "--no-view"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_until((tmp_path / "redis" / "endpoint.json").exists, timeout_s=30, message="Redis up")
        ids = [f"AUTH-{n:03d}" for n in range(500, 506)]
        for story_id in ids:
            assert (
                wave(env, "enqueue", story_id, "--title", "carry on", "-l", "offline:slow=1").returncode == 0
            )
        wait_until(lambda: _states(env).count("done") >= 1, timeout_s=120, message="a first story done")

        up.send_signal(signal.SIGINT)
        assert up.wait(timeout=60) == 0
        assert wave(env, "status").returncode == 69  # the fleet and its Redis are down

        up = subprocess.Popen(
            [sys.executable, "-m", "wavefleet.cli", "up", "--no-view"],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        wait_until(
            lambda: _states(env) == ["done"] * len(ids),
            timeout_s=180,
            interval_s=0.5,
            message="every story done after the restart",
        )
    finally:
        up.send_signal(signal.SIGINT)
        up.wait(timeout=60)


def _states(env: dict[str, str]) -> list[str]:
    result = wave(env, "status", "--json")
    if result.returncode != 0:
        return []
    return [s["state"] for s in json.loads(result.stdout)]
