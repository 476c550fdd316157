"""The runner's warm stage containers: one per running stage (job), made on its first command, reused
by the next ones, and ended by the stage's release, a timeout, a halt, a cancel or the sweep.

Commands of one stage run one after another (the stage's lock); different stages run at once.
"""

from __future__ import annotations

import contextlib
import re
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from docker.errors import APIError, DockerException

from wavefleet import logs

from .base import PASSED_THROUGH
from .docker_ops import IDLE_PROCESSES, JOB_LABEL, MIB, STORY_LABEL, Counters, DockerOps, stage_labels
from .protocol import (
    LABEL_VALUE,
    ContainerSpec,
    ExecReply,
    ExecRequest,
    ReleaseReply,
    ReleaseRequest,
    SandboxUsage,
)

# The environment names a command may get (what sandbox.base.allowed_env builds); any other is dropped.
EXEC_ENV = frozenset({"PATH", "HOME", "TMPDIR", "PYTHONDONTWRITEBYTECODE", *PASSED_THROUGH})
MAX_ENV_VALUE = 32 * 1024
CANCELLED_MEMORY_S = 600.0  # how long a cancelled story's new containers are refused
KILLED = 128 + 9  # the exit status of a SIGKILLed command (the OOM killer's signal)
_UNREAD = Counters()  # the counters could not be read after a command (every pid taken)


@dataclass
class Stage:
    """One running stage's container and what its containers used so far."""

    spec: ContainerSpec
    lock: threading.Lock = field(default_factory=threading.Lock)
    container: str | None = None
    starting: bool = False  # between the cap's check and the container's id (counted as live)
    name: str = ""
    seen: Counters = field(default_factory=Counters)  # the current container's counters
    first_start: float | None = None
    containers: int = 0
    commands: int = 0
    cpu_s: float = 0.0
    peak_memory_bytes: int | None = None
    limits_hit: list[str] = field(default_factory=list)

    def usage(self) -> SandboxUsage:
        wall = time.monotonic() - self.first_start if self.first_start is not None else 0.0
        return SandboxUsage(
            containers=self.containers,
            commands=self.commands,
            cpu_s=round(self.cpu_s, 3),
            peak_memory_bytes=self.peak_memory_bytes,
            wall_s=round(wall, 3),
            limits_hit=list(self.limits_hit),
        )


class StageContainers:
    """The registry of warm containers, keyed by job, and the commands run in them."""

    def __init__(self, ops: DockerOps) -> None:
        self.ops = ops
        self.halted = threading.Event()
        self.closing = threading.Event()  # the runner is stopping (SIGTERM): its containers go
        self._stages: dict[str, Stage] = {}
        self._lock = threading.Lock()
        self._cancelled: dict[str, float] = {}
        self.log = logs.get()

    # Requests -----------------------------------------------------------------------------------
    def exec(self, request: ExecRequest) -> ExecReply:
        if (refusal := self._refusal(request)) is not None:
            return ExecReply(error=refusal)
        stage = self._stage(request.spec)
        with stage.lock:
            if stage.spec != request.spec:  # another worktree (or user) for the same job: a new container
                self._end(stage, "the stage moved to another worktree")
                stage.spec = request.spec
            started = stage.container is None
            try:
                if started and (why := self._open(stage)) is not None:
                    return ExecReply(error=why)
                reply = self._run(stage, request)
            except ValueError as exc:  # a worktree the runner refuses
                return ExecReply(error=f"refused: {exc}")
            except (DockerException, OSError) as exc:
                self._forget_container(stage)
                return ExecReply(error=self._stopped(stage) or f"the sandbox container failed: {_short(exc)}")
            if stopped := self._stopped(stage):
                self._forget_container(stage)  # the halt or cancel is killing it
                return ExecReply(error=stopped)
            return reply.model_copy(update={"started_container": started})

    def _stopped(self, stage: Stage) -> str | None:
        """Why the stage's container was killed under its command, if a halt, a cancel or the
        runner's own stop did it."""
        if self.closing.is_set():
            return "the sandbox runner is stopping"
        if self.halted.is_set():
            return "the fleet is halted"
        if self._is_cancelled(stage.spec.labels.story):
            return "the story was cancelled"
        return None

    def release(self, request: ReleaseRequest) -> ReleaseReply:
        with self._lock:
            stage = self._stages.pop(request.labels.job, None)
        if stage is None:
            return ReleaseReply(usage=None)
        with stage.lock:
            self._end(stage, "released")
            return ReleaseReply(usage=stage.usage() if stage.containers else None)

    def _refusal(self, request: ExecRequest) -> str | None:
        if self.closing.is_set():
            return "the sandbox runner is stopping"
        if self.halted.is_set():
            return "the fleet is halted: no command starts until it resumes"
        if self._is_cancelled(request.spec.labels.story):
            return "the story was cancelled"
        if request.sent_at and time.time() - request.sent_at > request.timeout_s:
            return "the request waited longer than its timeout before the runner took it"
        dropped = sorted(set(request.env) - EXEC_ENV)
        if dropped:
            self.log.info("sandbox env names dropped", names=dropped[:20], story=request.spec.labels.story)
        return None

    # One stage ----------------------------------------------------------------------------------
    def _stage(self, spec: ContainerSpec) -> Stage:
        with self._lock:
            stage = self._stages.get(spec.labels.job)
            if stage is None:
                stage = self._stages[spec.labels.job] = Stage(spec)
            return stage

    def _open(self, stage: Stage) -> str | None:
        """Start the stage's container, or say why there is none: the cap, a halt or a cancel."""
        if (full := self._claim(stage)) is not None:
            return full
        self._start(stage)
        # A halt or cancel that listed the fleet's containers before this one existed has set its
        # flag first: seen here, or this container was on its list.
        if stopped := self._stopped(stage):
            self._forget_container(stage)
            return stopped
        return None

    def _claim(self, stage: Stage) -> str | None:
        """Count `stage` among the live containers, or why not: `max_containers` are (the claims of
        concurrent first commands included, so that they cannot all pass the check at once)."""
        cap = self.ops.settings.max_containers
        with self._lock:
            live = sum(1 for s in self._stages.values() if s is not stage and (s.container or s.starting))
            if live >= cap:
                return f"the runner has max_containers ({cap}) stage containers: try again later"
            stage.starting = True
            return None

    def _start(self, stage: Stage) -> None:
        job = stage.spec.labels.job
        try:
            # A container of this job left by an earlier runner (restarted mid-stage) goes first.
            if leftovers := [f.id for f in self.ops.find(job=job) if f.id != stage.container]:
                self.ops.end(leftovers)
            stage.container, stage.name = self.ops.create(stage.spec)
        finally:
            stage.starting = False
        stage.seen = Counters()
        stage.containers += 1
        if stage.first_start is None:
            stage.first_start = time.monotonic()
        self._log(stage).info("sandbox container started")

    def _run(self, stage: Stage, request: ExecRequest) -> ExecReply:
        container = stage.container
        assert container is not None  # started by the caller
        env = {k: v for k, v in request.env.items() if k in EXEC_ENV and len(v) <= MAX_ENV_VALUE}
        try:
            outcome = self.ops.exec(
                container,
                list(request.argv),
                user=stage.spec.user,
                env=env,
                timeout_s=request.timeout_s,
                max_output_bytes=request.max_output_bytes,
                on_timeout=lambda: self._expire(stage, container),
            )
        except APIError as exc:
            if exc.status_code not in (404, 409):  # 409: the container is not running any more
                raise
            self._forget_container(stage)
            raise
        stage.commands += 1
        limit = None
        if outcome.timed_out:
            self._log(stage).info("sandbox command timed out; container killed", timeout_s=request.timeout_s)
            self.ops.remove(container)
            stage.container = None
        elif not self.halted.is_set():
            limit = self._limit_hit(stage, container, outcome.exit_code)
            if stage.seen.processes > IDLE_PROCESSES or stage.seen is _UNREAD:
                # As under bwrap, nothing a command started outlives it: it would run on while the
                # worker's own git and file tools (unsandboxed) work on the worktree.
                self._end(stage, "a process outlived its command")
        return ExecReply(
            exit_code=outcome.exit_code,
            output=outcome.output.decode(errors="replace"),
            truncated=outcome.truncated,
            timed_out=outcome.timed_out,
            limit=limit,
            container=stage.name,
            duration_s=round(outcome.duration_s, 3),
        )

    def _expire(self, stage: Stage, container: str) -> None:
        """At a command's deadline: its container's usage is read, then it is killed (everything the
        command started dies with it; the stage's next command gets a new container)."""
        self._fold(stage, container)
        self.ops.kill(container)

    def _limit_hit(self, stage: Stage, container: str, exit_code: int) -> str | None:
        """The limit the last command hit, from the container's counters; when the reader cannot
        start (every pid taken), from the engine: pids at the limit, or a SIGKILL with the memory
        high-water mark at the limit (cgroup v1)."""
        s = self.ops.settings
        counters = self.ops.counters(container, stage.spec.user)
        hits = []
        if counters is None:
            stage.seen = _UNREAD
            usage = self.ops.usage(container)
            self._log(stage).warning(
                "sandbox counters unreadable; engine stats used",
                pids=usage.pids_current,
                reader=self.ops.reader_problem,
            )
            if usage.pids_limit and usage.pids_current >= usage.pids_limit:
                hits.append(f"pids limit ({s.pids})")
            if exit_code == KILLED and (usage.max_memory_bytes or 0) >= s.memory_mb * MIB:
                hits.append(f"memory limit ({s.memory_mb} MiB)")
        else:
            if counters.oom_kills > stage.seen.oom_kills:
                hits.append(f"memory limit ({s.memory_mb} MiB)")
            if counters.pids_refused > stage.seen.pids_refused:
                hits.append(f"pids limit ({s.pids})")
            stage.seen = counters
        for hit in hits:
            if hit not in stage.limits_hit:
                stage.limits_hit.append(hit)
            self._log(stage).warning("sandbox limit hit", limit=hit)
        return "; ".join(hits) or None

    def _fold(self, stage: Stage, container: str) -> None:
        """Add a container's usage to its stage's, before the container goes."""
        usage = self.ops.usage(container)
        stage.cpu_s += usage.cpu_s
        peaks = [
            p for p in (stage.peak_memory_bytes, usage.max_memory_bytes, stage.seen.peak_memory_bytes) if p
        ]
        stage.peak_memory_bytes = max(peaks) if peaks else None

    def _end(self, stage: Stage, why: str) -> None:
        if stage.container is None:
            return
        self._fold(stage, stage.container)
        try:
            self.ops.remove(stage.container)
        except (DockerException, OSError) as exc:
            self._log(stage).warning("sandbox container not removed; the sweep will", error=_short(exc))
        self._log(stage).info("sandbox container removed", why=why)
        stage.container = None

    def _forget_container(self, stage: Stage) -> None:
        if stage.container is not None:
            with contextlib.suppress(DockerException, OSError):  # else the sweep removes it
                self.ops.remove(stage.container)
        stage.container = None

    # Fleet-wide ---------------------------------------------------------------------------------
    def end_all(self) -> int:
        """The halt: every container of this fleet, registered or left over, killed at once."""
        self.halted.set()
        return self.ops.end(f.id for f in self.ops.find())

    def end_story(self, story: str) -> int:
        if not _valid_label(story):
            return 0
        self._cancelled[story] = time.monotonic()
        self._expire_cancelled()
        return self.ops.end(f.id for f in self.ops.find(story=story))

    def sweep(self, alive: Callable[[dict[str, str]], bool]) -> int:
        """Remove every container whose stage is no longer running (and forget such stages)."""
        dead = [f for f in self.ops.find() if not alive(f.labels)]
        ended = self.ops.end(f.id for f in dead)
        dead_jobs = {f.labels.get(JOB_LABEL) for f in dead}
        with self._lock:  # and stages with no container now (after a timeout) that will never be released
            for job, stage in list(self._stages.items()):
                if job in dead_jobs or not alive(stage_labels("", stage.spec.labels)):
                    del self._stages[job]
        for found in dead:
            self.log.info(
                "sandbox container swept", container=found.name, story=found.labels.get(STORY_LABEL)
            )
        return ended

    def registered(self) -> list[str]:
        with self._lock:
            return [s.container for s in self._stages.values() if s.container]

    def _is_cancelled(self, story: str) -> bool:
        return story in self._cancelled

    def _expire_cancelled(self) -> None:
        cutoff = time.monotonic() - CANCELLED_MEMORY_S
        for story in [s for s, at in self._cancelled.items() if at < cutoff]:
            self._cancelled.pop(story, None)

    def _log(self, stage: Stage) -> Any:
        labels = stage.spec.labels
        return self.log.bind(story=labels.story, role=labels.role, container=stage.name)


def _valid_label(value: str) -> bool:
    return re.fullmatch(LABEL_VALUE, value) is not None


def _short(exc: BaseException) -> str:
    lines = str(exc).strip().splitlines()
    return lines[-1][:300] if lines else type(exc).__name__
