"""The container sandbox, worker side: a stage's commands sent to the `wave sandbox` runner over Redis.

Workers never talk to Docker. A command is an `ExecRequest` LPUSHed for the runner; the worker then
waits for its `ExecReply` in BLPOPs each shorter than the Redis client's socket timeout (a longer one
would be cut by the client and resent), checking between them that the runner still beats. What the
reply says becomes what the local sandboxes' callers already handle: an `Outcome`, a
`subprocess.TimeoutExpired`, and two errors: `SandboxLimitError` (a memory hog, a fork bomb: the
stage fails) and `SandboxUnavailableError` (no runner, no reply: the stage is run again later).
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import time
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar

from pydantic import ValidationError
from redis import Redis
from redis.exceptions import RedisError

from wavefleet.errors import SandboxLimitError, SandboxUnavailableError

from .base import SYSTEM_PATH, Outcome, allowed_env
from .limits import limit_error
from .protocol import (
    REPLY,
    ContainerSpec,
    ExecReply,
    ExecRequest,
    PingReply,
    PingRequest,
    ReleaseReply,
    ReleaseRequest,
    SandboxUsage,
    StageLabels,
    owner_user,
)

if TYPE_CHECKING:
    from wavefleet.config import Settings
    from wavefleet.keys import Keys

WORKSPACE = "/workspace"  # where the stage container has the worktree
IMAGE_BIN = "/opt/sandbox/bin"  # the sandbox image's venv: its python3, pytest, node
NO_RUNNER = "no `wave sandbox` runner is alive on this Redis (its heartbeat is gone)"
Reply = TypeVar("Reply", ExecReply, ReleaseReply, PingReply)


def container_env() -> dict[str, str]:
    """A command's whole environment in the container: the local allow-list, with the image's PATH
    and HOME in /workspace (the runner filters it by name once more)."""
    return allowed_env(WORKSPACE, path=f"{IMAGE_BIN}:{SYSTEM_PATH}")


def container_user(fallback_uid: int, worktree: Path) -> str:
    """Who runs the stage's commands: the worktree's owner (the worker), so files written there are
    the worker's; a root worker's are `fallback_uid:0` instead (never root in the container), and
    the worker then creates its files group-writable (umask 0o002, set at worker start). The runner
    allows no other (protocol.owner_user)."""
    try:
        st = worktree.stat()
    except OSError:  # no such worktree: the runner refuses it, in its own words
        return owner_user(os.getuid(), os.getgid(), fallback_uid)
    return owner_user(st.st_uid, st.st_gid, fallback_uid)


class ContainerSandbox:
    """A `RemoteSandbox`: made once per worker (probed with `ping`), bound to each stage by
    `for_stage`, whose containers the runner removes on `release` (or its sweep, if never sent)."""

    mode = "container"
    python = "python3"  # the image's, first on the container's PATH; not the worker's sys.executable

    def __init__(
        self, redis: Redis, settings: Settings, *, network: bool = False, labels: StageLabels | None = None
    ) -> None:
        self.redis = redis
        self.settings = settings
        self.keys = settings.keys
        self.network = network
        self.labels = labels
        self.fallback_uid = settings.sandbox_container.fallback_uid
        self.grace_s = settings.sandbox_container.reply_grace_s
        # Each BLPOP well inside the client's socket timeout, which would otherwise cut it.
        self.block_s = max(0.05, min(5.0, settings.redis.socket_timeout_s / 2))
        self.sent = False  # an exec was sent: the stage may hold a container to release

    @property
    def label(self) -> str:
        return "container" + (" (network allowed)" if self.network else "")

    def for_stage(self, labels: StageLabels) -> ContainerSandbox:
        return ContainerSandbox(self.redis, self.settings, network=self.network, labels=labels)

    def execute(self, argv: list[str], worktree: Path, *, timeout_s: float, max_output_bytes: int) -> Outcome:
        if self.labels is None:
            raise RuntimeError("a container sandbox runs commands for a stage only: bind it with for_stage")
        tree = worktree.resolve()
        user = container_user(self.fallback_uid, tree)
        spec = ContainerSpec(labels=self.labels, worktree=str(tree), user=user, network=self.network)
        request = ExecRequest(
            spec=spec,
            argv=list(argv),
            env=container_env(),
            timeout_s=timeout_s,
            max_output_bytes=max_output_bytes,
            sent_at=time.time(),
        )
        self.sent = True
        reply = self._call(request, ExecReply, timeout_s + self.grace_s)
        if reply.error:
            raise SandboxUnavailableError(f"the container sandbox could not run a command: {reply.error}")
        if reply.limit:
            raise SandboxLimitError(limit_error(reply.limit, list(argv)))
        if reply.timed_out:
            raise subprocess.TimeoutExpired(list(argv), timeout_s)
        return Outcome(reply.exit_code, reply.output, reply.truncated)

    def release(self) -> SandboxUsage | None:
        if self.labels is None or not self.sent:
            return None  # nothing was started for this stage
        reply = self._call(ReleaseRequest(labels=self.labels), ReleaseReply, self.grace_s)
        self.sent = False
        if reply.error:
            raise SandboxUnavailableError(f"the container sandbox could not release the stage: {reply.error}")
        return reply.usage

    def ping(self, timeout_s: float) -> PingReply:
        """The runner's answer (its image and engine, or why it cannot start containers)."""
        return self._call(PingRequest(), PingReply, timeout_s)

    def runner(self) -> dict[str, str] | None:
        """The live runner's heartbeat ({name, image, engine}), or None if none beats."""
        return runner_beat(self.redis, self.keys)

    def _call(
        self, request: ExecRequest | ReleaseRequest | PingRequest, kind: type[Reply], wait_s: float
    ) -> Reply:
        if self.runner() is None:
            raise SandboxUnavailableError(NO_RUNNER)
        payload = request.model_dump_json()
        reply_key = self.keys.sandbox_reply(request.request_id)
        self.redis.lpush(self.keys.sandbox_requests(), payload)
        deadline = time.monotonic() + wait_s
        while (left := deadline - time.monotonic()) > 0:
            got = self.redis.blpop([reply_key], timeout=min(left, self.block_s))
            if got is not None:
                return _parsed(got[1], kind)
            if not self.redis.exists(self.keys.sandbox_runner()):
                self._withdraw(payload)
                raise SandboxUnavailableError(
                    f"{NO_RUNNER}: it stopped before answering (a {request.kind} request)"
                )
        self._withdraw(payload)
        raise SandboxUnavailableError(
            f"the `wave sandbox` runner did not answer a {request.kind} within {wait_s:.3g} s"
        )

    def _withdraw(self, payload: str) -> None:
        """Given up on: take the request back if no runner has taken it yet, so none starts it late."""
        with contextlib.suppress(RedisError):
            self.redis.lrem(self.keys.sandbox_requests(), 1, payload)


def runner_beat(redis: Redis, keys: Keys) -> dict[str, str] | None:
    """The live runner's heartbeat as strings ({name, image, engine}; {} if unreadable), or None."""
    raw = redis.get(keys.sandbox_runner())
    if raw is None:
        return None
    try:
        beat = json.loads(raw)
    except ValueError:
        beat = None
    return {str(k): str(v) for k, v in beat.items()} if isinstance(beat, dict) else {}


def _parsed(raw: str | bytes, kind: type[Reply]) -> Reply:
    try:
        reply = REPLY.validate_json(raw)
    except ValidationError as exc:
        raise SandboxUnavailableError(
            f"the `wave sandbox` runner sent a malformed reply: {exc.error_count()} errors"
        ) from None
    if not isinstance(reply, kind):
        raise SandboxUnavailableError(f"the `wave sandbox` runner answered a {reply.kind} request instead")
    return reply
