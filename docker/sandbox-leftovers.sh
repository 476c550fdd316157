#!/bin/sh
# Remove the stage containers a compose fleet's sandbox runner left behind (`make down` runs it after
# compose's own down: a stage cut short by the stop keeps its container, which sleeps forever):
#
#   docker/sandbox-leftovers.sh MOUNTPOINT     # the Mountpoint of the project's data volume
#
# Compose does not know them (the runner created them). They are the ones carrying the runner's label
# (dev.wave.sandbox) with a bind mount from MOUNTPOINT: this project's worktrees, never another
# fleet's on the same engine. Prints how many it removed; silent when there were none.
set -eu

mountpoint=${1:?usage: docker/sandbox-leftovers.sh MOUNTPOINT}
case "$mountpoint" in /?*) ;; *) echo "sandbox-leftovers: MOUNTPOINT must be an absolute path" >&2; exit 2 ;; esac
ids=$(docker ps -aq --filter label=dev.wave.sandbox)
[ -n "$ids" ] || exit 0
# shellcheck disable=SC2086 # container ids: one word each
ours=$(docker inspect --format '{{.Id}}{{range .Mounts}} {{.Source}}{{end}}' $ids 2>/dev/null |
    while read -r id sources; do
        for source in $sources; do
            case "$source/" in "${mountpoint%/}"/*) echo "$id"; break ;; esac
        done
    done)
[ -n "$ours" ] || exit 0
# shellcheck disable=SC2086
docker rm -f $ours >/dev/null
echo "sandbox-leftovers: removed $(echo "$ours" | wc -l) stage container(s) of $mountpoint" >&2
