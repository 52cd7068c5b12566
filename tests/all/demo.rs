//! The demo seeding function.

use loyalty_store::demo::{DEMO_TENANT, DemoSummary, seed_demo};
use loyalty_store::prelude::*;
use loyalty_store::testing::TestDb;

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
            rules: 3
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
    assert_eq!(total, 19);
}
