"""Fixtures for the container tests: a real Docker engine, the images built once and cached by
content hash (across runs too), and a compose fleet that is always torn down with its network and
volumes.

No registry is reachable here, so the images are built the air-gapped way the README describes: a
Debian base made with debootstrap, the worker image from a wheelhouse, a Redis image from the base.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator

import pytest
from docker_fleet import (
    BASE_PACKAGES,
    BUILD_TIMEOUT_S,
    REPO,
    SANDBOX_INPUTS,
    TEAM,
    WORKER_INPUTS,
    Fleet,
    build_lock,
    compose_command,
    content_hash,
    drop_stale_tags,
    image_id,
    live_workers,
    reap_abandoned_fleets,
    run,
    wait_for,
)


@pytest.fixture(scope="session")
def docker_engine() -> None:
    """Fails (never skips) without an engine: tests/prepare-machine.sh (`make test`) starts one."""
    missing = [tool for tool in ("docker", "make") if shutil.which(tool) is None]
    if "docker" not in missing and shutil.which(compose_command()[0]) is None:
        missing.append("docker-compose")
    if missing:
        pytest.fail(f"missing {', '.join(missing)}: `make test` installs them")
    info = run("docker", "info", "--format", "{{.ServerVersion}}", check=False, timeout_s=30)
    if info.returncode != 0:
        pytest.fail(f"no Docker engine answers: {info.stderr.strip()} (`make test` starts one)")


@pytest.fixture(scope="session")
def base_image(docker_engine: None) -> str:
    """A Debian 12 base made locally (docker/local-base.sh): no registry can be reached here."""
    tag = f"wave-test-base:{content_hash(REPO / 'docker/local-base.sh', BASE_PACKAGES)}"
    with build_lock():
        if image_id(tag) is None:
            if os.geteuid() != 0 or shutil.which("debootstrap") is None:
                pytest.fail("building the Debian base needs root and debootstrap (`make test` installs it)")
            run("docker/local-base.sh", tag, BASE_PACKAGES, timeout_s=BUILD_TIMEOUT_S)
            drop_stale_tags("wave-test-base", tag)
    return tag


@pytest.fixture(scope="session")
def worker_image(base_image: str) -> str:
    """The worker image as `make worker-image` builds it, from a wheelhouse (`make wheelhouse`)."""
    return cached_image("wave-test-worker", WORKER_INPUTS, "worker-image", "FLEET_IMAGE", base_image)


@pytest.fixture(scope="session")
def sandbox_image(base_image: str) -> str:
    """The stage containers' image as `make sandbox-image` builds it, pytest from a wheelhouse."""
    return cached_image("wave-test-sandbox", SANDBOX_INPUTS, "sandbox-image", "SANDBOX_IMAGE", base_image)


def cached_image(
    repository: str, inputs: tuple[str, ...], target: str, variable: str, base_image: str
) -> str:
    """`make TARGET VARIABLE=<tag>` on the local base, once per content hash of its inputs."""
    tag = f"{repository}:{content_hash(image_id(base_image) or '', *(REPO / p for p in inputs))}"
    with build_lock():
        if image_id(tag) is None:
            build_with_wheelhouse(target, f"{variable}={tag}", base_image)
            drop_stale_tags(repository, tag)
    return tag


def build_with_wheelhouse(target: str, image_var: str, base_image: str) -> None:
    """`make TARGET` on the local base, installing from a wheelhouse as an air-gapped site does."""
    # A private wheelhouse inside the build context, removed afterwards so that a later plain
    # `make image` is not silently switched to offline installs.
    wheelhouse = f"docker/wheelhouse/.test-{os.getpid()}"
    make = ("make", "--no-print-directory")
    try:
        run(*make, "wheelhouse", f"WHEELHOUSE={wheelhouse}", timeout_s=600)
        run(
            *make,
            target,
            image_var,
            f"BASE_IMAGE={base_image}",
            f"WHEELHOUSE={wheelhouse}",
            timeout_s=BUILD_TIMEOUT_S,
        )
    finally:
        shutil.rmtree(REPO / wheelhouse, ignore_errors=True)
        # the classic builder keeps the build stage as an untagged image: prune ours (labelled) only
        run("docker", "image", "prune", "--force", "--filter", "label=dev.wave.stage=build", check=False)


@pytest.fixture(scope="session")
def redis_image(base_image: str) -> str:
    """A local stand-in for the official redis image (docker/redis-local.Dockerfile)."""
    recipe = "docker/redis-local.Dockerfile"
    tag = f"wave-test-redis:{content_hash(image_id(base_image) or '', REPO / recipe)}"
    with build_lock():
        if image_id(tag) is None:
            build = ("docker", "build", "--quiet", "-f", recipe, "--build-arg", f"BASE_IMAGE={base_image}")
            run(*build, "-t", tag, "docker/", timeout_s=300)
            drop_stale_tags("wave-test-redis", tag)
    return tag


@pytest.fixture(scope="module")
def auth_fleet(
    worker_image: str,
    sandbox_image: str,
    redis_image: str,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Fleet]:
    """`make up DOMAIN=auth` against the local Redis image, until all 7 workers heartbeat."""
    halt_dir = tmp_path_factory.mktemp("halt")
    halt_dir.chmod(0o755)  # the watcher runs as uid 10001 and reads it through a bind mount
    secrets = tmp_path_factory.mktemp("secrets") / "env"  # `make up` creates it
    fleet = Fleet(
        worker_image, redis_image, halt_dir, tmp_path_factory.mktemp("host-data"), secrets, sandbox_image
    )
    reap_abandoned_fleets()  # what killed earlier sessions left behind
    try:
        fleet.make("up", "DOMAIN=auth")
        wait_for(
            lambda: len(live_workers(fleet)) == len(TEAM),
            timeout_s=120,
            what="the 7 auth workers to heartbeat",
            diagnose=fleet.diagnose,
        )
        yield fleet
    finally:
        log_file = tmp_path_factory.getbasetemp() / "containers.log"
        log_file.write_text(fleet.diagnose())
        fleet.down()
