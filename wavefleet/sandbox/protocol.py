"""The container sandbox's messages: what a worker asks `wave sandbox` (the runner) over Redis, and
what it answers. Workers never talk to Docker; the runner is the one component that does.

Transport (wavefleet.keys): a worker LPUSHes a request's JSON on `sandbox_requests()`; the runner
BLPOPs it, does it (in a thread: many stages run at once) and LPUSHes the reply's JSON on
`sandbox_reply(request_id)`, which expires. A worker waits for its reply in bounded BLPOPs until the
request's deadline plus a grace; no reply by then (the runner is down or lost it) is a
`SandboxUnavailableError`: transient, the stage is run again later. A request id is served once: a
repeat (redis-py resends an LPUSH after a dropped connection) is dropped, so each request needs a
fresh id (the default).

Every field is data: the runner validates each request again (a worktree where workers make them
under the data dir, its owner's user, bounded numbers) and the Docker API proxy validates the
container it is asked to create.
"""

from __future__ import annotations

import re
import uuid
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter

MAX_ARGV_ITEMS = 4096
MAX_ARGV_BYTES = 256 * 1024
MAX_OUTPUT_BYTES = 10_000_000  # the loop's run_output_bytes upper bound
MAX_TIMEOUT_S = 86_400.0
# A label value: the story ids, roles and worker names the fleet makes, nothing a shell or Docker
# would read as syntax.
LABEL_VALUE = r"^[A-Za-z0-9][A-Za-z0-9_.:@-]{0,127}$"
_REQUEST_ID = re.compile(r"^[0-9a-f]{32}$")


def owner_user(uid: int, gid: int, fallback_uid: int) -> str:
    """The "uid:gid" a stage container runs as, for a worktree owned by uid:gid: its owner, or for a
    root-owned one (a root worker's) `fallback_uid` with the worktree's group. Never root, and never
    a group the worktree's owner could not give it (the runner refuses any other user: a chosen group,
    the Docker socket's, would let a command leave a setgid program of it in the worktree)."""
    return f"{fallback_uid if uid == 0 else uid}:{gid}"


class _Message(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class StageLabels(_Message):
    """Which stage a container belongs to: its Docker labels, and how the runner's sweep finds out
    whether that stage still runs (the running hash has `job`, run by `worker`)."""

    story: str = Field(pattern=LABEL_VALUE)
    domain: str = Field(pattern=LABEL_VALUE)
    role: str = Field(pattern=LABEL_VALUE)
    round: int = Field(ge=0, le=1000)
    attempt: int = Field(ge=0, le=100_000)
    job: str = Field(pattern=LABEL_VALUE)
    worker: str = Field(pattern=LABEL_VALUE)


class ContainerSpec(_Message):
    """The stage container a command runs in: one per (stage, worktree), started on the first
    command and kept warm for the next ones. `worktree` is the path as the worker sees it; the runner
    maps it to a mount source (a bind of the same path on a host, the data volume's path in compose).
    `user` is "uid:gid", never uid 0 (the runner refuses it)."""

    labels: StageLabels
    worktree: str = Field(min_length=1, max_length=4096)
    user: str = Field(pattern=r"^[1-9][0-9]{0,9}:[0-9]{1,10}$")
    network: bool = False


class ExecRequest(_Message):
    kind: Literal["exec"] = "exec"
    request_id: str = Field(default_factory=lambda: uuid.uuid4().hex, pattern=_REQUEST_ID.pattern)
    spec: ContainerSpec
    argv: list[Annotated[str, Field(max_length=MAX_ARGV_BYTES)]] = Field(
        min_length=1, max_length=MAX_ARGV_ITEMS
    )
    env: dict[str, str] = Field(default_factory=dict)  # the allow-listed environment (sandbox.base)
    timeout_s: float = Field(gt=0, le=MAX_TIMEOUT_S)
    max_output_bytes: int = Field(ge=1, le=MAX_OUTPUT_BYTES)
    sent_at: float = 0.0  # epoch seconds; a request older than its timeout is not started


class ReleaseRequest(_Message):
    """The stage is over: report its containers' usage and remove them."""

    kind: Literal["release"] = "release"
    request_id: str = Field(default_factory=lambda: uuid.uuid4().hex, pattern=_REQUEST_ID.pattern)
    labels: StageLabels


class PingRequest(_Message):
    """Is a runner there and can it reach Docker? (a worker's start-up probe)"""

    kind: Literal["ping"] = "ping"
    request_id: str = Field(default_factory=lambda: uuid.uuid4().hex, pattern=_REQUEST_ID.pattern)


SandboxRequest = Annotated[ExecRequest | ReleaseRequest | PingRequest, Field(discriminator="kind")]
REQUEST = TypeAdapter(SandboxRequest)


class SandboxUsage(_Message):
    """What one stage's containers used: recorded with the stage, shown by `wave status ID`."""

    containers: int = 0
    commands: int = 0
    cpu_s: float = 0.0  # CPU seconds, user + system, of everything the stage's containers ran
    peak_memory_bytes: int | None = None  # None where the engine cannot tell (cgroup v2 without memory.peak)
    wall_s: float = 0.0  # from the first container's start to the last one's removal
    limits_hit: list[str] = Field(default_factory=list)  # e.g. "memory limit (1024 MiB)", "pids limit (256)"


class ExecReply(_Message):
    kind: Literal["exec"] = "exec"
    exit_code: int = -1
    output: str = ""  # stdout and stderr interleaved; the end of it when `truncated`
    truncated: bool = False
    timed_out: bool = False  # killed at `timeout_s` (the container with it: the next command gets a new one)
    limit: str | None = None  # the limit the command hit ("memory limit (1024 MiB)"): the stage fails
    container: str = ""  # the container's name, for the logs
    started_container: bool = False  # this command waited for a container to start
    duration_s: float = 0.0
    error: str | None = None  # the runner could not run it at all (Docker down, image missing): transient


class ReleaseReply(_Message):
    kind: Literal["release"] = "release"
    usage: SandboxUsage | None = None  # None: the stage never started a container
    error: str | None = None


class PingReply(_Message):
    kind: Literal["ping"] = "ping"
    image: str = ""
    engine: str = ""  # the Docker engine's version
    error: str | None = None  # why the runner cannot start containers (no image, no engine)


SandboxReply = Annotated[ExecReply | ReleaseReply | PingReply, Field(discriminator="kind")]
REPLY = TypeAdapter(SandboxReply)
