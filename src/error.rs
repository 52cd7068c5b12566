//! The crate's one error type, and the single place where database errors are
//! turned into it.

use diesel::result::{DatabaseErrorInformation, DatabaseErrorKind, Error as DieselError};
use diesel_async::pooled_connection::PoolError;

use crate::invalid::InvalidValue;
use crate::privilege::LoginPrivilege;
use crate::refusal::Refusal;
use crate::status::VoucherStatus;

/// Everything a call into this crate can fail with.
///
/// Database failures are classified once, in [`Error::from`], so callers match
/// on variants instead of parsing messages:
///
/// ```
/// # use loyalty_store::Error;
/// fn should_retry(err: &Error) -> bool {
///     err.is_retryable()
/// }
/// ```
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A read found no row: it does not exist, or row-level security hides
    /// it from this tenant. See also [`Error::is_not_found`].
    #[error("not found")]
    NotFound,
    /// A unique constraint (SQLSTATE 23505) rejected the write.
    #[error("conflict on {constraint}")]
    Conflict { constraint: String },
    /// A foreign key (SQLSTATE 23503) points at a row this tenant does not have.
    #[error("missing referenced row ({constraint})")]
    MissingReference { constraint: String },
    /// A CHECK constraint (SQLSTATE 23514) rejected the row.
    #[error("check constraint {constraint} violated")]
    CheckViolation { constraint: String },
    /// Input was refused before anything was sent to the database.
    #[error("invalid {field}: {reason}")]
    InvalidInput { field: &'static str, reason: String },
    /// SQLSTATE 42501: a missing grant, or a row-level security policy refused
    /// a write (for example a row carrying another tenant's id).
    #[error("permission denied: {message}")]
    PermissionDenied { message: String },
    /// The database refused the work for a domain reason: see [`Refusal`].
    /// Nothing of the refused statement was written.
    #[error("refused: {0}")]
    Refused(#[from] Refusal),
    /// A voucher code was not in the status the change needs, for example
    /// marking a code issued that is not reserved.
    #[error("voucher code is {status}, not {required}")]
    VoucherCodeStatus {
        status: VoucherStatus,
        required: VoucherStatus,
    },
    /// A statement failed earlier in this guard's transaction, so PostgreSQL
    /// has already discarded its work; the guard rolled back instead of
    /// reporting a commit that did not happen.
    #[error("transaction aborted by an earlier error; nothing was committed")]
    TransactionAborted,
    /// A call on the guard was dropped before its statement came back (for
    /// example under `tokio::time::timeout`). The statement was cancelled
    /// and the guard rolled back: `commit` never keeps half-observed work.
    #[error("a call on this guard was abandoned before it finished; nothing was committed")]
    CallAbandoned,
    /// Serialization failure (40001) or deadlock (40P01): run the unit of work again.
    #[error("transient conflict, retry: {message}")]
    Retryable { message: String },
    /// A statement ran past the statement timeout, or waited for a lock
    /// past the lock timeout (see [`crate::Config`]). The guard's work is
    /// lost; a lock timeout is worth retrying.
    #[error("{kind} timeout: {message}")]
    Timeout { kind: TimeoutKind, message: String },
    /// The connection broke before the work finished (the server went
    /// away, the network failed, the session was terminated). Nothing of the
    /// unit of work was kept; run it again.
    #[error("connection lost: {message}")]
    ConnectionLost { message: String },
    /// The connection broke while `COMMIT` was on its way: the work may or
    /// may not have been kept. Check before running it again, for example
    /// by finding the issuance by its idempotency key, or run it again only
    /// if it is idempotent (see [`crate::Store::retrying`]).
    #[error("the commit's outcome is unknown: {message}")]
    CommitOutcomeUnknown { message: String },
    /// Every pooled connection stayed busy for the whole checkout timeout.
    #[error("timed out waiting for a pooled connection")]
    PoolTimeout,
    /// A new connection could not be opened: the server is unreachable, the
    /// login was refused, or the database does not exist. The cause is kept.
    #[error("connection failed: {0}")]
    Connection(#[from] diesel::ConnectionError),
    /// The store's login could leave tenant isolation: it is a superuser,
    /// has `BYPASSRLS`, can become an owner of the crate's objects, and so
    /// on (see [`LoginPrivilege`]). Connect as a service login instead
    /// (`docs/security.md`), or opt out with
    /// [`crate::Config::danger_allow_privileged_login`].
    #[error(
        "login {login} can leave tenant isolation ({}); connect as a service login that owns \
         nothing and is a member of loyalty_app only",
        privileges.iter().map(ToString::to_string).collect::<Vec<_>>().join("; ")
    )]
    PrivilegedLogin {
        login: String,
        privileges: Vec<LoginPrivilege>,
    },
    /// The configuration URL or a setting is unusable.
    #[error("invalid configuration: {0}")]
    Config(String),
    /// Running the embedded migrations failed.
    #[error("migration failed: {0}")]
    Migration(String),
    /// Any other database error, kept whole for logging.
    #[error(transparent)]
    Database(DieselError),
}

/// Which timeout [`Error::Timeout`] hit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum TimeoutKind {
    Statement,
    Lock,
}

impl std::fmt::Display for TimeoutKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            TimeoutKind::Statement => "statement",
            TimeoutKind::Lock => "lock",
        })
    }
}

/// Shorthand used throughout the crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// True when running the same unit of work again, in a new guard, may
    /// succeed and cannot do it twice. [`Error::CommitOutcomeUnknown`] is
    /// not: the work may have been kept.
    pub fn is_retryable(&self) -> bool {
        matches!(
            self,
            Error::Retryable { .. }
                | Error::PoolTimeout
                | Error::ConnectionLost { .. }
                | Error::Timeout {
                    kind: TimeoutKind::Lock,
                    ..
                }
        )
    }

    /// True when a row the work needed does not exist for this tenant: a
    /// plain read found nothing, or the SQL refused for a missing row.
    pub fn is_not_found(&self) -> bool {
        match self {
            Error::NotFound => true,
            Error::Refused(refusal) => refusal.is_not_found(),
            _ => false,
        }
    }

    pub(crate) fn invalid(field: &'static str, reason: impl Into<String>) -> Self {
        Error::InvalidInput {
            field,
            reason: reason.into(),
        }
    }
}

/// The crate's SQL functions raise refusals with the refusal as JSON in the
/// error's DETAIL (see [`Refusal`]). diesel-async does not expose SQLSTATE
/// `LY000`, so the DETAIL alone identifies one.
fn refusal(info: &(dyn DatabaseErrorInformation + Send + Sync)) -> Option<Refusal> {
    Refusal::from_json(info.details()?)
}

/// The violated constraint's name. Citus forwards a shard's error without
/// the constraint field, and names the shard's copy (`..._102016`) in the
/// message; the name is then read from the message, without the suffix.
fn constraint_of(info: &(dyn DatabaseErrorInformation + Send + Sync)) -> String {
    match info.constraint_name() {
        Some(name) => name.to_owned(),
        None => constraint_in_message(info.message()).unwrap_or_else(|| "unknown".to_owned()),
    }
}

fn constraint_in_message(message: &str) -> Option<String> {
    let (_, quoted) = message.split_once("constraint \"")?;
    let (name, _) = quoted.split_once('"')?;
    let unsharded = match name.rsplit_once('_') {
        Some((base, suffix))
            if !suffix.is_empty() && suffix.bytes().all(|b| b.is_ascii_digit()) =>
        {
            base
        }
        _ => name,
    };
    Some(unsharded.to_owned())
}

// diesel-async 0.9 keeps SQLSTATE to itself for the codes it does not map to a
// `DatabaseErrorKind` (42501, 40P01 and 57014 among them). For those,
// PostgreSQL's message prefixes are the only signal left; they are matched
// here and nowhere else.
fn is_permission_denied(message: &str) -> bool {
    message.starts_with("permission denied")
        || message.starts_with("must be owner of")
        || message.starts_with("new row violates row-level security policy")
}

fn timeout_kind(message: &str) -> Option<TimeoutKind> {
    if message.starts_with("canceling statement due to statement timeout") {
        Some(TimeoutKind::Statement)
    } else if message.starts_with("canceling statement due to lock timeout") {
        Some(TimeoutKind::Lock)
    } else {
        None
    }
}

/// Whether a failed statement's error means the connection itself is gone:
/// closed, unable to send, terminated by the server, or an I/O failure that
/// diesel-async reports as something other than a database error.
pub(crate) fn connection_lost(err: &DieselError) -> bool {
    match err {
        DieselError::DatabaseError(
            DatabaseErrorKind::ClosedConnection | DatabaseErrorKind::UnableToSendCommand,
            _,
        ) => true,
        DieselError::DatabaseError(_, info) => {
            let message = info.message();
            message.starts_with("terminating connection")
                || message.starts_with("connection closed")
                || message.starts_with("server closed the connection")
        }
        DieselError::NotFound
        | DieselError::DeserializationError(_)
        | DieselError::SerializationError(_)
        | DieselError::QueryBuilderError(_)
        | DieselError::InvalidCString(_)
        | DieselError::RollbackErrorOnCommit { .. }
        | DieselError::RollbackTransaction
        | DieselError::AlreadyInTransaction
        | DieselError::NotInTransaction
        | DieselError::BrokenTransactionManager => false,
        _ => true,
    }
}

impl From<DieselError> for Error {
    fn from(err: DieselError) -> Self {
        if connection_lost(&err) {
            return Error::ConnectionLost {
                message: err.to_string(),
            };
        }
        match err {
            DieselError::NotFound => Error::NotFound,
            DieselError::DatabaseError(kind, info) => match kind {
                DatabaseErrorKind::UniqueViolation => Error::Conflict {
                    constraint: constraint_of(info.as_ref()),
                },
                DatabaseErrorKind::ForeignKeyViolation => Error::MissingReference {
                    constraint: constraint_of(info.as_ref()),
                },
                DatabaseErrorKind::CheckViolation => Error::CheckViolation {
                    constraint: constraint_of(info.as_ref()),
                },
                DatabaseErrorKind::SerializationFailure => Error::Retryable {
                    message: info.message().to_owned(),
                },
                DatabaseErrorKind::Unknown => match refusal(info.as_ref()) {
                    Some(refused) => Error::Refused(refused),
                    None if info.message().starts_with("deadlock detected") => Error::Retryable {
                        message: info.message().to_owned(),
                    },
                    None if is_permission_denied(info.message()) => Error::PermissionDenied {
                        message: info.message().to_owned(),
                    },
                    // 22003: only money columns are numeric, and input
                    // amounts are checked, so this is a sum past the type.
                    None if info.message().starts_with("numeric field overflow") => {
                        Error::InvalidInput {
                            field: "amount",
                            reason: "the resulting total does not fit numeric(18,2)".into(),
                        }
                    }
                    None if let Some(kind) = timeout_kind(info.message()) => Error::Timeout {
                        kind,
                        message: info.message().to_owned(),
                    },
                    None => Error::Database(DieselError::DatabaseError(kind, info)),
                },
                other => Error::Database(DieselError::DatabaseError(other, info)),
            },
            other => Error::Database(other),
        }
    }
}

impl From<InvalidValue> for Error {
    fn from(InvalidValue { field, reason }: InvalidValue) -> Self {
        Error::InvalidInput { field, reason }
    }
}

impl From<PoolError> for Error {
    fn from(err: PoolError) -> Self {
        match err {
            PoolError::ConnectionError(e) => Error::Connection(e),
            PoolError::QueryError(e) => Error::from(e),
        }
    }
}

impl From<bb8::RunError<PoolError>> for Error {
    fn from(err: bb8::RunError<PoolError>) -> Self {
        match err {
            bb8::RunError::TimedOut => Error::PoolTimeout,
            bb8::RunError::User(e) => Error::from(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::constraint_in_message;

    #[test]
    fn a_shards_constraint_name_loses_its_suffix() {
        assert_eq!(
            constraint_in_message(
                "duplicate key value violates unique constraint \"customers_tenant_phone_key_102016\""
            )
            .as_deref(),
            Some("customers_tenant_phone_key")
        );
        assert_eq!(
            constraint_in_message(
                "new row for relation \"budgets\" violates check constraint \"budgets_within_cap\""
            )
            .as_deref(),
            Some("budgets_within_cap")
        );
        assert_eq!(constraint_in_message("something else"), None);
    }
}
