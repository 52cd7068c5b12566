//! Single issuances: replays, refusals, and what binds at commit.

use chrono::{Duration, Utc};
use diesel_async::{RunQueryDsl, SimpleAsyncConnection};
use loyalty_store::prelude::*;
use loyalty_store::repo::issuances::{BatchOutcome, Issued};
use loyalty_store::repo::voucher_codes::StatusCounts;
use loyalty_store::testing::{CampaignFixture, TestDb};

use crate::support::{
    assert_books_balance, budget, customers, import_codes, issue, issue_to, logins, money,
    wait_for_lock_waiters,
};

#[tokio::test]
async fn issue_reserves_budget_claims_a_code_and_replays_by_key() {
    let db = TestDb::new().await;
    let store = db.store();
    let p = CampaignFixture::builder()
        .voucher_codes(3)
        .customers(1)
        .create(store)
        .await
        .unwrap();
    let ada = p.customers[0];
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
    let p = CampaignFixture::builder()
        .hard_cap(5)
        .per_customer_limit(1)
        .uses_codes()
        .voucher_codes(1)
        .customers(3)
        .create(store)
        .await
        .unwrap();
    let people = p.customers.clone();
    issue(store, &p, people[0], "k0").await.unwrap();
    let refused = |outcome: Result<Issued>| outcome.expect_err("should be refused");
    assert!(matches!(
        refused(issue(store, &p, people[0], "k1").await),
        Error::Refused(Refusal::LimitReached {
            scope: LimitScope::Customer
        })
    ));
    assert!(matches!(
        refused(issue(store, &p, people[1], "k2").await),
        Error::Refused(Refusal::NoCodesAvailable)
    ));
    import_codes(store, &p, 3).await; // CODE-000000 exists: 2 new codes
    issue(store, &p, people[1], "k3").await.unwrap(); // 5.00 of 5 now reserved
    assert!(matches!(
        refused(issue(store, &p, people[2], "k4").await),
        Error::Refused(Refusal::BudgetExhausted)
    ));
    assert!(matches!(
        refused(issue(store, &p, CustomerId::new(), "k5").await),
        Error::Refused(Refusal::CustomerNotFound)
    ));
    let mut tx = store.tenant(p.tenant).await.unwrap();
    let unknown_rule = NewIssuance {
        rule_id: RuleId::new(),
        ..issue_to(&p, people[2], "k6")
    };
    assert!(matches!(
        tx.issuances().issue(unknown_rule).await,
        Err(Error::Refused(Refusal::RuleNotFound))
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
        Error::Refused(Refusal::CustomerInactive {
            status: CustomerStatus::Blocked
        })
    ));
    let mut tx = store.tenant(p.tenant).await.unwrap();
    tx.rules().set_active(p.rule, false).await.unwrap();
    tx.commit().await.unwrap();
    assert!(matches!(
        refused(issue(store, &p, people[1], "k8").await),
        Error::Refused(Refusal::RuleInactive)
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
        Error::Refused(Refusal::CampaignNotRunning)
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
    let p = CampaignFixture::builder()
        .hard_cap(1)
        .customers(1)
        .create(store)
        .await
        .unwrap();
    let ada = p.customers[0];
    let mut tx = store.tenant(p.tenant).await.unwrap();
    tx.customers()
        .create(NewCustomer::new("+15559999999"))
        .await
        .unwrap();
    assert!(matches!(
        tx.issuances().issue(issue_to(&p, ada, "k")).await,
        Err(Error::Refused(Refusal::BudgetExhausted))
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
async fn another_tenant_cannot_issue_redeem_or_see_issuances() {
    let db = TestDb::new().await;
    let store = db.store();
    let p = CampaignFixture::builder()
        .customers(1)
        .create(store)
        .await
        .unwrap();
    let ada = p.customers[0];
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
        Err(Error::Refused(Refusal::IssuanceNotFound))
    ));
    drop(tx);
    let mut tx = store.tenant(other).await.unwrap();
    assert!(matches!(
        tx.issuances().issue(issue_to(&p, ada, "k2")).await,
        Err(Error::Refused(Refusal::RuleNotFound))
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
    let p = CampaignFixture::builder()
        .customers(5)
        .create(store)
        .await
        .unwrap();
    let people = p.customers.clone();
    for (n, c) in people.iter().take(3).enumerate() {
        issue(store, &p, *c, &format!("k{n}")).await.unwrap();
    }
    let mut conn = db.admin_connection().await;
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
            Err(Error::Refused(Refusal::LimitReached {
                scope: LimitScope::Global
            }))
        ),
        "{fifth:?}"
    );
}

#[tokio::test]
async fn a_key_reused_for_another_customer_is_a_conflict_not_a_replay() {
    let db = TestDb::new().await;
    let store = db.store();
    let p = CampaignFixture::builder()
        .voucher_codes(5)
        .customers(3)
        .create(store)
        .await
        .unwrap();
    let people = p.customers.clone();
    issue(store, &p, people[0], "order-7").await.unwrap();
    let reused = issue(store, &p, people[1], "order-7").await;
    assert!(
        matches!(reused, Err(Error::Refused(Refusal::IdempotencyConflict))),
        "{reused:?}"
    );
    let mut tx = store.tenant(p.tenant).await.unwrap();
    let batch = NewBatch {
        recipients: vec![(people[1], "order-7".into()), (people[2], "order-8".into())],
        ..NewBatch::for_customers(p.rule, &[], "")
    };
    let report = tx.issuances().issue_batch(batch).await.unwrap();
    assert!(!report.applied);
    assert!(matches!(
        report.items[0].outcome,
        BatchOutcome::Refused(Refusal::IdempotencyConflict)
    ));
    assert!(matches!(report.items[1].outcome, BatchOutcome::Held));
}

#[tokio::test]
async fn issuance_reservations_cannot_be_settled_through_the_budget_api() {
    let db = TestDb::new().await;
    let store = db.store();
    let p = CampaignFixture::builder()
        .customers(1)
        .create(store)
        .await
        .unwrap();
    let ada = p.customers[0];
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
        "SELECT * FROM loyalty.move_budget('{}', '{}', 'release', 2.50, 'issuance', '{}')",
        p.tenant, p.budget, issued.issuance.id
    ))
    .execute(tx.conn())
    .await
    .map_err(Error::from);
    assert!(
        matches!(raw, Err(Error::Refused(Refusal::InvalidArgument { ref argument, .. })) if argument == "ref_type"),
        "{raw:?}"
    );
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
    let p = CampaignFixture::builder()
        .hard_cap(5)
        .customers(3)
        .create(store)
        .await
        .unwrap();
    let people = p.customers.clone();
    issue(store, &p, people[0], "first").await.unwrap(); // 2.50 of 5 reserved
    // Both fit when issued; only one of them fits when they commit.
    let (kept, lost, late) = issue_in_two_guards(store, &p, people[1], people[2]).await;
    assert!(matches!(
        late,
        Err(Error::Refused(Refusal::BudgetExhausted))
    ));
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
    let p = CampaignFixture::builder()
        .global_limit(2)
        .customers(4)
        .create(store)
        .await
        .unwrap();
    let people = p.customers.clone();
    issue(store, &p, people[0], "first").await.unwrap();
    // Both fit when issued; only one of them fits when they commit.
    let (_, lost, late) = issue_in_two_guards(store, &p, people[1], people[2]).await;
    assert!(matches!(
        late,
        Err(Error::Refused(Refusal::LimitReached {
            scope: LimitScope::Global
        }))
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
        Err(Error::Refused(Refusal::LimitReached {
            scope: LimitScope::Global
        }))
    ));
    drop(tx);
    assert_eq!(budget(store, &p).await.reserved, money("5.00"));
    assert_books_balance(store, p.tenant).await;
}

#[tokio::test]
async fn a_global_limit_added_after_an_issuance_in_the_same_transaction_counts_it_once() {
    let db = TestDb::new().await;
    let store = db.store();
    let p = CampaignFixture::builder()
        .customers(3)
        .create(store)
        .await
        .unwrap();
    let people = p.customers.clone();
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
            Err(Error::Refused(Refusal::LimitReached {
                scope: LimitScope::Global
            }))
        ),
        "{third:?}"
    );
}

#[tokio::test]
async fn a_retry_that_waited_while_its_first_delivery_used_up_the_budget_replays() {
    let db = TestDb::new().await;
    let store = db.store();
    let p = CampaignFixture::builder()
        .hard_cap(2)
        .cost(money("2"))
        .create(store)
        .await
        .unwrap();
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
        let (store, p) = (store.clone(), p.clone());
        async move {
            let mut batch = store.tenant(p.tenant).await.unwrap();
            batch
                .conn()
                .batch_execute(&format!(
                    "SELECT pg_advisory_xact_lock(loyalty.rule_lock('{}'))",
                    p.rule
                ))
                .await
                .unwrap();
            batch.rollback().await;
        }
    });
    wait_for_lock_waiters(store, "advisory", 1).await;
    let retry = tokio::spawn({
        let (store, p) = (store.clone(), p.clone());
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

/// The batch's "already reserved" signal is a marker on its own ledger
/// rows: no setting a guard's SQL can make, in the session or in the
/// transaction, makes a single issuance skip its reservation.
#[tokio::test]
async fn no_setting_makes_an_issuance_skip_its_reservation() {
    let db = TestDb::new().await;
    for (login, store) in logins(&db).await {
        let p = CampaignFixture::builder()
            .hard_cap(5)
            .customers(3)
            .create(db.store())
            .await
            .unwrap();
        let mut tx = store.tenant(p.tenant).await.unwrap();
        tx.conn()
            .batch_execute("SET SESSION loyalty.batch_reserved = 'on'")
            .await
            .unwrap();
        tx.commit().await.unwrap();
        // The pool's only connection, where the session setting was made.
        issue(&store, &p, p.customers[0], "k").await.unwrap();
        let mut tx = store.tenant(p.tenant).await.unwrap();
        tx.conn()
            .batch_execute(
                "SELECT set_config('loyalty.batch_reserved', pg_current_xact_id()::text, true)",
            )
            .await
            .unwrap();
        tx.issuances()
            .issue(issue_to(&p, p.customers[1], "k2"))
            .await
            .unwrap();
        tx.commit().await.unwrap();
        assert_eq!(budget(&store, &p).await.reserved, money("5"), "{login}");
        assert!(
            matches!(
                issue(&store, &p, p.customers[2], "k3").await,
                Err(Error::Refused(Refusal::BudgetExhausted))
            ),
            "{login}"
        );
        assert_books_balance(&store, p.tenant).await;
    }
}

/// Issues to `early` and `late` in two guards open at once, then commits the
/// early one: the two issuances' ids and the late guard's commit.
async fn issue_in_two_guards(
    store: &Store,
    p: &CampaignFixture,
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
