"""The Engine API bodies the sandbox runner sends (docker/sandbox-api-calls.md, as docker-py 7.2 writes them):
the starting point that the policy tests of the Docker API proxy change one field at a time."""

from __future__ import annotations

import copy
import posixpath
from typing import Any

MIB = 1024 * 1024


def create_body(image: str, worktree: str, label: str, *, git: bool = True) -> dict[str, Any]:
    mounts = [{"Type": "bind", "Source": worktree, "Target": "/workspace", "ReadOnly": False}]
    if git:
        mounts.append(
            {"Type": "bind", "Source": f"{worktree}/.git", "Target": "/workspace/.git", "ReadOnly": True}
        )
    return copy.deepcopy(
        {
            "User": "10001:10001", "Tty": False, "OpenStdin": False, "StdinOnce": False,
            "AttachStdin": False, "AttachStdout": True, "AttachStderr": True, "Env": [],
            "Cmd": ["sleep", "infinity"], "Image": image, "NetworkDisabled": True, "WorkingDir": "/workspace",
            "HostConfig": {
                "Memory": 64 * MIB, "MemorySwap": 64 * MIB, "ReadonlyRootfs": True, "NetworkMode": "none",
                "CapDrop": ["ALL"], "SecurityOpt": ["no-new-privileges"],
                "Tmpfs": {"/tmp": "rw,nosuid,nodev,size=16m"}, "PidsLimit": 64, "Init": True,
                "NanoCpus": 500_000_000, "Mounts": mounts,
            },
            "Labels": {"dev.wave.sandbox": label, "dev.wave.story": "S-1", "dev.dozzle.group": "sandbox"},
        }
    )  # fmt: skip


def exec_body(container: str, argv: list[str]) -> dict[str, Any]:
    return {
        "Container": container, "User": "10001:10001", "Privileged": False, "Tty": False,
        "AttachStdin": False, "AttachStdout": True, "AttachStderr": True,
        "Cmd": argv, "Env": ["LANG=C.UTF-8"], "WorkingDir": "/workspace",
    }  # fmt: skip


def host(**changes: Any) -> Any:
    """A change to HostConfig; a value of `...` removes the key."""
    return lambda body: _apply(body["HostConfig"], changes)


def top(**changes: Any) -> Any:
    return lambda body: _apply(body, changes)


def _apply(where: dict[str, Any], changes: dict[str, Any]) -> None:
    for key, value in changes.items():
        if value is ...:
            where.pop(key, None)
        else:
            where[key] = value


# Creates the proxy must refuse (the list and more): each changes one thing in create_body.
def hostile_creates(outside: str, worktree: str) -> dict[str, Any]:
    return {
        "Privileged": host(Privileged=True),
        "CapAdd SYS_ADMIN": host(CapAdd=["SYS_ADMIN"]),
        "Binds /:/host": host(Binds=["/:/host"]),
        "a Mounts source outside the root": lambda b: b["HostConfig"]["Mounts"][0].update(Source=outside),
        "a `..` Mounts source": lambda b: b["HostConfig"]["Mounts"][0].update(Source=f"{worktree}/../../.."),
        "NetworkMode host": host(NetworkMode="host"),
        "NetworkMode of another container": host(NetworkMode="container:redis"),
        "PidMode host": host(PidMode="host"),
        "User 0": top(User="0"),
        "User root": top(User="root"),
        "User 0:0": top(User="0:0"),
        "User missing": top(User=...),
        "User of another group": top(User="10001:999"),  # the proxy is pinned to 10001:10001
        "User of another uid": top(User="10002:10001"),
        "ReadonlyRootfs missing": host(ReadonlyRootfs=...),
        "seccomp=unconfined": host(SecurityOpt=["no-new-privileges", "seccomp=unconfined"]),
        "apparmor=unconfined": host(SecurityOpt=["no-new-privileges", "apparmor=unconfined"]),
        "no no-new-privileges": host(SecurityOpt=...),
        "Devices": host(Devices=[{"PathOnHost": "/dev/sda", "PathInContainer": "/dev/sda"}]),
        "another image": top(Image="wave-some-other-image:latest"),
        "CapDrop missing": host(CapDrop=...),
        "Memory over the cap": host(Memory=2**40, MemorySwap=2**40),
        "swap": host(MemorySwap=-1),
        "no pids limit": host(PidsLimit=...),
        "a lower-case privileged key": host(privileged=True),
        "MaskedPaths emptied": host(MaskedPaths=[]),
        "RestartPolicy always": host(RestartPolicy={"Name": "always"}),
        "a tmpfs elsewhere": host(Tmpfs={"/tmp": "size=1m", "/run": "size=1m"}),
        "no sandbox label": top(Labels={"dev.wave.story": "S-1"}),
        "VolumesFrom": host(VolumesFrom=["redis"]),
        "Sysctls": host(Sysctls={"net.ipv4.ip_forward": "1"}),
        "UsernsMode host": host(UsernsMode="host"),
        "Runtime": host(Runtime="runsc-unconfined"),
        # `worktree` is `<root>/repos/<domain>/worktrees/<name>`: only that folder, and its .git
        "the domain's clone": source(f"{posixpath.dirname(posixpath.dirname(worktree))}/clone"),
        "the domain's folder": source(posixpath.dirname(posixpath.dirname(worktree))),
        "every worktree at once": source(posixpath.dirname(worktree)),
        "a folder inside the worktree": source(f"{worktree}/src"),
        "another worktree's .git": lambda b: b["HostConfig"]["Mounts"][1].update(Source=f"{worktree}-b/.git"),
        "the clone's .git as .git": lambda b: b["HostConfig"]["Mounts"][1].update(
            Source=f"{posixpath.dirname(posixpath.dirname(worktree))}/clone/.git"
        ),
    }


def source(path: str) -> Any:
    """The worktree bind from `path`, with no .git bind."""
    return lambda body: body["HostConfig"].update(
        Mounts=[{"Type": "bind", "Source": path, "Target": "/workspace", "ReadOnly": False}]
    )
