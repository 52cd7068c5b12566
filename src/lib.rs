#![doc = include_str!("../README.md")]

mod config;
mod error;
pub mod ids;
mod migrate;
mod money;
pub mod repo;
pub mod schema;
mod store;
mod tenant;
#[cfg(feature = "testing")]
pub mod testing;
mod text_enum;

pub use config::{Config, Recycling};
pub use error::{Error, Result};
pub use ids::*;
pub use migrate::MIGRATIONS;
pub use money::{Currency, ISO_4217};
pub use store::{PoolStatus, Store};
pub use tenant::TenantConn;

/// The types most callers need, for a glob import.
pub mod prelude {
    pub use crate::ids::*;
    pub use crate::repo::tenants::{NewTenant, Tenant, TenantPage, TenantRepository, TenantStatus};
    pub use crate::{Config, Currency, Error, Result, Store, TenantConn};
}
