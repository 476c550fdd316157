"""What the compose files give each container, seen by `docker inspect` on containers compose really
created (`up --no-start`: one set for every check): only the two Docker API proxies hold the Docker
socket, the sandbox runner has none and shares an internal network with its proxy alone, Dozzle runs
pinned, non-root, read-only and behind a login, each service gets only its own secrets, no worker
keeps a seccomp profile, bubblewrap or a test runner; and, run for real, the read-only proxy refuses
writes, no worker can reach either proxy while the runner reaches its own, and `make down` removes
the stage containers a stop left behind. The secrets come from `make up` itself (compose/.env made
0600, never overwritten)."""

from __future__ import annotations

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
    TEAM,
    clean_env,
    compose_command,
    env_file_value,
    remove_project,
    run,
    wait_for,
)

pytestmark = [pytest.mark.docker, pytest.mark.slow, pytest.mark.timeout(900)]
ROLES = ("admin", "worker", "supervisor", "watcher", "operator", "sandbox", "notifier")
MODEL_KEYS = {"WAVE_ANTHROPIC__API_KEY": "sk-ant-test-key-0001", "WAVE_XAI__API_KEY": "xai-test-key-0002"}
LANGSMITH_KEY = {"WAVE_LANGSMITH__API_KEY": "lsv2-test-key-0003"}  # tracing: the workers and the supervisor
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
        # a pass-through variable the shell did not set is a bare NAME (Docker: unset); it holds nothing
        env = self.containers[service]["Config"]["Env"]
        return dict(entry.split("=", 1) for entry in env if "=" in entry)


def make_up_without_compose(
    images: tuple[str, str], env_file: Path, users_file: Path, halt_dir: Path
) -> None:
    """`make up` with COMPOSE=true: everything it does before compose (the secrets), nothing after.
    `images`: the worker's and the sandbox's (built already: `make up` builds a missing one)."""
    run(
        "make", "--no-print-directory", "up", "DOMAIN=auth", "COMPOSE=true", "COMPOSE_PROFILES=dozzle",
        f"FLEET_IMAGE={images[0]}", f"SANDBOX_IMAGE={images[1]}", f"ENV_FILE={env_file}",
        f"DOZZLE_USERS_FILE={users_file}",
        f"HALT_DIR={halt_dir}", env=clean_env(REDIS_IMAGE="wave-redis:local"),
    )  # fmt: skip


@pytest.fixture(scope="module")
def created(
    worker_image: str,
    sandbox_image: str,
    redis_image: str,
    base_image: str,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Created]:
    secrets_dir = tmp_path_factory.mktemp("compose-secrets")
    env_file, users_file = secrets_dir / "env", secrets_dir / "dozzle" / "users.yml"
    project = f"{PROJECT_PREFIX}{os.getpid()}-hardening"
    halt_dir = tmp_path_factory.mktemp("halt")
    make_up_without_compose((worker_image, sandbox_image), env_file, users_file, halt_dir)
    # Dozzle's image cannot be pulled here: a local stand-in, only created (never started)
    env = clean_env(
        FLEET_IMAGE=worker_image, REDIS_IMAGE=redis_image, DOZZLE_IMAGE=base_image,
        HALT_DIR=str(halt_dir), COMPOSE_PROFILES="dozzle", COMPOSE_PROJECT_NAME=project,
        DOCKER_GID=DOCKER_GID, SANDBOX_IMAGE=sandbox_image, DOZZLE_USERS_FILE=str(users_file),
        REDIS_PORT="0", DOZZLE_PORT="0", **MODEL_KEYS, **LANGSMITH_KEY,
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
    created: Created, worker_image: str, sandbox_image: str
) -> None:
    before = created.env_file.read_text()
    images = (worker_image, sandbox_image)
    make_up_without_compose(images, created.env_file, created.users_file, created.halt_dir)

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


def networks(container: dict[str, Any]) -> set[str]:
    return set(container["NetworkSettings"]["Networks"])


def test_only_the_two_docker_api_proxies_mount_the_docker_socket(created: Created) -> None:
    holders = {
        service
        for service, c in created.containers.items()
        for m in c["Mounts"]
        if "docker.sock" in f"{m.get('Source')}{m['Destination']}"
    }

    assert holders == {"docker-proxy", "sandbox-proxy"}
    assert created.environment("dozzle")["DOCKER_HOST"] == "tcp://docker-proxy:2375"
    for name, network in (("docker-proxy", "docker-api"), ("sandbox-proxy", "sandbox-api")):
        proxy = created.containers[name]
        assert proxy["Config"]["User"] == "10001:10001" and proxy["HostConfig"]["GroupAdd"] == [DOCKER_GID]
        assert networks(proxy) == {f"{created.project}_{network}"}, name
        assert proxy["HostConfig"]["ReadonlyRootfs"] is True and proxy["HostConfig"]["CapDrop"] == ["ALL"]
    assert created.containers["sandbox-proxy"]["Args"][:3] == ["docker-proxy", "--profile", "sandbox"]


def test_the_sandbox_runner_has_no_socket_and_shares_its_network_with_its_proxy_alone(
    created: Created,
) -> None:
    runner = created.containers["sandbox"]
    env = created.environment("sandbox")
    # (a container not started yet shows its first network only: that the runner reaches its proxy
    # is checked by the next test, on a running one)
    on_sandbox_api = {
        s for s, c in created.containers.items() if f"{created.project}_sandbox-api" in networks(c)
    }
    worker_data = [m for m in created.containers["auth-qa-1"]["Mounts"] if m["Destination"] == "/data"]
    mounts = {m["Destination"]: m for m in runner["Mounts"]}

    assert "sandbox-proxy" in on_sandbox_api and on_sandbox_api <= {"sandbox", "sandbox-proxy"}
    assert networks(runner) <= {f"{created.project}_default", f"{created.project}_sandbox-api"}
    assert set(mounts) == {"/data"} and mounts["/data"]["RW"] is False  # no socket, no /halt
    assert mounts["/data"]["Name"] == worker_data[0]["Name"]
    assert runner["Config"]["User"] == "10001:10001" and runner["HostConfig"]["ReadonlyRootfs"] is True
    assert runner["Args"] == ["sandbox"]
    assert env["WAVE_SANDBOX_CONTAINER__DOCKER_HOST"] == "tcp://sandbox-proxy:2375"
    assert env["WAVE_SANDBOX_CONTAINER__IMAGE"] == created.env["SANDBOX_IMAGE"]
    # the volume the runner maps worktrees into is, by name, the workers' /data
    assert env["WAVE_SANDBOX_CONTAINER__DATA_VOLUME"] == worker_data[0]["Name"]
    assert env["WAVE_SANDBOX_CONTAINER__DATA_MOUNT"] == "/data"


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
    own = {
        "supervisor": "supervisor",
        "watcher": "watcher",
        "monitor": "supervisor",  # the supervisor's reads, its own findings: no seventh Redis user
        "sandbox": "sandbox",
        "notifier": "notifier",  # profile slack: created only when that profile is on
        **{f"auth-{m}": "worker" for m in TEAM},
    }

    for service, container in created.containers.items():
        env = created.environment(service)
        values = set(env.values())
        held = {role for role, secret in secrets.items() if secret in values}
        keys = {name for name, key in MODEL_KEYS.items() if key in values}
        traces = LANGSMITH_KEY["WAVE_LANGSMITH__API_KEY"] in values
        assert traces == (service == "supervisor" or own.get(service) == "worker"), service
        if service == "redis":
            assert held == set(ROLES) and not keys
        elif service in own:
            assert held == {own[service]}, service
            assert env["WAVE_REDIS__USERNAME"] == own[service]
            assert keys == (set(MODEL_KEYS) if own[service] == "worker" else set()), service
        else:  # the proxies, dozzle
            assert not held and not keys, service
        assert container["Config"]["Image"]  # every service created


@pytest.mark.parametrize("member", TEAM)
def test_every_worker_runs_its_commands_in_the_container_sandbox_without_a_seccomp_profile(
    created: Created, member: str
) -> None:
    container = created.containers[f"auth-{member}"]

    assert not [o for o in container["HostConfig"]["SecurityOpt"] if o.startswith("seccomp")]
    assert created.environment(f"auth-{member}")["WAVE_SANDBOX"] == "container"


def test_the_worker_image_has_no_bubblewrap_and_no_test_runner(worker_image: str) -> None:
    # the base it is built from has both (the sandbox image's): the test can tell
    probe = "command -v bwrap node redis-server; python -c 'import pytest' 2>&1 | tail -n 1"
    seen = run("docker", "run", "--rm", "--network", "none", "--entrypoint", "sh", worker_image, "-c", probe,
               check=False)  # fmt: skip

    assert seen.stdout.strip() == "ModuleNotFoundError: No module named 'pytest'", seen.stdout


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


REACH_PROBE = """
import http.client, json, sys
def ping(host):
    try:
        conn = http.client.HTTPConnection(host, 2375, timeout=3)
        conn.request("GET", "/_ping")
        return conn.getresponse().status
    except OSError as exc:
        return type(exc).__name__
print(json.dumps({host: ping(host) for host in sys.argv[1:]}))
"""


def reach(created: Created, service: str, *hosts: str) -> dict[str, int | str]:
    """/_ping of port 2375 on each host, from a fresh container of `service` (its networks)."""
    probe = run(
        *created.compose, "run", "--rm", "--no-deps", "-T", "--entrypoint", "python", service,
        "-c", REACH_PROBE, *hosts, env=created.env, timeout_s=180,
    )  # fmt: skip
    return dict(json.loads(probe.stdout.strip().splitlines()[-1]))


def test_no_worker_reaches_a_docker_api_proxy_while_the_runner_reaches_its_own(created: Created) -> None:
    run(*created.compose, "up", "-d", "--no-deps", "docker-proxy", "sandbox-proxy", env=created.env,
        timeout_s=120)  # fmt: skip
    proxies = ("sandbox-proxy", "docker-proxy")
    addresses = [
        network["IPAddress"]
        for name in proxies
        for network in json.loads(run("docker", "inspect", f"{created.project}-{name}").stdout)[0][
            "NetworkSettings"
        ]["Networks"].values()
    ]
    wait_for(
        lambda: reach(created, "sandbox", "sandbox-proxy")["sandbox-proxy"] == 200,
        timeout_s=60,
        interval_s=2,
        what="the sandbox proxy to answer the runner",
        diagnose=lambda: run("docker", "logs", f"{created.project}-sandbox-proxy", check=False).stderr,
    )

    # by name and by address (a worker is on neither internal network): connect fails or times out
    from_worker = reach(created, "auth-qa-1", *proxies, *addresses)

    assert len(addresses) == 2 and all(a for a in addresses)
    assert not [host for host, answer in from_worker.items() if answer == 200], from_worker
    assert reach(created, "sandbox", "docker-proxy")["docker-proxy"] != 200  # Dozzle's: not the runner's


def test_make_down_removes_the_stage_containers_a_stop_left_and_no_other(
    base_image: str, tmp_path: Path
) -> None:
    # Given a project's data volume, a stage container left from it (the runner's label, a bind mount
    # from the volume), one from another fleet and one unlabelled container on the same volume
    project = f"{PROJECT_PREFIX}{os.getpid()}-leftovers"
    volume = f"{project}_data"
    run("docker", "volume", "create", "--label", f"com.docker.compose.project={project}", volume)
    containers: list[str] = []
    try:
        mountpoint = run("docker", "volume", "inspect", "--format", "{{.Mountpoint}}", volume).stdout.strip()

        def create(source: str | Path, *label: str) -> str:
            mount = f"type=bind,source={source},target=/workspace"
            made = run("docker", "create", *label, "--mount", mount, base_image, "sleep", "infinity")
            containers.append(made.stdout.strip())
            return containers[-1]

        ours = create(mountpoint, "--label", "dev.wave.sandbox=f1")
        others = [create(tmp_path, "--label", "dev.wave.sandbox=f2"), create(mountpoint)]

        run(
            "make", "--no-print-directory", "down", f"COMPOSE_PROJECT_NAME={project}", "COMPOSE_PROFILES=",
            f"ENV_FILE={tmp_path / 'no-env'}", env=clean_env(), timeout_s=180,
        )  # fmt: skip

        left = set(run("docker", "ps", "-aq", "--no-trunc").stdout.split())
        assert ours not in left
        assert set(others) <= left
    finally:
        run("docker", "rm", "-f", *containers, check=False)
        run("docker", "volume", "rm", "-f", volume, check=False)
