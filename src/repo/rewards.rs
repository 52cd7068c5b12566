//! The reward catalog: what a tenant can give away, and what it costs.

use bigdecimal::BigDecimal;
use chrono::{DateTime, Utc};
use diesel::prelude::*;
use diesel_async::RunQueryDsl;
use serde::{Deserialize, Serialize};

use crate::error::Result;
use crate::ids::{RewardId, TenantId};
use crate::money::Currency;
use crate::schema::reward_catalog;
use crate::tenant::TenantConn;
use crate::text_enum::text_enum;
use crate::validate;

text_enum! {
    /// The kind of reward.
    pub enum RewardType {
        Voucher => "voucher",
        Discount => "discount",
        Cashback => "cashback",
        Points => "points",
        Physical => "physical",
    }
}

text_enum! {
    /// Whether new issuances may use the reward.
    pub enum RewardStatus {
        Active => "active",
        Archived => "archived",
    }
}

/// A row of `reward_catalog`.
#[derive(Debug, Clone, PartialEq, Queryable, Selectable, Serialize, Deserialize)]
#[diesel(table_name = reward_catalog, check_for_backend(diesel::pg::Pg))]
pub struct Reward {
    pub tenant_id: TenantId,
    pub id: RewardId,
    pub name: String,
    pub description: Option<String>,
    #[diesel(column_name = type_)]
    pub reward_type: RewardType,
    pub cost_amount: BigDecimal,
    pub currency: Currency,
    /// Whether each issuance hands out a code from the reward's voucher pool.
    pub uses_codes: bool,
    pub status: RewardStatus,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

/// Input for [`RewardRepository::create`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NewReward {
    pub name: String,
    pub description: Option<String>,
    pub reward_type: RewardType,
    /// What one issuance takes from a budget: positive, two decimals at most.
    pub cost_amount: BigDecimal,
    pub currency: Currency,
    pub uses_codes: bool,
}

/// The reward catalog of one tenant.
pub trait RewardRepository {
    /// Adds a reward.
    fn create(&mut self, new: NewReward) -> impl Future<Output = Result<Reward>> + Send;
    /// One reward, or [`crate::Error::NotFound`].
    fn get(&mut self, id: RewardId) -> impl Future<Output = Result<Reward>> + Send;
    /// Active rewards by name.
    fn list_active(&mut self) -> impl Future<Output = Result<Vec<Reward>>> + Send;
    /// Archives or re-activates a reward.
    fn set_status(
        &mut self,
        id: RewardId,
        status: RewardStatus,
    ) -> impl Future<Output = Result<Reward>> + Send;
}

/// [`RewardRepository`] on a tenant guard: `tx.rewards()`.
#[derive(Debug)]
pub struct Rewards<'t>(&'t mut TenantConn);

impl TenantConn {
    /// This tenant's reward catalog.
    pub fn rewards(&mut self) -> Rewards<'_> {
        Rewards(self)
    }
}

impl RewardRepository for Rewards<'_> {
    async fn create(&mut self, new: NewReward) -> Result<Reward> {
        validate::text("name", &new.name, 1, 200)?;
        validate::optional_text("description", new.description.as_deref(), 0, 2000)?;
        validate::amount("cost_amount", &new.cost_amount)?;
        let tenant = self.0.tenant_id();
        Ok(diesel::insert_into(reward_catalog::table)
            .values((
                reward_catalog::tenant_id.eq(tenant),
                reward_catalog::id.eq(RewardId::new()),
                reward_catalog::name.eq(new.name),
                reward_catalog::description.eq(new.description),
                reward_catalog::type_.eq(new.reward_type),
                reward_catalog::cost_amount.eq(new.cost_amount),
                reward_catalog::currency.eq(new.currency),
                reward_catalog::uses_codes.eq(new.uses_codes),
            ))
            .returning(Reward::as_returning())
            .get_result(self.0.db())
            .await?)
    }

    async fn get(&mut self, id: RewardId) -> Result<Reward> {
        Ok(reward_catalog::table
            .filter(reward_catalog::tenant_id.eq(self.0.tenant_id()))
            .filter(reward_catalog::id.eq(id))
            .select(Reward::as_select())
            .get_result(self.0.db())
            .await?)
    }

    async fn list_active(&mut self) -> Result<Vec<Reward>> {
        Ok(reward_catalog::table
            .filter(reward_catalog::tenant_id.eq(self.0.tenant_id()))
            .filter(reward_catalog::status.eq(RewardStatus::Active))
            .order((reward_catalog::name, reward_catalog::id))
            .select(Reward::as_select())
            .load(self.0.db())
            .await?)
    }

    async fn set_status(&mut self, id: RewardId, status: RewardStatus) -> Result<Reward> {
        Ok(diesel::update(
            reward_catalog::table
                .filter(reward_catalog::tenant_id.eq(self.0.tenant_id()))
                .filter(reward_catalog::id.eq(id)),
        )
        .set(reward_catalog::status.eq(status))
        .returning(Reward::as_returning())
        .get_result(self.0.db())
        .await?)
    }
}
