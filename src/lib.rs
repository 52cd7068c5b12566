#![doc = include_str!("../README.md")]

mod checkout;
mod citus;
mod conditions;
mod config;
mod connect;
pub mod demo;
mod error;
mod guard_key;
pub mod ids;
mod invalid;
mod login;
mod migrate;
mod money;
mod ops;
mod page;
mod platform;
mod privilege;
mod refusal;
pub mod repo;
mod retry;
pub mod schema;
mod session;
mod statements;
mod status;
mod store;
mod tenant;
#[cfg(feature = "testing")]
pub mod testing;
mod text_enum;
mod validate;

pub use conditions::{Comparison, Condition};
pub use config::{Config, Recycling};
pub use error::{Error, Result, TimeoutKind};
pub use guard_key::GuardKey;
pub use ids::*;
pub use invalid::InvalidValue;
pub use migrate::{MIGRATIONS, SQL_LAYER_SCHEMA};
pub use money::{Currency, ISO_4217};
pub use ops::{Diagnostics, Health, IndexUsage, SlowStatement, TableSize};
pub use page::{Cursor, KeysetPage, Page, TimeRange};
pub use platform::Platform;
pub use privilege::LoginPrivilege;
pub use refusal::{LimitScope, Refusal};
pub use retry::RetryPolicy;
pub use store::{PoolStatus, Store};
pub use tenant::{Actor, TenantConn};
pub use validate::{MAX_JSON_DEPTH, MAX_PAGE};

/// The crates whose types appear in this crate's API, at the versions it was
/// built with: depend on them through here, and they stay in step.
///
/// ```
/// use loyalty_store::reexports::{bigdecimal::BigDecimal, chrono::Utc, serde_json::json};
/// let amount: BigDecimal = "2.50".parse().unwrap();
/// # let _ = (amount, Utc::now(), json!({}));
/// ```
pub mod reexports {
    pub use bigdecimal;
    pub use chrono;
    pub use diesel;
    pub use diesel_async;
    pub use serde_json;
    pub use uuid;
}

/// The types most callers need, for a glob import: the store, the guard,
/// errors, ids, and every repository trait with its inputs.
pub mod prelude {
    pub use crate::ids::*;
    pub use crate::repo::analytics::AnalyticsRepository;
    pub use crate::repo::audit_logs::{AuditLogRepository, NewAuditLog};
    pub use crate::repo::budgets::{BudgetRepository, LedgerRef, NewBudget};
    pub use crate::repo::campaigns::{CampaignRepository, CampaignStatus, NewCampaign};
    pub use crate::repo::consents::{Channel, ConsentRepository, NewConsent, Purpose};
    pub use crate::repo::customers::{CustomerRepository, CustomerStatus, NewCustomer};
    pub use crate::repo::events::{EventRepository, NewEvent};
    pub use crate::repo::issuances::{
        IssuanceRepository, IssuanceStatus, NewBatch, NewHold, NewIssuance, TillRedemption,
    };
    pub use crate::repo::outbox::{NewMessage, OutboxRepository};
    pub use crate::repo::rewards::{NewReward, RewardRepository, RewardStatus, RewardType};
    pub use crate::repo::rules::{NewRule, Rule, RuleRepository};
    pub use crate::repo::staff_users::{NewStaffUser, StaffRole, StaffUserRepository};
    pub use crate::repo::tenants::{NewTenant, Tenant, TenantPage, TenantRepository, TenantStatus};
    pub use crate::repo::voucher_codes::VoucherCodeRepository;
    pub use crate::repo::wa_sessions::{NewWaSession, WaSessionRepository};
    pub use crate::{
        Actor, Condition, Config, Currency, Cursor, Error, KeysetPage, LimitScope, Page, Refusal,
        Result, Store, TenantConn, TimeRange,
    };
}
