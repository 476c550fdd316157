"""End to end with WAVE_SANDBOX=container: real worker processes, the real `wave sandbox` runner, the
real Docker engine and the sandbox image. A story's QA stage runs the domain's tests in a stage
container labelled with the story, the container is gone once the stage ends, and the stage's
usage is in `wave status ID`."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from redis import Redis

from wavefleet.config import Settings
from wavefleet.domains import Domains
from wavefleet.lifecycle import StoryState
from wavefleet.store import StoryStore
from wavefleet.stories import Story
from wavefleet.testing import Processes, run_wave, wait_until

pytestmark = [pytest.mark.docker, pytest.mark.slow, pytest.mark.timeout(600)]

STORY = "AUTH-001"


def docker(*argv: str) -> str:
    return subprocess.run(["docker", *argv], capture_output=True, text=True, check=True, timeout=60).stdout


def fleet_containers(fleet: str, *filters: str) -> list[str]:
    args = [f"label=dev.wave.sandbox={fleet}", *filters]
    return docker("ps", "-aq", *(x for f in args for x in ("--filter", f))).split()


@pytest.fixture
def container_settings(settings: Settings, sandbox_image: str, domains_dir: Path) -> Settings:
    # QA's test command lingers 3 s before the tests, so the test can find its container while it runs.
    toml = domains_dir / "auth" / "domain.toml"
    command = '["sh", "-c", "sleep 3; exec {python} -m pytest -q -p no:cacheprovider"]'
    toml.write_text(
        toml.read_text().replace('base_branch = "main"', f'base_branch = "main"\ntest_command = {command}')
    )
    section = settings.sandbox_container.model_copy(update={"image": sandbox_image})
    return settings.model_copy(update={"sandbox": "container", "sandbox_container": section})


@pytest.fixture
def fleet(container_settings: Settings, redis: Redis, tmp_path: Path) -> Iterator[Processes]:
    procs = Processes(container_settings, tmp_path / "logs")
    try:
        yield procs
    finally:
        procs.stop_all()  # SIGKILL: the runner removes nothing then, so the test does
        fleet_id = redis.get(container_settings.keys.fleet_id())
        if fleet_id:
            left = fleet_containers(fleet_id)
            if left:
                docker("rm", "-f", *left)


def test_a_storys_qa_runs_its_tests_in_a_container_labelled_with_the_story_and_status_shows_its_usage(
    fleet: Processes, container_settings: Settings, store: StoryStore, domains: Domains, redis: Redis
) -> None:
    fleet.wave("sandbox", name="sandbox")
    wait_until(
        lambda: redis.exists(container_settings.keys.sandbox_runner()),
        timeout_s=60,
        message="the sandbox runner's heartbeat",
        diagnose=fleet.logs,
    )
    fleet.team("auth")
    fleet.supervisor()
    store.enqueue([Story(id=STORY, title="a login page")], domains)
    fleet_id = str(redis.get(container_settings.keys.fleet_id()))

    # While QA's tests run, its container is there, labelled with the stage, hardened.
    (container,) = wait_until(
        lambda: fleet_containers(fleet_id, f"label=dev.wave.story={STORY}", "label=dev.wave.role=qa"),
        timeout_s=120,
        message="QA's stage container",
        diagnose=lambda: f"{store.get(STORY).state}\n{fleet.logs()[-4000:]}",
    )
    status_line = run_wave(container_settings, "status").stdout
    (seen,) = json.loads(docker("inspect", container))
    labels, host = seen["Config"]["Labels"], seen["HostConfig"]
    assert (labels["dev.wave.domain"], labels["dev.wave.round"]) == ("auth", "1")
    assert labels["dev.wave.worker"].startswith("auth-qa-1.") and labels["dev.wave.job"].startswith(STORY)
    assert not seen["Config"]["User"].startswith("0:") and seen["Config"]["User"]
    assert host["ReadonlyRootfs"] and host["NetworkMode"] == "none" and host["CapDrop"] == ["ALL"]

    wait_until(
        lambda: store.get(STORY).state is StoryState.DONE,
        timeout_s=120,
        message=f"{STORY} to be done",
        diagnose=lambda: f"{store.get(STORY).state} {store.get(STORY).reason}\n{fleet.logs()[-4000:]}",
    )
    assert fleet_containers(fleet_id) == []  # released at the stage's end, not left for the sweep
    assert "sandbox: container (runner sandbox@" in status_line
    assert f"image {container_settings.sandbox_container.image})" in status_line
    shown = run_wave(container_settings, "status", STORY).stdout
    assert "container: " in shown and "cpu-s, peak " in shown and "1 container" in shown, shown
    results = json.loads(run_wave(container_settings, "status", STORY, "--json").stdout)["results"]
    usage = [r["sandbox_usage"] for name, r in results.items() if "qa" in name and "sandbox_usage" in r]
    assert usage and usage[-1]["containers"] == 1 and usage[-1]["commands"] >= 1
    assert usage[-1]["wall_s"] >= 3 and not usage[-1].get("limits_hit")
