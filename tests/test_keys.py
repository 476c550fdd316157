"""The Redis key layout is pinned here: renaming a key breaks running fleets, so it must fail a test."""

from __future__ import annotations

import inspect

import pytest

from wavefleet.keys import DEFAULT_PREFIX, Keys

# (method, arguments, name under prefix "wave", name under prefix "acme-2")
LAYOUT = [
    ("story", ("AUTH-001",), "wave:story:AUTH-001", "acme-2:story:AUTH-001"),
    ("story_results", ("AUTH-001",), "wave:story:AUTH-001:results", "acme-2:story:AUTH-001:results"),
    ("story_events", ("AUTH-001",), "wave:story:AUTH-001:events", "acme-2:story:AUTH-001:events"),
    ("finished", (), "wave:finished", "acme-2:finished"),
    ("once", ("t1",), "wave:once:t1", "acme-2:once:t1"),
    ("active", (), "wave:active", "acme-2:active"),
    ("stories", (), "wave:stories", "acme-2:stories"),
    ("domain_stories", ("auth",), "wave:stories:auth", "acme-2:stories:auth"),
    ("events", (), "wave:events", "acme-2:events"),
    ("events_group", ("notifier",), "wave:events:notifier", "acme-2:events:notifier"),
    ("intake", (), "wave:intake", "acme-2:intake"),
    ("notifier_thread", ("AUTH-001",), "wave:notifier:thread:AUTH-001", "acme-2:notifier:thread:AUTH-001"),
    ("notifier_dead", (), "wave:notifier:dead", "acme-2:notifier:dead"),
    ("notifier_dead_total", (), "wave:notifier:deadtotal", "acme-2:notifier:deadtotal"),
    ("notifier_state", (), "wave:notifier:state", "acme-2:notifier:state"),
    ("metric_counters", (), "wave:metrics:counters", "acme-2:metrics:counters"),
    ("trace_outbox", (), "wave:trace:outbox", "acme-2:trace:outbox"),
    ("metric_stage_durations", ("auth", "fe"), "wave:metrics:stage:auth:fe", "acme-2:metrics:stage:auth:fe"),
    ("metric_llm", (), "wave:metrics:llm", "acme-2:metrics:llm"),
    ("safety_review", (), "wave:safety:review", "acme-2:safety:review"),
    ("safety_verdict", ("S-1", "ab"), "wave:safety:verdict:S-1:ab", "acme-2:safety:verdict:S-1:ab"),
    ("intake_dead", (), "wave:intake:dead", "acme-2:intake:dead"),
    ("supervisor_group", (), "wave:supervisor", "acme-2:supervisor"),
    ("supervisor_lock", (), "wave:supervisor:lock", "acme-2:supervisor:lock"),
    ("queue", ("auth", "fe"), "wave:auth:fe", "acme-2:auth:fe"),
    ("running", (), "wave:running", "acme-2:running"),
    ("stage_retries", (), "wave:retries", "acme-2:retries"),
    ("worker_heartbeat", ("auth-fe-1",), "wave:worker:auth-fe-1:hb", "acme-2:worker:auth-fe-1:hb"),
    ("worker_log", ("auth-fe-1",), "wave:worker:auth-fe-1:jobs", "acme-2:worker:auth-fe-1:jobs"),
    ("workers", (), "wave:workers", "acme-2:workers"),
    ("worker_sandboxes", (), "wave:sandboxes", "acme-2:sandboxes"),
    ("sandbox_requests", (), "wave:sandbox:requests", "acme-2:sandbox:requests"),
    ("sandbox_reply", ("ab12",), "wave:sandbox:reply:ab12", "acme-2:sandbox:reply:ab12"),
    ("sandbox_runner", (), "wave:sandbox:runner", "acme-2:sandbox:runner"),
    ("fleet_id", (), "wave:fleet:id", "acme-2:fleet:id"),
    ("watcher_heartbeat", (), "wave:watcher:hb", "acme-2:watcher:hb"),
    ("preflight_pass", (), "wave:preflight:pass", "acme-2:preflight:pass"),
    ("halt", (), "wave:halt", "acme-2:halt"),
    ("halt_channel", (), "wave:halt", "acme-2:halt"),
    ("halt_acks", (), "wave:halt:acks", "acme-2:halt:acks"),
    ("halted_jobs", (), "wave:halt:jobs", "acme-2:halt:jobs"),
    ("monitor_findings", (), "wave:monitor:findings", "acme-2:monitor:findings"),
    ("monitor_seen", (), "wave:monitor:seen", "acme-2:monitor:seen"),
    ("cancel_channel", (), "wave:cancel", "acme-2:cancel"),
    ("llm_cache", ("ab12",), "wave:llm:cache:ab12", "acme-2:llm:cache:ab12"),
    ("llm_cache_pattern", (), "wave:llm:cache:*", "acme-2:llm:cache:*"),
    ("llm_cache_stats", (), "wave:llm:stats:cache", "acme-2:llm:stats:cache"),
    ("llm_breaker", ("anthropic",), "wave:llm:breaker:anthropic", "acme-2:llm:breaker:anthropic"),
    ("llm_probe", ("xai",), "wave:llm:breaker:xai:probe", "acme-2:llm:breaker:xai:probe"),
    ("ratelimit", ("xai",), "wave:ratelimit:xai", "acme-2:ratelimit:xai"),
    ("budget", ("story:AUTH-001",), "wave:budget:story:AUTH-001", "acme-2:budget:story:AUTH-001"),
    ("budget_pattern", (), "wave:budget:*", "acme-2:budget:*"),
    ("budget_reservations", (), "wave:budgetres", "acme-2:budgetres"),
    ("budget_reservation", ("r1",), "wave:budgetres:r1", "acme-2:budgetres:r1"),
    ("story_llm_calls", ("AUTH-001",), "wave:story:AUTH-001:llm", "acme-2:story:AUTH-001:llm"),
]


@pytest.mark.parametrize(
    ("method", "args", "default_name", "custom_name"), LAYOUT, ids=[row[0] for row in LAYOUT]
)
def test_every_key_has_its_pinned_name_under_the_default_and_a_custom_prefix(
    method: str, args: tuple[str, ...], default_name: str, custom_name: str
) -> None:
    # Given the default keys and keys under a custom prefix
    default, custom = Keys(), Keys("acme-2")

    # When the key is built
    built_default = getattr(default, method)(*args)
    built_custom = getattr(custom, method)(*args)

    # Then both names are exactly the pinned ones
    assert built_default == default_name
    assert built_custom == custom_name


def test_the_layout_table_covers_every_public_key_method() -> None:
    # Given every public method of Keys
    public = {name for name, _ in inspect.getmembers(Keys, inspect.isfunction) if not name.startswith("_")}

    # When compared with the pinned table
    pinned = {row[0] for row in LAYOUT}

    # Then a new key method cannot be added without pinning its name here
    assert public == pinned


def test_the_default_prefix_is_wave() -> None:
    # Given / When keys built without a prefix
    keys = Keys()

    # Then they use "wave", the prefix existing fleets store their data under
    assert DEFAULT_PREFIX == "wave"
    assert keys.prefix == "wave"


def test_two_stories_never_share_a_key_even_when_one_id_extends_the_other() -> None:
    # Given two ids where one is a prefix of the other
    keys = Keys()

    # When each story's keys are built
    per_story = (keys.story, keys.story_results, keys.story_events, keys.story_llm_calls)
    first = {key("AUTH-001") for key in per_story}
    second = {key("AUTH-0010") for key in per_story}

    # Then no key is shared and each story owns four distinct keys
    assert len(first) == len(second) == 4
    assert not first & second


def test_halt_flag_and_halt_channel_share_a_name_but_live_in_different_redis_namespaces() -> None:
    # Given the keys (pub/sub channel names do not collide with key names in Redis)
    keys = Keys("wave")

    # When the halt bookkeeping names are built
    names = [keys.halt(), keys.halt_acks(), keys.halted_jobs()]

    # Then the flag, the acks hash and the halted-jobs hash are distinct keys
    assert len(set(names)) == 3
    assert keys.halt_channel() == keys.halt()
