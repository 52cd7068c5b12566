//! The statuses that refusals and errors report, next to the rows that carry
//! them. They live here, below `error.rs`, so that [`crate::Refusal`] can
//! name them without the error type depending on the repositories; each
//! repository module re-exports its own.

use crate::text_enum::text_enum;

text_enum! {
    /// Whether a customer may earn rewards.
    pub enum CustomerStatus {
        Active => "active",
        Blocked => "blocked",
        /// Personal data removed on request; the row stays for the ledger's sake.
        Erased => "erased",
    }
}

text_enum! {
    /// Where an issuance is in its life.
    pub enum IssuanceStatus {
        /// Held, not yet confirmed (not produced by this crate's `issue`).
        Reserved => "reserved",
        /// Given to the customer; its cost is reserved on the budget.
        Issued => "issued",
        /// Used by the customer; its cost is spent.
        Redeemed => "redeemed",
        /// Not used in time; its cost was released.
        Expired => "expired",
        /// Withdrawn; its cost was released and it no longer counts towards limits.
        Cancelled => "cancelled",
    }
}

text_enum! {
    /// Where a code is in its life.
    pub enum VoucherStatus {
        /// In the pool.
        Available => "available",
        /// Claimed for an issuance, not yet delivered to the customer.
        Reserved => "reserved",
        /// Delivered to the customer.
        Issued => "issued",
        /// Withdrawn; never handed out again.
        Invalid => "invalid",
    }
}
