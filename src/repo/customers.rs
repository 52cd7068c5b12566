//! Customers, known by their E.164 phone number.

use chrono::{DateTime, Utc};
use diesel::prelude::*;
use diesel_async::RunQueryDsl;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::error::{Error, Result};
use crate::ids::{CustomerId, TenantId};
use crate::page::KeysetPage;
use crate::repo::audit_logs;
use crate::schema::{customers, wa_sessions};
use crate::tenant::TenantConn;
use crate::validate;

pub use crate::status::CustomerStatus;

/// A row of `customers`.
#[derive(
    Debug, Clone, PartialEq, Queryable, QueryableByName, Selectable, Serialize, Deserialize,
)]
#[diesel(table_name = customers, check_for_backend(diesel::pg::Pg))]
pub struct Customer {
    pub tenant_id: TenantId,
    pub id: CustomerId,
    /// `None` once the customer is erased.
    pub phone_e164: Option<String>,
    pub status: CustomerStatus,
    pub attributes: Value,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    /// When the customer's personal data was removed.
    pub erased_at: Option<DateTime<Utc>>,
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
    /// Customers whose phone number starts with `prefix` (`"+26377"`), in
    /// number order, at most `limit`; erased customers have no number and
    /// never match. A prefix is `+` and up to 15 digits.
    fn search_by_phone(
        &mut self,
        prefix: &str,
        limit: u32,
    ) -> impl Future<Output = Result<Vec<Customer>>> + Send;
    /// Customers, newest first, by keyset.
    fn list(
        &mut self,
        page: KeysetPage<CustomerId>,
    ) -> impl Future<Output = Result<Vec<Customer>>> + Send;
    /// Replaces the attributes (a JSON object) and returns the updated row.
    fn update_attributes(
        &mut self,
        id: CustomerId,
        attributes: Value,
    ) -> impl Future<Output = Result<Customer>> + Send;
    /// Removes the customer's personal data: the phone number (so the
    /// customer can no longer be found by it), the attributes, and the
    /// WhatsApp sessions of the customer or the number. The row stays, as do
    /// its issuances, ledger entries and consent history, which hold no
    /// personal data, so the books still balance. Audited as
    /// `customer.erased`. Final: erasing again returns the row unchanged,
    /// and no update, the guard's own SQL included, can undo it. An erased customer cannot be
    /// issued rewards ([`crate::Refusal::CustomerInactive`]).
    fn erase(&mut self, id: CustomerId) -> impl Future<Output = Result<Customer>> + Send;
    /// Changes the status and returns the updated row. `Erased` is set by
    /// [`erase`](Self::erase) only ([`crate::Error::CheckViolation`] here).
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

    async fn search_by_phone(&mut self, prefix: &str, limit: u32) -> Result<Vec<Customer>> {
        let digits = prefix.strip_prefix('+');
        if !digits.is_some_and(|d| d.len() <= 15 && d.bytes().all(|b| b.is_ascii_digit())) {
            return Err(Error::invalid(
                "prefix",
                "must be + and up to 15 digits, like +26377",
            ));
        }
        let limit = validate::page_limit(limit)?;
        // Byte order: every number under the prefix sorts from the prefix up
        // to the prefix followed by ':', the character after '9'.
        Ok(diesel::sql_query(
            "SELECT tenant_id, id, phone_e164, status, attributes, created_at, updated_at, erased_at \
               FROM customers \
              WHERE tenant_id = $1 \
                AND phone_e164 COLLATE \"C\" >= $2 AND phone_e164 COLLATE \"C\" < $2 || ':' \
              ORDER BY phone_e164 COLLATE \"C\" \
              LIMIT $3",
        )
        .bind::<diesel::sql_types::Uuid, _>(self.0.tenant_id())
        .bind::<diesel::sql_types::Text, _>(prefix)
        .bind::<diesel::sql_types::BigInt, _>(limit)
        .load(self.0.db())
        .await?)
    }

    async fn list(&mut self, page: KeysetPage<CustomerId>) -> Result<Vec<Customer>> {
        let limit = validate::page_limit(page.limit)?;
        let mut query = customers::table
            .filter(customers::tenant_id.eq(self.0.tenant_id()))
            .order((customers::created_at.desc(), customers::id.desc()))
            .limit(limit)
            .select(Customer::as_select())
            .into_boxed();
        if let Some(after) = page.after {
            query = query.filter(
                customers::created_at.lt(after.at).or(customers::created_at
                    .eq(after.at)
                    .and(customers::id.lt(after.id))),
            );
        }
        Ok(query.load(self.0.db()).await?)
    }

    async fn update_attributes(&mut self, id: CustomerId, attributes: Value) -> Result<Customer> {
        validate::json_object("attributes", &attributes)?;
        Ok(diesel::update(
            customers::table
                .filter(customers::tenant_id.eq(self.0.tenant_id()))
                .filter(customers::id.eq(id)),
        )
        .set(customers::attributes.eq(attributes))
        .returning(Customer::as_returning())
        .get_result(self.0.db())
        .await?)
    }

    async fn erase(&mut self, id: CustomerId) -> Result<Customer> {
        let tenant = self.0.tenant_id();
        // The number as it was, locked, for the sessions that hold it
        // without naming the customer.
        let phone: Option<String> = customers::table
            .filter(customers::tenant_id.eq(tenant))
            .filter(customers::id.eq(id))
            .select(customers::phone_e164)
            .for_update()
            .get_result(self.0.db())
            .await?;
        let erased = diesel::update(
            customers::table
                .filter(customers::tenant_id.eq(tenant))
                .filter(customers::id.eq(id))
                .filter(customers::status.ne(CustomerStatus::Erased)),
        )
        .set((
            customers::status.eq(CustomerStatus::Erased),
            customers::phone_e164.eq(None::<String>),
            customers::attributes.eq(Value::Object(Default::default())),
            customers::erased_at.eq(diesel::dsl::now),
        ))
        .returning(Customer::as_returning())
        .get_result(self.0.db())
        .await
        .optional()?;
        let Some(erased) = erased else {
            // Unknown (NotFound) or erased before (the row as it is).
            return self.get(id).await;
        };
        let sessions = diesel::delete(
            wa_sessions::table
                .filter(wa_sessions::tenant_id.eq(tenant))
                .filter(
                    wa_sessions::customer_id
                        .eq(id)
                        .or(wa_sessions::phone_e164.nullable().eq(phone)),
                ),
        )
        .execute(self.0.db())
        .await?;
        audit_logs::record(
            self.0,
            "customer.erased",
            "customer",
            id.0,
            json!({ "wa_sessions_deleted": sessions }),
        )
        .await?;
        Ok(erased)
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
