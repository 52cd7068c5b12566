//! Store configuration, read from a database URL.

use std::time::Duration;

use url::Url;

use crate::error::{Error, Result};
use crate::guard_key::GuardKey;

/// How the pool checks a connection when it is checked out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Recycling {
    /// No check. A connection that died while idle fails its first statement,
    /// which then surfaces as an error to retry.
    Fast,
    /// `SELECT 1` before every checkout: one extra round trip per unit of work.
    Verified,
}

/// Pool and session settings.
///
/// Built from a PostgreSQL URL whose query string may carry the settings
/// below next to the usual libpq ones (which are passed through):
///
/// | parameter | default | meaning |
/// |---|---|---|
/// | `pool_size` | 10 | maximum pooled connections |
/// | `connect_timeout` | 5 | seconds to open a connection (libpq's own) |
/// | `checkout_timeout_ms` | 5000 | wait for a free pooled connection |
/// | `statement_timeout_ms` | 30000 | per statement; `0` disables it |
/// | `lock_timeout_ms` | 5000 | per lock wait, `COMMIT`'s included; `0` disables it |
/// | `idle_in_transaction_timeout_ms` | 60000 | a guard idle this long loses its session; `0` disables it |
/// | `prepared_statements` | `true` | `false` behind PgBouncer in transaction mode |
/// | `recycling` | `fast` | `fast` or `verified` (see [`Recycling`]) |
///
/// ```
/// # use loyalty_store::Config;
/// let config = Config::from_url(
///     "postgres://svc@db/loyalty?pool_size=32&statement_timeout_ms=2000",
/// )?;
/// assert_eq!(config.pool_size, 32);
/// # Ok::<(), loyalty_store::Error>(())
/// ```
#[derive(Clone)]
#[non_exhaustive]
pub struct Config {
    /// The URL handed to the driver, with this crate's own parameters removed.
    pub database_url: String,
    pub pool_size: u32,
    pub checkout_timeout: Duration,
    pub statement_timeout: Option<Duration>,
    /// How long a statement, `COMMIT`'s deferred checks included, waits for
    /// a lock before failing with [`Error::Timeout`].
    pub lock_timeout: Option<Duration>,
    /// How long a guard may sit idle inside its transaction before the
    /// server ends the session (and with it the guard's locks).
    pub idle_in_transaction_timeout: Option<Duration>,
    pub prepared_statements: bool,
    pub recycling: Recycling,
    /// Where [`crate::Store::migrate`] connects, and where the guard key is
    /// read: a role that owns the crate's objects. `None`: the store's own
    /// login.
    pub migrator_url: Option<String>,
    /// The guard key (see [`GuardKey`]), for a service that may not read it
    /// itself. `None`: read through `migrator_url`, or the store's login, at
    /// the first guard.
    pub guard_key: Option<GuardKey>,
    /// Whether [`crate::Store::connect`] accepts a login that can leave
    /// tenant isolation. See [`Config::danger_allow_privileged_login`].
    pub allow_privileged_login: bool,
}

/// Passwords in the URLs never reach logs through `Debug`.
impl std::fmt::Debug for Config {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Config")
            .field("database_url", &redacted(&self.database_url))
            .field("pool_size", &self.pool_size)
            .field("checkout_timeout", &self.checkout_timeout)
            .field("statement_timeout", &self.statement_timeout)
            .field("lock_timeout", &self.lock_timeout)
            .field(
                "idle_in_transaction_timeout",
                &self.idle_in_transaction_timeout,
            )
            .field("prepared_statements", &self.prepared_statements)
            .field("recycling", &self.recycling)
            .field("migrator_url", &self.migrator_url.as_deref().map(redacted))
            .field("guard_key", &self.guard_key)
            .field("allow_privileged_login", &self.allow_privileged_login)
            .finish()
    }
}

fn redacted(url: &str) -> String {
    match Url::parse(url) {
        Ok(mut parsed) if parsed.password().is_some() => {
            // Only fails for URLs that cannot have a password at all.
            let _ = parsed.set_password(Some("redacted"));
            parsed.into()
        }
        Ok(_) => url.to_owned(),
        Err(_) => "(unparsable URL)".to_owned(),
    }
}

const DEFAULT_CONNECT_TIMEOUT_SECS: &str = "5";

impl Config {
    /// Parses a `postgres://` or `postgresql://` URL.
    pub fn from_url(url: &str) -> Result<Self> {
        let mut parsed = Url::parse(url).map_err(|e| Error::Config(format!("bad URL: {e}")))?;
        if !matches!(parsed.scheme(), "postgres" | "postgresql") {
            return Err(Error::Config(format!(
                "URL scheme must be postgres or postgresql, not {}",
                parsed.scheme()
            )));
        }
        let mut config = Config {
            database_url: String::new(),
            pool_size: 10,
            checkout_timeout: Duration::from_millis(5000),
            statement_timeout: Some(Duration::from_millis(30_000)),
            lock_timeout: Some(Duration::from_millis(5_000)),
            idle_in_transaction_timeout: Some(Duration::from_millis(60_000)),
            prepared_statements: true,
            recycling: Recycling::Fast,
            migrator_url: None,
            guard_key: None,
            allow_privileged_login: false,
        };
        // libpq's own parameters pass through as written: decoding and
        // re-encoding them would turn `%20` into `+`, which the driver does
        // not read as a space.
        let mut passthrough: Vec<&str> = Vec::new();
        let mut has_connect_timeout = false;
        let query = parsed.query().unwrap_or_default().to_owned();
        for raw in query.split('&').filter(|pair| !pair.is_empty()) {
            let Some((key, value)) = url::form_urlencoded::parse(raw.as_bytes()).next() else {
                continue;
            };
            match key.as_ref() {
                "pool_size" => config.pool_size = parse_number(&key, &value)?,
                "checkout_timeout_ms" => {
                    config.checkout_timeout = Duration::from_millis(parse_number(&key, &value)?)
                }
                "statement_timeout_ms" => config.statement_timeout = parse_timeout(&key, &value)?,
                "lock_timeout_ms" => config.lock_timeout = parse_timeout(&key, &value)?,
                "idle_in_transaction_timeout_ms" => {
                    config.idle_in_transaction_timeout = parse_timeout(&key, &value)?
                }
                "prepared_statements" => config.prepared_statements = parse_bool(&key, &value)?,
                "recycling" => {
                    config.recycling = match value.as_ref() {
                        "fast" => Recycling::Fast,
                        "verified" => Recycling::Verified,
                        other => {
                            return Err(Error::Config(format!(
                                "recycling must be fast or verified, not {other}"
                            )));
                        }
                    }
                }
                _ => {
                    has_connect_timeout |= key == "connect_timeout";
                    passthrough.push(raw);
                }
            }
        }
        config.validate()?;
        let default_connect_timeout = format!("connect_timeout={DEFAULT_CONNECT_TIMEOUT_SECS}");
        if !has_connect_timeout {
            passthrough.push(&default_connect_timeout);
        }
        parsed.set_query(Some(&passthrough.join("&")));
        config.database_url = parsed.into();
        Ok(config)
    }

    /// [`Config::from_url`] on `DATABASE_URL` (the service login), with
    /// `MIGRATOR_DATABASE_URL`, when set, as the migrator's URL
    /// ([`Config::with_migrator_url`]).
    pub fn from_env() -> Result<Self> {
        let url = std::env::var("DATABASE_URL")
            .map_err(|_| Error::Config("DATABASE_URL is not set".into()))?;
        let config = Config::from_url(&url)?;
        Ok(match std::env::var("MIGRATOR_DATABASE_URL") {
            Ok(migrator) if !migrator.is_empty() => config.with_migrator_url(migrator),
            _ => config,
        })
    }

    /// Refuses settings the pool cannot run with; [`crate::Store::connect`]
    /// calls it, since the fields are public.
    pub fn validate(&self) -> Result<()> {
        if self.pool_size == 0 {
            return Err(Error::Config("pool_size must be at least 1".into()));
        }
        if self.checkout_timeout.is_zero() {
            return Err(Error::Config(
                "checkout_timeout_ms must be at least 1".into(),
            ));
        }
        Ok(())
    }

    /// Sets the maximum number of pooled connections.
    pub fn with_pool_size(mut self, pool_size: u32) -> Self {
        self.pool_size = pool_size.max(1);
        self
    }

    /// Sets how long a checkout waits for a free connection.
    pub fn with_checkout_timeout(mut self, timeout: Duration) -> Self {
        self.checkout_timeout = timeout;
        self
    }

    /// Sets, or with `None` removes, the per-statement timeout.
    pub fn with_statement_timeout(mut self, timeout: Option<Duration>) -> Self {
        self.statement_timeout = timeout;
        self
    }

    /// Sets, or with `None` removes, the lock timeout.
    pub fn with_lock_timeout(mut self, timeout: Option<Duration>) -> Self {
        self.lock_timeout = timeout;
        self
    }

    /// Sets, or with `None` removes, the idle-in-transaction timeout.
    pub fn with_idle_in_transaction_timeout(mut self, timeout: Option<Duration>) -> Self {
        self.idle_in_transaction_timeout = timeout;
        self
    }

    /// Turns diesel's prepared-statement cache on or off. Turn it off behind
    /// PgBouncer in transaction-pooling mode, where a server connection's
    /// prepared statements do not follow the client.
    pub fn with_prepared_statements(mut self, enabled: bool) -> Self {
        self.prepared_statements = enabled;
        self
    }

    /// Chooses the checkout check.
    pub fn with_recycling(mut self, recycling: Recycling) -> Self {
        self.recycling = recycling;
        self
    }

    /// Sets the URL [`crate::Store::migrate`] and the guard key's reader use.
    pub fn with_migrator_url(mut self, url: impl Into<String>) -> Self {
        self.migrator_url = Some(url.into());
        self
    }

    /// Lets [`crate::Store::connect`] accept a login that could leave tenant
    /// isolation (a superuser, a table owner, ...), which it otherwise
    /// refuses with [`Error::PrivilegedLogin`]. With such a login, SQL sent
    /// through [`crate::TenantConn::conn`] can `RESET ROLE` and reach every
    /// tenant: the crate's isolation then covers its own repository methods
    /// only. For tools and one-off scripts, never for a service.
    pub fn danger_allow_privileged_login(mut self) -> Self {
        self.allow_privileged_login = true;
        self
    }

    /// Gives the guard key, so the store never reads it from the database.
    pub fn with_guard_key(mut self, key: GuardKey) -> Self {
        self.guard_key = Some(key);
        self
    }
}

fn parse_number<T: std::str::FromStr>(key: &str, value: &str) -> Result<T> {
    value.parse().map_err(|_| {
        Error::Config(format!(
            "{key} must be a non-negative integer, not {value:?}"
        ))
    })
}

/// A timeout in milliseconds; `0` turns it off.
fn parse_timeout(key: &str, value: &str) -> Result<Option<Duration>> {
    let ms: u64 = parse_number(key, value)?;
    Ok((ms > 0).then(|| Duration::from_millis(ms)))
}

fn parse_bool(key: &str, value: &str) -> Result<bool> {
    match value {
        "true" | "on" | "1" => Ok(true),
        "false" | "off" | "0" => Ok(false),
        _ => Err(Error::Config(format!(
            "{key} must be true or false, not {value:?}"
        ))),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn debug_never_shows_a_password() {
        let config = Config::from_url("postgres://svc:s3cret@db/loyalty")
            .unwrap()
            .with_migrator_url("postgres://owner:0wner-secret@db/loyalty");
        let shown = format!("{config:?}");
        assert!(
            !shown.contains("s3cret") && !shown.contains("0wner-secret"),
            "{shown}"
        );
        assert!(shown.contains("svc:redacted@db"), "{shown}");
    }

    use super::*;

    #[test]
    fn own_parameters_are_read_and_stripped() {
        let config = Config::from_url(
            "postgres://u@h:5433/db?sslmode=disable&pool_size=3&checkout_timeout_ms=250\
             &statement_timeout_ms=0&prepared_statements=false&recycling=verified",
        )
        .unwrap();
        assert_eq!(config.pool_size, 3);
        assert_eq!(config.checkout_timeout, Duration::from_millis(250));
        assert_eq!(config.statement_timeout, None);
        assert!(!config.prepared_statements);
        assert_eq!(config.recycling, Recycling::Verified);
        assert_eq!(
            config.database_url,
            "postgres://u@h:5433/db?sslmode=disable&connect_timeout=5"
        );
    }

    #[test]
    fn defaults_apply_and_libpq_connect_timeout_is_kept() {
        let config = Config::from_url("postgresql://h/db?connect_timeout=9").unwrap();
        assert_eq!(config.pool_size, 10);
        assert_eq!(config.statement_timeout, Some(Duration::from_secs(30)));
        assert_eq!(config.recycling, Recycling::Fast);
        assert_eq!(config.database_url, "postgresql://h/db?connect_timeout=9");
    }

    #[test]
    fn passthrough_parameters_keep_their_encoding() {
        let config = Config::from_url(
            "postgres://h/db?application_name=my%20app&pool_size=2&options=-c%20x%3Dy",
        )
        .unwrap();
        assert_eq!(
            config.database_url,
            "postgres://h/db?application_name=my%20app&options=-c%20x%3Dy&connect_timeout=5"
        );
    }

    #[test]
    fn timeouts_are_read_and_zero_turns_them_off() {
        let config = Config::from_url(
            "postgres://h/db?lock_timeout_ms=250&idle_in_transaction_timeout_ms=0",
        )
        .unwrap();
        assert_eq!(config.lock_timeout, Some(Duration::from_millis(250)));
        assert_eq!(config.idle_in_transaction_timeout, None);
    }

    #[test]
    fn bad_values_are_typed_errors() {
        for url in [
            "mysql://h/db",
            "postgres://h/db?pool_size=0",
            "postgres://h/db?pool_size=many",
            "postgres://h/db?checkout_timeout_ms=0",
            "postgres://h/db?lock_timeout_ms=-1",
            "postgres://h/db?recycling=sometimes",
            "postgres://h/db?prepared_statements=maybe",
            "not a url",
        ] {
            assert!(
                matches!(Config::from_url(url), Err(Error::Config(_))),
                "{url}"
            );
        }
    }
}
