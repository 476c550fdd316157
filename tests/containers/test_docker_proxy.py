"""`wave docker-proxy --profile read-only` against this machine's real Docker daemon: Dozzle's reads
(list, inspect, logs, a followed log stream, events) pass; every write, and every trick that would
turn a read into a write (dot segments, percent-encoding, `//`, a version prefix, a smuggled body,
a pipelined second request, an upgrade), is refused with 403 or 400 and never reaches the daemon."""

from __future__ import annotations

import http.client
import json
import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass

import pytest
from docker_fleet import PROJECT_PREFIX, run, wait_for

from wavefleet.embedded import free_port

pytestmark = [pytest.mark.docker, pytest.mark.slow, pytest.mark.timeout(300)]


ENV_SECRET = "secret-in-the-environment-not-for-dozzle"


@dataclass
class Target:
    port: int
    container: str  # a running container of this test: what the reads look at and the writes aim at
    victim_name: str  # the name a forbidden create would give its container


def send(port: int, raw: bytes) -> tuple[int, bytes]:
    """One raw HTTP exchange: the status and the body of what the proxy answered."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as conn:
        conn.sendall(raw)
        data = b""
        while chunk := conn.recv(65536):
            data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    return int(head.split(b" ", 2)[1]), body


def get(port: int, target: str, method: str = "GET") -> tuple[int, bytes]:
    """A read as an HTTP client makes it (http.client decodes the daemon's chunked replies)."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.request(method, target)
        reply = conn.getresponse()
        return reply.status, reply.read()
    finally:
        conn.close()


def request(method: str, target: str, *headers: str, body: bytes = b"") -> bytes:
    lines = [f"{method} {target} HTTP/1.1", "Host: docker", *headers]
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


@pytest.fixture(scope="module")
def proxy(base_image: str) -> Iterator[Target]:
    project = f"{PROJECT_PREFIX}{os.getpid()}"  # reaped with the session's fleet if it dies
    container = f"{project}-proxy-target"
    run("docker", "rm", "-f", container, check=False)
    run(
        "docker", "run", "-d", "--name", container, "--label", f"com.docker.compose.project={project}",
        "--env", f"REDIS_WORKER_PASSWORD={ENV_SECRET}",
        base_image, "sh", "-c", "echo proxied-hello; while sleep 1; do echo tick; done",
    )  # fmt: skip
    port = free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "wavefleet.cli", "docker-proxy", "--listen", f"127.0.0.1:{port}"],
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        wait_for(lambda: _answers(port), timeout_s=30, what="the proxy to listen")
        yield Target(port, container, f"{project}-created-through-the-proxy")
    finally:
        server.terminate()
        server.wait(timeout=10)
        run("docker", "rm", "-f", container, check=False)


def _answers(port: int) -> bool:
    try:
        return send(port, request("GET", "/_ping"))[0] == 200
    except OSError:
        return False


def test_the_reads_dozzle_makes_pass_through(proxy: Target) -> None:
    listed = get(proxy.port, "/v1.41/containers/json?all=1")
    inspected = get(proxy.port, f"/containers/{proxy.container}/json")
    logs = get(proxy.port, f"/v1.41/containers/{proxy.container}/logs?stdout=1&tail=all")
    events = get(proxy.port, "/events?since=0&until=1")

    assert listed[0] == 200 and proxy.container in listed[1].decode(errors="replace")
    assert inspected[0] == 200 and json.loads(inspected[1])["Name"] == f"/{proxy.container}"
    assert logs[0] == 200 and b"proxied-hello" in logs[1]
    assert events[0] == 200
    assert get(proxy.port, "/_ping", "HEAD")[0] == 200
    assert get(proxy.port, "/version")[0] == 200


def test_an_inspect_through_the_proxy_shows_no_environment(proxy: Target) -> None:
    # Given a container whose environment holds a secret, as compose hands secrets to services
    direct = run("docker", "inspect", "--format", "{{json .Config.Env}}", proxy.container)
    assert ENV_SECRET in direct.stdout  # the daemon itself has it: the proxy must take it out

    # When a log reader inspects it through the proxy (both API forms)
    replies = [get(proxy.port, f"{prefix}/containers/{proxy.container}/json") for prefix in ("", "/v1.41")]

    # Then the reply is whole but holds no environment
    for status, body in replies:
        container = json.loads(body)
        assert status == 200 and container["Name"] == f"/{proxy.container}"
        assert container["Config"]["Env"] == []
        assert ENV_SECRET.encode() not in body


def test_a_followed_log_stream_flows_through(proxy: Target) -> None:
    target = f"/containers/{proxy.container}/logs?follow=1&stdout=1&tail=0"
    with socket.create_connection(("127.0.0.1", proxy.port), timeout=10) as conn:
        conn.sendall(request("GET", target))
        # the container prints "tick" every second: a followed stream delivers one within 10 s
        first = conn.recv(65536)
        wait_for(lambda: b"tick" in conn.recv(65536), timeout_s=10, what="a tick")
    assert first.startswith(b"HTTP/1.1 200")


def create(proxy: Target, prefix: str = "") -> bytes:
    body = json.dumps({"Image": "wave-does-not-matter", "Cmd": ["true"]}).encode()
    return request(
        "POST",
        f"{prefix}/containers/create?name={proxy.victim_name}",
        "Content-Type: application/json",
        f"Content-Length: {len(body)}",
        body=body,
    )


WRITES = {
    "create": create,
    "create, version prefix": lambda p: create(p, "/v1.41"),
    "exec": lambda p: request("POST", f"/containers/{p.container}/exec", "Content-Length: 0"),
    "kill": lambda p: request("POST", f"/containers/{p.container}/kill"),
    "kill, version prefix": lambda p: request("POST", f"/v1.41/containers/{p.container}/kill"),
    "remove": lambda p: request("DELETE", f"/containers/{p.container}?force=1"),
    "dot segments": lambda p: request("POST", f"/containers/json/../{p.container}/kill"),
    "dot segments on a read": lambda p: request("GET", "/containers/json/../../images/json"),
    "percent-encoded slash": lambda p: request("POST", f"/containers%2F{p.container}%2Fkill"),
    "percent-encoded dots": lambda p: request("GET", f"/containers/%2e%2e/{p.container}/json"),
    "double slash": lambda p: request("POST", f"//containers/{p.container}/kill"),
    "double slash after the version": lambda p: request("GET", "/v1.41//containers/json"),
    "absolute URL": lambda p: request("GET", "http://docker/containers/json"),
    "not on the list": lambda p: request("GET", "/images/json"),
    "a body on a read": lambda p: request("GET", "/containers/json", "Content-Length: 2", body=b"{}"),
    "chunked body": lambda p: request("GET", "/containers/json", "Transfer-Encoding: chunked"),
    "upgrade (attach)": lambda p: request(
        "GET", f"/containers/{p.container}/logs", "Connection: Upgrade", "Upgrade: tcp"
    ),
    "pipelined create behind a read": lambda p: request("GET", "/_ping") + create(p),
}


@pytest.mark.parametrize("attack", list(WRITES))
def test_writes_and_path_tricks_are_refused_and_never_reach_the_daemon(proxy: Target, attack: str) -> None:
    status, body = send(proxy.port, WRITES[attack](proxy))

    assert status in (400, 403), body
    assert json.loads(body)["message"].startswith("docker-proxy: ")
    still = run("docker", "inspect", "--format", "{{.State.Running}}", proxy.container, check=False)
    assert still.stdout.strip() == "true"  # not killed, not removed
    assert run("docker", "inspect", proxy.victim_name, check=False).returncode != 0  # never created


def test_the_proxy_refuses_to_start_without_the_socket_in_one_line() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "wavefleet.cli", "docker-proxy", "--socket", "/nonexistent/docker.sock"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )

    assert result.returncode == 78
    assert result.stderr.count("\n") == 1 and "DOCKER_GID" in result.stderr, result.stderr
