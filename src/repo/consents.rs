//! Consents: an append-only history per (customer, channel, purpose). The
//! latest entry is the one in force.

use chrono::{DateTime, Utc};
use diesel::prelude::*;
use diesel_async::RunQueryDsl;
use serde::{Deserialize, Serialize};

use crate::error::Result;
use crate::ids::{ConsentId, CustomerId, TenantId};
use crate::schema::consents;
use crate::tenant::TenantConn;
use crate::text_enum::text_enum;
use crate::validate;

text_enum! {
    /// Where a message may be sent.
    pub enum Channel {
        Whatsapp => "whatsapp",
        Sms => "sms",
        Email => "email",
        Push => "push",
    }
}

text_enum! {
    /// What the data may be used for.
    pub enum Purpose {
        Marketing => "marketing",
        Transactional => "transactional",
        Analytics => "analytics",
    }
}

/// A row of `consents`.
#[derive(Debug, Clone, PartialEq, Queryable, Selectable, Serialize, Deserialize)]
#[diesel(table_name = consents, check_for_backend(diesel::pg::Pg))]
pub struct Consent {
    pub tenant_id: TenantId,
    pub id: ConsentId,
    pub customer_id: CustomerId,
    pub channel: Channel,
    pub purpose: Purpose,
    pub granted: bool,
    pub occurred_at: DateTime<Utc>,
    pub source: Option<String>,
    pub created_at: DateTime<Utc>,
}

/// Input for [`ConsentRepository::record`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NewConsent {
    pub customer_id: CustomerId,
    pub channel: Channel,
    pub purpose: Purpose,
    pub granted: bool,
    /// When the customer gave or withdrew consent, which may be before it is recorded.
    pub occurred_at: DateTime<Utc>,
    /// Where it was captured, for example `"whatsapp-optin"`.
    pub source: Option<String>,
}

/// Consent history of one tenant's customers.
pub trait ConsentRepository {
    /// Appends an entry; earlier ones are kept.
    fn record(&mut self, new: NewConsent) -> impl Future<Output = Result<Consent>> + Send;
    /// Every entry for a customer, latest first.
    fn history(
        &mut self,
        customer_id: CustomerId,
    ) -> impl Future<Output = Result<Vec<Consent>>> + Send;
    /// The entry in force for a channel and purpose, if any was ever
    /// recorded.
    fn latest(
        &mut self,
        customer_id: CustomerId,
        channel: Channel,
        purpose: Purpose,
    ) -> impl Future<Output = Result<Option<Consent>>> + Send;
}

/// [`ConsentRepository`] on a tenant guard: `tx.consents()`.
#[derive(Debug)]
pub struct Consents<'t>(&'t mut TenantConn);

impl TenantConn {
    /// This tenant's consent history.
    pub fn consents(&mut self) -> Consents<'_> {
        Consents(self)
    }
}

impl ConsentRepository for Consents<'_> {
    async fn record(&mut self, new: NewConsent) -> Result<Consent> {
        validate::optional_text("source", new.source.as_deref(), 1, 100)?;
        validate::timestamp("occurred_at", &new.occurred_at)?;
        let tenant = self.0.tenant_id();
        Ok(diesel::insert_into(consents::table)
            .values((
                consents::tenant_id.eq(tenant),
                consents::id.eq(ConsentId::new()),
                consents::customer_id.eq(new.customer_id),
                consents::channel.eq(new.channel),
                consents::purpose.eq(new.purpose),
                consents::granted.eq(new.granted),
                consents::occurred_at.eq(new.occurred_at),
                consents::source.eq(new.source),
            ))
            .returning(Consent::as_returning())
            .get_result(self.0.db())
            .await?)
    }

    async fn history(&mut self, customer_id: CustomerId) -> Result<Vec<Consent>> {
        Ok(consents::table
            .filter(consents::tenant_id.eq(self.0.tenant_id()))
            .filter(consents::customer_id.eq(customer_id))
            .order((consents::occurred_at.desc(), consents::id.desc()))
            .select(Consent::as_select())
            .load(self.0.db())
            .await?)
    }

    async fn latest(
        &mut self,
        customer_id: CustomerId,
        channel: Channel,
        purpose: Purpose,
    ) -> Result<Option<Consent>> {
        Ok(consents::table
            .filter(consents::tenant_id.eq(self.0.tenant_id()))
            .filter(consents::customer_id.eq(customer_id))
            .filter(consents::channel.eq(channel))
            .filter(consents::purpose.eq(purpose))
            .order((consents::occurred_at.desc(), consents::id.desc()))
            .select(Consent::as_select())
            .first(self.0.db())
            .await
            .optional()?)
    }
}
