//! [`InvalidValue`]: a value a parser refused, kept below `error.rs` so that
//! the types [`crate::Refusal`] carries can parse without depending on the
//! crate's error type. `?` turns it into [`crate::Error::InvalidInput`].

/// A value that does not parse: which field, and why.
///
/// ```
/// let err = "usd".parse::<loyalty_store::Currency>().unwrap_err();
/// assert_eq!(err.field, "currency");
/// ```
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid {field}: {reason}")]
pub struct InvalidValue {
    pub field: &'static str,
    pub reason: String,
}
