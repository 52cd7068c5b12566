//! After issuing: redeeming, cancelling, expiring, and a customer's history.

use chrono::{Duration, Utc};
use diesel_async::SimpleAsyncConnection;
use loyalty_store::Cursor;
use loyalty_store::prelude::*;
use loyalty_store::repo::voucher_codes::{StatusCounts, VoucherStatus};
use loyalty_store::testing::{CampaignFixture, TestDb};

use crate::support::{assert_books_balance, budget, issue, issue_to, money, wait_for_lock_waiters};

#[tokio::test]
async fn redeem_commits_and_cancel_releases() {
    let db = TestDb::new().await;
    let store = db.store();
    let p = CampaignFixture::builder()
        .per_customer_limit(1)
        .voucher_codes(2)
        .customers(2)
        .create(store)
        .await
        .unwrap();
    let people = p.customers.clone();
    let kept = issue(store, &p, people[0], "a").await.unwrap();
    let dropped = issue(store, &p, people[1], "b").await.unwrap();
    let mut tx = store.tenant(p.tenant).await.unwrap();
    let redeemed = tx.issuances().redeem(kept.issuance.id).await.unwrap();
    assert_eq!(redeemed.issuance.status, IssuanceStatus::Redeemed);
    assert!(redeemed.issuance.redeemed_at.is_some());
    assert!(
        tx.issuances()
            .redeem(kept.issuance.id)
            .await
            .unwrap()
            .replayed
    );
    let cancelled = tx.issuances().cancel(dropped.issuance.id).await.unwrap();
    assert_eq!(cancelled.issuance.status, IssuanceStatus::Cancelled);
    assert_eq!(
        cancelled.issuance.voucher_code_id, None,
        "the undelivered code went back"
    );
    assert!(
        tx.issuances()
            .cancel(dropped.issuance.id)
            .await
            .unwrap()
            .replayed
    );
    tx.commit().await.unwrap();
    let mut tx = store.tenant(p.tenant).await.unwrap();
    assert!(matches!(
        tx.issuances().cancel(kept.issuance.id).await,
        Err(Error::Refused(Refusal::IssuanceNotIssued {
            status: IssuanceStatus::Redeemed
        }))
    ));
    drop(tx);
    let mut tx = store.tenant(p.tenant).await.unwrap();
    assert!(matches!(
        tx.issuances().redeem(dropped.issuance.id).await,
        Err(Error::Refused(Refusal::IssuanceNotIssued {
            status: IssuanceStatus::Cancelled
        }))
    ));
    drop(tx);
    let mut tx = store.tenant(p.tenant).await.unwrap();
    assert!(matches!(
        tx.issuances().redeem(IssuanceId::new()).await,
        Err(Error::Refused(Refusal::IssuanceNotFound))
    ));
    drop(tx);

    let b = budget(store, &p).await;
    assert_eq!((b.reserved, b.spent), (money("0"), money("2.50")));
    let mut tx = store.tenant(p.tenant).await.unwrap();
    assert_eq!(
        tx.voucher_codes().counts(p.reward).await.unwrap(),
        StatusCounts {
            available: 1,
            issued: 1,
            ..StatusCounts::default()
        },
        "the redeemed code counts as delivered, the cancelled one is back"
    );
    tx.commit().await.unwrap();
    // A cancelled issuance no longer counts towards the per-customer limit.
    let again = issue(store, &p, people[1], "c").await.unwrap();
    assert_eq!(
        again.voucher_code, dropped.voucher_code,
        "the returned code is reused"
    );
    assert_books_balance(store, p.tenant).await;
}

#[tokio::test]
async fn cancelling_after_delivery_retires_the_code() {
    let db = TestDb::new().await;
    let store = db.store();
    let p = CampaignFixture::builder()
        .voucher_codes(1)
        .customers(1)
        .create(store)
        .await
        .unwrap();
    let ada = p.customers[0];
    let issued = issue(store, &p, ada, "a").await.unwrap();
    let mut tx = store.tenant(p.tenant).await.unwrap();
    tx.voucher_codes()
        .mark_issued(issued.issuance.voucher_code_id.unwrap())
        .await
        .unwrap();
    let cancelled = tx.issuances().cancel(issued.issuance.id).await.unwrap();
    assert_eq!(
        cancelled.issuance.voucher_code_id,
        issued.issuance.voucher_code_id
    );
    let code = tx
        .voucher_codes()
        .find(issued.voucher_code.as_deref().unwrap())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(code.status, VoucherStatus::Invalid);
    tx.commit().await.unwrap();
    assert_books_balance(store, p.tenant).await;
}

#[tokio::test]
async fn expire_due_releases_in_batches() {
    let db = TestDb::new().await;
    let store = db.store();
    let p = CampaignFixture::builder()
        .customers(5)
        .create(store)
        .await
        .unwrap();
    let people = p.customers.clone();
    let soon = Utc::now() + Duration::minutes(5);
    let mut tx = store.tenant(p.tenant).await.unwrap();
    for (n, c) in people.iter().enumerate() {
        let expires_at = if n < 4 { Some(soon) } else { None };
        tx.issuances()
            .issue(NewIssuance {
                expires_at,
                ..issue_to(&p, *c, &format!("k{n}"))
            })
            .await
            .unwrap();
    }
    let redeemed = tx
        .issuances()
        .list_for_customer(people[0], KeysetPage::first(1))
        .await
        .unwrap()[0]
        .id;
    tx.issuances().redeem(redeemed).await.unwrap();
    tx.commit().await.unwrap();

    let later = soon + Duration::minutes(1);
    let mut tx = store.tenant(p.tenant).await.unwrap();
    assert_eq!(
        tx.issuances().expire_due(Utc::now(), 10).await.unwrap(),
        0,
        "nothing due yet"
    );
    assert_eq!(tx.issuances().expire_due(later, 2).await.unwrap(), 2);
    assert_eq!(tx.issuances().expire_due(later, 2).await.unwrap(), 1);
    assert_eq!(tx.issuances().expire_due(later, 2).await.unwrap(), 0);
    assert!(matches!(
        tx.issuances().expire_due(later, 0).await,
        Err(Error::InvalidInput { .. })
    ));
    tx.commit().await.unwrap();
    let b = budget(store, &p).await;
    assert_eq!(
        (b.reserved, b.spent),
        (money("2.50"), money("2.50")),
        "one open, one redeemed"
    );
    assert_books_balance(store, p.tenant).await;
}

#[tokio::test]
async fn redeeming_after_expiry_is_refused_even_before_the_sweep() {
    let db = TestDb::new().await;
    let store = db.store();
    let p = CampaignFixture::builder()
        .customers(1)
        .create(store)
        .await
        .unwrap();
    let ada = p.customers[0];
    let issued = issue(store, &p, ada, "k").await.unwrap();
    let mut conn = db.admin_connection().await;
    conn.batch_execute(&format!(
        "UPDATE issuances SET issued_at = now() - interval '2 days', expires_at = now() - interval '1 day' \
         WHERE id = '{}'",
        issued.issuance.id
    ))
    .await
    .unwrap();
    drop(conn);
    let mut tx = store.tenant(p.tenant).await.unwrap();
    assert!(matches!(
        tx.issuances().redeem(issued.issuance.id).await,
        Err(Error::Refused(Refusal::IssuanceExpired))
    ));
}

#[tokio::test]
async fn customer_history_pages_by_keyset() {
    let db = TestDb::new().await;
    let store = db.store();
    let p = CampaignFixture::builder()
        .customers(1)
        .create(store)
        .await
        .unwrap();
    let ada = p.customers[0];
    for n in 0..5 {
        issue(store, &p, ada, &format!("k{n}")).await.unwrap();
    }
    let mut tx = store.tenant(p.tenant).await.unwrap();
    let first = tx
        .issuances()
        .list_for_customer(ada, KeysetPage::first(3))
        .await
        .unwrap();
    let last = first.last().unwrap();
    let rest = tx
        .issuances()
        .list_for_customer(
            ada,
            KeysetPage::after(
                Cursor {
                    at: last.issued_at,
                    id: last.id,
                },
                3,
            ),
        )
        .await
        .unwrap();
    let keys: Vec<_> = first
        .iter()
        .chain(&rest)
        .map(|i| i.idempotency_key.as_str())
        .collect();
    assert_eq!(keys, ["k4", "k3", "k2", "k1", "k0"]);
}

#[tokio::test]
async fn expiry_retires_codes_instead_of_recycling_them() {
    let db = TestDb::new().await;
    let store = db.store();
    let p = CampaignFixture::builder()
        .voucher_codes(1)
        .customers(1)
        .create(store)
        .await
        .unwrap();
    let ada = p.customers[0];
    let mut tx = store.tenant(p.tenant).await.unwrap();
    let soon = Utc::now() + Duration::minutes(1);
    tx.issuances()
        .issue(NewIssuance {
            expires_at: Some(soon),
            ..issue_to(&p, ada, "k")
        })
        .await
        .unwrap();
    tx.commit().await.unwrap();
    let mut tx = store.tenant(p.tenant).await.unwrap();
    assert_eq!(
        tx.issuances()
            .expire_due(soon + Duration::minutes(1), 10)
            .await
            .unwrap(),
        1
    );
    assert_eq!(
        tx.voucher_codes().counts(p.reward).await.unwrap(),
        StatusCounts {
            invalid: 1,
            ..StatusCounts::default()
        },
        "the customer may have seen the code"
    );
    tx.commit().await.unwrap();
    assert_books_balance(store, p.tenant).await;
}

#[tokio::test]
async fn a_cancel_racing_the_codes_delivery_keeps_the_code_on_the_issuance() {
    let db = TestDb::new().await;
    let store = db.store();
    let p = CampaignFixture::builder()
        .voucher_codes(1)
        .customers(1)
        .create(store)
        .await
        .unwrap();
    let ada = p.customers[0];
    let issued = issue(store, &p, ada, "k").await.unwrap().issuance;
    let code = issued.voucher_code_id.unwrap();
    let mut delivering = store.tenant(p.tenant).await.unwrap();
    delivering.voucher_codes().mark_issued(code).await.unwrap();
    let cancelling = {
        let store = store.clone();
        tokio::spawn(async move {
            let mut tx = store.tenant(p.tenant).await.unwrap();
            tx.issuances().cancel(issued.id).await.unwrap();
            tx.commit().await.unwrap();
        })
    };
    // The cancel waits for the delivery's lock on the code.
    wait_for_lock_waiters(store, "transactionid", 1).await;
    delivering.commit().await.unwrap();
    cancelling.await.unwrap();
    // The customer has the code: it is retired, and the issuance still names it.
    let mut tx = store.tenant(p.tenant).await.unwrap();
    let row = tx.issuances().get(issued.id).await.unwrap();
    assert_eq!(row.voucher_code_id, Some(code));
    let codes = tx.voucher_codes().counts(p.reward).await.unwrap();
    assert_eq!((codes.available, codes.invalid), (0, 1));
}

#[tokio::test]
async fn an_issuance_settled_in_its_own_transaction_is_reserved_first() {
    let db = TestDb::new().await;
    let store = db.store();
    let p = CampaignFixture::builder()
        .customers(2)
        .create(store)
        .await
        .unwrap();
    let people = p.customers.clone();
    let mut tx = store.tenant(p.tenant).await.unwrap();
    let redeemed = tx
        .issuances()
        .issue(issue_to(&p, people[0], "redeemed"))
        .await
        .unwrap();
    tx.issuances().redeem(redeemed.issuance.id).await.unwrap();
    let cancelled = tx
        .issuances()
        .issue(issue_to(&p, people[1], "cancelled"))
        .await
        .unwrap();
    tx.issuances().cancel(cancelled.issuance.id).await.unwrap();
    assert!(tx.budgets().verify_ledger().await.unwrap().is_empty());
    tx.commit().await.unwrap();
    let b = budget(store, &p).await;
    assert_eq!((b.reserved, b.spent), (money("0"), money("2.50")));
    assert_books_balance(store, p.tenant).await;
}
