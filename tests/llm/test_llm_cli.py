"""`wave llm call`, `wave llm calls`, `wave llm status` and `wave budget`, end to end."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
from collections.abc import Callable, Iterator

import pytest
import structlog
from conftest import llm_env

from wavefleet.cli import main as wave
from wavefleet.config import Settings
from wavefleet.domains import Domains
from wavefleet.store import StoryStore
from wavefleet.stories import Story
from wavefleet.testing import env_of

pytestmark = pytest.mark.timeout(15)


@pytest.fixture
def use_env(monkeypatch: pytest.MonkeyPatch) -> Iterator[Callable[[Settings], None]]:
    """Run `wave` in this process with the WAVE_* variables of some settings; afterwards, undo the
    logging set-up a command made (it holds this test's captured stderr)."""

    def apply(settings: Settings) -> None:
        for name in [n for n in os.environ if n.startswith("WAVE_")]:
            monkeypatch.delenv(name)
        for name, value in llm_env(settings).items():
            if name.startswith("WAVE_"):
                monkeypatch.setenv(name, value)

    handlers = list(logging.getLogger().handlers)
    yield apply
    structlog.reset_defaults()
    logging.getLogger().handlers[:] = handlers


def test_without_keys_wave_llm_call_says_it_runs_offline_and_shows_tokens_cost_cache_and_budget(
    settings: Settings,
) -> None:
    # Given a fleet with no API key, as a fresh install has
    # When the real command runs
    argv = [sys.executable, "-m", "wavefleet.cli", "llm", "call", "--task", "planning", "plan the login page"]
    done = subprocess.run(argv, env=env_of(settings), capture_output=True, text=True, timeout=30, check=False)

    # Then it answers offline and says so, with tokens, cost, cache and budget lines
    assert done.returncode == 0, done.stderr
    out = done.stdout
    assert "OFFLINE" in out and "no API key set" in out
    for line in (
        "provider: OFFLINE offline-echo-1",
        "tokens:",
        "cost:     $0.000000",
        "cache:    miss",
        "budget:   the fleet on",
    ):
        assert line in out


def test_with_keys_wave_llm_call_goes_to_the_routed_provider_then_hits_the_cache(
    live: Settings,
    use_env: Callable[[Settings], None],
    capsys: pytest.CaptureFixture[str],
    store: StoryStore,
    domains: Domains,
) -> None:
    # Given keys pointing at the local servers, and a story to charge
    use_env(live)
    store.enqueue([Story(id="AUTH-001", title="login")], domains)

    # When the same planning call is made twice for the story, then its calls are listed
    argv = ["llm", "call", "--task", "planning", "--story", "AUTH-001", "plan the login page"]
    codes = [wave(argv), wave(argv), wave(["llm", "calls", "AUTH-001"])]

    # Then Claude answered once (cost charged to the story, domain and fleet), then the cache did
    out = capsys.readouterr().out
    assert codes == [0, 0, 0]
    assert "provider: anthropic claude-sonnet-4-6" in out and "live: anthropic, xai" in out
    assert "cache:    miss" in out and "cache:    HIT: no provider call, $0" in out
    assert "story AUTH-001: $" in out and "domain auth on" in out
    assert "2 calls (1 from the response cache)" in out
    assert store.get("AUTH-001").cost_usd > 0


def test_wave_budget_shows_each_scope_and_grant_raises_one(
    settings: Settings,
    use_env: Callable[[Settings], None],
    capsys: pytest.CaptureFixture[str],
    store: StoryStore,
    domains: Domains,
) -> None:
    # Given a story
    use_env(settings)
    store.enqueue([Story(id="AUTH-001", title="login")], domains)

    # When the budgets are shown, one is granted more, and they are shown again
    codes = [wave(["budget"]), wave(["budget", "grant", "story:AUTH-001", "--usd", "2.5"]), wave(["budget"])]

    # Then the fleet, both domains and the active story are listed, and the story's limit grew
    out = capsys.readouterr().out
    assert codes == [0, 0, 0]
    for label in ("global", "domain auth", "domain payments", "story AUTH-001"):
        assert label in out
    assert "$5.00" in out and "$7.50" in out


def test_wave_llm_status_shows_routes_and_breakers(
    settings: Settings, use_env: Callable[[Settings], None], capsys: pytest.CaptureFixture[str]
) -> None:
    use_env(settings)
    assert wave(["llm", "status"]) == 0
    out = capsys.readouterr().out
    assert "cto_review               -> xai" in out and "planning                 -> anthropic" in out
    assert "anthropic: breaker closed" in out


def test_a_grant_for_an_unknown_scope_is_one_clear_line(
    settings: Settings, use_env: Callable[[Settings], None], capsys: pytest.CaptureFixture[str]
) -> None:
    use_env(settings)
    assert wave(["budget", "grant", "team:auth", "--usd", "1"]) == 65
    assert capsys.readouterr().err.strip() == (
        "wave: error: unknown scope 'team:auth': use story:ID, domain:NAME or global"
    )
