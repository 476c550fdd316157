"""The `loop` settings: read from WAVE_LOOP__*, bounded, and turned into the tool loop's limits."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from wavefleet.config import load_settings
from wavefleet.errors import ConfigError
from workers.agent.context import LoopLimits
from workers.agent.loop import limits_from


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for name in list(os.environ):
        if name.upper().startswith("WAVE_"):
            monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)


def test_the_defaults_are_the_loops_defaults_and_each_variable_reaches_its_limit(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    assert limits_from(load_settings().loop) == LoopLimits()
    values = {
        "MAX_ITERATIONS": "7",
        "WALL_CLOCK_S": "90",
        "REPEATS_TO_STOP": "4",
        "RUN_TIMEOUT_S": "30",
        "RUN_OUTPUT_BYTES": "8000",
        "READ_WINDOW_BYTES": "16000",
    }
    for name, value in values.items():
        monkeypatch.setenv(f"WAVE_LOOP__{name}", value)
    assert limits_from(load_settings().loop) == LoopLimits(7, 90.0, 4, 30.0, 8000, 16000)


@pytest.mark.parametrize(
    ("name", "value"),
    [("MAX_ITERATIONS", "0"), ("REPEATS_TO_STOP", "1"), ("WALL_CLOCK_S", "inf"), ("READ_WINDOW_BYTES", "10")],
)
def test_a_value_out_of_bounds_is_refused_naming_the_variable(
    monkeypatch: pytest.MonkeyPatch, name: str, value: str
) -> None:
    monkeypatch.setenv(f"WAVE_LOOP__{name}", value)
    with pytest.raises(ConfigError, match=f"WAVE_LOOP__{name}"):
        load_settings()
