"""The Docker API proxy: the one WAVE service that holds the Docker socket, passing on only the
requests of an allow-list profile (method and exact path) and answering every other one with 403.

A read-only bind mount of the socket does not limit the API (a client can still create a privileged
container), so a service that reads logs (Dozzle) gets this proxy instead of the socket, and so does
the sandbox runner (`wavefleet.dockersandbox`: create/exec/kill/remove of hardened containers, each
body checked). Every request is checked on its raw bytes, never after a decoding the daemon might do
differently: a path with `%`, `//`, `.` segments, a backslash or a fragment is refused before any
regex runs, and so is a body, `Transfer-Encoding` or `Upgrade` where the route takes none. Each
connection carries one request: `Connection: close` is forced both ways, and only the head and
exactly `Content-Length` body bytes are passed on, so a second (pipelined) request can never ride on
an allowed one. Responses stream through unchanged, so `logs?follow=1`, `/events` and an attached
exec's hijacked stream work, except a container's inspect, whose `Config.Env` is emptied: compose
hands secrets to containers through their environment, and the proxy's clients must not read those.
"""

from __future__ import annotations

import re
import socket
import socketserver
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from .dockerwire import (
    Daemon,
    Refused,
    decode_json,
    pump,
    read_all,
    read_body,
    read_head,
    refusal,
    without_environment,
)
from .errors import ConfigError, InvalidInputError

__all__ = ["READ_ONLY", "Call", "DockerProxy", "Profile", "Refused", "Route", "check_request"]

HEAD_TIMEOUT_S = 10.0  # a client that has not sent its request head (and body) by then is cut off
MAX_CONNECTIONS = 256  # Dozzle holds a few streams per container; more is a runaway client
API_VERSION = r"(?:/v1\.[0-9]{1,2})?"  # clients pin the version they negotiated: /v1.41/containers/json
NAME = r"[A-Za-z0-9][A-Za-z0-9_.-]{0,127}"  # a container's id or name (".." is refused earlier)
TOKEN = re.compile(rb"[!#$%&'*+.^_`|~0-9A-Za-z-]+")
QUERY_KEY = re.compile(r"[A-Za-z][A-Za-z0-9_-]{0,31}")  # no `%` or `+`: a key means what it spells
HOP_BY_HOP = {b"connection", b"keep-alive", b"proxy-connection", b"te", b"trailer", b"upgrade"}


@dataclass(frozen=True)
class Call:
    """An allowed request as a route's `admit` hook sees it: it may look things up on the daemon
    and answer the path to pass on (the same, or with a name replaced by the id it checked)."""

    method: str
    path: str  # without the query
    match: re.Match[str]  # the route's match: its named groups (`id`) name what is asked about
    body: Any  # the decoded JSON body, or None without one
    daemon: Daemon


@dataclass(frozen=True)
class Route:
    """One allowed request: method and exact path (a regex after the optional /v1.NN prefix), the
    query keys it may carry (None: any, for a read-only route), whether it takes a JSON body, and
    whether it may upgrade to a raw stream (an attached exec)."""

    method: str
    path: str
    query: frozenset[str] | None = None
    body: bool = False
    upgrade: bool = False
    admit: Callable[[Call], str] | None = None
    check_query: Callable[[dict[str, str]], None] | None = None


@dataclass(frozen=True)
class Profile:
    """What one kind of client may ask the daemon: its routes, and how large a body may be."""

    name: str
    routes: tuple[Route, ...]
    max_body_bytes: int = 0
    compiled: tuple[tuple[re.Pattern[str], Route], ...] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        compiled = tuple((re.compile(API_VERSION + r.path), r) for r in self.routes)
        object.__setattr__(self, "compiled", compiled)

    def route(self, method: str, path: str) -> tuple[Route, re.Match[str]] | None:
        for pattern, route in self.compiled:
            if route.method == method and (match := pattern.fullmatch(path)):
                return route, match
        return None

    def allows(self, method: str, path: str) -> bool:
        return self.route(method, path) is not None


def _reads(*paths: str) -> tuple[Route, ...]:
    return tuple(Route(method, path) for path in paths for method in ("GET", "HEAD"))


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
INSPECT = re.compile(API_VERSION + f"/containers/{NAME}/json")


@dataclass(frozen=True)
class Request:
    method: str
    path: str
    query: str  # the raw query, with its "?" when there is one
    route: Route
    match: re.Match[str]
    headers: tuple[bytes, ...]  # the kept header lines, hop-by-hop ones dropped
    length: int  # Content-Length, 0 without one
    upgrade: bool  # an allowed `Upgrade: tcp` (an attached exec start)

    def head(self, path: str) -> bytes:
        """What is sent to the daemon: the request line for `path`, the kept headers, and the
        connection handling (`close`, or the upgrade the route allows)."""
        line = f"{self.method} {path}{self.query} HTTP/1.1".encode()
        end = [b"Connection: Upgrade", b"Upgrade: tcp"] if self.upgrade else [b"Connection: close"]
        return b"\r\n".join([line, *self.headers, *end]) + b"\r\n\r\n"


def check_request(raw_head: bytes, profile: Profile) -> Request:
    """The request head (without its blank line) if `profile` allows it, else `Refused`."""
    if b"\r" in raw_head.replace(b"\r\n", b"") or b"\n" in raw_head.replace(b"\r\n", b""):
        raise Refused(400, "bare CR or LF in the request head")
    line, *header_lines = raw_head.split(b"\r\n")
    parts = line.split(b" ")
    if len(parts) != 3 or not TOKEN.fullmatch(parts[0]) or parts[2] not in (b"HTTP/1.1", b"HTTP/1.0"):
        raise Refused(400, "malformed request line")
    method, target = parts[0].decode(), parts[1].decode("ascii", "replace")
    path, mark, query = target.partition("?")
    if not _plain_path(path):
        raise Refused(403, f"path not allowed: {target[:200]!r}")
    found = profile.route(method, path)
    if found is None:
        raise Refused(403, f"{method} {path[:200]} is not allowed by the {profile.name} profile")
    route, match = found
    if route.query is not None:
        params = _checked_query(query, route.query)
        if route.check_query is not None:
            route.check_query(params)
    kept, length, upgrade = _checked_headers(header_lines, route, profile)
    return Request(method, path, mark + query, route, match, tuple(kept), length, upgrade)


def _plain_path(path: str) -> bool:
    """An absolute path with nothing a server might decode or normalise into another path."""
    return (
        path.startswith("/")
        and all(0x21 <= ord(c) < 0x7F for c in path)
        and not any(bad in path for bad in ("%", "//", "\\", "#", ";"))
        and not any(segment in (".", "..") for segment in path.split("/"))
        and ".." not in path
    )


def _checked_query(query: str, allowed: frozenset[str]) -> dict[str, str]:
    """The query's raw values by key: each key on the route's list, once, spelled plainly (Go
    decodes `%6Eame` as `name` and, in older versions, splits on `;` too)."""
    params: dict[str, str] = {}
    if not query:
        return params
    if ";" in query or "#" in query or not all(0x21 <= ord(c) < 0x7F for c in query):
        raise Refused(403, "query not allowed")
    for pair in query.split("&"):
        key, _, value = pair.partition("=")
        if not QUERY_KEY.fullmatch(key) or key not in allowed:
            raise Refused(403, f"query parameter {key[:40]!r} is not allowed here")
        if key in params:
            raise Refused(403, f"query parameter {key!r} given twice")
        params[key] = value
    return params


def _checked_headers(lines: list[bytes], route: Route, profile: Profile) -> tuple[list[bytes], int, bool]:
    kept: list[bytes] = []
    lengths: list[bytes] = []
    upgrades: list[bytes] = []
    for header in lines:
        name, sep, value = header.partition(b":")
        if not sep or not TOKEN.fullmatch(name):  # also a folded line (leading whitespace)
            raise Refused(400, "malformed header line")
        key, value = name.lower(), value.strip()
        if key in (b"transfer-encoding", b"expect") or (key == b"upgrade" and not route.upgrade):
            raise Refused(403, f"{name.decode()} is not allowed")
        if key == b"upgrade":
            upgrades.append(value)
        if key == b"content-length":
            lengths.append(value)
        if key not in HOP_BY_HOP:
            kept.append(header)
    if upgrades and upgrades != [b"tcp"]:
        raise Refused(403, "only `Upgrade: tcp` is allowed (an attached exec)")
    if len(lengths) > 1 or (lengths and not re.fullmatch(rb"[0-9]{1,12}", lengths[0])):
        raise Refused(400, "one numeric Content-Length at most")
    length = int(lengths[0]) if lengths else 0
    if length and not route.body:
        raise Refused(403, f"{route.method} {route.path} takes no request body")
    if length > profile.max_body_bytes:
        raise Refused(403, f"a body of {length} bytes is over the {profile.max_body_bytes}-byte cap")
    return kept, length, bool(upgrades)


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
            head, rest = read_head(conn)
            request = check_request(head, self.server.profile)
            body = read_body(conn, rest, request.length)
            path = self._admitted(request, body)
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
            upstream.sendall(request.head(path) + body)
            if request.method == "GET" and INSPECT.fullmatch(path):
                conn.sendall(without_environment(read_all(upstream)))
            else:
                pump(conn, upstream)

    def _admitted(self, request: Request, body: bytes) -> str:
        """The path to pass on, after the route's own checks of what the request names."""
        if request.route.admit is None:
            return request.path
        decoded = decode_json(body) if body else None
        daemon = Daemon(self.server.socket_path)
        return request.route.admit(Call(request.method, request.path, request.match, decoded, daemon))


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
