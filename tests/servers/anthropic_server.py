"""A local Anthropic Messages API on 127.0.0.1: the real `anthropic` SDK points its base_url here.

It answers `POST /v1/messages` the way the service does: it checks the key (``x-api-key`` or, as
anthropic 2.x sends it, ``authorization: Bearer``) and the ``anthropic-version`` header, replies with
a Message (text and ``tool_use`` blocks, usage), and simulates prompt caching: a prefix that ends at
a ``cache_control`` breakpoint (tools, then system, in render order) and is long enough is written
once (``cache_creation_input_tokens``) and read afterwards (``cache_read_input_tokens``). Tests
script replies (429, 529, 5xx, delays past the client's timeout, malformed bodies) in order, or
answer by the request's content with `respond_with(fn)` (a scripted model: tool calls chosen from
the system prompt and the turns so far, which works when several processes call at once).
"""

from __future__ import annotations

import hashlib
import json
import math
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

ERROR_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    404: "not_found_error",
    429: "rate_limit_error",
    500: "api_error",
    503: "api_error",
    529: "overloaded_error",
}


@dataclass
class Reply:
    """One scripted answer; the defaults give a normal computed reply."""

    status: int = 200
    text: str | None = None  # the assistant's text (default: an echo of the last user text)
    tool_use: list[tuple[str, dict[str, Any]]] = field(default_factory=list)
    raw: bytes | None = None  # exactly these body bytes (a malformed reply)
    delay_s: float = 0.0
    headers: dict[str, str] = field(default_factory=dict)


Responder = Callable[[dict[str, Any]], Reply | None]


def tokens_of(value: Any) -> int:
    """The server's token count: one token per 4 characters of the JSON text, as a stand-in tokenizer."""
    text = value if isinstance(value, str) else json.dumps(value, sort_keys=True)
    return math.ceil(len(text) / 4)


class AnthropicServer:
    def __init__(
        self, api_key: str = "test-anthropic-key", min_cache_tokens: int = 1024, reply_chars: int = 0
    ) -> None:
        self.api_key = api_key
        self.min_cache_tokens = min_cache_tokens
        self.reply_chars = reply_chars  # pad default replies to this length (realistic output sizes)
        self.requests: list[dict[str, Any]] = []
        self._script: deque[Reply] = deque()
        self._responder: Responder | None = None
        self._cache: set[str] = set()
        self._lock = threading.Lock()
        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), _handler_for(self))
        self._httpd.daemon_threads = True
        self._thread = threading.Thread(
            target=self._httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )

    @property
    def url(self) -> str:
        host, port = self._httpd.server_address[:2]
        return f"http://{host!s}:{port}"

    def start(self) -> AnthropicServer:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()

    def script(self, *replies: Reply) -> None:
        """Answer the next requests with these replies, in order; then normal replies again."""
        with self._lock:
            self._script.extend(replies)

    def respond_with(self, fn: Responder | None) -> None:
        """Answer each request with `fn(body)` (the request's JSON body); None from it: a normal reply.
        Queued `script` replies still come first. `fn` runs on the server's threads: keep it pure."""
        with self._lock:
            self._responder = fn

    def reset(self) -> None:
        with self._lock:
            self._script.clear()
            self._responder = None
            self.requests.clear()
            self._cache.clear()

    def next_reply(self, body: dict[str, Any] | None = None) -> Reply:
        with self._lock:
            if self._script:
                return self._script.popleft()
            responder = self._responder
        reply = responder(body) if responder is not None and body is not None else None
        return reply if reply is not None else Reply()

    # The Messages API ----------------------------------------------------------------------------
    def authorised(self, headers: dict[str, str]) -> bool:
        bearer = headers.get("authorization", "")
        return headers.get("x-api-key") == self.api_key or bearer == f"Bearer {self.api_key}"

    def message(self, body: dict[str, Any], reply: Reply) -> dict[str, Any]:
        usage = self._usage(body)
        content: list[dict[str, Any]] = []
        text = (
            reply.text
            if reply.text is not None
            else padded(f"echo: {_last_user_text(body)[:200]}", self.reply_chars)
        )
        if text:
            content.append({"type": "text", "text": text})
        for index, (name, arguments) in enumerate(reply.tool_use):
            content.append(
                {
                    "type": "tool_use",
                    "id": f"toolu_{len(self.requests)}_{index}",
                    "name": name,
                    "input": arguments,
                }
            )
        usage["output_tokens"] = max(1, tokens_of(content))
        return {
            "id": f"msg_{len(self.requests):06d}",
            "type": "message",
            "role": "assistant",
            "model": body.get("model", ""),
            "content": content,
            "stop_reason": "tool_use" if reply.tool_use else "end_turn",
            "stop_sequence": None,
            "usage": usage,
        }

    def _usage(self, body: dict[str, Any]) -> dict[str, int]:
        total = tokens_of({k: body.get(k) for k in ("tools", "system", "messages")})
        prefix = _cached_prefix(body)
        prefix_tokens = tokens_of(prefix) if prefix else 0
        usage = {"input_tokens": total, "cache_creation_input_tokens": 0, "cache_read_input_tokens": 0}
        if prefix and prefix_tokens >= self.min_cache_tokens:
            keyed = json.dumps([body.get("model"), prefix], sort_keys=True)
            digest = hashlib.sha256(keyed.encode()).hexdigest()
            with self._lock:
                hit = digest in self._cache
                self._cache.add(digest)
            usage["cache_read_input_tokens" if hit else "cache_creation_input_tokens"] = prefix_tokens
            usage["input_tokens"] = max(0, total - prefix_tokens)
        return usage


def padded(text: str, length: int) -> str:
    """`text` followed by deterministic filler up to `length` characters."""
    filler = " The change keeps the module boundaries, adds tests for each case and updates the docs."
    return text if len(text) >= length else (text + filler * (length // len(filler) + 1))[:length]


def _cached_prefix(body: dict[str, Any]) -> list[Any]:
    """Tools then system blocks, up to the last block carrying cache_control (empty if none does)."""
    system = body.get("system") or []
    system_blocks = [{"type": "text", "text": system}] if isinstance(system, str) else system
    blocks = [*(body.get("tools") or []), *system_blocks]
    marked = [i for i, block in enumerate(blocks) if isinstance(block, dict) and block.get("cache_control")]
    return blocks[: marked[-1] + 1] if marked else []


def _last_user_text(body: dict[str, Any]) -> str:
    for message in reversed(body.get("messages") or []):
        if message.get("role") != "user":
            continue
        content = message.get("content")
        if isinstance(content, str):
            return content
        texts = [b.get("text", "") for b in content if b.get("type") == "text"]
        results = [str(b.get("content", "")) for b in content if b.get("type") == "tool_result"]
        return " ".join(texts + results)
    return ""


def _error(status: int, message: str) -> bytes:
    kind = ERROR_TYPES.get(status, "api_error")
    return json.dumps({"type": "error", "error": {"type": kind, "message": message}}).encode()


def _handler_for(server: AnthropicServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        disable_nagle_algorithm = True  # headers and body go out in two writes: no 40 ms delayed-ACK stall

        def log_message(self, format: str, *args: Any) -> None:
            pass

        def do_POST(self) -> None:
            length = int(self.headers.get("content-length") or 0)
            raw = self.rfile.read(length)
            headers = {k.lower(): v for k, v in self.headers.items()}
            if self.path.split("?")[0] != "/v1/messages":
                self._send(404, _error(404, f"no route {self.path}"))
                return
            if not server.authorised(headers):
                self._send(401, _error(401, "invalid x-api-key"))
                return
            if "anthropic-version" not in headers:
                self._send(400, _error(400, "anthropic-version header is required"))
                return
            try:
                body = json.loads(raw)
            except ValueError:
                self._send(400, _error(400, "request body is not JSON"))
                return
            server.requests.append({"headers": headers, "body": body, "at": time.time()})
            self._answer(body, server.next_reply(body))

        def _answer(self, body: dict[str, Any], reply: Reply) -> None:
            if reply.delay_s:
                time.sleep(reply.delay_s)
            if reply.raw is not None:
                self._send(reply.status, reply.raw, reply.headers)
            elif reply.status != 200:
                self._send(reply.status, _error(reply.status, f"scripted {reply.status}"), reply.headers)
            else:
                self._send(200, json.dumps(server.message(body, reply)).encode(), reply.headers)

        def _send(self, status: int, payload: bytes, headers: dict[str, str] | None = None) -> None:
            try:
                self.send_response(status)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(payload)))
                self.send_header("request-id", f"req_{len(server.requests):06d}")
                for name, value in (headers or {}).items():
                    self.send_header(name, value)
                self.end_headers()
                self.wfile.write(payload)
            except (BrokenPipeError, ConnectionResetError):
                pass  # the client gave up (a timeout test): nothing to answer

    return Handler
