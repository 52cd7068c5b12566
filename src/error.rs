//! The crate's one error type, and the single place where database errors are
//! turned into it.

use diesel::result::{DatabaseErrorInformation, DatabaseErrorKind, Error as DieselError};
use diesel_async::pooled_connection::PoolError;

use crate::invalid::InvalidValue;
use crate::login::LoginPrivilege;
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
    /// Serialization failure (40001) or deadlock (40P01): run the unit of work again.
    #[error("transient conflict, retry: {message}")]
    Retryable { message: String },
    /// No pooled connection became free within the checkout timeout.
    #[error("timed out waiting for a pooled connection")]
    PoolTimeout,
    /// A new connection could not be opened.
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

/// Shorthand used throughout the crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// True when running the same unit of work again may succeed.
    pub fn is_retryable(&self) -> bool {
        matches!(self, Error::Retryable { .. } | Error::PoolTimeout)
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

fn constraint_of(info: &(dyn DatabaseErrorInformation + Send + Sync)) -> String {
    info.constraint_name().unwrap_or("unknown").to_owned()
}

// diesel-async 0.9 keeps SQLSTATE to itself for the codes it does not map to a
// `DatabaseErrorKind` (42501, 40P01 among them). For those two, PostgreSQL's
// message prefixes are the only signal left; they are matched here and nowhere
// else.
fn is_permission_denied(message: &str) -> bool {
    message.starts_with("permission denied")
        || message.starts_with("must be owner of")
        || message.starts_with("new row violates row-level security policy")
}

impl From<DieselError> for Error {
    fn from(err: DieselError) -> Self {
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
