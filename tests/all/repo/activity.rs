//! Events, WhatsApp sessions and audit logs.

use crate::support::{invalid_field, two_tenants};
use chrono::{DateTime, Duration, Utc};
use loyalty_store::Cursor;
use loyalty_store::prelude::*;
use loyalty_store::testing::TestDb;
use serde_json::json;

fn event(key: &str, customer: Option<CustomerId>, at: DateTime<Utc>) -> NewEvent {
    NewEvent {
        customer_id: customer,
        event_type: "purchase".into(),
        properties: json!({"amount": 50}),
        occurred_at: at,
        source: "pos".into(),
        idempotency_key: key.into(),
    }
}

#[tokio::test]
async fn events_are_ingested_once_per_key() {
    let db = TestDb::new().await;
    let store = db.store();
    let (a, b) = two_tenants(store).await;
    let now = Utc::now();
    let mut tx = store.tenant(a).await.unwrap();
    let first = tx.events().ingest(event("k1", None, now)).await.unwrap();
    assert!(first.created);
    // The same event again (its time carries nanoseconds the database
    // does not keep): a replay.
    let again = tx.events().ingest(event("k1", None, now)).await.unwrap();
    assert!(!again.created);
    assert_eq!(again.event, first.event, "the first event stands");
    // The same key for another payload: a conflict, and the first stands.
    for other in [
        NewEvent {
            properties: json!({"amount": 99}),
            ..event("k1", None, now)
        },
        NewEvent {
            event_type: "refund".into(),
            ..event("k1", None, now)
        },
        event("k1", None, now + Duration::seconds(1)),
    ] {
        let conflict = tx.events().ingest(other).await;
        assert!(
            matches!(&conflict, Err(Error::Conflict { constraint }) if constraint == "events_tenant_idempotency_key"),
            "{conflict:?}"
        );
    }
    // A conflict is found by a read, so the guard goes on.
    for (input, field) in [
        (
            NewEvent {
                event_type: String::new(),
                ..event("k2", None, now)
            },
            "event_type",
        ),
        (
            NewEvent {
                source: "s".repeat(101),
                ..event("k2", None, now)
            },
            "source",
        ),
        (
            NewEvent {
                idempotency_key: String::new(),
                ..event("k2", None, now)
            },
            "idempotency_key",
        ),
        (
            NewEvent {
                properties: json!(null),
                ..event("k2", None, now)
            },
            "properties",
        ),
    ] {
        assert_eq!(invalid_field(tx.events().ingest(input).await), field);
    }
    assert_eq!(
        tx.events().list(KeysetPage::first(10)).await.unwrap().len(),
        1
    );
    tx.commit().await.unwrap();

    let mut tx = store.tenant(a).await.unwrap();
    let unknown = tx
        .events()
        .ingest(event("k3", Some(CustomerId::new()), now))
        .await;
    assert!(matches!(unknown, Err(Error::MissingReference { .. })));
    drop(tx);

    // The same key in another tenant is another event.
    let mut tx = store.tenant(b).await.unwrap();
    assert!(
        tx.events()
            .list(KeysetPage::first(10))
            .await
            .unwrap()
            .is_empty()
    );
    assert!(
        tx.events()
            .ingest(event("k1", None, now))
            .await
            .unwrap()
            .created
    );
    tx.commit().await.unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn concurrent_deliveries_of_one_key_store_one_event() {
    let db = TestDb::new().await;
    let store = db.store().clone();
    let (a, _) = two_tenants(&store).await;
    let now = Utc::now();
    let mut tasks = Vec::new();
    for _ in 0..8 {
        let store = store.clone();
        tasks.push(tokio::spawn(async move {
            let mut tx = store.tenant(a).await.unwrap();
            let outcome = tx.events().ingest(event("dup", None, now)).await.unwrap();
            tx.commit().await.unwrap();
            outcome
        }));
    }
    let mut outcomes = Vec::new();
    for task in tasks {
        outcomes.push(task.await.unwrap());
    }
    assert_eq!(outcomes.iter().filter(|o| o.created).count(), 1);
    assert!(outcomes.iter().all(|o| o.event == outcomes[0].event));
    let mut tx = store.tenant(a).await.unwrap();
    assert_eq!(
        tx.events()
            .list(KeysetPage::first(100))
            .await
            .unwrap()
            .len(),
        1
    );
}

#[tokio::test]
async fn event_keyset_pages_cover_every_row_once_even_with_equal_times() {
    let db = TestDb::new().await;
    let store = db.store();
    let (a, _) = two_tenants(store).await;
    let mut tx = store.tenant(a).await.unwrap();
    let ada = tx
        .customers()
        .create(NewCustomer::new("+15550000001"))
        .await
        .unwrap();
    let base = Utc::now();
    for n in 0..7 {
        // Pairs of events share a timestamp.
        let at = base - Duration::seconds(n / 2);
        let customer = (n % 2 == 0).then_some(ada.id);
        tx.events()
            .ingest(event(&format!("e{n}"), customer, at))
            .await
            .unwrap();
    }
    let mut seen = Vec::new();
    let mut page = KeysetPage::first(3);
    loop {
        let rows = tx.events().list(page).await.unwrap();
        if rows.is_empty() {
            break;
        }
        let last = rows.last().unwrap();
        page = KeysetPage::after(
            Cursor {
                at: last.occurred_at,
                id: last.id,
            },
            3,
        );
        seen.extend(rows);
    }
    assert_eq!(seen.len(), 7);
    assert!(
        seen.windows(2)
            .all(|w| (w[0].occurred_at, w[0].id) > (w[1].occurred_at, w[1].id))
    );
    let mine = tx
        .events()
        .list_for_customer(ada.id, KeysetPage::first(10))
        .await
        .unwrap();
    assert_eq!(mine.len(), 4);
    assert!(mine.iter().all(|e| e.customer_id == Some(ada.id)));
    assert_eq!(
        invalid_field(tx.events().list(KeysetPage::first(0)).await),
        "limit"
    );
}

fn session(wa_id: &str, state: &str) -> NewWaSession {
    NewWaSession {
        wa_id: wa_id.into(),
        customer_id: None,
        phone_e164: "+263771234567".into(),
        state: state.into(),
    }
}

#[tokio::test]
async fn wa_sessions_upsert_per_tenant() {
    let db = TestDb::new().await;
    let store = db.store();
    let (a, b) = two_tenants(store).await;
    let mut tx = store.tenant(a).await.unwrap();
    let created = tx
        .wa_sessions()
        .upsert(session("wa-1", "menu"))
        .await
        .unwrap();
    tx.commit().await.unwrap();
    let mut tx = store.tenant(a).await.unwrap();
    let moved = tx
        .wa_sessions()
        .upsert(session("wa-1", "checkout"))
        .await
        .unwrap();
    assert_eq!(moved.id, created.id);
    assert_eq!(moved.state, "checkout");
    assert!(moved.last_msg_at > created.last_msg_at);
    assert_eq!(tx.wa_sessions().get("wa-1").await.unwrap(), moved);
    let updated = tx.wa_sessions().update_state("wa-1", "done").await.unwrap();
    assert_eq!(updated.state, "done");
    assert!(matches!(
        tx.wa_sessions().get("wa-404").await,
        Err(Error::NotFound)
    ));
    assert!(matches!(
        tx.wa_sessions().update_state("wa-404", "x").await,
        Err(Error::NotFound)
    ));
    assert_eq!(
        invalid_field(tx.wa_sessions().upsert(session("", "menu")).await),
        "wa_id"
    );
    assert_eq!(
        invalid_field(tx.wa_sessions().upsert(session("wa-2", "")).await),
        "state"
    );
    assert_eq!(
        invalid_field(
            tx.wa_sessions()
                .upsert(NewWaSession {
                    phone_e164: "263".into(),
                    ..session("wa-2", "m")
                })
                .await
        ),
        "phone_e164"
    );
    assert_eq!(
        invalid_field(
            tx.wa_sessions()
                .update_state("wa-1", &"s".repeat(101))
                .await
        ),
        "state"
    );
    tx.commit().await.unwrap();

    // The seed's ON CONFLICT (wa_id) would have let B overwrite A's session.
    let mut tx = store.tenant(b).await.unwrap();
    assert!(matches!(
        tx.wa_sessions().get("wa-1").await,
        Err(Error::NotFound)
    ));
    let theirs = tx
        .wa_sessions()
        .upsert(session("wa-1", "welcome"))
        .await
        .unwrap();
    assert_ne!(theirs.id, created.id);
    tx.commit().await.unwrap();
    let mut tx = store.tenant(a).await.unwrap();
    assert_eq!(tx.wa_sessions().get("wa-1").await.unwrap().state, "done");
}

#[tokio::test]
async fn audit_logs_insert_and_list_a_time_range_in_pages() {
    let db = TestDb::new().await;
    let store = db.store();
    let (a, b) = two_tenants(store).await;
    let mut ids = Vec::new();
    for n in 0..5 {
        let mut tx = store.tenant(a).await.unwrap();
        let entry = NewAuditLog::new(Actor::Api, format!("thing.{n}"), "thing")
            .resource(uuid::Uuid::new_v4())
            .details(json!({"n": n}))
            .ip("203.0.113.7/32".parse().unwrap());
        ids.push(tx.audit_logs().insert(entry).await.unwrap().id);
        tx.commit().await.unwrap();
    }
    ids.reverse();
    let mut tx = store.tenant(a).await.unwrap();
    let all = TimeRange::new(Utc::now() - Duration::hours(1), Utc::now()).unwrap();
    let first = tx
        .audit_logs()
        .list(all, KeysetPage::first(2))
        .await
        .unwrap();
    let last = first.last().unwrap();
    let rest = tx
        .audit_logs()
        .list(
            all,
            KeysetPage::after(
                Cursor {
                    at: last.created_at,
                    id: last.id,
                },
                10,
            ),
        )
        .await
        .unwrap();
    let listed: Vec<_> = first.iter().chain(&rest).map(|e| e.id).collect();
    assert_eq!(listed, ids);
    assert_eq!(first[0].ip_address, Some("203.0.113.7/32".parse().unwrap()));
    let before = TimeRange::new(
        Utc::now() - Duration::hours(2),
        Utc::now() - Duration::hours(1),
    )
    .unwrap();
    assert!(
        tx.audit_logs()
            .list(before, KeysetPage::first(10))
            .await
            .unwrap()
            .is_empty()
    );
    assert!(matches!(
        TimeRange::new(Utc::now(), Utc::now() - Duration::seconds(1)),
        Err(Error::InvalidInput { field: "to", .. })
    ));
    for (entry, field) in [
        (NewAuditLog::new(Actor::System, "", "thing"), "action"),
        (NewAuditLog::new(Actor::System, "a", ""), "resource_type"),
        (
            NewAuditLog::new(Actor::System, "a", "thing").details(json!([1])),
            "details",
        ),
    ] {
        assert_eq!(invalid_field(tx.audit_logs().insert(entry).await), field);
    }
    drop(tx);

    let mut tx = store.tenant(b).await.unwrap();
    assert!(
        tx.audit_logs()
            .list(all, KeysetPage::first(10))
            .await
            .unwrap()
            .is_empty()
    );
}
