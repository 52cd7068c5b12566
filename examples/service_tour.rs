//! The whole story a loyalty service runs, on the demo tenant of a fresh
//! database: a purchase webhook whose event meets a conditional rule, the
//! reward issued with its code written to the outbox in the same
//! transaction, an outbox worker sending it, the till redeeming it by code,
//! the redemption reversed, a checkout hold confirmed and another voided, a
//! customer erased, and the nightly expiry run. The books balance at the end.
//!
//! Uses `DATABASE_URL` and `MIGRATOR_DATABASE_URL` when set, like the
//! quickstart; otherwise a throwaway database.

use std::time::Duration;

use chrono::Utc;
use loyalty_store::demo::{DEMO_TENANT, seed_demo};
use loyalty_store::prelude::*;
use loyalty_store::repo::issuances::Issued;
use loyalty_store::repo::outbox::{DeliveryPolicy, OutboxMessage};
use loyalty_store::testing::TestDb;
use serde_json::json;

const TOPIC: &str = "reward.issued";

#[tokio::main]
async fn main() -> Result<()> {
    let (store, _throwaway) = TestDb::store_from_env_or_throwaway().await?;
    store.migrate().await?;
    seed_demo(&store).await?;
    let shopper = first_customers(&store, 4).await?;

    println!("\n1. A purchase webhook arrives");
    let purchase = NewEvent {
        customer_id: Some(shopper[0]),
        event_type: "purchase".into(),
        properties: json!({"amount": 27.5, "day": "sat", "order": "A-1001"}),
        occurred_at: Utc::now(),
        source: "webhook".into(),
        idempotency_key: format!("order-A-1001-{}", shopper[0]),
    };
    let issued = purchase_webhook(&store, &purchase).await?;
    // The shop's webhook is retried: nothing happens twice.
    let retried = purchase_webhook(&store, &purchase).await?;
    assert!(retried.iter().all(|i| i.replayed));
    let small = NewEvent {
        properties: json!({"amount": 4, "day": "tue"}),
        idempotency_key: format!("order-A-1002-{}", shopper[0]),
        ..purchase.clone()
    };
    assert!(purchase_webhook(&store, &small).await?.is_empty());
    println!("   a 4.00 purchase on a Tuesday meets no rule");

    println!("\n2. The sign-up reward, whose voucher code goes out through the outbox");
    let signup = NewEvent {
        event_type: "signup".into(),
        properties: json!({"channel": "whatsapp"}),
        idempotency_key: format!("signup-{}", shopper[1]),
        customer_id: Some(shopper[1]),
        ..purchase.clone()
    };
    let coffee = purchase_webhook(&store, &signup).await?;
    let code = coffee[0]
        .voucher_code
        .clone()
        .expect("the coffee has a code");
    let report = store
        .deliver_outbox(
            DeliveryPolicy::default(),
            async |message: &OutboxMessage| send_whatsapp(&store, message).await,
        )
        .await?;
    println!(
        "   outbox: {} sent, {} to retry",
        report.delivered, report.failed
    );

    println!("\n3. The till scans {code}");
    let mut tx = store.tenant_as(DEMO_TENANT, Actor::Api).await?;
    let at_till = tx.issuances().redeem_code(&code).await?;
    tx.commit().await?;
    println!(
        "   redeemed for customer {}",
        at_till.customer.phone_e164.as_deref().unwrap_or("-")
    );
    let mut tx = store.tenant(DEMO_TENANT).await?;
    match tx.issuances().redeem_code(&code).await {
        Err(Error::Refused(why)) => println!("   a second scan is refused: {why}"),
        other => panic!("a second scan went through: {other:?}"),
    }
    drop(tx);

    println!("\n4. The order is refunded: the redemption is reversed");
    let mut tx = store.tenant(DEMO_TENANT).await?;
    let reversed = tx
        .issuances()
        .reverse_redemption(at_till.issuance.issuance.id, Duration::from_secs(15 * 60))
        .await?;
    tx.commit().await?;
    println!(
        "   issuance {} is {} again",
        reversed.issuance.id, reversed.issuance.status
    );

    println!("\n5. Checkout holds: one confirmed, one voided");
    let discount = issued
        .iter()
        .find(|i| i.voucher_code.is_none())
        .expect("the discount rule matched")
        .issuance
        .rule_id;
    for (customer, pays) in [(shopper[2], true), (shopper[3], false)] {
        let mut tx = store.tenant(DEMO_TENANT).await?;
        let held = tx
            .issuances()
            .hold(NewHold {
                issuance: NewIssuance {
                    rule_id: discount,
                    customer_id: customer,
                    idempotency_key: format!("checkout-{customer}"),
                    expires_at: None,
                },
                hold_for: Duration::from_secs(10 * 60),
            })
            .await?;
        tx.commit().await?;
        let mut tx = store.tenant(DEMO_TENANT).await?;
        let settled = if pays {
            tx.issuances().confirm_hold(held.issuance.id).await?
        } else {
            tx.issuances().void_hold(held.issuance.id).await?
        };
        tx.commit().await?;
        println!(
            "   payment {}: hold {}",
            if pays { "completed" } else { "failed" },
            settled.issuance.status
        );
    }

    println!("\n6. A customer asks to be forgotten");
    let mut tx = store.tenant_as(DEMO_TENANT, Actor::Api).await?;
    let phone = tx.customers().get(shopper[3]).await?.phone_e164;
    let erased = tx.customers().erase(shopper[3]).await?;
    let found = match &phone {
        Some(phone) => tx.customers().find_by_phone(phone).await?,
        None => None,
    };
    tx.commit().await?;
    println!(
        "   customer {} is {}; found by phone: {}",
        erased.id,
        erased.status,
        found.is_some()
    );

    println!("\n7. The nightly expiry, run a year from now");
    let mut expired = 0;
    loop {
        let mut tx = store.tenant(DEMO_TENANT).await?;
        let n = tx
            .issuances()
            .expire_due(Utc::now() + chrono::Duration::days(366), 100)
            .await?;
        tx.commit().await?;
        expired += n;
        if n == 0 {
            break;
        }
    }
    println!("   {expired} issuance(s) expired");

    let mut tx = store.tenant(DEMO_TENANT).await?;
    let mismatches = tx.budgets().verify_ledger().await?;
    let budgets = tx.budgets().list(Page::first(10)).await?;
    tx.commit().await?;
    assert!(mismatches.is_empty(), "{mismatches:?}");
    for b in budgets {
        println!(
            "\nbudget {:?}: cap {} reserved {} spent {}; the ledger agrees",
            b.name, b.hard_cap, b.reserved, b.spent
        );
    }
    Ok(())
}

/// The demo's first `n` customers, oldest first.
async fn first_customers(store: &Store, n: usize) -> Result<Vec<CustomerId>> {
    let mut tx = store.tenant(DEMO_TENANT).await?;
    let mut all = tx.customers().list(KeysetPage::first(100)).await?;
    tx.commit().await?;
    all.reverse();
    Ok(all.into_iter().take(n).map(|c| c.id).collect())
}

/// What a service's webhook does: store the event once, find the rules it
/// meets, and give each reward in a guard of its own (one money call per
/// guard), with the message that tells the customer written alongside it.
/// A reward a rule refuses (a limit, an empty pool) is audited, not fatal:
/// the savepoint keeps the refusal from undoing the audit entry's guard.
async fn purchase_webhook(store: &Store, event: &NewEvent) -> Result<Vec<Issued>> {
    let mut tx = store.tenant_as(DEMO_TENANT, Actor::Api).await?;
    let ingested = tx.events().ingest(event.clone()).await?;
    let rules = tx
        .rules()
        .match_event(&event.event_type, &event.properties, event.occurred_at)
        .await?;
    tx.commit().await?;
    let customer = event
        .customer_id
        .expect("the demo's events name a customer");

    let mut issued = Vec::new();
    for rule in rules {
        let mut tx = store.tenant_as(DEMO_TENANT, Actor::Api).await?;
        let key = format!("{}:{}", event.idempotency_key, rule.id);
        let reward = tx
            .savepoint(async |tx| {
                let reward = tx
                    .issuances()
                    .issue(NewIssuance {
                        rule_id: rule.id,
                        customer_id: customer,
                        idempotency_key: key.clone(),
                        expires_at: Some(Utc::now() + chrono::Duration::days(30)),
                    })
                    .await?;
                if let Some(code) = &reward.voucher_code {
                    tx.outbox()
                        .enqueue(NewMessage {
                            topic: TOPIC.into(),
                            key: key.clone(),
                            payload: json!({
                                "customer_id": customer,
                                "code": code,
                                "voucher_code_id": reward.issuance.voucher_code_id,
                            }),
                        })
                        .await?;
                }
                Ok(reward)
            })
            .await;
        match reward {
            Ok(reward) => {
                println!(
                    "   event {} ({}) met {:?}: {}",
                    ingested.event.id,
                    if ingested.created { "new" } else { "replayed" },
                    rule.name,
                    if reward.replayed {
                        "already given"
                    } else {
                        "given"
                    }
                );
                issued.push(reward);
            }
            Err(Error::Refused(why)) => {
                tx.audit_logs()
                    .insert(
                        NewAuditLog::new(Actor::Api, "reward.refused", "rule")
                            .resource(rule.id.0)
                            .details(json!({ "reason": why.reason(), "key": key })),
                    )
                    .await?;
                println!("   {:?} refused: {why}", rule.name);
            }
            Err(other) => return Err(other),
        }
        tx.commit().await?;
    }
    Ok(issued)
}

/// The outbox worker's send: here a print standing in for WhatsApp. Once
/// sent, the code counts as delivered (`mark_issued`, idempotent, so a
/// retried send is safe): a cancel can then never put it back in the pool.
async fn send_whatsapp(store: &Store, message: &OutboxMessage) -> std::result::Result<(), String> {
    if message.topic != TOPIC {
        return Err(format!("no sender for topic {}", message.topic));
    }
    println!(
        "   WhatsApp to customer {}: your code is {}",
        message.payload["customer_id"], message.payload["code"]
    );
    let code: VoucherCodeId = message.payload["voucher_code_id"]
        .as_str()
        .and_then(|id| id.parse().ok())
        .ok_or("the message has no voucher code id")?;
    let delivered = async {
        let mut tx = store.tenant(message.tenant_id).await?;
        tx.voucher_codes().mark_issued(code).await?;
        tx.commit().await
    };
    delivered.await.map_err(|e| e.to_string())
}
