//! Tenants: rows, inputs and the repository trait. The platform scope
//! ([`crate::Store::platform`], [`crate::Platform`]) implements it.

use chrono::{DateTime, Utc};
use diesel::prelude::*;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::error::{Error, Result};
use crate::ids::TenantId;
use crate::money::Currency;
use crate::schema::tenants;
use crate::text_enum::text_enum;
use crate::validate;

text_enum! {
    /// Whether a tenant may open guards.
    pub enum TenantStatus {
        Active => "active",
        Suspended => "suspended",
    }
}

/// A row of `tenants`.
#[derive(Debug, Clone, PartialEq, Queryable, Selectable, Serialize, Deserialize)]
#[diesel(table_name = tenants, check_for_backend(diesel::pg::Pg))]
pub struct Tenant {
    pub id: TenantId,
    pub name: String,
    pub country_code: Option<String>,
    pub default_ccy: Currency,
    pub theme: Value,
    pub status: TenantStatus,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

/// Input for [`TenantRepository::create`].
///
/// ```
/// # use loyalty_store::repo::tenants::NewTenant;
/// let acme = NewTenant::new("Acme Coffee", "USD".parse()?).country("US");
/// # Ok::<(), loyalty_store::Error>(())
/// ```
#[derive(Debug, Clone, PartialEq, Insertable, Serialize, Deserialize)]
#[diesel(table_name = tenants)]
pub struct NewTenant {
    pub id: TenantId,
    pub name: String,
    pub country_code: Option<String>,
    pub default_ccy: Currency,
    pub theme: Value,
}

impl NewTenant {
    /// A tenant with a fresh id, no country and an empty theme.
    pub fn new(name: impl Into<String>, default_ccy: Currency) -> Self {
        NewTenant {
            id: TenantId::new(),
            name: name.into(),
            country_code: None,
            default_ccy,
            theme: Value::Object(Default::default()),
        }
    }

    /// Sets the ISO 3166-1 alpha-2 country code.
    pub fn country(mut self, code: impl Into<String>) -> Self {
        self.country_code = Some(code.into());
        self
    }

    /// Sets the theme, a JSON object.
    pub fn theme(mut self, theme: Value) -> Self {
        self.theme = theme;
        self
    }

    pub(crate) fn validate(&self) -> Result<()> {
        let name_len = self.name.chars().count();
        if !(1..=200).contains(&name_len) {
            return Err(Error::invalid("name", "must be 1 to 200 characters"));
        }
        if let Some(code) = &self.country_code
            && !(code.len() == 2 && code.bytes().all(|b| b.is_ascii_uppercase()))
        {
            return Err(Error::invalid(
                "country_code",
                format!("{code:?} is not an ISO 3166-1 alpha-2 code"),
            ));
        }
        validate_theme(&self.theme)
    }
}

pub(crate) fn validate_theme(theme: &Value) -> Result<()> {
    validate::json_object("theme", theme)
}

/// A page of tenants ordered by id (ids are time-ordered, so this is also
/// creation order). Pass the last id seen as `after` for the next page.
/// The default is the first page of 100.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TenantPage {
    pub after: Option<TenantId>,
    pub limit: u32,
}

impl Default for TenantPage {
    fn default() -> Self {
        TenantPage {
            after: None,
            limit: 100,
        }
    }
}

/// Tenant provisioning. [`crate::Platform`] implements it; a service's unit tests can
/// implement it with a fake.
pub trait TenantRepository {
    /// Creates a tenant.
    fn create(&self, new: NewTenant) -> impl Future<Output = Result<Tenant>> + Send;
    /// One tenant, or [`Error::NotFound`].
    fn get(&self, id: TenantId) -> impl Future<Output = Result<Tenant>> + Send;
    /// Tenants in id order, one keyset page at a time (`limit` at most 1000).
    fn list(&self, page: TenantPage) -> impl Future<Output = Result<Vec<Tenant>>> + Send;
    /// Replaces the tenant's theme (a JSON object); returns the updated row.
    fn update_theme(
        &self,
        id: TenantId,
        theme: Value,
    ) -> impl Future<Output = Result<Tenant>> + Send;
    /// Activates or suspends a tenant. A suspended tenant cannot open guards.
    fn set_status(
        &self,
        id: TenantId,
        status: TenantStatus,
    ) -> impl Future<Output = Result<Tenant>> + Send;
}
