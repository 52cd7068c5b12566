//! Every repository call names its tenant, so on Citus each of its
//! statements runs on the one shard that holds the tenant's rows. Citus
//! raises an error for a statement that needs more than one task when
//! `citus.multi_task_query_log_level` is `error`; the test sets it in the
//! guard and calls every repository method. On plain PostgreSQL the setting
//! is an inert placeholder and the calls must simply succeed.

use chrono::{Duration, Utc};
use diesel_async::SimpleAsyncConnection;
use loyalty_store::prelude::*;
use loyalty_store::repo::consents::{Channel, NewConsent, Purpose};
use loyalty_store::repo::events::NewEvent;
use loyalty_store::repo::staff_users::{NewStaffUser, StaffRole, StaffStatus};
use loyalty_store::repo::wa_sessions::NewWaSession;
use loyalty_store::testing::{CampaignFixture, TestDb};
use loyalty_store::{KeysetPage, Page, TimeRange};
use serde_json::json;

use crate::support::{issue_to, money, on_citus};

async fn one_shard_guard(store: &Store, tenant: TenantId) -> TenantConn {
    let mut tx = store.tenant(tenant).await.unwrap();
    tx.conn()
        .batch_execute("SET LOCAL citus.multi_task_query_log_level = 'error'")
        .await
        .unwrap();
    tx
}

#[tokio::test]
async fn every_repository_call_runs_on_one_shard() {
    let db = TestDb::new().await;
    let store = db.store();
    let p = CampaignFixture::builder()
        .uses_codes()
        .voucher_codes(6)
        .customers(2)
        .create(store)
        .await
        .unwrap();
    let (ada, bob) = (p.customers[0], p.customers[1]);
    let now = Utc::now();
    let range = TimeRange::new(now - Duration::days(1), now + Duration::days(1)).unwrap();

    let mut tx = one_shard_guard(store, p.tenant).await;
    let customer = tx.customers().get(ada).await.unwrap();
    tx.customers()
        .find_by_phone(customer.phone_e164.as_deref().unwrap())
        .await
        .unwrap();
    tx.customers().list(KeysetPage::first(10)).await.unwrap();
    tx.customers()
        .update_attributes(bob, json!({"tier": "gold"}))
        .await
        .unwrap();
    tx.customers()
        .update_status(bob, CustomerStatus::Active)
        .await
        .unwrap();
    tx.customers()
        .create(NewCustomer::new("+15550009999"))
        .await
        .unwrap();

    let staff = tx
        .staff_users()
        .create(NewStaffUser {
            email: "till@example.com".into(),
            full_name: "Till".into(),
            role: StaffRole::Staff,
            pwd_hash: "h".into(),
        })
        .await
        .unwrap();
    tx.staff_users().get(staff.id).await.unwrap();
    tx.staff_users()
        .find_by_email("TILL@example.com")
        .await
        .unwrap();
    tx.staff_users().list(Page::first(10)).await.unwrap();
    tx.staff_users()
        .update_role(staff.id, StaffRole::Admin)
        .await
        .unwrap();
    tx.staff_users()
        .set_status(staff.id, StaffStatus::Disabled)
        .await
        .unwrap();

    tx.consents()
        .record(NewConsent {
            customer_id: ada,
            channel: Channel::Whatsapp,
            purpose: Purpose::Marketing,
            granted: true,
            occurred_at: now,
            source: None,
        })
        .await
        .unwrap();
    tx.consents().history(ada).await.unwrap();
    tx.consents()
        .latest(ada, Channel::Whatsapp, Purpose::Marketing)
        .await
        .unwrap();

    tx.rewards().get(p.reward).await.unwrap();
    tx.rewards().list_active().await.unwrap();
    tx.campaigns().get(p.campaign).await.unwrap();
    tx.campaigns().list(Page::first(10)).await.unwrap();
    tx.campaigns().list_active(now).await.unwrap();
    tx.campaigns()
        .update_status(p.campaign, CampaignStatus::Active)
        .await
        .unwrap();
    tx.rules().get(p.rule).await.unwrap();
    tx.rules().list_by_campaign(p.campaign).await.unwrap();
    tx.rules()
        .match_event("purchase", &json!({"amount": 12}), now)
        .await
        .unwrap();
    tx.rules().set_active(p.rule, true).await.unwrap();
    tx.rules().issuance_count(p.rule, range.from).await.unwrap();
    tx.rules()
        .customer_issuance_count(p.rule, ada)
        .await
        .unwrap();

    tx.budgets().get(p.budget).await.unwrap();
    tx.budgets().list(Page::first(10)).await.unwrap();
    tx.budgets()
        .top_up(p.budget, money("1.00"), uuid::Uuid::new_v4())
        .await
        .unwrap();
    tx.budgets()
        .ledger(p.budget, Page::first(10))
        .await
        .unwrap();

    let issued = tx
        .issuances()
        .issue(issue_to(&p, ada, "one-shard"))
        .await
        .unwrap()
        .issuance;
    tx.issuances().get(issued.id).await.unwrap();
    tx.issuances().find_by_key("one-shard").await.unwrap();
    tx.issuances()
        .list_for_customer(ada, KeysetPage::first(10))
        .await
        .unwrap();
    let code = issued.voucher_code_id.unwrap();
    tx.voucher_codes().mark_issued(code).await.unwrap();
    let code_text = tx.voucher_codes().get(code).await.unwrap().code;
    tx.issuances().find_by_code(&code_text).await.unwrap();
    tx.voucher_codes().counts(p.reward).await.unwrap();
    tx.voucher_codes()
        .import(p.reward, &["EXTRA-1".to_owned()])
        .await
        .unwrap();
    let extra = tx.voucher_codes().find("EXTRA-1").await.unwrap().unwrap();
    tx.voucher_codes().invalidate(extra.id).await.unwrap();
    tx.issuances().redeem(issued.id).await.unwrap();
    let second = tx
        .issuances()
        .issue(issue_to(&p, bob, "one-shard-2"))
        .await
        .unwrap()
        .issuance;
    tx.issuances().cancel(second.id).await.unwrap();
    let third = tx
        .issuances()
        .issue(issue_to(&p, bob, "one-shard-3"))
        .await
        .unwrap();
    tx.issuances()
        .redeem_code(third.voucher_code.as_deref().unwrap())
        .await
        .unwrap();
    tx.issuances()
        .reverse_redemption(third.issuance.id, std::time::Duration::from_secs(60))
        .await
        .unwrap();
    for (key, confirm) in [("hold-1", true), ("hold-2", false)] {
        let held = tx
            .issuances()
            .hold(NewHold {
                issuance: issue_to(&p, ada, key),
                hold_for: std::time::Duration::from_secs(60),
            })
            .await
            .unwrap();
        if confirm {
            tx.issuances().confirm_hold(held.issuance.id).await.unwrap();
        } else {
            tx.issuances().void_hold(held.issuance.id).await.unwrap();
        }
    }
    let message = tx
        .outbox()
        .enqueue(NewMessage {
            topic: "voucher.send".into(),
            key: "one-shard".into(),
            payload: json!({"code": "X"}),
        })
        .await
        .unwrap();
    tx.outbox()
        .claim(10, std::time::Duration::ZERO)
        .await
        .unwrap();
    tx.outbox()
        .retry_later(message.id, std::time::Duration::ZERO, "busy")
        .await
        .unwrap();
    tx.outbox().delivered(message.id).await.unwrap();
    tx.outbox().pending().await.unwrap();
    tx.savepoint(async |tx| tx.customers().get(ada).await)
        .await
        .unwrap();
    let leaving = tx
        .customers()
        .create(NewCustomer::new("+15550008888"))
        .await
        .unwrap();
    tx.customers().erase(leaving.id).await.unwrap();
    tx.issuances().expire_due(now, 10).await.unwrap();
    tx.budgets().verify_ledger().await.unwrap();

    let event = NewEvent {
        customer_id: Some(ada),
        event_type: "purchase".into(),
        properties: json!({"amount": 12}),
        occurred_at: now,
        source: "pos".into(),
        idempotency_key: "evt-1".into(),
    };
    tx.events().ingest(event.clone()).await.unwrap();
    tx.events().ingest(event).await.unwrap();
    tx.events().list(KeysetPage::first(10)).await.unwrap();
    tx.events()
        .list_for_customer(ada, KeysetPage::first(10))
        .await
        .unwrap();
    tx.wa_sessions()
        .upsert(NewWaSession {
            wa_id: "wa-1".into(),
            customer_id: Some(ada),
            phone_e164: customer.phone_e164.clone().unwrap(),
            state: "idle".into(),
        })
        .await
        .unwrap();
    tx.wa_sessions().get("wa-1").await.unwrap();
    tx.wa_sessions().update_state("wa-1", "menu").await.unwrap();
    tx.audit_logs()
        .insert(NewAuditLog::new(Actor::System, "test.ran", "test"))
        .await
        .unwrap();
    tx.audit_logs()
        .list(range, KeysetPage::first(10))
        .await
        .unwrap();
    tx.analytics().dashboard(range.from).await.unwrap();
    tx.analytics().redemption_rate(range).await.unwrap();
    tx.analytics().top_rewards(range, 5).await.unwrap();
    tx.commit().await.unwrap();

    // The check is live: on Citus a statement that leaves the tenant to
    // row-level security needs a task per shard, and is refused.
    let mut tx = one_shard_guard(store, p.tenant).await;
    let fan_out = tx
        .conn()
        .batch_execute("SELECT count(*) FROM customers")
        .await;
    assert_eq!(fan_out.is_err(), on_citus(), "{fan_out:?}");
}

/// On Citus the coordinator's tables are empty shells: the sizes must come
/// from the shards, where the rows are.
#[tokio::test]
async fn diagnostics_report_the_sizes_of_the_rows_wherever_they_live() {
    let db = TestDb::new().await;
    CampaignFixture::builder()
        .customers(2_000)
        .create(db.store())
        .await
        .unwrap();
    let diagnostics = db.store().diagnostics().await.unwrap();
    let customers = diagnostics
        .tables
        .iter()
        .find(|table| table.table == "customers")
        .expect("customers is reported");
    // 2,000 rows take well over 100 kB; the shell on a coordinator, one page.
    assert!(customers.table_bytes > 100_000, "{customers:?}");
    assert!(
        customers.total_bytes > customers.table_bytes,
        "{customers:?}"
    );
    let phone_index = diagnostics
        .indexes
        .iter()
        .find(|index| index.index == "customers_tenant_phone_key")
        .expect("the phone index is reported under its own name");
    assert!(phone_index.bytes > 40_000, "{phone_index:?}");
    assert_eq!(phone_index.table, "customers");
}
