#!/usr/bin/env bash
# Runs the guard, isolation, money-concurrency, platform and operations tests,
# and concurrent migrations, through PgBouncer in transaction mode, from two
# test processes at once sharing one PgBouncer and one PostgreSQL, as two
# service instances would. Every test database is migrated through it too.
#
# Starts a throwaway PostgreSQL (trust auth, loopback) and Debian's PgBouncer
# in front of it; both are stopped and deleted on exit. Needs initdb and
# postgres (under /usr/lib/postgresql/*/bin) and pgbouncer on PATH or in
# /usr/sbin. Run from the repository root: scripts/pgbouncer-tests.sh
set -euo pipefail

pg_bin=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -1)
pgbouncer=$(command -v pgbouncer || echo /usr/sbin/pgbouncer)
[ -x "$pg_bin/initdb" ] || { echo "pgbouncer-tests: no PostgreSQL server binaries" >&2; exit 2; }
[ -x "$pgbouncer" ] || { echo "pgbouncer-tests: pgbouncer is not installed" >&2; exit 2; }

# A port nothing answers on.
free_port() {
    local port
    while :; do
        port=$((20000 + RANDOM % 40000))
        if ! (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
            echo "$port"
            return
        fi
    done
}

dir=$(mktemp -d /tmp/loyalty-pgbouncer-XXXXXX)
pg_port=$(free_port)
bouncer_port=$(free_port)
# initdb and PgBouncer refuse to run as root.
as_owner=()
if [ "$(id -u)" = 0 ]; then
    chown postgres: "$dir"
    as_owner=(runuser -u postgres --)
fi

cleanup() {
    [ -f "$dir/pgbouncer.pid" ] && kill "$(cat "$dir/pgbouncer.pid")" 2>/dev/null || true
    "${as_owner[@]}" "$pg_bin/pg_ctl" -D "$dir/data" -m immediate stop >/dev/null 2>&1 || true
    rm -rf "$dir"
}
trap cleanup EXIT

"${as_owner[@]}" "$pg_bin/initdb" -D "$dir/data" -U postgres -A trust --no-sync >"$dir/initdb.log"
"${as_owner[@]}" "$pg_bin/pg_ctl" -D "$dir/data" -l "$dir/server.log" -w \
    -o "-p $pg_port -c listen_addresses=127.0.0.1 -c unix_socket_directories=$dir \
        -c max_connections=300 -c fsync=off -c full_page_writes=off" \
    start >/dev/null

# Trust auth still needs the user names PgBouncer may pass through.
cat >"$dir/userlist.txt" <<EOF
"loyalty_test_service" ""
"loyalty_test_service_inherit" ""
"loyalty_test_migrator" ""
EOF
cat >"$dir/pgbouncer.ini" <<EOF
[databases]
* = host=127.0.0.1 port=$pg_port

[pgbouncer]
listen_addr = 127.0.0.1
listen_port = $bouncer_port
unix_socket_dir =
auth_type = trust
auth_file = $dir/userlist.txt
pool_mode = transaction
default_pool_size = 8
max_client_conn = 1000
pidfile = $dir/pgbouncer.pid
logfile = $dir/pgbouncer.log
EOF
chown -R "$(stat -c %U "$dir")" "$dir"
"${as_owner[@]}" "$pgbouncer" -d "$dir/pgbouncer.ini"
# Up once it answers on its port, not once it wrote its pid file.
for _ in $(seq 100); do
    (exec 3<>"/dev/tcp/127.0.0.1/$bouncer_port") 2>/dev/null && break
    sleep 0.1
done
if ! (exec 3<>"/dev/tcp/127.0.0.1/$bouncer_port") 2>/dev/null; then
    echo "pgbouncer-tests: PgBouncer is not answering on $bouncer_port:" >&2
    cat "$dir/pgbouncer.log" >&2 || true
    exit 1
fi

export DATABASE_URL="postgres://postgres@127.0.0.1:$pg_port/postgres"
export LOYALTY_TEST_PGBOUNCER="127.0.0.1:$bouncer_port"
# Tests that inspect one server session from outside a guard (backend pids,
# session state) have no meaning through a pooler in transaction mode.
filters=(${PGBOUNCER_TEST_FILTERS:-guard:: isolation:: money::races:: platform:: ops:: migrations::four_instances})
skips=(--skip guard::dropped_guard --skip guard::committed_guard)

cargo test --test all --no-run >/dev/null 2>&1
status=0
pids=()
for process in 1 2; do
    cargo test -q --test all -- "${filters[@]}" "${skips[@]}" >"$dir/tests-$process.log" 2>&1 &
    pids+=($!)
done
for n in 0 1; do
    if ! wait "${pids[$n]}"; then
        status=1
        echo "pgbouncer-tests: process $((n + 1)) failed:" >&2
        cat "$dir/tests-$((n + 1)).log" >&2
    fi
done
grep -h "test result" "$dir"/tests-*.log

# Then a crash: the server stopped with -m immediate and started again while
# tasks issue, straight to PostgreSQL (PgBouncer would only add its own
# reconnect delay). synchronous_commit stays on, so an acknowledged commit is
# in the WAL; fsync off only skips the flush to disk, which a crash of the
# server's processes (not of the machine) does not need.
crash="${as_owner[*]} $pg_bin/pg_ctl -D $dir/data -m immediate stop >/dev/null && \
    ${as_owner[*]} $pg_bin/pg_ctl -D $dir/data -l $dir/server.log -w \
    -o \"-p $pg_port -c listen_addresses=127.0.0.1 -c unix_socket_directories=$dir \
        -c max_connections=300 -c fsync=off -c full_page_writes=off\" \
    start >/dev/null"
if ! LOYALTY_TEST_PGBOUNCER= LOYALTY_TEST_CRASH="$crash" cargo test -q --test all -- \
        faults::a_server_crash --nocapture >"$dir/crash.log" 2>&1; then
    status=1
    echo "pgbouncer-tests: the crash test failed:" >&2
    cat "$dir/crash.log" >&2
fi
grep -h "crash test\|test result" "$dir/crash.log"
# Proof the service logins went through PgBouncer, not around it.
logins=$(grep -c "login attempt: db=loyalty_test_" "$dir/pgbouncer.log" || true)
echo "pgbouncer-tests: $logins client logins through PgBouncer"
[ "$logins" -gt 0 ] || status=1
exit $status
