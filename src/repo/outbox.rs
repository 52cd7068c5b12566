//! The transactional outbox: messages written in the guard's transaction,
//! so one exists exactly when the work it reports committed, and delivered
//! by workers at least once (`examples/outbox_worker.rs`, docs/outbox.md).

use std::time::Duration;

use chrono::{DateTime, Utc};
use diesel::prelude::*;
use diesel::sql_types::{Double, Integer, Text, Uuid as SqlUuid};
use diesel_async::RunQueryDsl;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::error::{Error, Result};
use crate::ids::{OutboxMessageId, TenantId};
use crate::repo::tenants::{TenantPage, TenantRepository, TenantStatus};
use crate::schema::outbox_messages;
use crate::store::Store;
use crate::tenant::TenantConn;
use crate::validate;

/// A row of `outbox_messages`.
#[derive(
    Debug, Clone, PartialEq, Queryable, QueryableByName, Selectable, Serialize, Deserialize,
)]
#[diesel(table_name = outbox_messages, check_for_backend(diesel::pg::Pg))]
pub struct OutboxMessage {
    pub tenant_id: TenantId,
    pub id: OutboxMessageId,
    pub topic: String,
    /// The sender's key: the same for every delivery of the message, so the
    /// receiver can drop repeats.
    pub message_key: String,
    pub payload: Value,
    pub created_at: DateTime<Utc>,
    /// When the message may next be claimed.
    pub available_at: DateTime<Utc>,
    /// How many times it was claimed.
    pub attempts: i32,
    pub delivered_at: Option<DateTime<Utc>>,
    /// Why the last send failed, as [`OutboxRepository::retry_later`] was told.
    pub last_error: Option<String>,
}

/// Input for [`OutboxRepository::enqueue`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NewMessage {
    /// What the message is, for the worker to route it: `"voucher.send"`.
    pub topic: String,
    /// Unique per tenant: enqueueing the same message again is a replay.
    pub key: String,
    /// A JSON object.
    pub payload: Value,
}

/// The longest `last_error` kept, in characters.
pub const MAX_ERROR: usize = 1000;

/// The outbox of one tenant.
pub trait OutboxRepository {
    /// Writes a message in the guard's transaction. The same key with the
    /// same topic and payload returns the first message; with another, it
    /// is [`Error::Conflict`].
    fn enqueue(&mut self, new: NewMessage) -> impl Future<Output = Result<OutboxMessage>> + Send;
    /// Claims up to `limit` due messages, oldest first, skipping those
    /// another worker holds (`FOR UPDATE SKIP LOCKED`), and leases them for
    /// `lease`: commit the guard, send, then mark each
    /// [`delivered`](Self::delivered) in a new guard. A message not marked
    /// by the end of its lease is claimed again.
    fn claim(
        &mut self,
        limit: u32,
        lease: Duration,
    ) -> impl Future<Output = Result<Vec<OutboxMessage>>> + Send;
    /// Marks a message delivered; marking it again changes nothing.
    fn delivered(
        &mut self,
        id: OutboxMessageId,
    ) -> impl Future<Output = Result<OutboxMessage>> + Send;
    /// Makes a message whose send failed due again after `after`, noting
    /// `error` (its first [`MAX_ERROR`] characters). A delivered message is
    /// not sent again: [`Error::NotFound`].
    fn retry_later(
        &mut self,
        id: OutboxMessageId,
        after: Duration,
        error: &str,
    ) -> impl Future<Output = Result<OutboxMessage>> + Send;
    /// Messages not yet delivered.
    fn pending(&mut self) -> impl Future<Output = Result<i64>> + Send;
}

/// [`OutboxRepository`] on a tenant guard: `tx.outbox()`.
#[derive(Debug)]
pub struct Outbox<'t>(&'t mut TenantConn);

impl TenantConn {
    /// This tenant's outbox.
    pub fn outbox(&mut self) -> Outbox<'_> {
        Outbox(self)
    }
}

/// What one [`Store::deliver_outbox`] pass did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeliveryReport {
    /// Messages sent and marked delivered.
    pub delivered: u64,
    /// Messages whose send failed, due again after the retry delay.
    pub failed: u64,
    /// Claimed messages not sent because the lease ran out before their
    /// turn (sends slower than `lease / batch`); due again already.
    pub lapsed: u64,
}

/// How an outbox worker pass claims and retries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DeliveryPolicy {
    /// Messages claimed per tenant per pass.
    pub batch: u32,
    /// How long a claimed batch is held before another worker may take it:
    /// longer than sending the whole batch takes. A pass sends nothing of
    /// a batch once its lease has run out.
    pub lease: Duration,
    /// How long a failed message waits before it is due again.
    pub retry_after: Duration,
}

impl Default for DeliveryPolicy {
    fn default() -> Self {
        DeliveryPolicy {
            batch: 20,
            lease: Duration::from_secs(60),
            retry_after: Duration::from_secs(30),
        }
    }
}

impl Store {
    /// One pass of an outbox worker over every active tenant: claims each
    /// tenant's due messages (and commits the claim), calls `send` for each
    /// outside any transaction, then marks it delivered, or due again after
    /// `policy.retry_after` with the error `send` gave. Run it on a timer;
    /// any number of workers may run it at once, and none starts a send
    /// after its lease ran out. Delivery is at least once: a worker that
    /// dies between a send and its mark, or a send that outlasts the lease,
    /// leaves the message to be sent again, under the same `message_key`.
    pub async fn deliver_outbox<F>(
        &self,
        policy: DeliveryPolicy,
        mut send: F,
    ) -> Result<DeliveryReport>
    where
        F: AsyncFnMut(&OutboxMessage) -> std::result::Result<(), String>,
    {
        let mut report = DeliveryReport::default();
        let mut page = TenantPage::default();
        loop {
            let tenants = self.platform().list(page).await?;
            let Some(last) = tenants.last() else {
                return Ok(report);
            };
            page.after = Some(last.id);
            for tenant in tenants.iter().filter(|t| t.status == TenantStatus::Active) {
                let mut tx = self.tenant(tenant.id).await?;
                let claimed_at = std::time::Instant::now();
                let claimed = tx.outbox().claim(policy.batch, policy.lease).await?;
                tx.commit().await?;
                for message in &claimed {
                    // Past the lease another worker may hold the rest: they
                    // are left to whoever claims them next.
                    if claimed_at.elapsed() >= policy.lease {
                        report.lapsed += 1;
                        continue;
                    }
                    let outcome = send(message).await;
                    self.record_send(message, outcome, policy, &mut report)
                        .await?;
                }
            }
        }
    }

    /// Marks a sent message delivered, or a failed one due again later, in
    /// a guard of its own.
    async fn record_send(
        &self,
        message: &OutboxMessage,
        outcome: std::result::Result<(), String>,
        policy: DeliveryPolicy,
        report: &mut DeliveryReport,
    ) -> Result<()> {
        let mut tx = self.tenant(message.tenant_id).await?;
        match outcome {
            Ok(()) => {
                tx.outbox().delivered(message.id).await?;
                report.delivered += 1;
            }
            Err(error) => {
                let retried = tx
                    .outbox()
                    .retry_later(message.id, policy.retry_after, &error)
                    .await;
                // NotFound: delivered meanwhile by a worker that took it
                // over, so nothing to retry.
                if !matches!(retried, Ok(_) | Err(Error::NotFound)) {
                    return retried.map(drop);
                }
                report.failed += 1;
            }
        }
        tx.commit().await
    }
}

/// Seconds, as the SQL's `make_interval` takes them; refuses what
/// PostgreSQL's interval cannot hold.
fn seconds(field: &'static str, duration: Duration) -> Result<f64> {
    const MAX_SECONDS: f64 = 100.0 * 365.0 * 86_400.0;
    let secs = duration.as_secs_f64();
    if secs > MAX_SECONDS {
        return Err(Error::invalid(field, "must be at most 100 years"));
    }
    Ok(secs)
}

impl OutboxRepository for Outbox<'_> {
    async fn enqueue(&mut self, new: NewMessage) -> Result<OutboxMessage> {
        validate::text("topic", &new.topic, 1, 100)?;
        validate::text("key", &new.key, 1, 200)?;
        validate::json_object("payload", &new.payload)?;
        let tenant = self.0.tenant_id();
        let inserted = diesel::insert_into(outbox_messages::table)
            .values((
                outbox_messages::tenant_id.eq(tenant),
                outbox_messages::id.eq(OutboxMessageId::new()),
                outbox_messages::topic.eq(&new.topic),
                outbox_messages::message_key.eq(&new.key),
                outbox_messages::payload.eq(&new.payload),
            ))
            .on_conflict((outbox_messages::tenant_id, outbox_messages::message_key))
            .do_nothing()
            .returning(OutboxMessage::as_returning())
            .get_result(self.0.db())
            .await
            .optional()?;
        if let Some(message) = inserted {
            return Ok(message);
        }
        let same = outbox_messages::topic
            .eq(&new.topic)
            .and(outbox_messages::payload.eq(&new.payload));
        let (message, same): (OutboxMessage, bool) = outbox_messages::table
            .filter(outbox_messages::tenant_id.eq(tenant))
            .filter(outbox_messages::message_key.eq(&new.key))
            .select((OutboxMessage::as_select(), same))
            .get_result(self.0.db())
            .await?;
        if !same {
            return Err(Error::Conflict {
                constraint: "outbox_messages_tenant_key".into(),
            });
        }
        Ok(message)
    }

    async fn claim(&mut self, limit: u32, lease: Duration) -> Result<Vec<OutboxMessage>> {
        let limit = validate::page_limit(limit)?;
        let lease = seconds("lease", lease)?;
        let mut claimed: Vec<OutboxMessage> = diesel::sql_query(
            "UPDATE outbox_messages o \
                SET available_at = now() + make_interval(secs => $3), attempts = o.attempts + 1 \
               FROM (SELECT id FROM outbox_messages \
                      WHERE tenant_id = $1 AND delivered_at IS NULL AND available_at <= now() \
                      ORDER BY available_at, id \
                      LIMIT $2 \
                        FOR UPDATE SKIP LOCKED) due \
              WHERE o.tenant_id = $1 AND o.id = due.id \
          RETURNING o.tenant_id, o.id, o.topic, o.message_key, o.payload, o.created_at, \
                    o.available_at, o.attempts, o.delivered_at, o.last_error",
        )
        .bind::<SqlUuid, _>(self.0.tenant_id())
        .bind::<Integer, _>(limit as i32)
        .bind::<Double, _>(lease)
        .load(self.0.db())
        .await?;
        claimed.sort_by_key(|message| (message.created_at, message.id));
        Ok(claimed)
    }

    async fn delivered(&mut self, id: OutboxMessageId) -> Result<OutboxMessage> {
        let tenant = self.0.tenant_id();
        // Two statements rather than a coalesce() around now(), which Citus
        // refuses in an UPDATE; the second runs only for a replay.
        let marked = diesel::update(
            outbox_messages::table
                .filter(outbox_messages::tenant_id.eq(tenant))
                .filter(outbox_messages::id.eq(id))
                .filter(outbox_messages::delivered_at.is_null()),
        )
        .set(outbox_messages::delivered_at.eq(diesel::dsl::now))
        .returning(OutboxMessage::as_returning())
        .get_result(self.0.db())
        .await
        .optional()?;
        match marked {
            Some(message) => Ok(message),
            None => Ok(outbox_messages::table
                .filter(outbox_messages::tenant_id.eq(tenant))
                .filter(outbox_messages::id.eq(id))
                .select(OutboxMessage::as_select())
                .get_result(self.0.db())
                .await?),
        }
    }

    async fn retry_later(
        &mut self,
        id: OutboxMessageId,
        after: Duration,
        error: &str,
    ) -> Result<OutboxMessage> {
        let after = seconds("after", after)?;
        let error: String = error
            .chars()
            .filter(|c| *c != '\0')
            .take(MAX_ERROR)
            .collect();
        Ok(diesel::sql_query(
            "UPDATE outbox_messages \
                SET available_at = now() + make_interval(secs => $3), last_error = $4 \
              WHERE tenant_id = $1 AND id = $2 AND delivered_at IS NULL \
          RETURNING tenant_id, id, topic, message_key, payload, created_at, \
                    available_at, attempts, delivered_at, last_error",
        )
        .bind::<SqlUuid, _>(self.0.tenant_id())
        .bind::<SqlUuid, _>(id)
        .bind::<Double, _>(after)
        .bind::<Text, _>(error)
        .get_result(self.0.db())
        .await?)
    }

    async fn pending(&mut self) -> Result<i64> {
        Ok(outbox_messages::table
            .filter(outbox_messages::tenant_id.eq(self.0.tenant_id()))
            .filter(outbox_messages::delivered_at.is_null())
            .count()
            .get_result(self.0.db())
            .await?)
    }
}
