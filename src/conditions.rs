//! Rule conditions: the small language a rule's `conditions` are written in,
//! checked here when a rule is created and evaluated by
//! `loyalty.conditions_hold` (`sql/45_conditions.sql`) when events are
//! matched. The language is in `docs/conditions.md`.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::error::{Error, Result};
use crate::validate::{self, MAX_JSON_DEPTH};

/// A rule's condition over an event's properties. It serializes to the JSON
/// stored in `rules.conditions`; [`Condition::Always`] is `{}`.
///
/// ```
/// use loyalty_store::Condition;
/// use serde_json::json;
///
/// let big_weekend_order = Condition::all([
///     Condition::gte("amount", 20),
///     Condition::one_of("day", ["sat", "sun"]),
/// ]);
/// assert_eq!(
///     serde_json::to_value(&big_weekend_order).unwrap(),
///     json!({"all": [
///         {"path": "amount", "op": "gte", "value": 20},
///         {"path": "day", "op": "in", "value": ["sat", "sun"]},
///     ]})
/// );
/// assert_eq!(Condition::parse(&json!({})).unwrap(), Condition::Always {});
/// ```
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged, deny_unknown_fields)]
pub enum Condition {
    /// Every one holds (true when there are none).
    All { all: Vec<Condition> },
    /// At least one holds.
    Any { any: Vec<Condition> },
    /// A comparison on the property at a dotted path, `"order.total"`.
    Compare {
        path: String,
        op: Comparison,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        value: Option<Value>,
    },
    /// No condition: `{}`.
    Always {},
}

/// How [`Condition::Compare`] compares the property with its value.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Comparison {
    /// Equal, as JSON (`20` equals `20.0`).
    Eq,
    /// Equal to one of the value's elements, which are scalars.
    In,
    /// At least the value: a number with numbers, a string with strings.
    Gte,
    /// At most the value, likewise.
    Lte,
    /// Present and not `null`; takes no value.
    Exists,
}

/// The longest path, in characters.
const MAX_PATH: usize = 200;

impl Condition {
    /// Every one of `conditions`.
    pub fn all(conditions: impl IntoIterator<Item = Condition>) -> Self {
        Condition::All {
            all: conditions.into_iter().collect(),
        }
    }

    /// At least one of `conditions`.
    pub fn any(conditions: impl IntoIterator<Item = Condition>) -> Self {
        Condition::Any {
            any: conditions.into_iter().collect(),
        }
    }

    /// The property at `path` equals `value`.
    pub fn eq(path: &str, value: impl Into<Value>) -> Self {
        Self::compare(path, Comparison::Eq, Some(value.into()))
    }

    /// The property at `path` is one of `values`.
    pub fn one_of<V: Into<Value>>(path: &str, values: impl IntoIterator<Item = V>) -> Self {
        let values = values.into_iter().map(Into::into).collect();
        Self::compare(path, Comparison::In, Some(Value::Array(values)))
    }

    /// The property at `path` is at least `value`.
    pub fn gte(path: &str, value: impl Into<Value>) -> Self {
        Self::compare(path, Comparison::Gte, Some(value.into()))
    }

    /// The property at `path` is at most `value`.
    pub fn lte(path: &str, value: impl Into<Value>) -> Self {
        Self::compare(path, Comparison::Lte, Some(value.into()))
    }

    /// The property at `path` is present and not `null`.
    pub fn exists(path: &str) -> Self {
        Self::compare(path, Comparison::Exists, None)
    }

    fn compare(path: &str, op: Comparison, value: Option<Value>) -> Self {
        Condition::Compare {
            path: path.to_owned(),
            op,
            value,
        }
    }

    /// Reads and checks a condition written as JSON: the shape, each
    /// comparison's value, and the paths. Anything else is
    /// [`Error::InvalidInput`] on `conditions`, saying what is wrong.
    pub fn parse(json: &Value) -> Result<Condition> {
        // Checked first, iteratively: deserializing recurses once per level.
        validate::json_object("conditions", json)?;
        let condition: Condition = serde_json::from_value(json.clone())
            .map_err(|e| invalid(format!("not a condition ({e}); see docs/conditions.md")))?;
        condition.check(1)?;
        Ok(condition)
    }

    fn check(&self, depth: usize) -> Result<()> {
        if depth > MAX_JSON_DEPTH {
            return Err(invalid(format!("nested deeper than {MAX_JSON_DEPTH}")));
        }
        match self {
            Condition::Always {} => Ok(()),
            Condition::All { all: parts } | Condition::Any { any: parts } => {
                parts.iter().try_for_each(|part| part.check(depth + 1))
            }
            Condition::Compare { path, op, value } => {
                if path.is_empty()
                    || path.chars().count() > MAX_PATH
                    || path.split('.').any(str::is_empty)
                    || path.contains('\0')
                {
                    return Err(invalid(format!(
                        "path {path:?} must be 1 to {MAX_PATH} characters of dot-separated keys"
                    )));
                }
                let scalar = |v: &Value| !v.is_array() && !v.is_object() && !v.is_null();
                let fits = match (op, value) {
                    (Comparison::Exists, None) => true,
                    (Comparison::Eq, Some(v)) => !v.is_null(),
                    (Comparison::In, Some(Value::Array(items))) => {
                        !items.is_empty() && items.iter().all(scalar)
                    }
                    (Comparison::Gte | Comparison::Lte, Some(v)) => v.is_number() || v.is_string(),
                    _ => false,
                };
                if fits {
                    Ok(())
                } else {
                    Err(invalid(format!(
                        "{op:?} on {path:?} takes {}",
                        match op {
                            Comparison::Exists => "no value",
                            Comparison::Eq => "a value that is not null",
                            Comparison::In => "a non-empty array of scalars",
                            Comparison::Gte | Comparison::Lte => "a number or a string",
                        }
                    )))
                }
            }
        }
    }
}

impl From<Condition> for Value {
    fn from(condition: Condition) -> Value {
        serde_json::to_value(condition).expect("a condition is plain JSON")
    }
}

fn invalid(reason: String) -> Error {
    Error::invalid("conditions", reason)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn the_documented_shapes_parse() {
        for ok in [
            json!({}),
            json!({"all": []}),
            json!({"path": "amount", "op": "gte", "value": 20}),
            json!({"path": "order.total", "op": "lte", "value": 99.5}),
            json!({"path": "day", "op": "in", "value": ["sat", "sun"]}),
            json!({"path": "store", "op": "eq", "value": {"id": 7}}),
            json!({"path": "coupon", "op": "exists"}),
            json!({"any": [{"all": [{"path": "a", "op": "exists"}]}]}),
        ] {
            let parsed = Condition::parse(&ok).unwrap_or_else(|e| panic!("{ok}: {e}"));
            assert_eq!(Value::from(parsed), ok);
        }
    }

    #[test]
    fn everything_else_is_refused_with_a_reason() {
        for bad in [
            json!([]),
            json!("amount >= 20"),
            json!({"min_amount": 20}),
            json!({"path": "amount", "op": "gt", "value": 20}),
            json!({"path": "amount", "op": "gte"}),
            json!({"path": "amount", "op": "gte", "value": true}),
            json!({"path": "amount", "op": "gte", "value": [1]}),
            json!({"path": "day", "op": "in", "value": []}),
            json!({"path": "day", "op": "in", "value": [["sat"]]}),
            json!({"path": "day", "op": "in", "value": "sat"}),
            json!({"path": "coupon", "op": "exists", "value": 1}),
            json!({"path": "x", "op": "eq", "value": null}),
            json!({"path": "", "op": "exists"}),
            json!({"path": "a..b", "op": "exists"}),
            json!({"path": "a", "op": "exists", "extra": 1}),
            json!({"all": [{"path": "amount"}]}),
            json!({"all": {"path": "a", "op": "exists"}}),
        ] {
            match Condition::parse(&bad) {
                Err(Error::InvalidInput { field, reason }) => {
                    assert_eq!(field, "conditions");
                    assert!(!reason.is_empty());
                }
                other => panic!("{bad} gave {other:?}"),
            }
        }
        let mut deep = json!({"path": "a", "op": "exists"});
        for _ in 0..MAX_JSON_DEPTH {
            deep = json!({ "all": [deep] });
        }
        assert!(Condition::parse(&deep).is_err());
    }
}
