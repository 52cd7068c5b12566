//! The tenant guard: context, commit, rollback, pool hygiene and tenant checks.

use diesel::prelude::*;
use diesel::sql_types::{Bool, Nullable, Text};
use diesel_async::{AsyncConnection, RunQueryDsl};
use loyalty_store::prelude::*;
use loyalty_store::schema::customers;
use loyalty_store::testing::TestDb;

async fn tenant(store: &Store, name: &str) -> TenantId {
    store
        .platform()
        .create(NewTenant::new(name, "USD".parse().unwrap()))
        .await
        .unwrap()
        .id
}

async fn add_customer(tx: &mut TenantConn, phone: &str) -> Result<usize> {
    let tenant = tx.tenant_id();
    Ok(diesel::insert_into(customers::table)
        .values((
            customers::tenant_id.eq(tenant),
            customers::phone_e164.eq(phone),
        ))
        .execute(tx.conn())
        .await?)
}

async fn customer_count(store: &Store, tenant: TenantId) -> i64 {
    let mut tx = store.tenant(tenant).await.unwrap();
    let count = customers::table
        .count()
        .get_result(tx.conn())
        .await
        .unwrap();
    tx.commit().await.unwrap();
    count
}

#[derive(QueryableByName, Debug)]
struct SessionState {
    #[diesel(sql_type = Text)]
    current_user: String,
    #[diesel(sql_type = Text)]
    session_user: String,
    #[diesel(sql_type = Nullable<Text>)]
    tenant: Option<String>,
}

const SESSION_STATE: &str = "SELECT current_user::text AS current_user, \
     session_user::text AS session_user, \
     NULLIF(current_setting('app.tenant_id', true), '') AS tenant";

#[tokio::test]
async fn guard_runs_as_loyalty_app_with_the_tenant_in_context() {
    let db = TestDb::new().await;
    let store = db.store();
    let acme = tenant(store, "Acme").await;
    let mut tx = store.tenant(acme).await.unwrap();
    let state: SessionState = diesel::sql_query(SESSION_STATE)
        .get_result(tx.conn())
        .await
        .unwrap();
    assert_eq!(state.current_user, "loyalty_app");
    assert_eq!(state.tenant, Some(acme.to_string()));
    tx.commit().await.unwrap();
}

#[tokio::test]
async fn commit_keeps_writes() {
    let db = TestDb::new().await;
    let store = db.store();
    let acme = tenant(store, "Acme").await;
    let mut tx = store.tenant(acme).await.unwrap();
    add_customer(&mut tx, "+15550000001").await.unwrap();
    tx.commit().await.unwrap();
    assert_eq!(customer_count(store, acme).await, 1);
}

#[tokio::test]
async fn dropped_guard_writes_nothing_and_returns_a_clean_connection() {
    let db = TestDb::new().await;
    // One connection, so the next checkout is the very connection the
    // dropped guard used.
    let store = Store::connect(db.config().with_pool_size(1)).await.unwrap();
    let acme = tenant(&store, "Acme").await;
    {
        let mut tx = store.tenant(acme).await.unwrap();
        add_customer(&mut tx, "+15550000001").await.unwrap();
        add_customer(&mut tx, "+15550000002").await.unwrap();
    }
    let mut conn = store.raw_connection().await.unwrap();
    let state: SessionState = diesel::sql_query(SESSION_STATE)
        .get_result(&mut *conn)
        .await
        .unwrap();
    assert_eq!(state.tenant, None);
    assert_eq!(state.current_user, state.session_user);
    drop(conn);
    assert_eq!(customer_count(&store, acme).await, 0);
    assert_eq!(
        store.pool_status().connections,
        1,
        "connection was kept, not discarded"
    );
}

#[tokio::test]
async fn explicit_rollback_writes_nothing() {
    let db = TestDb::new().await;
    let store = db.store();
    let acme = tenant(store, "Acme").await;
    let mut tx = store.tenant(acme).await.unwrap();
    add_customer(&mut tx, "+15550000001").await.unwrap();
    tx.rollback().await;
    assert_eq!(customer_count(store, acme).await, 0);
}

#[tokio::test]
async fn committed_guard_returns_a_connection_without_context() {
    let db = TestDb::new().await;
    let store = Store::connect(db.config().with_pool_size(1)).await.unwrap();
    let acme = tenant(&store, "Acme").await;
    let tx = store.tenant(acme).await.unwrap();
    tx.commit().await.unwrap();
    let mut conn = store.raw_connection().await.unwrap();
    let state: SessionState = diesel::sql_query(SESSION_STATE)
        .get_result(&mut *conn)
        .await
        .unwrap();
    assert_eq!(state.tenant, None);
    assert_eq!(state.current_user, state.session_user);
}

#[tokio::test]
async fn a_superuser_admitted_by_the_opt_out_still_isolates_its_guards() {
    let db = TestDb::new().await;
    let store = &crate::support::privileged_login(&db).await;
    let acme = tenant(store, "Acme").await;
    let globex = tenant(store, "Globex").await;
    for (who, phone) in [(acme, "+15550000001"), (globex, "+15550000002")] {
        let mut tx = store.tenant(who).await.unwrap();
        add_customer(&mut tx, phone).await.unwrap();
        tx.commit().await.unwrap();
    }
    let mut conn = store.raw_connection().await.unwrap();
    let superuser: bool = diesel::select(diesel::dsl::sql::<Bool>(
        "(SELECT rolsuper FROM pg_roles WHERE rolname = session_user)",
    ))
    .get_result(&mut *conn)
    .await
    .unwrap();
    assert!(
        superuser,
        "this test needs a superuser login to mean anything"
    );
    let everything: i64 = customers::table
        .filter(customers::tenant_id.eq_any([acme, globex]))
        .count()
        .get_result(&mut *conn)
        .await
        .unwrap();
    assert_eq!(everything, 2, "the superuser itself bypasses RLS");
    drop(conn);

    let mut tx = store.tenant(acme).await.unwrap();
    let phones: Vec<Option<String>> = customers::table
        .select(customers::phone_e164)
        .load(tx.conn())
        .await
        .unwrap();
    assert_eq!(phones, [Some("+15550000001".to_owned())]);
}

#[tokio::test]
async fn unknown_tenant_is_a_typed_error_and_the_connection_survives() {
    let db = TestDb::new().await;
    let store = Store::connect(db.config().with_pool_size(1)).await.unwrap();
    let ghost = TenantId::new();
    assert!(matches!(
        store.tenant(ghost).await,
        Err(Error::Refused(Refusal::UnknownTenant))
    ));
    let acme = tenant(&store, "Acme").await;
    assert_eq!(customer_count(&store, acme).await, 0);
    assert_eq!(store.pool_status().connections, 1);
}

#[tokio::test]
async fn suspended_tenant_is_refused_until_reactivated() {
    let db = TestDb::new().await;
    let store = db.store();
    let acme = tenant(store, "Acme").await;
    store
        .platform()
        .set_status(acme, TenantStatus::Suspended)
        .await
        .unwrap();
    assert!(matches!(
        store.tenant(acme).await,
        Err(Error::Refused(Refusal::TenantSuspended))
    ));
    store
        .platform()
        .set_status(acme, TenantStatus::Active)
        .await
        .unwrap();
    store.tenant(acme).await.unwrap().commit().await.unwrap();
}

#[tokio::test]
async fn commit_after_a_failed_statement_reports_the_loss() {
    let db = TestDb::new().await;
    let store = db.store();
    let acme = tenant(store, "Acme").await;
    let mut tx = store.tenant(acme).await.unwrap();
    add_customer(&mut tx, "+15550000001").await.unwrap();
    let duplicate = add_customer(&mut tx, "+15550000001").await;
    assert!(
        matches!(duplicate, Err(Error::Conflict { ref constraint }) if constraint == "customers_tenant_phone_key")
    );
    assert!(matches!(tx.commit().await, Err(Error::TransactionAborted)));
    assert_eq!(customer_count(store, acme).await, 0);
}

#[tokio::test]
async fn a_failure_undone_by_a_savepoint_does_not_block_commit() {
    let db = TestDb::new().await;
    let store = db.store();
    let acme = tenant(store, "Acme").await;
    let mut tx = store.tenant(acme).await.unwrap();
    add_customer(&mut tx, "+15550000001").await.unwrap();
    let nested: Result<usize> = tx
        .conn()
        .transaction(async |conn| {
            Ok(diesel::insert_into(customers::table)
                .values((
                    customers::tenant_id.eq(acme),
                    customers::phone_e164.eq("+15550000001"),
                ))
                .execute(conn)
                .await?)
        })
        .await;
    assert!(matches!(nested, Err(Error::Conflict { .. })));
    add_customer(&mut tx, "+15550000002").await.unwrap();
    tx.commit().await.unwrap();
    assert_eq!(customer_count(store, acme).await, 2);
}

#[tokio::test]
async fn statement_timeout_applies_to_pooled_connections() {
    let db = TestDb::new().await;
    let store = Store::connect(
        db.config()
            .with_statement_timeout(Some(std::time::Duration::from_millis(50))),
    )
    .await
    .unwrap();
    let acme = tenant(&store, "Acme").await;
    let mut tx = store.tenant(acme).await.unwrap();
    let slow = diesel::sql_query("SELECT pg_sleep(1)")
        .execute(tx.conn())
        .await;
    assert!(
        slow.is_err(),
        "pg_sleep(1) should hit a 50 ms statement timeout"
    );
}

#[tokio::test]
async fn checkout_timeout_is_a_typed_error() {
    let db = TestDb::new().await;
    let store = Store::connect(
        db.config()
            .with_pool_size(1)
            .with_checkout_timeout(std::time::Duration::from_millis(100)),
    )
    .await
    .unwrap();
    let acme = tenant(&store, "Acme").await;
    let _held = store.tenant(acme).await.unwrap();
    assert!(matches!(store.tenant(acme).await, Err(Error::PoolTimeout)));
}

#[tokio::test(flavor = "current_thread")]
async fn works_on_the_current_thread_runtime() {
    let db = TestDb::new().await;
    let store = db.store();
    let acme = tenant(store, "Acme").await;
    let mut tx = store.tenant(acme).await.unwrap();
    add_customer(&mut tx, "+15550000001").await.unwrap();
    tx.commit().await.unwrap();
    assert_eq!(customer_count(store, acme).await, 1);
}

/// Behind PgBouncer in transaction mode the statement cache is off: the
/// guard's opening, its own queries and the money path work the same.
#[tokio::test]
async fn guards_work_without_the_prepared_statement_cache() {
    let db = TestDb::new().await;
    let shop = loyalty_store::testing::CampaignFixture::builder()
        .customers(1)
        .create(db.store())
        .await
        .unwrap();
    let config = db
        .config()
        .with_pool_size(1)
        .with_prepared_statements(false);
    let store = Store::connect(config).await.unwrap();
    for round in 0..3 {
        let mut tx = store.tenant(shop.tenant).await.unwrap();
        tx.issuances()
            .issue(NewIssuance {
                rule_id: shop.rule,
                customer_id: shop.customers[0],
                idempotency_key: format!("uncached-{round}"),
                expires_at: None,
            })
            .await
            .unwrap();
        add_customer(&mut tx, &format!("+1555888000{round}"))
            .await
            .unwrap();
        tx.commit().await.unwrap();
    }
    assert_eq!(customer_count(&store, shop.tenant).await, 4);
}
