"""One story, one LangSmith trace across processes: a real supervisor and real `wave worker`
processes with the LLM agents (local Anthropic and xAI servers); the workers' horses leave their runs
in the Redis trace outbox, the supervisor's real `langsmith` client posts them and the roots to a
local collector. The tree is story root -> stage runs -> llm and tool runs."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from datetime import datetime
from pathlib import Path

import pytest
from redis import Redis
from scripted_team import STORY, STORY_ID, ScriptedTeam
from servers.anthropic_server import AnthropicServer
from servers.langsmith_server import LangSmithServer
from servers.xai_server import XaiServer
from test_agents_e2e import anthropic, llm_fleet, wait_finished, xai  # noqa: F401 - fixtures

from wavefleet.config import LangSmithSettings, Settings
from wavefleet.domains import Domains
from wavefleet.lifecycle import StoryState
from wavefleet.store import StoryStore
from wavefleet.stories import Story
from wavefleet.testing import Processes, wait_until
from wavefleet.tracing import TraceContext

pytestmark = pytest.mark.slow


@pytest.mark.timeout(300)  # seven processes and two model servers on a shared 2-core machine
def test_one_story_is_one_trace_across_every_process(
    settings: Settings,
    anthropic: AnthropicServer,  # noqa: F811
    xai: XaiServer,  # noqa: F811
    store: StoryStore,
    domains: Domains,
    tmp_path: Path,
) -> None:
    collector = LangSmithServer()
    traced = settings.model_copy(
        update={
            "langsmith": LangSmithSettings(
                api_key=collector.api_key, endpoint=collector.url, flush_interval_s=0.2
            )
        }
    )
    team = ScriptedTeam()
    try:
        with llm_fleet(team, traced, anthropic, xai, tmp_path / "logs") as (_live, procs):
            store.enqueue([Story.model_validate(STORY)], domains)
            wait_finished(store, lambda: procs.logs()[-6000:])
            assert store.get(STORY_ID).state is StoryState.DONE
            root = TraceContext.parse(store.get(STORY_ID).trace)
            assert root is not None
            wait_until(  # the supervisor ends the root and sends the CTO's runs from the outbox
                lambda: (
                    collector.snapshot().get(root.run_id, {}).get("end_time")
                    and any(
                        r.get("name") == "cto r2" and r.get("end_time") for r in collector.snapshot().values()
                    )
                ),
                timeout_s=30,
                message="the root run to end",
                diagnose=lambda: f"{sorted(collector.snapshot())}\n{procs.logs()[-4000:]}",
            )
        runs = collector.snapshot()
    finally:
        collector.close()

    assert set(collector.traces()) == {root.trace_id}, "one trace, and only one"
    story = runs[root.run_id]
    assert story["name"] == STORY_ID and story["outputs"]["state"] == "done" and "parent_run_id" not in story
    assert story["inputs"]["title"] == STORY["title"]
    stages = [r for r in runs.values() if r.get("parent_run_id") == root.run_id]
    by_stage = {r["name"] for r in stages}
    assert {"pm r0", "fe r1", "be r1", "qa r1", "cto r2"} <= by_stage, by_stage
    assert all(r.get("end_time") and r["run_type"] == "chain" for r in stages)
    # the stages ran in different worker processes: one trace spans them
    assert len({r["extra"]["metadata"]["worker"] for r in stages}) >= 4
    stage_ids = {r["id"] for r in stages}
    llm = [r for r in runs.values() if r.get("run_type") == "llm"]
    tools = [r for r in runs.values() if r.get("run_type") == "tool"]
    assert llm and tools and all(r["parent_run_id"] in stage_ids for r in llm + tools)
    assert len(llm) == len(team.seen.calls), (len(llm), len(team.seen.calls))
    for run in llm:
        meta = run["extra"]["metadata"]
        assert meta["provider"] in ("anthropic", "xai") and meta["model"] and "cost_usd" in meta
        assert run["outputs"]["usage_metadata"]["total_tokens"] > 0
    assert sum(r["extra"]["metadata"]["cost_usd"] for r in llm) > 0
    assert {r["extra"]["metadata"]["provider"] for r in llm} == {"anthropic", "xai"}
    assert all(r["extra"]["metadata"]["verdict"] == "allow" for r in tools)
    assert "finish" in {r["name"] for r in tools}


def _story_seconds(
    live: Settings,
    store: StoryStore,
    domains: Domains,
    story_id: str,
    logs: Path,
    then: Callable[[], object] = lambda: None,
) -> float:
    """Enqueue-to-done of one offline story through a fresh team of real worker processes; `then`
    runs before the fleet stops."""
    procs = Processes(live, logs)
    try:
        procs.team("auth")
        procs.supervisor()
        started = time.monotonic()
        store.enqueue(
            [Story(id=story_id, title=f"Story {story_id}", acceptance_criteria=("it works",))], domains
        )
        wait_until(
            lambda: store.get(story_id).state is StoryState.DONE,
            timeout_s=120,
            message=f"{story_id} done",
            diagnose=lambda: procs.logs()[-4000:],
        )
        seconds = time.monotonic() - started
        then()
        return seconds
    finally:
        procs.stop_all()


def _horse_tails(logs: Path) -> list[float]:
    """Per stage job: seconds from the stage's result being stored ("stage finished", logged right
    after) to its work horse ending the job (rq's "Successfully completed"): what tracing adds."""
    tails = []
    for log in logs.glob("auth-*.log"):
        finished: float | None = None
        for line in log.read_text(errors="replace").splitlines():
            entry = json.loads(line) if line.startswith("{") else {}
            at = datetime.fromisoformat(entry.get("timestamp", "1970-01-01T00:00:00Z")).timestamp()
            if entry.get("event") == "stage finished":
                finished = at
            elif str(entry.get("event", "")).startswith("Successfully completed") and finished is not None:
                tails.append(at - finished)
                finished = None
    return tails


@pytest.mark.timeout(300)
def test_a_langsmith_outage_does_not_slow_the_stages_and_the_drops_are_counted(
    settings: Settings, redis: Redis, store: StoryStore, domains: Domains, tmp_path: Path
) -> None:
    collector = LangSmithServer()
    collector.close()  # connection refused for the whole story
    down = settings.model_copy(
        update={"langsmith": LangSmithSettings(api_key=collector.api_key, endpoint=collector.url)}
    )

    def dropped() -> int:
        return int(redis.hget(settings.keys.metric_counters(), "trace_runs_dropped") or 0)

    off = _story_seconds(settings, store, domains, "AUTH-201", tmp_path / "off")
    traced = _story_seconds(
        down,
        store,
        domains,
        "AUTH-202",
        tmp_path / "down",
        then=lambda: wait_until(  # the supervisor's first batch: the client's 3 attempts (1 s, 2 s backoff)
            lambda: dropped() > 0, timeout_s=30, message="the supervisor to drop and count runs"
        ),
    )
    tails_off, tails_down = _horse_tails(tmp_path / "off"), _horse_tails(tmp_path / "down")
    print(f"story s: off {off:.2f}, LangSmith down {traced:.2f}; horse tails s: {tails_off} {tails_down}")
    # The stage's result is stored before its horse leaves what it traced in the outbox (one Redis
    # command). A horse that waited for LangSmith would end seconds late (the client's retries);
    # 0.5 s is room for a loaded 2-core machine's scheduling. (Whole-story times are printed, not
    # compared: other fleets on this machine move them by seconds.)
    assert len(tails_down) >= 4 and max(tails_down) < max(tails_off) + 0.5, (tails_off, tails_down)
    assert dropped() > 0
    logged = {p.name: p.read_text(errors="replace") for p in (tmp_path / "down").glob("*.log")}
    # only the supervisor talks to LangSmith, and says so once per outage, not per batch
    said = {name: text.count("LangSmith unreachable") for name, text in logged.items()}
    assert sum(said.values()) == 1 and not any(said[n] for n in said if n.startswith("auth-")), said
