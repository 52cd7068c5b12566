//! The demo seeding function.

use loyalty_store::demo::{DEMO_TENANT, DemoSummary, seed_demo};
use loyalty_store::prelude::*;
use loyalty_store::testing::TestDb;
use serde_json::json;

#[tokio::test]
async fn seeding_twice_changes_nothing() {
    let db = TestDb::new().await;
    let first = seed_demo(db.store()).await.unwrap();
    assert_eq!(
        first,
        DemoSummary {
            tenant: 1,
            staff_users: 4,
            customers: 5,
            rewards: 3,
            budgets: 1,
            campaigns: 2,
            rules: 3,
            voucher_codes: 50,
        }
    );
    let mut tx = db.store().tenant(DEMO_TENANT).await.unwrap();
    let roles: Vec<StaffRole> = tx
        .staff_users()
        .list(Page::first(10))
        .await
        .unwrap()
        .into_iter()
        .map(|s| s.role)
        .collect();
    for role in StaffRole::ALL {
        assert!(roles.contains(role), "demo staff include a {role}");
    }
    tx.commit().await.unwrap();
    assert_eq!(seed_demo(db.store()).await.unwrap(), DemoSummary::default());
}

#[tokio::test(flavor = "multi_thread")]
async fn concurrent_seeders_insert_everything_once() {
    let db = TestDb::new().await;
    let (a, b) = tokio::join!(seed_demo(db.store()), seed_demo(db.store()));
    let total = a.unwrap().total() + b.unwrap().total();
    assert_eq!(total, 69);
}

#[tokio::test]
async fn every_demo_rule_means_what_it_says_and_can_issue() {
    let db = TestDb::new().await;
    seed_demo(db.store()).await.unwrap();
    let mut tx = db.store().tenant(DEMO_TENANT).await.unwrap();
    let now = chrono::Utc::now();
    let names = |rules: Vec<Rule>| rules.into_iter().map(|r| r.name).collect::<Vec<_>>();
    let big_weekend = json!({"amount": 25, "day": "sat"});
    assert_eq!(
        names(
            tx.rules()
                .match_event("purchase", &big_weekend, now)
                .await
                .unwrap()
        ),
        ["Discount on big orders", "Weekend cashback"]
    );
    let small_weekday = json!({"amount": 5, "day": "tue"});
    assert!(
        tx.rules()
            .match_event("purchase", &small_weekday, now)
            .await
            .unwrap()
            .is_empty()
    );
    let no_amount = json!({});
    assert!(
        tx.rules()
            .match_event("purchase", &no_amount, now)
            .await
            .unwrap()
            .is_empty(),
        "a purchase without an amount meets no minimum"
    );
    let signup = tx
        .rules()
        .match_event("signup", &json!({}), now)
        .await
        .unwrap();
    let customer = tx.customers().list(KeysetPage::first(1)).await.unwrap()[0].id;
    tx.commit().await.unwrap();

    let matched = [signup, {
        let mut tx = db.store().tenant(DEMO_TENANT).await.unwrap();
        tx.rules()
            .match_event("purchase", &big_weekend, now)
            .await
            .unwrap()
    }]
    .concat();
    assert_eq!(matched.len(), 3, "every demo rule");
    for rule in matched {
        let mut tx = db.store().tenant(DEMO_TENANT).await.unwrap();
        let issued = tx
            .issuances()
            .issue(NewIssuance {
                rule_id: rule.id,
                customer_id: customer,
                idempotency_key: format!("demo-{}", rule.id),
                expires_at: None,
            })
            .await
            .unwrap_or_else(|e| panic!("{} cannot issue: {e}", rule.name));
        tx.commit().await.unwrap();
        assert_eq!(
            issued.voucher_code.is_some(),
            rule.name == "Coffee on sign-up"
        );
    }
}
