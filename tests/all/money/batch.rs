//! Batch issuance: all or nothing, under any cached plan.

use diesel_async::SimpleAsyncConnection;
use loyalty_store::prelude::*;
use loyalty_store::repo::issuances::{BatchIssuance, BatchOutcome};
use loyalty_store::testing::{CampaignFixture, TestDb};

use crate::support::{assert_books_balance, budget, import_codes, issue, money, on_citus};

#[tokio::test]
async fn batch_issues_everything_or_nothing() {
    let db = TestDb::new().await;
    let store = db.store();
    let p = CampaignFixture::builder()
        .per_customer_limit(1)
        .voucher_codes(10)
        .customers(6)
        .create(store)
        .await
        .unwrap();
    let people = p.customers.clone();
    issue(store, &p, people[0], "single").await.unwrap();

    // people[0] already has one: the whole batch is held.
    let mut tx = store.tenant(p.tenant).await.unwrap();
    let held = tx
        .issuances()
        .issue_batch(NewBatch::for_customers(p.rule, &people, "blast-1"))
        .await
        .unwrap();
    assert!(!held.applied);
    assert!(matches!(
        held.items[0].outcome,
        BatchOutcome::Refused(Refusal::LimitReached {
            scope: LimitScope::Customer
        })
    ));
    assert!(
        held.items[1..]
            .iter()
            .all(|i| matches!(i.outcome, BatchOutcome::Held))
    );
    tx.commit().await.unwrap();
    assert_eq!(
        budget(store, &p).await.reserved,
        money("2.50"),
        "nothing written"
    );

    let mut tx = store.tenant(p.tenant).await.unwrap();
    let done = tx
        .issuances()
        .issue_batch(NewBatch::for_customers(p.rule, &people[1..], "blast-2"))
        .await
        .unwrap();
    assert!(done.applied);
    let codes: std::collections::HashSet<_> = done
        .items
        .iter()
        .map(|i| match &i.outcome {
            BatchOutcome::Issued(issued) => issued.voucher_code.clone().unwrap(),
            other => panic!("{other:?}"),
        })
        .collect();
    assert_eq!(codes.len(), 5, "every recipient got a different code");
    let first_id = match &done.items[0].outcome {
        BatchOutcome::Issued(issued) => issued.issuance_id,
        other => panic!("{other:?}"),
    };
    assert_eq!(
        tx.issuances().get(first_id).await.unwrap().customer_id,
        people[1]
    );
    tx.commit().await.unwrap();

    // Replaying the same batch changes nothing.
    let mut tx = store.tenant(p.tenant).await.unwrap();
    let replay = tx
        .issuances()
        .issue_batch(NewBatch::for_customers(p.rule, &people[1..], "blast-2"))
        .await
        .unwrap();
    assert!(replay.applied);
    for (again, first) in replay.items.iter().zip(&done.items) {
        match (&again.outcome, &first.outcome) {
            (BatchOutcome::Replayed(again), BatchOutcome::Issued(first)) => {
                assert_eq!(again, first, "same issuance, same code")
            }
            other => panic!("{other:?}"),
        }
    }
    let unknown = NewBatch::for_customers(p.rule, &[CustomerId::new()], "blast-3");
    let refused = tx.issuances().issue_batch(unknown).await.unwrap();
    assert!(
        !refused.applied
            && matches!(
                refused.items[0].outcome,
                BatchOutcome::Refused(Refusal::CustomerNotFound)
            )
    );
    let twice = NewBatch {
        recipients: vec![(people[1], "x".into()), (people[2], "x".into())],
        ..NewBatch::for_customers(p.rule, &[], "")
    };
    assert!(matches!(
        tx.issuances().issue_batch(twice).await,
        Err(Error::InvalidInput {
            field: "recipients",
            ..
        })
    ));
    let empty = NewBatch::for_customers(p.rule, &[], "none");
    assert!(matches!(
        tx.issuances().issue_batch(empty).await,
        Err(Error::InvalidInput {
            field: "recipients",
            ..
        })
    ));
    tx.commit().await.unwrap();

    let b = budget(store, &p).await;
    assert_eq!(b.reserved, money("15.00"));
    assert_books_balance(store, p.tenant).await;
}

/// Pooled connections keep plpgsql's generic plans, made without the
/// arguments' values, after a function's fifth call; the batch must judge
/// the same under them.
#[tokio::test]
async fn batch_judges_alike_under_generic_plans() {
    let db = TestDb::new().await;
    let store = db.store();
    let p = CampaignFixture::builder()
        .per_customer_limit(2)
        .voucher_codes(10)
        .customers(3)
        .create(store)
        .await
        .unwrap();
    let people = p.customers.clone();
    let (ada, bo, cy) = (people[0], people[1], people[2]);
    let mut tx = store.tenant(p.tenant).await.unwrap();
    tx.conn()
        .batch_execute("SET LOCAL plan_cache_mode = force_generic_plan")
        .await
        .unwrap();
    let batch = |recipients: &[(CustomerId, &str)]| NewBatch {
        recipients: recipients
            .iter()
            .map(|(c, k)| (*c, k.to_string()))
            .collect(),
        ..NewBatch::for_customers(p.rule, &[], "")
    };
    if on_citus() {
        // A generic plan of the call keeps it on the coordinator, away from
        // the locks every other call takes on the tenant's node: refused.
        let away = tx
            .issuances()
            .issue_batch(batch(&[(ada, "a1")]))
            .await
            .unwrap_err();
        assert!(
            away.to_string().contains("away from the tenant's node"),
            "{away}"
        );
        return;
    }
    let first = tx
        .issuances()
        .issue_batch(batch(&[(ada, "a1"), (bo, "b1"), (ada, "a2")]))
        .await
        .unwrap();
    assert!(first.applied);
    let issued: Vec<BatchIssuance> = first
        .items
        .iter()
        .map(|i| match &i.outcome {
            BatchOutcome::Issued(issued) => issued.clone(),
            other => panic!("{other:?}"),
        })
        .collect();
    let codes: std::collections::HashSet<_> = issued
        .iter()
        .map(|i| i.voucher_code.clone().unwrap())
        .collect();
    assert_eq!(codes.len(), 3, "three different codes");

    // Ada's third would pass her limit of two; the batch is held.
    let over = tx
        .issuances()
        .issue_batch(batch(&[(cy, "c1"), (ada, "a3")]))
        .await
        .unwrap();
    assert!(!over.applied);
    assert!(matches!(over.items[0].outcome, BatchOutcome::Held));
    assert!(matches!(
        over.items[1].outcome,
        BatchOutcome::Refused(Refusal::LimitReached {
            scope: LimitScope::Customer
        })
    ));

    let mixed = tx
        .issuances()
        .issue_batch(batch(&[(bo, "b1"), (cy, "c1"), (cy, "a1")]))
        .await
        .unwrap();
    assert!(!mixed.applied);
    assert_eq!(
        mixed.items[0].outcome,
        BatchOutcome::Replayed(issued[1].clone())
    );
    assert!(matches!(mixed.items[1].outcome, BatchOutcome::Held));
    assert!(matches!(
        mixed.items[2].outcome,
        BatchOutcome::Refused(Refusal::IdempotencyConflict)
    ));

    let replay = tx
        .issuances()
        .issue_batch(batch(&[(ada, "a1"), (bo, "b1"), (ada, "a2"), (cy, "c2")]))
        .await
        .unwrap();
    assert!(replay.applied);
    for (again, first) in replay.items.iter().zip(&issued) {
        assert_eq!(again.outcome, BatchOutcome::Replayed(first.clone()));
    }
    let BatchOutcome::Issued(fourth) = &replay.items[3].outcome else {
        panic!("{:?}", replay.items[3]);
    };
    assert!(!codes.contains(fourth.voucher_code.as_ref().unwrap()));
    tx.commit().await.unwrap();
    assert_eq!(budget(store, &p).await.reserved, money("10.00"));
    assert_books_balance(store, p.tenant).await;
}

#[tokio::test]
async fn batch_wide_refusals_leave_nothing_behind() {
    let db = TestDb::new().await;
    let store = db.store();
    let p = CampaignFixture::builder()
        .hard_cap(10)
        .uses_codes()
        .voucher_codes(3)
        .customers(5)
        .create(store)
        .await
        .unwrap();
    let people = p.customers.clone();
    let mut tx = store.tenant(p.tenant).await.unwrap();
    let outcome = tx
        .issuances()
        .issue_batch(NewBatch::for_customers(p.rule, &people, "too-many"))
        .await;
    assert!(
        matches!(outcome, Err(Error::Refused(Refusal::NoCodesAvailable))),
        "{outcome:?}"
    );
    drop(tx);
    import_codes(store, &p, 10).await;
    let mut tx = store.tenant(p.tenant).await.unwrap();
    let outcome = tx
        .issuances()
        .issue_batch(NewBatch::for_customers(p.rule, &people, "too-dear"))
        .await;
    assert!(
        matches!(outcome, Err(Error::Refused(Refusal::BudgetExhausted))),
        "5 × 2.50 > 10: {outcome:?}"
    );
    drop(tx);
    let mut tx = store.tenant(p.tenant).await.unwrap();
    assert_eq!(
        tx.voucher_codes().counts(p.reward).await.unwrap().available,
        10
    );
    drop(tx);
    assert_eq!(budget(store, &p).await.reserved, money("0"));
    assert_books_balance(store, p.tenant).await;
}
