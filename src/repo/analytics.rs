//! Dashboard figures over one tenant's data: counts, the redemption rate and
//! the most issued rewards.

use bigdecimal::BigDecimal;
use chrono::{DateTime, Utc};
use diesel::prelude::*;
use diesel::sql_types::{BigInt, Int8, Numeric, Text, Timestamptz, Uuid as SqlUuid};
use diesel_async::RunQueryDsl;
use serde::{Deserialize, Serialize};

use crate::error::Result;
use crate::ids::RewardId;
use crate::page::TimeRange;
use crate::repo::rewards::RewardType;
use crate::tenant::TenantConn;
use crate::validate;

/// Active customers now, and activity since a cut-off.
#[derive(Debug, Clone, Copy, PartialEq, Eq, QueryableByName, Serialize, Deserialize)]
pub struct DashboardStats {
    #[diesel(sql_type = BigInt)]
    pub active_customers: i64,
    /// Events that occurred since the cut-off.
    #[diesel(sql_type = BigInt)]
    pub events: i64,
    /// Issuances made since the cut-off, whatever became of them.
    #[diesel(sql_type = BigInt)]
    pub rewards_issued: i64,
    /// Issuances redeemed since the cut-off.
    #[diesel(sql_type = BigInt)]
    pub rewards_redeemed: i64,
}

/// How many of a window's issuances were redeemed.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct RedemptionRate {
    /// Every issuance made in the window, whatever its status now.
    pub issued: i64,
    /// Those of them that have been redeemed.
    pub redeemed: i64,
    /// `redeemed / issued * 100`, or 0 when nothing was issued.
    pub rate_percent: f64,
}

/// One reward's line in [`AnalyticsRepository::top_rewards`].
#[derive(Debug, Clone, PartialEq, QueryableByName, Serialize, Deserialize)]
pub struct TopReward {
    #[diesel(sql_type = SqlUuid)]
    pub reward_id: RewardId,
    #[diesel(sql_type = Text)]
    pub name: String,
    #[diesel(sql_type = Text)]
    pub reward_type: RewardType,
    #[diesel(sql_type = BigInt)]
    pub issuance_count: i64,
    #[diesel(sql_type = Numeric)]
    pub total_cost: BigDecimal,
}

#[derive(QueryableByName)]
struct Counts {
    #[diesel(sql_type = BigInt)]
    issued: i64,
    #[diesel(sql_type = BigInt)]
    redeemed: i64,
}

/// Analytics over one tenant.
pub trait AnalyticsRepository {
    /// Active customers now, and events, issuances and redemptions since `since`.
    fn dashboard(
        &mut self,
        since: DateTime<Utc>,
    ) -> impl Future<Output = Result<DashboardStats>> + Send;
    /// Of the issuances made in `range`, how many were redeemed.
    ///
    /// The rate divides by every issuance made in the window, whatever its
    /// status now: dividing by those still `issued` would leave out the
    /// redeemed ones and overstate the rate (to infinity once everything is
    /// redeemed).
    fn redemption_rate(
        &mut self,
        range: TimeRange,
    ) -> impl Future<Output = Result<RedemptionRate>> + Send;
    /// Rewards by issuances made in `range`, most first, including rewards
    /// with none: the window is a condition of the outer join, because in
    /// WHERE it would turn the join into an inner one and drop them.
    fn top_rewards(
        &mut self,
        range: TimeRange,
        limit: u32,
    ) -> impl Future<Output = Result<Vec<TopReward>>> + Send;
}

/// [`AnalyticsRepository`] on a tenant guard: `tx.analytics()`.
#[derive(Debug)]
pub struct Analytics<'t>(&'t mut TenantConn);

impl TenantConn {
    /// Analytics over this tenant's data.
    pub fn analytics(&mut self) -> Analytics<'_> {
        Analytics(self)
    }
}

impl AnalyticsRepository for Analytics<'_> {
    async fn dashboard(&mut self, since: DateTime<Utc>) -> Result<DashboardStats> {
        Ok(diesel::sql_query(
            "SELECT \
               (SELECT count(*) FROM customers \
                 WHERE tenant_id = $2 AND status = 'active') AS active_customers, \
               (SELECT count(*) FROM events \
                 WHERE tenant_id = $2 AND occurred_at >= $1) AS events, \
               (SELECT count(*) FROM issuances \
                 WHERE tenant_id = $2 AND issued_at >= $1) AS rewards_issued, \
               (SELECT count(*) FROM issuances \
                 WHERE tenant_id = $2 AND status = 'redeemed' AND redeemed_at >= $1) \
                 AS rewards_redeemed",
        )
        .bind::<Timestamptz, _>(since)
        .bind::<SqlUuid, _>(self.0.tenant_id())
        .get_result(self.0.db())
        .await?)
    }

    async fn redemption_rate(&mut self, range: TimeRange) -> Result<RedemptionRate> {
        let counts: Counts = diesel::sql_query(
            "SELECT count(*) AS issued, \
                    count(*) FILTER (WHERE status = 'redeemed') AS redeemed \
               FROM issuances WHERE tenant_id = $3 AND issued_at BETWEEN $1 AND $2",
        )
        .bind::<Timestamptz, _>(range.from)
        .bind::<Timestamptz, _>(range.to)
        .bind::<SqlUuid, _>(self.0.tenant_id())
        .get_result(self.0.db())
        .await?;
        let rate_percent = if counts.issued == 0 {
            0.0
        } else {
            counts.redeemed as f64 * 100.0 / counts.issued as f64
        };
        Ok(RedemptionRate {
            issued: counts.issued,
            redeemed: counts.redeemed,
            rate_percent,
        })
    }

    async fn top_rewards(&mut self, range: TimeRange, limit: u32) -> Result<Vec<TopReward>> {
        let limit = validate::page_limit(limit)?;
        Ok(diesel::sql_query(
            "SELECT r.id AS reward_id, r.name, r.type AS reward_type, \
                    count(i.id) AS issuance_count, \
                    coalesce(sum(i.cost_amount), 0) AS total_cost \
               FROM reward_catalog r \
               LEFT JOIN issuances i \
                 ON i.tenant_id = r.tenant_id AND i.reward_id = r.id \
                AND i.issued_at BETWEEN $1 AND $2 \
              WHERE r.tenant_id = $4 \
              GROUP BY r.tenant_id, r.id \
              ORDER BY issuance_count DESC, r.name, r.id \
              LIMIT $3",
        )
        .bind::<Timestamptz, _>(range.from)
        .bind::<Timestamptz, _>(range.to)
        .bind::<Int8, _>(limit)
        .bind::<SqlUuid, _>(self.0.tenant_id())
        .load(self.0.db())
        .await?)
    }
}
