//! Scaling out on Citus: distributing a migrated database by `tenant_id`,
//! and delegating the money functions to the worker that holds each
//! tenant's shards. See `docs/citus.md`.

use diesel::connection::SimpleConnection;
use diesel::sql_types::Bool;
use diesel::{QueryableByName, RunQueryDsl};

use crate::error::{Error, Result};
use crate::migrate::SyncConnection;
use crate::store::Store;

const DISTRIBUTE: &str = include_str!("citus/distribute.sql");
const DELEGATE: &str = include_str!("citus/delegate.sql");

#[derive(QueryableByName)]
struct Installed {
    #[diesel(sql_type = Bool)]
    installed: bool,
}

impl Store {
    /// Distributes a migrated database over the Citus cluster it lives on:
    /// `tenants` (and the guard key) become reference tables, and every
    /// tenant-owned table is distributed by `tenant_id`, colocated, with its
    /// foreign keys, policies, grants and triggers on every shard. The money
    /// functions are delegated to the tenant's worker.
    ///
    /// Run it once, as the migrator, after [`Store::migrate`] and before
    /// writing data. It runs in one transaction under the migration lock, and
    /// a second call does nothing. On a database without the `citus`
    /// extension it fails with [`Error::Migration`].
    pub async fn distribute(&self) -> Result<()> {
        self.as_migrator(distribute).await
    }
}

fn distribute(conn: &mut SyncConnection) -> Result<()> {
    let Installed { installed } = diesel::sql_query(
        "SELECT EXISTS (SELECT 1 FROM pg_extension WHERE extname = 'citus') AS installed",
    )
    .get_result(conn)?;
    if !installed {
        return Err(Error::Migration(
            "distributing needs the citus extension in this database".into(),
        ));
    }
    conn.batch_execute(DISTRIBUTE)
        .map_err(|e| Error::Migration(format!("distributing the tables: {e}")))?;
    delegate_functions(conn)
}

/// Delegates the money functions when the database is distributed; does
/// nothing otherwise. The layer's rebuild drops them, so it runs after every
/// rebuild too.
pub(crate) fn delegate_functions(conn: &mut SyncConnection) -> Result<()> {
    conn.batch_execute(DELEGATE)
        .map_err(|e| Error::Migration(format!("delegating the money functions: {e}")))
}
