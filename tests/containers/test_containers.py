"""The fleet in Docker: `make up DOMAIN=auth` on a real engine runs a locked-down, domain-labelled
team that takes a story to done, its QA's tests in a hardened stage container of their own that is
gone afterwards, logs JSON, and obeys the EMERGENCY-STOP file in its halt folder."""

from __future__ import annotations

import json
import socket
from pathlib import Path
from typing import Any

import pytest
from docker_fleet import REPO, TEAM, Fleet, clean_env, compose_command, run, wait_for
from redis import Redis

from wavefleet import acl
from wavefleet.halt import read_halt
from wavefleet.lifecycle import Role, StoryState

pytestmark = [pytest.mark.docker, pytest.mark.slow, pytest.mark.timeout(1500)]
WAVE_SERVICES = ("supervisor", "watcher", "monitor", "sandbox", *(f"auth-{member}" for member in TEAM))
ROLES = acl.USERS  # every Redis user compose gives a password


def inspect(fleet: Fleet) -> dict[str, dict]:
    return {c["Name"].lstrip("/"): c for c in fleet.containers()}


def test_make_up_runs_one_container_per_role_named_and_labelled_by_domain(auth_fleet: Fleet) -> None:
    containers = inspect(auth_fleet)

    assert set(containers) == {auth_fleet.name(s) for s in ("redis", "sandbox-proxy", *WAVE_SERVICES)}
    for member in TEAM:
        labels = containers[auth_fleet.name(f"auth-{member}")]["Config"]["Labels"]
        assert labels["dev.dozzle.group"] == "auth"
        assert labels["dev.wave.role"] == member.split("-")[0]
        assert containers[auth_fleet.name(f"auth-{member}")]["Config"]["Cmd"][:5] == [
            "worker",
            "--domain",
            "auth",
            "--role",
            member.split("-")[0],
        ]
    assert all(c["State"]["Running"] for c in containers.values())


@pytest.mark.parametrize("service", ["redis", "sandbox-proxy", *WAVE_SERVICES])
def test_every_container_is_non_root_read_only_without_capabilities_or_docker_socket(
    auth_fleet: Fleet, service: str
) -> None:
    container = inspect(auth_fleet)[auth_fleet.name(service)]
    host = container["HostConfig"]

    assert container["Config"]["User"] not in ("", "0", "root", "0:0")
    assert host["ReadonlyRootfs"] is True
    assert host["CapDrop"] == ["ALL"] and not host["CapAdd"]
    assert "no-new-privileges:true" in host["SecurityOpt"]
    assert "/tmp" in host["Tmpfs"]
    assert not host["Privileged"]
    socket = any("docker.sock" in f"{m.get('Source')}{m['Destination']}" for m in container["Mounts"])
    assert socket is (service == "sandbox-proxy")  # the sandbox runner's proxy, alone
    # and the kernel agrees: not root, and the root filesystem refuses a write
    assert auth_fleet.exec(service, "id", "-u").stdout.strip() != "0"
    assert "Read-only file system" in auth_fleet.exec(service, "touch", "/probe", check=False).stderr
    auth_fleet.exec(service, "touch", "/tmp/probe")  # tmpfs


def test_redis_is_published_on_loopback_only_with_a_password_aof_and_no_eviction(auth_fleet: Fleet) -> None:
    ports = inspect(auth_fleet)[auth_fleet.name("redis")]["HostConfig"]["PortBindings"]
    assert [b["HostIp"] for b in ports["6379/tcp"]] == ["127.0.0.1"]

    with socket.create_connection(("127.0.0.1", auth_fleet.redis_port), timeout=5) as conn:
        conn.sendall(b"PING\r\n")
        assert conn.recv(100).startswith(b"-NOAUTH")  # no password, no service
    admin = auth_fleet.password("admin")
    redis = Redis(port=auth_fleet.redis_port, username="admin", password=admin, decode_responses=True)
    config = {key: redis.config_get(key)[key] for key in ("appendonly", "appendfsync", "maxmemory-policy")}
    assert config == {"appendonly": "yes", "appendfsync": "everysec", "maxmemory-policy": "noeviction"}
    # the passwords went into a 0600 file on tmpfs: not into redis-server's command line or environment
    for leak in ("/proc/1/cmdline", "/proc/1/environ"):
        seen = auth_fleet.exec("redis", "cat", leak).stdout
        assert not [r for r in ROLES if auth_fleet.password(r) in seen], leak


def test_a_story_enqueued_inside_a_container_goes_through_the_team_to_done(auth_fleet: Fleet) -> None:
    auth_fleet.wave(
        "enqueue",
        "AUTH-101",
        "--title",
        "Lock an account after five failed logins",
        "-c",
        "five failed logins lock the account",
    )
    store = auth_fleet.store()

    record = wait_for(
        lambda: (r := store.get("AUTH-101")).state in (StoryState.DONE, StoryState.FAILED) and r,
        timeout_s=180,
        what="AUTH-101 to finish",
        diagnose=auth_fleet.diagnose,
    )

    assert record.state is StoryState.DONE, auth_fleet.wave("status", "AUTH-101").stdout
    status = auth_fleet.wave("status", "AUTH-101").stdout
    for role in ("PM", "FE", "BE", "QA", "CTO"):
        assert f"AUTH-{role}-" in status  # every stage ran in a container of the auth team


def stage_container(story: str, role: str) -> dict[str, Any] | None:
    """The running sandbox container of a story's stage (the runner's labels), inspected."""
    labels = ("--filter", f"label=dev.wave.story={story}", "--filter", f"label=dev.wave.role={role}")
    ids = run("docker", "ps", "-q", *labels).stdout.split()
    return dict(json.loads(run("docker", "inspect", ids[0]).stdout)[0]) if ids else None


def test_qa_runs_the_storys_tests_in_a_hardened_container_of_its_own_gone_once_done(
    auth_fleet: Fleet,
) -> None:
    # QA's stage is kept 20 s longer (after its tests) so that its container can be seen running
    story = "AUTH-103"
    auth_fleet.wave("enqueue", story, "--title", "Tests in a stage container", "-l", "offline:slow=qa:20")
    store, settings = auth_fleet.store(), auth_fleet.settings()

    container = wait_for(
        lambda: stage_container(story, "qa"),
        timeout_s=180,
        interval_s=0.5,
        what=f"{story}'s QA stage container",
        diagnose=auth_fleet.diagnose,
    )

    assert container is not None  # (wait_for returns only a true value)
    host, config = container["HostConfig"], container["Config"]
    workspace = [m for m in container["Mounts"] if m["Destination"] == "/workspace"]
    volume = run("docker", "volume", "inspect", "--format", "{{.Mountpoint}}", f"{auth_fleet.project}_data")
    assert config["Image"] == auth_fleet.sandbox_image
    assert config["User"] == "10001:10001"  # the compose workers' uid, never root
    assert host["ReadonlyRootfs"] is True and host["NetworkMode"] == "none"
    assert host["CapDrop"] == ["ALL"] and not host["CapAdd"] and not host["Privileged"]
    assert [o for o in host["SecurityOpt"] if o.startswith("no-new-privileges")]
    assert host["Memory"] > 0 and host["MemorySwap"] == host["Memory"]
    assert host["PidsLimit"] > 0 and host["NanoCpus"] > 0
    assert not host["Binds"] and not host["Devices"] and "/tmp" in host["Tmpfs"]
    assert workspace and workspace[0]["Type"] == "bind" and workspace[0]["RW"] is True
    assert workspace[0]["Source"].startswith(volume.stdout.strip() + "/")  # the story's worktree
    labels = config["Labels"]
    assert labels["dev.wave.sandbox"] == store.redis.get(settings.keys.fleet_id())
    assert (labels["dev.wave.domain"], labels["dev.wave.role"]) == ("auth", "qa")
    # and the kernel agrees: QA's worktree is there, the user is not root, / refuses a write
    seen = run(
        "docker", "exec", container["Id"], "sh", "-c", "id -u; ls /workspace; touch /probe", check=False
    )
    assert seen.stdout.split()[0] == "10001" and "tests" in seen.stdout.split()
    assert "Read-only file system" in seen.stderr

    record = wait_for(
        lambda: store.get(story) if store.get(story).state in (StoryState.DONE, StoryState.FAILED) else None,
        timeout_s=180,
        what=f"{story} to finish",
        diagnose=auth_fleet.diagnose,
    )
    assert record is not None and record.state is StoryState.DONE, auth_fleet.wave("status", story).stdout
    # the stage released its container as it ended, before the CTO's review: none is left
    story_label = ("--filter", f"label=dev.wave.story={story}")
    assert not run("docker", "ps", "-aq", *story_label).stdout.split()


def test_workers_write_json_log_lines_carrying_their_identity(auth_fleet: Fleet) -> None:
    lines = [line for line in auth_fleet.logs("auth-pm-1").splitlines() if line.startswith("{")]

    assert lines, auth_fleet.logs("auth-pm-1")
    events = [json.loads(line) for line in lines]
    assert {e["worker"] for e in events} == {"AUTH-PM-1"}
    assert all({"level", "event", "timestamp"} <= set(e) for e in events)


def test_the_emergency_stop_file_halts_every_worker_container_and_removing_it_resumes(
    auth_fleet: Fleet,
) -> None:
    store, settings = auth_fleet.store(), auth_fleet.settings()
    auth_fleet.wave("enqueue", "AUTH-102", "--title", "Slow backend", "-l", "offline:slow=be:6")
    wait_for(
        lambda: any(
            json.loads(v)["worker"].startswith("auth-be-")
            for v in store.redis.hgetall(settings.keys.running()).values()
        ),
        timeout_s=60,
        what="AUTH-102's BE stage to run",
        diagnose=auth_fleet.diagnose,
    )

    halt_file = auth_fleet.halt_dir / "EMERGENCY-STOP"
    halt_file.write_text("container drill\n")
    banner = wait_for(
        lambda: "7/7 live workers acked" in (out := auth_fleet.wave("status").stdout) and out,
        timeout_s=30,
        what="every worker to acknowledge the halt",
        diagnose=auth_fleet.diagnose,
    )
    assert "FLEET HALTED" in banner and "container drill" in banner
    wait_for(  # the supervisor marks stories halted just after the workers stopped their stages
        lambda: store.get("AUTH-102").state is StoryState.HALTED,
        timeout_s=30,
        what="AUTH-102 to be marked halted",
        diagnose=auth_fleet.diagnose,
    )
    for member in TEAM:
        assert '"EMERGENCY STOP"' in auth_fleet.logs(f"auth-{member}"), member
    refused = auth_fleet.wave("resume", check=False)
    assert refused.returncode == 75  # the file still exists, and the host's path of it is named
    assert f"halted by {halt_file} (the watcher's halt folder)" in refused.stderr

    halt_file.unlink()
    wait_for(lambda: read_halt(store.redis, settings.keys) is None, timeout_s=30, what="the resume")
    record = wait_for(
        lambda: (r := store.get("AUTH-102")).state is StoryState.DONE and r,
        timeout_s=120,
        what="AUTH-102 to finish after the resume",
        diagnose=auth_fleet.diagnose,
    )
    assert record.attempts[Role.BE] == 1  # the halt burned no retry


def test_every_wave_container_turns_healthy(auth_fleet: Fleet) -> None:
    def health() -> dict[str, str]:
        return {name: c["State"]["Health"]["Status"] for name, c in inspect(auth_fleet).items()}

    wait_for(
        lambda: set(health().values()) == {"healthy"},
        timeout_s=120,
        interval_s=2,
        what="every container's healthcheck to pass",
        diagnose=lambda: json.dumps(health()),
    )


def test_compose_refuses_to_start_without_the_redis_passwords(docker_engine: None, tmp_path: Path) -> None:
    # compose itself, without compose/.env (a developer's own must not supply them): one line naming it
    files = ["-f", REPO / "compose/base.yml", "-f", REPO / "compose/auth.yml"]
    empty = tmp_path / "env"
    empty.write_text("")

    compose = run(*compose_command(), "--env-file", empty, *files, "config", env=clean_env(), check=False)

    assert compose.returncode != 0
    assert "set REDIS_ADMIN_PASSWORD in compose/.env" in compose.stdout + compose.stderr


def test_make_up_all_runs_every_domain_team_beside_the_shared_services(docker_engine: None) -> None:
    files = [
        arg
        for path in sorted((REPO / "compose").glob("*.yml"))
        if path.stem != "common"
        for arg in ("-f", str(path))
    ]
    secrets = {f"REDIS_{role.upper()}_PASSWORD": "only-for-config" for role in ROLES}
    env = clean_env(**secrets, COMPOSE_PROFILES="dozzle")

    services = run(*compose_command(), *files, "config", "--services", env=env).stdout.split()

    teams = [f"{d}-{m}" for d in ("auth", "payments") for m in TEAM]
    shared = [
        "redis",
        "supervisor",
        "watcher",
        "monitor",
        "sandbox",
        "sandbox-proxy",
        "docker-proxy",
        "dozzle",
        "notifier",  # profile slack: `config --services` lists every profile's services
    ]
    assert sorted(services) == sorted([*shared, *teams])
