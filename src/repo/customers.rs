//! Customers, known by their E.164 phone number.

use chrono::{DateTime, Utc};
use diesel::prelude::*;
use diesel_async::RunQueryDsl;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::error::Result;
use crate::ids::{CustomerId, TenantId};
use crate::schema::customers;
use crate::tenant::TenantConn;
use crate::validate;

pub use crate::status::CustomerStatus;

/// A row of `customers`.
#[derive(Debug, Clone, PartialEq, Queryable, Selectable, Serialize, Deserialize)]
#[diesel(table_name = customers, check_for_backend(diesel::pg::Pg))]
pub struct Customer {
    pub tenant_id: TenantId,
    pub id: CustomerId,
    pub phone_e164: String,
    pub status: CustomerStatus,
    pub attributes: Value,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

/// Input for [`CustomerRepository::create`].
///
/// ```
/// # use loyalty_store::repo::customers::NewCustomer;
/// let ada = NewCustomer::new("+263771234567").attributes(serde_json::json!({"tier": "gold"}));
/// ```
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NewCustomer {
    pub phone_e164: String,
    pub attributes: Value,
}

impl NewCustomer {
    /// A customer with no attributes.
    pub fn new(phone_e164: impl Into<String>) -> Self {
        NewCustomer {
            phone_e164: phone_e164.into(),
            attributes: Value::Object(Default::default()),
        }
    }

    /// Sets the attributes, a JSON object.
    pub fn attributes(mut self, attributes: Value) -> Self {
        self.attributes = attributes;
        self
    }
}

/// Customers of one tenant.
pub trait CustomerRepository {
    /// Adds a customer; [`crate::Error::Conflict`] if the phone is taken.
    fn create(&mut self, new: NewCustomer) -> impl Future<Output = Result<Customer>> + Send;
    /// One customer, or [`crate::Error::NotFound`].
    fn get(&mut self, id: CustomerId) -> impl Future<Output = Result<Customer>> + Send;
    /// The customer with this phone number, if any.
    fn find_by_phone(
        &mut self,
        phone_e164: &str,
    ) -> impl Future<Output = Result<Option<Customer>>> + Send;
    /// Changes the status and returns the updated row.
    fn update_status(
        &mut self,
        id: CustomerId,
        status: CustomerStatus,
    ) -> impl Future<Output = Result<Customer>> + Send;
}

/// [`CustomerRepository`] on a tenant guard: `tx.customers()`.
#[derive(Debug)]
pub struct Customers<'t>(&'t mut TenantConn);

impl TenantConn {
    /// This tenant's customers.
    pub fn customers(&mut self) -> Customers<'_> {
        Customers(self)
    }
}

impl CustomerRepository for Customers<'_> {
    async fn create(&mut self, new: NewCustomer) -> Result<Customer> {
        validate::e164("phone_e164", &new.phone_e164)?;
        validate::json_object("attributes", &new.attributes)?;
        let tenant = self.0.tenant_id();
        Ok(diesel::insert_into(customers::table)
            .values((
                customers::tenant_id.eq(tenant),
                customers::id.eq(CustomerId::new()),
                customers::phone_e164.eq(new.phone_e164),
                customers::attributes.eq(new.attributes),
            ))
            .returning(Customer::as_returning())
            .get_result(self.0.db())
            .await?)
    }

    async fn get(&mut self, id: CustomerId) -> Result<Customer> {
        Ok(customers::table
            .filter(customers::tenant_id.eq(self.0.tenant_id()))
            .filter(customers::id.eq(id))
            .select(Customer::as_select())
            .get_result(self.0.db())
            .await?)
    }

    async fn find_by_phone(&mut self, phone_e164: &str) -> Result<Option<Customer>> {
        validate::e164("phone_e164", phone_e164)?;
        Ok(customers::table
            .filter(customers::tenant_id.eq(self.0.tenant_id()))
            .filter(customers::phone_e164.eq(phone_e164))
            .select(Customer::as_select())
            .get_result(self.0.db())
            .await
            .optional()?)
    }

    async fn update_status(&mut self, id: CustomerId, status: CustomerStatus) -> Result<Customer> {
        Ok(diesel::update(
            customers::table
                .filter(customers::tenant_id.eq(self.0.tenant_id()))
                .filter(customers::id.eq(id)),
        )
        .set(customers::status.eq(status))
        .returning(Customer::as_returning())
        .get_result(self.0.db())
        .await?)
    }
}
