//! [`Refusal`]: every reason the crate's SQL refuses work for.
//!
//! The SQL side lists the same reasons as the enum type `loyalty.refusal`
//! (`sql/10_refusals.sql`). A refusal crosses from SQL to Rust one way only:
//! as the JSON object `{"refusal": "<reason>", ...data}`, which the functions
//! either raise (SQLSTATE `LY000`, the object in the error's DETAIL) or, where
//! the transaction should go on, return as data (budget movements, batch
//! recipients). [`Refusal`] deserializes that object; the tests compare the
//! two lists and read the functions' source to check that each reason is
//! raised somewhere.

use serde::{Deserialize, Serialize};

use crate::money::Currency;
use crate::status::{CustomerStatus, IssuanceStatus};

/// Which limit of a rule was reached.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LimitScope {
    /// Issuances of the rule to one customer.
    Customer,
    /// Issuances of the rule to anyone.
    Global,
}

impl std::fmt::Display for LimitScope {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            LimitScope::Customer => "per-customer",
            LimitScope::Global => "global",
        })
    }
}

macro_rules! refusals {
    ($(
        $(#[$attr:meta])*
        $variant:ident $({ $($(#[$field_attr:meta])* $field:ident : $ty:ty),* $(,)? })? => $reason:literal,
    )+) => {
        /// Why the database refused a piece of work: one variant per reason
        /// the crate's SQL can give, with what the caller needs to act on it.
        ///
        /// Surfaces as [`Error::Refused`](crate::Error::Refused), or inside a
        /// batch report for one recipient.
        ///
        /// ```
        /// use loyalty_store::{Error, LimitScope, Refusal};
        ///
        /// fn worth_retrying_later(err: &Error) -> bool {
        ///     matches!(
        ///         err,
        ///         Error::Refused(Refusal::BudgetExhausted | Refusal::NoCodesAvailable)
        ///             | Error::Refused(Refusal::LimitReached { scope: LimitScope::Global })
        ///     )
        /// }
        /// ```
        #[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
        #[serde(tag = "refusal")]
        #[non_exhaustive]
        pub enum Refusal {
            $(
                $(#[$attr])*
                #[serde(rename = $reason)]
                $variant $({ $($(#[$field_attr])* $field: $ty),* })?,
            )+
        }

        impl Refusal {
            /// Every reason, as the SQL names it (`loyalty.refusal`).
            pub const REASONS: &'static [&'static str] = &[$($reason),+];

            /// The reason, as the SQL names it.
            pub fn reason(&self) -> &'static str {
                match self {
                    $(Refusal::$variant { .. } => $reason,)+
                }
            }
        }
    };
}

refusals! {
    /// The guard's tenant does not exist.
    #[error("unknown tenant")]
    UnknownTenant => "unknown_tenant",
    /// The guard's tenant exists but is suspended.
    #[error("tenant is suspended")]
    TenantSuspended => "tenant_suspended",
    /// The rule does not exist for this tenant.
    #[error("rule not found")]
    RuleNotFound => "rule_not_found",
    /// The customer does not exist for this tenant.
    #[error("customer not found")]
    CustomerNotFound => "customer_not_found",
    /// The issuance does not exist for this tenant.
    #[error("issuance not found")]
    IssuanceNotFound => "issuance_not_found",
    /// The budget does not exist for this tenant.
    #[error("budget not found")]
    BudgetNotFound => "budget_not_found",
    /// The rule is switched off.
    #[error("rule is inactive")]
    RuleInactive => "rule_inactive",
    /// The campaign is not active, or now is outside its window.
    #[error("campaign is not running")]
    CampaignNotRunning => "campaign_not_running",
    /// The rule's reward is archived.
    #[error("reward is archived")]
    RewardArchived => "reward_archived",
    /// The rule's campaign has no budget to draw on.
    #[error("campaign has no budget")]
    CampaignWithoutBudget => "campaign_without_budget",
    /// The reward costs money in another currency than the campaign's budget.
    #[error("reward costs {reward} but the budget is in {budget}")]
    CurrencyMismatch { reward: Currency, budget: Currency } => "currency_mismatch",
    /// The customer is not active.
    #[error("customer is {status}")]
    CustomerInactive { status: CustomerStatus } => "customer_inactive",
    /// The budget cannot cover the amount without crossing its hard cap.
    #[error("budget exhausted")]
    BudgetExhausted => "budget_exhausted",
    /// A rule's per-customer or global issuance limit is used up.
    #[error("{scope} limit reached")]
    LimitReached { scope: LimitScope } => "limit_reached",
    /// The reward's voucher-code pool has no available code left.
    #[error("no voucher codes available")]
    NoCodesAvailable => "no_codes_available",
    /// The idempotency key was used before for another rule or customer.
    #[error("idempotency key used for another rule or customer")]
    IdempotencyConflict => "idempotency_conflict",
    /// The issuance is no longer issued (it is redeemed, expired,
    /// cancelled or only reserved), so it cannot be redeemed or cancelled.
    #[error("issuance is {status}")]
    IssuanceNotIssued { status: IssuanceStatus } => "issuance_not_issued",
    /// The issuance's expiry has passed; it can no longer be redeemed.
    #[error("issuance has expired")]
    IssuanceExpired => "issuance_expired",
    /// No reservation of this amount was booked on this budget under the reference.
    #[error("nothing reserved under this reference")]
    NotReserved => "not_reserved",
    /// The reference was booked before with another amount or budget.
    #[error("reference booked before with another amount or budget")]
    ReferenceReused => "reference_reused",
    /// The reservation was already released or committed.
    #[error("reservation already released or committed")]
    AlreadySettled => "already_settled",
    /// No voucher code of this tenant has this text, or the code was never
    /// handed out.
    #[error("voucher code not found")]
    CodeNotFound => "code_not_found",
    /// The voucher was redeemed before: a second scan at a till.
    #[error("voucher already redeemed")]
    AlreadyRedeemed => "already_redeemed",
    /// The hold lapsed before it was confirmed (it is voided by the next
    /// expiry sweep, or by `void_hold`).
    #[error("the hold has lapsed")]
    HoldExpired => "hold_expired",
    /// Only a redeemed issuance's redemption can be reversed.
    #[error("issuance is {status}, not redeemed")]
    NotRedeemed { status: IssuanceStatus } => "not_redeemed",
    /// The issuance's redemption was reversed once already; a reversal
    /// happens once per issuance.
    #[error("a redemption of this issuance was reversed before")]
    AlreadyReversed => "already_reversed",
    /// The redemption is older than the reversal window allows.
    #[error("redeemed at {redeemed_at}, outside the reversal window")]
    ReversalWindowClosed { redeemed_at: chrono::DateTime<chrono::Utc> } => "reversal_window_closed",
    /// An SQL function refused an argument. The crate validates its input
    /// before calling, so this comes from SQL sent directly.
    #[error("invalid {argument}: {reason}")]
    InvalidArgument { argument: String, reason: String } => "invalid_argument",
}

impl Refusal {
    /// Reads the JSON object the SQL sends, or `None` if `json` is not one.
    pub(crate) fn from_json(json: &str) -> Option<Refusal> {
        serde_json::from_str(json).ok()
    }

    /// True for the reasons that mean a row does not exist for this tenant.
    pub fn is_not_found(&self) -> bool {
        matches!(
            self,
            Refusal::UnknownTenant
                | Refusal::RuleNotFound
                | Refusal::CustomerNotFound
                | Refusal::IssuanceNotFound
                | Refusal::BudgetNotFound
                | Refusal::CodeNotFound
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_reason_reads_back_as_its_own_variant() {
        for reason in Refusal::REASONS {
            let data = match *reason {
                "currency_mismatch" => r#","reward":"USD","budget":"EUR""#,
                "customer_inactive" => r#","status":"blocked""#,
                "limit_reached" => r#","scope":"global""#,
                "issuance_not_issued" | "not_redeemed" => r#","status":"redeemed""#,
                "reversal_window_closed" => r#","redeemed_at":"2026-12-03T07:00:00.123456+00:00""#,
                "invalid_argument" => r#","argument":"amount","reason":"must be positive""#,
                _ => "",
            };
            let refusal = Refusal::from_json(&format!(r#"{{"refusal": "{reason}"{data}}}"#))
                .unwrap_or_else(|| panic!("{reason} does not deserialize"));
            assert_eq!(refusal.reason(), *reason);
            let round_trip = serde_json::to_string(&refusal).unwrap();
            assert_eq!(Refusal::from_json(&round_trip), Some(refusal));
        }
    }

    #[test]
    fn missing_rows_count_as_not_found() {
        use crate::Error;
        assert!(Error::NotFound.is_not_found());
        assert!(Error::Refused(Refusal::RuleNotFound).is_not_found());
        assert!(!Error::Refused(Refusal::BudgetExhausted).is_not_found());
    }

    #[test]
    fn unknown_reasons_and_other_details_are_not_refusals() {
        assert_eq!(Refusal::from_json(r#"{"refusal": "moon_phase"}"#), None);
        assert_eq!(Refusal::from_json("Key (id)=(1) already exists."), None);
        assert_eq!(
            Refusal::from_json(r#"{"refusal": "limit_reached", "scope": "sideways"}"#),
            None
        );
    }
}
