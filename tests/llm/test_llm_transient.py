"""Failures that are not the story's (providers down past the fallback) retry the stage after a
backoff; only the story's own faults fail it. Real worker and supervisor processes, the real SDKs
against the local servers, a real Redis."""

from __future__ import annotations

import signal
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import grpc
import pytest
from conftest import live_settings
from redis import Redis
from scripted_team import ScriptedTeam
from servers.anthropic_server import AnthropicServer
from servers.anthropic_server import Reply as HttpReply
from servers.xai_server import Reply as GrpcReply
from servers.xai_server import XaiServer

from wavefleet.config import PipelineSettings, Settings
from wavefleet.connection import connect
from wavefleet.domains import load_domains
from wavefleet.lifecycle import Role, StoryState
from wavefleet.retries import RetrySchedule
from wavefleet.store import StoryStore
from wavefleet.stories import Story
from wavefleet.testing import Processes, run_wave, wait_until

pytestmark = pytest.mark.timeout(120)


class Fleet:
    """A PM worker running the LLM agent (a plain `wave worker`, WAVE_AGENT=llm) and a supervisor."""

    def __init__(self, settings: Settings, logs: Path) -> None:
        self.settings, self.logs = settings, logs
        self.procs = Processes(settings, logs)
        self.store = StoryStore(connect(settings), settings.keys, settings.pipeline.max_rounds)
        self.supervisor: subprocess.Popen[bytes] | None = None

    def start(self) -> Fleet:
        self.procs.worker("auth", "pm")
        self.supervisor = self.procs.supervisor()
        return self

    def enqueue(self, story_id: str) -> None:
        story = Story(id=story_id, title=f"Story {story_id}", acceptance_criteria=("it works",))
        self.store.enqueue([story], load_domains(self.settings.domains_dir))

    def wait_for(self, story_id: str, state: StoryState) -> None:
        wait_until(
            lambda: self.store.get(story_id).state is state,
            timeout_s=60,
            message=f"{story_id} to be {state} (is {self.store.get(story_id).state})",
            diagnose=self.procs.logs,
        )

    def events(self, story_id: str, kind: str) -> list[dict[str, str]]:
        return [e for e in self.store.events(story_id) if e["event"] == kind]

    def waits(self, story_id: str, count: int) -> list[dict[str, str]]:
        return wait_until(
            lambda: found if len(found := self.events(story_id, "stage_waiting")) >= count else [],
            timeout_s=60,
            message=f"{count} transient failure(s) of {story_id}",
            diagnose=self.procs.logs,
        )


MakeFleet = Callable[..., Fleet]


@pytest.fixture
def fleet_for(
    settings: Settings, redis: Redis, tmp_path: Path, anthropic_server: AnthropicServer, xai_server: XaiServer
) -> Iterator[MakeFleet]:
    started: list[Fleet] = []

    def make(retries: int = 5, backoff_s: float = 0.2, backoff_max_s: float = 1.0) -> Fleet:
        # The PM's model (once the servers answer again): a look at the repository, then a plan.
        team = ScriptedTeam()
        anthropic_server.respond_with(team.anthropic)
        xai_server.respond_with(team.xai)
        pipeline = PipelineSettings(
            transient_retries=retries, transient_backoff_s=backoff_s, transient_backoff_max_s=backoff_max_s
        )
        live = live_settings(settings, anthropic_server, xai_server, cooldown_s=0.3)
        live = live.model_copy(update={"pipeline": pipeline, "agent": "llm"})
        fleet = Fleet(live, tmp_path / "logs").start()
        started.append(fleet)
        return fleet

    yield make
    for fleet in started:
        fleet.procs.stop_all()


def both_down(anthropic: AnthropicServer, xai: XaiServer, times: int) -> None:
    anthropic.script(*[HttpReply(status=529)] * times)
    xai.script(*[GrpcReply(code=grpc.StatusCode.UNAVAILABLE)] * times)


def test_a_stage_whose_providers_are_both_down_is_retried_with_backoff_and_goes_on_when_they_recover(
    fleet_for: MakeFleet, anthropic_server: AnthropicServer, xai_server: XaiServer
) -> None:
    # Given both providers overloaded for the next two calls each
    both_down(anthropic_server, xai_server, 2)
    fleet = fleet_for()

    # When a story's PM stage (which asks the model first) runs
    fleet.enqueue("AUTH-601")

    # Then it waits, says why, and once the providers answer again the story goes on to development
    fleet.wait_for("AUTH-601", StoryState.DEVELOPING)
    waits = fleet.events("AUTH-601", "stage_waiting")
    assert waits and waits[0]["reason"].startswith("retry 1/5 in "), waits
    assert any("overloaded (529)" in w["reason"] or "UNAVAILABLE" in w["reason"] for w in waits), waits
    record = fleet.store.get("AUTH-601")
    assert record.attempts[Role.PM] == len(waits) + 1  # each retry is a new attempt
    plan = fleet.store.result("AUTH-601", 0, Role.PM, record.attempts[Role.PM])
    assert plan is not None and plan.ok and plan.agent == "llm"  # the PM's model made the plan
    assert fleet.events("AUTH-601", "stage_failed") == []


def test_past_the_bound_the_stage_fails_with_the_last_reason(
    fleet_for: MakeFleet, anthropic_server: AnthropicServer, xai_server: XaiServer
) -> None:
    both_down(anthropic_server, xai_server, 50)
    fleet = fleet_for(retries=2, backoff_s=0.1, backoff_max_s=0.2)

    fleet.enqueue("AUTH-602")

    fleet.wait_for("AUTH-602", StoryState.FAILED)
    record = fleet.store.get("AUTH-602")
    assert record.reason.startswith("pm stage failed after 2 retries: "), record.reason
    assert "anthropic" in record.reason or "xai" in record.reason
    assert len(fleet.events("AUTH-602", "stage_waiting")) == 2
    assert record.attempts[Role.PM] == 3
    assert RetrySchedule(fleet.store.redis, fleet.settings.keys).pending() == 0


def test_a_supervisor_killed_while_a_stage_waits_retries_it_after_its_restart(
    fleet_for: MakeFleet, anthropic_server: AnthropicServer, xai_server: XaiServer
) -> None:
    both_down(anthropic_server, xai_server, 1)
    fleet = fleet_for(backoff_s=2.0, backoff_max_s=2.0)  # due 1-2 s after the failure
    fleet.enqueue("AUTH-603")
    fleet.waits("AUTH-603", 1)

    # When the supervisor dies while the stage waits
    assert fleet.supervisor is not None
    fleet.supervisor.send_signal(signal.SIGKILL)
    fleet.supervisor.wait(timeout=10)

    # Then the story says why it waits, the schedule outlives the supervisor...
    status = run_wave(fleet.settings, "status", "AUTH-603")
    assert "waiting:" in status.stdout and "pm retry 1/5 in " in status.stdout, status.stdout
    events = run_wave(fleet.settings, "events", "AUTH-603")
    assert "stage_waiting" in events.stdout and "retry 1/5 in " in events.stdout, events.stdout
    schedule = RetrySchedule(fleet.store.redis, fleet.settings.keys)
    [(_entry, due_in_s)] = schedule.waiting("AUTH-603")
    deadline = time.time() + due_in_s
    wait_until(lambda: time.time() >= deadline, timeout_s=due_in_s + 1, message="the retry's due time")
    assert fleet.store.get("AUTH-603").attempts[Role.PM] == 1  # nothing retried it meanwhile

    # ...and a new supervisor retries the stage
    fleet.supervisor = fleet.procs.supervisor()
    fleet.wait_for("AUTH-603", StoryState.DEVELOPING)
    assert fleet.store.get("AUTH-603").attempts[Role.PM] == 2


def test_a_halt_while_a_stage_waits_keeps_its_retry_for_the_resume(
    fleet_for: MakeFleet, anthropic_server: AnthropicServer, xai_server: XaiServer
) -> None:
    # Given a stage waiting out a backoff of 3-6 s (long enough for the halt to land first)
    both_down(anthropic_server, xai_server, 1)
    fleet = fleet_for(backoff_s=6.0, backoff_max_s=6.0)
    fleet.enqueue("AUTH-604")
    fleet.waits("AUTH-604", 1)
    schedule = RetrySchedule(fleet.store.redis, fleet.settings.keys)
    [(_entry, due_in_s)] = schedule.waiting("AUTH-604")
    deadline = time.time() + due_in_s + 0.5  # past due, and a few supervisor passes

    # When the fleet is halted, and stays halted past the retry's due time
    assert run_wave(fleet.settings, "stop", "--reason", "test").returncode == 0
    fleet.wait_for("AUTH-604", StoryState.HALTED)
    wait_until(lambda: time.time() >= deadline, timeout_s=due_in_s + 2, message="the retry's due time")

    # Then the retry is kept (not run, not dropped), and runs after the resume
    assert fleet.store.get("AUTH-604").state is StoryState.HALTED
    assert len(schedule.waiting("AUTH-604")) == 1
    assert run_wave(fleet.settings, "resume").returncode == 0
    fleet.wait_for("AUTH-604", StoryState.DEVELOPING)
    assert fleet.store.get("AUTH-604").attempts[Role.PM] == 2


def test_a_request_the_provider_refuses_is_the_storys_fault_and_fails_it_at_once(
    fleet_for: MakeFleet, anthropic_server: AnthropicServer, xai_server: XaiServer
) -> None:
    anthropic_server.script(HttpReply(status=400))
    xai_server.script(GrpcReply(code=grpc.StatusCode.INVALID_ARGUMENT))
    fleet = fleet_for()

    fleet.enqueue("AUTH-605")

    fleet.wait_for("AUTH-605", StoryState.FAILED)
    record = fleet.store.get("AUTH-605")
    assert "request refused" in record.reason, record.reason
    assert fleet.events("AUTH-605", "stage_waiting") == []
    assert record.attempts[Role.PM] == 1
