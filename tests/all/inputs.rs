//! Bad and edge inputs to every method that writes: a refusal is a typed
//! `InvalidInput` that writes nothing, and whatever is accepted reads back
//! equal.

use bigdecimal::BigDecimal;
use chrono::{DateTime, TimeZone, Utc};
use loyalty_store::MAX_JSON_DEPTH;
use loyalty_store::prelude::*;
use loyalty_store::repo::budgets::NewBudget;
use loyalty_store::testing::{CampaignFixture, TestDb};
use serde_json::{Value, json};

use crate::support::{invalid_field, issue_to, money};

/// Containers nested `depth` deep, objects and arrays in turn, the
/// outermost an object, with a little of everything at the bottom.
fn nested(depth: usize) -> Value {
    let mut value = json!({"text": "naïve ☕ \"quoted\"", "n": 1.5, "flag": null});
    for level in 2..=depth {
        value = if level == depth || level % 2 == 1 {
            json!({ "inner": value })
        } else {
            json!([value, 1, true])
        };
    }
    value
}

fn year(year: i32) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(year, 6, 1, 12, 0, 0).unwrap()
}

fn event(event_type: &str, key: &str) -> NewEvent {
    NewEvent {
        customer_id: None,
        event_type: event_type.into(),
        properties: json!({}),
        occurred_at: Utc::now(),
        source: "pos".into(),
        idempotency_key: key.into(),
    }
}

fn bad_json() -> Vec<(&'static str, Value)> {
    vec![
        ("too deep", nested(MAX_JSON_DEPTH + 1)),
        ("far too deep", nested(400)),
        ("NUL in a string", json!({"name": "a\u{0}b"})),
        ("NUL in a key", json!({"a\u{0}b": 1})),
        ("not an object", json!([1, 2])),
    ]
}

fn bad_text() -> Vec<String> {
    vec!["nul\u{0}inside".into(), "\u{0}".into()]
}

#[tokio::test]
async fn json_inputs_are_refused_before_anything_is_written() {
    let db = TestDb::new().await;
    let shop = CampaignFixture::builder()
        .customers(1)
        .create(db.store())
        .await
        .unwrap();
    let store = db.store();
    let mut tx = store.tenant(shop.tenant).await.unwrap();
    for (what, doc) in bad_json() {
        let field = invalid_field(
            tx.customers()
                .create(NewCustomer::new("+15551230001").attributes(doc.clone()))
                .await,
        );
        assert_eq!(field, "attributes", "{what}");
        let mut event = event("purchase", "e-1");
        event.properties = doc.clone();
        assert_eq!(
            invalid_field(tx.events().ingest(event).await),
            "properties",
            "{what}"
        );
        let mut entry = NewAuditLog::new(Actor::System, "edit", "thing");
        entry.details = doc.clone();
        assert_eq!(
            invalid_field(tx.audit_logs().insert(entry).await),
            "details",
            "{what}"
        );
        assert_eq!(
            invalid_field(
                store
                    .platform()
                    .create(NewTenant::new("Deep", "USD".parse().unwrap()).theme(doc.clone()))
                    .await
            ),
            "theme",
            "{what}"
        );
        assert_eq!(
            invalid_field(
                store
                    .platform()
                    .update_theme(shop.tenant, doc.clone())
                    .await
            ),
            "theme",
            "{what}"
        );
    }
    assert!(
        tx.customers()
            .find_by_phone("+15551230001")
            .await
            .unwrap()
            .is_none()
    );
    tx.commit().await.unwrap();
    assert_eq!(
        store
            .platform()
            .list(TenantPage::default())
            .await
            .unwrap()
            .len(),
        1
    );
}

#[tokio::test]
async fn text_with_nul_is_refused() {
    let db = TestDb::new().await;
    let shop = CampaignFixture::builder()
        .customers(1)
        .create(db.store())
        .await
        .unwrap();
    let mut tx = db.store().tenant(shop.tenant).await.unwrap();
    for text in bad_text() {
        assert_eq!(
            invalid_field(
                tx.staff_users()
                    .create(NewStaffUser {
                        email: "nul@example.com".into(),
                        full_name: text.clone(),
                        role: StaffRole::Viewer,
                        pwd_hash: "h".into(),
                    })
                    .await
            ),
            "full_name"
        );
        assert_eq!(
            invalid_field(tx.events().ingest(event(&text, "k")).await),
            "event_type"
        );
        assert_eq!(
            invalid_field(
                tx.voucher_codes()
                    .import(shop.reward, std::slice::from_ref(&text))
                    .await
            ),
            "codes"
        );
        assert_eq!(
            invalid_field(
                tx.issuances()
                    .issue(issue_to(&shop, shop.customers[0], &text))
                    .await
            ),
            "idempotency_key"
        );
    }
    tx.commit().await.unwrap();
}

#[tokio::test]
async fn times_outside_years_1_to_9999_are_refused_and_write_nothing() {
    let db = TestDb::new().await;
    let shop = CampaignFixture::builder()
        .customers(1)
        .create(db.store())
        .await
        .unwrap();
    let before = crate::support::budget(db.store(), &shop).await;
    let mut tx = db.store().tenant(shop.tenant).await.unwrap();
    for at in [year(10_000), year(-4_800), year(0)] {
        let mut late = event("purchase", "late");
        late.occurred_at = at;
        assert_eq!(invalid_field(tx.events().ingest(late).await), "occurred_at");
        let mut campaign = NewCampaign::draft("Far");
        campaign.start_at = Some(at);
        assert!(
            matches!(
                tx.campaigns().create(campaign).await,
                Err(Error::InvalidInput { .. })
            ),
            "{at}"
        );
        let consent = NewConsent {
            customer_id: shop.customers[0],
            channel: Channel::Whatsapp,
            purpose: Purpose::Marketing,
            granted: true,
            occurred_at: at,
            source: None,
        };
        assert_eq!(
            invalid_field(tx.consents().record(consent).await),
            "occurred_at"
        );
    }
    let mut late = issue_to(&shop, shop.customers[0], "year-10000");
    late.expires_at = Some(year(10_000));
    assert_eq!(
        invalid_field(tx.issuances().issue(late).await),
        "expires_at"
    );
    tx.commit().await.unwrap();
    assert_eq!(crate::support::budget(db.store(), &shop).await, before);
    crate::support::assert_books_balance(db.store(), shop.tenant).await;
}

#[tokio::test]
async fn a_total_past_numeric_18_2_is_invalid_input_and_changes_nothing() {
    let db = TestDb::new().await;
    let shop = CampaignFixture::builder().create(db.store()).await.unwrap();
    let huge: BigDecimal = "9999999999999999.99".parse().unwrap();
    let mut tx = db.store().tenant(shop.tenant).await.unwrap();
    let budget = tx
        .budgets()
        .create(NewBudget {
            name: "Huge".into(),
            currency: "USD".parse().unwrap(),
            hard_cap: huge.clone(),
        })
        .await
        .unwrap();
    tx.commit().await.unwrap();
    let mut tx = db.store().tenant(shop.tenant).await.unwrap();
    assert_eq!(
        invalid_field(
            tx.budgets()
                .top_up(budget.id, money("1"), uuid::Uuid::new_v4())
                .await
        ),
        "amount"
    );
    drop(tx);
    let mut tx = db.store().tenant(shop.tenant).await.unwrap();
    assert_eq!(tx.budgets().get(budget.id).await.unwrap().hard_cap, huge);
    assert!(tx.budgets().verify_ledger().await.unwrap().is_empty());
}

/// The edges that are accepted come back exactly as they went in.
#[tokio::test]
async fn accepted_edges_read_back_equal() {
    let db = TestDb::new().await;
    let shop = CampaignFixture::builder()
        .customers(1)
        .create(db.store())
        .await
        .unwrap();
    let deepest = nested(MAX_JSON_DEPTH);
    let mut tx = db.store().tenant(shop.tenant).await.unwrap();
    let customer = tx
        .customers()
        .create(NewCustomer::new("+15551230002").attributes(deepest.clone()))
        .await
        .unwrap();
    let mut edge = event("purchase ☕", "edge");
    edge.properties = deepest.clone();
    edge.occurred_at = Utc.with_ymd_and_hms(9999, 12, 31, 23, 59, 59).unwrap();
    tx.events().ingest(edge.clone()).await.unwrap();
    tx.commit().await.unwrap();
    let theme = store_theme(db.store(), shop.tenant, deepest.clone()).await;
    assert_eq!(theme, deepest);

    let mut tx = db.store().tenant(shop.tenant).await.unwrap();
    assert_eq!(
        tx.customers().get(customer.id).await.unwrap().attributes,
        deepest
    );
    // A second delivery returns the stored event.
    let read = tx.events().ingest(edge.clone()).await.unwrap();
    assert!(!read.created);
    assert_eq!(read.event.properties, deepest);
    assert_eq!(read.event.occurred_at, edge.occurred_at);
    assert_eq!(read.event.event_type, "purchase ☕");
}

async fn store_theme(store: &Store, tenant: TenantId, theme: Value) -> Value {
    store.platform().update_theme(tenant, theme).await.unwrap();
    store.platform().get(tenant).await.unwrap().theme
}
