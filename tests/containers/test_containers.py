"""The fleet in Docker: `make up DOMAIN=auth` on a real engine runs a locked-down, domain-labelled
team that takes a story to done, logs JSON, and obeys the EMERGENCY-STOP file in its halt folder."""

from __future__ import annotations

import json
import shutil
import socket
from pathlib import Path

import pytest
from docker_fleet import REPO, TEAM, Fleet, clean_env, compose_command, run, wait_for
from redis import Redis

from wavefleet.halt import read_halt
from wavefleet.lifecycle import Role, StoryState

pytestmark = [pytest.mark.docker, pytest.mark.slow, pytest.mark.timeout(1500)]
WAVE_SERVICES = ("supervisor", "watcher", *(f"auth-{member}" for member in TEAM))


def inspect(fleet: Fleet) -> dict[str, dict]:
    return {c["Name"].lstrip("/"): c for c in fleet.containers()}


def test_make_up_runs_one_container_per_role_named_and_labelled_by_domain(auth_fleet: Fleet) -> None:
    containers = inspect(auth_fleet)

    assert set(containers) == {auth_fleet.name(s) for s in ("redis", *WAVE_SERVICES)}
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


@pytest.mark.parametrize("service", ["redis", *WAVE_SERVICES])
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
    assert not any("docker.sock" in f"{m.get('Source')}{m['Destination']}" for m in container["Mounts"])
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
    redis = Redis(port=auth_fleet.redis_port, password=auth_fleet.password, decode_responses=True)
    config = {key: redis.config_get(key)[key] for key in ("appendonly", "appendfsync", "maxmemory-policy")}
    assert config == {"appendonly": "yes", "appendfsync": "everysec", "maxmemory-policy": "noeviction"}
    # the password went into a 0600 file on tmpfs: not into redis-server's command line or environment
    for leak in ("/proc/1/cmdline", "/proc/1/environ"):
        assert auth_fleet.password not in auth_fleet.exec("redis", "cat", leak).stdout


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
    assert auth_fleet.wave("resume", check=False).returncode == 75  # the file still exists

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


def test_make_up_and_compose_refuse_to_start_without_a_redis_password(
    docker_engine: None, tmp_path: Path
) -> None:
    # a copy of what `make up` reads, so that a developer's own compose/.env cannot supply one
    shutil.copy(REPO / "Makefile", tmp_path)
    shutil.copy(REPO / "pyproject.toml", tmp_path)
    shutil.copytree(REPO / "compose", tmp_path / "compose", ignore=shutil.ignore_patterns(".env"))
    files = ["-f", tmp_path / "compose/base.yml", "-f", tmp_path / "compose/auth.yml"]

    make = run("make", "-C", tmp_path, "up", "DOMAIN=auth", env=clean_env(), check=False)
    compose = run(*compose_command(), *files, "config", env=clean_env(), check=False)

    assert make.returncode != 0 and "set WAVE_REDIS__PASSWORD" in make.stderr
    assert compose.returncode != 0 and "set WAVE_REDIS__PASSWORD" in compose.stdout + compose.stderr


def test_make_up_all_runs_every_domain_team_beside_the_shared_services(docker_engine: None) -> None:
    files = [
        arg
        for path in sorted((REPO / "compose").glob("*.yml"))
        if path.stem != "common"
        for arg in ("-f", str(path))
    ]
    env = clean_env(WAVE_REDIS__PASSWORD="only-for-config", COMPOSE_PROFILES="dozzle")

    services = run(*compose_command(), *files, "config", "--services", env=env).stdout.split()

    teams = [f"{d}-{m}" for d in ("auth", "payments") for m in TEAM]
    assert sorted(services) == sorted(["redis", "supervisor", "watcher", "dozzle", *teams])
