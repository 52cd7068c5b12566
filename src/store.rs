//! [`Store`]: the pool and the two ways in, [`Store::tenant`] and
//! [`Store::platform`] (in `platform.rs`).

use std::sync::Arc;

use diesel::connection::CacheSize;
use diesel::sql_types::Bytea;
use diesel_async::RunQueryDsl;
use diesel_async::pooled_connection::bb8::Pool;
use diesel_async::pooled_connection::{
    AsyncDieselConnectionManager, ManagerConfig, RecyclingMethod,
};
use diesel_async::{AsyncConnection, AsyncPgConnection};
use futures_util::FutureExt;
use tokio::sync::OnceCell;

use crate::checkout::{ConnectFailures, PgPool, Pooled, checkout};
use crate::config::{Config, Recycling};
use crate::connect::establish;
use crate::error::{Error, Result};
use crate::guard_key::GuardKey;
use crate::ids::TenantId;
use crate::login::ensure_unprivileged;
use crate::session::{ConnectionEvents, SessionSql};
use crate::tenant::{Actor, TenantConn};

/// The entry point: a connection pool plus the settings it was built from.
///
/// Cheap to clone; clones share the pool.
///
/// ```no_run
/// # async fn demo() -> loyalty_store::Result<()> {
/// use loyalty_store::{Config, Store};
/// let config = Config::from_url("postgres://svc@db/loyalty")?
///     .with_migrator_url("postgres://owner@db/loyalty");
/// let store = Store::connect(config).await?;
/// store.migrate().await?;
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct Store {
    pool: PgPool,
    connect_failures: ConnectFailures,
    config: Config,
    session: Arc<SessionSql>,
    guard_key: Arc<OnceCell<GuardKey>>,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store")
            .field("pool", &self.pool.state())
            .field("pool_size", &self.config.pool_size)
            .finish()
    }
}

/// Connections in the pool, for health checks and metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct PoolStatus {
    pub connections: u32,
    pub idle: u32,
    pub max_size: u32,
}

async fn read_guard_key(conn: &mut AsyncPgConnection) -> Result<GuardKey> {
    let key: Vec<u8> = diesel::dsl::sql::<Bytea>("SELECT key FROM loyalty_secret.guard_key")
        .get_result(conn)
        .await?;
    let bytes: [u8; 32] = key
        .try_into()
        .map_err(|_| Error::Config("the guard key is not 32 bytes".into()))?;
    Ok(GuardKey::from_bytes(bytes))
}

impl Store {
    /// Builds the pool and checks out a first connection, to check the
    /// login: one that could leave tenant isolation (see
    /// [`crate::LoginPrivilege`]) is refused with [`Error::PrivilegedLogin`]
    /// unless [`Config::danger_allow_privileged_login`] is set. The
    /// migrator, which owns the crate's objects, is given separately
    /// ([`Config::with_migrator_url`]).
    pub async fn connect(config: Config) -> Result<Self> {
        let mut manager_config = ManagerConfig::default();
        manager_config.recycling_method = match config.recycling {
            Recycling::Fast => RecyclingMethod::Fast,
            Recycling::Verified => RecyclingMethod::Verified,
        };
        let session = Arc::new(SessionSql::new(&config));
        let prepared_statements = config.prepared_statements;
        manager_config.custom_setup = Box::new(move |url| {
            async move {
                let mut conn = establish(url).await?;
                if !prepared_statements {
                    conn.set_prepared_statement_cache_size(CacheSize::Disabled);
                }
                conn.set_instrumentation(ConnectionEvents::new());
                Ok(conn)
            }
            .boxed()
        });
        let manager =
            AsyncDieselConnectionManager::new_with_config(&config.database_url, manager_config);
        config.validate()?;
        let connect_failures = ConnectFailures::default();
        let pool = Pool::builder()
            .max_size(config.pool_size)
            .connection_timeout(config.checkout_timeout)
            // A connection that cannot be opened fails the checkout with its
            // cause (Error::Connection); PoolTimeout then means a full pool.
            .retry_connection(false)
            .error_sink(Box::new(connect_failures.clone()))
            .test_on_check_out(config.recycling == Recycling::Verified)
            .build(manager)
            .await?;
        let store = Store {
            pool,
            connect_failures,
            guard_key: Arc::new(OnceCell::new()),
            config,
            session,
        };
        let mut conn = store.checkout().await?;
        if !store.config.allow_privileged_login {
            ensure_unprivileged(&mut conn).await?;
        }
        store.session.set_on_citus(has_citus(&mut conn).await?);
        drop(conn);
        Ok(store)
    }

    /// A pooled connection (see [`checkout`]).
    pub(crate) async fn checkout(&self) -> Result<Pooled> {
        checkout(&self.pool, &self.connect_failures).await
    }

    /// [`Config::from_url`] followed by [`Store::connect`].
    pub async fn connect_url(url: &str) -> Result<Self> {
        Self::connect(Config::from_url(url)?).await
    }

    /// The settings this store was built with.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// Opens a unit of work for one tenant, acting as [`Actor::System`].
    /// See [`TenantConn`].
    pub async fn tenant(&self, tenant: TenantId) -> Result<TenantConn> {
        self.tenant_as(tenant, Actor::System).await
    }

    /// Opens a unit of work for one tenant on behalf of `actor`, whom audited
    /// writes record.
    #[tracing::instrument(name = "loyalty.guard.open", skip_all, fields(tenant_id = %tenant))]
    pub async fn tenant_as(&self, tenant: TenantId, actor: Actor) -> Result<TenantConn> {
        let proof = self.guard_key().await?.proof(tenant);
        let conn = self.checkout().await?;
        TenantConn::begin(conn, tenant, actor, self.session.clone(), &proof).await
    }

    /// The guard key: from the configuration, or read once, through the
    /// migrator's URL when one is set, else through the store's own login.
    pub(crate) async fn guard_key(&self) -> Result<&GuardKey> {
        self.guard_key
            .get_or_try_init(|| async {
                if let Some(key) = &self.config.guard_key {
                    return Ok(key.clone());
                }
                let stored = match &self.config.migrator_url {
                    Some(url) => read_guard_key(&mut establish(url).await?).await,
                    None => read_guard_key(&mut *self.checkout().await?).await,
                };
                stored.map_err(|e| {
                    Error::Config(format!(
                        "cannot read the guard key from loyalty_secret.guard_key ({e}); give the \
                         store the migrator's URL (Config::with_migrator_url) or the key \
                         (Config::with_guard_key), and run migrate() first"
                    ))
                })
            })
            .await
    }

    /// What scopes send around their work (see [`SessionSql`]).
    pub(crate) fn session(&self) -> &SessionSql {
        &self.session
    }

    /// Pool occupancy right now.
    pub fn pool_status(&self) -> PoolStatus {
        let state = self.pool.state();
        PoolStatus {
            connections: state.connections,
            idle: state.idle_connections,
            max_size: self.config.pool_size,
        }
    }

    /// The proof a guard sends with `tenant` (see [`GuardKey`]), for tests
    /// and raw-SQL benchmarks that open a tenant context by hand.
    #[cfg(feature = "testing")]
    pub async fn tenant_proof(&self, tenant: TenantId) -> Result<String> {
        Ok(self.guard_key().await?.proof(tenant))
    }

    /// A pooled connection with no tenant context and no role switch: it runs
    /// as the login user. For test assertions about what the pool hands out.
    #[cfg(feature = "testing")]
    pub async fn raw_connection(&self) -> Result<Pooled> {
        self.checkout().await
    }
}

#[derive(diesel::QueryableByName)]
struct Extension {
    #[diesel(sql_type = diesel::sql_types::Bool)]
    installed: bool,
}

/// Whether the database has the citus extension (docs/citus.md).
async fn has_citus(conn: &mut AsyncPgConnection) -> Result<bool> {
    let found: Extension = diesel::sql_query(
        "SELECT EXISTS (SELECT 1 FROM pg_catalog.pg_extension WHERE extname = 'citus') AS installed",
    )
    .get_result(conn)
    .await?;
    Ok(found.installed)
}
