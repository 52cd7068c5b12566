//! Checking a connection out of the pool, with the cause kept when none can
//! be opened. bb8 opens connections in the background and reports their
//! failures only to an error sink, so a checkout would otherwise end in a
//! bare timeout whether the pool was full or the server refused every
//! connection.

use std::sync::{Arc, Mutex};
use std::time::Instant;

use bb8::{ErrorSink, RunError};
use diesel::ConnectionError;
use diesel_async::AsyncPgConnection;
use diesel_async::pooled_connection::{AsyncDieselConnectionManager, PoolError};
use tokio::sync::Notify;

use crate::error::{Error, Result};

pub(crate) type PgPool = diesel_async::pooled_connection::bb8::Pool<AsyncPgConnection>;
pub(crate) type Pooled =
    bb8::PooledConnection<'static, AsyncDieselConnectionManager<AsyncPgConnection>>;

/// The pool's latest failure to open a connection, and a wake-up for
/// checkouts waiting on it.
#[derive(Debug, Clone, Default)]
pub(crate) struct ConnectFailures(Arc<Failures>);

#[derive(Debug, Default)]
struct Failures {
    latest: Mutex<Option<(Instant, String)>>,
    arrived: Notify,
}

impl ErrorSink<PoolError> for ConnectFailures {
    fn sink(&self, error: PoolError) {
        tracing::warn!(%error, "the pool could not open a connection");
        *self.0.latest.lock().unwrap_or_else(|e| e.into_inner()) =
            Some((Instant::now(), error.to_string()));
        self.0.arrived.notify_waiters();
    }

    fn boxed_clone(&self) -> Box<dyn ErrorSink<PoolError>> {
        Box::new(self.clone())
    }
}

impl ConnectFailures {
    fn since(&self, started: Instant) -> Option<Error> {
        let latest = self.0.latest.lock().unwrap_or_else(|e| e.into_inner());
        latest
            .as_ref()
            .filter(|(at, _)| *at >= started)
            .map(|(_, cause)| Error::Connection(ConnectionError::BadConnection(cause.clone())))
    }
}

/// A pooled connection. A checkout that cannot get one fails with
/// [`Error::Connection`] and its cause when connections could not be opened
/// (at once, when the pool has none to wait for), and with
/// [`Error::PoolTimeout`] only when every connection stayed busy.
pub(crate) async fn checkout(pool: &PgPool, failures: &ConnectFailures) -> Result<Pooled> {
    let started = Instant::now();
    let mut getting = std::pin::pin!(pool.get_owned());
    loop {
        tokio::select! {
            got = &mut getting => {
                return match got {
                    Ok(conn) => Ok(conn),
                    Err(RunError::TimedOut) => Err(failures.since(started).unwrap_or(Error::PoolTimeout)),
                    Err(RunError::User(e)) => Err(e.into()),
                };
            }
            () = failures.0.arrived.notified() => {
                if pool.state().connections == 0
                    && let Some(err) = failures.since(started)
                {
                    return Err(err);
                }
            }
        }
    }
}
