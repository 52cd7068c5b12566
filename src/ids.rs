//! Typed ids: one newtype over [`Uuid`] per table, so a `CampaignId` can never
//! be passed where a `CustomerId` is expected.

use std::fmt;
use std::str::FromStr;

use diesel::deserialize::{FromSql, FromSqlRow};
use diesel::expression::AsExpression;
use diesel::pg::{Pg, PgValue};
use diesel::serialize::{Output, ToSql};
use diesel::sql_types::Uuid as SqlUuid;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

macro_rules! typed_id {
    ($($(#[$doc:meta])* $name:ident;)+) => {$(
        $(#[$doc])*
        #[derive(
            Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord,
            Serialize, Deserialize, AsExpression, FromSqlRow,
        )]
        #[diesel(sql_type = SqlUuid)]
        #[serde(transparent)]
        pub struct $name(pub Uuid);

        impl $name {
            /// A fresh time-ordered (v7) id, which keeps b-tree inserts local.
            pub fn new() -> Self {
                Self(Uuid::now_v7())
            }
        }

        impl Default for $name {
            fn default() -> Self {
                Self::new()
            }
        }

        impl From<Uuid> for $name {
            fn from(id: Uuid) -> Self {
                Self(id)
            }
        }

        impl From<$name> for Uuid {
            fn from(id: $name) -> Self {
                id.0
            }
        }

        /// Parses the id's hyphenated (or any other `uuid`-accepted) form,
        /// as in a URL path or a header.
        impl FromStr for $name {
            type Err = uuid::Error;

            fn from_str(text: &str) -> Result<Self, Self::Err> {
                Uuid::parse_str(text).map(Self)
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                self.0.fmt(f)
            }
        }

        impl ToSql<SqlUuid, Pg> for $name {
            fn to_sql<'b>(&'b self, out: &mut Output<'b, '_, Pg>) -> diesel::serialize::Result {
                <Uuid as ToSql<SqlUuid, Pg>>::to_sql(&self.0, out)
            }
        }

        impl FromSql<SqlUuid, Pg> for $name {
            fn from_sql(bytes: PgValue<'_>) -> diesel::deserialize::Result<Self> {
                <Uuid as FromSql<SqlUuid, Pg>>::from_sql(bytes).map(Self)
            }
        }
    )+};
}

typed_id! {
    /// A row of `tenants`.
    TenantId;
    /// A row of `staff_users`.
    StaffUserId;
    /// A row of `customers`.
    CustomerId;
    /// A row of `consents`.
    ConsentId;
    /// A row of `reward_catalog`.
    RewardId;
    /// A row of `campaigns`.
    CampaignId;
    /// A row of `rules`.
    RuleId;
    /// A row of `budgets`.
    BudgetId;
    /// A row of `ledger_entries`.
    LedgerEntryId;
    /// A row of `issuances`.
    IssuanceId;
    /// A row of `voucher_codes`.
    VoucherCodeId;
    /// A row of `events`.
    EventId;
    /// A row of `wa_sessions`.
    WaSessionId;
    /// A row of `audit_logs`.
    AuditLogId;
    /// A row of `outbox_messages`.
    OutboxMessageId;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_parse_back_what_they_print() {
        let id = CustomerId::new();
        assert_eq!(id.to_string().parse::<CustomerId>().unwrap(), id);
        assert_eq!(
            "01234567-89ab-cdef-0123-456789abcdef"
                .parse::<TenantId>()
                .unwrap()
                .to_string(),
            "01234567-89ab-cdef-0123-456789abcdef"
        );
        assert!("not-a-uuid".parse::<IssuanceId>().is_err());
        assert!("".parse::<IssuanceId>().is_err());
    }
}
