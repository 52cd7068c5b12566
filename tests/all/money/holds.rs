//! Holds for checkouts (hold, confirm, void, lapse) and reversed redemptions.

use std::time::Duration;

use chrono::Utc;
use loyalty_store::prelude::*;
use loyalty_store::testing::{CampaignFixture, TestDb};

use crate::support::{assert_books_balance, budget, issue, issue_to, money, refusal};

fn hold_of(p: &CampaignFixture, customer: CustomerId, key: &str, secs: u64) -> NewHold {
    NewHold {
        issuance: issue_to(p, customer, key),
        hold_for: Duration::from_secs(secs),
    }
}

#[tokio::test]
async fn a_hold_is_confirmed_or_voided_once_and_lapses_on_its_own() {
    let db = TestDb::new().await;
    let store = db.store();
    let p = CampaignFixture::builder()
        .voucher_codes(3)
        .customers(3)
        .create(store)
        .await
        .unwrap();
    let people = p.customers.clone();

    let mut tx = store.tenant(p.tenant).await.unwrap();
    let held = tx
        .issuances()
        .hold(hold_of(&p, people[0], "checkout-1", 600))
        .await
        .unwrap();
    assert_eq!(held.issuance.status, IssuanceStatus::Reserved);
    assert!(held.issuance.hold_expires_at.is_some());
    assert!(
        held.issuance.voucher_code_id.is_some(),
        "a hold reserves a code"
    );
    assert_eq!(held.voucher_code, None, "and shows it only once confirmed");
    // Replayed like an issuance, through any call, with the code still hidden.
    let again = tx
        .issuances()
        .hold(hold_of(&p, people[0], "checkout-1", 600))
        .await
        .unwrap();
    assert!(again.replayed);
    assert_eq!(again.voucher_code, None);
    let batch = tx
        .issuances()
        .issue_batch(NewBatch {
            recipients: vec![(people[0], "checkout-1".into())],
            ..NewBatch::for_customers(p.rule, &[], "")
        })
        .await
        .unwrap();
    assert_eq!(
        batch.items[0].outcome,
        loyalty_store::repo::issuances::BatchOutcome::Replayed(
            loyalty_store::repo::issuances::BatchIssuance {
                issuance_id: held.issuance.id,
                voucher_code: None,
            }
        )
    );
    tx.commit().await.unwrap();
    assert_eq!(budget(store, &p).await.reserved, money("2.50"));

    let mut tx = store.tenant(p.tenant).await.unwrap();
    assert_eq!(
        refusal(tx.issuances().redeem(held.issuance.id).await),
        Refusal::IssuanceNotIssued {
            status: IssuanceStatus::Reserved
        }
    );
    drop(tx);
    let mut tx = store.tenant(p.tenant).await.unwrap();
    let confirmed = tx.issuances().confirm_hold(held.issuance.id).await.unwrap();
    assert_eq!(confirmed.issuance.status, IssuanceStatus::Issued);
    assert!(confirmed.voucher_code.is_some());
    assert!(
        tx.issuances()
            .confirm_hold(held.issuance.id)
            .await
            .unwrap()
            .replayed
    );
    tx.commit().await.unwrap();
    let mut tx = store.tenant(p.tenant).await.unwrap();
    assert_eq!(
        refusal(tx.issuances().void_hold(held.issuance.id).await),
        Refusal::IssuanceNotIssued {
            status: IssuanceStatus::Issued
        }
    );
    drop(tx);

    // Voided: cancelled, the cost released, the code back in the pool.
    let mut tx = store.tenant(p.tenant).await.unwrap();
    let second = tx
        .issuances()
        .hold(hold_of(&p, people[1], "checkout-2", 600))
        .await
        .unwrap();
    tx.commit().await.unwrap();
    let mut tx = store.tenant(p.tenant).await.unwrap();
    let voided = tx.issuances().void_hold(second.issuance.id).await.unwrap();
    assert_eq!(voided.issuance.status, IssuanceStatus::Cancelled);
    assert!(
        tx.issuances()
            .void_hold(second.issuance.id)
            .await
            .unwrap()
            .replayed
    );
    assert_eq!(
        tx.voucher_codes().counts(p.reward).await.unwrap().available,
        2
    );
    tx.commit().await.unwrap();
    let mut tx = store.tenant(p.tenant).await.unwrap();
    assert_eq!(
        refusal(tx.issuances().confirm_hold(second.issuance.id).await),
        Refusal::IssuanceNotIssued {
            status: IssuanceStatus::Cancelled
        }
    );
    drop(tx);

    // Lapsed: cannot be confirmed, and the sweep voids it.
    let mut tx = store.tenant(p.tenant).await.unwrap();
    let third = tx
        .issuances()
        .hold(hold_of(&p, people[2], "checkout-3", 1))
        .await
        .unwrap();
    tx.commit().await.unwrap();
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let mut tx = store.tenant(p.tenant).await.unwrap();
    assert_eq!(
        refusal(tx.issuances().confirm_hold(third.issuance.id).await),
        Refusal::HoldExpired
    );
    drop(tx);
    let mut tx = store.tenant(p.tenant).await.unwrap();
    assert_eq!(tx.issuances().expire_due(Utc::now(), 10).await.unwrap(), 1);
    assert_eq!(
        tx.issuances().get(third.issuance.id).await.unwrap().status,
        IssuanceStatus::Cancelled
    );
    tx.commit().await.unwrap();

    let mut tx = store.tenant(p.tenant).await.unwrap();
    for secs in [0, 86_401] {
        assert_eq!(
            crate::support::invalid_field(
                tx.issuances()
                    .hold(hold_of(&p, people[2], "bad-hold", secs))
                    .await
            ),
            "hold_for"
        );
    }
    drop(tx);
    assert_eq!(budget(store, &p).await.reserved, money("2.50"));
    assert_books_balance(store, p.tenant).await;
}

#[tokio::test]
async fn a_redemption_is_reversed_once_within_its_window() {
    let db = TestDb::new().await;
    let store = db.store();
    let p = CampaignFixture::builder()
        .customers(2)
        .create(store)
        .await
        .unwrap();
    let hour = Duration::from_secs(3600);
    let issued = issue(store, &p, p.customers[0], "refund-me").await.unwrap();
    let id = issued.issuance.id;

    let mut tx = store.tenant(p.tenant).await.unwrap();
    assert_eq!(
        refusal(tx.issuances().reverse_redemption(id, hour).await),
        Refusal::NotRedeemed {
            status: IssuanceStatus::Issued
        }
    );
    drop(tx);
    let mut tx = store.tenant(p.tenant).await.unwrap();
    tx.issuances().redeem(id).await.unwrap();
    tx.commit().await.unwrap();
    assert_eq!(budget(store, &p).await.spent, money("2.50"));

    let mut tx = store.tenant(p.tenant).await.unwrap();
    let reversed = tx.issuances().reverse_redemption(id, hour).await.unwrap();
    assert_eq!(reversed.issuance.status, IssuanceStatus::Issued);
    assert!(reversed.issuance.reversed_at.is_some());
    assert_eq!(reversed.issuance.redeemed_at, None);
    assert!(
        tx.issuances()
            .reverse_redemption(id, hour)
            .await
            .unwrap()
            .replayed
    );
    tx.commit().await.unwrap();
    let b = budget(store, &p).await;
    assert_eq!((b.reserved, b.spent), (money("2.50"), money("0")));
    assert_books_balance(store, p.tenant).await;

    // Redeemed again: a second settlement of the reopened reservation.
    let mut tx = store.tenant(p.tenant).await.unwrap();
    tx.issuances().redeem(id).await.unwrap();
    tx.commit().await.unwrap();
    let mut tx = store.tenant(p.tenant).await.unwrap();
    assert_eq!(
        refusal(tx.issuances().reverse_redemption(id, hour).await),
        Refusal::AlreadyReversed
    );
    drop(tx);
    let b = budget(store, &p).await;
    assert_eq!((b.reserved, b.spent), (money("0"), money("2.50")));
    assert_books_balance(store, p.tenant).await;

    // Outside the window.
    let late = issue(store, &p, p.customers[1], "too-late").await.unwrap();
    let mut tx = store.tenant(p.tenant).await.unwrap();
    tx.issuances().redeem(late.issuance.id).await.unwrap();
    tx.commit().await.unwrap();
    let mut tx = store.tenant(p.tenant).await.unwrap();
    assert!(matches!(
        refusal(
            tx.issuances()
                .reverse_redemption(late.issuance.id, Duration::ZERO)
                .await
        ),
        Refusal::ReversalWindowClosed { .. }
    ));
}

/// Reversal, cancel and expiry of the same redeemed issuances, at once:
/// whatever order the locks give them, every budget still matches its
/// ledger, and each issuance ends in a state its history explains.
#[tokio::test]
async fn reversals_racing_cancels_and_expiry_keep_the_books() {
    let db = TestDb::new().await;
    let store = db.store();
    let n = 12;
    let p = CampaignFixture::builder()
        .customers(n)
        .create(store)
        .await
        .unwrap();
    let mut ids = Vec::new();
    for (k, customer) in p.customers.iter().enumerate() {
        let mut tx = store.tenant(p.tenant).await.unwrap();
        let issued = tx
            .issuances()
            .issue(NewIssuance {
                expires_at: Some(Utc::now() + chrono::Duration::hours(1)),
                ..issue_to(&p, *customer, &format!("race-{k}"))
            })
            .await
            .unwrap();
        tx.issuances().redeem(issued.issuance.id).await.unwrap();
        tx.commit().await.unwrap();
        ids.push(issued.issuance.id);
    }
    let mut tasks = tokio::task::JoinSet::new();
    for id in ids.clone() {
        let (reverser, tenant) = (store.clone(), p.tenant);
        tasks.spawn(async move {
            let mut tx = reverser.tenant(tenant).await?;
            tx.issuances()
                .reverse_redemption(id, Duration::from_secs(600))
                .await?;
            tx.commit().await
        });
        let canceller = store.clone();
        tasks.spawn(async move {
            let mut tx = canceller.tenant(tenant).await?;
            tx.issuances().cancel(id).await?;
            tx.commit().await
        });
    }
    let sweeper = store.clone();
    let tenant = p.tenant;
    tasks.spawn(async move {
        let mut tx = sweeper.tenant(tenant).await?;
        tx.issuances()
            .expire_due(Utc::now() + chrono::Duration::hours(2), 100)
            .await?;
        tx.commit().await
    });
    while let Some(outcome) = tasks.join_next().await {
        match outcome.unwrap() {
            Ok(()) | Err(Error::Refused(_)) => {}
            Err(other) => panic!("{other}"),
        }
    }
    assert_books_balance(store, p.tenant).await;
    let mut tx = store.tenant(p.tenant).await.unwrap();
    for id in ids {
        let i = tx.issuances().get(id).await.unwrap();
        match i.status {
            IssuanceStatus::Redeemed => assert!(i.reversed_at.is_none()),
            IssuanceStatus::Issued | IssuanceStatus::Cancelled | IssuanceStatus::Expired => {
                assert!(i.reversed_at.is_some(), "{i:?}")
            }
            IssuanceStatus::Reserved => panic!("{i:?}"),
        }
    }
}

/// A code the customer held (redeemed, reversed, then cancelled) is
/// withdrawn, never handed to the next customer.
#[tokio::test]
async fn a_reversed_then_cancelled_voucher_keeps_its_code_out_of_the_pool() {
    let db = TestDb::new().await;
    let store = db.store();
    let p = CampaignFixture::builder()
        .voucher_codes(2)
        .customers(2)
        .create(store)
        .await
        .unwrap();
    let first = issue(store, &p, p.customers[0], "first").await.unwrap();
    let code = first.voucher_code.clone().unwrap();
    let mut tx = store.tenant(p.tenant).await.unwrap();
    tx.issuances().redeem_code(&code).await.unwrap();
    tx.commit().await.unwrap();
    let mut tx = store.tenant(p.tenant).await.unwrap();
    tx.issuances()
        .reverse_redemption(first.issuance.id, Duration::from_secs(60))
        .await
        .unwrap();
    tx.issuances().cancel(first.issuance.id).await.unwrap();
    tx.commit().await.unwrap();
    let second = issue(store, &p, p.customers[1], "second").await.unwrap();
    assert_ne!(second.voucher_code.as_deref(), Some(code.as_str()));
    let mut tx = store.tenant(p.tenant).await.unwrap();
    // The scan still finds the cancelled voucher, not someone else's.
    assert_eq!(
        refusal(tx.issuances().redeem_code(&code).await),
        Refusal::IssuanceNotIssued {
            status: IssuanceStatus::Cancelled
        }
    );
    drop(tx);
    assert_books_balance(store, p.tenant).await;
}

/// A guard opened before a reversal committed can still redeem after it.
#[tokio::test]
async fn a_redemption_in_a_guard_older_than_the_reversal_goes_through() {
    let db = TestDb::new().await;
    let store = db.store();
    let p = CampaignFixture::builder()
        .customers(1)
        .create(store)
        .await
        .unwrap();
    let issued = issue(store, &p, p.customers[0], "old-guard").await.unwrap();
    let id = issued.issuance.id;
    let mut tx = store.tenant(p.tenant).await.unwrap();
    tx.issuances().redeem(id).await.unwrap();
    tx.commit().await.unwrap();
    let mut older = store.tenant(p.tenant).await.unwrap();
    tx = store.tenant(p.tenant).await.unwrap();
    tokio::time::sleep(Duration::from_millis(20)).await;
    tx.issuances()
        .reverse_redemption(id, Duration::from_secs(60))
        .await
        .unwrap();
    tx.commit().await.unwrap();
    let again = older.issuances().redeem(id).await.unwrap();
    assert_eq!(again.issuance.status, IssuanceStatus::Redeemed);
    older.commit().await.unwrap();
    assert_books_balance(store, p.tenant).await;
}
