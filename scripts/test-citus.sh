#!/usr/bin/env bash
# Runs the guard, isolation, context and money tests (the concurrency races
# included) and the examples on a 3-node Citus cluster on loopback, with the
# database distributed by Store::distribute (docs/citus.md).
#
# Citus is not packaged in Debian: when citus.so is not installed into the
# PostgreSQL 15 server, it is built from the source tarball in
# $CITUS_SOURCES (default ../shared/citus beside this repository), which is
# a test dependency and never part of the crate (2-8 minutes on 2 cores).
# The cluster comes from $CITUS_SOURCES/cluster.sh (coordinator 5601,
# workers 5602 and 5603); its database is reset first and the cluster is
# stopped afterwards if this script started it.
#
# Env: CITUS_TEST_FILTERS overrides the test filters.
set -euo pipefail
cd "$(dirname "$0")/.."
repo=$(pwd)

sources=${CITUS_SOURCES:-$repo/../shared/citus}
[ -d "$sources" ] || sources=/work/shared/citus
if [ ! -x "$sources/cluster.sh" ] && [ ! -f "$sources/cluster.sh" ]; then
    echo "test-citus: no Citus sources at \$CITUS_SOURCES ($sources)" >&2
    exit 1
fi
pg_config=/usr/lib/postgresql/15/bin/pg_config
if [ ! -f "$($pg_config --pkglibdir)/citus.so" ]; then
    echo "test-citus: building Citus from $sources (2-8 minutes)"
    sudo=""
    [ "$(id -u)" = 0 ] || sudo=sudo
    $sudo bash "$sources/build-citus.sh" "$sources"/citus-*.tar.gz
fi

cluster() { bash "$sources/cluster.sh" "$@"; }
started=no
if ! psql -X -q -h 127.0.0.1 -p 5601 -U postgres -d postgres -c 'SELECT 1' >/dev/null 2>&1; then
    cluster start >/dev/null
    started=yes
fi
stop() { if [ "$started" = yes ]; then cluster stop >/dev/null || true; fi; }
trap stop EXIT
cluster resetdb >/dev/null

node() { psql -X -q -h 127.0.0.1 -p "$1" -U postgres -d loyalty -v ON_ERROR_STOP=1; }
# Roles are made on every node by hand: the migrator cannot create roles,
# and loyalty_app must log in to the workers, where Citus opens its
# connections as the current role (docs/citus.md).
for port in 5601 5602 5603; do
    node "$port" <<'SQL'
SET citus.enable_create_role_propagation = off;
SET client_min_messages = warning;
DO $$ BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'loyalty_app') THEN
        CREATE ROLE loyalty_app LOGIN NOBYPASSRLS;
    END IF;
    IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'loyalty_test_migrator') THEN
        CREATE ROLE loyalty_test_migrator LOGIN NOSUPERUSER NOCREATEROLE NOBYPASSRLS;
    END IF;
    IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'loyalty_test_service') THEN
        CREATE ROLE loyalty_test_service LOGIN NOINHERIT NOSUPERUSER NOCREATEROLE NOBYPASSRLS
            IN ROLE loyalty_app;
    END IF;
END $$;
ALTER ROLE loyalty_app LOGIN;
SQL
done
# Keeps the proofs forwarded in SET LOCAL out of the workers'
# pg_stat_activity (docs/citus.md, "The guard on the workers").
for port in 5602 5603; do
    echo "ALTER ROLE loyalty_app SET track_activities = off;" | node "$port"
done
node 5601 <<'SQL'
ALTER DATABASE loyalty OWNER TO loyalty_test_migrator;
REVOKE EXECUTE ON FUNCTION lo_create(oid), lo_creat(integer), lo_from_bytea(oid, bytea),
    lo_import(text), lo_import(text, oid) FROM PUBLIC;
SQL

export LOYALTY_TEST_CITUS=postgres://postgres@127.0.0.1:5601/loyalty
filters=(${CITUS_TEST_FILTERS:-guard:: isolation:: context:: money:: shards::})
# Not on Citus (docs/citus.md, "Left to do"): two tests that stage lock queues with advisory locks sent from the coordinator, which
# never meet the delegated functions' locks on the workers.
skips=(--skip money::issue::a_retry_that_waited_while
       --skip money::lifecycle::a_cancel_racing_the_codes_delivery)
cargo test -q --test all -- "${filters[@]}" "${skips[@]}"

export DATABASE_URL=postgres://loyalty_test_service@127.0.0.1:5601/loyalty
export MIGRATOR_DATABASE_URL=postgres://loyalty_test_migrator@127.0.0.1:5601/loyalty
for example in quickstart seed_demo campaign_blast service_tour; do
    echo "test-citus: example $example"
    cargo run -q --example "$example" >/dev/null
done
echo "test-citus: passed"
