//! Issuing, redeeming, cancelling, expiring and batch issuing.

mod common;

use chrono::{Duration, Utc};
use common::{
    Knobs, assert_books_balance, budget, customers, import_codes, issue, issue_to, money, programme,
};
use diesel_async::{RunQueryDsl, SimpleAsyncConnection};
use loyalty_store::prelude::*;
use loyalty_store::repo::issuances::{BatchIssuance, BatchOutcome, Issued};
use loyalty_store::repo::voucher_codes::{StatusCounts, VoucherStatus};
use loyalty_store::testing::TestDb;
use loyalty_store::{Config, Cursor, LimitScope};

#[tokio::test]
async fn issue_reserves_budget_claims_a_code_and_replays_by_key() {
    let db = TestDb::new().await;
    let store = db.store();
    let p = programme(
        store,
        Knobs {
            uses_codes: true,
            ..Knobs::default()
        },
    )
    .await;
    import_codes(store, &p, 3).await;
    let ada = customers(store, p.tenant, 1).await[0];
    let first = issue(store, &p, ada, "order-1").await.unwrap();
    assert!(!first.replayed);
    assert_eq!(first.issuance.status, IssuanceStatus::Issued);
    assert_eq!(first.issuance.cost_amount, money("2.50"));
    assert_eq!(
        (first.issuance.budget_id, first.issuance.campaign_id),
        (p.budget, p.campaign)
    );
    assert!(first.voucher_code.is_some());
    let again = issue(store, &p, ada, "order-1").await.unwrap();
    assert!(again.replayed);
    assert_eq!(again.issuance, first.issuance);
    assert_eq!(again.voucher_code, first.voucher_code);
    let b = budget(store, &p).await;
    assert_eq!((b.reserved, b.spent), (money("2.50"), money("0")));
    let mut tx = store.tenant(p.tenant).await.unwrap();
    assert_eq!(
        tx.voucher_codes().counts(p.reward).await.unwrap(),
        StatusCounts {
            available: 2,
            reserved: 1,
            ..StatusCounts::default()
        }
    );
    assert_eq!(
        tx.issuances().get(first.issuance.id).await.unwrap(),
        first.issuance
    );
    assert_eq!(
        tx.rules()
            .customer_issuance_count(p.rule, ada)
            .await
            .unwrap(),
        1
    );
    drop(tx);
    assert_books_balance(store, p.tenant).await;
}

#[tokio::test]
async fn each_refusal_is_typed_and_writes_nothing() {
    let db = TestDb::new().await;
    let store = db.store();
    let p = programme(
        store,
        Knobs {
            hard_cap: 5,
            per_customer_limit: Some(1),
            uses_codes: true,
            ..Knobs::default()
        },
    )
    .await;
    import_codes(store, &p, 1).await;
    let people = customers(store, p.tenant, 3).await;
    issue(store, &p, people[0], "k0").await.unwrap();
    let refused = |outcome: Result<Issued>| outcome.expect_err("should be refused");
    assert!(matches!(
        refused(issue(store, &p, people[0], "k1").await),
        Error::LimitReached {
            scope: LimitScope::Customer
        }
    ));
    assert!(matches!(
        refused(issue(store, &p, people[1], "k2").await),
        Error::NoCodesAvailable
    ));
    import_codes(store, &p, 3).await; // CODE-000000 exists: 2 new codes
    issue(store, &p, people[1], "k3").await.unwrap(); // 5.00 of 5 now reserved
    assert!(matches!(
        refused(issue(store, &p, people[2], "k4").await),
        Error::BudgetExhausted
    ));
    assert!(matches!(
        refused(issue(store, &p, CustomerId::new(), "k5").await),
        Error::NotFound
    ));
    let mut tx = store.tenant(p.tenant).await.unwrap();
    let unknown_rule = NewIssuance {
        rule_id: RuleId::new(),
        ..issue_to(&p, people[2], "k6")
    };
    assert!(matches!(
        tx.issuances().issue(unknown_rule).await,
        Err(Error::NotFound)
    ));
    drop(tx);
    let mut tx = store.tenant(p.tenant).await.unwrap();
    tx.customers()
        .update_status(people[2], CustomerStatus::Blocked)
        .await
        .unwrap();
    tx.commit().await.unwrap();
    assert!(matches!(
        refused(issue(store, &p, people[2], "k7").await),
        Error::InvalidState { .. }
    ));
    let mut tx = store.tenant(p.tenant).await.unwrap();
    tx.rules().set_active(p.rule, false).await.unwrap();
    tx.commit().await.unwrap();
    assert!(matches!(
        refused(issue(store, &p, people[1], "k8").await),
        Error::RuleInactive
    ));
    let mut tx = store.tenant(p.tenant).await.unwrap();
    tx.rules().set_active(p.rule, true).await.unwrap();
    tx.campaigns()
        .update_status(p.campaign, CampaignStatus::Paused)
        .await
        .unwrap();
    tx.commit().await.unwrap();
    assert!(matches!(
        refused(issue(store, &p, people[1], "k9").await),
        Error::CampaignNotRunning
    ));

    let mut tx = store.tenant(p.tenant).await.unwrap();
    let key = tx.issuances().issue(issue_to(&p, people[1], "")).await;
    assert!(matches!(
        key,
        Err(Error::InvalidInput {
            field: "idempotency_key",
            ..
        })
    ));
    let past = NewIssuance {
        expires_at: Some(Utc::now() - Duration::minutes(1)),
        ..issue_to(&p, people[1], "k10")
    };
    assert!(matches!(
        tx.issuances().issue(past).await,
        Err(Error::InvalidInput {
            field: "expires_at",
            ..
        })
    ));
    drop(tx);

    let b = budget(store, &p).await;
    assert_eq!(
        b.reserved,
        money("5"),
        "only the two successful issuances reserved"
    );
    assert_books_balance(store, p.tenant).await;
}

#[tokio::test]
async fn a_refusal_ends_the_guards_transaction_with_nothing_written() {
    let db = TestDb::new().await;
    let store = db.store();
    let p = programme(
        store,
        Knobs {
            hard_cap: 1,
            ..Knobs::default()
        },
    )
    .await;
    let ada = customers(store, p.tenant, 1).await[0];
    let mut tx = store.tenant(p.tenant).await.unwrap();
    tx.customers()
        .create(NewCustomer::new("+15559999999"))
        .await
        .unwrap();
    assert!(matches!(
        tx.issuances().issue(issue_to(&p, ada, "k")).await,
        Err(Error::BudgetExhausted)
    ));
    assert!(matches!(tx.commit().await, Err(Error::TransactionAborted)));
    let mut tx = store.tenant(p.tenant).await.unwrap();
    assert!(
        tx.customers()
            .find_by_phone("+15559999999")
            .await
            .unwrap()
            .is_none()
    );
}

#[tokio::test]
async fn redeem_commits_and_cancel_releases() {
    let db = TestDb::new().await;
    let store = db.store();
    let p = programme(
        store,
        Knobs {
            uses_codes: true,
            per_customer_limit: Some(1),
            ..Knobs::default()
        },
    )
    .await;
    import_codes(store, &p, 2).await;
    let people = customers(store, p.tenant, 2).await;
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
        Err(Error::InvalidState { .. })
    ));
    drop(tx);
    let mut tx = store.tenant(p.tenant).await.unwrap();
    assert!(matches!(
        tx.issuances().redeem(dropped.issuance.id).await,
        Err(Error::InvalidState { .. })
    ));
    drop(tx);
    let mut tx = store.tenant(p.tenant).await.unwrap();
    assert!(matches!(
        tx.issuances().redeem(IssuanceId::new()).await,
        Err(Error::NotFound)
    ));
    drop(tx);

    let b = budget(store, &p).await;
    assert_eq!((b.reserved, b.spent), (money("0"), money("2.50")));
    let mut tx = store.tenant(p.tenant).await.unwrap();
    assert_eq!(
        tx.voucher_codes().counts(p.reward).await.unwrap(),
        StatusCounts {
            available: 1,
            reserved: 1,
            ..StatusCounts::default()
        }
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
    let p = programme(
        store,
        Knobs {
            uses_codes: true,
            ..Knobs::default()
        },
    )
    .await;
    import_codes(store, &p, 1).await;
    let ada = customers(store, p.tenant, 1).await[0];
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
        .find(p.reward, issued.voucher_code.as_deref().unwrap())
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
    let p = programme(store, Knobs::default()).await;
    let people = customers(store, p.tenant, 5).await;
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
    let p = programme(store, Knobs::default()).await;
    let ada = customers(store, p.tenant, 1).await[0];
    let issued = issue(store, &p, ada, "k").await.unwrap();
    let mut conn = store.raw_connection().await.unwrap();
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
        Err(Error::InvalidState { .. })
    ));
}

#[tokio::test]
async fn customer_history_pages_by_keyset() {
    let db = TestDb::new().await;
    let store = db.store();
    let p = programme(store, Knobs::default()).await;
    let ada = customers(store, p.tenant, 1).await[0];
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
async fn batch_issues_everything_or_nothing() {
    let db = TestDb::new().await;
    let store = db.store();
    let p = programme(
        store,
        Knobs {
            uses_codes: true,
            per_customer_limit: Some(1),
            ..Knobs::default()
        },
    )
    .await;
    import_codes(store, &p, 10).await;
    let people = customers(store, p.tenant, 6).await;
    issue(store, &p, people[0], "single").await.unwrap();

    // people[0] already has one: the whole batch is held.
    let mut tx = store.tenant(p.tenant).await.unwrap();
    let held = tx
        .issuances()
        .issue_batch(NewBatch::for_customers(p.rule, &people, "blast-1"))
        .await
        .unwrap();
    assert!(!held.applied);
    assert!(matches!(held.items[0].outcome, BatchOutcome::LimitReached));
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
    assert!(!refused.applied && matches!(refused.items[0].outcome, BatchOutcome::CustomerNotFound));
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
    let p = programme(
        store,
        Knobs {
            uses_codes: true,
            per_customer_limit: Some(2),
            ..Knobs::default()
        },
    )
    .await;
    import_codes(store, &p, 10).await;
    let people = customers(store, p.tenant, 3).await;
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
    assert!(matches!(over.items[1].outcome, BatchOutcome::LimitReached));

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
        BatchOutcome::IdempotencyConflict
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
    let p = programme(
        store,
        Knobs {
            hard_cap: 10,
            uses_codes: true,
            ..Knobs::default()
        },
    )
    .await;
    import_codes(store, &p, 3).await;
    let people = customers(store, p.tenant, 5).await;
    let mut tx = store.tenant(p.tenant).await.unwrap();
    let outcome = tx
        .issuances()
        .issue_batch(NewBatch::for_customers(p.rule, &people, "too-many"))
        .await;
    assert!(
        matches!(outcome, Err(Error::NoCodesAvailable)),
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
        matches!(outcome, Err(Error::BudgetExhausted)),
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

#[tokio::test]
async fn another_tenant_cannot_issue_redeem_or_see_issuances() {
    let db = TestDb::new().await;
    let store = db.store();
    let p = programme(store, Knobs::default()).await;
    let ada = customers(store, p.tenant, 1).await[0];
    let issued = issue(store, &p, ada, "k").await.unwrap();
    let other = store
        .platform()
        .create(NewTenant::new("Other", "USD".parse().unwrap()))
        .await
        .unwrap()
        .id;
    let mut tx = store.tenant(other).await.unwrap();
    assert!(matches!(
        tx.issuances().get(issued.issuance.id).await,
        Err(Error::NotFound)
    ));
    drop(tx);
    let mut tx = store.tenant(other).await.unwrap();
    assert!(matches!(
        tx.issuances().redeem(issued.issuance.id).await,
        Err(Error::NotFound)
    ));
    drop(tx);
    let mut tx = store.tenant(other).await.unwrap();
    assert!(matches!(
        tx.issuances().issue(issue_to(&p, ada, "k2")).await,
        Err(Error::NotFound)
    ));
    drop(tx);
    let mut tx = store.tenant(other).await.unwrap();
    assert_eq!(
        tx.issuances()
            .expire_due(Utc::now() + Duration::days(999), 100)
            .await
            .unwrap(),
        0
    );
}

#[tokio::test]
async fn a_global_limit_added_later_counts_what_was_issued() {
    let db = TestDb::new().await;
    let store = db.store();
    let p = programme(store, Knobs::default()).await;
    let people = customers(store, p.tenant, 5).await;
    for (n, c) in people.iter().take(3).enumerate() {
        issue(store, &p, *c, &format!("k{n}")).await.unwrap();
    }
    let mut conn = store.raw_connection().await.unwrap();
    conn.batch_execute(&format!(
        "UPDATE rules SET global_limit = 4 WHERE id = '{}'",
        p.rule
    ))
    .await
    .unwrap();
    drop(conn);
    issue(store, &p, people[3], "k3").await.unwrap();
    let fifth = issue(store, &p, people[4], "k4").await;
    assert!(
        matches!(
            fifth,
            Err(Error::LimitReached {
                scope: LimitScope::Global
            })
        ),
        "{fifth:?}"
    );
}

#[tokio::test]
async fn a_key_reused_for_another_customer_is_a_conflict_not_a_replay() {
    let db = TestDb::new().await;
    let store = db.store();
    let p = programme(
        store,
        Knobs {
            uses_codes: true,
            ..Knobs::default()
        },
    )
    .await;
    import_codes(store, &p, 5).await;
    let people = customers(store, p.tenant, 3).await;
    issue(store, &p, people[0], "order-7").await.unwrap();
    let reused = issue(store, &p, people[1], "order-7").await;
    assert!(matches!(reused, Err(Error::Conflict { .. })), "{reused:?}");
    let mut tx = store.tenant(p.tenant).await.unwrap();
    let batch = NewBatch {
        recipients: vec![(people[1], "order-7".into()), (people[2], "order-8".into())],
        ..NewBatch::for_customers(p.rule, &[], "")
    };
    let report = tx.issuances().issue_batch(batch).await.unwrap();
    assert!(!report.applied);
    assert!(matches!(
        report.items[0].outcome,
        BatchOutcome::IdempotencyConflict
    ));
    assert!(matches!(report.items[1].outcome, BatchOutcome::Held));
}

#[tokio::test]
async fn expiry_retires_codes_instead_of_recycling_them() {
    let db = TestDb::new().await;
    let store = db.store();
    let p = programme(
        store,
        Knobs {
            uses_codes: true,
            ..Knobs::default()
        },
    )
    .await;
    import_codes(store, &p, 1).await;
    let ada = customers(store, p.tenant, 1).await[0];
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
async fn issuance_reservations_cannot_be_settled_through_the_budget_api() {
    let db = TestDb::new().await;
    let store = db.store();
    let p = programme(store, Knobs::default()).await;
    let ada = customers(store, p.tenant, 1).await[0];
    let issued = issue(store, &p, ada, "k").await.unwrap();
    let reference = loyalty_store::repo::budgets::LedgerRef::new("issuance", issued.issuance.id);
    let mut tx = store.tenant(p.tenant).await.unwrap();
    let release = tx
        .budgets()
        .release(p.budget, money("2.50"), reference)
        .await;
    assert!(
        matches!(
            release,
            Err(Error::InvalidInput {
                field: "ref_type",
                ..
            })
        ),
        "{release:?}"
    );
    let raw = diesel::sql_query(format!(
        "SELECT * FROM move_budget('{}', 'release', 2.50, 'issuance', '{}')",
        p.budget, issued.issuance.id
    ))
    .execute(tx.conn())
    .await
    .map_err(Error::from);
    assert!(matches!(raw, Err(Error::InvalidState { .. })), "{raw:?}");
    drop(tx);
    let mut tx = store.tenant(p.tenant).await.unwrap();
    tx.issuances().cancel(issued.issuance.id).await.unwrap();
    tx.commit().await.unwrap();
    assert_books_balance(store, p.tenant).await;
}

#[tokio::test]
async fn a_reservation_that_no_longer_fits_is_refused_at_commit() {
    let db = TestDb::new().await;
    let store = db.store();
    let p = programme(
        store,
        Knobs {
            hard_cap: 5,
            ..Knobs::default()
        },
    )
    .await;
    let people = customers(store, p.tenant, 3).await;
    issue(store, &p, people[0], "first").await.unwrap(); // 2.50 of 5 reserved
    // Both fit when issued; only one of them fits when they commit.
    let (kept, lost, late) = issue_in_two_guards(store, &p, people[1], people[2]).await;
    assert!(matches!(late, Err(Error::BudgetExhausted)));
    let mut tx = store.tenant(p.tenant).await.unwrap();
    assert!(tx.issuances().get(kept).await.is_ok());
    assert!(matches!(
        tx.issuances().get(lost).await,
        Err(Error::NotFound)
    ));
    drop(tx);
    assert_eq!(budget(store, &p).await.reserved, money("5"));
    assert_books_balance(store, p.tenant).await;
}

#[tokio::test]
async fn a_global_limit_used_up_before_commit_is_refused_at_commit() {
    let db = TestDb::new().await;
    let store = db.store();
    let p = programme(
        store,
        Knobs {
            global_limit: Some(2),
            ..Knobs::default()
        },
    )
    .await;
    let people = customers(store, p.tenant, 4).await;
    issue(store, &p, people[0], "first").await.unwrap();
    // Both fit when issued; only one of them fits when they commit.
    let (_, lost, late) = issue_in_two_guards(store, &p, people[1], people[2]).await;
    assert!(matches!(
        late,
        Err(Error::LimitReached {
            scope: LimitScope::Global
        })
    ));
    let mut tx = store.tenant(p.tenant).await.unwrap();
    assert!(matches!(
        tx.issuances().get(lost).await,
        Err(Error::NotFound)
    ));
    drop(tx);
    // Used up: refused up front now, before any work.
    let mut tx = store.tenant(p.tenant).await.unwrap();
    assert!(matches!(
        tx.issuances().issue(issue_to(&p, people[3], "after")).await,
        Err(Error::LimitReached {
            scope: LimitScope::Global
        })
    ));
    drop(tx);
    assert_eq!(budget(store, &p).await.reserved, money("5.00"));
    assert_books_balance(store, p.tenant).await;
}

#[tokio::test]
async fn a_global_limit_added_after_an_issuance_in_the_same_transaction_counts_it_once() {
    let db = TestDb::new().await;
    let store = db.store();
    let p = programme(store, Knobs::default()).await;
    let people = customers(store, p.tenant, 3).await;
    let mut tx = store.tenant(p.tenant).await.unwrap();
    tx.issuances()
        .issue(issue_to(&p, people[0], "before-the-limit"))
        .await
        .unwrap();
    tx.conn()
        .batch_execute(&format!(
            "UPDATE rules SET global_limit = 2 WHERE id = '{}'",
            p.rule
        ))
        .await
        .unwrap();
    tx.commit().await.unwrap();
    issue(store, &p, people[1], "second").await.unwrap();
    let third = issue(store, &p, people[2], "third").await;
    assert!(
        matches!(
            third,
            Err(Error::LimitReached {
                scope: LimitScope::Global
            })
        ),
        "{third:?}"
    );
}

#[tokio::test]
async fn a_cancel_racing_the_codes_delivery_keeps_the_code_on_the_issuance() {
    let db = TestDb::new().await;
    let store = db.store();
    let p = programme(
        store,
        Knobs {
            uses_codes: true,
            ..Knobs::default()
        },
    )
    .await;
    import_codes(store, &p, 1).await;
    let ada = customers(store, p.tenant, 1).await[0];
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
    let p = programme(store, Knobs::default()).await;
    let people = customers(store, p.tenant, 2).await;
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

#[tokio::test]
async fn a_retry_that_waited_while_its_first_delivery_used_up_the_budget_replays() {
    let db = TestDb::new().await;
    let store = db.store();
    let p = programme(
        store,
        Knobs {
            hard_cap: 2,
            cost: "2",
            ..Knobs::default()
        },
    )
    .await;
    let ada = customers(store, p.tenant, 1).await[0];
    let mut first = store.tenant(p.tenant).await.unwrap();
    let issued = first
        .issuances()
        .issue(issue_to(&p, ada, "order-7"))
        .await
        .unwrap();
    // A batch on the rule queues for its exclusive lock behind the first
    // delivery, and the retry queues behind the batch, after its first
    // replay check has found nothing committed.
    let batch = tokio::spawn({
        let (store, p) = (store.clone(), p);
        async move {
            let mut batch = store.tenant(p.tenant).await.unwrap();
            batch
                .conn()
                .batch_execute(&format!(
                    "SELECT pg_advisory_xact_lock(rule_lock('{}'))",
                    p.rule
                ))
                .await
                .unwrap();
            batch.rollback().await;
        }
    });
    wait_for_lock_waiters(store, "advisory", 1).await;
    let retry = tokio::spawn({
        let (store, p) = (store.clone(), p);
        async move { issue(&store, &p, ada, "order-7").await }
    });
    wait_for_lock_waiters(store, "advisory", 2).await;
    first.commit().await.unwrap(); // the budget is now full
    batch.await.unwrap();
    let again = retry.await.unwrap().unwrap();
    assert!(again.replayed);
    assert_eq!(again.issuance.id, issued.issuance.id);
    assert_books_balance(store, p.tenant).await;
}

#[tokio::test]
async fn a_batch_flag_left_in_the_session_does_not_skip_a_reservation() {
    let db = TestDb::new().await;
    let store = Store::connect(Config::from_url(db.url()).unwrap().with_pool_size(1))
        .await
        .unwrap();
    let p = programme(&store, Knobs::default()).await;
    let ada = customers(&store, p.tenant, 1).await[0];
    let mut tx = store.tenant(p.tenant).await.unwrap();
    tx.conn()
        .batch_execute("SET SESSION loyalty.batch_reserved = 'on'")
        .await
        .unwrap();
    tx.commit().await.unwrap();
    // The pool's only connection, still carrying the session setting.
    issue(&store, &p, ada, "k").await.unwrap();
    assert_eq!(budget(&store, &p).await.reserved, money("2.50"));
    assert_books_balance(&store, p.tenant).await;
}

/// Issues to `early` and `late` in two guards open at once, then commits the
/// early one: the two issuances' ids and the late guard's commit.
async fn issue_in_two_guards(
    store: &Store,
    p: &common::Programme,
    early: CustomerId,
    late: CustomerId,
) -> (IssuanceId, IssuanceId, Result<()>) {
    let mut first = store.tenant(p.tenant).await.unwrap();
    let mut second = store.tenant(p.tenant).await.unwrap();
    let kept = first
        .issuances()
        .issue(issue_to(p, early, "early"))
        .await
        .unwrap();
    let lost = second
        .issuances()
        .issue(issue_to(p, late, "late"))
        .await
        .unwrap();
    first.commit().await.unwrap();
    (kept.issuance.id, lost.issuance.id, second.commit().await)
}

/// Waits until `count` backends wait for a lock of `locktype` (`advisory`,
/// or `transactionid` for a row another transaction holds).
async fn wait_for_lock_waiters(store: &Store, locktype: &str, count: i64) {
    #[derive(diesel::QueryableByName)]
    struct Waiting {
        #[diesel(sql_type = diesel::sql_types::BigInt)]
        n: i64,
    }
    let mut watcher = store.raw_connection().await.unwrap();
    loop {
        let waiting: Waiting = diesel::sql_query(
            "SELECT count(*) AS n FROM pg_locks WHERE locktype = $1 AND NOT granted",
        )
        .bind::<diesel::sql_types::Text, _>(locktype)
        .get_result(&mut *watcher)
        .await
        .unwrap();
        if waiting.n >= count {
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
}
