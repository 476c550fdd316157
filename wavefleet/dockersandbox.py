"""The sandbox profile of the Docker API proxy (`wave docker-proxy --profile sandbox`): the routes the
sandbox runner may use, the lookups that keep its start/kill/remove/exec on sandbox containers, and
the policy (`wavefleet.dockerpolicy`) built from the command line.

Start, kill, remove, inspect, stats and exec are passed on only for a container labelled
`dev.wave.sandbox`, looked up on the daemon first and then named by its full id: a name could be
given to another container between the check and the call, an id never is. An exec is started only
when it belongs to such a container and was made without privileges or root (also one made around
the proxy). A name the daemon does not know is answered 404, as the daemon would, so that the
runner's "already gone" handling keeps working.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

from .config import ContainerSandboxSettings
from .dockerpolicy import (
    LABEL,
    MAX_BODY_BYTES,
    MAX_ID,
    USER,
    SandboxPolicy,
    check_create,
    check_exec,
    check_exec_start,
    check_user,
    require,
)
from .dockerproxy import NAME, Call, Profile, Refused, Route
from .dockerwire import Daemon
from .errors import ConfigError, InvalidInputError

FULL_ID = re.compile(r"[0-9a-f]{64}")
FALSE = {"0", "false", "False"}  # what docker-py sends for stream=False, and the usual spellings
VOLUME_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,254}")
IMAGE_NAME = re.compile(r"[a-z0-9][a-z0-9._/:-]{0,254}")  # no `@`: docker-py sends it as %40
MIB = 1024 * 1024


def sandbox_container(call: Call, ref: str | None = None) -> str:
    """The full id of the sandbox container the call names (`Refused` if it is not one)."""
    info = call.daemon.get(f"/containers/{ref or call.match['id']}/json")
    labels = (info.get("Config") or {}).get("Labels") or {} if isinstance(info, dict) else {}
    full = info.get("Id") if isinstance(info, dict) else None
    if not (isinstance(labels, dict) and labels.get(LABEL)) or not (
        isinstance(full, str) and FULL_ID.fullmatch(full)
    ):
        raise Refused(403, f"{call.match['id'][:80]} is not a sandbox container (no {LABEL} label)")
    return full


def _with_id(call: Call, full: str) -> str:
    start, end = call.match.span("id")
    return call.path[:start] + full + call.path[end:]


def _exec_target(policy: SandboxPolicy) -> Callable[[Call], str]:
    """An exec of a sandbox container, made without privileges as the policy's user (also one made
    around the proxy)."""

    def admit(call: Call) -> str:
        info = call.daemon.get(f"/exec/{call.match['id']}/json")
        process = info.get("ProcessConfig") if isinstance(info, dict) else None
        if not isinstance(process, dict) or process.get("privileged") is not False:
            raise Refused(403, "a privileged exec is not allowed")
        check_user(str(process.get("user", "")), "exec", policy.user)
        sandbox_container(call, str(info.get("ContainerID", ""))[:64] or "-")
        full = info.get("ID")
        require(isinstance(full, str) and FULL_ID.fullmatch(full) is not None, "the exec has no id")
        return _with_id(call, str(full))

    return admit


def _container(check: Callable[[Any], None] | None = None) -> Callable[[Call], str]:
    def admit(call: Call) -> str:
        if check is not None:
            check(call.body)
        return _with_id(call, sandbox_container(call))

    return admit


def _created(policy: SandboxPolicy) -> Callable[[Call], str]:
    def admit(call: Call) -> str:
        check_create(call.body, policy)
        return call.path

    return admit


def _exec_started(policy: SandboxPolicy) -> Callable[[Call], str]:
    target = _exec_target(policy)

    def admit(call: Call) -> str:
        check_exec_start(call.body)
        return target(call)

    return admit


def _name_query(params: dict[str, str]) -> None:
    require(
        "name" not in params or re.fullmatch(NAME, params["name"]) is not None,
        "create ?name= is not a plain name",
    )


def _one_shot_query(params: dict[str, str]) -> None:
    require(params.get("stream") in FALSE, "stats must be one-shot: ?stream=0")


def sandbox_profile(policy: SandboxPolicy) -> Profile:
    none: frozenset[str] = frozenset()
    c = f"/containers/(?P<id>{NAME})"
    e = f"/exec/(?P<id>{NAME})"
    routes = [
        *(Route(m, p, none) for m in ("GET", "HEAD") for p in ("/_ping", "/version")),
        Route("GET", "/containers/json", frozenset({"all", "limit", "size", "trunc_cmd", "filters"})),
        Route(
            "POST",
            "/containers/create",
            frozenset({"name"}),
            True,
            admit=_created(policy),
            check_query=_name_query,
        ),
        Route("POST", f"{c}/start", none, admit=_container()),
        Route("POST", f"{c}/kill", frozenset({"signal"}), admit=_container()),
        Route("DELETE", c, frozenset({"v", "force", "link"}), admit=_container()),
        Route("GET", f"{c}/json", frozenset({"size"}), admit=_container()),
        Route(
            "GET",
            f"{c}/stats",
            frozenset({"stream", "one-shot"}),
            admit=_container(),
            check_query=_one_shot_query,
        ),
        Route("POST", f"{c}/exec", none, True, admit=_container(lambda body: check_exec(body, policy))),
        Route("POST", f"{e}/start", none, True, upgrade=True, admit=_exec_started(policy)),
        Route("GET", f"{e}/json", none, admit=_exec_target(policy)),
        Route("GET", f"/images/{re.escape(policy.image)}/json", none),
    ]
    if policy.volume is not None:
        routes.append(Route("GET", f"/volumes/{re.escape(policy.volume)}", none))
    return Profile("sandbox", tuple(routes), MAX_BODY_BYTES)


def policy_from(
    settings: ContainerSandboxSettings,
    socket_path: str,
    *,
    image: str | None = None,
    volume: str | None = None,
    volume_seen_at: str | None = None,
    bind_root: str | None = None,
    max_memory_mb: int | None = None,
    max_pids: int | None = None,
    max_cpus: float | None = None,
    allow_network: bool = False,
    user: str | None = None,
) -> SandboxPolicy:
    """The policy from `wave docker-proxy --profile sandbox` options, each defaulting to the
    runner's own setting (WAVE_SANDBOX_CONTAINER__*), so one environment configures both."""
    image = image or settings.image
    if not IMAGE_NAME.fullmatch(image):
        raise InvalidInputError(f"--image {image[:80]!r}: give a local image name like wave-sandbox:latest")
    volume = volume or (None if bind_root else settings.data_volume)
    if (volume is None) == (bind_root is None):
        raise InvalidInputError(
            "--profile sandbox: give where worktrees are, --volume NAME (compose's data volume) "
            "or --bind-root DIR (a host's data dir), one of them"
        )
    if volume is not None:
        root, seen = _volume_mountpoint(volume, socket_path), volume_seen_at
    else:
        assert bind_root is not None
        if (
            not (Path(bind_root).is_absolute() and Path(bind_root).is_dir())
            or os.path.normpath(bind_root) == "/"
        ):
            raise InvalidInputError(
                f"--bind-root {bind_root[:200]!r}: give an existing absolute directory, not /"
            )
        root = seen = os.path.normpath(bind_root)
    return SandboxPolicy(
        image=image,
        mount_root=root,
        max_memory_bytes=(max_memory_mb or settings.memory_mb) * MIB,
        max_pids=max_pids or settings.pids,
        max_nano_cpus=round((max_cpus or settings.cpus) * 1e9),
        volume=volume,
        visible_root=seen,
        allow_network=allow_network,
        user=_pinned_user(user),
    )


def _pinned_user(user: str | None) -> str | None:
    match = None if user is None else USER.fullmatch(user)
    if user is not None and (match is None or int(match[1]) == 0 or max(map(int, match.groups())) > MAX_ID):
        raise InvalidInputError(
            f"--user {user[:40]!r}: give the workers' numeric UID:GID, not root (10001:10001)"
        )
    return user


def _volume_mountpoint(volume: str, socket_path: str) -> str:
    if not VOLUME_NAME.fullmatch(volume):
        raise InvalidInputError(f"--volume {volume[:80]!r} is not a volume name")
    try:
        info = Daemon(socket_path).get(f"/volumes/{volume}")
    except Refused as refused:
        raise ConfigError(
            f"--volume {volume}: {refused} (create it first: `docker volume create {volume}`)"
        ) from None
    mountpoint = info.get("Mountpoint") if isinstance(info, dict) else None
    if (
        not isinstance(mountpoint, str)
        or not Path(mountpoint).is_absolute()
        or os.path.normpath(mountpoint) == "/"
    ):
        raise ConfigError(
            f"--volume {volume}: the daemon gives no usable Mountpoint ({str(mountpoint)[:80]!r})"
        )
    return os.path.normpath(mountpoint)
