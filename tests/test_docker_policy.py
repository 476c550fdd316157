"""The sandbox profile's body rules (wavefleet.dockerpolicy) on their own: the runner's create and
exec bodies pass, and each single hostile change is refused with 403, including the cases the real
daemon is slow or unsafe to try (symlinked sources, Go's case-insensitive keys, limits)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from sandbox_bodies import MIB, create_body, exec_body, host, hostile_creates

from wavefleet.dockerpolicy import SandboxPolicy, check_create, check_exec, check_exec_start
from wavefleet.dockerwire import Refused, decode_json

IMAGE = "wave-sandbox:latest"
TREE = "repos/auth/worktrees/S-1-qa"  # where workers make worktrees (workers/git.py)


@pytest.fixture
def root(tmp_path: Path) -> Path:
    (tmp_path / f"data/{TREE}").mkdir(parents=True)
    (tmp_path / f"data/{TREE}/.git").write_text("gitdir: /data/repos/auth/clone/.git/worktrees/S-1-qa\n")
    return tmp_path / "data"


def policy(root: Path, **changes: Any) -> SandboxPolicy:
    values: dict[str, Any] = {
        "image": IMAGE, "mount_root": str(root), "visible_root": str(root),
        "max_memory_bytes": 1024 * MIB, "max_pids": 256, "max_nano_cpus": 2_000_000_000,
        "user": "10001:10001",  # compose's workers (`--user`)
    }  # fmt: skip
    return SandboxPolicy(**(values | changes))


def refused(check: Callable[[], None]) -> str:
    with pytest.raises(Refused) as caught:
        check()
    assert caught.value.status == 403
    return str(caught.value)


def test_the_runners_create_and_exec_bodies_pass(root: Path) -> None:
    check_create(create_body(IMAGE, f"{root}/{TREE}", "fleet"), policy(root))
    check_create(create_body(IMAGE, f"{root}/{TREE}", "fleet", git=False), policy(root))
    check_exec(exec_body("abc", ["python", "-m", "pytest"]), policy(root))
    check_exec_start({"Tty": False, "Detach": False})


@pytest.mark.parametrize("case", list(hostile_creates("/etc", "/x")))
def test_each_hostile_create_is_refused(root: Path, case: str) -> None:
    body = create_body(IMAGE, f"{root}/{TREE}", "fleet")
    hostile_creates("/etc", f"{root}/{TREE}")[case](body)

    refused(lambda: check_create(body, policy(root)))


def mount_source(source: str) -> Callable[[dict[str, Any]], None]:
    return lambda body: body["HostConfig"]["Mounts"][0].update(Source=source)


@pytest.mark.parametrize(
    ("case", "change"),
    [
        ("the root itself", lambda root: mount_source(str(root))),
        ("a sibling with the root as prefix", lambda root: mount_source(f"{root}-other/{TREE}")),
        ("a relative source", lambda root: mount_source(TREE)),
        ("a trailing slash", lambda root: mount_source(f"{root}/{TREE}/")),
        ("a dot segment", lambda root: mount_source(f"{root}/./{TREE}")),
        ("a double slash", lambda root: mount_source(f"{root}//{TREE}")),
        ("a newline", lambda root: mount_source(f"{root}/{TREE}\n")),
        ("a volume mount", lambda root: lambda b: b["HostConfig"]["Mounts"][0].update(Type="volume")),
        (
            "propagation",
            lambda root: (
                lambda b: b["HostConfig"]["Mounts"][0].update(BindOptions={"Propagation": "rshared"})
            ),
        ),
        (
            "a third mount",
            lambda root: (
                lambda b: b["HostConfig"]["Mounts"].append(dict(b["HostConfig"]["Mounts"][0], Target="/etc"))
            ),
        ),
        (
            "the same target twice",
            lambda root: lambda b: b["HostConfig"]["Mounts"].__setitem__(1, b["HostConfig"]["Mounts"][0]),
        ),
        (".git writable", lambda root: lambda b: b["HostConfig"]["Mounts"][1].update(ReadOnly=False)),
        ("no /workspace", lambda root: lambda b: b["HostConfig"]["Mounts"].pop(0)),
        ("a float memory", lambda root: host(Memory=64.0 * MIB, MemorySwap=64.0 * MIB)),
        ("a boolean pids limit", lambda root: host(PidsLimit=True)),
        ("CPU over the cap", lambda root: host(NanoCpus=4_000_000_000)),
        ("a suid tmpfs", lambda root: host(Tmpfs={"/tmp": "rw,suid"})),
        ("IpcMode host", lambda root: host(IpcMode="host")),
        ("an unknown HostConfig key, even empty", lambda root: host(ReadonlyPaths=[])),
        (
            "a NetworkingConfig endpoint",
            lambda root: lambda b: b.update(NetworkingConfig={"EndpointsConfig": {"wave_redis": {}}}),
        ),
        ("an entrypoint", lambda root: lambda b: b.update(Entrypoint=["/bin/sh"])),
        ("an anonymous volume", lambda root: lambda b: b.update(Volumes={"/var/lib/x": {}})),
        ("stdin", lambda root: lambda b: b.update(OpenStdin=True)),
        ("bridge without --allow-network", lambda root: host(NetworkMode="bridge")),
    ],
)
def test_more_hostile_creates_are_refused(root: Path, case: str, change: Callable[[Path], Any]) -> None:
    body = create_body(IMAGE, f"{root}/{TREE}", "fleet")
    change(root)(body)

    refused(lambda: check_create(body, policy(root)))


def test_a_source_that_leaves_the_root_through_a_symlink_is_refused(root: Path, tmp_path: Path) -> None:
    # Given a worktree whose .git an earlier command replaced by a link to the host's /etc
    worktree = root / TREE
    (worktree / ".git").unlink()
    (worktree / ".git").symlink_to("/etc")
    (root / "repos/auth/worktrees/escape").symlink_to(tmp_path)

    message = refused(lambda: check_create(create_body(IMAGE, str(worktree), "fleet"), policy(root)))
    assert "leaves" in message
    refused(
        lambda: check_create(
            create_body(IMAGE, f"{root}/repos/auth/worktrees/escape", "f", git=False), policy(root)
        )
    )
    # without a view of the root (a volume the proxy does not mount) only the lexical check is left
    check_create(create_body(IMAGE, str(worktree), "fleet"), policy(root, visible_root=None))


def test_bridge_passes_only_when_the_policy_allows_network(root: Path) -> None:
    body = create_body(IMAGE, f"{root}/{TREE}", "fleet")
    body["HostConfig"]["NetworkMode"], body["NetworkDisabled"] = "bridge", False

    check_create(body, policy(root, allow_network=True))
    refused(lambda: check_create(body, policy(root)))


def test_keys_go_would_merge_are_refused_before_any_rule() -> None:
    # Go's decoder maps "privileged" onto Privileged and keeps the last of two: refuse both shapes
    with pytest.raises(Refused):
        decode_json(b'{"HostConfig": {"Privileged": false, "privileged": true}}')
    with pytest.raises(Refused):
        decode_json(b'{"User": "10001:10001", "User": "0"}')


@pytest.mark.parametrize(
    "change",
    [
        {"Privileged": True}, {"User": "0"}, {"User": "root"}, {"User": "0:0"}, {"User": ""},
        {"User": "00:10001"}, {"Tty": True}, {"AttachStdin": True}, {"DetachKeys": "ctrl-p"},
        {"Env": ["LD_PRELOAD"]}, {"Env": "A=b"}, {"Cmd": []}, {"Cmd": "id"}, {"WorkingDir": "../x"},
        {"privileged": True}, {"User": "10001:999"}, {"User": "10002:10001"},
    ],
)  # fmt: skip
def test_hostile_execs_are_refused(root: Path, change: dict[str, Any]) -> None:
    refused(lambda: check_exec(exec_body("abc", ["id"]) | change, policy(root)))


def test_without_a_pinned_user_any_non_root_user_passes(root: Path) -> None:
    body = create_body(IMAGE, f"{root}/{TREE}", "fleet") | {"User": "10002:999"}

    check_create(body, policy(root, user=None))
    check_exec(exec_body("abc", ["id"]) | {"User": "10002:999"}, policy(root, user=None))
    refused(lambda: check_create(body | {"User": "0:999"}, policy(root, user=None)))


@pytest.mark.parametrize("body", [{"Detach": "yes"}, {"Tty": 1}, {"Detach": False, "Stdin": True}, []])
def test_hostile_exec_starts_are_refused(body: Any) -> None:
    refused(lambda: check_exec_start(body))
