//! The SQL every scope sends around its work: the opening, which puts a
//! transaction in the crate's role with its timeouts, and the reset that
//! ends a guard whose caller ran SQL of its own. Everything the opening sets
//! is transaction-local, so nothing stays on the server connection (which
//! PgBouncer in transaction mode hands to other clients).

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use diesel::connection::{Instrumentation, InstrumentationEvent};
use diesel_async::{AsyncConnection, AsyncPgConnection};

use crate::config::Config;
use crate::ids::TenantId;

#[derive(Debug)]
pub(crate) struct SessionSql {
    /// Role, search path (`pg_temp` last, so a temporary table never shadows
    /// a crate table) and the configured timeouts, for the transaction.
    pub(crate) opening: String,
    /// Every setting back to the login's defaults, no temporary tables,
    /// advisory locks, listeners or open cursors. `DISCARD ALL` would also
    /// drop the prepared statements diesel caches, so it is spelt out.
    reset: &'static str,
    /// Whether the client caches prepared statements, which then need the
    /// check in [`SessionSql::reset_after_own_sql`]. Without the cache every
    /// statement is prepared afresh under a new name, so none can be
    /// replaced.
    statements_cached: bool,
    /// Whether the database has Citus, found when the store connects. There
    /// a refusal raised inside `COMMIT` on a worker reaches the client as a
    /// bare `XX000` (docs/citus.md), so the commit-time checks run just
    /// before `COMMIT` instead, on the tenant's worker.
    on_citus: AtomicBool,
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
            statements_cached: config.prepared_statements,
            on_citus: AtomicBool::new(false),
        }
    }

    pub(crate) fn set_on_citus(&self, on_citus: bool) {
        self.on_citus.store(on_citus, Ordering::Relaxed);
    }

    pub(crate) fn on_citus(&self) -> bool {
        self.on_citus.load(Ordering::Relaxed)
    }

    /// What a guard of `tenant` sends just before `COMMIT`, in the same
    /// round trip: the statements check after SQL of the caller's (`raw`),
    /// and on Citus the commit-time checks (`loyalty.settle_now`, delegated
    /// to the tenant's worker, so a refusal keeps its type). A failure of
    /// either keeps the transaction from committing.
    pub(crate) fn commit_probe(
        &self,
        tenant: TenantId,
        raw: bool,
        conn: &mut AsyncPgConnection,
    ) -> String {
        let settle = self
            .on_citus()
            .then(|| format!("SELECT loyalty.settle_now('{tenant}')"));
        let check = raw.then(|| self.statements_check(conn)).flatten();
        match (settle, check) {
            (Some(settle), Some(check)) => format!("{settle}; {check}"),
            (Some(one), None) | (None, Some(one)) => one,
            (None, None) => "SELECT 1".to_owned(),
        }
    }

    /// The reset itself.
    pub(crate) fn reset(&self) -> &str {
        self.reset
    }

    /// A statement that fails unless the server still holds exactly the
    /// prepared statements the client has cached on `conn`, none replaced
    /// (`loyalty.statements_intact`), to run inside the guard's transaction
    /// as `loyalty_app`. SQL of the caller's can `DEALLOCATE` a cached
    /// statement and `PREPARE` its own under the same name, which the next
    /// guard on the connection would run with its tenant's proof and data;
    /// or just `DEALLOCATE` it, and the next guard would fail. Statements
    /// made by SQL `PREPARE` are `from_sql`; the client's own are not, and
    /// it keeps every one it caches (the cache is unbounded) until the
    /// connection closes, so their number is the count [`ConnectionEvents`]
    /// keeps. `None` when the cache is off: every statement is then
    /// prepared afresh under a new name, so none can be replaced.
    pub(crate) fn statements_check(&self, conn: &mut AsyncPgConnection) -> Option<String> {
        if !self.statements_cached {
            return None;
        }
        // A connection the pool did not set up has no count: -1 never matches.
        let cached = ConnectionEvents::of(conn).map_or(-1, |events| events.cached as i64);
        Some(format!("SELECT loyalty.statements_intact({cached})"))
    }

    /// The reset after a guard's transaction rolled back, preceded by the
    /// check, which then runs as `loyalty_app` in a transaction of its own.
    pub(crate) fn reset_after_rollback(&self, conn: &mut AsyncPgConnection) -> String {
        match self.statements_check(conn) {
            Some(check) => format!(
                "SELECT pg_catalog.set_config('role', 'loyalty_app', true); {check}; {}",
                self.reset
            ),
            None => self.reset.to_owned(),
        }
    }
}

/// What a pooled connection has done, from diesel's instrumentation events:
/// the statements it cached (one `CacheQuery` each), and the statements
/// started and finished, which differ when a call's future was dropped
/// before its statement came back. Every event is passed on to the
/// instrumentation the application set as diesel's default.
pub(crate) struct ConnectionEvents {
    cached: usize,
    started: u64,
    finished: u64,
    inner: Option<Box<dyn Instrumentation>>,
}

impl ConnectionEvents {
    pub(crate) fn new() -> Self {
        ConnectionEvents {
            cached: 0,
            started: 0,
            finished: 0,
            inner: diesel::connection::get_default_instrumentation(),
        }
    }

    /// The events of a connection the pool set up; `None` for any other.
    fn of(conn: &mut AsyncPgConnection) -> Option<&ConnectionEvents> {
        conn.instrumentation().downcast_ref::<ConnectionEvents>()
    }

    /// Whether a statement was sent whose answer nobody waited for.
    pub(crate) fn abandoned(conn: &mut AsyncPgConnection) -> bool {
        Self::of(conn).is_some_and(|events| events.started != events.finished)
    }
}

impl Instrumentation for ConnectionEvents {
    fn on_connection_event(&mut self, event: InstrumentationEvent<'_>) {
        match event {
            InstrumentationEvent::CacheQuery { .. } => self.cached += 1,
            InstrumentationEvent::StartQuery { .. } => self.started += 1,
            InstrumentationEvent::FinishQuery { .. } => self.finished += 1,
            _ => {}
        }
        if let Some(inner) = &mut self.inner {
            inner.on_connection_event(event);
        }
    }
}
