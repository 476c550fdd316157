"""`wave sandbox` ending containers: the emergency stop, `wave cancel`, the sweep after a worker died,
and a restarted runner's sweep (real engine, real Redis, the runner its own process)."""

from __future__ import annotations

import signal
import time

import pytest
from sandbox_harness import Runner, acl_redis, fleet_containers, runner, start_sleepers

from wavefleet.halt import send_cancel, send_halt, send_resume
from wavefleet.sandbox.protocol import ExecReply
from wavefleet.testing import wait_until

pytestmark = pytest.mark.docker
__all__ = ["acl_redis", "runner"]  # fixtures
STAGES = 10
# The sweep runs every 0.5 s here; a container start and a kill take well under 5 s each even on a
# busy 2-core machine, so 30 s is far past any sweep that works.
SWEEP_WAIT_S = 30.0


def test_an_emergency_stop_with_ten_stages_running_leaves_none_running(runner: Runner) -> None:
    labels = [runner.labels(f"job-{n}", story=f"S-{n}") for n in range(STAGES)]
    requests = start_sleepers(runner, labels)
    halted_at = time.monotonic()
    send_halt(runner.admin, runner.settings().keys, "drill", "test")  # as the stop-file watcher does
    wait_until(
        lambda: not fleet_containers(runner.fleet, running_only=True),
        timeout_s=SWEEP_WAIT_S,
        interval_s=0.02,
        message="no sandbox container running",
        diagnose=runner.logs,
    )
    print(f"halt: {STAGES} containers killed in {time.monotonic() - halted_at:.2f}s")
    replies = [runner.reply(r) for r in requests]
    assert all(isinstance(r, ExecReply) and r.error and "halted" in r.error for r in replies), replies
    # While halted, no command starts, and no container is made for one.
    refused = runner.exec(runner.labels("job-late"), runner.worktree("late"), ["true"])
    assert refused.error and "halted" in refused.error
    wait_until(lambda: not fleet_containers(runner.fleet), timeout_s=SWEEP_WAIT_S, message="all removed")
    send_resume(runner.admin, runner.settings().keys, "test")
    late = runner.labels("job-late")
    runner.running(late)
    wait_until(
        lambda: runner.exec(late, runner.domain_root / "worktrees" / "late", ["true"]).exit_code == 0,
        timeout_s=SWEEP_WAIT_S,
        message="commands accepted after the resume",
        diagnose=runner.logs,
    )


def test_cancel_kills_the_story_s_containers_only(runner: Runner) -> None:
    doomed, kept = runner.labels("job-doomed", story="AUTH-1"), runner.labels("job-kept", story="AUTH-2")
    requests = start_sleepers(runner, [doomed, kept])
    send_cancel(runner.admin, runner.settings().keys, "AUTH-1")
    reply = runner.reply(requests[0])
    assert isinstance(reply, ExecReply) and reply.error == "the story was cancelled", reply
    wait_until(lambda: not fleet_containers(runner.fleet, story="AUTH-1"), message="AUTH-1's container gone")
    assert [c["Labels"] for c in fleet_containers(runner.fleet, running_only=True)] != []
    (survivor,) = fleet_containers(runner.fleet, running_only=True)
    assert "dev.wave.story=AUTH-2" in survivor["Labels"]
    assert runner.admin.llen(runner.settings().keys.sandbox_reply(requests[1])) == 0  # still running
    refused = runner.exec(doomed, runner.domain_root / "worktrees" / doomed.job, ["true"])
    assert refused.error == "the story was cancelled"


def test_a_stage_sigkilled_mid_command_leaves_no_container_after_the_sweep(runner: Runner) -> None:
    dead, alive = (
        runner.labels("job-dead", worker="AUTH-QA-1"),
        runner.labels("job-alive", worker="AUTH-QA-2"),
    )
    start_sleepers(runner, [dead, alive])
    runner.stage_over(dead)  # its worker was SIGKILLed: heartbeat expired, running entry gone
    wait_until(
        lambda: not fleet_containers(runner.fleet, job="job-dead"),
        timeout_s=SWEEP_WAIT_S,
        message="the dead stage's container swept",
        diagnose=runner.logs,
    )
    # The live stage's container was left alone by every sweep since (at 0.5 s, several ran).
    assert len(fleet_containers(runner.fleet, running_only=True, job="job-alive")) == 1


def test_a_worker_whose_heartbeat_is_gone_loses_its_containers(runner: Runner) -> None:
    stage = runner.labels("job-hb")
    start_sleepers(runner, [stage])
    runner.admin.delete(runner.settings().keys.worker_heartbeat(stage.worker))  # entry stays: worker dead
    wait_until(
        lambda: not fleet_containers(runner.fleet),
        timeout_s=SWEEP_WAIT_S,
        message="swept",
        diagnose=runner.logs,
    )


def test_a_restarted_runner_sweeps_what_the_dead_one_left(runner: Runner) -> None:
    ended, ongoing = runner.labels("job-ended"), runner.labels("job-ongoing", worker="AUTH-QA-2")
    for stage in (ended, ongoing):
        runner.running(stage)
        assert runner.exec(stage, runner.worktree(stage.job), ["true"]).exit_code == 0  # a warm container
    assert runner.stop(signal.SIGKILL) == -signal.SIGKILL
    assert len(fleet_containers(runner.fleet)) == 2  # a SIGKILLed runner removes nothing
    runner.stage_over(ended)  # that stage finished while no runner was there
    runner.start()
    wait_until(
        lambda: len(fleet_containers(runner.fleet)) == 1, message="the leftover swept", diagnose=runner.logs
    )
    (left,) = fleet_containers(runner.fleet)
    assert "dev.wave.job=job-ongoing" in left["Labels"]
    # The ongoing stage's next command gets a container of the new runner; the old one goes.
    reply = runner.exec(ongoing, runner.domain_root / "worktrees" / ongoing.job, ["true"])
    assert reply.exit_code == 0 and reply.started_container
    (now,) = fleet_containers(runner.fleet)
    assert now["Names"] == reply.container != left["Names"]
