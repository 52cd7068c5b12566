//! Currency codes. Amounts are [`bigdecimal::BigDecimal`] throughout, never floats.

use std::fmt;
use std::str::FromStr;

use diesel::deserialize::{FromSql, FromSqlRow};
use diesel::expression::AsExpression;
use diesel::pg::{Pg, PgValue};
use diesel::serialize::{Output, ToSql};
use diesel::sql_types::Text;
use serde::{Deserialize, Serialize};

use crate::invalid::InvalidValue;

/// The active ISO 4217 codes, sorted. SQL's `is_iso4217()` holds the same
/// list; the test `migrations::sql_and_rust_agree_on_currency_codes` checks
/// that the two agree.
pub const ISO_4217: &[&str] = &[
    "AED", "AFN", "ALL", "AMD", "ANG", "AOA", "ARS", "AUD", "AWG", "AZN", "BAM", "BBD", "BDT",
    "BGN", "BHD", "BIF", "BMD", "BND", "BOB", "BRL", "BSD", "BTN", "BWP", "BYN", "BZD", "CAD",
    "CDF", "CHF", "CLP", "CNY", "COP", "CRC", "CUP", "CVE", "CZK", "DJF", "DKK", "DOP", "DZD",
    "EGP", "ERN", "ETB", "EUR", "FJD", "FKP", "GBP", "GEL", "GHS", "GIP", "GMD", "GNF", "GTQ",
    "GYD", "HKD", "HNL", "HTG", "HUF", "IDR", "ILS", "INR", "IQD", "IRR", "ISK", "JMD", "JOD",
    "JPY", "KES", "KGS", "KHR", "KMF", "KPW", "KRW", "KWD", "KYD", "KZT", "LAK", "LBP", "LKR",
    "LRD", "LSL", "LYD", "MAD", "MDL", "MGA", "MKD", "MMK", "MNT", "MOP", "MRU", "MUR", "MVR",
    "MWK", "MXN", "MYR", "MZN", "NAD", "NGN", "NIO", "NOK", "NPR", "NZD", "OMR", "PAB", "PEN",
    "PGK", "PHP", "PKR", "PLN", "PYG", "QAR", "RON", "RSD", "RUB", "RWF", "SAR", "SBD", "SCR",
    "SDG", "SEK", "SGD", "SHP", "SLE", "SOS", "SRD", "SSP", "STN", "SVC", "SYP", "SZL", "THB",
    "TJS", "TMT", "TND", "TOP", "TRY", "TTD", "TWD", "TZS", "UAH", "UGX", "USD", "UYU", "UZS",
    "VES", "VND", "VUV", "WST", "XAF", "XCD", "XOF", "XPF", "YER", "ZAR", "ZMW", "ZWL",
];

/// A validated ISO 4217 currency code.
///
/// ```
/// # use loyalty_store::Currency;
/// let usd: Currency = "USD".parse()?;
/// assert_eq!(usd.as_str(), "USD");
/// assert!("usd".parse::<Currency>().is_err());
/// # Ok::<(), loyalty_store::Error>(())
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, AsExpression, FromSqlRow)]
#[diesel(sql_type = Text)]
#[serde(into = "String")]
pub struct Currency(&'static str);

impl Currency {
    /// US dollars.
    pub const USD: Currency = Currency("USD");

    /// The three-letter code.
    pub fn as_str(self) -> &'static str {
        self.0
    }
}

impl FromStr for Currency {
    type Err = InvalidValue;

    fn from_str(code: &str) -> Result<Self, InvalidValue> {
        ISO_4217
            .binary_search(&code)
            .map(|at| Currency(ISO_4217[at]))
            .map_err(|_| InvalidValue {
                field: "currency",
                reason: format!("{code:?} is not an ISO 4217 code"),
            })
    }
}

impl TryFrom<String> for Currency {
    type Error = InvalidValue;

    fn try_from(code: String) -> Result<Self, InvalidValue> {
        code.parse()
    }
}

impl<'de> Deserialize<'de> for Currency {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let code = String::deserialize(deserializer)?;
        code.parse().map_err(serde::de::Error::custom)
    }
}

impl From<Currency> for String {
    fn from(currency: Currency) -> Self {
        currency.0.to_owned()
    }
}

impl fmt::Display for Currency {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(self.0)
    }
}

impl ToSql<Text, Pg> for Currency {
    fn to_sql<'b>(&'b self, out: &mut Output<'b, '_, Pg>) -> diesel::serialize::Result {
        <str as ToSql<Text, Pg>>::to_sql(self.0, out)
    }
}

impl FromSql<Text, Pg> for Currency {
    fn from_sql(bytes: PgValue<'_>) -> diesel::deserialize::Result<Self> {
        Ok(<String as FromSql<Text, Pg>>::from_sql(bytes)?.parse()?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn list_is_sorted_for_binary_search() {
        assert!(ISO_4217.windows(2).all(|pair| pair[0] < pair[1]));
    }

    #[test]
    fn parses_known_codes_only() {
        assert_eq!("ZAR".parse::<Currency>().unwrap().as_str(), "ZAR");
        for bad in ["", "US", "USDD", "usd", "XXX"] {
            assert!(matches!(
                bad.parse::<Currency>(),
                Err(InvalidValue {
                    field: "currency",
                    ..
                })
            ));
        }
    }
}
