#!/usr/bin/env bash
# Restores a dump made by scripts/backup.sh into the database at DATABASE_URL,
# replacing the objects it contains. All or nothing: one transaction, stopping
# at the first error.
#
#   DATABASE_URL=postgres://... scripts/restore.sh DUMP
#
# PG_BIN, if set, is the directory holding pg_restore; otherwise it comes from
# PATH.
set -euo pipefail

if [ -z "${DATABASE_URL:-}" ]; then
    echo "restore.sh: set DATABASE_URL to the database to restore into" >&2
    exit 2
fi
if [ $# -ne 1 ]; then
    echo "usage: DATABASE_URL=postgres://... $0 DUMP" >&2
    exit 2
fi
if [ ! -f "$1" ]; then
    echo "restore.sh: no such dump: $1" >&2
    exit 2
fi

# libpq rejects the store's own URL parameters (pool_size, ...), so the
# service's DATABASE_URL works here too once they are removed.
url=$(printf '%s' "$DATABASE_URL" | sed -E \
    -e 's/([?&])(pool_size|checkout_timeout_ms|statement_timeout_ms|prepared_statements|recycling)=[^&]*/\1/g' \
    -e 's/&&+/\&/g' -e 's/\?&/?/' -e 's/[?&]$//')

"${PG_BIN:+$PG_BIN/}pg_restore" --clean --if-exists --no-owner --single-transaction \
    --exit-on-error -d "$url" "$1"
