"""End to end with models: a fleet of real worker processes plays a story through the LLM agents.

The models are the local Anthropic and xAI servers, reached by the real SDK clients, answering as
tests/scripted_team.py scripts them. What is checked is what the fleet did with those answers:
real files, a real failing pytest run, real commits, a real merge, the sandbox, the routing.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from scripted_team import FAILING_TEST, FIX_MARK, PID_MARK, STORY, STORY_ID, Call, ScriptedTeam
from servers.anthropic_server import AnthropicServer
from servers.xai_server import XaiServer

from wavefleet.config import AnthropicSettings, Settings, XaiSettings
from wavefleet.domains import Domains
from wavefleet.lifecycle import Role, StoryState
from wavefleet.processes import processes_with
from wavefleet.store import StoryStore
from wavefleet.stories import Story
from wavefleet.testing import Processes, run_wave, wait_until
from workers.git import git

pytestmark = pytest.mark.slow

ANTHROPIC_KEY = "e2e-anthropic-key"
XAI_KEY = "e2e-xai-key"


@pytest.fixture
def anthropic() -> Iterator[AnthropicServer]:
    server = AnthropicServer(api_key=ANTHROPIC_KEY).start()
    yield server
    server.stop()


@pytest.fixture
def xai() -> Iterator[XaiServer]:
    server = XaiServer(api_key=XAI_KEY).start()
    yield server
    server.stop()


def keyed(settings: Settings, anthropic: AnthropicServer, xai: XaiServer) -> Settings:
    """Both providers keyed, pointing at the local servers; `agent` left at its default (auto)."""
    return settings.model_copy(
        update={
            "anthropic": AnthropicSettings(api_key=ANTHROPIC_KEY, base_url=anthropic.url, max_retries=0),
            "xai": XaiSettings(api_key=XAI_KEY, api_host=xai.host, use_insecure_channel=True, max_retries=0),
        }
    )


@contextmanager
def llm_fleet(
    team: ScriptedTeam, settings: Settings, anthropic: AnthropicServer, xai: XaiServer, logs: Path
) -> Iterator[tuple[Settings, Processes]]:
    """The auth team and a supervisor as real processes, the scripted team answering both servers,
    and the story enqueued; the processes stopped after."""
    anthropic.respond_with(team.anthropic)
    xai.respond_with(team.xai)
    live = keyed(settings, anthropic, xai)
    procs = Processes(live, logs)
    try:
        procs.team("auth")
        procs.supervisor()
        yield live, procs
    finally:
        procs.stop_all()


def wait_finished(store: StoryStore, diagnose: Callable[[], str]) -> None:
    wait_until(
        lambda: store.get(STORY_ID).state in (StoryState.DONE, StoryState.FAILED, StoryState.HELD),
        timeout_s=200,
        interval_s=0.2,
        message=f"{STORY_ID} to finish",
        diagnose=diagnose,
    )


@pytest.mark.timeout(300)  # seven processes and two model servers on a shared 2-core CI machine
def test_a_story_goes_through_the_llm_team_fails_qa_once_is_fixed_and_gets_a_go_from_grok(
    settings: Settings,
    anthropic: AnthropicServer,
    xai: XaiServer,
    store: StoryStore,
    domains: Domains,
    tmp_path: Path,
) -> None:
    team = ScriptedTeam()
    with llm_fleet(team, settings, anthropic, xai, tmp_path / "logs") as (live, procs):
        story = Story.model_validate(STORY)
        store.enqueue([story], domains)

        def diagnose() -> str:
            return (
                f"state {store.get(STORY_ID).state}, calls {team.seen.calls}, unexpected "
                f"{team.seen.unexpected}\n{procs.logs()[-6000:]}"
            )

        wait_finished(store, diagnose)
        assert store.get(STORY_ID).state is StoryState.DONE, diagnose()
        status = run_wave(live, "status", STORY_ID, "--json")

    record = store.get(STORY_ID)
    assert record.round == 2 and not team.seen.unexpected
    clone = settings.data_dir / "repos" / "auth" / "clone"

    # QA failed round 1 on a real pytest failure of the test BE wrote, and said what to fix
    first = store.latest_result(record, Role.QA, round_=1)
    assert first is not None and first.ok and not first.output["passed"]
    assert first.output["tests_failed"] >= 1 and FAILING_TEST in first.output["output_tail"]
    assert FIX_MARK in first.output["failures"][0]["fix"]
    assert "1 failed" in team.seen.openings[("qa", 1)]["test_output"]
    # ... the report reached BE in round 2, and QA passed on the fixed merge without a model call
    assert FIX_MARK in json.dumps(team.seen.openings[("be", 2)]["previous_qa_report"])
    second = store.latest_result(record, Role.QA, round_=2)
    assert second is not None and second.output["passed"]
    assert not [c for c in team.seen.calls if c[1] == "qa" and c[2] == 2]

    # The CTO's calls went to the xAI server (and only the CTO's), and it said GO
    assert {c[1] for c in team.seen.calls if c[0] == "xai"} == {"cto"}
    assert {c[0] for c in team.seen.calls if c[1] == "cto"} == {"xai"}
    review = store.latest_result(record, Role.CTO, round_=2)
    assert review is not None and review.output["decision"] == "GO"
    assert review.agent == "llm" and "xai" in review.output["agent"]

    # The story is data in the opening message, never in a (cacheable) system prompt
    assert len(team.seen.systems) == 5 and not any(STORY["title"] in s for s in team.seen.systems)
    assert all(o["story"]["title"] == STORY["title"] for o in team.seen.openings.values())

    # Commits on the developers' branches name their role and worker
    for role in ("fe", "be"):
        authors = set(git(clone, "log", "--format=%an", f"main..wave/{STORY_ID}-{role}").splitlines())
        assert authors and all(re.fullmatch(rf"WAVE {role} \(AUTH-{role.upper()}-\d+\)", a) for a in authors)

    # Every `run` ran inside bwrap's pid namespace (a host process id is never this small)
    pids = [int(m) for out in team.seen.run_outputs for m in re.findall(rf"{PID_MARK} (\d+)", out)]
    runs = [c for c in team.seen.calls if c[4] == "run"]
    assert len(pids) == len(runs) >= 3 and all(pid < 10 for pid in pids), (pids, runs)

    # The reviewed branch's tests really pass, run here on a fresh checkout of it
    checkout = tmp_path / "checkout"
    git(tmp_path, "clone", "--quiet", "--branch", f"wave/{STORY_ID}-qa", str(clone), str(checkout))
    tests = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider"],
        cwd=checkout,
        check=False,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert tests.returncode == 0, tests.stdout
    assert (checkout / "auth_service" / "lockout.py").read_text().count(">= self.limit") == 1

    # `wave status` says which kind of agent ran each stage
    assert status.returncode == 0, status.stderr
    results = json.loads(status.stdout)["results"]
    assert results and {r["agent"] for r in results.values()} == {"llm"}


class HaltedOnce(ScriptedTeam):
    """The scripted team, but BE's first test run in round 1 is a long command with a detached
    child: the moment to pull the emergency stop. Asked again (after the resume), BE runs as scripted."""

    def __init__(self, token: str) -> None:
        super().__init__()
        self.token = token
        self.stalled = False

    def _decide(self, provider: str, system: str, turns: list[tuple[str, str]]) -> Call | None:
        call = super()._decide(provider, system, turns)
        if call is not None and call[0] == "run" and "# Role: be" in system and not self.stalled:
            self.stalled = True
            long = f"setsid sleep {self.token} & sleep {self.token}"
            return ("run", {"command": long})
        return call


@pytest.mark.timeout(300)
def test_a_halt_kills_the_models_sandboxed_command_and_the_story_resumes_to_a_go(
    settings: Settings,
    anthropic: AnthropicServer,
    xai: XaiServer,
    store: StoryStore,
    domains: Domains,
    tmp_path: Path,
) -> None:
    # Given the LLM team, BE's model running a long command with a detached child in the sandbox
    token = f"1000.{uuid.uuid4().int % 10**9}"  # a sleep of ~1000 s, unique on this machine
    team = HaltedOnce(token)
    with llm_fleet(team, settings, anthropic, xai, tmp_path / "logs") as (live, procs):
        store.enqueue([Story.model_validate(STORY)], domains)
        wait_until(lambda: processes_with(token), timeout_s=120, message="BE's command", diagnose=procs.logs)

        # When the operator pulls the emergency stop
        assert run_wave(live, "stop", "--reason", "drill").returncode == 0

        # Then the command and its child are gone at once (else they would sleep 1000 s) and the
        # story is halted, nothing failed
        wait_until(lambda: not processes_with(token), timeout_s=5, message="BE's command to be gone")
        wait_until(lambda: store.get(STORY_ID).state is StoryState.HALTED, timeout_s=10, message="halted")

        # And after the resume the story carries on from its stage to a GO
        assert run_wave(live, "resume").returncode == 0
        wait_finished(store, lambda: f"{store.get(STORY_ID)}\n{procs.logs()[-4000:]}")
    record = store.get(STORY_ID)
    assert record.state is StoryState.DONE and record.round == 2, record.reason
    assert not team.seen.unexpected
