//! Helpers the tests share. The campaign itself comes from
//! [`loyalty_store::testing::CampaignFixture`].

use bigdecimal::BigDecimal;
use diesel_async::{RunQueryDsl, SimpleAsyncConnection};
use loyalty_store::prelude::*;
use loyalty_store::repo::budgets::Budget;
use loyalty_store::testing::{CampaignFixture, TestDb};

/// The refusal `outcome` failed with; anything else fails the test.
pub fn refusal<T: std::fmt::Debug>(outcome: Result<T>) -> Refusal {
    match outcome {
        Err(Error::Refused(refusal)) => refusal,
        other => panic!("expected a refusal, got {other:?}"),
    }
}

/// What was audited in the last hour, newest first.
pub async fn recent_audit(tx: &mut TenantConn) -> Vec<loyalty_store::repo::audit_logs::AuditLog> {
    let hour = TimeRange::new(
        chrono::Utc::now() - chrono::Duration::hours(1),
        chrono::Utc::now(),
    )
    .unwrap();
    tx.audit_logs()
        .list(hour, KeysetPage::first(10))
        .await
        .unwrap()
}

/// Whether the tests run on a Citus cluster (`LOYALTY_TEST_CITUS`).
pub fn on_citus() -> bool {
    std::env::var("LOYALTY_TEST_CITUS").is_ok_and(|url| !url.is_empty())
}

pub async fn customers(store: &Store, tenant: TenantId, n: usize) -> Vec<CustomerId> {
    let mut tx = store.tenant(tenant).await.unwrap();
    let mut ids = Vec::with_capacity(n);
    for i in 0..n {
        ids.push(
            tx.customers()
                .create(NewCustomer::new(format!("+1555{i:07}")))
                .await
                .unwrap()
                .id,
        );
    }
    tx.commit().await.unwrap();
    ids
}

pub async fn import_codes(store: &Store, p: &CampaignFixture, n: usize) {
    let codes: Vec<String> = (0..n).map(|i| format!("CODE-{i:06}")).collect();
    let mut tx = store.tenant(p.tenant).await.unwrap();
    tx.voucher_codes().import(p.reward, &codes).await.unwrap();
    tx.commit().await.unwrap();
}

pub fn issue_to(p: &CampaignFixture, customer: CustomerId, key: &str) -> NewIssuance {
    NewIssuance {
        rule_id: p.rule,
        customer_id: customer,
        idempotency_key: key.into(),
        expires_at: None,
    }
}

/// Issues in a guard of its own, as a service would.
pub async fn issue(
    store: &Store,
    p: &CampaignFixture,
    customer: CustomerId,
    key: &str,
) -> Result<loyalty_store::repo::issuances::Issued> {
    let mut tx = store.tenant(p.tenant).await?;
    let issued = tx.issuances().issue(issue_to(p, customer, key)).await?;
    tx.commit().await?;
    Ok(issued)
}

pub async fn budget(store: &Store, p: &CampaignFixture) -> Budget {
    let mut tx = store.tenant(p.tenant).await.unwrap();
    tx.budgets().get(p.budget).await.unwrap()
}

/// The ledger agrees with every budget, and no budget is over its cap.
pub async fn assert_books_balance(store: &Store, tenant: TenantId) {
    let mut tx = store.tenant(tenant).await.unwrap();
    let mismatches = tx.budgets().verify_ledger().await.unwrap();
    assert!(mismatches.is_empty(), "ledger disagrees: {mismatches:?}");
    tx.commit().await.unwrap();
}

/// Two tenants, for tests that show one cannot touch the other's rows.
pub async fn two_tenants(store: &Store) -> (TenantId, TenantId) {
    let usd: Currency = "USD".parse().unwrap();
    let a = store
        .platform()
        .create(NewTenant::new("A", usd))
        .await
        .unwrap()
        .id;
    let b = store
        .platform()
        .create(NewTenant::new("B", usd))
        .await
        .unwrap()
        .id;
    (a, b)
}

/// Sends `sql` through a fresh guard of `tenant` and asserts the database
/// refused it for want of a privilege (or by a policy); `login` names the
/// store in the failure message. On Citus some refusals come from elsewhere
/// first (docs/citus.md): the new-row triggers that stand in for column
/// grants, and Citus itself, which will not move a row to another tenant or
/// route a row without one.
pub async fn assert_denied(store: &Store, tenant: TenantId, sql: &str, login: &str) {
    let mut tx = store.tenant(tenant).await.unwrap();
    let outcome = tx.conn().batch_execute(sql).await.map_err(Error::from);
    assert!(is_denial(&outcome), "{login}: {sql}: {outcome:?}");
}

/// Whether `outcome` is the database refusing a write or read it may not make.
pub fn is_denial<T>(outcome: &Result<T>) -> bool {
    const CITUS_REFUSALS: [&str; 2] = [
        "modifying the partition value of rows is not allowed",
        "COPY FROM not supported with row-level security",
    ];
    match outcome {
        Err(Error::PermissionDenied { .. }) => true,
        Err(Error::Refused(Refusal::InvalidArgument { reason, .. })) => {
            reason == "set by the money functions only"
        }
        Err(Error::Database(e)) => CITUS_REFUSALS.iter().any(|m| e.to_string().contains(m)),
        _ => false,
    }
}

/// The field an `InvalidInput` error names, or a panic saying what came instead.
pub fn invalid_field<T: std::fmt::Debug>(outcome: Result<T>) -> &'static str {
    match outcome {
        Err(Error::InvalidInput { field, .. }) => field,
        other => panic!("expected InvalidInput, got {other:?}"),
    }
}

pub fn money(text: &str) -> BigDecimal {
    text.parse().unwrap()
}

/// Waits until `count` backends wait for a lock of `locktype` (`advisory`,
/// or `transactionid` for a row another transaction holds).
pub async fn wait_for_lock_waiters(store: &Store, locktype: &str, count: i64) {
    #[derive(diesel::QueryableByName)]
    struct Waiting {
        #[diesel(sql_type = diesel::sql_types::BigInt)]
        n: i64,
    }
    let mut watcher = store.raw_connection().await.unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        assert!(
            std::time::Instant::now() < deadline,
            "no {count} waiters on {locktype} locks of this node after 30 s"
        );
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

/// Runs `sql` as a superuser on the test's database.
pub async fn as_admin(db: &TestDb, sql: &str) {
    db.admin_connection()
        .await
        .batch_execute(sql)
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"));
}

/// Creates a login role once per server (roles are cluster-wide; tests in
/// parallel may race to create it), then grants it `member_of`.
pub async fn ensure_login(db: &TestDb, name: &str, attributes: &str, member_of: &[&str]) {
    as_admin(
        db,
        &format!(
            "DO $$ BEGIN CREATE ROLE {name} LOGIN {attributes}; \
             EXCEPTION WHEN duplicate_object OR unique_violation THEN NULL; END $$"
        ),
    )
    .await;
    for role in member_of {
        as_admin(db, &format!("GRANT {role} TO {name}")).await;
    }
}

/// The harness's service login, with a pool of one connection.
pub async fn service_login(db: &TestDb) -> Store {
    Store::connect(db.config().with_pool_size(1)).await.unwrap()
}

/// A login that is an ordinary (inheriting) member of `loyalty_app`: as
/// itself it holds the role's grants, but never a tenant in context.
pub async fn inheriting_service_login(db: &TestDb) -> Store {
    let name = "loyalty_test_service_inherit";
    ensure_login(db, name, "INHERIT", &["loyalty_app"]).await;
    Store::connect(login_config(db, name).with_pool_size(1))
        .await
        .unwrap()
}

/// The test database's configuration, logging in as `login`.
pub fn login_config(db: &TestDb, login: &str) -> Config {
    let mut url = url::Url::parse(&db.url()).unwrap();
    url.set_username(login).unwrap();
    Config::from_url(url.as_str())
        .unwrap()
        .with_migrator_url(db.migrator_url())
}

/// A superuser, admitted only through the loudly named opt-out.
pub async fn privileged_login(db: &TestDb) -> Store {
    Store::connect(
        Config::from_url(&db.superuser_url())
            .unwrap()
            .with_pool_size(1)
            .danger_allow_privileged_login(),
    )
    .await
    .unwrap()
}

/// Every login the crate accepts without the opt-out, each with a pool of
/// one connection, so every guard reuses the connection the one before it
/// left.
pub async fn logins(db: &TestDb) -> Vec<(&'static str, Store)> {
    vec![
        ("service", service_login(db).await),
        ("inheriting service", inheriting_service_login(db).await),
    ]
}
