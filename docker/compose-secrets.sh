#!/bin/sh
# The secrets `make up` needs before compose starts, made on the host and never overwritten:
#
#   docker/compose-secrets.sh env FILE                      # compose/.env with fresh passwords
#   docker/compose-secrets.sh dozzle-users ENV_FILE OUT IMAGE   # Dozzle's users file from ENV_FILE
#
# `env` writes FILE only if it does not exist, mode 0600 from the start (umask, then a hard link, which
# fails rather than replace a file that appeared meanwhile): a Redis password per ACL user, Dozzle's
# password, and REDIS_IMAGE / DOZZLE_IMAGE when given, so a later plain `make up` uses them again.
# An existing FILE is never rewritten: only the password of an ACL user it lacks (one added since it
# was made, like `sandbox`) is appended.
# `dozzle-users` hashes DOZZLE_PASSWORD with bcrypt (the users.yml format of Dozzle v8's simple auth)
# inside IMAGE, the fleet's image, so the host needs nothing but Docker; the password goes through
# stdin, never a command line. OUT's folder is 0700; OUT itself 0644, so Dozzle (uid 65534) can read
# it through its bind mount while no other host user can reach it.
set -eu

die() { echo "compose-secrets: $*" >&2; exit 1; }
secret() { od -An -N24 -tx1 /dev/urandom | tr -d ' \n'; }
# one per Redis ACL user of wavefleet/acl.py (docker/redis-start.sh requires each)
USERS="ADMIN WORKER SUPERVISOR WATCHER OPERATOR SANDBOX NOTIFIER"
value() { sed -n "s/^$1=//p" "$2" | tail -n 1; }

make_env() {
    file=$1
    umask 077
    [ -e "$file" ] && { add_missing "$file"; return 0; }
    tmp=$(mktemp "$file.XXXXXX")
    {
        echo "# The fleet's secrets, made by \`make up\` (never overwritten; mode 0600). See .env.example."
        for role in $USERS; do
            echo "REDIS_${role}_PASSWORD=$(secret)"
        done
        echo "DOZZLE_USER=admin"
        echo "DOZZLE_PASSWORD=$(secret)"
        [ -z "${REDIS_IMAGE:-}" ] || echo "REDIS_IMAGE=$REDIS_IMAGE"
        [ -z "${DOZZLE_IMAGE:-}" ] || echo "DOZZLE_IMAGE=$DOZZLE_IMAGE"
    } >"$tmp"
    ln "$tmp" "$file" 2>/dev/null || { rm -f "$tmp"; [ -e "$file" ] || die "cannot create $file"; return 0; }
    rm -f "$tmp"
    echo "compose-secrets: made $file (mode 0600) with fresh passwords" >&2
}

add_missing() {
    file=$1
    for role in $USERS; do
        grep -q "^REDIS_${role}_PASSWORD=" "$file" 2>/dev/null && continue
        [ -r "$file" ] || die "cannot read $file"
        # a last line without its newline would swallow the new one
        [ -z "$(tail -c 1 "$file")" ] || echo >>"$file" || die "cannot add to $file"
        echo "REDIS_${role}_PASSWORD=$(secret)" >>"$file" || die "cannot add REDIS_${role}_PASSWORD to $file"
        echo "compose-secrets: added REDIS_${role}_PASSWORD to $file (a Redis user it did not have yet)" >&2
    done
}

make_dozzle_users() {
    env_file=$1 out=$2 image=$3
    user=$(value DOZZLE_USER "$env_file")
    password=$(value DOZZLE_PASSWORD "$env_file")
    [ -n "$password" ] || die "no DOZZLE_PASSWORD in $env_file: add one (Dozzle never runs without a login)"
    case "${user:-admin}" in *[!A-Za-z0-9_.-]*) die "DOZZLE_USER may hold letters, digits, _ . - only" ;; esac
    mkdir -p "$(dirname "$out")" && chmod 0700 "$(dirname "$out")"
    tmp=$(mktemp "$out.XXXXXX")
    # crypt's bcrypt ($2b$) is what Go's bcrypt, and so Dozzle, checks
    printf '%s' "$password" | docker run --rm -i --network none --read-only --cap-drop ALL \
        --entrypoint /opt/wave/bin/python "$image" -W ignore -c '
import crypt, sys
hashed = crypt.crypt(sys.stdin.read(), crypt.mksalt(crypt.METHOD_BLOWFISH, rounds=1 << 11))
print("users:\n  %s:\n    name: %s\n    email: \"\"\n    password: \"%s\"" % (sys.argv[1], sys.argv[1], hashed))
' "${user:-admin}" >"$tmp" || { rm -f "$tmp"; die "could not hash Dozzle's password in $image"; }
    chmod 0644 "$tmp" && mv -f "$tmp" "$out"
}

case "${1:-}" in
    env) make_env "${2:?usage: compose-secrets.sh env FILE}" ;;
    dozzle-users) make_dozzle_users "${2:?ENV_FILE}" "${3:?OUT}" "${4:?IMAGE}" ;;
    *) die "usage: compose-secrets.sh env FILE | dozzle-users ENV_FILE OUT IMAGE" ;;
esac
