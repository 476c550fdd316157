"""What the sandbox runner may create and exec through the Docker API proxy: the stage container's
hardening as a check of each request body (the routes are in `wavefleet.dockersandbox`).

The runner creates one hardened container per stage and execs the stage's commands in it (BRIEF
"The stage container"). Every create must carry that hardening: the configured image, a numeric
non-root user, a read-only root, no capability, no-new-privileges, no network unless allowed,
bounded memory (no swap), CPU and pids, the worktree (and its `.git` file, read-only) bind-mounted
from where workers make worktrees under the allowed root (`repos/<domain>/worktrees/<name>`, not the
domain's clone nor any other folder) and nothing else. Every exec runs as a numeric non-root user, without
privileges, a terminal or stdin.

Bodies are checked as the daemon's Go decoder will read them: keys exact-case (Go matches them
case-insensitively, so `privileged` would mean `Privileged`: a key not on the list is refused, and
`dockerwire.decode_json` refuses two keys differing only by case), numbers as integers, and the keys
docker-py may send empty checked for being empty. Unknown keys are refused even when empty: an empty
`MaskedPaths` would switch off Docker's masking of /proc.
"""

from __future__ import annotations

import os
import posixpath
import re
from dataclasses import dataclass
from typing import Any

from .dockerwire import Refused
from .sandbox.binds import LAYOUT, is_worktree_path

LABEL = "dev.wave.sandbox"
WORKSPACE, GIT_FILE = "/workspace", "/workspace/.git"
TMP = "/tmp"  # noqa: S108 - the container's own tmpfs, not a file of ours
MAX_BODY_BYTES = 256 * 1024
USER = re.compile(r"([0-9]{1,10}):([0-9]{1,10})")
ENV_ITEM = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,127}=[^\x00]*", re.DOTALL)
NO_NEW_PRIVILEGES = {"no-new-privileges", "no-new-privileges:true", "no-new-privileges=true"}
TMPFS_OPTION = re.compile(r"rw|nosuid|nodev|noexec|exec|size=[0-9]{1,12}[kmg]?|mode=[0-7]{3,4}")
MAX_ID = 2**31 - 1


@dataclass(frozen=True)
class SandboxPolicy:
    """What the sandbox profile lets through. `mount_root` is the host path every mount source
    must lie under (the data volume's mountpoint, or a host data dir); `visible_root` is where this
    process sees that same directory, to resolve symlinks (None: only lexical checks are possible).
    `user` pins the containers' user: compose's workers' own, so that a compromised runner cannot
    pick another group (the Docker socket's: a command would leave a setgid program of it)."""

    image: str
    mount_root: str
    max_memory_bytes: int
    max_pids: int
    max_nano_cpus: int
    volume: str | None = None
    visible_root: str | None = None
    allow_network: bool = False
    user: str | None = None  # the one "uid:gid" creates and execs may run as; None: any non-root


def _empty(value: Any) -> bool:
    return value in (None, "", 0, False, [], {}) and value is not True


def _flag(value: Any) -> bool:
    """A JSON boolean or absent (Python's `1 == True` must not let a number through)."""
    return value is None or isinstance(value, bool)


def require(ok: bool, reason: str) -> None:
    """`Refused(403, reason)` unless `ok`."""
    if not ok:
        raise Refused(403, reason)


def check_user(value: Any, where: str, pinned: str | None = None) -> None:
    """ "uid:gid" in numbers, uid not 0: a name ("root", or one the image maps to 0) is refused;
    with `pinned`, exactly that one."""
    match = USER.fullmatch(value) if isinstance(value, str) else None
    require(match is not None, f"{where} User must be uid:gid in numbers, got {str(value)[:40]!r}")
    assert match is not None
    uid, gid = int(match[1]), int(match[2])
    require(0 < uid <= MAX_ID and gid <= MAX_ID, f"{where} User {value!r}: uid 0 (root) is not allowed")
    require(pinned is None or value == pinned, f"{where} User must be {pinned}, got {value!r}")


def _check_env(value: Any, where: str) -> None:
    ok = value is None or (
        isinstance(value, list) and all(isinstance(i, str) and ENV_ITEM.fullmatch(i) for i in value)
    )
    require(ok, f"{where} Env must be a list of NAME=VALUE")


def _check_argv(value: Any, where: str, *, required: bool) -> None:
    ok = isinstance(value, list) and all(isinstance(i, str) for i in value) and (bool(value) or not required)
    require(ok or (value is None and not required), f"{where} Cmd must be a list of strings")


def _check_keys(body: Any, allowed: set[str], where: str) -> dict[str, Any]:
    require(isinstance(body, dict), f"the {where} body must be a JSON object")
    unknown = sorted(set(body) - allowed)
    require(not unknown, f"{where} key {unknown[0][:40]!r} is not allowed" if unknown else "")
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
        require(_empty(config[key]), f"create {key} must be empty")
    require(config.get("Image") == policy.image, f"create Image must be {policy.image!r}")
    check_user(config.get("User"), "create", policy.user)
    _check_argv(config.get("Cmd"), "create", required=False)
    _check_env(config.get("Env"), "create")
    workdir = config.get("WorkingDir")
    require(workdir in (None, "") or _absolute(workdir), "create WorkingDir must be an absolute path")
    for key in ("NetworkDisabled", "AttachStdout", "AttachStderr"):
        require(_flag(config.get(key)), f"create {key} must be a boolean")
    labels = config.get("Labels")
    require(
        isinstance(labels, dict)
        and all(isinstance(v, str) for v in labels.values())
        and bool(labels.get(LABEL)),
        f"create Labels must include {LABEL}",
    )
    _check_host_config(config.get("HostConfig"), policy)


def _check_host_config(value: Any, policy: SandboxPolicy) -> None:
    host = _check_keys(value, HOST_EMPTY | HOST_CHECKED, "HostConfig")
    for key in HOST_EMPTY & set(host):
        require(_empty(host[key]), f"HostConfig {key} is not allowed")
    require(host.get("ReadonlyRootfs") is True, "HostConfig ReadonlyRootfs must be true")
    require(host.get("CapDrop") == ["ALL"], 'HostConfig CapDrop must be ["ALL"]')
    options = host.get("SecurityOpt")
    require(
        isinstance(options, list) and bool(options) and all(o in NO_NEW_PRIVILEGES for o in options),
        'HostConfig SecurityOpt must be ["no-new-privileges"] and nothing else',
    )
    networks = ("none", "bridge", "default") if policy.allow_network else ("none",)
    require(host.get("NetworkMode") in networks, f"HostConfig NetworkMode must be one of {networks}")
    _check_limit(host, "Memory", policy.max_memory_bytes)
    require(host.get("MemorySwap") == host["Memory"], "HostConfig MemorySwap must equal Memory (no swap)")
    _check_limit(host, "NanoCpus", policy.max_nano_cpus)
    _check_limit(host, "PidsLimit", policy.max_pids)
    for key in ("Init", "AutoRemove"):
        require(_flag(host.get(key)), f"HostConfig {key} must be a boolean")
    restart = host.get("RestartPolicy")  # a restarting container would outlive the halt's kill
    require(
        _empty(restart) or (isinstance(restart, dict) and restart.get("Name") in ("", "no")),
        'HostConfig RestartPolicy must be "no"',
    )
    require(host.get("Runtime") in (None, "", "runc"), "HostConfig Runtime must be the default")
    require(host.get("IpcMode") in (None, "", "private", "none"), "HostConfig IpcMode must be private")
    require(host.get("CgroupnsMode") in (None, "", "private"), "HostConfig CgroupnsMode must be private")
    _check_tmpfs(host.get("Tmpfs"))
    check_mounts(host.get("Mounts"), policy)


def _check_limit(host: dict[str, Any], key: str, maximum: int) -> None:
    value = host.get(key)
    require(
        isinstance(value, int) and not isinstance(value, bool) and 0 < value <= maximum,
        f"HostConfig {key} must be a whole number from 1 to {maximum}, got {str(value)[:40]!r}",
    )


def _check_tmpfs(value: Any) -> None:
    if value is None or value == {}:
        return
    require(isinstance(value, dict) and set(value) == {TMP}, "HostConfig Tmpfs may hold /tmp only")
    options = value[TMP]
    require(
        isinstance(options, str) and all(TMPFS_OPTION.fullmatch(o) for o in options.split(",") if o),
        "HostConfig Tmpfs /tmp options: rw, nosuid, nodev, noexec, exec, size=, mode= only",
    )


MOUNT_KEYS = {"Target", "Source", "Type", "ReadOnly", "Consistency", "BindOptions"}


def check_mounts(value: Any, policy: SandboxPolicy) -> None:
    """Binds of a worktree at /workspace and, read-only, that worktree's `.git` at /workspace/.git."""
    require(isinstance(value, list) and 1 <= len(value) <= 2, "HostConfig Mounts: the worktree, and .git")
    targets: dict[str, dict[str, Any]] = {}
    for mount in value:
        _check_keys(mount, MOUNT_KEYS, "Mounts")
        require(mount.get("Type") == "bind", "Mounts: type bind only")
        require(_empty(mount.get("BindOptions")), "Mounts BindOptions are not allowed")
        require(mount.get("Consistency") in (None, "", "default"), "Mounts Consistency is not allowed")
        require(_flag(mount.get("ReadOnly")), "Mounts ReadOnly must be a boolean")
        target = mount.get("Target")
        require(target in (WORKSPACE, GIT_FILE) and target not in targets, "Mounts: one of each target")
        targets[target] = mount
        check_source(mount.get("Source"), policy)
    require(WORKSPACE in targets, f"Mounts must bind the worktree at {WORKSPACE}")
    worktree = str(targets[WORKSPACE]["Source"])
    root = policy.mount_root.rstrip("/")
    require(
        is_worktree_path(tuple(worktree[len(root) + 1 :].split("/"))),
        f"Mounts Source of {WORKSPACE} must be a worktree, {root}/{LAYOUT}, got {worktree[:200]!r}",
    )
    if GIT_FILE in targets:
        require(targets[GIT_FILE].get("ReadOnly") is True, f"{GIT_FILE} must be read-only")
        require(targets[GIT_FILE].get("Source") == f"{worktree}/.git", f"{GIT_FILE} must be {worktree}/.git")


def check_source(source: Any, policy: SandboxPolicy) -> None:
    """A plain absolute path strictly under the mount root, which (where this process can see it)
    does not leave the root through a symlink."""
    root = policy.mount_root
    require(
        isinstance(source, str) and _absolute(source) and source.startswith(root.rstrip("/") + "/"),
        f"Mounts Source must be a plain absolute path under {root}, got {str(source)[:200]!r}",
    )
    if policy.visible_root is not None:
        local = policy.visible_root.rstrip("/") + source[len(root.rstrip("/")) :]
        real_root = os.path.realpath(policy.visible_root)
        real = os.path.realpath(local)
        require(real.startswith(real_root.rstrip("/") + "/"), f"Mounts Source {source[:200]!r} leaves {root}")


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
    spec = _check_keys(body, EXEC_KEYS, "exec")
    check_user(spec.get("User"), "exec", policy.user)
    for key in ("Privileged", "Tty", "AttachStdin", "DetachKeys", "ConsoleSize"):
        require(_empty(spec.get(key)), f"exec {key} is not allowed")
    for key in ("AttachStdout", "AttachStderr"):
        require(_flag(spec.get(key)), f"exec {key} must be a boolean")
    _check_argv(spec.get("Cmd"), "exec", required=True)
    _check_env(spec.get("Env"), "exec")
    workdir = spec.get("WorkingDir")
    require(workdir in (None, "") or _absolute(workdir), "exec WorkingDir must be an absolute path")
    require(spec.get("Container") is None or isinstance(spec.get("Container"), str), "exec Container")


def check_exec_start(body: Any) -> None:
    spec = _check_keys(body if body is not None else {}, {"Detach", "Tty", "ConsoleSize"}, "exec start")
    for key in ("Detach", "Tty"):
        require(_flag(spec.get(key)), f"exec start {key} must be a boolean")
    require(spec.get("ConsoleSize") is None, "exec start ConsoleSize is not allowed")
