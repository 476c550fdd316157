"""The container files themselves, no Docker engine needed: every shipped domain has a compose file
with the team its domain.toml declares, every WAVE container is locked down, Redis's start script
never runs without a password and never puts it on a command line."""

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
        template = "sandboxed" if role in ("fe", "be", "qa") else "worker"  # who runs commands
        assert service["extends"] == {"file": "common.yml", "service": template}
        assert service["container_name"] == f"${{COMPOSE_PROJECT_NAME:-wave}}-{name}"
        assert service["command"] == ["worker", "--domain", domain, "--role", role, "--index", index]
        assert service["labels"]["dev.dozzle.group"] == domain
        assert service["depends_on"] == {"redis": {"condition": "service_healthy"}}


def test_the_template_every_wave_container_extends_is_locked_down_and_holds_no_secret() -> None:
    wave = compose_file("common")["services"]["wave"]

    assert wave["read_only"] is True
    assert wave["cap_drop"] == ["ALL"]
    assert wave["security_opt"] == ["no-new-privileges:true"]
    assert not wave["user"].startswith("0")
    assert any(t.startswith("/tmp") for t in wave["tmpfs"])
    assert wave["environment"]["WAVE_LOG_FORMAT"] == "json"
    assert not [name for name in wave["environment"] if "PASSWORD" in name or "API_KEY" in name]


def test_only_the_docker_proxy_sees_the_docker_socket() -> None:
    files = [compose_file(p.stem) for p in sorted(COMPOSE.glob("*.yml"))]
    mounts = {
        name: volume
        for f in files
        for name, service in f["services"].items()
        for volume in service.get("volumes", [])
        if "docker.sock" in volume
    }

    assert mounts == {"docker-proxy": "/var/run/docker.sock:/var/run/docker.sock:ro"}
    assert compose_file("base")["services"]["docker-proxy"]["command"][:3] == [
        "docker-proxy",
        "--profile",
        "read-only",
    ]


def test_dozzle_is_pinned_non_root_and_asks_for_a_login() -> None:
    dozzle = compose_file("base")["services"]["dozzle"]

    assert dozzle["image"].startswith("${DOZZLE_IMAGE:-amir20/dozzle:v8.")
    assert "latest" not in dozzle["image"]
    assert dozzle["user"] == "65534:65534"
    assert dozzle["environment"]["DOZZLE_AUTH_PROVIDER"] == "simple"
    assert dozzle["ports"] == ["127.0.0.1:${DOZZLE_PORT:-8080}:8080"]


@pytest.mark.parametrize("service", ["supervisor", "watcher"])
def test_the_supervisor_and_the_watcher_get_their_own_redis_user_and_no_model_key(service: str) -> None:
    spec = compose_file("base")["services"][service]
    template = compose_file("common")["services"][spec["extends"]["service"]]
    env = {**template["environment"], **spec["environment"]}

    assert env["WAVE_REDIS__USERNAME"] == service
    assert env["WAVE_REDIS__PASSWORD"].startswith(f"${{REDIS_{service.upper()}_PASSWORD:?")
    assert not [name for name in env if "API_KEY" in name]


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
