"""`wave docker-proxy --profile sandbox` against this machine's real Docker daemon, with docker-py's
real client: the sandbox runner's sequence (docker/sandbox-api-calls.md: create with the hardening, start, an
attached exec streaming its output and exit code, stats, list by label, kill, remove, volume and
image inspect) works, and every hostile request is answered by the proxy itself (its message says
`docker-proxy:`, which the daemon never writes) and never reaches the daemon: no container appears
under the test's label, no exec appears on the sandbox container, the other container still runs."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from docker.api.client import APIClient
from docker.errors import APIError, NotFound
from docker.types import Mount
from docker_fleet import PROJECT_PREFIX, run
from sandbox_bodies import MIB, create_body, exec_body, hostile_creates
from test_docker_proxy import request, send

from wavefleet.config import ContainerSandboxSettings
from wavefleet.dockerpolicy import SandboxPolicy
from wavefleet.dockerproxy import DockerProxy, Profile
from wavefleet.dockersandbox import policy_from, sandbox_profile
from wavefleet.embedded import free_port

pytestmark = [pytest.mark.docker, pytest.mark.slow, pytest.mark.timeout(300)]

SOCKET = "/var/run/docker.sock"


@dataclass
class Sandbox:
    port: int
    image: str
    worktree: Path
    label: str  # dev.wave.sandbox of every container this module makes through the proxy
    victim: str  # a running container that is not a sandbox one: nothing may touch it
    running: str = ""  # the full id of a running sandbox container, made through the proxy

    def api(self) -> APIClient:
        return APIClient(base_url=f"tcp://127.0.0.1:{self.port}", version="1.41", timeout=60)


def serve(profile: Profile) -> tuple[DockerProxy, int]:
    port = free_port()
    proxy = DockerProxy(("127.0.0.1", port), SOCKET, profile)
    threading.Thread(target=proxy.serve_forever, daemon=True).start()
    return proxy, port


def remove_labelled(label: str) -> None:
    ids = labelled(label)
    if ids:
        run("docker", "rm", "-f", *ids, check=False)


def labelled(label: str) -> list[str]:
    """Every container, running or not, carrying dev.wave.sandbox=`label` (asked of the daemon)."""
    listed = run("docker", "ps", "-aq", "--filter", f"label=dev.wave.sandbox={label}")
    return listed.stdout.split()


@pytest.fixture(scope="module")
def sandbox(base_image: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Sandbox]:
    root = tmp_path_factory.mktemp("sandbox-data")
    worktree = root / "repos" / "auth" / "worktrees" / "S-1-qa"
    worktree.mkdir(parents=True)
    worktree.chmod(0o755)  # the container's uid 10001 reads it
    (worktree / "hello.txt").write_text("hello from the worktree\n")
    (worktree / ".git").write_text("gitdir: /elsewhere/.git/worktrees/S-1-qa\n")
    policy = SandboxPolicy(
        image=base_image, mount_root=str(root), visible_root=str(root),
        max_memory_bytes=256 * MIB, max_pids=128, max_nano_cpus=1_000_000_000, user="10001:10001",
    )  # fmt: skip
    victim = f"{PROJECT_PREFIX}{os.getpid()}-sandbox-victim"  # reaped with the session's fleet if it dies
    run("docker", "rm", "-f", victim, check=False)
    project = f"com.docker.compose.project={PROJECT_PREFIX}{os.getpid()}"
    run("docker", "run", "-d", "--name", victim, "--label", project, base_image, "sleep", "infinity")
    proxy, port = serve(sandbox_profile(policy))
    box = Sandbox(port, base_image, worktree, f"wavetest-{uuid.uuid4().hex[:12]}", victim)
    try:
        yield box
    finally:
        proxy.shutdown()
        proxy.server_close()
        run("docker", "rm", "-f", victim, check=False)
        for label in (box.label, f"{box.label}-hostile"):
            remove_labelled(label)


def hardened(api: APIClient, box: Sandbox, label: str, name: str) -> str:
    """The stage container as the runner makes it (docker-py, the brief's hardening); its id."""
    mounts = [
        Mount("/workspace", str(box.worktree), type="bind", read_only=False),
        Mount("/workspace/.git", str(box.worktree / ".git"), type="bind", read_only=True),
    ]
    host_config = api.create_host_config(
        mem_limit=64 * MIB, memswap_limit=64 * MIB, nano_cpus=500_000_000, pids_limit=64,
        read_only=True, network_mode="none", cap_drop=["ALL"], security_opt=["no-new-privileges"],
        tmpfs={"/tmp": "rw,nosuid,nodev,size=16m"}, init=True, mounts=mounts,
    )  # fmt: skip
    created = api.create_container(
        box.image, ["sleep", "infinity"], user="10001:10001", working_dir="/workspace", environment=[],
        network_disabled=True, host_config=host_config, name=name,
        labels={"dev.wave.sandbox": label, "dev.wave.story": "S-1", "dev.dozzle.group": "sandbox"},
    )  # fmt: skip
    return str(created["Id"])


def test_the_runners_sequence_works_through_the_proxy(sandbox: Sandbox) -> None:
    api = sandbox.api()
    assert api.ping() and api.version()["ApiVersion"] and api.inspect_image(sandbox.image)["Id"]

    # a stage's first command: create, start, an attached exec streaming its output
    cid = hardened(api, sandbox, sandbox.label, f"wave-sbx-s-1-qa-r1-a0-{uuid.uuid4().hex[:6]}")
    api.start(cid)
    argv = ["sh", "-c", "cat hello.txt; id -u; echo to-stderr >&2; exit 3"]
    exec_id = api.exec_create(
        cid, argv, user="10001:10001", workdir="/workspace", environment=["LANG=C.UTF-8"]
    )
    output = b"".join(api.exec_start(exec_id["Id"], stream=True)).decode()
    exit_code = api.exec_inspect(exec_id["Id"])["ExitCode"]
    stats = api.stats(cid, stream=False, one_shot=True)
    listed = api.containers(all=True, filters={"label": f"dev.wave.sandbox={sandbox.label}"})
    inspected = api.inspect_container(cid)

    assert exit_code == 3
    assert "hello from the worktree" in output and "10001" in output and "to-stderr" in output
    assert "memory_stats" in stats
    assert [c["Id"] for c in listed] == [cid]
    assert inspected["HostConfig"]["ReadonlyRootfs"] and inspected["HostConfig"]["CapDrop"] == ["ALL"]

    # release: kill, remove; a second remove finds it gone (404, as from the daemon itself)
    api.kill(cid)
    api.remove_container(cid, v=False, link=False, force=True)
    assert labelled(sandbox.label) == []
    with pytest.raises(NotFound):
        api.remove_container(cid, force=True)


def test_the_unchanged_body_of_the_hostile_table_is_accepted(sandbox: Sandbox) -> None:
    # the refusals below are for what each case changes, not for the body they start from
    body = create_body(sandbox.image, str(sandbox.worktree), f"{sandbox.label}-hostile")
    status, reply = send(sandbox.port, create(body, "wave-sbx-baseline"))
    try:
        assert status == 201, reply
        assert labelled(f"{sandbox.label}-hostile") == [json.loads(reply)["Id"][:12]]
    finally:
        remove_labelled(f"{sandbox.label}-hostile")


def create(body: dict[str, object], name: str) -> bytes:
    raw = json.dumps(body).encode()
    return request(
        "POST", f"/v1.41/containers/create?name={name}", "Content-Type: application/json",
        f"Content-Length: {len(raw)}", body=raw,
    )  # fmt: skip


@pytest.mark.parametrize("case", list(hostile_creates("/etc", "/x")))
def test_a_hostile_create_is_refused_and_never_reaches_the_daemon(sandbox: Sandbox, case: str) -> None:
    body = create_body(sandbox.image, str(sandbox.worktree), f"{sandbox.label}-hostile")
    hostile_creates("/etc", str(sandbox.worktree))[case](body)

    status, reply = send(sandbox.port, create(body, f"wave-sbx-hostile-{uuid.uuid4().hex[:6]}"))

    assert status == 403, reply
    assert json.loads(reply)["message"].startswith("docker-proxy: ")
    assert labelled(f"{sandbox.label}-hostile") == []


@pytest.fixture(scope="module")
def running(sandbox: Sandbox) -> str:
    """A running sandbox container of this module, made through the proxy: what execs aim at."""
    api = sandbox.api()
    cid = hardened(api, sandbox, sandbox.label, f"wave-sbx-target-{uuid.uuid4().hex[:6]}")
    api.start(cid)
    return cid


def json_request(method: str, target: str, body: object, *headers: str) -> bytes:
    raw = json.dumps(body).encode()
    return request(
        method, target, "Content-Type: application/json", f"Content-Length: {len(raw)}", *headers, body=raw
    )


def exec_create(container: str, **change: object) -> bytes:
    return json_request("POST", f"/v1.41/containers/{container}/exec", exec_body(container, ["id"]) | change)


def upgrade(method: str, target: str, to: str = "tcp") -> bytes:
    return request(method, target, "Connection: Upgrade", f"Upgrade: {to}")


def good_create(box: Sandbox) -> bytes:
    body = create_body(box.image, str(box.worktree), f"{box.label}-hostile")
    return create(body, f"wave-sbx-pipelined-{uuid.uuid4().hex[:6]}")


HOSTILE: dict[str, Callable[[Sandbox, str], bytes]] = {
    "exec Privileged": lambda b, c: exec_create(c, Privileged=True),
    "exec User root": lambda b, c: exec_create(c, User="root"),
    "exec User 0:0": lambda b, c: exec_create(c, User="0:0"),
    "exec as the socket's group": lambda b, c: exec_create(c, User=f"10001:{Path(SOCKET).stat().st_gid}"),
    "exec as another uid": lambda b, c: exec_create(c, User="10002:10001"),
    "exec into another container": lambda b, c: exec_create(b.victim),
    "kill another container": lambda b, c: request("POST", f"/containers/{b.victim}/kill"),
    "remove another container": lambda b, c: request("DELETE", f"/v1.41/containers/{b.victim}?force=1"),
    "archive PUT": lambda b, c: request("PUT", f"/containers/{c}/archive?path=/workspace"),
    "build": lambda b, c: request("POST", "/v1.41/build?t=evil", "Content-Length: 0"),
    "image pull": lambda b, c: request("POST", "/v1.41/images/create?fromImage=alpine&tag=latest"),
    "attach": lambda b, c: upgrade("POST", f"/containers/{c}/attach?stream=1&stdin=1"),
    "update": lambda b, c: json_request("POST", f"/containers/{c}/update", {"PidsLimit": 0}),
    "commit": lambda b, c: request("POST", f"/commit?container={c}"),
    "networks": lambda b, c: request("GET", "/networks"),
    "volume create": lambda b, c: json_request("POST", "/volumes/create", {"Name": "evil"}),
    "another volume": lambda b, c: request("GET", "/volumes/evil"),
    "another image": lambda b, c: request("GET", "/images/alpine:latest/json"),
    "session": lambda b, c: upgrade("POST", "/session", "h2c"),
    "a streaming stats": lambda b, c: request("GET", f"/containers/{c}/stats"),
    "a create name that is a path": lambda b, c: good_create(b).replace(b"?name=", b"?name=..%2F", 1),
    "a query key spelled with %": lambda b, c: request("POST", f"/containers/{c}/kill?si%67nal=SIGKILL"),
    "a chunked create": lambda b, c: request(
        "POST", "/containers/create", "Transfer-Encoding: chunked", body=b"2\r\n{}\r\n0\r\n\r\n"
    ),
    "a body over the cap": lambda b, c: request("POST", "/containers/create", "Content-Length: 307200"),
    "two creates pipelined": lambda b, c: good_create(b) + good_create(b),
    "Upgrade on a create": lambda b, c: good_create(b).replace(b"Host: docker", b"Host: x\r\nUpgrade: tcp"),
    "Upgrade on a start": lambda b, c: upgrade("POST", f"/containers/{c}/start"),
    "Upgrade to h2c on an exec start": lambda b, c: upgrade("POST", f"/exec/{'0' * 64}/start", "h2c"),
}  # fmt: skip


@pytest.mark.parametrize("attack", list(HOSTILE))
def test_a_hostile_request_is_refused_and_never_reaches_the_daemon(
    sandbox: Sandbox, running: str, attack: str
) -> None:
    execs_before = run("docker", "inspect", "--format", "{{json .ExecIDs}}", running).stdout

    status, reply = send(sandbox.port, HOSTILE[attack](sandbox, running))

    assert status in (400, 403), reply
    assert json.loads(reply)["message"].startswith("docker-proxy: ")
    assert labelled(f"{sandbox.label}-hostile") == []  # no container was made
    assert run("docker", "inspect", "--format", "{{json .ExecIDs}}", running).stdout == execs_before
    for container in (sandbox.victim, running):  # not killed, not removed
        assert run("docker", "inspect", "--format", "{{.State.Running}}", container).stdout.strip() == "true"


def test_an_exec_made_around_the_proxy_as_another_user_is_not_started(sandbox: Sandbox, running: str) -> None:
    # Given an exec as the Docker socket's group, made by someone with the raw socket
    raw = APIClient(base_url=f"unix://{SOCKET}", version="1.41", timeout=60)
    made = raw.exec_create(running, ["touch", "/tmp/ran"], user=f"10001:{Path(SOCKET).stat().st_gid}")["Id"]

    # When the proxy's client asks to start or inspect it
    with pytest.raises(APIError) as started:
        sandbox.api().exec_start(made)
    with pytest.raises(APIError) as inspected:
        sandbox.api().exec_inspect(made)

    # Then both are refused by the proxy, and the command never ran
    assert started.value.status_code == inspected.value.status_code == 403
    assert "docker-proxy: exec User must be 10001:10001" in str(started.value)
    assert raw.exec_inspect(made)["Running"] is False and raw.exec_inspect(made)["Pid"] == 0


def test_the_data_volume_is_the_one_volume_and_mount_root(base_image: str) -> None:
    # Given a data volume as compose makes it, a worktree in it, and a proxy told that volume's name
    volume = f"{PROJECT_PREFIX}{os.getpid()}-sandbox-data"
    run(
        "docker",
        "volume",
        "create",
        "--label",
        f"com.docker.compose.project={PROJECT_PREFIX}{os.getpid()}",
        volume,
    )
    label = f"wavetest-{uuid.uuid4().hex[:12]}"
    proxy = None
    try:
        settings = ContainerSandboxSettings(image=base_image, data_volume=volume)
        policy = policy_from(settings, SOCKET)
        worktree = Path(policy.mount_root) / "repos" / "auth" / "worktrees" / "S-2-be"
        worktree.mkdir(parents=True)
        worktree.chmod(0o755)
        (worktree / "in-the-volume.txt").write_text("yes\n")
        proxy, port = serve(sandbox_profile(policy))
        api = APIClient(base_url=f"tcp://127.0.0.1:{port}", version="1.41", timeout=60)

        # When the runner inspects it and binds the worktree from its mountpoint
        mountpoint = api.inspect_volume(volume)["Mountpoint"]
        box = Sandbox(
            port, base_image, Path(mountpoint) / "repos" / "auth" / "worktrees" / "S-2-be", label, ""
        )
        box.worktree.joinpath(".git").write_text("gitdir: x\n")
        cid = hardened(api, box, label, f"wave-sbx-s-2-be-{uuid.uuid4().hex[:6]}")
        api.start(cid)
        exec_id = api.exec_create(cid, ["cat", "in-the-volume.txt"], user="10001:10001", workdir="/workspace")
        output = b"".join(api.exec_start(exec_id["Id"], stream=True))

        # Then the command sees the worktree, and another volume or a source outside it is refused
        assert output == b"yes\n"
        with pytest.raises(APIError) as other:
            api.inspect_volume("wave_other")
        assert other.value.status_code == 403
        outside = Sandbox(port, base_image, Path("/var/lib/docker/volumes"), label, "")
        with pytest.raises(APIError):
            hardened(api, outside, label, "wave-sbx-outside")
    finally:
        if proxy is not None:
            proxy.shutdown()
            proxy.server_close()
        remove_labelled(label)
        run("docker", "volume", "rm", "-f", volume, check=False)


def test_a_raw_exec_start_upgrades_and_streams_through_the_proxy(sandbox: Sandbox, running: str) -> None:
    # the hijacked stream as the daemon sends it: a 101, then multiplexed frames until the exit
    exec_id = sandbox.api().exec_create(running, ["echo", "raw-stream"], user="10001:10001")["Id"]
    raw = json_request(
        "POST",
        f"/v1.41/exec/{exec_id}/start",
        {"Detach": False, "Tty": False},
        "Connection: Upgrade",
        "Upgrade: tcp",
    )
    with socket.create_connection(("127.0.0.1", sandbox.port), timeout=30) as conn:
        conn.sendall(raw)
        data = b""
        while chunk := conn.recv(65536):
            data += chunk

    assert data.startswith(b"HTTP/1.1 101"), data[:200]
    assert b"raw-stream\n" in data


@pytest.mark.parametrize(
    ("arguments", "code", "says"),
    [
        ([], 65, "--volume NAME"),
        (["--bind-root", "relative/dir"], 65, "existing absolute directory"),
        (["--volume", "wavetest-no-such-volume"], 78, "docker volume create"),
        (["--bind-root", "/", "--volume", "x"], 65, "one of them"),
        (["--bind-root", "/"], 65, "not /"),
        (["--bind-root", "/tmp", "--user", "0:0"], 65, "not root"),
        (["--bind-root", "/tmp", "--user", "wave"], 65, "numeric UID:GID"),
    ],
)
def test_bad_sandbox_options_stop_the_proxy_in_one_line(arguments: list[str], code: int, says: str) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "wavefleet.cli", "docker-proxy", "--profile", "sandbox", *arguments],
        capture_output=True, text=True, timeout=60, check=False,
        env={k: v for k, v in os.environ.items() if not k.startswith("WAVE_")},
    )  # fmt: skip

    assert result.returncode == code, result.stderr
    assert result.stderr.count("\n") == 1 and says in result.stderr, result.stderr
