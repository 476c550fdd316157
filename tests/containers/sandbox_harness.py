"""A real `wave sandbox` runner for the container tests: a process of its own against a real
redis-server with the fleet's ACL users (the runner logs in as `sandbox`), asked over Redis exactly
as a worker asks it, and every container of its test fleet removed at the end."""

from __future__ import annotations

import json
import secrets
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from docker_fleet import REPO, run
from pydantic import SecretStr
from redis import Redis

from wavefleet import acl
from wavefleet.config import Settings
from wavefleet.embedded import EmbeddedRedis, free_port
from wavefleet.lifecycle import Role
from wavefleet.messages import RunningStage
from wavefleet.sandbox.protocol import (
    REPLY,
    ContainerSpec,
    ExecReply,
    ExecRequest,
    PingRequest,
    ReleaseReply,
    ReleaseRequest,
    StageLabels,
)
from wavefleet.testing import env_of, wait_until

USER = "10001:0"  # what a worker running as root asks for (fallback_uid:0, group-writable worktree)
MEMORY_MB, PIDS = 128, 64
LIMITS = {"memory_mb": MEMORY_MB, "pids": PIDS, "tmp_mb": 16, "cpus": 1.0, "concurrency": 16}
DOMAIN = "auth"  # the domain of every stage of a test fleet (labels, worktrees)
REPLY_WAIT_S = 60.0  # a command's timeout plus a container start on a busy 2-core machine


def fleet_containers(fleet: str, *, running_only: bool = False, **labels: str) -> list[dict[str, Any]]:
    """`docker ps` of this test fleet's containers (with these dev.wave.* labels)."""
    filters = ["--filter", f"label=dev.wave.sandbox={fleet}"]
    filters += [a for k, v in labels.items() for a in ("--filter", f"label=dev.wave.{k}={v}")]
    listed = run("docker", "ps", *([] if running_only else ["-a"]), "--format", "{{json .}}", *filters)
    return [json.loads(line) for line in listed.stdout.splitlines() if line.strip()]


def remove_fleet(fleet: str) -> None:
    ids = [c["ID"] for c in fleet_containers(fleet)]
    if ids:
        run("docker", "rm", "--force", *ids, check=False)


def inspect(container: str) -> dict[str, Any]:
    return dict(json.loads(run("docker", "inspect", container).stdout)[0])


@dataclass
class Runner:
    """One test fleet: its Redis, its settings, its runner process(es) and its worktrees."""

    redis_server: EmbeddedRedis
    root: Path
    image: str
    overrides: dict[str, Any] = field(default_factory=dict)
    fleet: str = field(default_factory=lambda: f"test{secrets.token_hex(6)}")
    process: subprocess.Popen[bytes] | None = None
    starts: int = 0

    def __post_init__(self) -> None:
        self.admin: Redis = self.redis_server.client(decode_responses=True)
        self.admin.set(self.settings().keys.fleet_id(), self.fleet)  # the test's own label

    def settings(self, **container: Any) -> Settings:
        username, password = self.redis_server.credentials(acl.SANDBOX)
        return Settings(
            redis={"url": self.redis_server.url, "username": username, "password": SecretStr(password)},
            data_dir=self.root / "data",
            domains_dir=REPO / "domains",
            sandbox="container",
            sandbox_container={"image": self.image, "sweep_interval_s": 0.5, **LIMITS, **container},
            worker={"heartbeat_interval_s": 0.2, "heartbeat_ttl_s": 2.0},
            log_format="json",
        )

    @property
    def log_file(self) -> Path:
        return self.root / f"sandbox-{self.starts}.log"

    def start(self, **container: Any) -> subprocess.Popen[bytes]:
        self.starts += 1
        with self.log_file.open("ab") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "wavefleet.cli", "sandbox"],
                env=env_of(self.settings(**{**self.overrides, **container})),
                stdout=log,
                stderr=log,
                cwd=REPO,
            )
        key = self.settings().keys.sandbox_runner()
        wait_until(
            lambda: self.admin.exists(key), timeout_s=60, message="the runner's heartbeat", diagnose=self.logs
        )
        return self.process

    def stop(self, sig: int = signal.SIGTERM) -> int:
        assert self.process is not None
        self.process.send_signal(sig)
        return self.process.wait(timeout=60)

    def logs(self) -> str:
        return "\n".join(
            p.read_text(errors="replace")[-6000:] for p in sorted(self.root.glob("sandbox-*.log"))
        )

    # As a worker -----------------------------------------------------------------------------
    def worktree(self, name: str, *, git: bool = False) -> Path:
        """A worktree where a worker makes one (`<data>/repos/<domain>/worktrees/<name>`, workers/git.py),
        writable by the container's group (gid 0) as a root worker leaves it; with `git`, a real
        `git worktree add` of the domain's clone, whose `.git` is a file."""
        tree = self.domain_root / "worktrees" / name
        if not git:
            tree.mkdir(parents=True)
            tree.chmod(0o775)
            return tree
        clone = self.domain_root / "clone"
        if not (clone / ".git").exists():
            run("git", "init", "-q", "-b", "main", str(clone))
            commit = ("commit", "-q", "--allow-empty", "-m", "init")
            run("git", "-C", str(clone), "-c", "user.name=t", "-c", "user.email=t@t", *commit)
        run("git", "-C", str(clone), "worktree", "add", "-q", str(tree), "-b", f"wave/{name}")
        run("chmod", "-R", "g+w", str(tree))
        return tree

    @property
    def domain_root(self) -> Path:
        return self.root / "data" / "repos" / DOMAIN

    def labels(
        self, job: str, story: str = "S-1", role: str = "qa", worker: str = "AUTH-QA-1"
    ) -> StageLabels:
        return StageLabels(story=story, domain=DOMAIN, role=role, round=1, attempt=0, job=job, worker=worker)

    def running(self, labels: StageLabels, *, heartbeat: bool = True) -> None:
        """The worker says it runs this stage (as a live worker's running entry and heartbeat do)."""
        keys = self.settings().keys
        entry = RunningStage(
            worker=labels.worker, story=labels.story, role=Role(labels.role), round=1, attempt=0
        )
        self.admin.hset(keys.running(), labels.job, entry.model_dump_json())
        if heartbeat:
            self.admin.set(keys.worker_heartbeat(labels.worker), "1", ex=600)

    def stage_over(self, labels: StageLabels) -> None:
        """The worker died: its running entry and heartbeat go, as a SIGKILLed worker's do."""
        keys = self.settings().keys
        self.admin.hdel(keys.running(), labels.job)
        self.admin.delete(keys.worker_heartbeat(labels.worker))

    def send(self, request: ExecRequest | ReleaseRequest | PingRequest | str) -> str:
        raw = request if isinstance(request, str) else request.model_dump_json()
        self.admin.lpush(self.settings().keys.sandbox_requests(), raw)
        return request.request_id if not isinstance(request, str) else ""

    def reply(self, request_id: str, timeout_s: float = REPLY_WAIT_S) -> Any:
        popped = self.admin.blpop([self.settings().keys.sandbox_reply(request_id)], timeout=timeout_s)
        assert popped is not None, f"no reply to {request_id} within {timeout_s}s\n{self.logs()}"
        return REPLY.validate_json(popped[1])

    def exec(
        self,
        labels: StageLabels,
        worktree: Path,
        argv: list[str],
        *,
        timeout_s: float = 30,
        cap: int = 100_000,
        **spec: Any,
    ) -> ExecReply:
        request = self.exec_request(labels, worktree, argv, timeout_s=timeout_s, cap=cap, **spec)
        reply = self.reply(self.send(request), timeout_s + REPLY_WAIT_S)
        assert isinstance(reply, ExecReply)
        return reply

    def exec_request(
        self,
        labels: StageLabels,
        worktree: Path,
        argv: list[str],
        *,
        timeout_s: float = 30,
        cap: int = 100_000,
        **spec: Any,
    ) -> ExecRequest:
        return ExecRequest(
            spec=ContainerSpec(labels=labels, worktree=str(worktree), user=spec.pop("user", USER), **spec),
            argv=argv,
            env={
                "PATH": "/opt/sandbox/bin:/usr/local/bin:/usr/bin:/bin",
                "HOME": "/workspace",
                "WAVE_SECRET": "x",
            },
            timeout_s=timeout_s,
            max_output_bytes=cap,
            sent_at=time.time(),
        )

    def release(self, labels: StageLabels) -> ReleaseReply:
        reply = self.reply(self.send(ReleaseRequest(labels=labels)))
        assert isinstance(reply, ReleaseReply)
        return reply

    def close(self) -> None:
        try:
            if self.process is not None and self.process.poll() is None:
                self.process.kill()
                self.process.wait(timeout=30)
        finally:
            remove_fleet(self.fleet)


def start_sleepers(runner: Runner, labels: list[StageLabels]) -> list[str]:
    """A long command in each stage's container, sent as their workers would; waits until each runs."""
    ids = []
    for stage in labels:
        runner.running(stage)
        tree = runner.worktree(stage.job)
        ids.append(runner.send(runner.exec_request(stage, tree, ["sleep", "300"], timeout_s=600)))
    wait_until(
        lambda: busy_containers(runner.fleet) == len(labels),
        timeout_s=120,
        message=f"{len(labels)} stage containers running a command",
        diagnose=runner.logs,
    )
    return ids


def busy_containers(fleet: str) -> int:
    """How many of the fleet's containers are running an exec (the engine lists its ExecIDs)."""
    ids = [c["ID"] for c in fleet_containers(fleet, running_only=True)]
    if not ids:
        return 0
    listed = run("docker", "inspect", "--format", "{{len .ExecIDs}}", *ids, check=False).stdout.split()
    return sum(1 for n in listed if n != "0")


@pytest.fixture(scope="module")
def acl_redis(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmbeddedRedis]:
    """A redis-server with the fleet's ACL users: the runner logs in as `sandbox`."""
    server = EmbeddedRedis(tmp_path_factory.mktemp("sandbox-redis") / "redis", free_port())
    server.start()
    yield server
    server.kill()


@pytest.fixture
def runner(acl_redis: EmbeddedRedis, sandbox_image: str, tmp_path: Path) -> Iterator[Runner]:
    acl_redis.client().flushall()
    acl_redis.client().execute_command("ACL", "LOG", "RESET")
    harness = Runner(acl_redis, tmp_path, sandbox_image)
    try:
        harness.start()
        yield harness
        # Everything the runner did was within its ACL user's rights.
        assert acl_redis.client().execute_command("ACL", "LOG") == [], harness.logs()
    finally:
        harness.close()
    assert fleet_containers(harness.fleet) == []
