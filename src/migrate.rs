//! The embedded migrations and the SQL layer, applied under one PostgreSQL
//! advisory lock.
//!
//! Migrations hold what data depends on: tables, keys, indexes, policies and
//! grants. The SQL layer (`sql/*.sql`) holds the functions and triggers, in a
//! schema of its own, `loyalty`, which is dropped and rebuilt in one
//! transaction whenever the layer's text changes or a migration ran. A change
//! to a function is therefore a diff of that function. See
//! `docs/sql-layout.md`.

use diesel::connection::SimpleConnection;
use diesel::sql_types::Bool;
use diesel::{Connection, QueryableByName, RunQueryDsl};
use diesel_async::AsyncPgConnection;
use diesel_async::async_connection_wrapper::AsyncConnectionWrapper;
use diesel_migrations::{EmbeddedMigrations, MigrationHarness, embed_migrations};

use crate::error::{Error, Result};
use crate::store::Store;

include!(concat!(env!("OUT_DIR"), "/sql_layer.rs"));

/// Every migration under `migrations/`, compiled into the crate.
pub const MIGRATIONS: EmbeddedMigrations = embed_migrations!("migrations");

/// The schema the SQL layer lives in.
pub const SQL_LAYER_SCHEMA: &str = "loyalty";

// Any fixed key works as long as every instance uses the same one.
const MIGRATION_LOCK_KEY: i64 = 0x6c6f_7961_6c74_7931;

type SyncConnection = AsyncConnectionWrapper<AsyncPgConnection>;

impl Store {
    /// Applies pending migrations, then rebuilds the SQL layer if its text
    /// changed or a migration ran, and returns the migration versions it
    /// applied.
    ///
    /// Several instances may call this at once: a session-level advisory lock
    /// lets one migrate while the others wait, and those then find nothing
    /// left to do. The work runs on a dedicated connection, outside the pool
    /// and without its statement timeout.
    pub async fn migrate(&self) -> Result<Vec<String>> {
        let url = self.config().database_url.clone();
        tokio::task::spawn_blocking(move || run_locked(&url))
            .await
            .map_err(|e| Error::Migration(format!("migration task failed: {e}")))?
    }
}

fn run_locked(url: &str) -> Result<Vec<String>> {
    // The wrapper drives the async connection from this blocking thread, which
    // works on both the multi-threaded and the current-thread runtime.
    let mut conn = SyncConnection::establish(url)?;
    conn.batch_execute(&format!("SELECT pg_advisory_lock({MIGRATION_LOCK_KEY})"))?;
    let outcome = migrate_and_layer(&mut conn);
    // Closing the connection would release the lock too; unlocking first lets
    // the next waiter go without waiting for the disconnect.
    conn.batch_execute(&format!("SELECT pg_advisory_unlock({MIGRATION_LOCK_KEY})"))?;
    outcome
}

fn migrate_and_layer(conn: &mut SyncConnection) -> Result<Vec<String>> {
    let applied: Vec<String> = conn
        .run_pending_migrations(MIGRATIONS)
        .map(|versions| versions.iter().map(ToString::to_string).collect())
        .map_err(|e| Error::Migration(e.to_string()))?;
    // A migration may have dropped and recreated a table, and its triggers
    // with it, so the layer is rebuilt after any migration.
    if !applied.is_empty() || !layer_is_current(conn)? {
        apply_layer(conn)?;
    }
    Ok(applied)
}

#[derive(QueryableByName)]
struct Current {
    #[diesel(sql_type = Bool)]
    current: bool,
}

fn layer_marker() -> String {
    format!("loyalty-store SQL layer {SQL_LAYER_FINGERPRINT}")
}

fn layer_is_current(conn: &mut SyncConnection) -> Result<bool> {
    let row: Current = diesel::sql_query(
        "SELECT EXISTS (SELECT 1 FROM pg_namespace \
                         WHERE nspname = $1 AND obj_description(oid, 'pg_namespace') = $2) AS current",
    )
    .bind::<diesel::sql_types::Text, _>(SQL_LAYER_SCHEMA)
    .bind::<diesel::sql_types::Text, _>(layer_marker())
    .get_result(conn)?;
    Ok(row.current)
}

/// Drops the layer's schema with everything in it (its triggers on the
/// tables go too) and builds it again from the embedded files, in one
/// transaction: other sessions see the old layer or the new one, never a mix.
fn apply_layer(conn: &mut SyncConnection) -> Result<()> {
    let fresh_schema = format!(
        "DROP SCHEMA IF EXISTS {SQL_LAYER_SCHEMA} CASCADE;\n\
         CREATE SCHEMA {SQL_LAYER_SCHEMA};\n\
         GRANT USAGE ON SCHEMA {SQL_LAYER_SCHEMA} TO loyalty_app;"
    );
    // The marker is built from a hex constant: nothing external in this SQL.
    let marker = format!(
        "COMMENT ON SCHEMA {SQL_LAYER_SCHEMA} IS '{}'",
        layer_marker()
    );
    conn.transaction::<_, Error, _>(|conn| {
        conn.batch_execute(&fresh_schema)?;
        for (name, text) in SQL_LAYER {
            conn.batch_execute(text)
                .map_err(|e| Error::Migration(format!("applying sql/{name}: {e}")))?;
        }
        conn.batch_execute(&marker)?;
        Ok(())
    })
}
