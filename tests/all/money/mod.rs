//! The money path: budgets and the ledger, issuing, batches, the life of an
//! issuance, voucher codes, and races between all of them.

mod batch;
mod budgets;
mod holds;
mod issue;
mod lifecycle;
mod races;
mod till;
mod vouchers;
