#!/usr/bin/env bash
# Make a Debian 12 base image without any image registry: debootstrap a minimal root filesystem
# from the host's Debian mirror and `docker import` it. For air-gapped sites and for machines that
# cannot pull python:3.12-slim or redis (this project's CI).
#
#   docker/local-base.sh IMAGE[:TAG] [PACKAGE,...]
#
#   docker/local-base.sh wave-base:bookworm     # one base for the worker image and the local Redis image
#
# Default packages: what the worker image needs (python3, python3-venv, ca-certificates, git and
# bubblewrap, the sandbox of the agents' commands), nodejs for the sandbox image
# (docker/sandbox.Dockerfile) and redis-server for docker/redis-local.Dockerfile: one debootstrap
# serves all three images.
# Needs root, debootstrap and a running Docker engine. MIRROR overrides the Debian mirror (default:
# the one the host's apt uses), SUITE the release (bookworm), CACHE_DIR keeps downloaded packages.
set -euo pipefail

image=${1:?usage: docker/local-base.sh IMAGE[:TAG] [PACKAGE,...]}
packages=${2:-python3,python3-venv,ca-certificates,git,bubblewrap,nodejs,redis-server}
suite=${SUITE:-bookworm}

# The mirror the host's apt already uses for $suite: deb822 files (Debian 12) or one-line lists.
host_mirror() {
    local file
    for file in /etc/apt/sources.list.d/*.sources; do
        [ -f "$file" ] || continue
        awk -v suite="$suite" '
            /^[[:space:]]*$/ { if (uri != "" && ok) { print uri; exit } uri = ""; ok = 0; next }
            /^URIs:/ { uri = $2 }
            /^Suites:/ { for (i = 2; i <= NF; i++) if ($i == suite) ok = 1 }
            END { if (uri != "" && ok) print uri }' "$file" | head -n 1
    done
    cat /etc/apt/sources.list /etc/apt/sources.list.d/*.list 2>/dev/null |
        awk -v suite="$suite" '$1 == "deb" { for (i = 2; i < NF; i++) if ($i !~ /^\[/ && $(i + 1) == suite) { print $i; exit } }' || true
}
mirror=${MIRROR:-$(host_mirror | head -n 1 || true)}
mirror=${mirror:-http://deb.debian.org/debian}

command -v debootstrap >/dev/null || { echo "local-base: debootstrap is not installed (apt-get install -y debootstrap)" >&2; exit 1; }
[ "$(id -u)" = 0 ] || { echo "local-base: debootstrap needs root" >&2; exit 1; }

root=$(mktemp -d "${TMPDIR:-/tmp}/wave-rootfs.XXXXXX")
cleanup() {
    set +e
    # debootstrap mounts /proc and /sys inside the tree: unmount whatever is left before deleting it
    grep -o " $root/[^ ]*" /proc/mounts | sort -r | while read -r mnt; do umount -l "$mnt" || true; done
    rm -rf --one-file-system "$root"
}
trap cleanup EXIT

echo "local-base: debootstrap $suite from $mirror with $packages" >&2
debootstrap --variant=minbase --include="$packages" ${CACHE_DIR:+--cache-dir="$CACHE_DIR"} \
    "$suite" "$root" "$mirror" >"$root.log" 2>&1 || { tail -n 30 "$root.log" >&2; rm -f "$root.log"; exit 1; }
rm -f "$root.log"

# What a container never needs: package caches and lists, documentation, translations (~180 MB).
rm -rf "$root"/var/cache/apt/archives/*.deb "$root"/var/lib/apt/lists/* "$root"/var/log/* \
    "$root"/usr/share/doc/* "$root"/usr/share/man/* "$root"/usr/share/locale/* "$root"/usr/share/info/*

tar --numeric-owner -C "$root" -c . |
    docker import --change 'ENV LANG=C.UTF-8' --change 'CMD ["/bin/bash"]' \
        --message "debootstrap --variant=minbase $suite ($packages)" - "$image" >/dev/null
echo "local-base: $image" >&2
