"""Hard budgets: one Lua reservation across scopes, settle, alerts at 50/80/100%, holds, races, sweeps."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
from conftest import start_helper
from hypothesis import HealthCheck, given
from hypothesis import settings as hsettings
from hypothesis import strategies as st
from redis import Redis

from wavefleet.budget import Budget, Scope
from wavefleet.config import BudgetSettings, Settings
from wavefleet.domains import Domains
from wavefleet.errors import BudgetExceededError, HoldStory
from wavefleet.llm.client import LLMClient
from wavefleet.llm.types import LLMRequest, Message, TaskKind
from wavefleet.money import NANO
from wavefleet.store import StoryStore
from wavefleet.stories import Story

pytestmark = pytest.mark.timeout(15)
USD = NANO  # nano-USD per USD


def budget_of(redis: Redis, settings: Settings, **overrides: float) -> Budget:
    return Budget(redis, settings.keys, BudgetSettings.model_validate(overrides))


def story_scope(limit_usd: float = 1.0, limit_tokens: int = 1_000_000) -> Scope:
    return Scope("story:AUTH-001", "story AUTH-001", int(limit_usd * USD), limit_tokens)


def test_a_reservation_that_fits_every_scope_holds_it_in_all_and_settle_moves_it_to_spent(
    redis: Redis, settings: Settings
) -> None:
    # Given a story scope and a global scope
    budget = budget_of(redis, settings)
    scopes = [story_scope(), Scope("global:day", "fleet", 10 * USD, 10**9)]

    # When 0.30 USD is reserved, then 0.25 USD is settled
    reservation = budget.reserve(scopes, int(0.30 * USD), 3000)
    held = [budget.use(s.name).reserved_nusd for s in scopes]
    budget.settle(reservation, int(0.25 * USD), 2500, story=None)

    # Then both scopes held the estimate, and now hold the real spend and nothing reserved
    assert held == [int(0.30 * USD)] * 2
    for scope in scopes:
        use = budget.use(scope.name)
        assert (use.spent_nusd, use.reserved_nusd, use.spent_tokens, use.reserved_tokens) == (
            int(0.25 * USD),
            0,
            2500,
            0,
        )


def test_a_reservation_refused_by_one_scope_touches_no_scope(redis: Redis, settings: Settings) -> None:
    # Given a roomy fleet scope and a story scope with 0.10 USD left
    budget = budget_of(redis, settings)
    roomy, tight = Scope("global:day", "fleet", 100 * USD, 10**9), story_scope(limit_usd=0.10)

    # When 0.20 USD is asked of both
    with pytest.raises(BudgetExceededError) as raised:
        budget.reserve([roomy, tight], int(0.20 * USD), 100)

    # Then it is refused naming the story scope, a HoldStory, and neither scope holds anything
    assert isinstance(raised.value, HoldStory)
    assert raised.value.scope == "story:AUTH-001" and "story AUTH-001" in str(raised.value)
    assert budget.use(roomy.name).reserved_nusd == 0 and budget.use(tight.name).reserved_nusd == 0


def test_token_limits_refuse_like_money_limits(redis: Redis, settings: Settings) -> None:
    # Given a scope of 1,000 tokens
    budget = budget_of(redis, settings)

    # When 1,001 tokens are asked, then the refusal speaks of tokens
    with pytest.raises(BudgetExceededError, match="tokens"):
        budget.reserve([story_scope(limit_tokens=1000)], 1, 1001)


def test_release_frees_a_reservation_once(redis: Redis, settings: Settings) -> None:
    # Given a reservation
    budget = budget_of(redis, settings)
    reservation = budget.reserve([story_scope()], 5 * USD // 10, 10)

    # When it is released twice (a retry of the release must not free twice)
    budget.release(reservation)
    budget.release(reservation)

    # Then nothing is held and nothing went negative
    assert budget.use("story:AUTH-001").reserved_nusd == 0


def test_a_dead_workers_reservation_is_swept_after_its_ttl(redis: Redis, settings: Settings) -> None:
    # Given a reservation with a 50 ms lifetime that is never settled
    budget = budget_of(redis, settings, reservation_ttl_s=0.05)
    budget.reserve([story_scope()], USD // 2, 10)

    # When its lifetime passes and a sweep runs
    time.sleep(0.1)
    swept = budget.sweep()

    # Then the reservation is gone and the budget is whole again
    assert swept == 1 and budget.use("story:AUTH-001").reserved_nusd == 0


def test_warning_and_critical_are_recorded_once_each_as_events(
    redis: Redis, settings: Settings, store: StoryStore, domains: Domains
) -> None:
    # Given a story and a 1 USD story scope
    store.enqueue([Story(id="AUTH-001", title="t")], domains)
    budget = budget_of(redis, settings)

    # When spend goes to 0.55, 0.60 then 0.85 USD
    for usd in (0.55, 0.05, 0.25):
        budget.alerts(
            r := budget.reserve([story_scope()], int(usd * USD), 1),
            budget.settle(r, int(usd * USD), 1, story="AUTH-001"),
            "AUTH-001",
        )

    # Then one warning and one critical were recorded, on the story and fleet-wide
    kinds = [e["event"] for e in store.events("AUTH-001") if e["event"].startswith("budget")]
    assert kinds == ["budget_warning", "budget_critical"]
    fleet = [f["event"] for _, f in redis.xrange(settings.keys.events()) if f["event"].startswith("budget")]
    assert fleet == kinds


def test_settle_adds_the_cost_to_the_story_hash(
    redis: Redis, settings: Settings, store: StoryStore, domains: Domains
) -> None:
    # Given a story
    store.enqueue([Story(id="AUTH-001", title="t")], domains)
    budget = budget_of(redis, settings)

    # When two calls are settled on it
    for usd in (0.25, 0.5):
        reservation = budget.reserve([story_scope()], int(usd * USD), 100)
        budget.settle(reservation, int(usd * USD), 100, story="AUTH-001")

    # Then `wave status` shows their total cost
    assert store.get("AUTH-001").cost_usd == pytest.approx(0.75)
    assert redis.hget(settings.keys.story("AUTH-001"), "llm_calls") == "2"


def test_a_grant_raises_the_limit_and_rearms_the_alerts(redis: Redis, settings: Settings) -> None:
    # Given a story scope spent to its limit
    budget = budget_of(redis, settings)
    budget.settle(budget.reserve([story_scope()], USD, 1), USD, 1, story=None)
    with pytest.raises(BudgetExceededError):
        budget.reserve([story_scope()], 1, 1)

    # When an operator grants 1 USD more
    budget.grant("story:AUTH-001", usd=1.0)

    # Then calls fit again, and the alert flags are cleared for the new limit
    budget.reserve([story_scope()], USD // 2, 1)
    assert not redis.hexists(settings.keys.budget("story:AUTH-001"), "alert_warning")


def test_fifty_concurrent_reservations_from_five_processes_admit_exactly_ten(
    settings: Settings, redis: Redis, tmp_path: Path
) -> None:
    # Given a limit of 1 USD and 50 reservations of 0.10 USD in 5 processes of 10 threads
    procs = [
        start_helper(
            "budget_proc.py", settings, "10", str(USD // 10), str(USD), log=tmp_path / f"race-{i}.log"
        )
        for i in range(5)
    ]
    for proc in procs:
        assert proc.stdout is not None and json.loads(proc.stdout.readline() or "{}").get("ready")

    # When all are released at once
    for proc in procs:
        assert proc.stdin is not None
        proc.stdin.write("go\n")
        proc.stdin.flush()
    results = [json.loads(proc.communicate(timeout=20)[0]) for proc in procs]

    # Then exactly 10 were admitted, 40 refused, and the scope holds exactly its limit
    assert sum(r["admitted"] for r in results) == 10
    assert sum(r["refused"] for r in results) == 40
    use = Budget(redis, settings.keys, settings.budgets).use("story:RACE-001")
    assert use.reserved_nusd + use.spent_nusd == USD


@hsettings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    costs=st.lists(st.tuples(st.integers(1, 400), st.integers(0, 100)), min_size=1, max_size=30),
    limit=st.integers(100, 2000),
)
def test_spend_never_passes_the_limit_whatever_the_costs(
    redis: Redis, settings: Settings, costs: list[tuple[int, int]], limit: int
) -> None:
    # Given a fresh scope of `limit` nano-USD, and calls whose real cost is at most their estimate
    budget = budget_of(redis, settings)
    scope = Scope(f"story:P-{time.monotonic_ns()}", "p", limit, 10**12)
    spent = 0

    # When each call reserves its estimate and settles a real cost of `percent`% of it
    for estimate, percent in costs:
        try:
            reservation = budget.reserve([scope], estimate, 1)
        except BudgetExceededError:
            # Then a refusal happens only when the estimate did not fit what was left
            assert spent + estimate > limit
            continue
        actual = estimate * percent // 100
        budget.settle(reservation, actual, 1, story=None)
        spent += actual

        # And the scope's spend is exactly the sum of real costs, never above the limit
        assert budget.use(scope.name).spent_nusd == spent <= limit


def test_a_call_over_the_story_budget_raises_budget_exceeded_so_the_stage_holds_the_story(
    live: Settings, redis: Redis, domains_dir: Path, store: StoryStore, domains: Domains
) -> None:
    # Given the auth domain allowing $0.000001 per story, and a story
    toml = domains_dir / "auth" / "domain.toml"
    toml.write_text(toml.read_text().replace("story_usd = 5.0", "story_usd = 0.000001"))
    store.enqueue([Story(id="AUTH-001", title="t")], domains)
    client = LLMClient(live, redis)

    # When the story's agent makes a call
    with pytest.raises(BudgetExceededError) as raised:
        client.for_story("AUTH-001", "auth", "pm").call(
            LLMRequest(task=TaskKind.PLANNING, messages=(Message.user("plan"),))
        )

    # Then nothing was sent, the error is a HoldStory naming the story scope, and an event was recorded
    assert isinstance(raised.value, HoldStory) and raised.value.scope == "story:AUTH-001"
    assert "wave budget grant story:AUTH-001" in str(raised.value)
    assert [e["event"] for e in store.events("AUTH-001")][-1] == "budget_exceeded"
