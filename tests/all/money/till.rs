//! Redemption at a till, by the voucher code alone.

use chrono::{Duration, Utc};
use loyalty_store::prelude::*;
use loyalty_store::repo::rewards::{NewReward, RewardType};
use loyalty_store::testing::{CampaignFixture, TestDb};

use crate::support::{assert_books_balance, budget, issue, issue_to, money, refusal};

#[tokio::test]
async fn a_till_redeems_by_code_once_and_says_why_not_otherwise() {
    let db = TestDb::new().await;
    let store = db.store();
    let p = CampaignFixture::builder()
        .voucher_codes(4)
        .customers(4)
        .create(store)
        .await
        .unwrap();
    let people = p.customers.clone();
    let scanned = issue(store, &p, people[0], "till-1").await.unwrap();
    let code = scanned.voucher_code.clone().unwrap();

    let mut tx = store.tenant(p.tenant).await.unwrap();
    let redeemed = tx.issuances().redeem_code(&code).await.unwrap();
    assert_eq!(redeemed.issuance.issuance.id, scanned.issuance.id);
    assert_eq!(redeemed.issuance.issuance.status, IssuanceStatus::Redeemed);
    assert_eq!(redeemed.customer.id, people[0]);
    tx.commit().await.unwrap();

    let mut tx = store.tenant(p.tenant).await.unwrap();
    assert_eq!(
        refusal(tx.issuances().redeem_code(&code).await),
        Refusal::AlreadyRedeemed
    );
    drop(tx);
    let mut tx = store.tenant(p.tenant).await.unwrap();
    assert_eq!(
        refusal(tx.issuances().redeem_code("NO-SUCH-CODE").await),
        Refusal::CodeNotFound
    );
    drop(tx);
    // A code still in the pool was never handed out.
    let mut tx = store.tenant(p.tenant).await.unwrap();
    let pooled = tx.voucher_codes().counts(p.reward).await.unwrap();
    assert_eq!(pooled.available, 3);
    drop(tx);

    // Cancelled after delivery: the code is withdrawn, and the scan says so.
    let cancelled = issue(store, &p, people[1], "till-2").await.unwrap();
    let mut tx = store.tenant(p.tenant).await.unwrap();
    tx.voucher_codes()
        .mark_issued(cancelled.issuance.voucher_code_id.unwrap())
        .await
        .unwrap();
    tx.issuances().cancel(cancelled.issuance.id).await.unwrap();
    tx.commit().await.unwrap();
    let mut tx = store.tenant(p.tenant).await.unwrap();
    assert_eq!(
        refusal(
            tx.issuances()
                .redeem_code(cancelled.voucher_code.as_deref().unwrap())
                .await
        ),
        Refusal::IssuanceNotIssued {
            status: IssuanceStatus::Cancelled
        }
    );
    drop(tx);

    // Expired and swept: the code is unlinked from the pool but still
    // traced to its issuance.
    let mut tx = store.tenant(p.tenant).await.unwrap();
    let expiring = tx
        .issuances()
        .issue(NewIssuance {
            expires_at: Some(Utc::now() + Duration::hours(1)),
            ..issue_to(&p, people[2], "till-3")
        })
        .await
        .unwrap();
    tx.commit().await.unwrap();
    let mut tx = store.tenant(p.tenant).await.unwrap();
    let swept = tx
        .issuances()
        .expire_due(Utc::now() + Duration::hours(2), 10)
        .await
        .unwrap();
    assert_eq!(swept, 1);
    tx.commit().await.unwrap();
    let expired_code = expiring.voucher_code.as_deref().unwrap();
    let mut tx = store.tenant(p.tenant).await.unwrap();
    let traced = tx.issuances().find_by_code(expired_code).await.unwrap();
    assert_eq!(traced.map(|i| i.id), Some(expiring.issuance.id));
    assert_eq!(
        refusal(tx.issuances().redeem_code(expired_code).await),
        Refusal::IssuanceExpired
    );
    drop(tx);

    assert_eq!(budget(store, &p).await.spent, money("2.50"));
    assert_books_balance(store, p.tenant).await;
}

#[tokio::test]
async fn codes_are_unique_across_a_tenants_rewards() {
    let db = TestDb::new().await;
    let store = db.store();
    let p = CampaignFixture::builder()
        .voucher_codes(2)
        .create(store)
        .await
        .unwrap();
    let mut tx = store.tenant(p.tenant).await.unwrap();
    let first = tx.voucher_codes().find("CODE-000000").await.unwrap();
    let first = first.expect("the fixture's first code");
    assert_eq!(tx.voucher_codes().get(first.id).await.unwrap(), first);
    let other = tx
        .rewards()
        .create(NewReward {
            name: "Tea".into(),
            description: None,
            reward_type: RewardType::Voucher,
            cost_amount: money("1.00"),
            currency: "USD".parse().unwrap(),
            uses_codes: true,
        })
        .await
        .unwrap();
    let report = tx
        .voucher_codes()
        .import(other.id, &["CODE-000000".to_owned(), "TEA-1".to_owned()])
        .await
        .unwrap();
    assert_eq!(report.inserted, 1);
    assert_eq!(report.duplicates, ["CODE-000000"]);
    assert!(matches!(
        tx.voucher_codes().get(VoucherCodeId::new()).await,
        Err(Error::NotFound)
    ));
    tx.commit().await.unwrap();
}
