//! Timeouts, lost connections and refused connections come back as errors a
//! caller can act on.

use std::time::{Duration, Instant};

use diesel::dsl::sql;
use diesel::sql_types::{Integer, Text};
use diesel_async::{RunQueryDsl, SimpleAsyncConnection};
use loyalty_store::TimeoutKind;
use loyalty_store::prelude::*;
use loyalty_store::testing::{CampaignFixture, TestDb};

use crate::support::{as_admin, issue_to, money};

async fn backend_pid(tx: &mut TenantConn) -> i32 {
    diesel::select(sql::<Integer>("pg_backend_pid()"))
        .get_result(tx.conn())
        .await
        .unwrap()
}

async fn setting(conn: &mut diesel_async::AsyncPgConnection, name: &str) -> String {
    diesel::select(sql::<Text>(&format!("current_setting('{name}')")))
        .get_result(conn)
        .await
        .unwrap()
}

/// One issuance in a guard of its own, under faults: `true` when it was
/// acknowledged, `false` for a failure the caller can act on; any other
/// failure fails the test.
async fn issue_acknowledged(store: &Store, shop: &CampaignFixture, task: usize, key: &str) -> bool {
    let outcome = async {
        let mut tx = store.tenant(shop.tenant).await?;
        tx.issuances()
            .issue(issue_to(shop, shop.customers[task], key))
            .await?;
        tx.commit().await
    }
    .await;
    match outcome {
        Ok(()) => true,
        Err(err) if err.is_retryable() => false,
        Err(
            Error::CommitOutcomeUnknown { .. } | Error::Connection(_) | Error::TransactionAborted,
        ) => false,
        Err(other) => panic!("{key}: an untyped failure: {other:?}"),
    }
}

/// Every acknowledged issuance exists, and the books balance, seen through
/// a store of its own (faults may have closed the harness store's idle
/// connections).
async fn assert_kept(db: &TestDb, shop: &CampaignFixture, acknowledged: &[String]) {
    assert!(!acknowledged.is_empty());
    let fresh = Store::connect(db.config()).await.unwrap();
    let mut tx = fresh.tenant(shop.tenant).await.unwrap();
    for key in acknowledged {
        assert!(
            tx.issuances().find_by_key(key).await.unwrap().is_some(),
            "{key} was acknowledged but is gone"
        );
    }
    drop(tx);
    crate::support::assert_books_balance(&fresh, shop.tenant).await;
}

/// Ends a backend, as an administrator would.
async fn terminate(db_admin_url: &str, pid: i32) {
    let mut admin =
        <diesel_async::AsyncPgConnection as diesel_async::AsyncConnection>::establish(db_admin_url)
            .await
            .unwrap();
    admin
        .batch_execute(&format!("SELECT pg_terminate_backend({pid})"))
        .await
        .unwrap();
}

/// Every timeout is transaction-local: set by the guard's opening, gone from
/// the session afterwards, so nothing stays on a server connection that
/// PgBouncer hands to another client.
#[tokio::test]
async fn timeouts_are_set_per_guard_and_leave_nothing_on_the_session() {
    let db = TestDb::new().await;
    let shop = CampaignFixture::builder().create(db.store()).await.unwrap();
    let store = Store::connect(
        db.config()
            .with_pool_size(1)
            .with_statement_timeout(Some(Duration::from_millis(1500)))
            .with_lock_timeout(Some(Duration::from_millis(250)))
            .with_idle_in_transaction_timeout(Some(Duration::from_secs(7))),
    )
    .await
    .unwrap();
    let mut tx = store.tenant(shop.tenant).await.unwrap();
    assert_eq!(setting(tx.conn(), "statement_timeout").await, "1500ms");
    assert_eq!(setting(tx.conn(), "lock_timeout").await, "250ms");
    assert_eq!(
        setting(tx.conn(), "idle_in_transaction_session_timeout").await,
        "7s"
    );
    tx.commit().await.unwrap();
    let mut conn = store.raw_connection().await.unwrap();
    for name in [
        "statement_timeout",
        "lock_timeout",
        "idle_in_transaction_session_timeout",
    ] {
        assert_eq!(setting(&mut conn, name).await, "0", "{name}");
    }
}

/// PostgreSQL lifts the statement timeout before `COMMIT` runs the deferred
/// budget check; the lock timeout still bounds its wait for a budget row
/// that an idle guard holds.
#[tokio::test]
async fn a_commit_waiting_on_a_budget_row_times_out() {
    let db = TestDb::new().await;
    let shop = CampaignFixture::builder()
        .customers(1)
        .create(db.store())
        .await
        .unwrap();
    let store = Store::connect(
        db.config()
            .with_lock_timeout(Some(Duration::from_millis(300))),
    )
    .await
    .unwrap();
    let mut holder = store.tenant(shop.tenant).await.unwrap();
    holder
        .budgets()
        .top_up(shop.budget, money("1"), uuid::Uuid::new_v4())
        .await
        .unwrap();

    let mut tx = store.tenant(shop.tenant).await.unwrap();
    tx.issuances()
        .issue(issue_to(&shop, shop.customers[0], "waits"))
        .await
        .unwrap();
    let started = Instant::now();
    let outcome = tx.commit().await;
    assert!(
        matches!(
            outcome,
            Err(Error::Timeout {
                kind: TimeoutKind::Lock,
                ..
            })
        ),
        "{outcome:?}"
    );
    assert!(outcome.unwrap_err().is_retryable());
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "{:?}",
        started.elapsed()
    );
    holder.rollback().await;
    crate::support::assert_books_balance(db.store(), shop.tenant).await;
}

#[tokio::test]
async fn a_statement_timeout_is_typed_and_not_retryable() {
    let db = TestDb::new().await;
    let shop = CampaignFixture::builder().create(db.store()).await.unwrap();
    let store = Store::connect(
        db.config()
            .with_statement_timeout(Some(Duration::from_millis(50))),
    )
    .await
    .unwrap();
    let mut tx = store.tenant(shop.tenant).await.unwrap();
    let slow = tx
        .conn()
        .batch_execute("SELECT pg_sleep(1)")
        .await
        .map_err(Error::from);
    assert!(
        matches!(
            slow,
            Err(Error::Timeout {
                kind: TimeoutKind::Statement,
                ..
            })
        ),
        "{slow:?}"
    );
    assert!(!slow.unwrap_err().is_retryable());
}

/// A backend killed mid-guard: the next statement reports a lost
/// connection (retryable, nothing kept), and the commit that follows an
/// untouched kill reports that its outcome is unknown.
#[tokio::test]
async fn a_killed_backend_is_a_lost_connection_or_an_unknown_commit() {
    let db = TestDb::new().await;
    let shop = CampaignFixture::builder().create(db.store()).await.unwrap();
    let store = db.store();

    let mut tx = store.tenant(shop.tenant).await.unwrap();
    let pid = backend_pid(&mut tx).await;
    as_admin(&db, &format!("SELECT pg_terminate_backend({pid})")).await;
    let lost = tx
        .customers()
        .create(NewCustomer::new("+15550001111"))
        .await;
    assert!(
        matches!(lost, Err(Error::ConnectionLost { .. })),
        "{lost:?}"
    );
    assert!(lost.unwrap_err().is_retryable());
    drop(tx);

    let mut tx = store.tenant(shop.tenant).await.unwrap();
    tx.customers()
        .create(NewCustomer::new("+15550002222"))
        .await
        .unwrap();
    let pid = backend_pid(&mut tx).await;
    as_admin(&db, &format!("SELECT pg_terminate_backend({pid})")).await;
    let outcome = tx.commit().await;
    assert!(
        matches!(outcome, Err(Error::CommitOutcomeUnknown { .. })),
        "{outcome:?}"
    );
    assert!(!outcome.unwrap_err().is_retryable());

    // The pool threw both broken connections away.
    let mut tx = store.tenant(shop.tenant).await.unwrap();
    assert!(
        tx.customers()
            .find_by_phone("+15550002222")
            .await
            .unwrap()
            .is_none()
    );
}

#[tokio::test]
async fn a_database_that_cannot_be_reached_keeps_its_cause() {
    let db = TestDb::new().await;
    let mut missing = url::Url::parse(&db.url()).unwrap();
    missing.set_path("no_such_database");
    let mut wrong_login = url::Url::parse(&db.url()).unwrap();
    wrong_login.set_username("no_such_login").unwrap();
    for url in [missing, wrong_login] {
        let outcome = Store::connect(Config::from_url(url.as_str()).unwrap()).await;
        match outcome {
            Err(Error::Connection(cause)) => {
                assert!(
                    cause.to_string().contains("does not exist"),
                    "{url}: {cause}"
                )
            }
            other => panic!("{url}: expected Error::Connection, got {other:?}"),
        }
    }
}

/// `health()` tells a full pool from an unreachable server.
#[tokio::test]
async fn health_tells_a_full_pool_from_a_lost_server() {
    let db = TestDb::new().await;
    let shop = CampaignFixture::builder().create(db.store()).await.unwrap();
    let store = Store::connect(
        db.config()
            .with_pool_size(1)
            .with_checkout_timeout(Duration::from_millis(200)),
    )
    .await
    .unwrap();
    let held = store.tenant(shop.tenant).await.unwrap();
    let health = store.health().await;
    assert!(health.database_reachable, "{health:?}");
    assert!(health.pool_exhausted, "{health:?}");
    drop(held);
}

async fn sleepers(db: &TestDb) -> i64 {
    use diesel::sql_types::BigInt;
    diesel::select(sql::<BigInt>(
        "(SELECT count(*) FROM pg_stat_activity \
           WHERE query LIKE 'SELECT pg_sleep(30)%' AND state = 'active')",
    ))
    .get_result(&mut db.admin_connection().await)
    .await
    .unwrap()
}

async fn until_no_sleepers(db: &TestDb) -> bool {
    for _ in 0..100 {
        if sleepers(db).await == 0 {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    false
}

/// A call given up on (its future dropped, here by a timeout) leaves its
/// statement running. The guard then refuses to commit, cancels the
/// statement, and keeps nothing: not the abandoned call's work, nor what
/// came before it.
#[tokio::test]
async fn a_guard_with_an_abandoned_call_refuses_to_commit() {
    let db = TestDb::new().await;
    let shop = CampaignFixture::builder().create(db.store()).await.unwrap();
    let store = db.store();

    let mut holder = store.tenant(shop.tenant).await.unwrap();
    holder
        .customers()
        .create(NewCustomer::new("+15550007777"))
        .await
        .unwrap();

    let mut tx = store.tenant(shop.tenant).await.unwrap();
    tx.customers()
        .create(NewCustomer::new("+15550008888"))
        .await
        .unwrap();
    // Waits on the holder's uncommitted row with the same phone.
    let abandoned = tokio::time::timeout(
        Duration::from_millis(200),
        tx.customers().create(NewCustomer::new("+15550007777")),
    )
    .await;
    assert!(abandoned.is_err(), "the call should still be waiting");
    let outcome = tx.commit().await;
    assert!(matches!(outcome, Err(Error::CallAbandoned)), "{outcome:?}");
    holder.rollback().await;

    let mut check = store.tenant(shop.tenant).await.unwrap();
    for phone in ["+15550007777", "+15550008888"] {
        assert!(
            check
                .customers()
                .find_by_phone(phone)
                .await
                .unwrap()
                .is_none(),
            "{phone}"
        );
    }
}

/// A guard dropped while its statement runs cancels it on the server, so
/// neither the backend nor the pool slot stays busy until it ends.
#[tokio::test]
async fn dropping_a_guard_cancels_its_running_statement() {
    let db = TestDb::new().await;
    let shop = CampaignFixture::builder().create(db.store()).await.unwrap();
    let store = Store::connect(db.config().with_pool_size(1)).await.unwrap();
    let mut tx = store.tenant(shop.tenant).await.unwrap();
    let slow = tokio::time::timeout(
        Duration::from_millis(200),
        tx.conn().batch_execute("SELECT pg_sleep(30)"),
    )
    .await;
    assert!(slow.is_err());
    assert_eq!(sleepers(&db).await, 1);
    drop(tx);
    assert!(
        until_no_sleepers(&db).await,
        "the statement is still running"
    );
    let started = Instant::now();
    let tx = store.tenant(shop.tenant).await.unwrap();
    assert!(started.elapsed() < Duration::from_secs(2));
    tx.commit().await.unwrap();
}

/// The retry helper runs idempotent work again after a lost connection and
/// after a commit whose outcome is unknown; the second run replays what the
/// first kept, so nothing is issued twice.
#[tokio::test]
async fn retrying_idempotent_work_never_doubles_an_issuance() {
    use futures_util::FutureExt;
    use loyalty_store::RetryPolicy;
    use std::sync::atomic::{AtomicU32, Ordering};

    let db = TestDb::new().await;
    let shop = CampaignFixture::builder()
        .customers(1)
        .create(db.store())
        .await
        .unwrap();
    let runs = AtomicU32::new(0);
    let admin_url = db.superuser_url();
    let issued = db
        .store()
        .retrying(shop.tenant, RetryPolicy::idempotent(), |tx| {
            let run = runs.fetch_add(1, Ordering::SeqCst);
            let new = issue_to(&shop, shop.customers[0], "retried-order");
            let admin_url = admin_url.clone();
            async move {
                let issued = tx.issuances().issue(new).await?;
                if run < 2 {
                    // The first run loses its connection before COMMIT
                    // (an unknown outcome); so does the second.
                    terminate(&admin_url, backend_pid(tx).await).await;
                }
                Ok(issued)
            }
            .boxed()
        })
        .await
        .unwrap();
    assert_eq!(AtomicU32::load(&runs, Ordering::SeqCst), 3);
    let mut tx = db.store().tenant(shop.tenant).await.unwrap();
    let found = tx.issuances().find_by_key("retried-order").await.unwrap();
    assert_eq!(found.map(|i| i.id), Some(issued.issuance.id));
    drop(tx);
    assert_eq!(
        crate::support::budget(db.store(), &shop).await.reserved,
        money("2.50")
    );
    crate::support::assert_books_balance(db.store(), shop.tenant).await;

    // Work that may not run twice gets the unknown outcome back.
    let outcome = db
        .store()
        .retrying(shop.tenant, RetryPolicy::default(), |tx| {
            let admin_url = admin_url.clone();
            async move {
                let pid = backend_pid(tx).await;
                let mut admin =
                    <diesel_async::AsyncPgConnection as diesel_async::AsyncConnection>::establish(
                        &admin_url,
                    )
                    .await
                    .unwrap();
                admin
                    .batch_execute(&format!("SELECT pg_terminate_backend({pid})"))
                    .await
                    .unwrap();
                Ok(())
            }
            .boxed()
        })
        .await;
    assert!(
        matches!(outcome, Err(Error::CommitOutcomeUnknown { .. })),
        "{outcome:?}"
    );
}

/// Backends killed at random while tasks issue: every acknowledged
/// issuance exists afterwards, every failure is typed, and the books
/// balance.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn killed_backends_lose_no_acknowledged_issuance() {
    use diesel::sql_types::BigInt;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};

    const TASKS: usize = 6;
    const PER_TASK: usize = 25;
    let db = TestDb::new().await;
    let shop = Arc::new(
        CampaignFixture::builder()
            .hard_cap(10_000)
            .customers(TASKS)
            .create(db.store())
            .await
            .unwrap(),
    );
    let store = Store::connect(db.config().with_pool_size(TASKS as u32))
        .await
        .unwrap();
    let done = Arc::new(AtomicBool::new(false));
    let killer = {
        let (done, admin_url, name) = (done.clone(), db.superuser_url(), db.name().to_owned());
        tokio::spawn(async move {
            let mut admin =
                <diesel_async::AsyncPgConnection as diesel_async::AsyncConnection>::establish(
                    &admin_url,
                )
                .await
                .unwrap();
            let mut killed = 0i64;
            while !AtomicBool::load(&done, Ordering::SeqCst) {
                tokio::time::sleep(Duration::from_millis(15)).await;
                killed += diesel::select(sql::<BigInt>(&format!(
                    "(SELECT count(pg_terminate_backend(pid)) FROM \
                       (SELECT pid FROM pg_stat_activity \
                         WHERE datname = '{name}' AND usename = 'loyalty_test_service' \
                         ORDER BY random() LIMIT 1) victim)"
                )))
                .get_result::<i64>(&mut admin)
                .await
                .unwrap();
            }
            killed
        })
    };
    let mut tasks = Vec::new();
    for task in 0..TASKS {
        let (store, shop) = (store.clone(), shop.clone());
        tasks.push(tokio::spawn(async move {
            let mut acknowledged = Vec::new();
            for n in 0..PER_TASK {
                let key = format!("t{task}-n{n}");
                if issue_acknowledged(&store, &shop, task, &key).await {
                    acknowledged.push(key);
                }
            }
            acknowledged
        }));
    }
    let mut acknowledged = Vec::new();
    for task in tasks {
        acknowledged.extend(task.await.unwrap());
    }
    done.store(true, Ordering::SeqCst);
    let killed = killer.await.unwrap();
    assert!(killed > 0, "no backend was killed");
    assert_kept(&db, &shop, &acknowledged).await;
}

/// The server itself crashes (`pg_ctl stop -m immediate`) and restarts
/// while tasks issue. Needs a server this test may crash, so it runs only
/// where `LOYALTY_TEST_CRASH` holds a shell command that crashes and
/// restarts the `DATABASE_URL` server: `scripts/pgbouncer-tests.sh` sets it
/// up for CI. Every acknowledged issuance survives; the recovery time is
/// printed.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_server_crash_mid_load_loses_no_acknowledged_issuance() {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};

    let Ok(crash) = std::env::var("LOYALTY_TEST_CRASH") else {
        eprintln!("LOYALTY_TEST_CRASH is not set: no server to crash here");
        return;
    };
    const TASKS: usize = 4;
    let db = TestDb::new().await;
    let shop = Arc::new(
        CampaignFixture::builder()
            .hard_cap(100_000)
            .customers(TASKS)
            .create(db.store())
            .await
            .unwrap(),
    );
    let store = Store::connect(
        db.config()
            .with_pool_size(TASKS as u32)
            .with_checkout_timeout(Duration::from_millis(500)),
    )
    .await
    .unwrap();
    let done = Arc::new(AtomicBool::new(false));
    let mut tasks = Vec::new();
    for task in 0..TASKS {
        let (store, shop, done) = (store.clone(), shop.clone(), done.clone());
        tasks.push(tokio::spawn(async move {
            let mut acknowledged = Vec::new();
            let mut n = 0;
            while !AtomicBool::load(&done, Ordering::SeqCst) {
                n += 1;
                let key = format!("t{task}-n{n}");
                if issue_acknowledged(&store, &shop, task, &key).await {
                    acknowledged.push(key);
                } else {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            }
            acknowledged
        }));
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let crashed_at = Instant::now();
    let status = tokio::task::spawn_blocking(move || {
        std::process::Command::new("sh")
            .arg("-c")
            .arg(&crash)
            .status()
            .expect("running LOYALTY_TEST_CRASH")
    })
    .await
    .unwrap();
    assert!(status.success(), "LOYALTY_TEST_CRASH failed");
    // Recovered once a fresh guard commits again.
    loop {
        let probe = async {
            let tx = store.tenant(shop.tenant).await?;
            tx.commit().await
        };
        if probe.await.is_ok() {
            break;
        }
        assert!(
            crashed_at.elapsed() < Duration::from_secs(60),
            "no recovery"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    eprintln!(
        "crash test: guards commit again {:?} after the crash",
        crashed_at.elapsed()
    );
    tokio::time::sleep(Duration::from_millis(500)).await;
    done.store(true, Ordering::SeqCst);
    let mut acknowledged = Vec::new();
    for task in tasks {
        acknowledged.extend(task.await.unwrap());
    }
    assert_kept(&db, &shop, &acknowledged).await;
    eprintln!(
        "crash test: {} acknowledged issuances all present",
        acknowledged.len()
    );
}
