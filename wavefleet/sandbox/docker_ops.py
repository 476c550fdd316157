"""The Docker side of the container sandbox: every Engine API call `wave sandbox` makes, and nothing else.

One hardened container per stage (see `create`), commands run in it with `exec`, a command's limit
hits read from the container's own cgroup counters, usage read before the container is removed.
Calls go through `docker.APIClient` pinned to API 1.41, so the Docker API proxy in front of the
engine sees the same small set of requests every time (docker/sandbox-api-calls.md lists them).
"""

from __future__ import annotations

import contextlib
import re
import secrets
import threading
import time
from collections.abc import Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from docker.api.client import APIClient
from docker.errors import APIError, DockerException, ImageNotFound, NotFound
from docker.utils import kwargs_from_env

from wavefleet.config import ContainerSandboxSettings
from wavefleet.errors import ConfigError

from . import binds
from .protocol import ContainerSpec, StageLabels, owner_user

API_VERSION = "1.41"
CONTROL_TIMEOUT_S = 30  # every call but an exec's output stream, which lasts as long as its command
FLEET_LABEL = "dev.wave.sandbox"
LABEL_PREFIX = "dev.wave."
JOB_LABEL, STORY_LABEL, WORKER_LABEL = f"{LABEL_PREFIX}job", f"{LABEL_PREFIX}story", f"{LABEL_PREFIX}worker"
WORKSPACE = "/workspace"
MIB = 1024 * 1024
KILL_THREADS = 16  # a halt kills this many containers at once
STREAM_CLOSE_GRACE_S = 5.0  # after a timeout's kill, the output stream is closed by force if still open
# The counters a command's limit hits are read from, inside the container (its own cgroup): cgroup v1
# paths, then v2. `head -v` names each file it prints; a missing one is skipped.
COUNTER_FILES = (
    "/sys/fs/cgroup/memory/memory.oom_control",
    "/sys/fs/cgroup/pids/pids.events",
    "/sys/fs/cgroup/memory.events",
    "/sys/fs/cgroup/pids.events",
    "/sys/fs/cgroup/memory.peak",
    "/sys/fs/cgroup/pids/pids.current",
    "/sys/fs/cgroup/pids.current",
)
# What runs in an idle stage container while the reader does: docker-init, its `sleep`, the reader.
IDLE_PROCESSES = 3
_HEADER = re.compile(r"^==> (.+) <==$")
_NAME_UNSAFE = re.compile(r"[^a-z0-9_.-]+")


@dataclass(frozen=True)
class Counters:
    """A container's cumulative cgroup counters: OOM kills, refused forks, peak memory (v2 only)."""

    oom_kills: int = 0
    pids_refused: int = 0
    peak_memory_bytes: int | None = None
    processes: int = 0  # pids.current while the reader ran (it included): above IDLE_PROCESSES, a
    # process outlived its command


@dataclass
class ExecOutcome:
    exit_code: int
    output: bytes
    truncated: bool
    timed_out: bool = False
    duration_s: float = 0.0


@dataclass(frozen=True)
class Usage:
    """What the engine says a container used so far (a killed container reads as zero)."""

    cpu_s: float = 0.0
    max_memory_bytes: int | None = None  # cgroup v1's max_usage; v2 has no such field
    pids_current: int = 0
    pids_limit: int = 0


@dataclass(frozen=True)
class Found:
    """A container of this fleet, as the engine lists it."""

    id: str
    name: str
    labels: dict[str, str] = field(default_factory=dict)
    running: bool = True


def client_kwargs(settings: ContainerSandboxSettings) -> dict[str, Any]:
    """Where the engine is: `docker_host` if set, else what DOCKER_HOST (and its TLS variables) say,
    else the local socket."""
    if settings.docker_host:
        return {"base_url": settings.docker_host}
    return dict(kwargs_from_env())


def container_name(labels: StageLabels) -> str:
    """`wave-sbx-<story>-<role>-r<round>-a<attempt>-<6 hex>`, lowercased, unique."""
    story = _NAME_UNSAFE.sub("-", labels.story.lower())[:60]
    role = _NAME_UNSAFE.sub("-", labels.role.lower())[:20]
    return f"wave-sbx-{story}-{role}-r{labels.round}-a{labels.attempt}-{secrets.token_hex(3)}"


def stage_labels(fleet: str, labels: StageLabels) -> dict[str, str]:
    fields = labels.model_dump()
    return {
        FLEET_LABEL: fleet,
        **{f"{LABEL_PREFIX}{name}": str(value) for name, value in fields.items()},
        "dev.dozzle.group": "sandbox",
    }


def parse_counters(text: str) -> Counters:
    """`head -v` output of COUNTER_FILES: `oom_kill N` (v1 memory.oom_control, v2 memory.events),
    `max N` of pids.events (forks refused at the limit), v2 memory.peak's one number."""
    files: dict[str, list[str]] = {}
    current: list[str] | None = None
    for line in text.splitlines():
        if header := _HEADER.match(line):
            current = files.setdefault(header.group(1), [])
        elif current is not None and line.strip():
            current.append(line.strip())

    def value(path: str, key: str | None = None) -> int:
        # The largest: a process of the command's could write lines into the reader's output (same
        # user), but never take the reader's own away.
        numbers = [0]
        for line in files.get(path, []):
            name, _, number = line.partition(" ") if key else (None, "", line)
            if name == key and number.isdigit():
                numbers.append(int(number))
        return max(numbers)

    peak = files.get("/sys/fs/cgroup/memory.peak", [])
    return Counters(
        oom_kills=value(COUNTER_FILES[0], "oom_kill") + value(COUNTER_FILES[2], "oom_kill"),
        pids_refused=value(COUNTER_FILES[1], "max") + value(COUNTER_FILES[3], "max"),
        peak_memory_bytes=int(peak[0]) if peak and peak[0].isdigit() else None,
        processes=max(value(COUNTER_FILES[5]), value(COUNTER_FILES[6])),
    )


class DockerOps:
    """The runner's Docker calls for one fleet (its containers carry `FLEET_LABEL=fleet`)."""

    def __init__(self, settings: ContainerSandboxSettings, fleet: str, data_dir: Path) -> None:
        self.settings, self.fleet = settings, fleet
        engine = client_kwargs(settings)
        self.api = APIClient(version=API_VERSION, timeout=CONTROL_TIMEOUT_S, **engine)
        # An exec's output stream is read without a timeout: a quiet command is not a dead one (the
        # deadline is the runner's own, enforced by killing the container).
        self._stream_api = APIClient(version=API_VERSION, timeout=None, **engine)
        # Where worktrees may be: the data volume's mount point in the workers' containers, or the
        # fleet's data dir on a host. The runner sees them at the same path (compose mounts the volume
        # read-only at data_mount in the runner's container too).
        self.root = settings.data_mount if settings.data_volume else data_dir.resolve()
        self._volume_path: str | None = None
        self.reader_problem = ""  # what the last counter reader said (for the log when it failed)

    # Start-up ----------------------------------------------------------------------------------
    def check_ready(self) -> str:
        """The engine's version; ConfigError (one line, how to fix) without an engine or the image."""
        image = self.settings.image
        try:
            self.api.ping()
            version = str(self.api.version().get("Version", "?"))
            self.api.inspect_image(image)
        except ImageNotFound:
            raise ConfigError(
                f"sandbox: the sandbox image {image} is missing: run `make sandbox-image` "
                "(or set WAVE_SANDBOX_CONTAINER__IMAGE)"
            ) from None
        except (DockerException, OSError) as exc:
            raise ConfigError(
                f"sandbox: no Docker engine answers at {self.api.base_url} ({_short(exc)}): start one, or "
                "set WAVE_SANDBOX_CONTAINER__DOCKER_HOST / DOCKER_HOST"
            ) from None
        if self.settings.data_volume:
            self._volume_mountpoint()
        return version

    def _volume_mountpoint(self) -> str:
        if self._volume_path is None:
            name = self.settings.data_volume
            try:
                self._volume_path = str(self.api.inspect_volume(name)["Mountpoint"])
            except NotFound:
                raise ConfigError(
                    f"sandbox: the data volume {name} does not exist: set "
                    "WAVE_SANDBOX_CONTAINER__DATA_VOLUME to the workers' data volume"
                ) from None
        return self._volume_path

    # The stage container -----------------------------------------------------------------------
    def verify_mounts(self, container: str, user: str, pinned: binds.Pinned) -> None:
        """ValueError unless the started container's binds are the pinned files (binds.py)."""
        outcome = self.exec(
            container, pinned.stat_argv(),
            user=user, env={}, timeout_s=CONTROL_TIMEOUT_S, max_output_bytes=4096,
        )  # fmt: skip
        pinned.check(outcome.exit_code, outcome.output.decode(errors="replace"))

    def create(self, spec: ContainerSpec) -> tuple[str, str]:
        """Create and start the stage's container, its binds checked; (id, name)."""
        volume = self._volume_mountpoint if self.settings.data_volume else None
        with binds.pinned(spec.worktree, self.root, volume) as pinned:
            if spec.user != (owner := owner_user(*pinned.owner, self.settings.fallback_uid)):
                raise ValueError(f"user {spec.user} is not the worktree's owner ({owner})")
            container, name = self._create(spec, pinned.mounts)
            try:
                self.verify_mounts(container, spec.user, pinned)
            except (ValueError, DockerException, OSError):
                self.remove(container)
                raise
        return container, name

    def _create(self, spec: ContainerSpec, mounts: list[dict[str, Any]]) -> tuple[str, str]:
        s = self.settings
        memory = s.memory_mb * MIB
        host_config = self.api.create_host_config(
            mounts=mounts,
            network_mode="bridge" if spec.network else "none",
            read_only=True,
            cap_drop=["ALL"],
            security_opt=["no-new-privileges"],
            privileged=False,
            mem_limit=memory,
            memswap_limit=memory,  # equal: no swap
            nano_cpus=int(s.cpus * 1e9),
            pids_limit=s.pids,
            # exec allowed (test runners and node unpack helpers there); nosuid, nodev: no way up.
            tmpfs={"/tmp": f"rw,nosuid,nodev,size={s.tmp_mb}m"},  # noqa: S108
            init=True,  # docker-init reaps the stage's zombies
            auto_remove=False,  # usage is read before removal
        )
        name = container_name(spec.labels)
        created = self.api.create_container(
            s.image,
            command=["sleep", "infinity"],
            user=spec.user,
            working_dir=WORKSPACE,
            environment=[],
            labels=stage_labels(self.fleet, spec.labels),
            network_disabled=not spec.network,
            host_config=host_config,
            name=name,
            use_config_proxy=False,  # never the runner's own ~/.docker proxy settings
        )
        container = str(created["Id"])
        try:
            self.api.start(container)
        except (DockerException, OSError):
            self.remove(container)
            raise
        return container, name

    # Commands ----------------------------------------------------------------------------------
    def exec(
        self,
        container: str,
        argv: list[str],
        *,
        user: str,
        env: dict[str, str],
        timeout_s: float,
        max_output_bytes: int,
        on_timeout: Any = None,
    ) -> ExecOutcome:
        """Run `argv` in the container, keeping the last `max_output_bytes` of its output. At the
        deadline `on_timeout()` is called (it kills the container: the Engine API has no exec kill),
        which ends the output stream."""
        started = time.monotonic()
        exec_id = self.api.exec_create(
            container, argv, stdout=True, stderr=True, stdin=False, tty=False,
            privileged=False, user=user, environment=env, workdir=WORKSPACE,
        )["Id"]  # fmt: skip
        stream = self._stream_api.exec_start(exec_id, stream=True)
        timed_out = threading.Event()

        def expire() -> None:
            timed_out.set()
            if on_timeout is not None:
                on_timeout()
            # the kill ends the stream; if it could not, cut the stream so this thread is free again
            threading.Timer(STREAM_CLOSE_GRACE_S, stream.close).start()

        timer = threading.Timer(timeout_s, expire)
        timer.daemon = True
        timer.start()
        try:
            kept, truncated = _tail(stream, max_output_bytes)
        finally:
            timer.cancel()
            stream.close()
        if timed_out.is_set():
            return ExecOutcome(-1, bytes(kept), truncated, True, time.monotonic() - started)
        exit_code = self._exit_code(exec_id)
        return ExecOutcome(exit_code, bytes(kept), truncated, False, time.monotonic() - started)

    def _exit_code(self, exec_id: str) -> int:
        for _ in range(50):  # the stream can end a moment before the engine records the exit
            state = self.api.exec_inspect(exec_id)
            if not state.get("Running") and state.get("ExitCode") is not None:
                return int(state["ExitCode"])
            time.sleep(0.01)
        return -1

    def counters(self, container: str, user: str) -> Counters | None:
        """The container's cgroup counters, read by a fixed command run in it; None if it cannot
        start one (its pids are exhausted)."""
        try:
            outcome = self.exec(
                container, ["head", "-v", "-n", "20", *COUNTER_FILES],
                user=user, env={}, timeout_s=10, max_output_bytes=8192,
            )  # fmt: skip
        except (DockerException, OSError) as exc:
            self.reader_problem = _short(exc)
            return None
        text = outcome.output.decode(errors="replace")
        self.reader_problem = text[-300:]
        if "==> " not in text:
            return None
        return parse_counters(text)

    def usage(self, container: str) -> Usage:
        """One stats sample through the engine (works even when the container cannot fork)."""
        try:
            stats = self.api.stats(container, stream=False, one_shot=True)
        except (DockerException, OSError):
            return Usage()
        cpu = stats.get("cpu_stats", {}).get("cpu_usage", {}).get("total_usage") or 0
        memory = stats.get("memory_stats", {}).get("max_usage")
        pids = stats.get("pids_stats", {})
        return Usage(
            cpu_s=cpu / 1e9,
            max_memory_bytes=int(memory) if memory else None,
            pids_current=int(pids.get("current") or 0),
            pids_limit=int(pids.get("limit") or 0),
        )

    # Ending containers -------------------------------------------------------------------------
    def kill(self, container: str) -> None:
        with contextlib.suppress(NotFound, APIError):  # gone, or already stopped (409)
            self.api.kill(container)

    def remove(self, container: str) -> None:
        try:
            self.api.remove_container(container, force=True)
        except NotFound:
            pass
        except APIError as exc:
            if exc.status_code != 409:  # 409: its removal is already in progress
                raise

    def end(self, containers: Iterable[str]) -> int:
        """Kill every one at once (nothing of theirs runs past this), then remove them; how many."""
        ids = list(containers)
        if not ids:
            return 0
        with ThreadPoolExecutor(min(KILL_THREADS, len(ids)), thread_name_prefix="sandbox-kill") as pool:
            list(pool.map(self.kill, ids))
            list(pool.map(self._remove_quietly, ids))
        return len(ids)

    def _remove_quietly(self, container: str) -> None:
        with contextlib.suppress(DockerException, OSError):  # the next sweep tries again
            self.remove(container)

    def find(self, **labels: str) -> list[Found]:
        """This fleet's containers (any state) with these `dev.wave.<name>` labels."""
        wanted = [f"{FLEET_LABEL}={self.fleet}", *(f"{LABEL_PREFIX}{k}={v}" for k, v in labels.items())]
        listed = self.api.containers(all=True, filters={"label": wanted})
        return [
            Found(
                str(c["Id"]),
                str((c.get("Names") or ["?"])[0]).lstrip("/"),
                dict(c.get("Labels") or {}),
                c.get("State") == "running",
            )
            for c in listed
        ]


def _tail(stream: Iterator[bytes], cap: int) -> tuple[bytearray, bool]:
    kept, truncated = bytearray(), False
    try:
        for chunk in stream:
            kept += chunk
            if len(kept) > 2 * cap:  # trim in batches: cheap, and never more than 2x the cap held
                del kept[: len(kept) - cap]
                truncated = True
    except (DockerException, OSError, ValueError, AttributeError):
        pass  # the stream was cut (the container killed, the connection closed): what came is kept
    if len(kept) > cap:
        del kept[: len(kept) - cap]
        truncated = True
    return kept, truncated


def _short(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[-1][:200] if text else type(exc).__name__
