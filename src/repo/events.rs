//! Events: what customers did, ingested idempotently.

use chrono::{DateTime, Utc};
use diesel::prelude::*;
use diesel_async::RunQueryDsl;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::error::{Error, Result};
use crate::ids::{CustomerId, EventId, TenantId};
use crate::page::KeysetPage;
use crate::schema::events;
use crate::tenant::TenantConn;
use crate::validate;

/// A row of `events`.
#[derive(Debug, Clone, PartialEq, Queryable, Selectable, Serialize, Deserialize)]
#[diesel(table_name = events, check_for_backend(diesel::pg::Pg))]
pub struct Event {
    pub tenant_id: TenantId,
    pub id: EventId,
    pub customer_id: Option<CustomerId>,
    pub event_type: String,
    pub properties: Value,
    pub occurred_at: DateTime<Utc>,
    pub source: String,
    pub idempotency_key: String,
    pub created_at: DateTime<Utc>,
}

/// Input for [`EventRepository::ingest`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NewEvent {
    pub customer_id: Option<CustomerId>,
    pub event_type: String,
    /// A JSON object.
    pub properties: Value,
    pub occurred_at: DateTime<Utc>,
    /// Where the event came from, for example `"pos"` or `"whatsapp"`.
    pub source: String,
    /// The sender's key for this event; a second delivery with the same key
    /// stores nothing new.
    pub idempotency_key: String,
}

/// What [`EventRepository::ingest`] did.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Ingested {
    /// The stored event: the new one, or the one first stored under the key.
    pub event: Event,
    /// False when the key had been seen before.
    pub created: bool,
}

/// Events of one tenant.
pub trait EventRepository {
    /// Stores an event once per idempotency key, also under concurrent
    /// delivery. A second delivery of the same event returns the first with
    /// `created: false`; the same key with another payload (customer, type,
    /// properties, time or source) is [`Error::Conflict`].
    fn ingest(&mut self, new: NewEvent) -> impl Future<Output = Result<Ingested>> + Send;
    /// Events, newest first by `occurred_at`, one keyset page at a time.
    fn list(
        &mut self,
        page: KeysetPage<EventId>,
    ) -> impl Future<Output = Result<Vec<Event>>> + Send;
    /// One customer's events, newest first.
    fn list_for_customer(
        &mut self,
        customer_id: CustomerId,
        page: KeysetPage<EventId>,
    ) -> impl Future<Output = Result<Vec<Event>>> + Send;
}

/// [`EventRepository`] on a tenant guard: `tx.events()`.
#[derive(Debug)]
pub struct Events<'t>(&'t mut TenantConn);

impl TenantConn {
    /// This tenant's events.
    pub fn events(&mut self) -> Events<'_> {
        Events(self)
    }
}

impl Events<'_> {
    async fn page(
        &mut self,
        customer_id: Option<CustomerId>,
        page: KeysetPage<EventId>,
    ) -> Result<Vec<Event>> {
        let limit = validate::page_limit(page.limit)?;
        let mut query = events::table
            .filter(events::tenant_id.eq(self.0.tenant_id()))
            .order((events::occurred_at.desc(), events::id.desc()))
            .limit(limit)
            .select(Event::as_select())
            .into_boxed();
        if let Some(customer_id) = customer_id {
            query = query.filter(events::customer_id.eq(customer_id));
        }
        if let Some(after) = page.after {
            query = query.filter(
                events::occurred_at.lt(after.at).or(events::occurred_at
                    .eq(after.at)
                    .and(events::id.lt(after.id))),
            );
        }
        Ok(query.load(self.0.db()).await?)
    }
}

impl EventRepository for Events<'_> {
    async fn ingest(&mut self, new: NewEvent) -> Result<Ingested> {
        validate::text("event_type", &new.event_type, 1, 100)?;
        validate::text("source", &new.source, 1, 100)?;
        validate::text("idempotency_key", &new.idempotency_key, 1, 200)?;
        validate::json_object("properties", &new.properties)?;
        validate::timestamp("occurred_at", &new.occurred_at)?;
        let tenant = self.0.tenant_id();
        // A concurrent insert of the same key makes this one wait for it and
        // then do nothing; the lookup below then sees the winner's row.
        let inserted = diesel::insert_into(events::table)
            .values((
                events::tenant_id.eq(tenant),
                events::id.eq(EventId::new()),
                events::customer_id.eq(new.customer_id),
                events::event_type.eq(&new.event_type),
                events::properties.eq(&new.properties),
                events::occurred_at.eq(new.occurred_at),
                events::source.eq(&new.source),
                events::idempotency_key.eq(&new.idempotency_key),
            ))
            .on_conflict((events::tenant_id, events::idempotency_key))
            .do_nothing()
            .returning(Event::as_returning())
            .get_result(self.0.db())
            .await
            .optional()?;
        if let Some(event) = inserted {
            return Ok(Ingested {
                event,
                created: true,
            });
        }
        // The same key must mean the same event: a sender that reuses a key
        // for another payload has a bug that a silent replay would hide. The
        // database compares, as it stored them (jsonb, microseconds).
        let same = events::customer_id
            .is_not_distinct_from(new.customer_id)
            .and(events::event_type.eq(&new.event_type))
            .and(events::properties.eq(&new.properties))
            .and(events::occurred_at.eq(new.occurred_at))
            .and(events::source.eq(&new.source));
        let (event, same): (Event, bool) = events::table
            .filter(events::tenant_id.eq(tenant))
            .filter(events::idempotency_key.eq(&new.idempotency_key))
            .select((Event::as_select(), same))
            .get_result(self.0.db())
            .await?;
        if !same {
            return Err(Error::Conflict {
                constraint: "events_tenant_idempotency_key".into(),
            });
        }
        Ok(Ingested {
            event,
            created: false,
        })
    }

    async fn list(&mut self, page: KeysetPage<EventId>) -> Result<Vec<Event>> {
        self.page(None, page).await
    }

    async fn list_for_customer(
        &mut self,
        customer_id: CustomerId,
        page: KeysetPage<EventId>,
    ) -> Result<Vec<Event>> {
        self.page(Some(customer_id), page).await
    }
}
