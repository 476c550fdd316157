#!/bin/sh
# Start redis-server for the fleet (compose/base.yml's entrypoint, run with `sh`, so the official
# image and a local one both work). Each fleet role has its own Redis user (wavefleet/acl.py, rendered
# into users.acl.template): the passwords come from the environment (REDIS_ADMIN_PASSWORD,
# REDIS_WORKER_PASSWORD, REDIS_SUPERVISOR_PASSWORD, REDIS_WATCHER_PASSWORD, REDIS_OPERATOR_PASSWORD, and
# REDIS_SANDBOX_PASSWORD for `wave sandbox` and REDIS_NOTIFIER_PASSWORD for `wave notifier`: without
# one, that user is left out, so nothing logs in as it)
# and reach Redis only as SHA-256 hashes in an ACL file on tmpfs (/tmp): never into the image, the
# compose file, a config file or the process list.
set -eu

conf_dir=${REDIS_CONF_DIR:-/etc/wave}
run_dir=${REDIS_RUN_DIR:-/tmp}
fsync=${REDIS_APPENDFSYNC:-everysec}
maxmemory=${REDIS_MAXMEMORY:-0}

case "$fsync" in
    always|everysec) ;;
    *) echo "redis-start: REDIS_APPENDFSYNC must be everysec or always, not '$fsync'" >&2; exit 78 ;;
esac
case "$maxmemory" in
    *[!0-9a-zA-Z]*|'') echo "redis-start: REDIS_MAXMEMORY must look like 0, 512mb or 2gb, not '$maxmemory'" >&2; exit 78 ;;
esac

umask 077
acl="$run_dir/users.acl"
# The template's comment lines go (an ACL file has none); each @<USER>_SHA256@ becomes a hash.
script=''
for user in ADMIN WORKER SUPERVISOR WATCHER OPERATOR SANDBOX NOTIFIER; do
    eval "password=\${REDIS_${user}_PASSWORD:-}"
    if [ -z "$password" ] && { [ "$user" = SANDBOX ] || [ "$user" = NOTIFIER ]; }; then
        script="$script -e /@${user}_SHA256@/d"
        continue
    fi
    if [ -z "$password" ]; then
        echo "redis-start: no password for the $(echo "$user" | tr 'A-Z' 'a-z') user: set REDIS_${user}_PASSWORD" \
             "(in compose/.env or the environment); the fleet's Redis never runs without one" >&2
        exit 78
    fi
    case "$password" in
        *[!!-~]*) echo "redis-start: REDIS_${user}_PASSWORD must be printable ASCII without spaces" >&2; exit 78 ;;
    esac
    [ "${#password}" -ge 8 ] || { echo "redis-start: REDIS_${user}_PASSWORD is shorter than 8 characters" >&2; exit 78; }
    hash=$(printf '%s' "$password" | sha256sum | cut -d ' ' -f 1)
    script="$script -e s/@${user}_SHA256@/$hash/"
    unset "REDIS_${user}_PASSWORD"
done
# and any other password given (a user the template does not have): none reaches redis-server
for name in $(env | sed -n 's/^\(REDIS_[A-Z]*_PASSWORD\)=.*/\1/p'); do unset "$name"; done
# shellcheck disable=SC2086 # $script is a list of sed expressions, each one word
sed -e '/^#/d' $script "$conf_dir/users.acl.template" >"$acl"

conf="$run_dir/redis.conf"
{
    printf 'include %s/redis.conf\n' "$conf_dir"
    printf 'appendfsync %s\n' "$fsync"
    printf 'maxmemory %s\n' "$maxmemory"
    printf 'aclfile %s\n' "$acl"
} >"$conf"
exec redis-server "$conf"
