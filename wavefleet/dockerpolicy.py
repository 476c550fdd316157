"""The sandbox profile of the Docker API proxy: what `wave sandbox` (the runner) may ask the daemon,
down to the body of each container it creates and each command it execs.

The runner creates one hardened container per stage and execs the stage's commands in it (BRIEF
"The stage container"). A client holding this profile can do that and nothing else: every create
must carry that hardening (the configured image, a non-root user, a read-only root, no capability,
no-new-privileges, no network unless allowed, bounded memory, CPU and pids, the worktree bind-mounted
from under the allowed root and nothing else); every exec runs as a non-root user without
privileges; and start, kill, remove, inspect, stats and exec are passed on only for a container
labelled `dev.wave.sandbox`, looked up on the daemon first and then named by its full id (a name
could be given to another container between the check and the call; an id never is).

Bodies are checked as the daemon's Go decoder will read them: keys exact-case (Go matches them
case-insensitively, so `privileged` would mean `Privileged`: any key not on the list is refused,
and so are two keys differing only by case), numbers as integers, every key on a whitelist, and the
keys that may be present only when empty (what docker-py sends) checked for being empty.
"""

from __future__ import annotations

import os
import posixpath
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from .dockerproxy import NAME, Call, Profile, Refused, Route

LABEL = "dev.wave.sandbox"
WORKSPACE, GIT_FILE = "/workspace", "/workspace/.git"
TMP = "/tmp"  # noqa: S108 - the container's own tmpfs, not a file of ours
MAX_BODY_BYTES = 256 * 1024
USER = re.compile(r"([0-9]{1,10}):([0-9]{1,10})")
ENV_ITEM = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,127}=[^\x00]*", re.DOTALL)
NO_NEW_PRIVILEGES = {"no-new-privileges", "no-new-privileges:true", "no-new-privileges=true"}
TMPFS_OPTION = re.compile(r"rw|nosuid|nodev|noexec|exec|size=[0-9]{1,12}[kmg]?|mode=[0-7]{3,4}")
FULL_ID = re.compile(r"[0-9a-f]{64}")
FALSE = {"0", "false", "False"}
MAX_ID = 2**31 - 1


@dataclass(frozen=True)
class SandboxPolicy:
    """What the sandbox profile lets through. `mount_root` is the host path every mount source
    must lie under (the data volume's mountpoint, or a host data dir); `visible_root` is where this
    process sees that same directory, to resolve symlinks (None: only lexical checks are possible)."""

    image: str
    mount_root: str
    max_memory_bytes: int
    max_pids: int
    max_nano_cpus: int
    volume: str | None = None
    visible_root: str | None = None
    allow_network: bool = False


def _refuse(reason: str) -> Refused:
    return Refused(403, reason)


def _empty(value: Any) -> bool:
    return value in (None, "", 0, False, [], {}) and value is not True


def _require(ok: bool, reason: str) -> None:
    if not ok:
        raise _refuse(reason)


def check_user(value: Any, where: str) -> None:
    """ "uid:gid" in numbers, uid not 0: a name ("root", or one the image maps to 0) is refused."""
    match = USER.fullmatch(value) if isinstance(value, str) else None
    _require(match is not None, f"{where} User must be uid:gid in numbers, got {str(value)[:40]!r}")
    assert match is not None
    uid, gid = int(match[1]), int(match[2])
    _require(0 < uid <= MAX_ID and gid <= MAX_ID, f"{where} User {value!r}: uid 0 (root) is not allowed")


def _check_env(value: Any, where: str) -> None:
    ok = value is None or (
        isinstance(value, list) and all(isinstance(i, str) and ENV_ITEM.fullmatch(i) for i in value)
    )
    _require(ok, f"{where} Env must be a list of NAME=VALUE")


def _check_argv(value: Any, where: str, *, required: bool) -> None:
    ok = isinstance(value, list) and all(isinstance(i, str) for i in value) and (bool(value) or not required)
    _require(ok or (value is None and not required), f"{where} Cmd must be a list of strings")


def _check_keys(body: Any, allowed: set[str], where: str) -> dict[str, Any]:
    _require(isinstance(body, dict), f"the {where} body must be a JSON object")
    unknown = sorted(set(body) - allowed)
    _require(not unknown, f"{where} key {unknown[0][:40]!r} is not allowed" if unknown else "")
    return dict(body)


# --- create -------------------------------------------------------------------------------------
# Keys docker-py may send with nothing in them; anything in them is refused.
CONFIG_EMPTY = {"Hostname", "Domainname", "ExposedPorts", "Volumes", "Healthcheck", "NetworkingConfig",
                "MacAddress", "OnBuild", "Shell", "Tty", "OpenStdin", "StdinOnce", "AttachStdin",
                "Entrypoint", "StopSignal", "StopTimeout"}  # fmt: skip
CONFIG_CHECKED = {"Image", "User", "Cmd", "WorkingDir", "Env", "Labels", "HostConfig",
                  "NetworkDisabled", "AttachStdout", "AttachStderr"}  # fmt: skip
HOST_EMPTY = {"Privileged", "CapAdd", "Binds", "Devices", "DeviceRequests", "DeviceCgroupRules",
              "VolumesFrom", "Links", "ExtraHosts", "PidMode", "UTSMode", "UsernsMode", "Sysctls",
              "CgroupParent", "OomKillDisable", "PortBindings", "PublishAllPorts", "GroupAdd", "Dns",
              "DnsOptions", "DnsSearch", "Ulimits", "ShmSize", "OomScoreAdj", "Isolation", "VolumeDriver",
              "StorageOpt", "ContainerIDFile", "CpuShares", "CpuPeriod", "CpuQuota", "CpuRealtimePeriod",
              "CpuRealtimeRuntime", "CpusetCpus", "CpusetMems", "CpuCount", "CpuPercent", "BlkioWeight",
              "BlkioWeightDevice", "BlkioDeviceReadBps", "BlkioDeviceWriteBps", "BlkioDeviceReadIOps",
              "BlkioDeviceWriteIOps", "MemoryReservation", "MemorySwappiness", "KernelMemory",
              "KernelMemoryTCP", "Cgroup", "IOMaximumIOps", "IOMaximumBandwidth", "ConsoleSize",
              "LogConfig"}  # fmt: skip
# Not even empty: MaskedPaths/ReadonlyPaths [] would switch off Docker's masking of /proc and /sys.
HOST_CHECKED = {"ReadonlyRootfs", "CapDrop", "SecurityOpt", "NetworkMode", "Memory", "MemorySwap",
                "NanoCpus", "PidsLimit", "Mounts", "Tmpfs", "Init", "AutoRemove", "RestartPolicy",
                "Runtime", "IpcMode", "CgroupnsMode"}  # fmt: skip


def check_create(body: Any, policy: SandboxPolicy) -> None:
    """`Refused(403, reason)` unless `body` creates a container with exactly the stage hardening."""
    config = _check_keys(body, CONFIG_EMPTY | CONFIG_CHECKED, "create")
    for key in CONFIG_EMPTY & set(config):
        _require(_empty(config[key]), f"create {key} must be empty")
    _require(config.get("Image") == policy.image, f"create Image must be {policy.image!r}")
    check_user(config.get("User"), "create")
    _check_argv(config.get("Cmd"), "create", required=False)
    _check_env(config.get("Env"), "create")
    workdir = config.get("WorkingDir")
    _require(workdir in (None, "") or _absolute(workdir), "create WorkingDir must be an absolute path")
    for key in ("NetworkDisabled", "AttachStdout", "AttachStderr"):
        _require(config.get(key) in (None, True, False), f"create {key} must be a boolean")
    labels = config.get("Labels")
    _require(
        isinstance(labels, dict)
        and all(isinstance(v, str) for v in labels.values())
        and bool(labels.get(LABEL)),
        f"create Labels must include {LABEL}",
    )
    _check_host_config(config.get("HostConfig"), policy)


def _check_host_config(value: Any, policy: SandboxPolicy) -> None:
    host = _check_keys(value, HOST_EMPTY | HOST_CHECKED, "HostConfig")
    for key in HOST_EMPTY & set(host):
        _require(_empty(host[key]), f"HostConfig {key} is not allowed")
    _require(host.get("ReadonlyRootfs") is True, "HostConfig ReadonlyRootfs must be true")
    _require(host.get("CapDrop") == ["ALL"], 'HostConfig CapDrop must be ["ALL"]')
    options = host.get("SecurityOpt")
    _require(
        isinstance(options, list) and bool(options) and all(o in NO_NEW_PRIVILEGES for o in options),
        'HostConfig SecurityOpt must be ["no-new-privileges"] and nothing else',
    )
    networks = ("none", "bridge", "default") if policy.allow_network else ("none",)
    _require(host.get("NetworkMode") in networks, f"HostConfig NetworkMode must be one of {networks}")
    _check_limit(host, "Memory", policy.max_memory_bytes)
    _require(host.get("MemorySwap") == host["Memory"], "HostConfig MemorySwap must equal Memory (no swap)")
    _check_limit(host, "NanoCpus", policy.max_nano_cpus)
    _check_limit(host, "PidsLimit", policy.max_pids)
    for key in ("Init", "AutoRemove"):
        _require(host.get(key) in (None, True, False), f"HostConfig {key} must be a boolean")
    restart = host.get("RestartPolicy")  # a restarting container would outlive the halt's kill
    _require(
        _empty(restart) or (isinstance(restart, dict) and restart.get("Name") in ("", "no")),
        'HostConfig RestartPolicy must be "no"',
    )
    _require(host.get("Runtime") in (None, "", "runc"), "HostConfig Runtime must be the default")
    _require(host.get("IpcMode") in (None, "", "private", "none"), "HostConfig IpcMode must be private")
    _require(host.get("CgroupnsMode") in (None, "", "private"), "HostConfig CgroupnsMode must be private")
    _check_tmpfs(host.get("Tmpfs"))
    check_mounts(host.get("Mounts"), policy)


def _check_limit(host: dict[str, Any], key: str, maximum: int) -> None:
    value = host.get(key)
    _require(
        isinstance(value, int) and not isinstance(value, bool) and 0 < value <= maximum,
        f"HostConfig {key} must be a whole number from 1 to {maximum}, got {str(value)[:40]!r}",
    )


def _check_tmpfs(value: Any) -> None:
    if value is None or value == {}:
        return
    _require(isinstance(value, dict) and set(value) == {TMP}, "HostConfig Tmpfs may hold /tmp only")
    options = value[TMP]
    _require(
        isinstance(options, str) and all(TMPFS_OPTION.fullmatch(o) for o in options.split(",") if o),
        "HostConfig Tmpfs /tmp options: rw, nosuid, nodev, noexec, exec, size=, mode= only",
    )


MOUNT_KEYS = {"Target", "Source", "Type", "ReadOnly", "Consistency", "BindOptions"}


def check_mounts(value: Any, policy: SandboxPolicy) -> None:
    """Binds of the worktree at /workspace and, read-only, its `.git` file at /workspace/.git."""
    _require(isinstance(value, list) and 1 <= len(value) <= 2, "HostConfig Mounts: the worktree, and .git")
    targets: dict[str, dict[str, Any]] = {}
    for mount in value:
        _check_keys(mount, MOUNT_KEYS, "Mounts")
        _require(mount.get("Type") == "bind", "Mounts: type bind only")
        _require(_empty(mount.get("BindOptions")), "Mounts BindOptions are not allowed")
        _require(mount.get("Consistency") in (None, "", "default"), "Mounts Consistency is not allowed")
        _require(mount.get("ReadOnly") in (None, True, False), "Mounts ReadOnly must be a boolean")
        target = mount.get("Target")
        _require(target in (WORKSPACE, GIT_FILE) and target not in targets, "Mounts: one of each target")
        targets[target] = mount
        check_source(mount.get("Source"), policy)
    _require(WORKSPACE in targets, f"Mounts must bind the worktree at {WORKSPACE}")
    _require(
        GIT_FILE not in targets or targets[GIT_FILE].get("ReadOnly") is True, f"{GIT_FILE} must be read-only"
    )


def check_source(source: Any, policy: SandboxPolicy) -> None:
    """A plain absolute path strictly under the mount root, which (where this process can see it)
    does not leave the root through a symlink."""
    root = policy.mount_root
    _require(
        isinstance(source, str) and _absolute(source) and source.startswith(root.rstrip("/") + "/"),
        f"Mounts Source must be a plain absolute path under {root}, got {str(source)[:200]!r}",
    )
    if policy.visible_root is not None:
        local = policy.visible_root.rstrip("/") + source[len(root.rstrip("/")) :]
        real_root = os.path.realpath(policy.visible_root)
        real = os.path.realpath(local)
        _require(
            real.startswith(real_root.rstrip("/") + "/"), f"Mounts Source {source[:200]!r} leaves {root}"
        )


def _absolute(path: Any) -> bool:
    """Absolute, normal (no `.`, `..`, `//` or trailing `/`), no control characters."""
    return (
        isinstance(path, str)
        and path.startswith("/")
        and posixpath.normpath(path) == path
        and not path.startswith("//")
        and all(ord(c) >= 0x20 and c != "\x7f" for c in path)
    )


# --- exec ---------------------------------------------------------------------------------------
EXEC_KEYS = {"User", "Privileged", "Tty", "AttachStdin", "AttachStdout", "AttachStderr", "Cmd", "Env",
             "WorkingDir", "DetachKeys", "Container", "ConsoleSize"}  # fmt: skip


def check_exec(body: Any, policy: SandboxPolicy) -> None:
    """A command run as a non-root user, without privileges, a terminal, stdin or detach keys."""
    del policy  # the same for every policy today; kept so the call site reads like check_create
    spec = _check_keys(body, EXEC_KEYS, "exec")
    check_user(spec.get("User"), "exec")
    for key in ("Privileged", "Tty", "AttachStdin", "DetachKeys", "ConsoleSize"):
        _require(_empty(spec.get(key)), f"exec {key} is not allowed")
    for key in ("AttachStdout", "AttachStderr"):
        _require(spec.get(key) in (None, True, False), f"exec {key} must be a boolean")
    _check_argv(spec.get("Cmd"), "exec", required=True)
    _check_env(spec.get("Env"), "exec")
    workdir = spec.get("WorkingDir")
    _require(workdir in (None, "") or _absolute(workdir), "exec WorkingDir must be an absolute path")
    _require(spec.get("Container") is None or isinstance(spec.get("Container"), str), "exec Container")


def check_exec_start(body: Any) -> None:
    spec = _check_keys(body if body is not None else {}, {"Detach", "Tty", "ConsoleSize"}, "exec start")
    for key in ("Detach", "Tty"):
        _require(spec.get(key) in (None, True, False), f"exec start {key} must be a boolean")
    _require(spec.get("ConsoleSize") is None, "exec start ConsoleSize is not allowed")


# --- the profile ---------------------------------------------------------------------------------
def sandbox_container(call: Call, ref: str | None = None) -> str:
    """The full id of the sandbox container the call names (`Refused` if it is not one)."""
    info = call.daemon.get(f"/containers/{ref or call.match['id']}/json")
    labels = (info.get("Config") or {}).get("Labels") or {} if isinstance(info, dict) else {}
    full = info.get("Id") if isinstance(info, dict) else None
    if not (isinstance(labels, dict) and labels.get(LABEL)) or not (
        isinstance(full, str) and FULL_ID.fullmatch(full)
    ):
        raise _refuse(f"{call.match['id'][:80]} is not a sandbox container (no {LABEL} label)")
    return full


def _with_id(call: Call, full: str) -> str:
    start, end = call.match.span("id")
    return call.path[:start] + full + call.path[end:]


def _exec_target(call: Call) -> str:
    """An exec of a sandbox container, made without privileges (also one made around the proxy)."""
    info = call.daemon.get(f"/exec/{call.match['id']}/json")
    process = info.get("ProcessConfig") if isinstance(info, dict) else None
    if not isinstance(process, dict) or process.get("privileged") is not False:
        raise _refuse("a privileged exec is not allowed")
    user = str(process.get("user", ""))
    check_user(user, "exec")
    sandbox_container(call, str(info.get("ContainerID", ""))[:64] or "-")
    full = info.get("ID")
    _require(isinstance(full, str) and FULL_ID.fullmatch(full) is not None, "the exec has no id")
    return _with_id(call, str(full))


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


def _exec_started(call: Call) -> str:
    check_exec_start(call.body)
    return _exec_target(call)


def _name_query(params: dict[str, str]) -> None:
    _require(
        "name" not in params or re.fullmatch(NAME, params["name"]) is not None,
        "create ?name= is not a plain name",
    )


def _one_shot_query(params: dict[str, str]) -> None:
    _require(params.get("stream") in FALSE, "stats must be one-shot: ?stream=0")


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
        Route("POST", f"{e}/start", none, True, upgrade=True, admit=_exec_started),
        Route("GET", f"{e}/json", none, admit=_exec_target),
        Route("GET", f"/images/{re.escape(policy.image)}/json", none),
    ]
    if policy.volume is not None:
        routes.append(Route("GET", f"/volumes/{re.escape(policy.volume)}", none))
    return Profile("sandbox", tuple(routes), MAX_BODY_BYTES)
