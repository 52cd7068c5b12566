//! Operational read-outs: [`Store::health`] for liveness probes and
//! [`Store::diagnostics`] for capacity and query-performance dashboards.
//!
//! Both run as the login role outside any tenant context and read only server
//! settings and the catalog and statistics views, never tenant rows.

use std::time::{Duration, Instant};

use diesel::dsl::sql;
use diesel::prelude::*;
use diesel::sql_types::{BigInt, Double, Text};
use diesel_async::{AsyncPgConnection, RunQueryDsl};
use serde::Serialize;

use crate::connect::establish;
use crate::error::{Error, Result};
use crate::store::{PoolStatus, Store};

/// What [`Store::health`] found.
#[derive(Debug, Clone, Serialize)]
pub struct Health {
    /// Pool occupancy after the probe.
    pub pool: PoolStatus,
    pub database_reachable: bool,
    /// Every pooled connection stayed busy for the checkout timeout. The
    /// server was then probed on a connection of its own.
    pub pool_exhausted: bool,
    /// Time for the probe query, once a connection was checked out.
    pub round_trip: Option<Duration>,
    pub server_version: Option<String>,
    /// Why the database was unreachable.
    pub error: Option<String>,
}

/// What [`Store::diagnostics`] found.
#[derive(Debug, Clone, Serialize)]
pub struct Diagnostics {
    /// The current schema's tables, largest first.
    pub tables: Vec<TableSize>,
    /// Their indexes, largest first.
    pub indexes: Vec<IndexUsage>,
    /// The ten statements with the highest mean execution time in this
    /// database, or `None` when `pg_stat_statements` is not installed here.
    pub slow_statements: Option<Vec<SlowStatement>>,
}

/// Disk use of one table.
#[derive(Debug, Clone, Serialize, QueryableByName)]
pub struct TableSize {
    #[diesel(sql_type = Text)]
    pub table: String,
    /// Heap, TOAST and indexes together.
    #[diesel(sql_type = BigInt)]
    pub total_bytes: i64,
    /// Heap and TOAST.
    #[diesel(sql_type = BigInt)]
    pub table_bytes: i64,
    #[diesel(sql_type = BigInt)]
    pub index_bytes: i64,
    /// The planner's estimate, or the statistics collector's live-row count
    /// for a table that has never been analyzed.
    #[diesel(sql_type = BigInt)]
    pub estimated_rows: i64,
}

/// Size and use of one index; an index that is never scanned only costs writes.
#[derive(Debug, Clone, Serialize, QueryableByName)]
pub struct IndexUsage {
    #[diesel(sql_type = Text)]
    pub table: String,
    #[diesel(sql_type = Text)]
    pub index: String,
    /// Index scans since the statistics were last reset.
    #[diesel(sql_type = BigInt)]
    pub scans: i64,
    #[diesel(sql_type = BigInt)]
    pub bytes: i64,
}

/// One normalized statement from `pg_stat_statements`.
#[derive(Debug, Clone, Serialize, QueryableByName)]
pub struct SlowStatement {
    #[diesel(sql_type = Text)]
    pub query: String,
    #[diesel(sql_type = BigInt)]
    pub calls: i64,
    #[diesel(sql_type = Double)]
    pub mean_ms: f64,
    #[diesel(sql_type = Double)]
    pub total_ms: f64,
}

// reltuples is -1 until a table is first analyzed (PostgreSQL 14+).
const TABLES: &str = "\
SELECT c.relname::text AS \"table\",
       pg_total_relation_size(c.oid) AS total_bytes,
       pg_table_size(c.oid) AS table_bytes,
       pg_indexes_size(c.oid) AS index_bytes,
       CASE WHEN c.reltuples >= 0 THEN c.reltuples::int8
            ELSE COALESCE(s.n_live_tup, 0) END AS estimated_rows
FROM pg_class c
LEFT JOIN pg_stat_user_tables s ON s.relid = c.oid
WHERE c.relnamespace = (SELECT oid FROM pg_namespace WHERE nspname = current_schema())
  AND c.relkind = 'r'
ORDER BY total_bytes DESC, c.relname";

/// The same on Citus: a distributed or reference table on the coordinator
/// is an empty shell, so its sizes come from Citus' size functions (over
/// its shards) and its row estimate from each shard's `reltuples`.
const TABLES_ON_CITUS: &str = "\
SELECT c.relname::text AS \"table\",
       CASE WHEN p.logicalrelid IS NULL THEN pg_total_relation_size(c.oid)
            ELSE citus_total_relation_size(c.oid) END AS total_bytes,
       CASE WHEN p.logicalrelid IS NULL THEN pg_table_size(c.oid)
            ELSE citus_table_size(c.oid) END AS table_bytes,
       CASE WHEN p.logicalrelid IS NULL THEN pg_indexes_size(c.oid)
            ELSE citus_total_relation_size(c.oid) - citus_table_size(c.oid) END AS index_bytes,
       CASE WHEN p.logicalrelid IS NULL THEN greatest(c.reltuples, 0)::int8
            ELSE (SELECT coalesce(sum(greatest(r.result::float8, 0)), 0)::int8
                    FROM run_command_on_shards(c.oid,
                             'SELECT reltuples FROM pg_class WHERE oid = ''%s''::regclass') r
                   WHERE r.success) END AS estimated_rows
FROM pg_class c
LEFT JOIN pg_dist_partition p ON p.logicalrelid = c.oid
WHERE c.relnamespace = (SELECT oid FROM pg_namespace WHERE nspname = current_schema())
  AND c.relkind = 'r'
ORDER BY total_bytes DESC, c.relname";

const INDEXES: &str = "\
SELECT s.relname::text AS \"table\",
       s.indexrelname::text AS \"index\",
       COALESCE(s.idx_scan, 0) AS scans,
       pg_relation_size(s.indexrelid) AS bytes
FROM pg_stat_user_indexes s
WHERE s.schemaname = current_schema()
ORDER BY bytes DESC, s.relname, s.indexrelname";

/// The same on Citus: a distributed or reference table's indexes are summed
/// over its shards' indexes, whose names carry the shard's id as a suffix.
const INDEXES_ON_CITUS: &str = "\
WITH spread AS (
    SELECT p.logicalrelid AS relid, c.relname
      FROM pg_dist_partition p
      JOIN pg_class c ON c.oid = p.logicalrelid
     WHERE c.relnamespace = (SELECT oid FROM pg_namespace WHERE nspname = current_schema())
), shard_indexes AS (
    SELECT spread.relname, item->>0 AS shard_index, (item->>1)::int8 AS scans, (item->>2)::int8 AS bytes
      FROM spread,
           run_command_on_shards(spread.relid,
               'SELECT coalesce(json_agg(json_build_array(indexrelname, idx_scan, pg_relation_size(indexrelid))), ''[]'')
                  FROM pg_stat_user_indexes WHERE relid = ''%s''::regclass') r,
           json_array_elements(r.result::json) item
     WHERE r.success
)
SELECT \"table\", \"index\", scans, bytes FROM (
    SELECT relname::text AS \"table\", regexp_replace(shard_index, '_[0-9]+$', '') AS \"index\",
           sum(scans)::int8 AS scans, sum(bytes)::int8 AS bytes
      FROM shard_indexes
     GROUP BY 1, 2
    UNION ALL
    SELECT s.relname::text, s.indexrelname::text, COALESCE(s.idx_scan, 0), pg_relation_size(s.indexrelid)
      FROM pg_stat_user_indexes s
     WHERE s.schemaname = current_schema()
       AND s.relid NOT IN (SELECT relid FROM spread)
) everything
ORDER BY bytes DESC, \"table\", \"index\"";

#[derive(QueryableByName)]
struct ExtensionSchema {
    #[diesel(sql_type = Text)]
    schema: String,
}

// The view lives in whatever schema the extension was created in, which need
// not be on the search path. Reading it fails unless the server preloaded the
// library, so an extension created without that counts as absent; and so
// does one the login may not see preloaded (pg_settings hides the setting
// from a login without pg_read_all_settings).
const STATEMENTS_SCHEMA: &str = "\
SELECT quote_ident(n.nspname) AS schema
FROM pg_extension e JOIN pg_namespace n ON n.oid = e.extnamespace
WHERE e.extname = 'pg_stat_statements'
  AND 'pg_stat_statements' = ANY (string_to_array(replace(
        (SELECT setting FROM pg_settings WHERE name = 'shared_preload_libraries'), ' ', ''), ','))";

fn slow_statements_query(schema: &str) -> String {
    format!(
        "SELECT COALESCE(query, '') AS query, calls, \
                mean_exec_time AS mean_ms, total_exec_time AS total_ms \
         FROM {schema}.pg_stat_statements \
         WHERE dbid = (SELECT oid FROM pg_database WHERE datname = current_database()) \
         ORDER BY mean_exec_time DESC \
         LIMIT 10"
    )
}

/// In a transaction, like every statement outside a guard, for PgBouncer
/// in transaction mode (see `login::ensure_unprivileged`).
async fn server_version(conn: &mut AsyncPgConnection) -> Result<(String, Duration)> {
    let started = Instant::now();
    let version: String = conn
        .build_transaction()
        .read_only()
        .run(async |conn| {
            diesel::select(sql::<Text>("current_setting('server_version')"))
                .get_result(conn)
                .await
        })
        .await?;
    Ok((version, started.elapsed()))
}

impl Store {
    /// Checks out a connection and asks the server for its version.
    ///
    /// Never fails: an unreachable database, or a pool with no free
    /// connection within the checkout timeout, is reported in the result, so
    /// a probe endpoint can serialize it as is. A full pool is told from an
    /// unreachable server by probing on a connection outside the pool.
    pub async fn health(&self) -> Health {
        let (probe, pool_exhausted) = match self.checkout().await {
            Ok(mut conn) => (self.answer(server_version(&mut conn)).await, false),
            Err(Error::PoolTimeout) => {
                let own = establish(&self.config().database_url).await;
                match own {
                    Ok(mut conn) => (self.answer(server_version(&mut conn)).await, true),
                    Err(e) => (Err(Error::Connection(e)), true),
                }
            }
            Err(e) => (Err(e), false),
        };
        let (round_trip, server_version, error) = match probe {
            Ok((version, elapsed)) => (Some(elapsed), Some(version), None),
            Err(e) => (None, None, Some(e.to_string())),
        };
        Health {
            pool: self.pool_status(),
            database_reachable: error.is_none(),
            pool_exhausted,
            round_trip,
            server_version,
            error,
        }
    }

    /// The probe's answer, or an error once the checkout timeout has passed
    /// without one: behind PgBouncer a connection to a server that is gone
    /// waits for PgBouncer's own timeout (`query_wait_timeout`, 120 s by
    /// default). The probe runs in a transaction, so a connection given up
    /// on is one the pool discards.
    async fn answer(
        &self,
        probe: impl Future<Output = Result<(String, Duration)>>,
    ) -> Result<(String, Duration)> {
        let limit = self.config().checkout_timeout;
        tokio::time::timeout(limit, probe)
            .await
            .unwrap_or_else(|_| {
                Err(Error::ConnectionLost {
                    message: format!("no answer from the server within {limit:?}"),
                })
            })
    }

    /// Table and index sizes of the current schema, and the slowest
    /// statements when `pg_stat_statements` is installed in this database and
    /// loaded through `shared_preload_libraries`, and the login may see that
    /// (`pg_read_all_settings`) and other sessions' statements
    /// (`pg_read_all_stats`). On Citus the sizes, row estimates and index
    /// scans are those of the shards on the workers (docs/citus.md).
    pub async fn diagnostics(&self) -> Result<Diagnostics> {
        let (tables, indexes) = if self.session().on_citus() {
            (TABLES_ON_CITUS, INDEXES_ON_CITUS)
        } else {
            (TABLES, INDEXES)
        };
        let mut conn = self.checkout().await?;
        let (tables, indexes, slow_statements) = conn
            .build_transaction()
            .read_only()
            .run(async |conn| {
                let tables = diesel::sql_query(tables).load(conn).await?;
                let indexes = diesel::sql_query(indexes).load(conn).await?;
                let schema = diesel::sql_query(STATEMENTS_SCHEMA)
                    .get_result::<ExtensionSchema>(conn)
                    .await
                    .optional()?;
                let slow_statements = match schema {
                    Some(ExtensionSchema { schema }) => Some(
                        diesel::sql_query(slow_statements_query(&schema))
                            .load(conn)
                            .await?,
                    ),
                    None => None,
                };
                Ok::<_, diesel::result::Error>((tables, indexes, slow_statements))
            })
            .await?;
        Ok(Diagnostics {
            tables,
            indexes,
            slow_statements,
        })
    }
}
