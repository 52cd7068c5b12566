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
use diesel_async::{AsyncConnection, AsyncPgConnection, SimpleAsyncConnection};
use futures_util::FutureExt;
use tokio::sync::OnceCell;

use crate::config::{Config, Recycling};
use crate::error::{Error, Result};
use crate::guard_key::GuardKey;
use crate::ids::TenantId;
use crate::login::ensure_unprivileged;
use crate::tenant::{Actor, TenantConn};

pub(crate) type PgPool = Pool<AsyncPgConnection>;

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
    config: Config,
    session_reset: Arc<str>,
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

/// What a session looks like when a guard ends: every setting back to the
/// login's defaults (and the configured statement timeout), no temporary
/// tables, advisory locks, listeners or open cursors. `DISCARD ALL` would
/// also drop the prepared statements diesel caches, so it is spelt out.
fn session_reset(config: &Config) -> String {
    // RESET ALL puts statement_timeout back to the login's default, so a
    // configured one follows, in the statement that unlocks.
    let timeout = config.statement_timeout.map_or(String::new(), |timeout| {
        format!(
            ", set_config('statement_timeout', '{}', false)",
            timeout.as_millis()
        )
    });
    format!(
        "SET SESSION AUTHORIZATION DEFAULT; RESET ALL; DISCARD TEMP; UNLISTEN *; CLOSE ALL; \
         SELECT pg_advisory_unlock_all(){timeout}"
    )
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
        let session_reset: Arc<str> = session_reset(&config).into();
        let prepared_statements = config.prepared_statements;
        // A new connection starts in the state every guard leaves behind.
        let setup = session_reset.clone();
        manager_config.custom_setup = Box::new(move |url| {
            let setup = setup.clone();
            async move {
                let mut conn = AsyncPgConnection::establish(url).await?;
                if !prepared_statements {
                    conn.set_prepared_statement_cache_size(CacheSize::Disabled);
                }
                conn.batch_execute(&setup)
                    .await
                    .map_err(diesel::ConnectionError::CouldntSetupConfiguration)?;
                Ok(conn)
            }
            .boxed()
        });
        let manager =
            AsyncDieselConnectionManager::new_with_config(&config.database_url, manager_config);
        let pool = Pool::builder()
            .max_size(config.pool_size)
            .connection_timeout(config.checkout_timeout)
            .test_on_check_out(config.recycling == Recycling::Verified)
            .build(manager)
            .await?;
        if !config.allow_privileged_login {
            ensure_unprivileged(&mut *pool.get().await?).await?;
        }
        Ok(Store {
            pool,
            guard_key: Arc::new(OnceCell::new()),
            config,
            session_reset,
        })
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
    pub async fn tenant_as(&self, tenant: TenantId, actor: Actor) -> Result<TenantConn> {
        let proof = self.guard_key().await?.proof(tenant);
        let conn = self.pool.get_owned().await?;
        TenantConn::begin(conn, tenant, actor, self.session_reset.clone(), &proof).await
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
                    Some(url) => {
                        read_guard_key(&mut AsyncPgConnection::establish(url).await?).await
                    }
                    None => read_guard_key(&mut *self.pool.get().await?).await,
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

    /// The pool, for crate modules that need a plain login-role connection.
    pub(crate) fn pool(&self) -> &PgPool {
        &self.pool
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
    pub async fn raw_connection(
        &self,
    ) -> Result<bb8::PooledConnection<'_, AsyncDieselConnectionManager<AsyncPgConnection>>> {
        Ok(self.pool.get().await?)
    }
}
