//! The SQL every scope sends around its work: the opening, which puts a
//! transaction in the crate's role with its timeouts, and the reset that
//! ends a guard whose caller ran SQL of its own. Everything the opening sets
//! is transaction-local, so nothing stays on the server connection (which
//! PgBouncer in transaction mode hands to other clients).

use std::time::Duration;

use diesel::connection::{Instrumentation, InstrumentationEvent};
use diesel_async::{AsyncConnection, AsyncPgConnection};

use crate::config::Config;

#[derive(Debug)]
pub(crate) struct SessionSql {
    /// Role, search path (`pg_temp` last, so a temporary table never shadows
    /// a crate table) and the configured timeouts, for the transaction.
    pub(crate) opening: String,
    /// Every setting back to the login's defaults, no temporary tables,
    /// advisory locks, listeners or open cursors. `DISCARD ALL` would also
    /// drop the prepared statements diesel caches, so it is spelt out.
    reset: &'static str,
}

const RESET: &str = "SET SESSION AUTHORIZATION DEFAULT; RESET ALL; DISCARD TEMP; UNLISTEN *; \
                     CLOSE ALL; SELECT pg_advisory_unlock_all()";

impl SessionSql {
    pub(crate) fn new(config: &Config) -> Self {
        // 0 turns a timeout off, whatever the login's default.
        let millis = |timeout: Option<Duration>| timeout.map_or(0, |t| t.as_millis());
        let opening = format!(
            "SELECT set_config('row_security', 'on', true), set_config('search_path', 'public, pg_temp', true), \
                    set_config('role', 'loyalty_app', true), \
                    set_config('statement_timeout', '{}', true), \
                    set_config('lock_timeout', '{}', true), \
                    set_config('idle_in_transaction_session_timeout', '{}', true)",
            millis(config.statement_timeout),
            millis(config.lock_timeout),
            millis(config.idle_in_transaction_timeout),
        );
        SessionSql {
            opening,
            reset: RESET,
        }
    }

    /// The reset, preceded by a check that the server still holds exactly
    /// the statements the client has cached on `conn`, none replaced. SQL of
    /// the caller's can `DEALLOCATE` a cached statement and `PREPARE` its
    /// own under the same name, which the next guard on the connection would
    /// run with its tenant's proof and data; or just `DEALLOCATE` it, and
    /// the next guard would fail. Either way the check fails, the reset with
    /// it, and the pool discards the connection. Statements made by SQL
    /// `PREPARE` are `from_sql`; the client's own are not, and it keeps
    /// every one it caches (the cache is unbounded) until the connection
    /// closes, so their number is the count [`CachedStatements`] keeps.
    pub(crate) fn reset_after_own_sql(&self, conn: &mut AsyncPgConnection) -> String {
        let cached = conn
            .instrumentation()
            .downcast_ref::<CachedStatements>()
            .map(|counter| counter.count);
        let Some(cached) = cached else {
            // A connection the pool did not set up: nothing to compare with.
            return format!("DEALLOCATE ALL; {}", self.reset);
        };
        format!(
            "DO $$ BEGIN \
               IF (SELECT pg_catalog.count(*) FROM pg_catalog.pg_prepared_statements \
                    WHERE NOT from_sql) OPERATOR(pg_catalog.<>) {cached} \
                  OR EXISTS (SELECT FROM pg_catalog.pg_prepared_statements WHERE from_sql) THEN \
                 RAISE EXCEPTION 'the guard''s own SQL changed the prepared statements'; \
               END IF; \
             END $$; {}",
            self.reset
        )
    }
}

/// Counts the statements diesel caches on a connection (one
/// `CacheQuery` event each), passing every event on to the instrumentation
/// the application set as diesel's default.
pub(crate) struct CachedStatements {
    count: usize,
    inner: Option<Box<dyn Instrumentation>>,
}

impl CachedStatements {
    pub(crate) fn new() -> Self {
        CachedStatements {
            count: 0,
            inner: diesel::connection::get_default_instrumentation(),
        }
    }
}

impl Instrumentation for CachedStatements {
    fn on_connection_event(&mut self, event: InstrumentationEvent<'_>) {
        if matches!(event, InstrumentationEvent::CacheQuery { .. }) {
            self.count += 1;
        }
        if let Some(inner) = &mut self.inner {
            inner.on_connection_event(event);
        }
    }
}
