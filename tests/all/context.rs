//! SQL sent through a guard cannot act for another tenant: the tenant in
//! context counts only with the guard's proof. Checked for every login the
//! crate accepts.

use diesel::dsl::sql;
use diesel::sql_types::{BigInt, Text};
use diesel_async::{RunQueryDsl, SimpleAsyncConnection};
use loyalty_store::prelude::*;
use loyalty_store::testing::{CampaignFixture, TestDb};

use crate::support::logins;

async fn count(tx: &mut TenantConn, query: &str) -> i64 {
    diesel::select(sql::<BigInt>(&format!("({query})")))
        .get_result(tx.conn())
        .await
        .unwrap_or_else(|e| panic!("{query}: {e}"))
}

#[tokio::test]
async fn setting_another_tenant_in_context_shows_and_changes_nothing() {
    let db = TestDb::new().await;
    let a = CampaignFixture::builder()
        .customers(2)
        .create(db.store())
        .await
        .unwrap();
    let b = CampaignFixture::builder()
        .customers(3)
        .create(db.store())
        .await
        .unwrap();
    for (login, store) in logins(&db).await {
        // The forged context alone, with a made-up proof, and with A's own
        // proof (which is for A, not B).
        for forgery in [
            format!("SELECT set_config('app.tenant_id', '{}', true)", b.tenant),
            format!(
                "SELECT set_config('app.tenant_id', '{}', true), \
                        set_config('app.tenant_proof', repeat('0', 64), true)",
                b.tenant
            ),
            format!(
                "SELECT set_config('app.tenant_id', '{}', true), \
                        set_config('app.tenant_proof', current_setting('app.tenant_proof'), true)",
                b.tenant
            ),
        ] {
            let mut tx = store.tenant(a.tenant).await.unwrap();
            tx.conn().batch_execute(&forgery).await.unwrap();
            assert_eq!(
                count(&mut tx, "SELECT count(*) FROM customers").await,
                0,
                "{login}: {forgery}"
            );
            assert_eq!(
                count(
                    &mut tx,
                    &format!(
                        "SELECT count(*) FROM customers WHERE tenant_id = '{}'",
                        b.tenant
                    )
                )
                .await,
                0,
                "{login}: {forgery}"
            );
            let updated = diesel::sql_query("UPDATE customers SET status = 'blocked'")
                .execute(tx.conn())
                .await
                .unwrap();
            assert_eq!(updated, 0, "{login}: {forgery}");
            let inserted = diesel::sql_query(format!(
                "INSERT INTO customers (tenant_id, phone_e164) VALUES ('{}', '+15557770000')",
                b.tenant
            ))
            .execute(tx.conn())
            .await
            .map_err(Error::from);
            assert!(
                matches!(inserted, Err(Error::PermissionDenied { .. })),
                "{login}: {forgery}: {inserted:?}"
            );
        }
    }
    let mut tx = db.store().tenant(b.tenant).await.unwrap();
    assert_eq!(
        count(
            &mut tx,
            "SELECT count(*) FROM customers WHERE status = 'active'"
        )
        .await,
        3
    );
}

#[tokio::test]
async fn the_guard_key_is_out_of_reach_inside_a_guard() {
    let db = TestDb::new().await;
    let a = CampaignFixture::builder().create(db.store()).await.unwrap();
    for (login, store) in logins(&db).await {
        let mut tx = store.tenant(a.tenant).await.unwrap();
        let key = diesel::select(sql::<Text>(
            "(SELECT encode(key, 'hex') FROM loyalty_secret.guard_key)",
        ))
        .get_result::<String>(tx.conn())
        .await
        .map_err(Error::from);
        assert!(
            matches!(key, Err(Error::PermissionDenied { .. })),
            "{login}: {key:?}"
        );
    }
}

/// A login that owns nothing gains nothing by leaving the guard's role: as
/// itself it has no privilege on the crate's tables, and it cannot become
/// anyone else.
#[tokio::test]
async fn a_service_login_that_leaves_the_guards_role_reaches_nothing() {
    let db = TestDb::new().await;
    let a = CampaignFixture::builder()
        .customers(1)
        .create(db.store())
        .await
        .unwrap();
    let store = crate::support::service_login(&db).await;
    for escape in [
        "RESET ROLE; SELECT count(*) FROM customers",
        "RESET ROLE; UPDATE budgets SET hard_cap = hard_cap + 1000000",
        "RESET ROLE; ALTER TABLE customers NO FORCE ROW LEVEL SECURITY",
        "SET ROLE postgres",
        "SET SESSION AUTHORIZATION postgres",
        "RESET ROLE; SELECT key FROM loyalty_secret.guard_key",
    ] {
        let mut tx = store.tenant(a.tenant).await.unwrap();
        let outcome = tx.conn().batch_execute(escape).await.map_err(Error::from);
        assert!(
            matches!(outcome, Err(Error::PermissionDenied { .. })),
            "{escape}: {outcome:?}"
        );
    }
}
