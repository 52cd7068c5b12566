#!/usr/bin/env bash
# Backs up the database at DATABASE_URL in pg_dump's custom format, for
# scripts/restore.sh, and prints the dump's path.
#
#   DATABASE_URL=postgres://... scripts/backup.sh [OUTPUT]
#
# PG_BIN, if set, is the directory holding pg_dump; use it to pick the client
# matching the server's major version. Otherwise pg_dump comes from PATH.
set -euo pipefail

if [ -z "${DATABASE_URL:-}" ]; then
    echo "backup.sh: set DATABASE_URL to the database to back up" >&2
    exit 2
fi
out=${1:-loyalty_backup_$(date +%Y%m%d_%H%M%S).dump}

# libpq rejects the store's own URL parameters (pool_size, ...), so the
# service's DATABASE_URL works here too once they are removed.
url=$(printf '%s' "$DATABASE_URL" | sed -E \
    -e 's/([?&])(pool_size|checkout_timeout_ms|statement_timeout_ms|prepared_statements|recycling)=[^&]*/\1/g' \
    -e 's/&&+/\&/g' -e 's/\?&/?/' -e 's/[?&]$//')

"${PG_BIN:+$PG_BIN/}pg_dump" --format=custom --no-owner --file "$out" --dbname "$url"
echo "$out"
