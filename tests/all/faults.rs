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
