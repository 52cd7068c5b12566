//! Rules: which event earns which reward in a campaign, and how often.

use chrono::{DateTime, Utc};
use diesel::prelude::*;
use diesel_async::RunQueryDsl;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::conditions::Condition;
use crate::error::{Error, Result};
use crate::ids::{CampaignId, CustomerId, RewardId, RuleId, TenantId};
use crate::repo::audit_logs;
use crate::repo::campaigns::CampaignStatus;
use crate::schema::{campaigns, issuances, rules};
use crate::tenant::TenantConn;
use crate::validate;

diesel::define_sql_function! {
    #[sql_name = "loyalty.conditions_hold"]
    fn conditions_hold(conditions: diesel::sql_types::Jsonb, properties: diesel::sql_types::Jsonb) -> Bool;
}

/// A row of `rules`.
#[derive(Debug, Clone, PartialEq, Queryable, Selectable, Serialize, Deserialize)]
#[diesel(table_name = rules, check_for_backend(diesel::pg::Pg))]
pub struct Rule {
    pub tenant_id: TenantId,
    pub id: RuleId,
    pub campaign_id: CampaignId,
    pub name: String,
    pub event_type: String,
    pub conditions: Value,
    pub reward_id: RewardId,
    /// Most issuances one customer may get from this rule.
    pub per_customer_limit: Option<i32>,
    /// Most issuances this rule may make in total.
    pub global_limit: Option<i32>,
    pub active: bool,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

/// Input for [`RuleRepository::create`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NewRule {
    pub campaign_id: CampaignId,
    pub name: String,
    pub event_type: String,
    /// What an event's properties must meet, in the language of
    /// [`Condition`] (`json!({})`, or `Condition::gte("amount", 20).into()`).
    /// Anything outside it is refused with [`Error::InvalidInput`].
    pub conditions: Value,
    pub reward_id: RewardId,
    pub per_customer_limit: Option<i32>,
    pub global_limit: Option<i32>,
}

impl NewRule {
    fn validate(&self) -> Result<()> {
        validate::text("name", &self.name, 1, 200)?;
        validate::text("event_type", &self.event_type, 1, 100)?;
        validate::json_object("conditions", &self.conditions)?;
        Condition::parse(&self.conditions)?;
        for (field, limit) in [
            ("per_customer_limit", self.per_customer_limit),
            ("global_limit", self.global_limit),
        ] {
            if limit.is_some_and(|n| n < 1) {
                return Err(Error::invalid(field, "must be at least 1"));
            }
        }
        Ok(())
    }
}

/// Rules of one tenant.
///
/// Issuance counts leave out cancelled issuances: cancelling gives the
/// reward back, so it stops counting towards a limit.
pub trait RuleRepository {
    /// Adds an active rule.
    fn create(&mut self, new: NewRule) -> impl Future<Output = Result<Rule>> + Send;
    /// One rule, or [`crate::Error::NotFound`].
    fn get(&mut self, id: RuleId) -> impl Future<Output = Result<Rule>> + Send;
    /// Every rule of a campaign, oldest first.
    fn list_by_campaign(
        &mut self,
        campaign_id: CampaignId,
    ) -> impl Future<Output = Result<Vec<Rule>>> + Send;
    /// Active rules for `event_type` whose campaign is running at `at` and
    /// whose conditions the event's `properties` meet, evaluated in the same
    /// statement (`loyalty.conditions_hold`).
    fn match_event(
        &mut self,
        event_type: &str,
        properties: &Value,
        at: DateTime<Utc>,
    ) -> impl Future<Output = Result<Vec<Rule>>> + Send;
    /// Activates or deactivates a rule, audited as `rule.activated` or `rule.deactivated`.
    fn set_active(&mut self, id: RuleId, active: bool)
    -> impl Future<Output = Result<Rule>> + Send;
    /// Issuances made by this rule (not its whole campaign) since `since`.
    fn issuance_count(
        &mut self,
        id: RuleId,
        since: DateTime<Utc>,
    ) -> impl Future<Output = Result<i64>> + Send;
    /// Issuances this rule made to one customer.
    fn customer_issuance_count(
        &mut self,
        id: RuleId,
        customer_id: CustomerId,
    ) -> impl Future<Output = Result<i64>> + Send;
}

/// [`RuleRepository`] on a tenant guard: `tx.rules()`.
#[derive(Debug)]
pub struct Rules<'t>(&'t mut TenantConn);

impl TenantConn {
    /// This tenant's rules.
    pub fn rules(&mut self) -> Rules<'_> {
        Rules(self)
    }
}

impl RuleRepository for Rules<'_> {
    async fn create(&mut self, new: NewRule) -> Result<Rule> {
        new.validate()?;
        let tenant = self.0.tenant_id();
        Ok(diesel::insert_into(rules::table)
            .values((
                rules::tenant_id.eq(tenant),
                rules::id.eq(RuleId::new()),
                rules::campaign_id.eq(new.campaign_id),
                rules::name.eq(new.name),
                rules::event_type.eq(new.event_type),
                rules::conditions.eq(new.conditions),
                rules::reward_id.eq(new.reward_id),
                rules::per_customer_limit.eq(new.per_customer_limit),
                rules::global_limit.eq(new.global_limit),
            ))
            .returning(Rule::as_returning())
            .get_result(self.0.db())
            .await?)
    }

    async fn get(&mut self, id: RuleId) -> Result<Rule> {
        Ok(rules::table
            .filter(rules::tenant_id.eq(self.0.tenant_id()))
            .filter(rules::id.eq(id))
            .select(Rule::as_select())
            .get_result(self.0.db())
            .await?)
    }

    async fn list_by_campaign(&mut self, campaign_id: CampaignId) -> Result<Vec<Rule>> {
        Ok(rules::table
            .filter(rules::tenant_id.eq(self.0.tenant_id()))
            .filter(rules::campaign_id.eq(campaign_id))
            .order((rules::created_at, rules::id))
            .select(Rule::as_select())
            .load(self.0.db())
            .await?)
    }

    async fn match_event(
        &mut self,
        event_type: &str,
        properties: &Value,
        at: DateTime<Utc>,
    ) -> Result<Vec<Rule>> {
        let running = campaigns::table
            .filter(campaigns::tenant_id.eq(self.0.tenant_id()))
            .filter(campaigns::status.eq(CampaignStatus::Active))
            .filter(campaigns::start_at.is_null().or(campaigns::start_at.le(at)))
            .filter(campaigns::end_at.is_null().or(campaigns::end_at.ge(at)))
            .select(campaigns::id);
        Ok(rules::table
            .filter(rules::tenant_id.eq(self.0.tenant_id()))
            .filter(rules::event_type.eq(event_type))
            .filter(rules::active.eq(true))
            .filter(rules::campaign_id.eq_any(running))
            .filter(conditions_hold(rules::conditions, properties))
            .order((rules::created_at, rules::id))
            .select(Rule::as_select())
            .load(self.0.db())
            .await?)
    }

    async fn set_active(&mut self, id: RuleId, active: bool) -> Result<Rule> {
        let updated = diesel::update(
            rules::table
                .filter(rules::tenant_id.eq(self.0.tenant_id()))
                .filter(rules::id.eq(id)),
        )
        .set(rules::active.eq(active))
        .returning(Rule::as_returning())
        .get_result(self.0.db())
        .await?;
        let action = if active {
            "rule.activated"
        } else {
            "rule.deactivated"
        };
        audit_logs::record(self.0, action, "rule", id.0, json!({ "active": active })).await?;
        Ok(updated)
    }

    async fn issuance_count(&mut self, id: RuleId, since: DateTime<Utc>) -> Result<i64> {
        Ok(issuances::table
            .filter(issuances::tenant_id.eq(self.0.tenant_id()))
            .filter(issuances::rule_id.eq(id))
            .filter(issuances::issued_at.ge(since))
            .filter(issuances::status.ne("cancelled"))
            .count()
            .get_result(self.0.db())
            .await?)
    }

    async fn customer_issuance_count(
        &mut self,
        id: RuleId,
        customer_id: CustomerId,
    ) -> Result<i64> {
        // A literal, not a bind: the index that serves this count is partial
        // on `status <> 'cancelled'`, and a cached generic plan can use it
        // only if the query states that predicate with the same constant.
        let not_cancelled = diesel::dsl::sql::<diesel::sql_types::Bool>("status <> 'cancelled'");
        Ok(issuances::table
            .filter(issuances::tenant_id.eq(self.0.tenant_id()))
            .filter(issuances::rule_id.eq(id))
            .filter(issuances::customer_id.eq(customer_id))
            .filter(not_cancelled)
            .count()
            .get_result(self.0.db())
            .await?)
    }
}
