//! The embedded migrations, run under a PostgreSQL advisory lock.

use diesel::Connection;
use diesel::connection::SimpleConnection;
use diesel_async::AsyncPgConnection;
use diesel_async::async_connection_wrapper::AsyncConnectionWrapper;
use diesel_migrations::{EmbeddedMigrations, MigrationHarness, embed_migrations};

use crate::error::{Error, Result};
use crate::store::Store;

/// Every migration under `migrations/`, compiled into the crate.
pub const MIGRATIONS: EmbeddedMigrations = embed_migrations!("migrations");

// Any fixed key works as long as every instance uses the same one.
const MIGRATION_LOCK_KEY: i64 = 0x6c6f_7961_6c74_7931;

impl Store {
    /// Applies pending migrations and returns the versions it applied.
    ///
    /// Several instances may call this at once: a session-level advisory lock
    /// lets one migrate while the others wait, and those then find nothing
    /// left to do. The migrations run on a dedicated connection, outside the
    /// pool and without its statement timeout.
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
    let mut conn = AsyncConnectionWrapper::<AsyncPgConnection>::establish(url)?;
    conn.batch_execute(&format!("SELECT pg_advisory_lock({MIGRATION_LOCK_KEY})"))?;
    let applied = conn
        .run_pending_migrations(MIGRATIONS)
        .map(|versions| versions.iter().map(ToString::to_string).collect())
        .map_err(|e| Error::Migration(e.to_string()));
    // Closing the connection would release the lock too; unlocking first lets
    // the next waiter go without waiting for the disconnect.
    conn.batch_execute(&format!("SELECT pg_advisory_unlock({MIGRATION_LOCK_KEY})"))?;
    applied
}
