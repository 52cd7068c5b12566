//! The embedded migrations and the SQL layer, applied under one PostgreSQL
//! advisory lock.
//!
//! Migrations hold what data depends on: tables, keys, indexes, policies and
//! grants. The SQL layer (`sql/*.sql`) holds the functions and triggers, in a
//! schema of its own, `loyalty`, which is dropped and rebuilt in one
//! transaction whenever the layer's text changes or a migration ran. A change
//! to a function is therefore a diff of that function. See
//! `docs/sql-layout.md`.

use std::collections::BTreeSet;
use std::time::Duration;

use diesel::connection::SimpleConnection;
use diesel::migration::MigrationSource;
use diesel::pg::Pg;
use diesel::sql_types::{Nullable, Text};
use diesel::{Connection, QueryableByName, RunQueryDsl};
use diesel_async::AsyncPgConnection;
use diesel_async::async_connection_wrapper::AsyncConnectionWrapper;
use diesel_migrations::{EmbeddedMigrations, MigrationHarness, embed_migrations};

use crate::connect::establish;
use crate::error::{Error, Result, TimeoutKind};
use crate::store::Store;

include!(concat!(env!("OUT_DIR"), "/sql_layer.rs"));

/// Every migration under `migrations/`, compiled into the crate.
pub const MIGRATIONS: EmbeddedMigrations = embed_migrations!("migrations");

/// The schema the SQL layer lives in.
pub const SQL_LAYER_SCHEMA: &str = "loyalty";

// Any fixed key works as long as every instance uses the same one.
const MIGRATION_LOCK_KEY: i64 = 0x6c6f_7961_6c74_7931;

/// Rebuilding the layer locks every table that has one of its triggers,
/// reads included. Rather than queue behind a long transaction, with every
/// new guard queued behind the rebuild, it gives up after this long and
/// tries again, up to `LAYER_ATTEMPTS` times.
const LAYER_LOCK_TIMEOUT: &str = "2s";
const LAYER_ATTEMPTS: u32 = 5;

const MARKER_PREFIX: &str = "loyalty-store SQL layer";

/// Database-wide settings `migrate()` keeps on every run. PUBLIC loses
/// `TEMPORARY`, since a temporary table could shadow one of the crate's, and
/// `CREATE` on schema `public` (a database made before PostgreSQL 15 still
/// grants it), since a look-alike of a built-in function there could run
/// inside the crate's `SECURITY DEFINER` functions. (A database cloned from
/// a template does not inherit its privileges, hence every run.)
const HARDEN_DATABASE: &str = "DO $$ BEGIN \
     EXECUTE format('REVOKE TEMPORARY ON DATABASE %I FROM PUBLIC', current_database()); \
     END $$; \
     REVOKE CREATE ON SCHEMA public FROM PUBLIC";

pub(crate) type SyncConnection = AsyncConnectionWrapper<AsyncPgConnection>;

impl Store {
    /// Applies pending migrations, then rebuilds the SQL layer if its text
    /// changed or a migration ran, and returns the migration versions it
    /// applied.
    ///
    /// Several instances may call this at once: a session-level advisory lock
    /// lets one migrate while the others wait, and those then find nothing
    /// left to do. The work runs on a dedicated connection, outside the pool
    /// and without its statement timeout.
    ///
    /// A database a newer release has migrated is left as it is, migrations
    /// and layer alike, so an older instance restarting during a rolling
    /// deploy does not undo the newer one's work. A database with migrations
    /// this build has never heard of, older than its own (a pre-release
    /// build's), is refused with [`Error::Migration`].
    pub async fn migrate(&self) -> Result<Vec<String>> {
        self.as_migrator(migrate_and_layer).await
    }

    /// Runs `work` as the migrator (its URL, else the service's) on a
    /// dedicated connection, in one transaction under the migration lock
    /// (see [`run_locked`]).
    pub(crate) async fn as_migrator<T: Send + 'static>(
        &self,
        work: fn(&mut SyncConnection) -> Result<T>,
    ) -> Result<T> {
        let config = self.config();
        let url = config
            .migrator_url
            .clone()
            .unwrap_or_else(|| config.database_url.clone());
        tokio::task::spawn_blocking(move || run_locked(&url, work))
            .await
            .map_err(|e| Error::Migration(format!("migration task failed: {e}")))?
    }
}

/// Everything runs in one transaction that holds a transaction-level
/// advisory lock: the others wait for it, then find nothing to do. A
/// session-level lock would outlive the transaction on a server connection
/// that PgBouncer (in transaction mode) hands to other clients. Each
/// migration and the layer rebuild are savepoints within it.
fn run_locked<T>(url: &str, work: impl FnOnce(&mut SyncConnection) -> Result<T>) -> Result<T> {
    // The wrapper drives the async connection from this blocking thread, which
    // works on both the multi-threaded and the current-thread runtime.
    let conn = tokio::runtime::Handle::current().block_on(establish(url))?;
    let mut conn = SyncConnection::from(conn);
    conn.transaction(|conn| {
        conn.batch_execute(&format!(
            "SELECT pg_advisory_xact_lock({MIGRATION_LOCK_KEY})"
        ))?;
        work(conn)
    })
}

fn migrate_and_layer(conn: &mut SyncConnection) -> Result<Vec<String>> {
    let ours: BTreeSet<String> = MigrationSource::<Pg>::migrations(&MIGRATIONS)
        .map_err(|e| Error::Migration(e.to_string()))?
        .iter()
        .map(|m| m.name().version().to_string())
        .collect();
    let unknown: Vec<String> = conn
        .applied_migrations()
        .map_err(|e| Error::Migration(e.to_string()))?
        .iter()
        .map(ToString::to_string)
        .filter(|version| !ours.contains(version))
        .collect();
    let newest = ours.last().cloned().unwrap_or_default();
    if !unknown.is_empty() {
        if unknown.iter().all(|version| *version > newest) {
            tracing::warn!(
                ?unknown,
                "the database was migrated by a newer loyalty-store; leaving it as it is"
            );
            return Ok(Vec::new());
        }
        return Err(Error::Migration(format!(
            "the database has migrations this build does not know ({}), older than its \
             newest ({newest}): another build of loyalty-store, such as a pre-0.1.0 one, \
             migrated it; migrate a new database",
            unknown.join(", ")
        )));
    }
    let applied: Vec<String> = conn
        .run_pending_migrations(MIGRATIONS)
        .map_err(|e| Error::Migration(e.to_string()))?
        .iter()
        .map(ToString::to_string)
        .collect();
    conn.batch_execute(HARDEN_DATABASE).map_err(|e| {
        Error::Migration(format!(
            "revoking TEMPORARY on the database from PUBLIC (the migrator must own the \
             database): {e}"
        ))
    })?;
    // A migration may have dropped and recreated a table, and its triggers
    // with it, so the layer is rebuilt after any migration.
    match layer_state(conn)? {
        LayerState::Current if applied.is_empty() => {}
        LayerState::Newer(marker) if applied.is_empty() => {
            tracing::warn!(%marker, "the SQL layer was built by a newer loyalty-store; kept");
        }
        _ => {
            apply_layer(conn)?;
            crate::citus::delegate_functions(conn)?;
        }
    }
    Ok(applied)
}

enum LayerState {
    Current,
    Newer(String),
    Stale,
}

#[derive(QueryableByName)]
struct Marker {
    #[diesel(sql_type = Nullable<Text>)]
    marker: Option<String>,
}

/// What the schema's comment says built it: this crate's version and the
/// layer's fingerprint.
fn layer_marker() -> String {
    format!(
        "{MARKER_PREFIX} {} {SQL_LAYER_FINGERPRINT}",
        env!("CARGO_PKG_VERSION")
    )
}

fn layer_state(conn: &mut SyncConnection) -> Result<LayerState> {
    let Marker { marker } = diesel::sql_query(
        "SELECT (SELECT obj_description(oid, 'pg_namespace') FROM pg_namespace \
                  WHERE nspname = $1) AS marker",
    )
    .bind::<Text, _>(SQL_LAYER_SCHEMA)
    .get_result(conn)?;
    let Some(marker) = marker else {
        return Ok(LayerState::Stale);
    };
    if marker == layer_marker() {
        return Ok(LayerState::Current);
    }
    let built_by = marker
        .strip_prefix(MARKER_PREFIX)
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(release);
    let ours = release(env!("CARGO_PKG_VERSION"));
    Ok(match (built_by, ours) {
        (Some(theirs), Some(ours)) if theirs > ours => LayerState::Newer(marker),
        _ => LayerState::Stale,
    })
}

/// `major.minor.patch` of a version, ignoring any pre-release or build suffix.
fn release(version: &str) -> Option<(u64, u64, u64)> {
    let core = version.split(['-', '+']).next()?;
    let mut parts = core.split('.').map(|part| part.parse::<u64>().ok());
    Some((parts.next()??, parts.next()??, parts.next()??))
}

fn apply_layer(conn: &mut SyncConnection) -> Result<()> {
    let mut attempt = 1;
    loop {
        match rebuild_layer(conn) {
            Err(e) if is_lock_timeout(&e) && attempt < LAYER_ATTEMPTS => {
                tracing::warn!(
                    attempt,
                    "SQL layer rebuild waited too long for a table lock"
                );
                std::thread::sleep(Duration::from_millis(200 * u64::from(attempt)));
                attempt += 1;
            }
            outcome => return outcome,
        }
    }
}

fn is_lock_timeout(err: &Error) -> bool {
    matches!(
        err,
        Error::Timeout {
            kind: TimeoutKind::Lock,
            ..
        }
    )
}

/// Drops the layer's schema with everything in it (its triggers on the
/// tables go too) and builds it again from the embedded files, in one
/// transaction: other sessions see the old layer or the new one, never a mix.
/// Anything outside the layer that depended on it, and would not depend on
/// the new one, makes the rebuild fail rather than vanish with the old one.
/// On Citus the layer's triggers go onto distributed tables, which Citus
/// allows only with `enable_unsafe_triggers` (every trigger of the layer acts
/// on its own tenant's rows, so on one shard); on plain PostgreSQL the two
/// `citus.` settings are inert placeholders.
fn rebuild_layer(conn: &mut SyncConnection) -> Result<()> {
    let fresh_schema = format!(
        "SET LOCAL lock_timeout = '{LAYER_LOCK_TIMEOUT}';\n\
         SET LOCAL citus.enable_unsafe_triggers = on;\n\
         SET LOCAL citus.multi_shard_modify_mode = 'sequential';\n\
         DROP SCHEMA IF EXISTS {SQL_LAYER_SCHEMA} CASCADE;\n\
         CREATE SCHEMA {SQL_LAYER_SCHEMA};\n\
         GRANT USAGE ON SCHEMA {SQL_LAYER_SCHEMA} TO loyalty_app;"
    );
    // The marker is built from constants: nothing external in this SQL.
    let marker = format!(
        "COMMENT ON SCHEMA {SQL_LAYER_SCHEMA} IS '{}'",
        layer_marker()
    );
    conn.transaction::<_, Error, _>(|conn| {
        let before = dependents(conn)?;
        conn.batch_execute(&fresh_schema)?;
        for (name, text) in SQL_LAYER {
            for statement in crate::statements::split(text) {
                conn.batch_execute(statement).map_err(|e| {
                    let e = Error::from(e);
                    if is_lock_timeout(&e) {
                        e
                    } else {
                        Error::Migration(format!("applying sql/{name}: {e}"))
                    }
                })?;
            }
        }
        let lost: Vec<String> = before.difference(&dependents(conn)?).cloned().collect();
        if !lost.is_empty() {
            return Err(Error::Migration(format!(
                "rebuilding the SQL layer would drop what depends on it from outside: {}",
                lost.join("; ")
            )));
        }
        conn.batch_execute(&marker)?;
        Ok(())
    })
}

#[derive(QueryableByName)]
struct Dependent {
    #[diesel(sql_type = Text)]
    object: String,
}

/// Objects outside the layer's schema that depend on something inside it:
/// the layer's triggers, and anything else that was built on it.
fn dependents(conn: &mut SyncConnection) -> Result<BTreeSet<String>> {
    let rows: Vec<Dependent> = diesel::sql_query(
        "WITH layer AS (SELECT oid FROM pg_namespace WHERE nspname = $1), \
              inside AS ( \
                  SELECT 'pg_proc'::regclass AS class, oid FROM pg_proc \
                   WHERE pronamespace = (SELECT oid FROM layer) \
                  UNION ALL \
                  SELECT 'pg_type'::regclass, oid FROM pg_type \
                   WHERE typnamespace = (SELECT oid FROM layer)) \
         SELECT DISTINCT pg_describe_object(d.classid, d.objid, d.objsubid) AS object \
           FROM pg_depend d \
          WHERE d.deptype = 'n' \
            AND (d.refclassid, d.refobjid) IN (SELECT class, oid FROM inside) \
            AND (d.classid, d.objid) NOT IN (SELECT class, oid FROM inside)",
    )
    .bind::<Text, _>(SQL_LAYER_SCHEMA)
    .load(conn)?;
    Ok(rows.into_iter().map(|row| row.object).collect())
}
