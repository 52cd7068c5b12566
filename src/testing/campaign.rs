//! [`CampaignFixture`]: a tenant with a running campaign, built in one call.

use bigdecimal::BigDecimal;
use serde_json::json;

use crate::prelude::*;

/// A tenant with an active campaign drawing on a budget, one reward and one
/// rule that issues it, and optionally voucher codes and customers: what
/// most money-path tests and benchmarks start from.
///
/// ```no_run
/// # async fn demo(store: &loyalty_store::Store) -> loyalty_store::Result<()> {
/// use loyalty_store::testing::CampaignFixture;
///
/// let shop = CampaignFixture::builder()
///     .hard_cap(100)
///     .cost(3)
///     .voucher_codes(10)
///     .per_customer_limit(1)
///     .customers(3)
///     .create(store)
///     .await?;
/// let mut tx = store.tenant(shop.tenant).await?;
/// # Ok(()) }
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CampaignFixture {
    pub tenant: TenantId,
    pub budget: BudgetId,
    pub reward: RewardId,
    pub campaign: CampaignId,
    pub rule: RuleId,
    /// Active customers, with phones `+15550000000`, `+15550000001`, ...
    pub customers: Vec<CustomerId>,
}

/// Settings for [`CampaignFixture`]; every one has a default.
#[derive(Debug, Clone)]
pub struct CampaignBuilder {
    tenant: Option<TenantId>,
    currency: Currency,
    hard_cap: BigDecimal,
    cost: BigDecimal,
    uses_codes: bool,
    voucher_codes: usize,
    per_customer_limit: Option<i32>,
    global_limit: Option<i32>,
    customers: usize,
}

impl CampaignFixture {
    /// A builder with the defaults: a new tenant, USD, a hard cap of 1000, a
    /// reward costing 2.50 without codes, no limits, no customers.
    pub fn builder() -> CampaignBuilder {
        CampaignBuilder {
            tenant: None,
            currency: Currency::USD,
            hard_cap: BigDecimal::from(1000),
            cost: BigDecimal::new(250.into(), 2),
            uses_codes: false,
            voucher_codes: 0,
            per_customer_limit: None,
            global_limit: None,
            customers: 0,
        }
    }
}

impl CampaignBuilder {
    /// Builds in an existing tenant instead of creating one.
    pub fn in_tenant(mut self, tenant: TenantId) -> Self {
        self.tenant = Some(tenant);
        self
    }

    /// The currency of the budget and the reward.
    pub fn currency(mut self, currency: Currency) -> Self {
        self.currency = currency;
        self
    }

    /// The budget's hard cap.
    pub fn hard_cap(mut self, hard_cap: impl Into<BigDecimal>) -> Self {
        self.hard_cap = hard_cap.into();
        self
    }

    /// What one issuance of the reward costs.
    pub fn cost(mut self, cost: impl Into<BigDecimal>) -> Self {
        self.cost = cost.into();
        self
    }

    /// The reward hands out voucher codes; none are imported (see
    /// [`voucher_codes`](Self::voucher_codes)).
    pub fn uses_codes(mut self) -> Self {
        self.uses_codes = true;
        self
    }

    /// The reward hands out voucher codes, and `n` are imported:
    /// `CODE-000000`, `CODE-000001`, ...
    pub fn voucher_codes(mut self, n: usize) -> Self {
        self.uses_codes = true;
        self.voucher_codes = n;
        self
    }

    /// The rule's per-customer limit.
    pub fn per_customer_limit(mut self, limit: i32) -> Self {
        self.per_customer_limit = Some(limit);
        self
    }

    /// The rule's global limit.
    pub fn global_limit(mut self, limit: i32) -> Self {
        self.global_limit = Some(limit);
        self
    }

    /// How many active customers to create.
    pub fn customers(mut self, n: usize) -> Self {
        self.customers = n;
        self
    }

    /// Creates everything, committing once for the tenant and once for the
    /// rest.
    pub async fn create(self, store: &Store) -> Result<CampaignFixture> {
        let tenant = match self.tenant {
            Some(tenant) => tenant,
            None => {
                store
                    .platform()
                    .create(NewTenant::new("Fixture shop", self.currency))
                    .await?
                    .id
            }
        };
        let mut tx = store.tenant(tenant).await?;
        let budget = tx
            .budgets()
            .create(NewBudget {
                name: "Main".into(),
                currency: self.currency,
                hard_cap: self.hard_cap,
            })
            .await?
            .id;
        let reward = tx
            .rewards()
            .create(NewReward {
                name: "Coffee".into(),
                description: None,
                reward_type: RewardType::Voucher,
                cost_amount: self.cost,
                currency: self.currency,
                uses_codes: self.uses_codes,
            })
            .await?
            .id;
        let campaign = tx
            .campaigns()
            .create(NewCampaign {
                budget_id: Some(budget),
                status: CampaignStatus::Active,
                ..NewCampaign::draft("Launch")
            })
            .await?
            .id;
        let rule = tx
            .rules()
            .create(NewRule {
                campaign_id: campaign,
                name: "Purchase".into(),
                event_type: "purchase".into(),
                conditions: json!({}),
                reward_id: reward,
                per_customer_limit: self.per_customer_limit,
                global_limit: self.global_limit,
            })
            .await?
            .id;
        if self.voucher_codes > 0 {
            let codes: Vec<String> = (0..self.voucher_codes)
                .map(|i| format!("CODE-{i:06}"))
                .collect();
            tx.voucher_codes().import(reward, &codes).await?;
        }
        let mut customers = Vec::with_capacity(self.customers);
        for i in 0..self.customers {
            let phone = format!("+1555{i:07}");
            customers.push(tx.customers().create(NewCustomer::new(phone)).await?.id);
        }
        tx.commit().await?;
        Ok(CampaignFixture {
            tenant,
            budget,
            reward,
            campaign,
            rule,
            customers,
        })
    }
}
