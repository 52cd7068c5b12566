//! The transactional outbox: written with the work, claimed once at a time,
//! delivered at least once.

use std::time::Duration;

use loyalty_store::prelude::*;
use loyalty_store::repo::outbox::{DeliveryPolicy, DeliveryReport, OutboxMessage};
use loyalty_store::testing::{CampaignFixture, TestDb};
use serde_json::json;

use crate::support::{issue_to, two_tenants};

fn voucher_message(key: &str) -> NewMessage {
    NewMessage {
        topic: "voucher.send".into(),
        key: key.into(),
        payload: json!({"to": "+15550000001", "code": "CODE-1"}),
    }
}

#[tokio::test]
async fn a_message_exists_exactly_when_its_work_committed() {
    let db = TestDb::new().await;
    let store = db.store();
    let p = CampaignFixture::builder()
        .voucher_codes(2)
        .customers(1)
        .create(store)
        .await
        .unwrap();
    let ada = p.customers[0];

    let mut tx = store.tenant(p.tenant).await.unwrap();
    let issued = tx
        .issuances()
        .issue(issue_to(&p, ada, "rolled-back"))
        .await
        .unwrap();
    tx.outbox()
        .enqueue(voucher_message(&issued.issuance.id.to_string()))
        .await
        .unwrap();
    tx.rollback().await;

    let mut tx = store.tenant(p.tenant).await.unwrap();
    assert_eq!(tx.outbox().pending().await.unwrap(), 0);
    let issued = tx
        .issuances()
        .issue(issue_to(&p, ada, "kept"))
        .await
        .unwrap();
    let key = issued.issuance.id.to_string();
    let message = tx.outbox().enqueue(voucher_message(&key)).await.unwrap();
    // The same message again is a replay; another under its key a conflict.
    assert_eq!(
        tx.outbox().enqueue(voucher_message(&key)).await.unwrap(),
        message
    );
    let reused = tx
        .outbox()
        .enqueue(NewMessage {
            payload: json!({"other": true}),
            ..voucher_message(&key)
        })
        .await;
    assert!(
        matches!(&reused, Err(Error::Conflict { constraint }) if constraint == "outbox_messages_tenant_key"),
        "{reused:?}"
    );
    tx.commit().await.unwrap();

    let mut tx = store.tenant(p.tenant).await.unwrap();
    assert_eq!(tx.outbox().pending().await.unwrap(), 1);
    for (bad, field) in [
        (
            NewMessage {
                topic: String::new(),
                ..voucher_message("k")
            },
            "topic",
        ),
        (
            NewMessage {
                payload: json!([1]),
                ..voucher_message("k")
            },
            "payload",
        ),
    ] {
        assert_eq!(
            crate::support::invalid_field(tx.outbox().enqueue(bad).await),
            field
        );
    }
}

#[tokio::test]
async fn workers_claim_each_message_once_and_a_lapsed_lease_frees_it() {
    let db = TestDb::new().await;
    let store = db.store();
    let (a, b) = two_tenants(store).await;
    let mut tx = store.tenant(a).await.unwrap();
    for n in 0..5 {
        tx.outbox()
            .enqueue(voucher_message(&format!("m{n}")))
            .await
            .unwrap();
    }
    tx.commit().await.unwrap();

    // Two workers at once: the second skips what the first holds.
    let lease = Duration::from_secs(60);
    let mut first = store.tenant(a).await.unwrap();
    let mut second = store.tenant(a).await.unwrap();
    let mine = first.outbox().claim(2, lease).await.unwrap();
    let theirs = second.outbox().claim(10, lease).await.unwrap();
    let keys = |messages: &[loyalty_store::repo::outbox::OutboxMessage]| {
        messages
            .iter()
            .map(|m| m.message_key.clone())
            .collect::<Vec<_>>()
    };
    assert_eq!(keys(&mine), ["m0", "m1"], "oldest first");
    assert_eq!(keys(&theirs), ["m2", "m3", "m4"]);
    assert!(mine.iter().chain(&theirs).all(|m| m.attempts == 1));
    first.commit().await.unwrap();
    second.commit().await.unwrap();

    // Leased: nobody else gets them until the lease ends.
    let mut tx = store.tenant(a).await.unwrap();
    assert!(tx.outbox().claim(10, lease).await.unwrap().is_empty());
    let sent = tx.outbox().delivered(mine[0].id).await.unwrap();
    assert!(sent.delivered_at.is_some());
    assert_eq!(tx.outbox().delivered(mine[0].id).await.unwrap(), sent);
    let failed = tx
        .outbox()
        .retry_later(mine[1].id, Duration::ZERO, &"x".repeat(5000))
        .await
        .unwrap();
    assert_eq!(failed.last_error.map(|e| e.len()), Some(1000));
    assert!(matches!(
        tx.outbox()
            .retry_later(mine[0].id, Duration::ZERO, "late")
            .await,
        Err(Error::NotFound)
    ));
    tx.commit().await.unwrap();

    // The failed one is due again at once, and claimed a second time; the
    // delivered one never is.
    let mut tx = store.tenant(a).await.unwrap();
    let again = tx.outbox().claim(10, Duration::ZERO).await.unwrap();
    assert_eq!(keys(&again), ["m1"]);
    assert_eq!(again[0].attempts, 2);
    assert_eq!(tx.outbox().pending().await.unwrap(), 4);
    tx.commit().await.unwrap();

    let mut tx = store.tenant(b).await.unwrap();
    assert!(
        tx.outbox()
            .claim(10, Duration::ZERO)
            .await
            .unwrap()
            .is_empty()
    );
    assert!(matches!(
        tx.outbox().delivered(mine[1].id).await,
        Err(Error::NotFound)
    ));
}

#[tokio::test]
async fn a_worker_pass_sends_every_tenants_messages_and_retries_failures() {
    let db = TestDb::new().await;
    let store = db.store();
    let (a, b) = two_tenants(store).await;
    for (tenant, key) in [(a, "a-1"), (a, "a-2"), (b, "b-1")] {
        let mut tx = store.tenant(tenant).await.unwrap();
        tx.outbox().enqueue(voucher_message(key)).await.unwrap();
        tx.commit().await.unwrap();
    }
    let policy = DeliveryPolicy {
        retry_after: Duration::ZERO,
        ..DeliveryPolicy::default()
    };
    let mut sent = Vec::new();
    let report = store
        .deliver_outbox(policy, async |message: &OutboxMessage| {
            if message.message_key == "a-2" {
                return Err("the provider said 503".to_owned());
            }
            sent.push((message.tenant_id, message.message_key.clone()));
            Ok(())
        })
        .await
        .unwrap();
    assert_eq!(
        report,
        DeliveryReport {
            delivered: 2,
            failed: 1,
            lapsed: 0
        }
    );
    sent.sort();
    let mut expected = vec![(a, "a-1".to_owned()), (b, "b-1".to_owned())];
    expected.sort();
    assert_eq!(sent, expected);

    // The failure is due again at once; the delivered ones never are.
    let mut again = Vec::new();
    let report = store
        .deliver_outbox(policy, async |message: &OutboxMessage| {
            again.push(message.message_key.clone());
            Ok(())
        })
        .await
        .unwrap();
    assert_eq!(
        report,
        DeliveryReport {
            delivered: 1,
            failed: 0,
            lapsed: 0
        }
    );
    assert_eq!(again, ["a-2"]);
    let mut tx = store.tenant(a).await.unwrap();
    assert_eq!(tx.outbox().pending().await.unwrap(), 0);

    // Sends slower than the lease allows: the pass stops sending once the
    // lease has run out, and what it did not send is due again.
    let mut tx = store.tenant(a).await.unwrap();
    for key in ["slow-1", "slow-2", "slow-3"] {
        tx.outbox().enqueue(voucher_message(key)).await.unwrap();
    }
    tx.commit().await.unwrap();
    let short = DeliveryPolicy {
        lease: Duration::from_secs(1),
        ..policy
    };
    let report = store
        .deliver_outbox(short, async |_: &OutboxMessage| {
            tokio::time::sleep(Duration::from_millis(600)).await;
            Ok(())
        })
        .await
        .unwrap();
    assert_eq!(
        report,
        DeliveryReport {
            delivered: 2,
            failed: 0,
            lapsed: 1
        }
    );
    let mut tx = store.tenant(a).await.unwrap();
    assert_eq!(tx.outbox().pending().await.unwrap(), 1);
}
