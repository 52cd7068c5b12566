#!/usr/bin/env bash
# Fails when src/schema.rs differs from what `diesel print-schema` makes of the
# migrated schema. Uses the server at DATABASE_URL (a superuser URL whose path
# is a database name, without a query string) or starts a throwaway one.
set -euo pipefail
cd "$(dirname "$0")/.."

as_postgres() {
    if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi
}

admin_url=${DATABASE_URL:-}
server_dir=""
db=""
cleanup() {
    [ -n "$db" ] && psql "$admin_url" -qc "DROP DATABASE IF EXISTS $db WITH (FORCE)" || true
    if [ -n "$server_dir" ]; then
        as_postgres "$bindir/pg_ctl" -D "$server_dir/data" -m immediate stop >/dev/null || true
        rm -rf "$server_dir"
    fi
}
trap cleanup EXIT

if [ -z "$admin_url" ]; then
    bindir=$(pg_config --bindir 2>/dev/null || true)
    [ -x "$bindir/initdb" ] || bindir=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -n 1)
    server_dir=$(mktemp -d)
    if [ "$(id -u)" = 0 ]; then chown postgres: "$server_dir"; fi
    port=$(( 20000 + RANDOM % 30000 ))
    as_postgres "$bindir/initdb" -D "$server_dir/data" -U postgres -A trust --no-sync >/dev/null
    as_postgres "$bindir/pg_ctl" -D "$server_dir/data" -l "$server_dir/server.log" -w \
        -o "-p $port -c listen_addresses=127.0.0.1 -k $server_dir" start >/dev/null
    admin_url="postgres://postgres@127.0.0.1:$port/postgres"
fi

db="loyalty_schema_check_$$"
psql "$admin_url" -qc "CREATE DATABASE $db"
# --locked-schema fails instead of rewriting src/schema.rs when they differ.
DATABASE_URL="${admin_url%/*}/$db" diesel migration run --locked-schema >/dev/null
echo "src/schema.rs matches diesel print-schema"
