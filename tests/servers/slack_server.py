"""A local Slack Web API on 127.0.0.1: the real `slack_sdk` WebClient points its base_url here.

It answers `chat.postMessage` and `auth.test` the way Slack does (form or JSON bodies, the token in
``Authorization: Bearer``, HTTP 200 with ``{"ok": false, "error": ...}`` for a refused token) and an
incoming webhook (``POST /services/...``, a plain ``ok``). Every accepted message is recorded with
its channel, text, blocks, ``thread_ts`` and the ``ts`` it was given. Failure modes are switched by
tests: ``rate_limited(retry_after_s)`` (429 with Retry-After), ``failing(500)``, ``revoke()``
(``invalid_auth``), and ``close()``/``reopen()`` (connection refused, then the same port again).
"""

from __future__ import annotations

import json
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler
from typing import Any
from urllib.parse import parse_qs

from .loopback import Loopback

WEBHOOK_PREFIX = "/services/"


@dataclass
class Posted:
    """One message the server accepted."""

    channel: str
    text: str
    blocks: list[Any]
    thread_ts: str | None
    ts: str
    at: float
    raw: str  # the request body as received (a secret must never be in it)
    webhook: bool = False


@dataclass
class Refused:
    """One request the server answered with an error (status, Slack error name, when)."""

    status: int
    error: str
    at: float


@dataclass
class _Mode:
    status: int = 200  # 429 or 5xx: every request answered with it
    retry_after_s: int = 0
    error: str = ""  # a Slack error for every authenticated call (invalid_auth, token_revoked)
    times: int | None = None  # how many requests the mode lasts (None: until changed)
    delay_s: float = 0.0  # each request answered this much later (a slow Slack)


@dataclass
class SlackServer:
    token: str = "xoxb-test-token-0001"
    messages: list[Posted] = field(default_factory=list)
    refused: list[Refused] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._lock = threading.Lock()
        self._mode = _Mode()
        self._clock = 0
        self._server = Loopback(_handler_for(self))
        self.open()

    # Lifecycle ------------------------------------------------------------------------------
    def open(self) -> SlackServer:
        self._server.open()
        return self

    def close(self) -> None:
        """Stop listening: connections are refused until `reopen()`."""
        self._server.close()

    reopen = open

    @property
    def _port(self) -> int:
        return self._server.port

    @property
    def url(self) -> str:
        """The base_url for slack_sdk (it appends the method name)."""
        return f"http://127.0.0.1:{self._port}/api/"

    @property
    def webhook_url(self) -> str:
        return f"http://127.0.0.1:{self._port}{WEBHOOK_PREFIX}T000/B000/{self.token[-8:]}"

    # Failure modes --------------------------------------------------------------------------
    def rate_limited(self, retry_after_s: int, times: int | None = None) -> None:
        self._set(_Mode(status=429, retry_after_s=retry_after_s, times=times))

    def failing(self, status: int = 500, times: int | None = None) -> None:
        self._set(_Mode(status=status, times=times))

    def revoke(self, error: str = "invalid_auth") -> None:
        self._set(_Mode(error=error))

    def slow(self, delay_s: float) -> None:
        """Answer every request `delay_s` late (otherwise as usual) until changed."""
        self._set(_Mode(delay_s=delay_s))

    def healthy(self) -> None:
        self._set(_Mode())

    def _set(self, mode: _Mode) -> None:
        with self._lock:
            self._mode = mode

    def _take_mode(self) -> _Mode:
        with self._lock:
            mode = self._mode
            if mode.times is not None:
                mode.times -= 1
                if mode.times <= 0:
                    self._mode = _Mode()
            return mode

    # Reading back ---------------------------------------------------------------------------
    def threads(self) -> dict[str, list[Posted]]:
        """Replies by their parent's ts, in the order the server accepted them."""
        with self._lock:
            found: dict[str, list[Posted]] = {}
            for m in self.messages:
                if m.thread_ts:
                    found.setdefault(m.thread_ts, []).append(m)
            return found

    def parents(self) -> list[Posted]:
        with self._lock:
            return [m for m in self.messages if not m.thread_ts]

    def next_ts(self) -> str:
        with self._lock:
            self._clock += 1
            return f"{int(time.time())}.{self._clock:06d}"

    def record(self, message: Posted) -> None:
        with self._lock:
            self.messages.append(message)

    def refuse(self, status: int, error: str) -> None:
        with self._lock:
            self.refused.append(Refused(status, error, time.time()))


def _body(raw: bytes, content_type: str) -> dict[str, Any]:
    if "json" in content_type:
        loaded = json.loads(raw or b"{}")
        return loaded if isinstance(loaded, dict) else {}
    form = {k: v[-1] for k, v in parse_qs(raw.decode()).items()}
    if isinstance(form.get("blocks"), str):
        form["blocks"] = json.loads(form["blocks"])
    return form


def _handler_for(server: SlackServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        disable_nagle_algorithm = True

        def log_message(self, format: str, *args: Any) -> None:
            pass

        def do_POST(self) -> None:
            raw = self.rfile.read(int(self.headers.get("content-length") or 0))
            path = self.path.split("?")[0]
            mode = server._take_mode()
            time.sleep(mode.delay_s)
            if mode.status != 200:
                server.refuse(mode.status, "scripted")
                headers = {"Retry-After": str(mode.retry_after_s)} if mode.status == 429 else {}
                self._send(mode.status, {"ok": False, "error": "ratelimited"}, headers)
                return
            body = _body(raw, self.headers.get("content-type", ""))
            if path.startswith(WEBHOOK_PREFIX):
                self._webhook(path, body, raw)
                return
            method = path.rsplit("/", 1)[-1]
            bearer = self.headers.get("authorization", "")
            if bearer != f"Bearer {server.token}" or mode.error:
                error = mode.error or ("not_authed" if not bearer else "invalid_auth")
                server.refuse(200, error)
                self._send(200, {"ok": False, "error": error})
            elif method == "auth.test":
                self._send(200, {"ok": True, "team": "T", "user": "wave", "bot_id": "B1"})
            elif method == "chat.postMessage":
                self._post(body, raw)
            else:
                self._send(200, {"ok": False, "error": "unknown_method"})

        def _post(self, body: dict[str, Any], raw: bytes) -> None:
            channel = str(body.get("channel") or "")
            if not channel:
                self._send(200, {"ok": False, "error": "channel_not_found"})
                return
            ts = server.next_ts()
            thread = body.get("thread_ts")
            blocks = body.get("blocks") or []
            text = str(body.get("text") or "")
            server.record(
                Posted(channel, text, blocks, thread and str(thread), ts, time.time(), raw.decode())
            )
            self._send(200, {"ok": True, "channel": channel, "ts": ts, "message": {"text": text}})

        def _webhook(self, path: str, body: dict[str, Any], raw: bytes) -> None:
            if not path.endswith(server.token[-8:]) or server._mode.error:
                server.refuse(403, "invalid_token")
                self._send_text(403, "invalid_token")
                return
            text, blocks = str(body.get("text") or ""), body.get("blocks") or []
            posted = Posted("webhook", text, blocks, None, server.next_ts(), time.time(), raw.decode(), True)
            server.record(posted)
            self._send_text(200, "ok")

        def _send(self, status: int, payload: dict[str, Any], headers: dict[str, str] | None = None) -> None:
            self._write(status, json.dumps(payload).encode(), "application/json", headers or {})

        def _send_text(self, status: int, text: str) -> None:
            self._write(status, text.encode(), "text/plain", {})

        def _write(self, status: int, data: bytes, kind: str, headers: dict[str, str]) -> None:
            try:
                self.send_response(status)
                self.send_header("content-type", kind)
                self.send_header("content-length", str(len(data)))
                for name, value in headers.items():
                    self.send_header(name, value)
                self.end_headers()
                self.wfile.write(data)
            except (BrokenPipeError, ConnectionResetError):
                pass

    return Handler
