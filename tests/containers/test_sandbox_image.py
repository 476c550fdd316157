"""The sandbox image (docker/sandbox.Dockerfile) run with the runner's hardening: what agent commands
need is there and works as uid 10001 on a read-only root without network (python with pytest, git,
node), and nothing that installs or builds software is left (apt, dpkg, pip, a compiler)."""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from docker_fleet import PROJECT_PREFIX, run

pytestmark = [pytest.mark.docker, pytest.mark.slow, pytest.mark.timeout(600)]

USER = "10001:10001"
# The stage container's hardening as the runner creates it (the brief's contract), /tmp with exec.
HARDENING = (
    "--init",
    "--read-only",
    "--network",
    "none",
    "--cap-drop",
    "ALL",
    "--security-opt",
    "no-new-privileges",
    "--user",
    USER,
    "--tmpfs",
    "/tmp:rw,nosuid,nodev,size=64m",
)
# What would let a command install or build software, by name on PATH and in the usual places.
FORBIDDEN_COMMANDS = ("apt", "apt-get", "apt-cache", "dpkg", "dpkg-deb", "pip", "pip3", "npm")
FORBIDDEN_COMPILERS = ("gcc", "cc", "c++", "g++", "clang", "tcc", "as", "ld")
FORBIDDEN_FILES = (
    "/usr/bin/apt-get",
    "/usr/bin/apt",
    "/usr/bin/dpkg",
    "/usr/local/bin/pip",
    "/usr/local/bin/pip3",
    "/usr/bin/pip3",
    "/opt/sandbox/bin/pip",
    "/opt/sandbox/bin/pip3",
    "/usr/bin/gcc",
    "/usr/bin/cc",
)


@pytest.fixture(scope="module")
def workspace(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A worktree owned by root (as a root worker's is), writable by the container's user."""
    path = tmp_path_factory.mktemp("workspace")
    path.chmod(0o777)
    path.parent.chmod(0o755)
    (path / "test_sample.py").write_text("def test_adds():\n    assert 1 + 1 == 2\n")
    return path


@pytest.fixture(scope="module")
def container(sandbox_image: str, workspace: Path) -> Iterator[str]:
    """One hardened stage container, kept warm as the runner keeps it, removed even on failure."""
    name = f"{PROJECT_PREFIX}{os.getpid()}-sandbox-image"
    run("docker", "rm", "-f", name, check=False)
    try:
        mount = f"type=bind,source={workspace},target=/workspace"
        run(
            "docker",
            "run",
            "-d",
            "--name",
            name,
            *HARDENING,
            "--mount",
            mount,
            sandbox_image,
            "sleep",
            "infinity",
        )
        yield name
    finally:
        run("docker", "rm", "-f", name, check=False)


def sh(container: str, script: str) -> subprocess.CompletedProcess[str]:
    """A command as the runner execs it: the container's user, in /workspace, no tty."""
    return run(
        "docker", "exec", "--user", USER, "-w", "/workspace", container, "sh", "-c", script, check=False
    )


def test_the_image_defaults_to_the_non_root_user_sleep_and_workspace(sandbox_image: str) -> None:
    config = json.loads(run("docker", "image", "inspect", sandbox_image).stdout)[0]["Config"]
    assert config["User"] == USER
    assert not config["Entrypoint"]
    assert config["Cmd"] == ["sleep", "infinity"]
    assert config["WorkingDir"] == "/workspace"


def test_commands_run_as_uid_10001_not_root(container: str) -> None:
    proc = sh(container, "id -u; id -g; id -un")
    assert proc.stdout.split() == ["10001", "10001", "wave"], proc.stderr


def test_python_runs_pytest_from_the_sandbox_venv(container: str) -> None:
    which = sh(container, "command -v python3")
    assert which.stdout.strip() == "/opt/sandbox/bin/python3", which.stderr
    version = sh(container, "python3 -m pytest --version")
    assert version.returncode == 0 and "pytest" in version.stdout + version.stderr, version.stderr
    tests = sh(container, "python3 -m pytest -q -p no:cacheprovider test_sample.py")
    assert tests.returncode == 0 and "1 passed" in tests.stdout, tests.stdout + tests.stderr


def test_git_works_in_a_workspace_owned_by_another_uid(container: str) -> None:
    assert sh(container, "git --version").stdout.startswith("git version")
    script = (
        "git init -q -b main . && git add test_sample.py && "
        "git -c user.name=qa -c user.email=qa@wave.invalid commit -q -m sample && git log --format=%s"
    )
    proc = sh(container, script)
    assert proc.returncode == 0 and proc.stdout.strip() == "sample", proc.stderr


def test_node_runs_javascript(container: str) -> None:
    assert sh(container, "node --version").stdout.startswith("v")
    proc = sh(container, "node -e 'console.log(6 * 7)'")
    assert proc.stdout.strip() == "42", proc.stderr


@pytest.mark.parametrize("name", FORBIDDEN_COMMANDS + FORBIDDEN_COMPILERS)
def test_no_package_manager_or_compiler_is_on_path(container: str, name: str) -> None:
    proc = sh(container, f"command -v {name}")
    assert proc.returncode != 0, f"{name} is in the sandbox image: {proc.stdout.strip()}"


def test_no_package_manager_or_compiler_is_left_in_the_usual_places(container: str) -> None:
    present = sh(
        container, " ".join(["for f in", *FORBIDDEN_FILES, '; do [ -e "$f" ] && echo "$f"; done; true'])
    )
    assert present.stdout.split() == [], present.stdout
    # pip as a module, and the wheels ensurepip would make a new one from
    assert sh(container, "python3 -m pip --version").returncode != 0
    wheels = sh(container, "find / -xdev -name 'pip-*.whl' 2>/dev/null")
    assert wheels.stdout.split() == [], wheels.stdout


def test_no_file_is_setuid_or_setgid(container: str) -> None:
    proc = sh(container, "find / -xdev -type f -perm /6000 2>/dev/null")
    assert proc.stdout.split() == [], proc.stdout


def test_the_root_is_read_only_and_only_workspace_and_tmp_are_written(container: str) -> None:
    # /home/wave belongs to the user: only the read-only root stops the write
    home = sh(container, "touch /home/wave/probe")
    assert home.returncode != 0 and "Read-only file system" in home.stderr, home.stderr
    written = sh(container, 'touch /workspace/probe "$HOME/probe" && echo ok')
    assert written.stdout.strip() == "ok", written.stderr
