"""The supervisor's HTTP endpoints: `/metrics` for Prometheus, `/healthz` (alive), `/readyz` (can work).

A small threaded server on its own daemon threads: a slow scrape never holds up dispatching. It is
off unless `metrics.port` is set, and binds 127.0.0.1 unless `metrics.host` says otherwise.
"""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from redis import Redis
from redis.exceptions import RedisError

from . import logs
from .config import MetricsSettings
from .errors import ConfigError
from .keys import Keys
from .metrics import FleetCollector


def readiness(redis: Redis, keys: Keys) -> str | None:
    """Why the fleet cannot work right now (one line), or None when it can."""
    try:
        redis.ping()
        watcher_alive = redis.exists(keys.watcher_heartbeat())
        halted = redis.exists(keys.halt())
    except RedisError as exc:
        return f"Redis unreachable: {str(exc).splitlines()[0] if str(exc) else type(exc).__name__}"
    if not watcher_alive:
        return "the EMERGENCY-STOP watcher has no heartbeat (is `wave watch` running?)"
    if halted:
        return "the fleet is halted (`wave resume` continues it)"
    return None


class HealthServer:
    """Serves the endpoints until `close`; the port is bound in the constructor (errors said at once)."""

    def __init__(
        self, settings: MetricsSettings, redis: Redis, keys: Keys, collector: FleetCollector
    ) -> None:
        registry = CollectorRegistry(auto_describe=False)
        registry.register(collector)
        handler = _handler(redis, keys, registry)
        try:
            self.server = ThreadingHTTPServer((settings.host, settings.port), handler)
        except OSError as exc:
            raise ConfigError(
                f"WAVE_METRICS__PORT: cannot listen on {settings.host}:{settings.port} ({exc.strerror}); "
                "choose a free port, or 0 to turn the endpoints off"
            ) from None
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, name="health", daemon=True)

    @property
    def port(self) -> int:
        return int(self.server.server_address[1])

    def start(self) -> None:
        self.thread.start()
        logs.get().info("metrics and health endpoints listening", address=f"{self.server.server_address}")

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def _handler(redis: Redis, keys: Keys, registry: CollectorRegistry) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            path = self.path.split("?", 1)[0]
            if path == "/metrics":
                try:
                    self._send(200, generate_latest(registry), CONTENT_TYPE_LATEST)
                except RedisError as exc:
                    self._json(503, {"error": f"Redis unreachable: {exc}"})
            elif path == "/healthz":
                self._json(200, {"status": "ok"})
            elif path == "/readyz":
                reason = readiness(redis, keys)
                self._json(200 if reason is None else 503, {"ready": reason is None, "reason": reason})
            else:
                self._json(404, {"error": "not found: /metrics, /healthz, /readyz"})

        def _json(self, code: int, body: dict[str, Any]) -> None:
            self._send(code, (json.dumps(body) + "\n").encode(), "application/json")

        def _send(self, code: int, body: bytes, content_type: str) -> None:
            self.send_response(code)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:
            pass  # a scrape every few seconds is not worth a log line

    return Handler
