"""Helpers of the container tests (used by conftest.py and the tests): run commands, wait with a
bound, hash build inputs, and `Fleet`, a compose fleet started by `make up` and seen from the host."""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import subprocess
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from pydantic import SecretStr

from wavefleet.config import Settings
from wavefleet.connection import connect
from wavefleet.embedded import free_port
from wavefleet.store import StoryStore
from wavefleet.testing import wait_until

T = TypeVar("T")
REPO = Path(__file__).resolve().parents[2]
# One debootstrap serves every image: local-base.sh's defaults (the worker's packages, bubblewrap,
# nodejs for the sandbox image and redis-server), named here so that the cache key changes with them.
BASE_PACKAGES = "python3,python3-venv,ca-certificates,git,bubblewrap,nodejs,redis-server"
WORKER_INPUTS = (
    "pyproject.toml",
    "README.md",
    ".dockerignore",
    "docker/Dockerfile",
    "docker/healthcheck.py",
    "wavefleet",
    "workers",
    "domains",
)
# the sandbox image copies only the wheelhouse (built per session from pyproject.toml's pins)
SANDBOX_INPUTS = ("pyproject.toml", ".dockerignore", "docker/sandbox.Dockerfile")
IGNORED = {"__pycache__", ".pytest_cache", ".mypy_cache", ".ruff_cache"}
# Compose project and container-name prefix, one per test session (never the user's own `wave`
# fleet, nor another session's on the same engine); the pid lets a later session reap it.
PROJECT_PREFIX = "wavetest-"
KEEP_TAGS = 3  # cached images kept per repository: a concurrent session may still use an older one
LOCK_FILE = Path("/tmp/wave-container-tests.lock")  # shared by every session on purpose
TEAM = ("pm-1", "cto-1", "fe-1", "fe-2", "be-1", "be-2", "qa-1")
BUILD_TIMEOUT_S = 900


def run(
    *argv: str | Path, timeout_s: float = 120, env: dict[str, str] | None = None, check: bool = True
) -> subprocess.CompletedProcess[str]:
    """Run a command from the repository root; fail with its output's tail if it fails."""
    proc = subprocess.run(
        [str(a) for a in argv],
        capture_output=True,
        text=True,
        timeout=timeout_s,
        env=env,
        cwd=REPO,
        check=False,
    )
    if check and proc.returncode != 0:
        raise AssertionError(
            f"`{' '.join(map(str, argv))}` exited {proc.returncode}:\n"
            f"{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
        )
    return proc


def wait_for(
    predicate: Callable[[], T],
    *,
    timeout_s: float,
    what: str,
    diagnose: Callable[[], str] = lambda: "",
    interval_s: float = 0.5,
) -> T:
    return wait_until(predicate, timeout_s=timeout_s, interval_s=interval_s, message=what, diagnose=diagnose)


def content_hash(*inputs: str | Path) -> str:
    """A digest of strings and of files' paths and bytes (folders recursively, caches ignored)."""
    digest = hashlib.sha256()
    for item in inputs:
        if isinstance(item, str):
            digest.update(item.encode())
            continue
        files = (
            [item]
            if item.is_file()
            else sorted(p for p in item.rglob("*") if p.is_file() and not IGNORED.intersection(p.parts))
        )
        for path in files:
            digest.update(str(path.relative_to(REPO)).encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()[:16]


def image_id(tag: str) -> str | None:
    proc = run("docker", "image", "inspect", "--format", "{{.Id}}", tag, check=False, timeout_s=30)
    return proc.stdout.strip() if proc.returncode == 0 else None


def drop_stale_tags(repository: str, keep: str) -> None:
    """Old test images of this repository (its cache key changed): ours, so removed, but the newest
    few stay for sessions still running older code (an image in use is never removed anyway)."""
    tags = run("docker", "images", repository, "--format", "{{.Repository}}:{{.Tag}}").stdout.split()
    stale = [t for t in tags if t != keep][KEEP_TAGS - 1 :]  # `docker images` lists newest first
    if stale:
        run("docker", "rmi", *stale, check=False, timeout_s=120)


@contextmanager
def build_lock() -> Iterator[None]:
    """One session builds (and prunes) at a time: the others then find the image already there."""
    with LOCK_FILE.open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def reap_abandoned_fleets() -> None:
    """Fleets of test sessions that died before their teardown (their pid is gone): ours to remove."""
    projects = run("docker", "ps", "-a", "--format", '{{.Label "com.docker.compose.project"}}').stdout.split()
    for project in set(projects):
        pid = project.removeprefix(PROJECT_PREFIX)
        if project.startswith(PROJECT_PREFIX) and pid.isdigit() and not Path(f"/proc/{pid}").exists():
            remove_project(project)


def remove_project(project: str) -> None:
    label = f"label=com.docker.compose.project={project}"
    for kind in ("container", "volume", "network"):
        left = run(
            "docker", kind, "ls", "-aq" if kind == "container" else "-q", "--filter", label, check=False
        ).stdout.split()
        if left:
            run("docker", kind, "rm", *(["-f"] if kind == "container" else []), *left, check=False)


def compose_command() -> list[str]:
    """`docker compose` (v2) if the plugin is there, else `docker-compose` (v1), as the Makefile does."""
    if run("docker", "compose", "version", check=False, timeout_s=30).returncode == 0:
        return ["docker", "compose"]
    return ["docker-compose"]


def clean_env(**extra: str) -> dict[str, str]:
    """The environment for make and compose: no WAVE_* or COMPOSE_* of the caller's shell."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("WAVE_", "COMPOSE_"))}
    env.update(extra)
    return env


def env_file_value(path: Path, name: str) -> str:
    """A variable of a compose env file, as compose-secrets.sh writes it (NAME=value lines)."""
    values = [line.split("=", 1)[1] for line in path.read_text().splitlines() if line.startswith(f"{name}=")]
    assert values, f"no {name} in {path}"
    return values[-1]


@dataclass
class Fleet:
    """A compose fleet started by `make up` under the test project, seen from the host. Its secrets
    are in `env_file` (a private compose/.env that `make up` creates), never the developer's own."""

    worker_image: str
    redis_image: str
    halt_dir: Path
    data_dir: Path
    env_file: Path
    sandbox_image: str
    project: str = field(default_factory=lambda: f"{PROJECT_PREFIX}{os.getpid()}")
    redis_port: int = field(default_factory=free_port)

    def make(
        self,
        target: str,
        *args: str,
        timeout_s: float = 300,
        check: bool = True,
    ) -> subprocess.CompletedProcess[str]:
        env = clean_env(REDIS_IMAGE=self.redis_image, REDIS_PORT=str(self.redis_port))
        return run(
            "make",
            "--no-print-directory",
            target,
            f"FLEET_IMAGE={self.worker_image}",
            f"SANDBOX_IMAGE={self.sandbox_image}",
            f"COMPOSE_PROJECT_NAME={self.project}",
            "COMPOSE_PROFILES=",
            f"HALT_DIR={self.halt_dir}",
            f"ENV_FILE={self.env_file}",
            *args,
            env=env,
            timeout_s=timeout_s,
            check=check,
        )

    def password(self, role: str) -> str:
        return env_file_value(self.env_file, f"REDIS_{role.upper()}_PASSWORD")

    def name(self, service: str) -> str:
        return f"{self.project}-{service}"

    def containers(self) -> list[dict[str, Any]]:
        ids = run(
            "docker", "ps", "-aq", "--filter", f"label=com.docker.compose.project={self.project}"
        ).stdout
        if not ids.split():
            return []
        return list(json.loads(run("docker", "inspect", *ids.split()).stdout))

    def exec(self, service: str, *argv: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return run("docker", "exec", self.name(service), *argv, timeout_s=60, check=check)

    def wave(self, *argv: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        """The `wave` command as `make wave ARGS=...` runs it (but with wave's own exit code): the
        operator's Redis user, its password through the docker client's environment."""
        env = clean_env(WAVE_REDIS__PASSWORD=self.password("operator"))
        user = ("-e", "WAVE_REDIS__USERNAME=operator", "-e", "WAVE_REDIS__PASSWORD")
        return run("docker", "exec", *user, self.name("supervisor"), "wave", *argv, env=env, check=check)

    def logs(self, service: str, tail: int | None = None) -> str:
        args = ["--tail", str(tail)] if tail else []
        proc = run("docker", "logs", *args, self.name(service), check=False)
        return proc.stdout + proc.stderr

    def diagnose(self) -> str:
        status = run(
            "docker",
            "ps",
            "-a",
            "--filter",
            f"label=com.docker.compose.project={self.project}",
            "--format",
            "{{.Names}}\t{{.Status}}",
            check=False,
        ).stdout
        names = [c["Name"].lstrip("/") for c in self.containers()]
        tails = [f"--- {n}\n{self.logs(n.removeprefix(self.project + '-'), 15)}" for n in names]
        return status + "\n".join(tails)

    def settings(self) -> Settings:
        """Host-side settings: Redis through the port published on 127.0.0.1."""
        return Settings(
            redis={
                "url": f"redis://127.0.0.1:{self.redis_port}/0",
                "username": "operator",
                "password": SecretStr(self.password("operator")),
            },
            data_dir=self.data_dir,
            domains_dir=REPO / "domains",
        )

    def store(self) -> StoryStore:
        settings = self.settings()
        return StoryStore(connect(settings), settings.keys, settings.pipeline.max_rounds)

    def down(self) -> None:
        """`make down VOLUMES=1`, then remove by label whatever it left (a failed start)."""
        self.make("down", "VOLUMES=1", "DOMAIN=all", timeout_s=180, check=False)
        remove_project(self.project)


def live_workers(fleet: Fleet) -> set[str]:
    settings = fleet.settings()
    redis = connect(settings)
    try:
        return {
            w
            for w in redis.smembers(settings.keys.workers())
            if redis.exists(settings.keys.worker_heartbeat(w))
        }
    except Exception:  # Redis not published yet: not ready
        return set()
    finally:
        redis.close()
