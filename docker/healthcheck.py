"""The worker image's HEALTHCHECK: the container's `wave` process is alive and reaches Redis.

A role worker is healthy only while its heartbeat key is fresh (the one the supervisor reads to
detect dead workers), so a wedged worker turns unhealthy too; the sandbox runner likewise while its
own heartbeat (`keys.sandbox_runner()`) is there; a Docker API proxy while it answers `/_ping`
through to the daemon. Exit 0 healthy, 1 not; one line why.
"""

from __future__ import annotations

import http.client
import sys
from pathlib import Path

from wavefleet import logs
from wavefleet.config import load_settings
from wavefleet.connection import connect
from workers.worker import name_file

ROLES = ("worker", "supervisor", "watch", "sandbox", "monitor", "notifier", "docker-proxy")


def wave_process() -> tuple[int, list[str]] | None:
    """The container's main `wave` process (the lowest pid: its forked work horses come later)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            argv = (entry / "cmdline").read_bytes().decode(errors="replace").split("\0")
        except OSError:
            continue
        for i, arg in enumerate(argv[:2]):
            if Path(arg).name == "wave" and len(argv) > i + 1 and argv[i + 1] in ROLES:
                found.append((int(entry.name), argv[i + 1 :]))
    return min(found) if found else None


def say(line: str) -> int:
    """Docker keeps the check's output in `docker inspect` (State.Health.Log)."""
    sys.stdout.write(line + "\n")
    return 0


def option(args: list[str], name: str, default: str) -> str:
    return args[args.index(name) + 1] if name in args and args.index(name) + 1 < len(args) else default


def main() -> int:
    process = wave_process()
    if process is None:
        say("no wave process runs in this container")
        return 1
    pid, args = process
    if args[0] == "docker-proxy":
        return proxy_health(pid, option(args, "--listen", "127.0.0.1:2375"))
    return redis_health(pid, args)


def redis_health(pid: int, args: list[str]) -> int:
    try:
        settings = load_settings()
        redis = connect(settings)
        redis.ping()
        if args[0] == "sandbox":
            alive = redis.exists(settings.keys.sandbox_runner())
            say(f"sandbox runner (pid {pid}) " + ("heartbeats" if alive else "has no fresh heartbeat"))
            return 0 if alive else 1
        if args[0] != "worker":
            say(f"{args[0]} (pid {pid}) reaches Redis")
            return 0
        identity = logs.identity(
            option(args, "--domain", ""), option(args, "--role", ""), int(option(args, "--index", "1"))
        )
        published = name_file(pid)  # the worker writes its unique name there when it starts
        if not published.exists():
            say(f"{identity} (pid {pid}): not started yet ({published} missing)")
            return 1
        key = settings.keys.worker_heartbeat(published.read_text().strip())
        if not redis.exists(key):
            say(f"{identity} (pid {pid}): no fresh heartbeat ({key})")
            return 1
        say(f"{identity} (pid {pid}) heartbeats")
        return 0
    except Exception as exc:  # any failure is "unhealthy", said in one line
        say(f"unhealthy: {type(exc).__name__}: {exc}")
        return 1


def proxy_health(pid: int, listen: str) -> int:
    port = int(listen.rpartition(":")[2])
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    try:
        conn.request("GET", "/_ping")
        status = conn.getresponse().status
    except OSError as exc:
        say(f"docker-proxy (pid {pid}): {exc}")
        return 1
    finally:
        conn.close()
    say(f"docker-proxy (pid {pid}): /_ping answered {status}")
    return 0 if status == 200 else 1


if __name__ == "__main__":
    sys.exit(main())
