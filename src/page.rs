//! Pagination: offset pages for lists that stay small, keyset pages for the
//! ones that grow without bound (events, audit logs, issuances).

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// An offset page, for bounded lists such as staff or campaigns.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Page {
    /// Rows to return, 1 to [`crate::MAX_PAGE`].
    pub limit: u32,
    /// Rows to skip.
    pub offset: u32,
}

impl Page {
    /// The first `limit` rows.
    pub fn first(limit: u32) -> Self {
        Page { limit, offset: 0 }
    }
}

/// Where a newest-first keyset page resumes: the `(time, id)` of the last row
/// of the previous page. Ties on time are broken by id, so no row is skipped
/// or repeated however many share a timestamp.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Cursor<Id> {
    /// The last row's time.
    pub at: DateTime<Utc>,
    /// The last row's id.
    pub id: Id,
}

/// A newest-first keyset page.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeysetPage<Id> {
    /// `None` for the first page.
    pub after: Option<Cursor<Id>>,
    /// Rows to return, 1 to [`crate::MAX_PAGE`].
    pub limit: u32,
}

impl<Id> KeysetPage<Id> {
    /// The newest `limit` rows.
    pub fn first(limit: u32) -> Self {
        KeysetPage { after: None, limit }
    }

    /// The page after the row at `cursor`.
    pub fn after(cursor: Cursor<Id>, limit: u32) -> Self {
        KeysetPage {
            after: Some(cursor),
            limit,
        }
    }
}

/// A closed time window, `from..=to`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct TimeRange {
    /// Inclusive start.
    pub from: DateTime<Utc>,
    /// Inclusive end.
    pub to: DateTime<Utc>,
}

impl TimeRange {
    /// A window, or [`crate::Error::InvalidInput`] when `to` is before `from`.
    pub fn new(from: DateTime<Utc>, to: DateTime<Utc>) -> crate::Result<Self> {
        if to < from {
            return Err(crate::Error::invalid("to", "must not be before from"));
        }
        Ok(TimeRange { from, to })
    }
}
