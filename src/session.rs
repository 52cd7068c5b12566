//! The SQL every scope sends around its work: the opening, which puts a
//! transaction in the crate's role with its timeouts, and the reset that
//! ends a guard whose caller ran SQL of its own. Everything the opening sets
//! is transaction-local, so nothing stays on the server connection (which
//! PgBouncer in transaction mode hands to other clients).

use std::time::Duration;

use diesel::connection::CacheSize;
use diesel_async::{AsyncConnection, AsyncPgConnection};

use crate::config::Config;

#[derive(Debug)]
pub(crate) struct SessionSql {
    /// Role, search path (`pg_temp` last, so a temporary table never shadows
    /// a crate table) and the configured timeouts, for the transaction.
    pub(crate) opening: String,
    /// Every setting back to the login's defaults, no temporary tables,
    /// advisory locks, listeners, open cursors or prepared statements. The
    /// last matter most: SQL of the caller's can `DEALLOCATE` a statement
    /// the client has cached and `PREPARE` its own under the same name,
    /// which the next guard on the connection would then run with its own
    /// tenant's proof and data. The client's cache goes with them (see
    /// [`SessionSql::forget_statements`]).
    pub(crate) reset: &'static str,
    prepared_statements: bool,
}

const RESET: &str = "SET SESSION AUTHORIZATION DEFAULT; RESET ALL; DISCARD TEMP; UNLISTEN *; \
                     CLOSE ALL; DEALLOCATE ALL; SELECT pg_advisory_unlock_all()";

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
            prepared_statements: config.prepared_statements,
        }
    }

    /// Empties the connection's statement cache, to go with the reset's
    /// `DEALLOCATE ALL`: statements are prepared afresh by the next guard.
    pub(crate) fn forget_statements(&self, conn: &mut AsyncPgConnection) {
        conn.set_prepared_statement_cache_size(CacheSize::Disabled);
        if self.prepared_statements {
            conn.set_prepared_statement_cache_size(CacheSize::Unbounded);
        }
    }
}
