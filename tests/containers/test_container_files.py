"""The container files themselves, no Docker engine needed: every shipped domain has a compose file
with the team its domain.toml declares, every WAVE container is locked down, the sandbox runner
reaches Docker only through its own proxy, no worker keeps a seccomp profile for bubblewrap, Redis's
start script never runs without a password and never puts it on a command line, and `make up` adds a
Redis user's missing password to an existing compose/.env without touching the rest."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml
from docker_fleet import REPO

from wavefleet import acl
from wavefleet.domains import load_domains
from wavefleet.lifecycle import Role

COMPOSE = REPO / "compose"
DOMAINS = load_domains(REPO / "domains")


def compose_file(name: str) -> dict[str, Any]:
    return dict(yaml.safe_load((COMPOSE / f"{name}.yml").read_text()))


@pytest.mark.parametrize("domain", DOMAINS.names())
def test_each_shipped_domain_has_a_compose_file_running_exactly_its_team(domain: str) -> None:
    team = DOMAINS.get(domain).team
    expected = {f"{domain}-{role.value}-{i}" for role in Role for i in range(1, team.size(role) + 1)}

    assert (COMPOSE / f"{domain}.yml").exists(), (
        f"domain {domain} has no compose/{domain}.yml (copy auth.yml)"
    )
    services = compose_file(domain)["services"]

    assert set(services) == expected
    for name, service in services.items():
        _, role, index = name.split("-")
        # every role alike: the commands a stage runs go to the sandbox service, none runs here
        assert service["extends"] == {"file": "common.yml", "service": "worker"}
        assert service["container_name"] == f"${{COMPOSE_PROJECT_NAME:-wave}}-{name}"
        assert service["command"] == ["worker", "--domain", domain, "--role", role, "--index", index]
        assert service["labels"]["dev.dozzle.group"] == domain
        assert service["depends_on"] == {
            "redis": {"condition": "service_healthy"},
            "sandbox": {"condition": "service_started"},
        }


def test_the_template_every_wave_container_extends_is_locked_down_and_holds_no_secret() -> None:
    hardened = compose_file("common")["services"]["hardened"]

    assert hardened["read_only"] is True
    assert hardened["cap_drop"] == ["ALL"]
    assert hardened["security_opt"] == ["no-new-privileges:true"]
    assert not hardened["user"].startswith("0")
    assert any(t.startswith("/tmp") for t in hardened["tmpfs"])
    assert hardened["environment"]["WAVE_LOG_FORMAT"] == "json"
    assert hardened["environment"]["WAVE_SANDBOX"] == "container"
    assert not [name for name in hardened["environment"] if "PASSWORD" in name or "API_KEY" in name]
    assert "volumes" not in hardened  # the runner gets /data read-only, and no /halt


def template_environment(name: str) -> dict[str, Any]:
    """A common.yml template's environment with what it inherits (`extends` within the file)."""
    template = compose_file("common")["services"][name]
    inherited = template_environment(template["extends"]["service"]) if "extends" in template else {}
    return {**inherited, **template.get("environment", {})}


def services_of_every_file() -> dict[str, dict[str, Any]]:
    return {
        name: service
        for path in sorted(COMPOSE.glob("*.yml"))
        if path.stem != "common"
        for name, service in compose_file(path.stem)["services"].items()
    }


def test_only_the_two_docker_api_proxies_see_the_docker_socket() -> None:
    mounts = {
        name: volume
        for name, service in services_of_every_file().items()
        for volume in service.get("volumes", [])
        if "docker.sock" in volume
    }
    base = compose_file("base")["services"]

    assert mounts == {
        "docker-proxy": "/var/run/docker.sock:/var/run/docker.sock:ro",
        "sandbox-proxy": "/var/run/docker.sock:/var/run/docker.sock:ro",
    }
    assert base["docker-proxy"]["command"][:3] == ["docker-proxy", "--profile", "read-only"]
    assert base["sandbox-proxy"]["command"][:3] == ["docker-proxy", "--profile", "sandbox"]
    assert "profiles" not in base["sandbox-proxy"]  # always on, unlike Dozzle's


def test_the_sandbox_runner_reaches_docker_only_through_its_proxy_on_a_network_of_their_own() -> None:
    base = compose_file("base")
    runner, proxy = base["services"]["sandbox"], base["services"]["sandbox-proxy"]
    env = {**template_environment("hardened"), **runner["environment"]}
    on_the_network = {
        n for n, s in services_of_every_file().items() if "sandbox-api" in s.get("networks", [])
    }

    assert base["networks"]["sandbox-api"] == {"internal": True}
    assert on_the_network == {"sandbox", "sandbox-proxy"}
    assert proxy["networks"] == ["sandbox-api"] and proxy["user"] == "10001:10001"
    assert runner["extends"] == {"file": "common.yml", "service": "hardened"}
    assert runner["command"] == ["sandbox"] and runner["volumes"] == ["data:/data:ro"]
    assert "data:/data:ro" in proxy["volumes"] and proxy["command"][-2:] == ["--volume-seen-at", "/data"]
    assert env["WAVE_SANDBOX_CONTAINER__DOCKER_HOST"] == "tcp://sandbox-proxy:2375"
    # the volume the runner maps worktrees into is the one the workers mount at /data
    assert env["WAVE_SANDBOX_CONTAINER__DATA_VOLUME"] == base["volumes"]["data"]["name"]
    assert env["WAVE_SANDBOX_CONTAINER__DATA_MOUNT"] == "/data"
    assert "data:/data" in compose_file("common")["services"]["wave"]["volumes"]
    # containers and execs only as the workers' user, the owner of every worktree they make (the
    # image's /data is theirs, the volume copies it): what the runner derives (protocol.owner_user)
    workers = compose_file("common")["services"]["hardened"]["user"]
    assert workers == "10001:10001"
    assert proxy["command"][proxy["command"].index("--user") + 1] == workers
    assert env["WAVE_REDIS__USERNAME"] == "sandbox"
    assert env["WAVE_REDIS__PASSWORD"].startswith("${REDIS_SANDBOX_PASSWORD:?")
    assert not [name for name in env if "API_KEY" in name]


def test_no_container_keeps_a_seccomp_profile_for_bubblewrap() -> None:
    options = [o for s in services_of_every_file().values() for o in s.get("security_opt", [])]

    assert not [o for o in options if "seccomp" in o]
    assert not (REPO / "docker/seccomp-bwrap.json").exists()
    assert "sandboxed" not in compose_file("common")["services"]


def test_dozzle_is_pinned_non_root_and_asks_for_a_login() -> None:
    dozzle = compose_file("base")["services"]["dozzle"]

    assert dozzle["image"].startswith("${DOZZLE_IMAGE:-amir20/dozzle:v8.")
    assert "latest" not in dozzle["image"]
    assert dozzle["user"] == "65534:65534"
    assert dozzle["environment"]["DOZZLE_AUTH_PROVIDER"] == "simple"
    assert dozzle["ports"] == ["127.0.0.1:${DOZZLE_PORT:-8080}:8080"]


@pytest.mark.parametrize("service", ["supervisor", "watcher", "sandbox", "notifier"])
def test_the_supervisor_the_watcher_and_the_runner_get_their_own_redis_user_and_no_model_key(
    service: str,
) -> None:
    spec = compose_file("base")["services"][service]
    env = {**template_environment(spec["extends"]["service"]), **spec["environment"]}

    assert env["WAVE_REDIS__USERNAME"] == service
    assert env["WAVE_REDIS__PASSWORD"].startswith(f"${{REDIS_{service.upper()}_PASSWORD:?")
    # no model key; the supervisor alone of them traces (it posts the stories' LangSmith runs)
    keys = {name for name in env if "API_KEY" in name}
    assert keys == ({"WAVE_LANGSMITH__API_KEY"} if service == "supervisor" else set()), service


def test_redis_conf_keeps_an_append_only_file_never_evicts_and_holds_no_password() -> None:
    lines = [line.split(None, 1) for line in (REPO / "docker/redis.conf").read_text().splitlines()]
    config = {line[0]: line[1].strip() for line in lines if line and not line[0].startswith("#")}

    assert config["appendonly"] == "yes"
    assert config["appendfsync"] == "everysec"
    assert config["maxmemory-policy"] == "noeviction"
    assert "requirepass" not in config


ROLE_PASSWORDS = {f"REDIS_{user.upper()}_PASSWORD": f"{user}-pw-\\'\"$x`" for user in acl.USERS}


def start_redis(tmp_path: Path, **env: str) -> subprocess.CompletedProcess[str]:
    """docker/redis-start.sh with a stand-in redis-server that prints what it was given."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    fake = bin_dir / "redis-server"
    fake.write_text('#!/bin/sh\necho "argv: $*"\ncat "$1"\necho "env: $(env | grep -c _PASSWORD)"\n')
    fake.chmod(0o755)
    return subprocess.run(
        ["sh", str(REPO / "docker/redis-start.sh")],
        env={
            "PATH": f"{bin_dir}:{os.environ['PATH']}",
            "REDIS_RUN_DIR": str(tmp_path),
            "REDIS_CONF_DIR": str(REPO / "docker"),
            **env,
        },
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )


def test_redis_start_refuses_to_run_without_every_role_password(tmp_path: Path) -> None:
    result = start_redis(tmp_path, **{k: v for k, v in ROLE_PASSWORDS.items() if "WATCHER" not in k})

    assert result.returncode == 78
    assert "set REDIS_WATCHER_PASSWORD" in result.stderr


def test_redis_start_refuses_a_password_that_is_not_one_printable_token(tmp_path: Path) -> None:
    result = start_redis(tmp_path, **{**ROLE_PASSWORDS, "REDIS_WORKER_PASSWORD": "two words here"})

    assert result.returncode == 78
    assert "REDIS_WORKER_PASSWORD must be printable ASCII without spaces" in result.stderr


def test_redis_start_gives_redis_the_passwords_only_as_hashes_in_a_private_file(tmp_path: Path) -> None:
    result = start_redis(tmp_path, **ROLE_PASSWORDS, REDIS_APPENDFSYNC="always")

    assert result.returncode == 0, result.stderr
    assert "env: 0" in result.stdout  # redis-server's environment
    assert "appendfsync always" in result.stdout
    users = (tmp_path / "users.acl").read_text()
    for variable, password in ROLE_PASSWORDS.items():
        assert password not in result.stdout and password not in users
        user = variable.removeprefix("REDIS_").removesuffix("_PASSWORD").lower()
        assert f"user {user} on #{acl.sha256_hex(password)} " in users
    assert f"aclfile {tmp_path / 'users.acl'}" in result.stdout
    assert all(f.stat().st_mode & 0o077 == 0 for f in (tmp_path / "redis.conf", tmp_path / "users.acl"))


def test_redis_start_refuses_an_unknown_fsync_policy(tmp_path: Path) -> None:
    result = start_redis(tmp_path, **ROLE_PASSWORDS, REDIS_APPENDFSYNC="sometimes")

    assert result.returncode == 78
    assert "everysec or always" in result.stderr


def make_env_file(path: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["sh", str(REPO / "docker/compose-secrets.sh"), "env", str(path)],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )


def test_make_up_adds_a_missing_users_password_to_an_existing_env_file_and_keeps_the_rest(
    tmp_path: Path,
) -> None:
    # Given a compose/.env made before the sandbox user existed, edited by hand (no final newline)
    env_file = tmp_path / "env"
    made = make_env_file(env_file)
    assert made.returncode == 0, made.stderr
    kept = [line for line in env_file.read_text().splitlines() if "SANDBOX" not in line]
    env_file.write_text("\n".join([*kept, "REDIS_IMAGE=wave-redis:local"]))

    added = make_env_file(env_file)

    lines = env_file.read_text().splitlines()
    assert added.returncode == 0, added.stderr
    assert lines[: len(kept) + 1] == [*kept, "REDIS_IMAGE=wave-redis:local"]
    new = [
        line.split("=", 1)[1] for line in lines[len(kept) + 1 :] if line.startswith("REDIS_SANDBOX_PASSWORD=")
    ]
    assert len(lines) == len(kept) + 2 and len(new) == 1 and len(new[0]) >= 32
    assert "added REDIS_SANDBOX_PASSWORD" in added.stderr
    assert make_env_file(env_file).stderr == ""  # complete: nothing more to add, nothing said
    assert env_file.read_text().splitlines() == lines


def test_the_slack_notifier_is_opt_in_and_holds_no_model_key_nor_data() -> None:
    notifier = compose_file("base")["services"]["notifier"]

    assert notifier["profiles"] == ["slack"]  # it refuses to start without a token or webhook
    assert notifier["command"] == ["notifier"]
    assert notifier["extends"] == {"file": "common.yml", "service": "hardened"}
    assert "volumes" not in notifier
    assert not [name for name in notifier["environment"] if "API_KEY" in name]
    assert {"WAVE_SLACK__BOT_TOKEN", "WAVE_SLACK__WEBHOOK_URL"} <= set(notifier["environment"])
