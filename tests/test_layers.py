"""The packages' import arrows point down: what the budget and the store need lives below the LLM
layer, so `wavefleet.llm` may use them without a cycle."""

from __future__ import annotations

import subprocess
import sys

import pytest


@pytest.mark.parametrize(
    "module", ["wavefleet.budget", "wavefleet.store", "wavefleet.messages", "wavefleet.batch"]
)
def test_the_module_loads_without_the_llm_package(module: str) -> None:
    code = f"import sys, {module}; print(sorted(m for m in sys.modules if m.startswith('wavefleet.llm')))"
    loaded = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert loaded.stdout.strip() == "[]", loaded.stdout
