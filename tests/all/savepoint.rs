//! `tx.savepoint(..)`: a nested unit whose failure leaves the guard usable.

use chrono::Utc;
use diesel_async::SimpleAsyncConnection;
use loyalty_store::prelude::*;
use loyalty_store::testing::{CampaignFixture, TestDb};
use serde_json::json;

use crate::support::{assert_books_balance, issue_to};

fn purchase(key: &str, customer: CustomerId) -> NewEvent {
    NewEvent {
        customer_id: Some(customer),
        event_type: "purchase".into(),
        properties: json!({"amount": 50}),
        occurred_at: Utc::now(),
        source: "webhook".into(),
        idempotency_key: key.into(),
    }
}

#[tokio::test]
async fn a_refusal_inside_a_savepoint_keeps_what_the_guard_did_before() {
    let db = TestDb::new().await;
    let store = db.store();
    // One issuance per customer.
    let p = CampaignFixture::builder()
        .per_customer_limit(1)
        .customers(2)
        .create(store)
        .await
        .unwrap();
    let (ada, bo) = (p.customers[0], p.customers[1]);

    let mut tx = store.tenant(p.tenant).await.unwrap();
    tx.events().ingest(purchase("evt-ada", ada)).await.unwrap();
    let first = tx
        .savepoint(async |tx| tx.issuances().issue(issue_to(&p, ada, "ada")).await)
        .await
        .unwrap();
    tx.events()
        .ingest(purchase("evt-ada-2", ada))
        .await
        .unwrap();
    let second = tx
        .savepoint(async |tx| tx.issuances().issue(issue_to(&p, ada, "ada-2")).await)
        .await;
    assert!(
        matches!(
            second,
            Err(Error::Refused(Refusal::LimitReached {
                scope: LimitScope::Customer
            }))
        ),
        "{second:?}"
    );
    // A failed statement of the caller's own inside one: undone too.
    let broken = tx
        .savepoint(async |tx| Ok(tx.conn().batch_execute("SELECT * FROM nowhere").await?))
        .await;
    assert!(broken.is_err());
    // Nested: the inner failure is undone, the outer work kept.
    let outer = tx
        .savepoint(async |tx| {
            tx.customers()
                .update_attributes(bo, json!({"nested": "outer"}))
                .await?;
            let inner = tx
                .savepoint(async |tx| {
                    tx.customers()
                        .update_attributes(bo, json!({"nested": "inner"}))
                        .await?;
                    Err::<(), _>(Error::InvalidInput {
                        field: "test",
                        reason: "the inner unit gives up".into(),
                    })
                })
                .await;
            assert!(inner.is_err());
            tx.customers().get(bo).await
        })
        .await
        .unwrap();
    assert_eq!(outer.attributes, json!({"nested": "outer"}));
    tx.commit().await.unwrap();

    let mut tx = store.tenant(p.tenant).await.unwrap();
    let events = tx.events().list(KeysetPage::first(10)).await.unwrap();
    assert_eq!(events.len(), 2, "both events kept: {events:?}");
    let kept = tx.issuances().find_by_key("ada").await.unwrap().unwrap();
    assert_eq!(kept.id, first.issuance.id);
    assert!(tx.issuances().find_by_key("ada-2").await.unwrap().is_none());
    tx.commit().await.unwrap();
    assert_books_balance(store, p.tenant).await;
}

#[tokio::test]
async fn a_guard_with_a_savepoint_can_move_to_another_task() {
    let db = TestDb::new().await;
    let p = CampaignFixture::builder()
        .customers(1)
        .create(db.store())
        .await
        .unwrap();
    let store = db.store().clone();
    let customer = p.customers[0];
    // tokio::spawn needs the whole future, the savepoint's included, to be Send.
    let task = tokio::spawn(async move {
        let mut tx = store.tenant(p.tenant).await?;
        let updated = tx
            .savepoint(async |tx| {
                tx.customers()
                    .update_attributes(customer, json!({"spawned": true}))
                    .await
            })
            .await?;
        tx.commit().await?;
        Ok::<_, Error>(updated)
    });
    let updated = task.await.unwrap().unwrap();
    assert_eq!(updated.attributes, json!({"spawned": true}));
}

#[tokio::test]
async fn a_unit_that_hides_a_failure_is_undone_and_the_guard_goes_on() {
    let db = TestDb::new().await;
    let p = CampaignFixture::builder()
        .customers(1)
        .create(db.store())
        .await
        .unwrap();
    let ada = p.customers[0];
    let mut tx = db.store().tenant(p.tenant).await.unwrap();
    let swallowed = tx
        .savepoint(async |tx| {
            tx.customers()
                .update_attributes(ada, json!({"lost": true}))
                .await?;
            let _ignored = tx.conn().batch_execute("SELECT * FROM nowhere").await;
            Ok(())
        })
        .await;
    assert!(
        matches!(swallowed, Err(Error::TransactionAborted)),
        "{swallowed:?}"
    );
    let after = tx
        .customers()
        .update_attributes(ada, json!({"kept": true}))
        .await
        .unwrap();
    assert_eq!(after.attributes, json!({"kept": true}));
    tx.commit().await.unwrap();
}

#[tokio::test]
async fn a_savepoint_dropped_half_way_keeps_none_of_the_guard() {
    let db = TestDb::new().await;
    let p = CampaignFixture::builder()
        .customers(1)
        .create(db.store())
        .await
        .unwrap();
    let ada = p.customers[0];
    let mut tx = db.store().tenant(p.tenant).await.unwrap();
    tx.customers()
        .update_attributes(ada, json!({"before": true}))
        .await
        .unwrap();
    let timed_out = tokio::time::timeout(
        std::time::Duration::from_millis(50),
        tx.savepoint(async |tx| {
            tx.customers()
                .update_attributes(ada, json!({"half": true}))
                .await?;
            tokio::time::sleep(std::time::Duration::from_secs(5)).await;
            Ok(())
        }),
    )
    .await;
    assert!(timed_out.is_err());
    assert!(matches!(tx.commit().await, Err(Error::CallAbandoned)));
    let mut tx = db.store().tenant(p.tenant).await.unwrap();
    assert_eq!(
        tx.customers().get(ada).await.unwrap().attributes,
        json!({}),
        "nothing of the guard was kept"
    );
}
