//! Shared test fixtures: a small loyalty programme (one tenant, a budget, a
//! reward, an active campaign and a rule, with knobs for each), and helpers.

#![allow(dead_code)] // each test binary uses its own subset

use bigdecimal::BigDecimal;
use loyalty_store::prelude::*;
use loyalty_store::repo::budgets::Budget;
use serde_json::json;

#[derive(Clone, Copy)]
pub struct Programme {
    pub tenant: TenantId,
    pub budget: BudgetId,
    pub reward: RewardId,
    pub campaign: CampaignId,
    pub rule: RuleId,
}

pub struct Knobs {
    pub hard_cap: i64,
    pub cost: &'static str,
    pub uses_codes: bool,
    pub per_customer_limit: Option<i32>,
    pub global_limit: Option<i32>,
}

impl Default for Knobs {
    fn default() -> Self {
        Knobs {
            hard_cap: 1000,
            cost: "2.50",
            uses_codes: false,
            per_customer_limit: None,
            global_limit: None,
        }
    }
}

pub async fn programme(store: &Store, knobs: Knobs) -> Programme {
    let usd: Currency = "USD".parse().unwrap();
    let tenant = store
        .platform()
        .create(NewTenant::new("Shop", usd))
        .await
        .unwrap()
        .id;
    let mut tx = store.tenant(tenant).await.unwrap();
    let budget = tx
        .budgets()
        .create(NewBudget {
            name: "Main".into(),
            currency: usd,
            hard_cap: BigDecimal::from(knobs.hard_cap),
        })
        .await
        .unwrap()
        .id;
    let reward = tx
        .rewards()
        .create(NewReward {
            name: "Coffee".into(),
            description: None,
            reward_type: RewardType::Voucher,
            cost_amount: knobs.cost.parse().unwrap(),
            currency: usd,
            uses_codes: knobs.uses_codes,
        })
        .await
        .unwrap()
        .id;
    let campaign = tx
        .campaigns()
        .create(NewCampaign {
            budget_id: Some(budget),
            status: CampaignStatus::Active,
            ..NewCampaign::draft("Launch")
        })
        .await
        .unwrap()
        .id;
    let rule = tx
        .rules()
        .create(NewRule {
            campaign_id: campaign,
            name: "Purchase".into(),
            event_type: "purchase".into(),
            conditions: json!({}),
            reward_id: reward,
            per_customer_limit: knobs.per_customer_limit,
            global_limit: knobs.global_limit,
        })
        .await
        .unwrap()
        .id;
    tx.commit().await.unwrap();
    Programme {
        tenant,
        budget,
        reward,
        campaign,
        rule,
    }
}

pub async fn customers(store: &Store, tenant: TenantId, n: usize) -> Vec<CustomerId> {
    let mut tx = store.tenant(tenant).await.unwrap();
    let mut ids = Vec::with_capacity(n);
    for i in 0..n {
        ids.push(
            tx.customers()
                .create(NewCustomer::new(format!("+1555{i:07}")))
                .await
                .unwrap()
                .id,
        );
    }
    tx.commit().await.unwrap();
    ids
}

pub async fn import_codes(store: &Store, p: &Programme, n: usize) {
    let codes: Vec<String> = (0..n).map(|i| format!("CODE-{i:06}")).collect();
    let mut tx = store.tenant(p.tenant).await.unwrap();
    tx.voucher_codes().import(p.reward, &codes).await.unwrap();
    tx.commit().await.unwrap();
}

pub fn issue_to(p: &Programme, customer: CustomerId, key: &str) -> NewIssuance {
    NewIssuance {
        rule_id: p.rule,
        customer_id: customer,
        idempotency_key: key.into(),
        expires_at: None,
    }
}

/// Issues in a guard of its own, as a service would.
pub async fn issue(
    store: &Store,
    p: &Programme,
    customer: CustomerId,
    key: &str,
) -> Result<loyalty_store::repo::issuances::Issued> {
    let mut tx = store.tenant(p.tenant).await?;
    let issued = tx.issuances().issue(issue_to(p, customer, key)).await?;
    tx.commit().await?;
    Ok(issued)
}

pub async fn budget(store: &Store, p: &Programme) -> Budget {
    let mut tx = store.tenant(p.tenant).await.unwrap();
    tx.budgets().get(p.budget).await.unwrap()
}

/// The ledger agrees with every budget, and no budget is over its cap.
pub async fn assert_books_balance(store: &Store, tenant: TenantId) {
    let mut tx = store.tenant(tenant).await.unwrap();
    let mismatches = tx.budgets().verify_ledger().await.unwrap();
    assert!(mismatches.is_empty(), "ledger disagrees: {mismatches:?}");
    tx.commit().await.unwrap();
}

/// Two tenants, for tests that show one cannot touch the other's rows.
pub async fn two_tenants(store: &Store) -> (TenantId, TenantId) {
    let usd: Currency = "USD".parse().unwrap();
    let a = store
        .platform()
        .create(NewTenant::new("A", usd))
        .await
        .unwrap()
        .id;
    let b = store
        .platform()
        .create(NewTenant::new("B", usd))
        .await
        .unwrap()
        .id;
    (a, b)
}

/// The field an `InvalidInput` error names, or a panic saying what came instead.
pub fn invalid_field<T: std::fmt::Debug>(outcome: Result<T>) -> &'static str {
    match outcome {
        Err(Error::InvalidInput { field, .. }) => field,
        other => panic!("expected InvalidInput, got {other:?}"),
    }
}

pub fn money(text: &str) -> BigDecimal {
    text.parse().unwrap()
}
