"""The LLM layer's Redis names are pinned: renaming one breaks running fleets."""

from __future__ import annotations

import pytest

from wavefleet.keys import Keys

LAYOUT = [
    ("llm_cache", ("ab12",), "wave:llm:cache:ab12"),
    ("llm_cache_pattern", (), "wave:llm:cache:*"),
    ("llm_cache_stats", (), "wave:llm:stats:cache"),
    ("llm_breaker", ("anthropic",), "wave:llm:breaker:anthropic"),
    ("llm_probe", ("anthropic",), "wave:llm:breaker:anthropic:probe"),
    ("ratelimit", ("xai",), "wave:ratelimit:xai"),
    ("budget", ("story:AUTH-001",), "wave:budget:story:AUTH-001"),
    ("budget_pattern", (), "wave:budget:*"),
    ("budget_reservations", (), "wave:budgetres"),
    ("budget_reservation", ("r1",), "wave:budgetres:r1"),
    ("story_llm_calls", ("AUTH-001",), "wave:story:AUTH-001:llm"),
]


@pytest.mark.parametrize(("method", "args", "name"), LAYOUT, ids=[row[0] for row in LAYOUT])
def test_each_llm_key_has_its_pinned_name(method: str, args: tuple[str, ...], name: str) -> None:
    assert getattr(Keys(), method)(*args) == name


def test_the_cache_pattern_matches_entries_but_not_the_counters() -> None:
    # Given the keys
    keys = Keys()

    # When the SCAN pattern of `wave cache clear` is compared with the counters' name
    pattern = keys.llm_cache_pattern().rstrip("*")

    # Then clearing the cache can never delete the counters, nor a budget's reservations its scopes
    assert keys.llm_cache("x").startswith(pattern) and not keys.llm_cache_stats().startswith(pattern)
    assert not keys.budget_reservations().startswith(keys.budget_pattern().rstrip("*"))
