"""Resource limits of a local sandbox's command: a cgroup of its own, with a memory and a pids limit.

bwrap sets no limit: a memory or fork bomb would grow until the time bound. So each command gets a
cgroup (v2 unified where its controllers are there, else v1 `memory` and `pids`) under a `wave`
parent nested in the worker's own cgroup (never above it: a limit set on the worker still holds).
The command joins it before bwrap starts (a `sh` prefix writes its pid to `cgroup.procs`, then execs:
no `preexec_fn`, see `workers.commands`), so bwrap and everything in its namespaces is in it. The
command's reader polls it and kills the whole cgroup as soon as a limit is hit (a fork bomb at its
pids limit would otherwise spin until the time bound); after it, the cgroup is emptied and removed.
Where no cgroup can be made (not root, cgroupfs read-only), `prlimit` sets RLIMIT_AS, and
RLIMIT_NPROC when not root (root ignores it); the sandbox's label then says the limits are missing.
"""

from __future__ import annotations

import contextlib
import errno
import functools
import itertools
import os
import shutil
import signal
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

CGROUP_ROOT = Path("/sys/fs/cgroup")
PARENT = "wave"
WATCH_INTERVAL_S = 0.02  # how soon a hit limit ends the command: a fork bomb at pids.max spins meanwhile
EMPTY_WITHIN_S = 5.0  # the killed processes leave the cgroup (reaped) well within this
REAP_POLL_S = 0.0005  # a killed or exiting process leaves its cgroup within a fraction of a ms, mostly
# Joins the cgroups named by its first arguments (their `cgroup.procs`), then becomes the command.
_JOIN = 'n=$1; shift; while [ "$n" -gt 0 ]; do echo $$ > "$1" || exit 125; shift; n=$((n-1)); done; exec "$@"'
_names = itertools.count()


@dataclass(frozen=True)
class Limits:
    """A command's limits (`settings.sandbox_container`: the same as a container sandbox's)."""

    memory_mb: int
    pids: int
    cgroup_root: Path = CGROUP_ROOT  # another root only in tests (one where no cgroup can be made)

    def memory(self) -> str:
        return f"memory limit ({self.memory_mb} MiB)"

    def processes(self) -> str:
        return f"pids limit ({self.pids})"


@dataclass(frozen=True)
class Parents:
    """The `wave` parent cgroups: one (v2) or the memory and pids ones (v1)."""

    version: int
    memory: Path
    pids: Path


@functools.cache
def parents(root: Path = CGROUP_ROOT) -> Parents | str:
    """The `wave` parents, made once per process, or why there can be none."""
    try:
        own = _own_cgroups()
        unified = root / "cgroup.controllers"
        if unified.is_file() and "memory" in unified.read_text().split():
            return _v2_parent(root / own.get("", "/").lstrip("/"))
        memory, pids = root / "memory", root / "pids"
        if not (memory / "memory.limit_in_bytes").is_file() or not (pids / "cgroup.procs").is_file():
            return f"no cgroup v2 memory controller and no v1 memory and pids hierarchies under {root}"
        made = [h / own.get(h.name, "/").lstrip("/") / PARENT for h in (memory, pids)]
        for path in made:
            path.mkdir(exist_ok=True)
            _sweep(path)
        return Parents(1, *made)
    except OSError as exc:
        return f"cannot make a cgroup under {root}: {exc.strerror or exc}"


def _own_cgroups() -> dict[str, str]:
    """This process's cgroup per v1 controller, and its v2 one under ""."""
    own = {}
    for line in Path("/proc/self/cgroup").read_text().splitlines():
        _, controllers, path = line.split(":", 2)
        for name in controllers.split(",") if controllers else [""]:
            own[name] = path
    return own


def _v2_parent(own: Path) -> Parents | str:
    # v2 lets a cgroup hand controllers to its children only when it holds no process itself.
    needed = {"memory", "pids"}
    if not needed <= set((own / "cgroup.controllers").read_text().split()):
        return f"the cgroup {own} lacks the memory or pids controller"
    parent = own / PARENT
    try:
        (own / "cgroup.subtree_control").write_text("+memory +pids")
    except OSError as exc:
        if exc.errno == errno.EBUSY:
            return f"the worker's cgroup {own} holds processes, so it cannot delegate controllers"
        raise
    parent.mkdir(exist_ok=True)
    (parent / "cgroup.subtree_control").write_text("+memory +pids")
    _sweep(parent)
    return Parents(2, parent, parent)


def _sweep(parent: Path) -> None:
    """Remove the empty cgroups of processes that are gone: a work horse SIGKILLed by a halt or a
    cancel mid-command never removed its command's (the command died with its process group)."""
    for child in parent.glob("cmd-*-*"):
        pid = child.name.split("-")[1]
        if pid.isdigit() and not Path(f"/proc/{pid}").exists():
            with contextlib.suppress(OSError):  # not empty (still running somewhere): left alone
                child.rmdir()


def missing(limits: Limits) -> str | None:
    """Why this worker's commands get no cgroup limits, or None if they do."""
    found = parents(limits.cgroup_root)
    return found if isinstance(found, str) else None


@dataclass
class CommandCgroup:
    """One command's cgroup(s): made with the limits, watched while it runs, removed after."""

    limits: Limits
    parents: Parents
    dirs: list[Path] = field(default_factory=list)
    hit: str | None = None  # the limit the command hit ("memory limit (1024 MiB)")

    def create(self) -> None:
        name = f"cmd-{os.getpid()}-{next(_names)}"
        mem, pids = self.parents.memory / name, self.parents.pids / name
        self.dirs = [mem] if mem == pids else [mem, pids]
        for path in self.dirs:
            path.mkdir()
        memory = str(self.limits.memory_mb << 20)
        if self.parents.version == 2:
            (mem / "memory.max").write_text(memory)
            with contextlib.suppress(OSError):  # no swap accounting: no swap to limit
                (mem / "memory.swap.max").write_text("0")
        else:
            (mem / "memory.limit_in_bytes").write_text(memory)
            with contextlib.suppress(OSError):  # swap accounting off: memory.memsw.* absent
                (mem / "memory.memsw.limit_in_bytes").write_text(memory)
        (pids / "pids.max").write_text(str(self.limits.pids))

    def prefix(self) -> list[str]:
        """What runs the command inside this cgroup."""
        procs = [str(d / "cgroup.procs") for d in self.dirs]
        return ["/bin/sh", "-c", _JOIN, "wave-cgroup", str(len(procs)), *procs]

    def poll(self) -> None:
        """Called by the command's reader every WATCH_INTERVAL_S while it runs: a limit hit kills
        the whole cgroup at once (a thread would do too, but its wake-ups cost ~10 ms a command
        under load: measured)."""
        if self.hit is None and self.check():
            self.kill()

    def check(self) -> str | None:
        """The limit the command hit, if any (read from the cgroup's event counters)."""
        if self.hit is None:
            mem, pids = self.dirs[0], self.dirs[-1]
            if self.parents.version == 2:
                oom = _field(mem / "memory.events", "oom_kill")
            else:
                oom = _field(mem / "memory.oom_control", "oom_kill") + _field(
                    mem / "memory.oom_control", "under_oom"
                )
            if oom:
                self.hit = self.limits.memory()
            elif _field(pids / "pids.events", "max"):
                self.hit = self.limits.processes()
        return self.hit

    def kill(self) -> None:
        """SIGKILL every process in the cgroup until none is left (a fork bomb forks while killed)."""
        procs = self.dirs[-1] / "cgroup.procs"
        deadline = time.monotonic() + EMPTY_WITHIN_S
        while (pids := _pids(procs)) and time.monotonic() < deadline:
            for pid in pids:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            time.sleep(REAP_POLL_S)

    def remove(self) -> None:
        """After the command: note a limit hit, kill leftovers, remove the cgroup."""
        self.check()
        self.kill()
        deadline = time.monotonic() + EMPTY_WITHIN_S
        for path in self.dirs:
            while True:
                try:
                    path.rmdir()
                    break
                except FileNotFoundError:
                    break
                except OSError as exc:  # EBUSY: a killed process not reaped yet
                    if exc.errno != errno.EBUSY or time.monotonic() > deadline:
                        raise
                    time.sleep(REAP_POLL_S)


def _field(path: Path, name: str) -> int:
    try:
        for line in path.read_text().splitlines():
            key, _, value = line.partition(" ")
            if key == name:
                return int(value)
    except (OSError, ValueError):
        return 0
    return 0


def _pids(procs: Path) -> list[int]:
    try:
        return [int(p) for p in procs.read_text().split()]
    except OSError:
        return []


def rlimit_prefix(limits: Limits) -> list[str]:
    """The fallback without cgroups: RLIMIT_AS for memory; RLIMIT_NPROC only when not root, since
    the kernel does not apply it to root (CAP_SYS_RESOURCE/CAP_SYS_ADMIN)."""
    prlimit = shutil.which("prlimit")
    if prlimit is None:
        return []
    args = [prlimit, f"--as={limits.memory_mb << 20}"]
    if os.geteuid() != 0:
        args.append(f"--nproc={limits.pids}")
    return [*args, "--"]


@dataclass
class Confinement:
    """What `workers.commands` puts before a command (`prefix`), and after it, the limit it hit."""

    prefix: list[str]
    cgroup: CommandCgroup | None = None

    @property
    def watch(self) -> Callable[[], None] | None:
        """What the command's reader calls while it runs (None: nothing to watch)."""
        return None if self.cgroup is None else self.cgroup.poll

    @property
    def hit(self) -> str | None:
        return None if self.cgroup is None else self.cgroup.hit


@contextlib.contextmanager
def confined(limits: Limits | None) -> Iterator[Confinement]:
    """A command's confinement for the length of the block: its own cgroup (removed at the end), or
    the rlimit fallback where none can be made, or nothing when `limits` is None."""
    if limits is None:
        yield Confinement([])
        return
    found = parents(limits.cgroup_root)
    if isinstance(found, str):
        yield Confinement(rlimit_prefix(limits))
        return
    cgroup = CommandCgroup(limits, found)
    try:
        cgroup.create()
        yield Confinement(cgroup.prefix(), cgroup)
    finally:
        cgroup.remove()


def limit_error(hit: str, argv: list[str]) -> str:
    """The stage's failure reason, worded as a container sandbox's."""
    return f"a command hit the sandbox's {hit} and was killed: {' '.join(argv)[:200]!r}"
