#!/bin/sh
# Start redis-server for the fleet (compose/base.yml's entrypoint, run with `sh`, so the official
# image and a local one both work). The password comes from the environment and goes into a config
# file on tmpfs (/tmp): never into the image, the compose file or the process list.
set -eu

conf_dir=${REDIS_CONF_DIR:-/etc/wave}
run_dir=${REDIS_RUN_DIR:-/tmp}
fsync=${REDIS_APPENDFSYNC:-everysec}
maxmemory=${REDIS_MAXMEMORY:-0}

if [ -z "${REDIS_PASSWORD:-}" ]; then
    echo "redis-start: no password: set WAVE_REDIS__PASSWORD (in compose/.env or the environment);" \
         "the fleet's Redis never runs without one" >&2
    exit 78
fi
case "$fsync" in
    always|everysec) ;;
    *) echo "redis-start: REDIS_APPENDFSYNC must be everysec or always, not '$fsync'" >&2; exit 78 ;;
esac
case "$maxmemory" in
    *[!0-9a-zA-Z]*|'') echo "redis-start: REDIS_MAXMEMORY must look like 0, 512mb or 2gb, not '$maxmemory'" >&2; exit 78 ;;
esac

umask 077
conf="$run_dir/redis.conf"
# Redis config strings are double-quoted with backslash escapes: any password is taken literally.
quoted=$(printf '%s' "$REDIS_PASSWORD" | sed -e 's/\\/\\\\/g' -e 's/"/\\"/g')
{
    printf 'include %s/redis.conf\n' "$conf_dir"
    printf 'appendfsync %s\n' "$fsync"
    printf 'maxmemory %s\n' "$maxmemory"
    printf 'requirepass "%s"\n' "$quoted"
} >"$conf"
unset REDIS_PASSWORD
exec redis-server "$conf"
