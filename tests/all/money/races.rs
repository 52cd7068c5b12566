//! Concurrency proofs: many tasks on one pool racing for the same budget,
//! codes, limits and idempotency keys.

use std::collections::HashSet;

use crate::support::{assert_books_balance, budget, customers, import_codes, issue, money};
use chrono::{Duration, Utc};
use diesel::prelude::*;
use diesel_async::RunQueryDsl;
use loyalty_store::LimitScope;
use loyalty_store::prelude::*;
use loyalty_store::schema::issuances;
use loyalty_store::testing::{CampaignFixture, TestDb};

const TASKS: usize = 32;

async fn racing_store(db: &TestDb) -> Store {
    Store::connect(db.config().with_pool_size(TASKS as u32))
        .await
        .unwrap()
}

/// Runs `TASKS` issuances at once; task `n` issues to `customer(n)` under key `key(n)`.
async fn race(
    store: &Store,
    p: &CampaignFixture,
    customer: impl Fn(usize) -> CustomerId,
    key: impl Fn(usize) -> String,
) -> Vec<Result<loyalty_store::repo::issuances::Issued>> {
    let programme = std::sync::Arc::new(p.clone());
    let mut tasks = Vec::new();
    for n in 0..TASKS {
        let (store, programme, customer, key) =
            (store.clone(), programme.clone(), customer(n), key(n));
        tasks.push(tokio::spawn(async move {
            issue(&store, &programme, customer, &key).await
        }));
    }
    let mut outcomes = Vec::new();
    for task in tasks {
        outcomes.push(task.await.unwrap());
    }
    outcomes
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_budget_for_k_issuances_grants_exactly_k() {
    let db = TestDb::new().await;
    let store = racing_store(&db).await;
    const K: usize = 7;
    let p = CampaignFixture::builder()
        .hard_cap(7)
        .cost(money("1"))
        .create(&store)
        .await
        .unwrap();
    let people = customers(&store, p.tenant, TASKS).await;
    let outcomes = race(&store, &p, |n| people[n], |n| format!("k{n}")).await;
    let granted = outcomes.iter().filter(|o| o.is_ok()).count();
    assert_eq!(granted, K);
    assert!(
        outcomes
            .iter()
            .filter(|o| o.is_err())
            .all(|o| matches!(o, Err(Error::Refused(Refusal::BudgetExhausted))))
    );
    let b = budget(&store, &p).await;
    assert_eq!((b.reserved, b.spent), (money("7"), money("0")));
    assert_books_balance(&store, p.tenant).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_pool_of_c_codes_hands_each_out_once() {
    let db = TestDb::new().await;
    let store = racing_store(&db).await;
    const C: usize = 9;
    let p = CampaignFixture::builder()
        .uses_codes()
        .create(&store)
        .await
        .unwrap();
    import_codes(&store, &p, C).await;
    let people = customers(&store, p.tenant, TASKS).await;
    let outcomes = race(&store, &p, |n| people[n], |n| format!("k{n}")).await;
    let codes: Vec<String> = outcomes
        .iter()
        .filter_map(|o| o.as_ref().ok())
        .map(|i| i.voucher_code.clone().unwrap())
        .collect();
    assert_eq!(codes.len(), C);
    assert_eq!(
        codes.iter().collect::<HashSet<_>>().len(),
        C,
        "no code issued twice"
    );
    assert!(
        outcomes
            .iter()
            .filter(|o| o.is_err())
            .all(|o| matches!(o, Err(Error::Refused(Refusal::NoCodesAvailable))))
    );
    assert_books_balance(&store, p.tenant).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn per_customer_limits_hold_under_contention() {
    let db = TestDb::new().await;
    let store = racing_store(&db).await;
    let p = CampaignFixture::builder()
        .per_customer_limit(2)
        .create(&store)
        .await
        .unwrap();
    let ada = customers(&store, p.tenant, 1).await[0];
    let outcomes = race(&store, &p, |_| ada, |n| format!("k{n}")).await;
    assert_eq!(outcomes.iter().filter(|o| o.is_ok()).count(), 2);
    assert!(outcomes.iter().filter(|o| o.is_err()).all(|o| matches!(
        o,
        Err(Error::Refused(Refusal::LimitReached {
            scope: LimitScope::Customer
        }))
    )));
    let mut tx = store.tenant(p.tenant).await.unwrap();
    assert_eq!(
        tx.rules()
            .customer_issuance_count(p.rule, ada)
            .await
            .unwrap(),
        2
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn global_limits_hold_under_contention() {
    let db = TestDb::new().await;
    let store = racing_store(&db).await;
    let p = CampaignFixture::builder()
        .global_limit(5)
        .create(&store)
        .await
        .unwrap();
    let people = customers(&store, p.tenant, TASKS).await;
    let outcomes = race(&store, &p, |n| people[n], |n| format!("k{n}")).await;
    assert_eq!(outcomes.iter().filter(|o| o.is_ok()).count(), 5);
    assert!(outcomes.iter().filter(|o| o.is_err()).all(|o| matches!(
        o,
        Err(Error::Refused(Refusal::LimitReached {
            scope: LimitScope::Global
        }))
    )));
    let mut tx = store.tenant(p.tenant).await.unwrap();
    assert_eq!(
        tx.rules()
            .issuance_count(p.rule, Utc::now() - Duration::hours(1))
            .await
            .unwrap(),
        5
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn one_idempotency_key_from_16_tasks_issues_once() {
    let db = TestDb::new().await;
    let store = racing_store(&db).await;
    let p = CampaignFixture::builder()
        .uses_codes()
        .per_customer_limit(1)
        .create(&store)
        .await
        .unwrap();
    import_codes(&store, &p, 20).await;
    let ada = customers(&store, p.tenant, 1).await[0];
    let programme = std::sync::Arc::new(p);
    let mut tasks = Vec::new();
    for _ in 0..16 {
        let (store, programme) = (store.clone(), programme.clone());
        tasks.push(tokio::spawn(async move {
            issue(&store, &programme, ada, "the-key").await.unwrap()
        }));
    }
    let mut answers = Vec::new();
    for task in tasks {
        answers.push(task.await.unwrap());
    }
    assert_eq!(answers.iter().filter(|a| !a.replayed).count(), 1);
    assert!(answers.iter().all(|a| a.issuance == answers[0].issuance && a.voucher_code == answers[0].voucher_code));
    assert_eq!(budget(&store, &programme).await.reserved, money("2.50"));
    let mut tx = store.tenant(programme.tenant).await.unwrap();
    assert_eq!(
        tx.voucher_codes()
            .counts(programme.reward)
            .await
            .unwrap()
            .reserved,
        1
    );
    drop(tx);
    assert_books_balance(&store, programme.tenant).await;
}

/// Webhook redeliveries racing their first delivery, with no per-customer
/// limit to serialise them and fewer codes than callers: every delivery
/// replays the one issuance, none is refused for want of a code. Many
/// rounds, since the losing interleaving is a narrow one.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn redeliveries_racing_the_first_call_replay_even_for_the_last_code() {
    let db = TestDb::new().await;
    let store = racing_store(&db).await;
    let p = CampaignFixture::builder()
        .uses_codes()
        .create(&store)
        .await
        .unwrap();
    const ROUNDS: usize = 25;
    const DELIVERIES: usize = 8;
    let people = customers(&store, p.tenant, ROUNDS).await;
    let programme = std::sync::Arc::new(p);
    for (round, customer) in people.into_iter().enumerate() {
        // One code for eight callers.
        let mut tx = store.tenant(programme.tenant).await.unwrap();
        tx.voucher_codes()
            .import(programme.reward, &[format!("LAST-{round}")])
            .await
            .unwrap();
        tx.commit().await.unwrap();
        let mut tasks = Vec::new();
        for _ in 0..DELIVERIES {
            let (store, programme) = (store.clone(), programme.clone());
            tasks.push(tokio::spawn(async move {
                issue(&store, &programme, customer, &format!("order-{round}")).await
            }));
        }
        let mut answers = Vec::new();
        for task in tasks {
            answers.push(
                task.await
                    .unwrap()
                    .unwrap_or_else(|e| panic!("round {round}: a delivery was refused: {e:?}")),
            );
        }
        assert_eq!(
            answers.iter().filter(|a| !a.replayed).count(),
            1,
            "round {round}"
        );
        assert!(answers.iter().all(|a| a.issuance == answers[0].issuance));
    }
    let mut tx = store.tenant(programme.tenant).await.unwrap();
    assert_eq!(
        tx.voucher_codes()
            .counts(programme.reward)
            .await
            .unwrap()
            .available,
        0
    );
    drop(tx);
    assert_books_balance(&store, programme.tenant).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_random_mix_keeps_the_books_balanced() {
    let db = TestDb::new().await;
    let store = racing_store(&db).await;
    let p = CampaignFixture::builder()
        .hard_cap(60)
        .uses_codes()
        .per_customer_limit(3)
        .create(&store)
        .await
        .unwrap();
    import_codes(&store, &p, 40).await;
    let people = std::sync::Arc::new(customers(&store, p.tenant, 8).await);
    let programme = std::sync::Arc::new(p);
    let mut tasks = Vec::new();
    for worker in 0..TASKS as u64 {
        let (store, programme, people) = (store.clone(), programme.clone(), people.clone());
        tasks.push(tokio::spawn(async move {
            let mut seed = worker.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
            let mut next = move |n: u64| {
                seed ^= seed << 13;
                seed ^= seed >> 7;
                seed ^= seed << 17;
                seed % n
            };
            let mut mine = Vec::new();
            for step in 0..25 {
                let mut tx = store.tenant(programme.tenant).await.unwrap();
                let outcome = match next(4) {
                    0 | 1 => {
                        let customer = people[next(people.len() as u64) as usize];
                        let expires_at =
                            (next(2) == 0).then(|| Utc::now() + Duration::milliseconds(300));
                        let new = NewIssuance {
                            rule_id: programme.rule,
                            customer_id: customer,
                            idempotency_key: format!("w{worker}-s{step}"),
                            expires_at,
                        };
                        tx.issuances().issue(new).await.map(|i| Some(i.issuance.id))
                    }
                    2 if !mine.is_empty() => {
                        let id = mine[next(mine.len() as u64) as usize];
                        if next(2) == 0 {
                            tx.issuances().redeem(id).await.map(|_| None)
                        } else {
                            tx.issuances().cancel(id).await.map(|_| None)
                        }
                    }
                    _ => tx.issuances().expire_due(Utc::now(), 5).await.map(|_| None),
                };
                // An issuance's budget check binds at commit, so commit can refuse too.
                let committed = match outcome {
                    Ok(issued) => tx.commit().await.map(|()| issued),
                    Err(e) => Err(e),
                };
                match committed {
                    Ok(issued) => mine.extend(issued),
                    Err(
                        Error::Refused(Refusal::BudgetExhausted)
                        | Error::Refused(Refusal::NoCodesAvailable)
                        | Error::Refused(Refusal::LimitReached { .. })
                        | Error::Refused(
                            Refusal::IssuanceNotIssued { .. } | Refusal::IssuanceExpired,
                        ),
                    ) => {}
                    // A 300 ms expiry can pass before a busy server starts
                    // the issuing transaction (on Citus, the worker's).
                    Err(Error::InvalidInput {
                        field: "expires_at",
                        ..
                    }) => {}
                    Err(e) => panic!("unexpected: {e:?}"),
                }
            }
        }));
    }
    for task in tasks {
        task.await.unwrap();
    }
    let b = budget(&store, &programme).await;
    assert!(&b.reserved + &b.spent <= b.hard_cap, "{b:?}");
    assert!(b.reserved >= money("0") && b.spent >= money("0"));
    assert_books_balance(&store, programme.tenant).await;
    let mut tx = store.tenant(programme.tenant).await.unwrap();
    let codes = tx.voucher_codes().counts(programme.reward).await.unwrap();
    assert_eq!(
        codes.available + codes.reserved + codes.issued + codes.invalid,
        40
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn batches_and_single_issuances_share_codes_budget_and_limits() {
    let db = TestDb::new().await;
    let store = racing_store(&db).await;
    const CAP: i64 = 40;
    let p = CampaignFixture::builder()
        .hard_cap(CAP)
        .cost(money("1"))
        .uses_codes()
        .per_customer_limit(3)
        .create(&store)
        .await
        .unwrap();
    // Codes and limits (20 customers × 3) leave room: the budget binds.
    import_codes(&store, &p, 60).await;
    let people = std::sync::Arc::new(customers(&store, p.tenant, 20).await);
    let programme = std::sync::Arc::new(p);
    let mut tasks = Vec::new();
    for worker in 0..TASKS {
        let (store, programme, people) = (store.clone(), programme.clone(), people.clone());
        tasks.push(tokio::spawn(async move {
            let mut issued = 0;
            for step in 0..6 {
                let customer = |k: usize| people[(worker * 5 + step * 7 + k * 3) % people.len()];
                let mut tx = store.tenant(programme.tenant).await.unwrap();
                let outcome = if worker % 2 == 0 {
                    let recipients = (0..3)
                        .map(|k| (customer(k), format!("w{worker}-s{step}-{k}")))
                        .collect();
                    let batch = NewBatch {
                        recipients,
                        ..NewBatch::for_customers(programme.rule, &[], "")
                    };
                    tx.issuances()
                        .issue_batch(batch)
                        .await
                        .map(|report| if report.applied { 3 } else { 0 })
                } else {
                    let new = crate::support::issue_to(
                        &programme,
                        customer(0),
                        &format!("w{worker}-s{step}"),
                    );
                    tx.issuances().issue(new).await.map(|_| 1)
                };
                let committed = match outcome {
                    Ok(n) => tx.commit().await.map(|()| n),
                    Err(e) => Err(e),
                };
                match committed {
                    Ok(n) => issued += n,
                    Err(
                        Error::Refused(Refusal::BudgetExhausted)
                        | Error::Refused(Refusal::NoCodesAvailable)
                        | Error::Refused(Refusal::LimitReached { .. }),
                    ) => {}
                    Err(e) => panic!("unexpected: {e:?}"),
                }
            }
            issued
        }));
    }
    let mut issued = 0;
    for task in tasks {
        issued += task.await.unwrap();
    }
    // A batch of three is refused whole when fewer than three are left.
    assert!(
        (CAP - 2..=CAP).contains(&issued),
        "{issued} issued against a cap of {CAP}"
    );
    let b = budget(&store, &programme).await;
    assert_eq!(b.reserved, money(&issued.to_string()), "{b:?}");
    assert_books_balance(&store, programme.tenant).await;

    let mut tx = store.tenant(programme.tenant).await.unwrap();
    let codes = tx.voucher_codes().counts(programme.reward).await.unwrap();
    assert_eq!(codes.reserved, issued, "one code per issuance");
    let (rows, distinct_codes): (i64, i64) = issuances::table
        .select((
            diesel::dsl::count_star(),
            diesel::dsl::sql::<diesel::sql_types::BigInt>("count(DISTINCT voucher_code_id)"),
        ))
        .get_result(tx.conn())
        .await
        .unwrap();
    assert_eq!(
        (rows, distinct_codes),
        (issued, issued),
        "no code issued twice"
    );
    for customer in people.iter() {
        let count = tx
            .rules()
            .customer_issuance_count(programme.rule, *customer)
            .await
            .unwrap();
        assert!(count <= 3, "customer {customer} got {count}");
    }
}
