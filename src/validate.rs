//! Input checks that run before anything is sent to the database. The
//! migrations' CHECK constraints enforce the same rules a second time.

use bigdecimal::BigDecimal;
use bigdecimal::num_bigint::Sign;
use chrono::{DateTime, Datelike, Utc};
use serde_json::Value;

use crate::error::{Error, Result};

/// Text whose length in characters lies in `min..=max`, without NUL
/// characters (PostgreSQL's text cannot hold them).
pub(crate) fn text(field: &'static str, value: &str, min: usize, max: usize) -> Result<()> {
    no_nul(field, value)?;
    let len = value.chars().count();
    if (min..=max).contains(&len) {
        Ok(())
    } else if min == 0 {
        Err(Error::invalid(
            field,
            format!("must be at most {max} characters"),
        ))
    } else {
        Err(Error::invalid(
            field,
            format!("must be {min} to {max} characters"),
        ))
    }
}

/// Optional text, checked only when present.
pub(crate) fn optional_text(
    field: &'static str,
    value: Option<&str>,
    min: usize,
    max: usize,
) -> Result<()> {
    value.map_or(Ok(()), |v| text(field, v, min, max))
}

/// A plausible e-mail address: one `@`, no whitespace, a dot in the domain.
pub(crate) fn email(value: &str) -> Result<()> {
    text("email", value, 3, 254)?;
    let valid = match value.split_once('@') {
        Some((local, domain)) => {
            !local.is_empty()
                && !domain.contains('@')
                && !value.chars().any(char::is_whitespace)
                && domain
                    .split_once('.')
                    .is_some_and(|(host, tld)| !host.is_empty() && !tld.is_empty())
                && !domain.ends_with('.')
        }
        None => false,
    };
    if valid {
        Ok(())
    } else {
        Err(Error::invalid(
            "email",
            format!("{value:?} is not an e-mail address"),
        ))
    }
}

/// E.164: `+`, a non-zero digit, then 6 to 14 more digits.
pub(crate) fn e164(field: &'static str, value: &str) -> Result<()> {
    let digits = value.strip_prefix('+').unwrap_or("");
    let valid = (7..=15).contains(&digits.len())
        && digits.bytes().all(|b| b.is_ascii_digit())
        && !digits.starts_with('0');
    if valid {
        Ok(())
    } else {
        Err(Error::invalid(
            field,
            format!("{value:?} is not an E.164 number like +263771234567"),
        ))
    }
}

/// Text PostgreSQL can store: no NUL character.
pub(crate) fn no_nul(field: &'static str, value: &str) -> Result<()> {
    if value.contains('\0') {
        Err(Error::invalid(field, "must not contain NUL characters"))
    } else {
        Ok(())
    }
}

/// The deepest nesting of arrays and objects a JSON input may have. Reading
/// a document back stops at serde_json's recursion limit (128), so deeper
/// ones would be written and then fail every read.
pub const MAX_JSON_DEPTH: usize = 64;

/// A JSON object (not an array, string or null) that reads back: nested at
/// most [`MAX_JSON_DEPTH`] deep, with no NUL character in any key or string
/// (`jsonb` refuses `\u0000`).
pub(crate) fn json_object(field: &'static str, value: &Value) -> Result<()> {
    if !value.is_object() {
        return Err(Error::invalid(field, "must be a JSON object"));
    }
    // Iterative, so a hostile document cannot overflow this stack either.
    // Depth counts arrays and objects, the top-level object being 1.
    let mut pending = vec![(value, 1usize)];
    while let Some((node, depth)) = pending.pop() {
        let children: Box<dyn Iterator<Item = &Value>> = match node {
            Value::String(text) => {
                no_nul(field, text)?;
                continue;
            }
            Value::Null | Value::Bool(_) | Value::Number(_) => continue,
            Value::Array(items) => Box::new(items.iter()),
            Value::Object(members) => {
                for key in members.keys() {
                    no_nul(field, key)?;
                }
                Box::new(members.values())
            }
        };
        if depth > MAX_JSON_DEPTH {
            return Err(Error::invalid(
                field,
                format!("must be nested at most {MAX_JSON_DEPTH} deep"),
            ));
        }
        pending.extend(children.map(|child| (child, depth + 1)));
    }
    Ok(())
}

/// A time both PostgreSQL and this crate's readers hold: years 1 to 9999.
/// (`timestamptz` reaches 294276 AD, but a year of five digits does not
/// read back through RFC 3339, which JSON results use.)
pub(crate) fn timestamp(field: &'static str, value: &DateTime<Utc>) -> Result<()> {
    if (1..=9999).contains(&value.year()) {
        Ok(())
    } else {
        Err(Error::invalid(field, "must be in the years 1 to 9999"))
    }
}

/// A money amount that `numeric(18, 2)` stores exactly: positive, at most
/// two decimal places and sixteen integer digits. PostgreSQL would round a
/// third decimal silently; this refuses it instead.
pub(crate) fn amount(field: &'static str, value: &BigDecimal) -> Result<()> {
    // Only the normalized digits and exponent are inspected: comparing or
    // rescaling "1E-1000000000" would allocate a billion digits.
    let (digits, scale) = value.normalized().as_bigint_and_exponent();
    if digits.sign() != Sign::Plus {
        return Err(Error::invalid(field, "must be greater than zero"));
    }
    if scale > 2 {
        return Err(Error::invalid(
            field,
            "must have at most two decimal places",
        ));
    }
    let integer_digits = digits.to_string().len() as i64 - scale;
    if integer_digits > 16 {
        return Err(Error::invalid(field, "must be below 10^16"));
    }
    Ok(())
}

/// The largest page any list returns.
pub const MAX_PAGE: u32 = 1000;

/// A page size in `1..=MAX_PAGE`, as the `i64` diesel's `limit` takes.
pub(crate) fn page_limit(limit: u32) -> Result<i64> {
    if (1..=MAX_PAGE).contains(&limit) {
        Ok(i64::from(limit))
    } else {
        Err(Error::invalid("limit", format!("must be 1 to {MAX_PAGE}")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn emails() {
        for ok in ["a@b.co", "first.last+tag@example.co.zw"] {
            email(ok).unwrap();
        }
        for bad in [
            "", "a", "a@b", "@b.co", "a@@b.co", "a b@c.co", "a@.co", "a@b.",
        ] {
            assert!(email(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn phones() {
        for ok in ["+263771234567", "+15550000001", "+4930123"] {
            e164("phone", ok).unwrap();
        }
        for bad in [
            "263771234567",
            "+0263771234",
            "+1234",
            "+1234567890123456",
            "+26377 123",
            "",
        ] {
            assert!(e164("phone", bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn amounts() {
        for ok in [
            "0.01",
            "5",
            "5.50",
            "5.500",
            "9999999999999999.99",
            "1E+15",
            "120E-2",
        ] {
            amount("amount", &ok.parse().unwrap()).unwrap();
        }
        for bad in [
            "0",
            "-1",
            "0.001",
            "5.555",
            "10000000000000000",
            "1E-1000000000",
            "1E+1000000000",
            "1E-4000000000000000000",
        ] {
            assert!(amount("amount", &bad.parse().unwrap()).is_err(), "{bad}");
        }
    }

    #[test]
    fn lengths_count_characters_not_bytes() {
        text("name", "ééé", 1, 3).unwrap();
        assert!(text("name", "", 1, 3).is_err());
        assert!(text("name", "éééé", 1, 3).is_err());
    }
}
