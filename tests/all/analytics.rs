//! Analytics on data whose answers are known by hand, including the cases the
//! seed's SQL got wrong.

use bigdecimal::BigDecimal;
use chrono::{Duration, Utc};
use diesel_async::SimpleAsyncConnection;
use loyalty_store::prelude::*;
use loyalty_store::repo::analytics::TopReward;
use loyalty_store::repo::budgets::{BudgetRepository, NewBudget};
use loyalty_store::testing::TestDb;
use serde_json::json;

struct World {
    tenant: TenantId,
    other: TenantId,
    coffee: RewardId,
    cake: RewardId,
    tea: RewardId,
}

/// Issuances in the last day: coffee ×3 (issued, redeemed, redeemed),
/// cake ×1 (cancelled), plus one cake issued 10 days ago; tea never.
async fn world(db: &TestDb) -> World {
    let store = db.store();
    let usd: Currency = "USD".parse().unwrap();
    let tenant = store
        .platform()
        .create(NewTenant::new("A", usd))
        .await
        .unwrap()
        .id;
    let other = store
        .platform()
        .create(NewTenant::new("B", usd))
        .await
        .unwrap()
        .id;
    let mut tx = store.tenant(tenant).await.unwrap();
    let mut reward = async |name: &str, cost: &str| {
        tx.rewards()
            .create(NewReward {
                name: name.into(),
                description: None,
                reward_type: RewardType::Voucher,
                cost_amount: cost.parse().unwrap(),
                currency: usd,
                uses_codes: false,
            })
            .await
            .unwrap()
            .id
    };
    let coffee = reward("Coffee", "2.50").await;
    let cake = reward("Cake", "4").await;
    let tea = reward("Tea", "1").await;
    let campaign = tx
        .campaigns()
        .create(NewCampaign::draft("C"))
        .await
        .unwrap()
        .id;
    let budget = tx
        .budgets()
        .create(NewBudget {
            name: "B".into(),
            currency: usd,
            hard_cap: 1000.into(),
        })
        .await
        .unwrap()
        .id;
    // An issuance names its rule's reward, so each reward gets a rule.
    let mut rule_for = std::collections::HashMap::new();
    for reward_id in [coffee, cake] {
        let rule = tx
            .rules()
            .create(NewRule {
                campaign_id: campaign,
                name: "r".into(),
                event_type: "purchase".into(),
                conditions: json!({}),
                reward_id,
                per_customer_limit: None,
                global_limit: None,
            })
            .await
            .unwrap()
            .id;
        rule_for.insert(reward_id, rule);
    }
    let mut customers = Vec::new();
    for (n, status) in [
        CustomerStatus::Active,
        CustomerStatus::Active,
        CustomerStatus::Blocked,
    ]
    .into_iter()
    .enumerate()
    {
        let c = tx
            .customers()
            .create(NewCustomer::new(format!("+1555000000{n}")))
            .await
            .unwrap();
        tx.customers().update_status(c.id, status).await.unwrap();
        customers.push(c.id);
    }
    let issuances = [
        (coffee, "issued", 1, "2.50"),
        (coffee, "redeemed", 2, "2.50"),
        (coffee, "redeemed", 3, "2.50"),
        (cake, "cancelled", 4, "4"),
        (cake, "issued", 240, "4"),
    ];
    let mut sql = String::new();
    for (n, (reward, status, hours_ago, cost)) in issuances.into_iter().enumerate() {
        let redeemed_at = if status == "redeemed" {
            "now()"
        } else {
            "NULL"
        };
        sql += &format!(
            "INSERT INTO issuances (tenant_id, campaign_id, rule_id, customer_id, reward_id, budget_id, \
             status, cost_amount, currency, idempotency_key, issued_at, redeemed_at) VALUES ('{tenant}', \
             '{campaign}', '{}', '{}', '{reward}', '{budget}', '{status}', {cost}, 'USD', 'k{n}', \
             now() - interval '{hours_ago} hours', {redeemed_at});",
            rule_for[&reward],
            customers[n % 2]
        );
    }
    for (n, hours_ago) in [1, 2, 48].into_iter().enumerate() {
        sql += &format!(
            "INSERT INTO events (tenant_id, event_type, occurred_at, source, idempotency_key) \
             VALUES ('{tenant}', 'purchase', now() - interval '{hours_ago} hours', 'pos', 'e{n}');"
        );
    }
    tx.commit().await.unwrap();
    // History, backfilled by the tables' owner: only the SQL layer's
    // functions may write issuances.
    let mut owner = db.admin_connection().await;
    owner.batch_execute(&sql).await.unwrap();
    World {
        tenant,
        other,
        coffee,
        cake,
        tea,
    }
}

fn last_day() -> TimeRange {
    TimeRange::new(Utc::now() - Duration::days(1), Utc::now()).unwrap()
}

#[tokio::test]
async fn dashboard_counts() {
    let db = TestDb::new().await;
    let w = world(&db).await;
    let mut tx = db.store().tenant(w.tenant).await.unwrap();
    let stats = tx
        .analytics()
        .dashboard(Utc::now() - Duration::days(1))
        .await
        .unwrap();
    assert_eq!(stats.active_customers, 2);
    assert_eq!(stats.events, 2);
    assert_eq!(stats.rewards_issued, 4);
    assert_eq!(stats.rewards_redeemed, 2);
    drop(tx);
    let mut tx = db.store().tenant(w.other).await.unwrap();
    let theirs = tx
        .analytics()
        .dashboard(Utc::now() - Duration::days(30))
        .await
        .unwrap();
    assert_eq!(
        (
            theirs.active_customers,
            theirs.events,
            theirs.rewards_issued
        ),
        (0, 0, 0)
    );
}

#[tokio::test]
async fn redemption_rate_counts_every_issuance_in_the_window() {
    let db = TestDb::new().await;
    let w = world(&db).await;
    let mut tx = db.store().tenant(w.tenant).await.unwrap();
    let rate = tx.analytics().redemption_rate(last_day()).await.unwrap();
    // 4 issued in the window, 2 redeemed. The seed's query would divide by the
    // 1 still in status 'issued' and report 200%.
    assert_eq!((rate.issued, rate.redeemed), (4, 2));
    assert!(
        (rate.rate_percent - 50.0).abs() < 1e-9,
        "{}",
        rate.rate_percent
    );
    let empty = TimeRange::new(
        Utc::now() - Duration::days(100),
        Utc::now() - Duration::days(99),
    )
    .unwrap();
    let none = tx.analytics().redemption_rate(empty).await.unwrap();
    assert_eq!((none.issued, none.redeemed, none.rate_percent), (0, 0, 0.0));
}

#[tokio::test]
async fn top_rewards_keep_rewards_with_no_issuances() {
    let db = TestDb::new().await;
    let w = world(&db).await;
    let mut tx = db.store().tenant(w.tenant).await.unwrap();
    let top = tx.analytics().top_rewards(last_day(), 10).await.unwrap();
    let line = |reward_id, name: &str, count, cost: &str| TopReward {
        reward_id,
        name: name.into(),
        reward_type: RewardType::Voucher,
        issuance_count: count,
        total_cost: cost.parse::<BigDecimal>().unwrap(),
    };
    // The seed's WHERE on the joined side would have dropped Tea entirely.
    assert_eq!(
        top,
        [
            line(w.coffee, "Coffee", 3, "7.50"),
            line(w.cake, "Cake", 1, "4"),
            line(w.tea, "Tea", 0, "0")
        ]
    );
    assert_eq!(
        tx.analytics()
            .top_rewards(last_day(), 1)
            .await
            .unwrap()
            .len(),
        1
    );
    assert!(matches!(
        tx.analytics().top_rewards(last_day(), 0).await,
        Err(Error::InvalidInput { field: "limit", .. })
    ));
    drop(tx);
    let mut tx = db.store().tenant(w.other).await.unwrap();
    assert!(
        tx.analytics()
            .top_rewards(last_day(), 10)
            .await
            .unwrap()
            .is_empty()
    );
}
