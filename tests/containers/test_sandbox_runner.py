"""`wave sandbox` with a real Docker engine: the stage container's hardening, what persists, limits,
output cap and timeout, and the runner's refusals (the issue's checks, asked as a worker asks)."""

from __future__ import annotations

import ipaddress
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from docker_fleet import REPO, run
from redis import Redis
from sandbox_harness import (
    MEMORY_MB,
    PIDS,
    Runner,
    acl_redis,
    fleet_containers,
    inspect,
    runner,
    start_sleepers,
)

from wavefleet import acl
from wavefleet.embedded import EmbeddedRedis, free_port
from wavefleet.errors import ExitCode
from wavefleet.sandbox.protocol import ExecReply, PingReply, PingRequest
from wavefleet.testing import env_of, wait_until

pytestmark = pytest.mark.docker
__all__ = ["acl_redis", "runner"]  # fixtures


def test_the_stage_container_is_hardened_labelled_and_runs_as_the_asked_user(runner: Runner) -> None:
    labels = runner.labels("job-harden", story="AUTH-042")
    runner.running(labels)
    tree = runner.worktree("harden")
    reply = runner.exec(labels, tree, ["sh", "-c", "id -u; id -g; env | sort"])
    assert reply.exit_code == 0 and reply.started_container, reply
    assert reply.output.splitlines()[:2] == ["10001", "0"]
    assert "WAVE_SECRET" not in reply.output and "HOME=/workspace" in reply.output  # env allow-list
    (found,) = fleet_containers(runner.fleet, job="job-harden")
    config = inspect(found["ID"])
    host = config["HostConfig"]
    assert config["Config"]["User"] == "10001:0" and config["Config"]["WorkingDir"] == "/workspace"
    assert host["ReadonlyRootfs"] and host["CapDrop"] == ["ALL"] and host["NetworkMode"] == "none"
    assert host["SecurityOpt"] == ["no-new-privileges"] and not host["Privileged"] and host["Init"]
    assert host["Memory"] == host["MemorySwap"] == MEMORY_MB * 2**20 and host["PidsLimit"] == PIDS
    assert not host["Binds"] and [m["Destination"] for m in config["Mounts"]] == ["/workspace"]
    assert {k: v for k, v in config["Config"]["Labels"].items() if k.startswith("dev.")} == {
        "dev.wave.sandbox": runner.fleet, "dev.wave.story": "AUTH-042", "dev.wave.domain": "auth",
        "dev.wave.role": "qa", "dev.wave.round": "1", "dev.wave.attempt": "0", "dev.wave.job": "job-harden",
        "dev.wave.worker": "AUTH-QA-1", "dev.dozzle.group": "sandbox",
    }  # fmt: skip
    assert found["Names"] == reply.container and reply.container.startswith("wave-sbx-auth-042-qa-r1-a0-")


def bridge_gateway() -> str:
    """The default bridge's gateway: named in its IPAM config by older engines; newer ones (28) give
    only the subnet, whose first address the engine gives the bridge."""
    config = json.loads(
        run("docker", "network", "inspect", "bridge", "--format", "{{json .IPAM.Config}}").stdout
    )
    ipv4 = next(c for c in config if ":" not in c["Subnet"])
    gateway = ipv4.get("Gateway") or str(ipaddress.ip_network(ipv4["Subnet"])[1])
    assert ipaddress.ip_address(gateway), config
    return gateway


def test_root_is_read_only_and_the_network_is_absent(runner: Runner) -> None:
    labels = runner.labels("job-net")
    runner.running(labels)
    tree = runner.worktree("net")
    # The host's own bridge address (this machine): reachable from any container on a network.
    connect = f"import socket; socket.create_connection(('{bridge_gateway()}', 9), timeout=5)"
    reply = runner.exec(labels, tree, ["python3", "-c", connect])
    assert reply.exit_code != 0 and "Network is unreachable" in reply.output, reply
    assert runner.exec(labels, tree, ["ls", "/sys/class/net"]).output.split() == ["lo"]
    reply = runner.exec(labels, tree, ["touch", "/usr/evil"])
    assert reply.exit_code != 0 and "Read-only file system" in reply.output


def test_only_what_is_written_in_the_workspace_persists(runner: Runner) -> None:
    first, second = runner.labels("job-a"), runner.labels("job-b", role="fe")
    runner.running(first)
    runner.running(second)
    tree = runner.worktree("persist")
    write = "echo kept > /workspace/out.txt && echo gone > /tmp/scratch; echo x > /home/x; ls /tmp"
    reply = runner.exec(first, tree, ["sh", "-c", write])
    # stdout and stderr are two streams: their lines interleave in any order
    assert sorted(reply.output.splitlines()) == [
        "scratch",
        "sh: 1: cannot create /home/x: Read-only file system",
    ]
    assert (tree / "out.txt").read_text() == "kept\n"  # on the host, in the worktree
    assert runner.release(first).usage is not None
    reply = runner.exec(second, tree, ["sh", "-c", "ls -A /tmp; cat /workspace/out.txt"])
    assert reply.started_container and reply.output == "kept\n", reply  # the next container: no /tmp/scratch


def test_the_worktree_git_file_is_read_only_inside(runner: Runner) -> None:
    labels = runner.labels("job-git")
    runner.running(labels)
    tree = runner.worktree("gitwt", git=True)
    before = (tree / ".git").read_text()
    attack = "echo 'gitdir: /workspace/evil' > .git; rm -f .git; mv .git g"  # run in /workspace
    reply = runner.exec(labels, tree, ["sh", "-c", attack])
    assert reply.exit_code != 0 and (tree / ".git").read_text() == before, reply
    assert runner.exec(labels, tree, ["touch", "/workspace/new-file"]).exit_code == 0  # the rest is writable
    assert (tree / "new-file").exists()


def test_a_memory_hog_is_contained_and_reported(runner: Runner) -> None:
    labels = runner.labels("job-mem")
    runner.running(labels)
    tree = runner.worktree("mem")
    hog = f"x = bytearray({4 * MEMORY_MB} * 2**20)"
    reply = runner.exec(labels, tree, ["python3", "-c", hog])
    assert reply.exit_code == 137 and reply.limit == f"memory limit ({MEMORY_MB} MiB)", reply
    after = runner.exec(labels, tree, ["true"])  # the container (and the runner) carry on
    assert after.exit_code == 0 and after.limit is None and not after.started_container
    usage = runner.release(labels).usage
    assert usage is not None and usage.limits_hit == [f"memory limit ({MEMORY_MB} MiB)"]
    assert usage.commands == 2 and usage.containers == 1 and usage.cpu_s > 0 and usage.wall_s > 0
    # counted for /metrics by the runner itself (under its narrow Redis user), just after each reply
    counted(runner, {"sandbox_commands": "2", "sandbox_containers": "1", "sandbox_limit_hits:memory": "1"})
    # cgroup v1 here: the engine's max_usage (v2: memory.peak where the kernel has it)
    assert usage.peak_memory_bytes is not None and usage.peak_memory_bytes > MEMORY_MB * 2**20 // 2


BOMBS = {
    # dies out by itself: the shell exits 0, the refused forks only show in the counters
    "dies out": "b(){ b|b& }; b; sleep 1; echo survived",
    # keeps every pid it got, sleeping: the container cannot start anything until it is killed
    "holds every pid": "python3 -c '"
    + "import os, time\nwhile True:\n  try:\n    pid = os.fork()\n  except OSError:\n    break\n"
    + "  if pid == 0:\n    time.sleep(600)\n'",
}


@pytest.mark.parametrize("bomb", BOMBS, ids=list(BOMBS))
def test_a_fork_bomb_is_contained_and_reported(runner: Runner, bomb: str) -> None:
    labels = runner.labels("job-fork")
    runner.running(labels)
    tree = runner.worktree("fork")
    reply = runner.exec(labels, tree, ["sh", "-c", BOMBS[bomb]], timeout_s=60)
    assert reply.limit == f"pids limit ({PIDS})" and not reply.timed_out, reply
    ping = runner.reply(runner.send(PingRequest()))
    assert isinstance(ping, PingReply) and ping.error is None  # the runner is fine
    assert runner.release(labels).usage.limits_hit == [f"pids limit ({PIDS})"]  # type: ignore[union-attr]
    assert fleet_containers(runner.fleet, job="job-fork") == []


def test_output_is_capped_to_its_tail(runner: Runner) -> None:
    labels = runner.labels("job-out")
    runner.running(labels)
    reply = runner.exec(
        labels, runner.worktree("out"), ["python3", "-c", "print('x' * 300_000); print('END')"], cap=1000
    )
    assert reply.truncated and reply.exit_code == 0 and len(reply.output) == 1000
    assert reply.output.endswith("x\nEND\n")


def test_a_command_past_its_timeout_is_killed_with_its_container(runner: Runner) -> None:
    labels = runner.labels("job-slow")
    runner.running(labels)
    tree = runner.worktree("slow")
    first = runner.exec(labels, tree, ["sh", "-c", "echo started; sleep 120"], timeout_s=1.5)
    # killed at the deadline: well before the runner's last resort (cutting the stream 5 s later)
    assert first.timed_out and first.output == "started\n" and first.duration_s < 1.5 + 3, first
    assert not [c for c in fleet_containers(runner.fleet) if c["Names"] == first.container]
    second = runner.exec(labels, tree, ["true"])
    assert second.exit_code == 0 and second.started_container and second.container != first.container
    counted(runner, {"sandbox_commands": "2", "sandbox_containers": "2", "sandbox_limit_hits:time": "1"})


def counted(runner: Runner, expected: dict[str, str]) -> None:
    key = runner.settings().keys.metric_counters()
    wait_until(
        lambda: runner.admin.hgetall(key) == expected,
        message=f"the runner's metric counts {expected}",
        diagnose=lambda: f"{runner.admin.hgetall(key)}\n{runner.logs()}",
    )


def test_requests_the_runner_refuses_are_answered_and_it_carries_on(runner: Runner, tmp_path: Path) -> None:
    labels = runner.labels("job-bad")
    runner.running(labels)
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    (runner.root / "data").mkdir(exist_ok=True)
    link = runner.root / "data" / "link"
    link.symlink_to(outside)
    for worktree in (outside, link, runner.root / "data" / "missing"):
        reply = runner.exec(labels, worktree, ["true"])
        assert reply.error is not None and reply.error.startswith("refused:"), (worktree, reply)
    runner.send("not json at all")
    bad = runner.exec_request(labels, runner.worktree("bad"), ["true"]).model_dump(mode="json")
    bad["spec"]["user"] = "0:0"  # root: refused by the protocol
    runner.send(__import__("json").dumps(bad))
    reply = runner.reply(bad["request_id"])
    assert isinstance(reply, ExecReply) and reply.error and "malformed" in reply.error
    assert fleet_containers(runner.fleet) == []
    assert runner.exec(labels, runner.worktree("good"), ["true"]).exit_code == 0


def test_a_request_sent_twice_runs_its_command_once(runner: Runner) -> None:
    """redis-py may resend an LPUSH after a dropped connection (the first one did arrive): the same
    request, id and all, twice in the list. Its command must not run twice (a second `git commit`,
    a second append to a file)."""
    labels = runner.labels("job-twice")
    runner.running(labels)
    tree = runner.worktree("twice")
    request = runner.exec_request(labels, tree, ["sh", "-c", "echo ran >> /workspace/log"])
    reply_key = runner.settings().keys.sandbox_reply(request.request_id)

    runner.send(request.model_dump_json())
    runner.send(request.model_dump_json())

    reply = runner.reply(request.request_id)
    assert isinstance(reply, ExecReply) and reply.exit_code == 0, reply
    # the repeat is dropped with a log line, or (the bug) served with a second reply
    wait_until(
        lambda: "sandbox request dropped: a repeat" in runner.logs() or runner.admin.llen(reply_key) > 0,
        message="the repeat dropped or served",
        diagnose=runner.logs,
    )
    assert (tree / "log").read_text() == "ran\n"
    assert runner.admin.llen(reply_key) == 0


def test_sigterm_removes_the_runner_s_containers(runner: Runner) -> None:
    idle, busy = runner.labels("job-idle"), runner.labels("job-busy", story="S-2")
    runner.running(idle)
    assert runner.exec(idle, runner.worktree("idle"), ["true"]).exit_code == 0  # a warm container
    (request,) = start_sleepers(runner, [busy])  # and one running a command
    assert runner.stop(signal.SIGTERM) == 0
    assert fleet_containers(runner.fleet) == []
    reply = runner.reply(request)
    assert isinstance(reply, ExecReply) and reply.error == "the sandbox runner is stopping", reply
    assert not runner.admin.exists(runner.settings().keys.sandbox_runner())


def test_the_runner_refuses_to_start_without_its_image(acl_redis: EmbeddedRedis, tmp_path: Path) -> None:
    harness = Runner(acl_redis, tmp_path, "wave-no-such-sandbox:latest")
    proc = subprocess.run(
        [sys.executable, "-m", "wavefleet.cli", "sandbox"],
        env=env_of(harness.settings()),
        capture_output=True,
        text=True,
        timeout=60,
        cwd=REPO,
        check=False,
    )
    assert proc.returncode == ExitCode.CONFIG
    assert proc.stderr.strip().splitlines() == [
        "wave: error: sandbox: the sandbox image wave-no-such-sandbox:latest is missing: run "
        "`make sandbox-image` (or set WAVE_SANDBOX_CONTAINER__IMAGE)"
    ]


def test_the_sandbox_acl_user_is_the_one_the_runner_logs_in_as(runner: Runner) -> None:
    clients = runner.admin.execute_command("CLIENT", "LIST")
    users = {entry.split("user=")[1].split()[0] for entry in clients.splitlines() if "user=" in entry}
    assert acl.SANDBOX in users
    wait_until(lambda: runner.process is not None and runner.process.poll() is None, message="runner alive")


def test_with_a_data_volume_the_worktree_is_bound_from_the_volume(
    acl_redis: EmbeddedRedis, sandbox_image: str, tmp_path: Path
) -> None:
    """Compose: workers see their data volume at data_mount; the runner checks the worktree there
    and binds the same folder inside the volume (its Mountpoint on the engine's host)."""
    volume = f"wavetest-sbx-{tmp_path.name[-20:].lower()}-{os.getpid()}"
    run("docker", "volume", "create", volume)
    mountpoint = Path(json.loads(run("docker", "volume", "inspect", volume).stdout)[0]["Mountpoint"])
    # The runner sees the volume itself at data_mount (compose mounts it there), here at its own path:
    # the bind's source is checked to be the very folder the runner checked (binds.py).
    harness = Runner(
        acl_redis, tmp_path, sandbox_image, overrides={"data_volume": volume, "data_mount": mountpoint}
    )
    try:
        tree = mountpoint / "repos" / "auth" / "worktrees" / "vol"
        tree.mkdir(parents=True)
        (tree / "marker").write_text("from the volume\n")
        tree.chmod(0o777)
        harness.start()
        labels = harness.labels("job-vol")
        harness.running(labels)
        reply = harness.exec(labels, tree, ["cat", "/workspace/marker"])
        assert reply.output == "from the volume\n", reply
    finally:
        harness.close()
        run("docker", "volume", "rm", "--force", volume, check=False)


def test_wave_up_runs_the_sandbox_runner_when_the_setting_says_container(
    sandbox_image: str, tmp_path: Path, domains_dir: Path
) -> None:
    port = free_port()
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("WAVE_")},
        "WAVE_DATA_DIR": str(tmp_path / "data"),
        "WAVE_DOMAINS_DIR": str(domains_dir),
        "WAVE_EMBEDDED_REDIS__PORT": str(port),
        "WAVE_SANDBOX": "container",
        "WAVE_SANDBOX_CONTAINER__IMAGE": sandbox_image,
    }
    up = subprocess.Popen(
        [sys.executable, "-m", "wavefleet.cli", "up", "--no-view"],
        env=env, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True,
    )  # fmt: skip
    try:
        passwords = tmp_path / "data" / "redis" / "passwords.json"
        wait_until(passwords.exists, timeout_s=60, message="the embedded Redis up")
        admin = Redis(
            host="127.0.0.1",
            port=port,
            username=acl.ADMIN,
            password=json.loads(passwords.read_text())[acl.ADMIN],
            decode_responses=True,
        )
        beat = wait_until(
            lambda: admin.get("wave:sandbox:runner"), timeout_s=90, message="the runner's heartbeat"
        )
        assert json.loads(beat)["image"] == sandbox_image
        request = PingRequest()
        admin.lpush("wave:sandbox:requests", request.model_dump_json())
        popped = admin.blpop([f"wave:sandbox:reply:{request.request_id}"], timeout=60)
        assert popped is not None and PingReply.model_validate_json(popped[1]).error is None
        assert admin.execute_command("ACL", "LOG") == []
    finally:
        up.send_signal(signal.SIGTERM)
        up.wait(timeout=90)
        assert up.stderr is not None
        up.stderr.close()
