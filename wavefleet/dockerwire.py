"""The HTTP wire under the Docker API proxy (`wavefleet.dockerproxy`): reading one request's head
and body off a client, the proxy's own answers, lookups on the daemon, and relaying its replies.
"""

from __future__ import annotations

import http.client
import json
import selectors
import socket
from dataclasses import dataclass
from typing import Any

MAX_HEAD_BYTES = 16 * 1024
MAX_INSPECT_BYTES = 4 * 1024 * 1024
CHUNK = 64 * 1024
DAEMON_TIMEOUT_S = 10.0


class Refused(Exception):
    """A request the proxy answers itself (403 not allowed, 400 malformed, 404 when what it names
    does not exist) and never forwards."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


REASONS = {
    400: "Bad Request",
    403: "Forbidden",
    404: "Not Found",
    502: "Bad Gateway",
    503: "Service Unavailable",
}


def refusal(status: int, message: str) -> bytes:
    body = ('{"message": "docker-proxy: ' + message.replace("\\", "\\\\").replace('"', '\\"') + '"}').encode()
    head = f"HTTP/1.1 {status} {REASONS[status]}\r\nContent-Type: application/json\r\n"
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


def read_body(conn: socket.socket, rest: bytes, length: int) -> bytes:
    """Exactly `length` body bytes; more bytes already sent are a second (pipelined) request."""
    data = rest
    while len(data) < length:
        chunk = conn.recv(min(CHUNK, length - len(data)))
        if not chunk:
            raise Refused(400, "connection closed before the body ended")
        data += chunk
    if len(data) > length:
        raise Refused(400, "one request per connection")
    return data


def decode_json(body: bytes) -> Any:
    """A JSON body as Python data. The daemon's Go decoder matches keys case-insensitively and keeps
    the last of duplicates, so any two keys of one object that differ only by case are refused."""

    def pairs(items: list[tuple[str, Any]]) -> dict[str, Any]:
        if len({k.casefold() for k, _ in items}) != len(items):
            raise Refused(403, "duplicate keys in the JSON body")
        return dict(items)

    try:
        return json.loads(body, object_pairs_hook=pairs)
    except (ValueError, RecursionError):
        raise Refused(400, "the body is not JSON") from None


class _UnixConnection(http.client.HTTPConnection):
    def __init__(self, socket_path: str) -> None:
        super().__init__("docker", timeout=DAEMON_TIMEOUT_S)
        self.socket_path = socket_path

    def connect(self) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(self.timeout)
        self.sock.connect(self.socket_path)


@dataclass(frozen=True)
class Daemon:
    """The Docker daemon behind the proxy, for the lookups a route makes before passing a call on."""

    socket_path: str

    def get(self, path: str) -> Any:
        """The JSON the daemon answers to GET `path`; `Refused(404)` when it does not know the thing."""
        conn = _UnixConnection(self.socket_path)
        try:
            conn.request("GET", path)
            reply = conn.getresponse()
            data = reply.read(MAX_INSPECT_BYTES + 1)
        except (OSError, http.client.HTTPException) as exc:
            raise Refused(502, f"the Docker daemon cannot be reached: {exc}") from None
        finally:
            conn.close()
        if reply.status == 404:
            raise Refused(404, f"no such object: {path[:200]}")
        if reply.status != 200 or len(data) > MAX_INSPECT_BYTES:
            raise Refused(502, f"the daemon answered {reply.status} to the proxy's own lookup")
        try:
            return json.loads(data)
        except ValueError:
            raise Refused(502, "the daemon's reply to the proxy's own lookup could not be read") from None


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
