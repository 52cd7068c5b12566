//! Campaigns: a time window, a status and the budget their rewards draw on.

use chrono::{DateTime, Utc};
use diesel::prelude::*;
use diesel_async::RunQueryDsl;
use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::error::{Error, Result};
use crate::ids::{BudgetId, CampaignId, TenantId};
use crate::page::Page;
use crate::repo::audit_logs;
use crate::schema::campaigns;
use crate::tenant::TenantConn;
use crate::text_enum::text_enum;
use crate::validate;

text_enum! {
    /// Where a campaign is in its life.
    pub enum CampaignStatus {
        Draft => "draft",
        Active => "active",
        Paused => "paused",
        Ended => "ended",
    }
}

/// A row of `campaigns`.
#[derive(Debug, Clone, PartialEq, Queryable, Selectable, Serialize, Deserialize)]
#[diesel(table_name = campaigns, check_for_backend(diesel::pg::Pg))]
pub struct Campaign {
    pub tenant_id: TenantId,
    pub id: CampaignId,
    pub name: String,
    pub description: Option<String>,
    pub start_at: Option<DateTime<Utc>>,
    pub end_at: Option<DateTime<Utc>>,
    pub budget_id: Option<BudgetId>,
    pub status: CampaignStatus,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

impl Campaign {
    /// Whether the campaign is active and `at` falls inside its window.
    pub fn is_running_at(&self, at: DateTime<Utc>) -> bool {
        self.status == CampaignStatus::Active
            && self.start_at.is_none_or(|start| start <= at)
            && self.end_at.is_none_or(|end| at <= end)
    }
}

/// Input for [`CampaignRepository::create`]. A missing `start_at` or
/// `end_at` leaves that side of the window open.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NewCampaign {
    pub name: String,
    pub description: Option<String>,
    pub start_at: Option<DateTime<Utc>>,
    pub end_at: Option<DateTime<Utc>>,
    pub budget_id: Option<BudgetId>,
    pub status: CampaignStatus,
}

impl NewCampaign {
    /// A draft campaign with an open window and no budget.
    pub fn draft(name: impl Into<String>) -> Self {
        NewCampaign {
            name: name.into(),
            description: None,
            start_at: None,
            end_at: None,
            budget_id: None,
            status: CampaignStatus::Draft,
        }
    }

    fn validate(&self) -> Result<()> {
        validate::text("name", &self.name, 1, 200)?;
        validate::optional_text("description", self.description.as_deref(), 0, 2000)?;
        if let Some(start) = &self.start_at {
            validate::timestamp("start_at", start)?;
        }
        if let Some(end) = &self.end_at {
            validate::timestamp("end_at", end)?;
        }
        if let (Some(start), Some(end)) = (self.start_at, self.end_at)
            && end <= start
        {
            return Err(Error::invalid("end_at", "must be after start_at"));
        }
        Ok(())
    }
}

/// Campaigns of one tenant.
pub trait CampaignRepository {
    /// Creates a campaign; [`crate::Error::InvalidInput`] if `end_at` is not
    /// after `start_at`.
    fn create(&mut self, new: NewCampaign) -> impl Future<Output = Result<Campaign>> + Send;
    /// One campaign, or [`crate::Error::NotFound`].
    fn get(&mut self, id: CampaignId) -> impl Future<Output = Result<Campaign>> + Send;
    /// All campaigns, newest first.
    fn list(&mut self, page: Page) -> impl Future<Output = Result<Vec<Campaign>>> + Send;
    /// Campaigns running at `at` (active, and `at` inside the window),
    /// newest first.
    fn list_active(
        &mut self,
        at: DateTime<Utc>,
    ) -> impl Future<Output = Result<Vec<Campaign>>> + Send;
    /// Sets the status and returns the updated row, audited as
    /// `campaign.status_changed`.
    fn update_status(
        &mut self,
        id: CampaignId,
        status: CampaignStatus,
    ) -> impl Future<Output = Result<Campaign>> + Send;
}

/// [`CampaignRepository`] on a tenant guard: `tx.campaigns()`.
#[derive(Debug)]
pub struct Campaigns<'t>(&'t mut TenantConn);

impl TenantConn {
    /// This tenant's campaigns.
    pub fn campaigns(&mut self) -> Campaigns<'_> {
        Campaigns(self)
    }
}

impl CampaignRepository for Campaigns<'_> {
    async fn create(&mut self, new: NewCampaign) -> Result<Campaign> {
        new.validate()?;
        let tenant = self.0.tenant_id();
        Ok(diesel::insert_into(campaigns::table)
            .values((
                campaigns::tenant_id.eq(tenant),
                campaigns::id.eq(CampaignId::new()),
                campaigns::name.eq(new.name),
                campaigns::description.eq(new.description),
                campaigns::start_at.eq(new.start_at),
                campaigns::end_at.eq(new.end_at),
                campaigns::budget_id.eq(new.budget_id),
                campaigns::status.eq(new.status),
            ))
            .returning(Campaign::as_returning())
            .get_result(self.0.db())
            .await?)
    }

    async fn get(&mut self, id: CampaignId) -> Result<Campaign> {
        Ok(campaigns::table
            .filter(campaigns::tenant_id.eq(self.0.tenant_id()))
            .filter(campaigns::id.eq(id))
            .select(Campaign::as_select())
            .get_result(self.0.db())
            .await?)
    }

    async fn list(&mut self, page: Page) -> Result<Vec<Campaign>> {
        let limit = validate::page_limit(page.limit)?;
        Ok(campaigns::table
            .filter(campaigns::tenant_id.eq(self.0.tenant_id()))
            .order((campaigns::created_at.desc(), campaigns::id.desc()))
            .limit(limit)
            .offset(i64::from(page.offset))
            .select(Campaign::as_select())
            .load(self.0.db())
            .await?)
    }

    async fn list_active(&mut self, at: DateTime<Utc>) -> Result<Vec<Campaign>> {
        Ok(campaigns::table
            .filter(campaigns::tenant_id.eq(self.0.tenant_id()))
            .filter(campaigns::status.eq(CampaignStatus::Active))
            .filter(campaigns::start_at.is_null().or(campaigns::start_at.le(at)))
            .filter(campaigns::end_at.is_null().or(campaigns::end_at.ge(at)))
            .order((campaigns::created_at.desc(), campaigns::id.desc()))
            .select(Campaign::as_select())
            .load(self.0.db())
            .await?)
    }

    async fn update_status(&mut self, id: CampaignId, status: CampaignStatus) -> Result<Campaign> {
        let updated = diesel::update(
            campaigns::table
                .filter(campaigns::tenant_id.eq(self.0.tenant_id()))
                .filter(campaigns::id.eq(id)),
        )
        .set(campaigns::status.eq(status))
        .returning(Campaign::as_returning())
        .get_result(self.0.db())
        .await?;
        audit_logs::record(
            self.0,
            "campaign.status_changed",
            "campaign",
            id.0,
            json!({ "status": status }),
        )
        .await?;
        Ok(updated)
    }
}
