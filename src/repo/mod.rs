//! One module per aggregate: its rows, inputs, statuses, repository trait and
//! the implementation of that trait on a [`crate::TenantConn`] (or, for
//! tenants, on [`crate::Store::platform`]).
//!
//! Every trait has the same shape (`&mut self` methods returning `Send`
//! futures of [`crate::Result`]), so a service can write fakes of the ones it
//! uses for its own unit tests. Call sites read `tx.campaigns().create(..)`.

pub mod analytics;
pub mod audit_logs;
pub mod budgets;
pub mod campaigns;
pub mod consents;
pub mod customers;
pub mod events;
pub mod issuances;
pub mod outbox;
pub mod rewards;
pub mod rules;
pub mod staff_users;
pub mod tenants;
pub mod voucher_codes;
pub mod wa_sessions;
