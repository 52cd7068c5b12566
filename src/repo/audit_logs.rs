//! Audit logs: an append-only record of who did what.

use chrono::{DateTime, Utc};
use diesel::prelude::*;
use diesel_async::RunQueryDsl;
use ipnet::IpNet;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use uuid::Uuid;

use crate::error::Result;
use crate::ids::{AuditLogId, TenantId};
use crate::page::{KeysetPage, TimeRange};
use crate::schema::audit_logs;
use crate::tenant::{Actor, TenantConn};
use crate::validate;

/// A row of `audit_logs`.
#[derive(Debug, Clone, PartialEq, Queryable, Selectable, Serialize, Deserialize)]
#[diesel(table_name = audit_logs, check_for_backend(diesel::pg::Pg))]
pub struct AuditLog {
    pub tenant_id: TenantId,
    pub id: AuditLogId,
    pub actor_type: String,
    pub actor_id: Option<Uuid>,
    pub action: String,
    pub resource_type: String,
    pub resource_id: Option<Uuid>,
    pub details: Value,
    pub ip_address: Option<IpNet>,
    pub created_at: DateTime<Utc>,
}

/// Input for [`AuditLogRepository::insert`].
///
/// ```
/// # use loyalty_store::repo::audit_logs::NewAuditLog;
/// # use loyalty_store::Actor;
/// let entry = NewAuditLog::new(Actor::Api, "export.requested", "customers")
///     .details(serde_json::json!({"rows": 120}));
/// ```
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NewAuditLog {
    pub actor: Actor,
    pub action: String,
    pub resource_type: String,
    pub resource_id: Option<Uuid>,
    pub details: Value,
    pub ip_address: Option<IpNet>,
}

impl NewAuditLog {
    /// An entry with no resource id, empty details and no address.
    pub fn new(actor: Actor, action: impl Into<String>, resource_type: impl Into<String>) -> Self {
        NewAuditLog {
            actor,
            action: action.into(),
            resource_type: resource_type.into(),
            resource_id: None,
            details: Value::Object(Default::default()),
            ip_address: None,
        }
    }

    /// Names the affected row.
    pub fn resource(mut self, id: impl Into<Uuid>) -> Self {
        self.resource_id = Some(id.into());
        self
    }

    /// Attaches details, a JSON object.
    pub fn details(mut self, details: Value) -> Self {
        self.details = details;
        self
    }

    /// Records the client address.
    pub fn ip(mut self, ip: IpNet) -> Self {
        self.ip_address = Some(ip);
        self
    }

    fn validate(&self) -> Result<()> {
        validate::text("action", &self.action, 1, 100)?;
        validate::text("resource_type", &self.resource_type, 1, 100)?;
        validate::json_object("details", &self.details)
    }
}

/// The audit trail of one tenant.
pub trait AuditLogRepository {
    /// Appends an entry and returns it.
    fn insert(&mut self, new: NewAuditLog) -> impl Future<Output = Result<AuditLog>> + Send;
    /// Entries created within `range`, newest first, one keyset page at a
    /// time.
    fn list(
        &mut self,
        range: TimeRange,
        page: KeysetPage<AuditLogId>,
    ) -> impl Future<Output = Result<Vec<AuditLog>>> + Send;
}

/// [`AuditLogRepository`] on a tenant guard: `tx.audit_logs()`.
#[derive(Debug)]
pub struct AuditLogs<'t>(&'t mut TenantConn);

impl TenantConn {
    /// This tenant's audit trail.
    pub fn audit_logs(&mut self) -> AuditLogs<'_> {
        AuditLogs(self)
    }
}

impl AuditLogRepository for AuditLogs<'_> {
    async fn insert(&mut self, new: NewAuditLog) -> Result<AuditLog> {
        new.validate()?;
        let tenant = self.0.tenant_id();
        Ok(diesel::insert_into(audit_logs::table)
            .values((
                audit_logs::tenant_id.eq(tenant),
                audit_logs::id.eq(AuditLogId::new()),
                audit_logs::actor_type.eq(new.actor.kind()),
                audit_logs::actor_id.eq(new.actor.id()),
                audit_logs::action.eq(new.action),
                audit_logs::resource_type.eq(new.resource_type),
                audit_logs::resource_id.eq(new.resource_id),
                audit_logs::details.eq(new.details),
                audit_logs::ip_address.eq(new.ip_address),
            ))
            .returning(AuditLog::as_returning())
            .get_result(self.0.db())
            .await?)
    }

    async fn list(
        &mut self,
        range: TimeRange,
        page: KeysetPage<AuditLogId>,
    ) -> Result<Vec<AuditLog>> {
        let limit = validate::page_limit(page.limit)?;
        let mut query = audit_logs::table
            .filter(audit_logs::tenant_id.eq(self.0.tenant_id()))
            .filter(audit_logs::created_at.between(range.from, range.to))
            .order((audit_logs::created_at.desc(), audit_logs::id.desc()))
            .limit(limit)
            .select(AuditLog::as_select())
            .into_boxed();
        if let Some(after) = page.after {
            query = query.filter(
                audit_logs::created_at
                    .lt(after.at)
                    .or(audit_logs::created_at
                        .eq(after.at)
                        .and(audit_logs::id.lt(after.id))),
            );
        }
        Ok(query.load(self.0.db()).await?)
    }
}

/// Records a staff-initiated change in the same transaction as the change,
/// attributed to the guard's actor.
pub(crate) async fn record(
    tx: &mut TenantConn,
    action: &str,
    resource_type: &str,
    resource_id: Uuid,
    details: Value,
) -> Result<()> {
    let entry = NewAuditLog::new(tx.actor(), action, resource_type)
        .resource(resource_id)
        .details(details);
    tx.audit_logs().insert(entry).await.map(drop)
}
