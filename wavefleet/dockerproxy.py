"""The Docker API proxy: the one WAVE service that holds the Docker socket, passing on only the
requests of an allow-list profile (method and exact path) and answering every other one with 403.

A read-only bind mount of the socket does not limit the API (a client can still create a privileged
container), so a service that reads logs (Dozzle) gets this proxy instead of the socket. Every
request is checked on its raw bytes, never after a decoding the daemon might do differently: a path
with `%`, `//`, `.` segments, a backslash or a fragment is refused before any regex runs, and so is a
body, `Transfer-Encoding` or `Upgrade` where the profile takes none. Each connection carries one
request: `Connection: close` is forced both ways, so a second (pipelined) request can never ride on
an allowed one. Responses stream through unchanged, so `logs?follow=1` and `/events` work, except a
container's inspect, whose `Config.Env` is emptied: compose hands secrets to containers through
their environment, and whoever reads logs must not read those.
"""

from __future__ import annotations

import json
import re
import selectors
import socket
import socketserver
import threading
from collections.abc import Callable
from dataclasses import dataclass

from .errors import ConfigError, InvalidInputError

MAX_HEAD_BYTES = 16 * 1024
HEAD_TIMEOUT_S = 10.0  # a client that has not sent its request head by then is cut off
MAX_CONNECTIONS = 256  # Dozzle holds a few streams per container; more is a runaway client
CHUNK = 64 * 1024
API_VERSION = r"(?:/v1\.[0-9]{1,2})?"  # clients pin the version they negotiated: /v1.41/containers/json
NAME = r"[A-Za-z0-9][A-Za-z0-9_.-]{0,127}"  # a container's id or name (".." is refused earlier)
TOKEN = re.compile(rb"[!#$%&'*+.^_`|~0-9A-Za-z-]+")
HOP_BY_HOP = {b"connection", b"keep-alive", b"proxy-connection", b"te", b"trailer"}


@dataclass(frozen=True)
class Profile:
    """What one kind of client may ask the daemon: (method, path regex) pairs, and whether a request
    may carry a body at all. A second profile (the sandbox runner's create/exec/kill/remove) must
    also check the bodies it lets through; this one lets none through."""

    name: str
    routes: tuple[tuple[str, str], ...]
    bodies: bool = False

    def allows(self, method: str, path: str) -> bool:
        return any(method == m and re.fullmatch(API_VERSION + p, path) for m, p in self.routes)


def _reads(*paths: str) -> tuple[tuple[str, str], ...]:
    return tuple((method, path) for path in paths for method in ("GET", "HEAD"))


# What Dozzle reads (its docs: the socket proxy needs CONTAINERS, INFO and EVENTS; PING and VERSION
# negotiate the API version): the list, one container's inspect, logs and stats, the event stream.
READ_ONLY = Profile(
    "read-only",
    _reads(
        "/_ping",
        "/version",
        "/info",
        "/events",
        "/containers/json",
        f"/containers/{NAME}/json",
        f"/containers/{NAME}/logs",
        f"/containers/{NAME}/stats",
    ),
)
PROFILES = {p.name: p for p in (READ_ONLY,)}
INSPECT = re.compile(API_VERSION + f"/containers/{NAME}/json")
MAX_INSPECT_BYTES = 4 * 1024 * 1024


class Refused(Exception):
    """A request the proxy answers itself (403 not allowed, 400 malformed) and never forwards."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


@dataclass(frozen=True)
class Request:
    method: str
    target: str
    head: bytes  # what is sent to the daemon: the request line and the kept headers, Connection: close


def check_request(raw_head: bytes, profile: Profile) -> Request:
    """The request head (without its blank line) if `profile` allows it, else `Refused`."""
    if b"\r" in raw_head.replace(b"\r\n", b"") or b"\n" in raw_head.replace(b"\r\n", b""):
        raise Refused(400, "bare CR or LF in the request head")
    line, *header_lines = raw_head.split(b"\r\n")
    parts = line.split(b" ")
    if len(parts) != 3 or not TOKEN.fullmatch(parts[0]) or parts[2] not in (b"HTTP/1.1", b"HTTP/1.0"):
        raise Refused(400, "malformed request line")
    method, target = parts[0].decode(), parts[1].decode("ascii", "replace")
    path, _, _query = target.partition("?")
    if not _plain_path(path):
        raise Refused(403, f"path not allowed: {target[:200]!r}")
    if not profile.allows(method, path):
        raise Refused(403, f"{method} {path[:200]} is not allowed by the {profile.name} profile")
    kept = _checked_headers(header_lines, profile)
    head = b"\r\n".join([line, *kept, b"Connection: close"]) + b"\r\n\r\n"
    return Request(method, target, head)


def _plain_path(path: str) -> bool:
    """An absolute path with nothing a server might decode or normalise into another path."""
    return (
        path.startswith("/")
        and all(0x21 <= ord(c) < 0x7F for c in path)
        and not any(bad in path for bad in ("%", "//", "\\", "#", ";"))
        and not any(segment in (".", "..") for segment in path.split("/"))
        and ".." not in path
    )


def _checked_headers(lines: list[bytes], profile: Profile) -> list[bytes]:
    kept: list[bytes] = []
    lengths: list[bytes] = []
    for header in lines:
        name, sep, value = header.partition(b":")
        if not sep or not TOKEN.fullmatch(name):  # also a folded line (leading whitespace)
            raise Refused(400, "malformed header line")
        key, value = name.lower(), value.strip()
        if key in (b"transfer-encoding", b"upgrade", b"expect"):
            raise Refused(403, f"{name.decode()} is not allowed")
        if key == b"content-length":
            lengths.append(value)
        if key not in HOP_BY_HOP:
            kept.append(header)
    if len(lengths) > 1 or (lengths and not lengths[0].isdigit()):
        raise Refused(400, "one numeric Content-Length at most")
    if lengths and int(lengths[0]) > 0 and not profile.bodies:
        raise Refused(403, f"the {profile.name} profile takes no request body")
    return kept


def refusal(status: int, message: str) -> bytes:
    reason = {400: "Bad Request", 403: "Forbidden", 502: "Bad Gateway", 503: "Service Unavailable"}
    body = ('{"message": "docker-proxy: ' + message.replace("\\", "\\\\").replace('"', '\\"') + '"}').encode()
    head = f"HTTP/1.1 {status} {reason[status]}\r\nContent-Type: application/json\r\n"
    return f"{head}Content-Length: {len(body)}\r\nConnection: close\r\n\r\n".encode() + body


def read_head(conn: socket.socket) -> tuple[bytes, bytes]:
    """The request head and whatever body bytes came with it; `Refused` if too long or cut off."""
    data = b""
    while b"\r\n\r\n" not in data:
        if len(data) > MAX_HEAD_BYTES:
            raise Refused(400, "request head too long")
        chunk = conn.recv(CHUNK)
        if not chunk:
            raise Refused(400, "connection closed before the request head ended")
        data += chunk
    head, _, rest = data.partition(b"\r\n\r\n")
    return head, rest


def pump(client: socket.socket, upstream: socket.socket) -> None:
    """Daemon bytes to the client until either side closes; more bytes from the client (a second
    request on the same connection) end the exchange instead of reaching the daemon."""
    with selectors.DefaultSelector() as selector:
        selector.register(client, selectors.EVENT_READ)
        selector.register(upstream, selectors.EVENT_READ)
        while True:
            for key, _ in selector.select():
                data = key.fileobj.recv(CHUNK)  # type: ignore[union-attr]
                if key.fileobj is client or not data:
                    return
                client.sendall(data)


def read_all(upstream: socket.socket) -> bytes:
    """The daemon's whole reply (it closes the connection after it: `Connection: close`), bounded."""
    data = b""
    while chunk := upstream.recv(CHUNK):
        data += chunk
        if len(data) > MAX_INSPECT_BYTES:
            return refusal(502, "the daemon's inspect reply is too large")
    return data


def without_environment(reply: bytes) -> bytes:
    """An inspect reply with `Config.Env` emptied; one that cannot be read is not passed on at all."""
    head, _, body = reply.partition(b"\r\n\r\n")
    status, *header_lines = head.split(b"\r\n")
    if status.split(b" ")[1:2] != [b"200"]:
        return reply  # 404 and the like: an error message, no container to redact
    headers = {k.strip().lower(): v.strip().lower() for k, _, v in (h.partition(b":") for h in header_lines)}
    try:
        if headers.get(b"transfer-encoding") == b"chunked":
            body = _dechunked(body)
        container = json.loads(body)
        if isinstance(container.get("Config"), dict):
            container["Config"]["Env"] = []
    except (ValueError, AttributeError):
        return refusal(502, "the daemon's inspect reply could not be read")
    payload = json.dumps(container).encode()
    return (
        status
        + (
            f"\r\nContent-Type: application/json\r\nContent-Length: {len(payload)}\r\n"
            "Connection: close\r\n\r\n"
        ).encode()
        + payload
    )


def _dechunked(body: bytes) -> bytes:
    out = b""
    while True:
        size_line, _, rest = body.partition(b"\r\n")
        size = int(size_line.split(b";")[0], 16)  # ValueError when malformed
        if size == 0:
            return out
        out, body = out + rest[:size], rest[size + 2 :]


class _Handler(socketserver.BaseRequestHandler):
    server: DockerProxy

    def handle(self) -> None:
        if not self.server.slots.acquire(blocking=False):
            self.request.sendall(refusal(503, "too many connections"))
            return
        try:
            self._exchange(self.request)
        except OSError:
            pass  # the client or the daemon went away mid-stream: nothing to answer
        finally:
            self.server.slots.release()

    def _exchange(self, conn: socket.socket) -> None:
        conn.settimeout(HEAD_TIMEOUT_S)
        try:
            head, body = read_head(conn)
            request = check_request(head, self.server.profile)
            if body and not self.server.profile.bodies:  # bytes after the head: a pipelined request
                raise Refused(400, "one request per connection")
        except Refused as refused:
            self.server.log("refused", str(refused), self.client_address[0])
            conn.sendall(refusal(refused.status, str(refused)))
            return
        except TimeoutError:
            return
        conn.settimeout(None)  # a followed log stream may stay quiet for hours
        upstream = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            upstream.connect(self.server.socket_path)
        except OSError as exc:
            self.server.log("daemon unreachable", str(exc), self.client_address[0])
            conn.sendall(refusal(502, "the Docker daemon cannot be reached"))
            upstream.close()
            return
        with upstream:
            upstream.sendall(request.head + body)
            if request.method == "GET" and INSPECT.fullmatch(request.target.partition("?")[0]):
                conn.sendall(without_environment(read_all(upstream)))
            else:
                pump(conn, upstream)


class DockerProxy(socketserver.ThreadingTCPServer):
    """Listens on TCP and serves each connection in a thread; `serve_forever()` until `shutdown()`."""

    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 64

    def __init__(
        self,
        listen: tuple[str, int],
        socket_path: str,
        profile: Profile,
        log: Callable[[str, str, str], None] = lambda *_: None,
    ) -> None:
        self.socket_path, self.profile, self.log = socket_path, profile, log
        self.slots = threading.BoundedSemaphore(MAX_CONNECTIONS)
        super().__init__(listen, _Handler)


def parse_listen(value: str) -> tuple[str, int]:
    host, sep, port = value.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise InvalidInputError(f"--listen {value!r}: give HOST:PORT, e.g. 0.0.0.0:2375")
    return host.strip("[]"), int(port)


def check_daemon(socket_path: str) -> None:
    """Fail at start, in one line, when the socket is missing or its group was not given to us."""
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        probe.connect(socket_path)
    except OSError as exc:
        raise ConfigError(
            f"cannot open the Docker socket {socket_path}: {exc.strerror or exc}; mount it and run with "
            "its group (compose: DOCKER_GID, `stat -c %g /var/run/docker.sock`)"
        ) from None
    finally:
        probe.close()
