# The WAVE sandbox image: the one every stage container of `wave sandbox` (WAVE_SANDBOX=container)
# runs, where the agents' commands and QA's tests run. The runner starts it with `sleep infinity`
# as a non-root user, a read-only root, no network and no capabilities, then execs each command.
#
#   python3 with pytest (a venv in /opt/sandbox, first on PATH), git, node (no npm), bash, coreutils
#
# No package manager (apt, dpkg, pip), no compiler, no setuid bit: a command cannot install or
# build anything, and there is no network to fetch it from anyway.
#
# Build from the repository root (`make sandbox-image`). Works with the classic builder (no BuildKit).
#   BASE_IMAGE   a Debian-like image with python3 and its venv module (default pulled from Docker
#                Hub, git and nodejs then installed with apt; without a registry use the local base
#                made by docker/local-base.sh, which has them)
#   WHEELHOUSE   a folder of wheels inside the build context (`make wheelhouse`); when it holds any,
#                pytest is installed from it with --no-index (air-gapped), else from PyPI
ARG BASE_IMAGE=python:3.12-slim

FROM ${BASE_IMAGE} AS build
# the classic builder keeps this stage as an untagged image: the label lets it be pruned alone
LABEL dev.wave.stage=build
ARG WHEELHOUSE=docker/wheelhouse
COPY ${WHEELHOUSE}/ /wheels/
# pip and setuptools are removed from the venv once pytest is in: the venv holds pytest alone.
RUN python3 -m venv /opt/sandbox \
    && if ls /wheels/*.whl >/dev/null 2>&1; then \
           /opt/sandbox/bin/pip install --no-cache-dir --disable-pip-version-check --no-index \
               --find-links /wheels pytest; \
       else \
           /opt/sandbox/bin/pip install --no-cache-dir --disable-pip-version-check pytest; \
       fi \
    && /opt/sandbox/bin/python -m pip uninstall --yes --quiet pip setuptools wheel \
    && rm -f /opt/sandbox/bin/pip* /opt/sandbox/bin/easy_install* \
    && /opt/sandbox/bin/python -m pytest --version

FROM ${BASE_IMAGE}
ARG WAVE_UID=10001
LABEL org.opencontainers.image.title="wave-sandbox" \
      org.opencontainers.image.description="WAVE: the container the agents' commands run in (no network, no package manager)"
# git and nodejs: the public slim Python image has neither (its apt installs them, no npm: it is a
# package manager and pulls a C++ toolchain through node-gyp); a local base (docker/local-base.sh)
# has both. Then every way to install or build software goes: apt and dpkg, pip (the base's own and
# the wheels ensurepip would use), and setuid bits (no-new-privileges blocks them too: belt and braces).
# safe.directory: the worktree is owned by the worker's uid, not always the container's.
RUN if ! command -v git >/dev/null 2>&1 || ! command -v node >/dev/null 2>&1; then \
        apt-get update && apt-get install -y --no-install-recommends git nodejs \
        && rm -rf /var/lib/apt/lists/*; \
    fi \
    && groupadd --system --gid "${WAVE_UID}" wave \
    && useradd --system --uid "${WAVE_UID}" --gid wave --home-dir /home/wave --create-home \
        --shell /bin/bash wave \
    && mkdir -p /workspace && chown wave:wave /workspace \
    && git config --system --add safe.directory '*' \
    && (python3 -m pip uninstall --yes --quiet pip setuptools wheel >/dev/null 2>&1 || true) \
    && rm -rf /usr/local/bin/pip* /usr/bin/pip* /usr/share/python-wheels \
        /usr/local/lib/python3*/ensurepip/_bundled /usr/lib/python3*/ensurepip/_bundled \
    && rm -rf /usr/bin/apt* /usr/bin/dpkg* /usr/sbin/dpkg* /usr/lib/apt /usr/lib/dpkg /etc/apt \
        /var/lib/apt /var/cache/apt /var/cache/debconf/*-old /var/log/* \
    && find / -xdev -type f -perm /6000 -exec chmod a-s {} + \
    && node --version >/dev/null && git --version >/dev/null
COPY --from=build /opt/sandbox /opt/sandbox
# HOME and caches in /tmp (the runner's tmpfs): the root filesystem is read-only.
ENV PATH=/opt/sandbox/bin:$PATH \
    LANG=C.UTF-8 \
    HOME=/tmp \
    XDG_CACHE_HOME=/tmp/.cache \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1
WORKDIR /workspace
USER ${WAVE_UID}:${WAVE_UID}
# No ENTRYPOINT: the runner's command is `sleep infinity`, then it execs each command.
CMD ["sleep", "infinity"]
