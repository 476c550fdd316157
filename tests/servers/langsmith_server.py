"""A local LangSmith collector on 127.0.0.1: the real `langsmith.Client` points its api_url here.

It answers what the client calls for tracing: ``GET /info``, ``POST /runs/batch`` (``{"post": [...],
"patch": [...]}``, JSON, zstd-compressed when the client says so), ``POST /runs`` and ``PATCH
/runs/{id}``, and ``POST /runs/multipart`` (its parts ``post.<id>``, ``patch.<id>``,
``post.<id>.inputs`` and so on merged into runs). Creates and updates are merged by run id, so a test
reads each run as LangSmith would show it. ``failing(503)`` answers every write with an error;
``delay_s`` answers late; ``close()``/``reopen()`` refuse connections, then the same port again.
"""

from __future__ import annotations

import email.parser
import email.policy
import json
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler
from typing import Any

from .loopback import Loopback


@dataclass
class LangSmithServer:
    api_key: str = "lsv2-test-key-0001"
    runs: dict[str, dict[str, Any]] = field(default_factory=dict)
    requests: list[tuple[str, str]] = field(default_factory=list)  # (method, path) of every request
    bodies: list[bytes] = field(default_factory=list)  # raw write bodies (a secret must never be in one)

    def __post_init__(self) -> None:
        self._lock = threading.Lock()
        self.status = 200
        self.delay_s = 0.0  # every write answered this late (a LangSmith that hangs)
        self._server = Loopback(_handler_for(self))
        self.open()

    def open(self) -> LangSmithServer:
        self._server.open()
        return self

    def close(self) -> None:
        """Stop listening: connections are refused until `reopen()`."""
        self._server.close()

    @property
    def _port(self) -> int:
        return self._server.port

    reopen = open

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._port}"

    def failing(self, status: int = 503) -> None:
        self.status = status

    def healthy(self) -> None:
        self.status = 200

    def merge(self, op: str, run: dict[str, Any]) -> None:
        with self._lock:
            known = self.runs.setdefault(str(run["id"]), {})
            for key, value in run.items():
                if op == "post" or value is not None:
                    known[key] = value

    def snapshot(self) -> dict[str, dict[str, Any]]:
        with self._lock:
            return {k: dict(v) for k, v in self.runs.items()}

    def traces(self) -> dict[str, list[dict[str, Any]]]:
        """Runs by trace id."""
        found: dict[str, list[dict[str, Any]]] = {}
        for run in self.snapshot().values():
            found.setdefault(str(run.get("trace_id")), []).append(run)
        return found


def _decode(raw: bytes, headers: Any) -> bytes:
    if headers.get("Content-Encoding", "") == "zstd":
        import zstandard  # noqa: PLC0415 - only when the client compresses

        return zstandard.ZstdDecompressor().decompressobj().decompress(raw)
    return raw


def _multipart(raw: bytes, content_type: str) -> list[tuple[str, dict[str, Any]]]:
    """The runs of a multipart body: ``post.<id>`` / ``patch.<id>`` and their ``.<field>`` parts."""
    message = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(
        f"Content-Type: {content_type}\r\n\r\n".encode() + raw
    )
    runs: dict[tuple[str, str], dict[str, Any]] = {}
    for part in message.iter_parts():
        name = part.get_param("name", header="content-disposition") or ""
        op, run_id, *rest = str(name).split(".")
        value = json.loads(bytes(part.get_payload(decode=True) or b"null"))
        run = runs.setdefault((op, run_id), {"id": run_id})
        if rest:
            run[rest[0]] = value
        else:
            run.update(value)
    return [(op, run) for (op, _id), run in runs.items()]


def _handler_for(server: LangSmithServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: Any) -> None:
            pass

        def do_GET(self) -> None:
            server.requests.append(("GET", self.path))
            if self.path.rstrip("/").endswith("/info"):
                self._send(
                    200, {"version": "0.10.0", "batch_ingest_config": {"size_limit_bytes": 20_000_000}}
                )
            else:
                self._send(404, {"detail": "not found"})

        def do_POST(self) -> None:
            self._write("POST")

        def do_PATCH(self) -> None:
            self._write("PATCH")

        def _write(self, method: str) -> None:
            raw = _decode(self.rfile.read(int(self.headers.get("Content-Length") or 0)), self.headers)
            server.requests.append((method, self.path))
            server.bodies.append(raw)
            if server.delay_s:
                time.sleep(server.delay_s)
            if server.status != 200:
                self._send(server.status, {"detail": "collector failing"})
                return
            if self.headers.get("x-api-key") != server.api_key:
                self._send(401, {"detail": "bad api key"})
                return
            path = self.path.split("?")[0].rstrip("/")
            if path.endswith("/runs/batch"):
                body = json.loads(raw)
                for op in ("post", "patch"):
                    for run in body.get(op) or ():
                        server.merge(op, run)
            elif path.endswith("/runs/multipart"):
                for op, run in _multipart(raw, self.headers.get("Content-Type", "")):
                    server.merge(op, run)
            elif method == "POST" and path.endswith("/runs"):
                server.merge("post", json.loads(raw))
            elif method == "PATCH" and "/runs/" in path:
                server.merge("patch", {**json.loads(raw), "id": path.rsplit("/", 1)[1]})
            else:
                self._send(404, {"detail": "not found"})
                return
            self._send(202, {})

        def _send(self, status: int, payload: dict[str, Any]) -> None:
            data = json.dumps(payload).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

    return Handler
