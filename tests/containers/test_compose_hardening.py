"""What the compose files give each container, seen by `docker inspect` on containers compose really
created (`up --no-start`: one set for every check): only the docker-proxy holds the Docker socket,
Dozzle runs pinned, non-root, read-only and behind a login, each service gets only its own secrets;
and, run for real, the proxy refuses writes and a QA worker's sandboxed command has no network and
no secret. The secrets come from `make up` itself (compose/.env made 0600, never overwritten)."""

from __future__ import annotations

import ast
import json
import os
import stat
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml
from docker_fleet import (
    PROJECT_PREFIX,
    REPO,
    TEAM,
    clean_env,
    compose_command,
    env_file_value,
    remove_project,
    run,
    wait_for,
)

pytestmark = [pytest.mark.docker, pytest.mark.slow, pytest.mark.timeout(900)]
ROLES = ("admin", "worker", "supervisor", "watcher", "operator")
MODEL_KEYS = {"WAVE_ANTHROPIC__API_KEY": "sk-ant-test-key-0001", "WAVE_XAI__API_KEY": "xai-test-key-0002"}
DOCKER_GID = str(Path("/var/run/docker.sock").stat().st_gid)


@dataclass
class Created:
    project: str
    env_file: Path
    users_file: Path
    halt_dir: Path
    compose: list[str]  # the compose command line with the project's files and variables
    env: dict[str, str]
    containers: dict[str, dict[str, Any]]  # service -> docker inspect

    def secrets(self) -> dict[str, str]:
        return {role: env_file_value(self.env_file, f"REDIS_{role.upper()}_PASSWORD") for role in ROLES}

    def environment(self, service: str) -> dict[str, str]:
        return dict(entry.split("=", 1) for entry in self.containers[service]["Config"]["Env"])


def make_up_without_compose(worker_image: str, env_file: Path, users_file: Path, halt_dir: Path) -> None:
    """`make up` with COMPOSE=true: everything it does before compose (the secrets), nothing after."""
    run(
        "make", "--no-print-directory", "up", "DOMAIN=auth", "COMPOSE=true", "COMPOSE_PROFILES=dozzle",
        f"FLEET_IMAGE={worker_image}", f"ENV_FILE={env_file}", f"DOZZLE_USERS_FILE={users_file}",
        f"HALT_DIR={halt_dir}", env=clean_env(REDIS_IMAGE="wave-redis:local"),
    )  # fmt: skip


@pytest.fixture(scope="module")
def created(
    worker_image: str, redis_image: str, base_image: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Created]:
    secrets_dir = tmp_path_factory.mktemp("compose-secrets")
    env_file, users_file = secrets_dir / "env", secrets_dir / "dozzle" / "users.yml"
    project = f"{PROJECT_PREFIX}{os.getpid()}-hardening"
    halt_dir = tmp_path_factory.mktemp("halt")
    make_up_without_compose(worker_image, env_file, users_file, halt_dir)
    # Dozzle's image cannot be pulled here: a local stand-in, only created (never started)
    env = clean_env(
        FLEET_IMAGE=worker_image, REDIS_IMAGE=redis_image, DOZZLE_IMAGE=base_image,
        HALT_DIR=str(halt_dir), COMPOSE_PROFILES="dozzle", COMPOSE_PROJECT_NAME=project,
        DOCKER_GID=DOCKER_GID,
        SECCOMP_PROFILE=str(REPO / "docker/seccomp-bwrap.json"), DOZZLE_USERS_FILE=str(users_file),
        REDIS_PORT="0", DOZZLE_PORT="0", **MODEL_KEYS,
    )  # fmt: skip
    files = ["-f", "compose/base.yml", "-f", "compose/auth.yml"]
    compose = [*compose_command(), "--env-file", str(env_file), "-p", project, *files]
    try:
        run(*compose, "up", "--no-start", env=env, timeout_s=300)
        ids = run("docker", "ps", "-aq", "--filter", f"label=com.docker.compose.project={project}").stdout
        inspected = json.loads(run("docker", "inspect", *ids.split()).stdout)
        by_service = {c["Config"]["Labels"]["com.docker.compose.service"]: c for c in inspected}
        yield Created(project, env_file, users_file, halt_dir, compose, env, by_service)
    finally:
        run(*compose, "down", "--volumes", "--remove-orphans", env=env, check=False, timeout_s=180)
        remove_project(project)


def test_make_up_writes_the_secrets_file_owner_only_and_never_overwrites_it(
    created: Created, worker_image: str
) -> None:
    before = created.env_file.read_text()
    make_up_without_compose(worker_image, created.env_file, created.users_file, created.halt_dir)

    assert stat.S_IMODE(created.env_file.stat().st_mode) == 0o600
    assert created.env_file.read_text() == before
    secrets = created.secrets()
    assert len(set(secrets.values())) == len(ROLES) and all(len(s) >= 32 for s in secrets.values())
    # the image given to the first `make up` is kept, so a later plain one does not pull
    assert env_file_value(created.env_file, "REDIS_IMAGE") == "wave-redis:local"


def test_dozzles_users_file_holds_a_bcrypt_hash_of_the_password_only(
    created: Created, worker_image: str
) -> None:
    password = env_file_value(created.env_file, "DOZZLE_PASSWORD")
    users = yaml.safe_load(created.users_file.read_text())["users"]
    hashed = users["admin"]["password"]
    # checked with libcrypt in the image (the host's Python may have no `crypt`): what Dozzle's
    # bcrypt compares too
    check = "import crypt, sys; print(crypt.crypt(sys.stdin.read(), sys.argv[1]) == sys.argv[1])"
    matches = subprocess.run(
        ["docker", "run", "--rm", "-i", "--network", "none", "--entrypoint", "python", worker_image,
         "-W", "ignore", "-c", check, hashed],
        input=password, capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip

    assert hashed.startswith("$2b$") and matches.stdout.strip() == "True", matches.stderr
    assert password not in created.users_file.read_text()
    assert stat.S_IMODE(created.users_file.parent.stat().st_mode) == 0o700


def test_only_the_docker_proxy_mounts_the_docker_socket(created: Created) -> None:
    holders = {
        service
        for service, c in created.containers.items()
        for m in c["Mounts"]
        if "docker.sock" in f"{m.get('Source')}{m['Destination']}"
    }

    assert holders == {"docker-proxy"}
    assert created.environment("dozzle")["DOCKER_HOST"] == "tcp://docker-proxy:2375"
    proxy = created.containers["docker-proxy"]
    assert proxy["Config"]["User"] == "10001:10001" and proxy["HostConfig"]["GroupAdd"] == [DOCKER_GID]
    assert set(proxy["NetworkSettings"]["Networks"]) == {f"{created.project}_docker-api"}


def test_dozzle_runs_non_root_read_only_behind_a_login_on_loopback_only(created: Created) -> None:
    dozzle = created.containers["dozzle"]
    host = dozzle["HostConfig"]
    users = [m for m in dozzle["Mounts"] if m["Destination"] == "/data/users.yml"]

    assert dozzle["Config"]["User"] == "65534:65534"
    assert host["ReadonlyRootfs"] is True and host["CapDrop"] == ["ALL"] and not host["CapAdd"]
    assert "no-new-privileges:true" in host["SecurityOpt"]
    assert created.environment("dozzle")["DOZZLE_AUTH_PROVIDER"] == "simple"
    assert users and users[0]["RW"] is False and users[0]["Source"] == str(created.users_file)
    assert [b["HostIp"] for b in host["PortBindings"]["8080/tcp"]] == ["127.0.0.1"]


def test_each_service_gets_only_the_secrets_it_uses(created: Created) -> None:
    secrets = created.secrets()
    own = {"supervisor": "supervisor", "watcher": "watcher", **{f"auth-{m}": "worker" for m in TEAM}}

    for service, container in created.containers.items():
        env = created.environment(service)
        values = set(env.values())
        held = {role for role, secret in secrets.items() if secret in values}
        keys = {name for name, key in MODEL_KEYS.items() if key in values}
        if service == "redis":
            assert held == set(ROLES) and not keys
        elif service in own:
            assert held == {own[service]}, service
            assert env["WAVE_REDIS__USERNAME"] == own[service]
            assert keys == (set(MODEL_KEYS) if own[service] == "worker" else set()), service
        else:  # docker-proxy, dozzle
            assert not held and not keys, service
        assert container["Config"]["Image"]  # every service created


@pytest.mark.parametrize("member", TEAM)
def test_only_workers_that_run_commands_get_the_sandbox_and_its_seccomp_profile(
    created: Created, member: str
) -> None:
    container = created.containers[f"auth-{member}"]
    seccomp = [o for o in container["HostConfig"]["SecurityOpt"] if o.startswith("seccomp=")]
    runs_commands = member.split("-", maxsplit=1)[0] in ("fe", "be", "qa")

    assert bool(seccomp) is runs_commands
    if runs_commands:
        profile = json.loads(seccomp[0].removeprefix("seccomp="))
        assert any("unshare" in rule["names"] for rule in profile["syscalls"])
        assert created.environment(f"auth-{member}")["WAVE_SANDBOX"] == "bwrap"


PROXY_PROBE = """
import http.client, json, sys
def ask(method, path):
    conn = http.client.HTTPConnection("127.0.0.1", 2375, timeout=10)
    conn.request(method, path, body=b"{}" if method == "POST" else None)
    return conn.getresponse().status
print(json.dumps({"list": ask("GET", "/containers/json"), "create": ask("POST", "/containers/create"),
                  "kill": ask("POST", "/containers/%s/kill" % sys.argv[1])}))
"""


def test_the_proxy_container_reads_docker_as_non_root_and_refuses_writes(created: Created) -> None:
    run(*created.compose, "up", "-d", "--no-deps", "docker-proxy", env=created.env, timeout_s=120)
    name = f"{created.project}-docker-proxy"

    def answers() -> dict[str, int] | None:
        probe = run("docker", "exec", name, "python", "-c", PROXY_PROBE, name, check=False)
        return json.loads(probe.stdout) if probe.returncode == 0 else None

    statuses = wait_for(answers, timeout_s=60, what="the proxy to answer", diagnose=lambda: run(
        "docker", "logs", name, check=False).stderr)  # fmt: skip

    assert statuses == {"list": 200, "create": 403, "kill": 403}
    assert run("docker", "exec", name, "id", "-u").stdout.strip() == "10001"


SANDBOX_PROBE = r"""
import json, os, socket, subprocess, sys
listener = socket.socket()
listener.bind(("0.0.0.0", 0))
listener.listen()
me = (socket.gethostbyname(socket.gethostname()), listener.getsockname()[1])
CONNECT = (
    "import socket, sys\ntry:\n socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=3)\n"
    " print('connected')\nexcept OSError as e:\n print('refused:', e)"
)
BWRAP = ["bwrap", "--ro-bind", "/", "/", "--tmpfs", "/proc", "--dev", "/dev", "--tmpfs", "/tmp",
         "--unshare-all", "--die-with-parent", "--new-session", "--clearenv",
         "--setenv", "PATH", "/opt/wave/bin:/usr/bin:/bin", "--"]
def sandboxed(*argv):
    done = subprocess.run([*BWRAP, *argv], capture_output=True, text=True, timeout=60)
    return (done.stdout + done.stderr).strip()
direct = subprocess.run([sys.executable, "-c", CONNECT, *map(str, me)], capture_output=True, text=True)
print(json.dumps({
    "direct": direct.stdout.strip(),
    "sandboxed": sandboxed("python", "-c", CONNECT, *map(str, me)),
    "redis": sandboxed("python", "-c", CONNECT, "redis", "6379"),
    "env": sandboxed("python", "-c", "import os; print(sorted(os.environ))"),
    "pytest": sandboxed("python", "-m", "pytest", "--version"),
}))
"""


def sandbox_probe(created: Created, service: str) -> dict[str, str]:
    probe = run(
        *created.compose, "run", "--rm", "--no-deps", "-T", "--entrypoint", "python", service,
        "-c", SANDBOX_PROBE, env=created.env, timeout_s=180,
    )  # fmt: skip
    return dict(json.loads(probe.stdout.strip().splitlines()[-1]))


def test_a_command_sandboxed_in_the_qa_container_has_no_network_and_no_secret(created: Created) -> None:
    seen = sandbox_probe(created, "auth-qa-1")

    assert seen["direct"] == "connected"  # the container itself has a network: the test can tell
    assert seen["sandboxed"].startswith("refused:"), seen
    assert seen["redis"].startswith("refused:"), seen
    assert set(ast.literal_eval(seen["env"])) <= {"PATH", "PWD", "LC_CTYPE"}, seen  # LC_CTYPE: Python's own
    assert seen["pytest"].startswith("pytest "), seen


def test_without_the_seccomp_profile_bubblewrap_cannot_start(created: Created) -> None:
    # why FE, BE and QA carry docker/seccomp-bwrap.json: Docker's default refuses the namespaces
    seen = sandbox_probe(created, "auth-pm-1")

    assert "No permissions to create new namespace" in seen["env"], seen
