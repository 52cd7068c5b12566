//! WhatsApp sessions: the conversation state per WhatsApp id, per tenant.

use chrono::{DateTime, Utc};
use diesel::prelude::*;
use diesel::upsert::excluded;
use diesel_async::RunQueryDsl;
use serde::{Deserialize, Serialize};

use crate::error::Result;
use crate::ids::{CustomerId, TenantId, WaSessionId};
use crate::schema::wa_sessions;
use crate::tenant::TenantConn;
use crate::validate;

/// A row of `wa_sessions`.
#[derive(Debug, Clone, PartialEq, Queryable, Selectable, Serialize, Deserialize)]
#[diesel(table_name = wa_sessions, check_for_backend(diesel::pg::Pg))]
pub struct WaSession {
    pub tenant_id: TenantId,
    pub id: WaSessionId,
    pub wa_id: String,
    pub customer_id: Option<CustomerId>,
    pub phone_e164: String,
    /// The conversation's state-machine node, for example `"menu"`.
    pub state: String,
    pub last_msg_at: DateTime<Utc>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

/// Input for [`WaSessionRepository::upsert`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NewWaSession {
    pub wa_id: String,
    pub customer_id: Option<CustomerId>,
    pub phone_e164: String,
    pub state: String,
}

/// WhatsApp sessions of one tenant. Two tenants may hold sessions with the
/// same WhatsApp id without touching each other.
pub trait WaSessionRepository {
    /// Creates the session, or moves an existing one to `state`; either way
    /// stamps `last_msg_at`.
    fn upsert(&mut self, new: NewWaSession) -> impl Future<Output = Result<WaSession>> + Send;
    /// The session for a WhatsApp id, or [`crate::Error::NotFound`].
    fn get(&mut self, wa_id: &str) -> impl Future<Output = Result<WaSession>> + Send;
    /// Moves a session to `state` and stamps `last_msg_at`, or
    /// [`crate::Error::NotFound`].
    fn update_state(
        &mut self,
        wa_id: &str,
        state: &str,
    ) -> impl Future<Output = Result<WaSession>> + Send;
}

/// [`WaSessionRepository`] on a tenant guard: `tx.wa_sessions()`.
#[derive(Debug)]
pub struct WaSessions<'t>(&'t mut TenantConn);

impl TenantConn {
    /// This tenant's WhatsApp sessions.
    pub fn wa_sessions(&mut self) -> WaSessions<'_> {
        WaSessions(self)
    }
}

fn validate_state(state: &str) -> Result<()> {
    validate::text("state", state, 1, 100)
}

impl WaSessionRepository for WaSessions<'_> {
    async fn upsert(&mut self, new: NewWaSession) -> Result<WaSession> {
        validate::text("wa_id", &new.wa_id, 1, 64)?;
        validate::e164("phone_e164", &new.phone_e164)?;
        validate_state(&new.state)?;
        let tenant = self.0.tenant_id();
        // Sessions are unique per (tenant_id, wa_id), so two tenants can hold
        // the same WhatsApp id: the conflict target names both columns.
        Ok(diesel::insert_into(wa_sessions::table)
            .values((
                wa_sessions::tenant_id.eq(tenant),
                wa_sessions::id.eq(WaSessionId::new()),
                wa_sessions::wa_id.eq(new.wa_id),
                wa_sessions::customer_id.eq(new.customer_id),
                wa_sessions::phone_e164.eq(new.phone_e164),
                wa_sessions::state.eq(new.state),
                wa_sessions::last_msg_at.eq(diesel::dsl::now),
            ))
            .on_conflict((wa_sessions::tenant_id, wa_sessions::wa_id))
            .do_update()
            .set((
                wa_sessions::state.eq(excluded(wa_sessions::state)),
                // The inserted row's time, not now() again: Citus refuses a
                // function that is not immutable in DO UPDATE SET.
                wa_sessions::last_msg_at.eq(excluded(wa_sessions::last_msg_at)),
            ))
            .returning(WaSession::as_returning())
            .get_result(self.0.db())
            .await?)
    }

    async fn get(&mut self, wa_id: &str) -> Result<WaSession> {
        Ok(wa_sessions::table
            .filter(wa_sessions::tenant_id.eq(self.0.tenant_id()))
            .filter(wa_sessions::wa_id.eq(wa_id))
            .select(WaSession::as_select())
            .get_result(self.0.db())
            .await?)
    }

    async fn update_state(&mut self, wa_id: &str, state: &str) -> Result<WaSession> {
        validate_state(state)?;
        Ok(diesel::update(
            wa_sessions::table
                .filter(wa_sessions::tenant_id.eq(self.0.tenant_id()))
                .filter(wa_sessions::wa_id.eq(wa_id)),
        )
        .set((
            wa_sessions::state.eq(state),
            wa_sessions::last_msg_at.eq(diesel::dsl::now),
        ))
        .returning(WaSession::as_returning())
        .get_result(self.0.db())
        .await?)
    }
}
