//! Nothing one guard's SQL does to its session reaches the next guard on the
//! same pooled connection, and no temporary table takes the place of one of
//! the crate's tables. Checked for every login the crate accepts, and for a
//! superuser admitted through the opt-out where it can do more.

use diesel::dsl::sql;
use diesel::sql_types::{BigInt, Text};
use diesel_async::{RunQueryDsl, SimpleAsyncConnection};
use loyalty_store::prelude::*;
use loyalty_store::testing::{CampaignFixture, TestDb};

use crate::support::{assert_books_balance, budget, issue, logins, money, privileged_login};

async fn text(tx: &mut TenantConn, expression: &str) -> String {
    diesel::select(sql::<Text>(expression))
        .get_result(tx.conn())
        .await
        .unwrap_or_else(|e| panic!("{expression}: {e}"))
}

#[tokio::test]
async fn session_settings_made_in_one_guard_do_not_reach_the_next() {
    let db = TestDb::new().await;
    let shop = CampaignFixture::builder()
        .customers(1)
        .create(db.store())
        .await
        .unwrap();
    for (login, store) in logins(&db).await {
        let mut tx = store.tenant(shop.tenant).await.unwrap();
        tx.conn()
            .batch_execute(
                "SET SESSION default_transaction_read_only = on; \
                 SET SESSION statement_timeout = '1h'; \
                 SELECT set_config('search_path', 'pg_temp, public', false); \
                 SELECT pg_advisory_lock(42)",
            )
            .await
            .unwrap();
        tx.commit().await.unwrap();

        let mut tx = store.tenant(shop.tenant).await.unwrap();
        assert_eq!(
            text(&mut tx, "current_setting('default_transaction_read_only')").await,
            "off",
            "{login}"
        );
        assert_eq!(
            text(&mut tx, "current_setting('statement_timeout')").await,
            "30s",
            "{login}: the configured timeout, not the guard's"
        );
        assert_eq!(
            text(&mut tx, "current_setting('search_path')").await,
            "public, pg_temp",
            "{login}"
        );
        let locks: i64 = diesel::select(sql::<BigInt>(
            "(SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' \
               AND pid = pg_backend_pid())",
        ))
        .get_result(tx.conn())
        .await
        .unwrap();
        assert_eq!(locks, 0, "{login}: the session lock went with the guard");
        tx.customers()
            .create(NewCustomer::new("+15559990000"))
            .await
            .unwrap_or_else(|e| panic!("{login}: the next guard can write: {e}"));
        tx.rollback().await;
    }
}

#[tokio::test]
async fn a_service_login_cannot_create_temporary_tables() {
    let db = TestDb::new().await;
    let shop = CampaignFixture::builder().create(db.store()).await.unwrap();
    for (login, store) in logins(&db).await {
        for create in [
            "CREATE TEMP TABLE customers (LIKE public.customers)",
            "RESET ROLE; CREATE TEMP TABLE customers (LIKE public.customers)",
            "CREATE TABLE pg_temp.issuances (LIKE public.issuances)",
        ] {
            crate::support::assert_denied(&store, shop.tenant, create, login).await;
        }
    }
}

/// A superuser login (admitted only through the opt-out) can still create
/// temporary tables, by leaving the guard's role; they never stand in for
/// the crate's, in the guard that made them or in the next one.
#[tokio::test]
async fn a_temporary_table_never_takes_the_place_of_a_crate_table() {
    let db = TestDb::new().await;
    let shop = CampaignFixture::builder()
        .hard_cap(5)
        .customers(3)
        .create(db.store())
        .await
        .unwrap();
    let store = privileged_login(&db).await;
    // Inside a guard even a superuser acts as loyalty_app, which may not
    // create temporary tables: it has to step out of the role first.
    let shadows = "RESET ROLE; \
                   CREATE TEMP TABLE customers (LIKE public.customers INCLUDING ALL); \
                   CREATE TEMP TABLE budgets (LIKE public.budgets INCLUDING ALL); \
                   CREATE TEMP TABLE issuances (LIKE public.issuances INCLUDING ALL); \
                   CREATE TEMP TABLE ledger_entries (LIKE public.ledger_entries INCLUDING ALL); \
                   SELECT set_config('role', 'loyalty_app', true)";

    // In the guard that made them: the money path still writes the real tables.
    let mut tx = store.tenant(shop.tenant).await.unwrap();
    tx.conn().batch_execute(shadows).await.unwrap();
    tx.conn()
        .batch_execute("SELECT set_config('search_path', 'pg_temp, public', true)")
        .await
        .unwrap();
    tx.issuances()
        .issue(NewIssuance {
            rule_id: shop.rule,
            customer_id: shop.customers[0],
            idempotency_key: "in-the-shadow".into(),
            expires_at: None,
        })
        .await
        .unwrap();
    tx.commit().await.unwrap();
    assert_eq!(budget(db.store(), &shop).await.reserved, money("2.50"));

    // In the next guard on the connection: the temporary tables are gone.
    let mut tx = store.tenant(shop.tenant).await.unwrap();
    let created = tx
        .customers()
        .create(NewCustomer::new("+15559990001"))
        .await
        .unwrap();
    tx.commit().await.unwrap();
    let mut tx = db.store().tenant(shop.tenant).await.unwrap();
    assert_eq!(tx.customers().get(created.id).await.unwrap(), created);
    drop(tx);
    issue(db.store(), &shop, shop.customers[1], "after")
        .await
        .unwrap();
    assert_eq!(budget(db.store(), &shop).await.reserved, money("5"));
    assert_books_balance(db.store(), shop.tenant).await;
}

/// SQL in one guard can replace a statement the client has prepared and
/// cached (`DEALLOCATE` it, `PREPARE` its own under the same name). The next
/// guard on the connection must not run it: here it would hand over the
/// next tenant's proof in a session setting.
#[tokio::test]
async fn a_replaced_prepared_statement_never_runs_in_the_next_guard() {
    let db = TestDb::new().await;
    let a = CampaignFixture::builder()
        .customers(1)
        .create(db.store())
        .await
        .unwrap();
    let b = CampaignFixture::builder()
        .customers(1)
        .create(db.store())
        .await
        .unwrap();
    for (login, store) in logins(&db).await {
        // The connection has served a guard, so its opening is cached. A
        // guard whose own SQL prepared statements of its own, and left the
        // rest alone, keeps its connection.
        let mut tx = store.tenant(b.tenant).await.unwrap();
        let pid = text(&mut tx, "pg_backend_pid()::text").await;
        tx.commit().await.unwrap();
        let mut tx = store.tenant(b.tenant).await.unwrap();
        assert_eq!(
            text(&mut tx, "pg_backend_pid()::text").await,
            pid,
            "{login}"
        );
        tx.commit().await.unwrap();

        // Statements deallocated behind the client's back: the next guard
        // still works, on a fresh connection.
        let mut tx = store.tenant(a.tenant).await.unwrap();
        tx.conn().batch_execute("DEALLOCATE ALL").await.unwrap();
        // The guard that tampered cannot commit.
        let tampered = tx.commit().await;
        assert!(
            matches!(tampered, Err(Error::TransactionAborted)),
            "{login}: {tampered:?}"
        );
        let mut tx = store.tenant(b.tenant).await.unwrap();
        tx.customers().get(b.customers[0]).await.unwrap();
        assert_ne!(
            text(&mut tx, "pg_backend_pid()::text").await,
            pid,
            "{login}"
        );
        tx.commit().await.unwrap();

        let mut tx = store.tenant(a.tenant).await.unwrap();
        tx.conn()
            .batch_execute(
                "PREPARE planted AS SELECT 1; \
                 DO $$ DECLARE s text; BEGIN \
                   FOR s IN SELECT name FROM pg_prepared_statements \
                            WHERE statement LIKE '%enter_tenant%' LOOP \
                     EXECUTE format('DEALLOCATE %I', s); \
                     EXECUTE format($q$PREPARE %I(text, text) AS SELECT loyalty.enter_tenant($1, $2) \
                       AND set_config('stolen.proof', $1 || ' ' || $2, false) IS NOT NULL$q$, s); \
                   END LOOP; \
                 END $$",
            )
            .await
            .unwrap();
        assert!(tx.commit().await.is_err(), "{login}");

        let mut tx = store.tenant(b.tenant).await.unwrap();
        tx.customers().get(b.customers[0]).await.unwrap();
        tx.commit().await.unwrap();

        let mut tx = store.tenant(a.tenant).await.unwrap();
        assert_eq!(
            text(
                &mut tx,
                "coalesce(current_setting('stolen.proof', true), '')"
            )
            .await,
            "",
            "{login}: the next guard ran the replaced statement"
        );
        assert_eq!(
            text(
                &mut tx,
                "(SELECT count(*)::text FROM pg_prepared_statements WHERE name = 'planted')"
            )
            .await,
            "0",
            "{login}"
        );
        tx.rollback().await;
    }
}

/// A login may change its own defaults (`ALTER ROLE ... SET`), and SQL in a
/// guard may do it for the service login. What the crate depends on is
/// pinned per transaction, so such defaults change nothing.
#[tokio::test]
async fn a_logins_own_defaults_do_not_change_a_guard() {
    let db = TestDb::new().await;
    let shop = CampaignFixture::builder()
        .customers(1)
        .create(db.store())
        .await
        .unwrap();
    let name = "loyalty_test_odd_defaults";
    crate::support::ensure_login(&db, name, "NOINHERIT", &["loyalty_app"]).await;
    crate::support::as_admin(
        &db,
        &format!(
            "ALTER ROLE {name} SET default_transaction_read_only = on; \
             ALTER ROLE {name} SET default_transaction_isolation = 'serializable'; \
             ALTER ROLE {name} SET row_security = off; \
             ALTER ROLE {name} SET search_path = pg_temp, public; \
             ALTER ROLE {name} SET lock_timeout = '1ms'"
        ),
    )
    .await;
    let store = Store::connect(crate::support::login_config(&db, name))
        .await
        .unwrap();
    let mut tx = store.tenant(shop.tenant).await.unwrap();
    assert_eq!(
        text(&mut tx, "current_setting('transaction_isolation')").await,
        "read committed"
    );
    assert_eq!(text(&mut tx, "current_setting('lock_timeout')").await, "5s");
    tx.customers()
        .create(NewCustomer::new("+15559990042"))
        .await
        .unwrap();
    tx.commit().await.unwrap();
    store
        .platform()
        .create(NewTenant::new("Odd", "USD".parse().unwrap()))
        .await
        .unwrap();
}
