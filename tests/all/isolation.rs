//! Row-level security on every tenant-owned table, checked as `loyalty_app`.

use diesel::dsl::sql;
use diesel::sql_types::{BigInt, Text};
use diesel_async::{AsyncConnection, RunQueryDsl, SimpleAsyncConnection};
use loyalty_store::prelude::*;
use loyalty_store::testing::TestDb;

const FIXTURE: &str = include_str!("sql/fixture.sql");
const FIXTURE_MONEY: &str = include_str!("sql/fixture_money.sql");

/// Every tenant-owned table, with whether `loyalty_app` may UPDATE and DELETE it.
const TABLES: &[(&str, bool, bool)] = &[
    ("staff_users", true, true),
    ("customers", true, true),
    ("consents", false, false),
    ("reward_catalog", true, false),
    // Only a budget's name may change: `SET tenant_id` is refused.
    ("budgets", false, false),
    ("ledger_entries", false, false),
    ("campaigns", true, true),
    ("rules", false, true),
    ("issuances", false, false),
    ("voucher_codes", false, false),
    ("events", false, false),
    ("wa_sessions", true, true),
    ("audit_logs", false, false),
    // Workers may move only the delivery columns.
    ("outbox_messages", false, false),
];

async fn tenant_with_fixture(db: &TestDb, name: &str) -> TenantId {
    let store = db.store();
    let id = store
        .platform()
        .create(NewTenant::new(name, "USD".parse().unwrap()))
        .await
        .unwrap()
        .id;
    let mut tx = store.tenant(id).await.unwrap();
    tx.conn().batch_execute(FIXTURE).await.unwrap();
    tx.commit().await.unwrap();
    // The commit-time settlement runs as the migrator, which row-level
    // security binds: it needs the tenant in context, as in a guard.
    let proof = store.tenant_proof(id).await.unwrap();
    let mut owner = db.admin_connection().await;
    owner
        .batch_execute(&format!(
            "BEGIN; SELECT set_config('fixture.tenant', '{id}', true); \
             SELECT loyalty.enter_tenant('{id}', '{proof}'); {FIXTURE_MONEY}; COMMIT"
        ))
        .await
        .unwrap();
    id
}

async fn count(tx: &mut TenantConn, query: &str) -> i64 {
    diesel::select(sql::<BigInt>(&format!("({query})")))
        .get_result(tx.conn())
        .await
        .unwrap_or_else(|e| panic!("{query}: {e}"))
}

/// Each probe runs in a guard of its own: a refused statement aborts it.
async fn probe(store: &Store, tenant: TenantId, statement: &str) -> Result<usize> {
    let mut tx = store.tenant(tenant).await?;
    let affected = diesel::sql_query(statement).execute(tx.conn()).await?;
    tx.commit().await?;
    Ok(affected)
}

async fn rows_as_json(store: &Store, tenant: TenantId, table: &str) -> Vec<String> {
    let mut tx = store.tenant(tenant).await.unwrap();
    let rows = diesel::select(sql::<Text>(&format!(
        "(SELECT to_jsonb(x)::text FROM {table} x)"
    )))
    .load(tx.conn())
    .await
    .unwrap();
    tx.commit().await.unwrap();
    rows
}

fn assert_refused(result: Result<usize>, what: &str) {
    assert!(
        crate::support::is_denial(&result),
        "{what}: expected a permission error, got {result:?}"
    );
}

#[tokio::test]
async fn no_tenant_can_read_or_write_another_tenants_rows() {
    let db = TestDb::new().await;
    let store = db.store();
    let a = tenant_with_fixture(&db, "Tenant A").await;
    let b = tenant_with_fixture(&db, "Tenant B").await;

    for &(table, can_update, can_delete) in TABLES {
        let b_rows_before = rows_as_json(store, b, table).await;
        assert_eq!(b_rows_before.len(), 1, "{table}: B's fixture row");

        let mut tx = store.tenant(a).await.unwrap();
        assert_eq!(
            count(&mut tx, &format!("SELECT count(*) FROM {table}")).await,
            1,
            "{table}"
        );
        assert_eq!(
            count(
                &mut tx,
                &format!("SELECT count(*) FROM {table} WHERE tenant_id = '{b}'")
            )
            .await,
            0,
            "{table}: A sees B's rows"
        );
        tx.commit().await.unwrap();

        let update_b = probe(
            store,
            a,
            &format!("UPDATE {table} SET tenant_id = tenant_id WHERE tenant_id = '{b}'"),
        )
        .await;
        let delete_b = probe(
            store,
            a,
            &format!("DELETE FROM {table} WHERE tenant_id = '{b}'"),
        )
        .await;
        if can_update {
            assert_eq!(update_b.unwrap(), 0, "{table}: A updated B's rows");
            let move_to_b = probe(store, a, &format!("UPDATE {table} SET tenant_id = '{b}'")).await;
            assert_refused(move_to_b, &format!("{table}: A moved its row to B"));
        } else {
            assert_refused(update_b, &format!("{table}: UPDATE is not granted"));
        }
        if can_delete {
            assert_eq!(delete_b.unwrap(), 0, "{table}: A deleted B's rows");
        } else {
            assert_refused(delete_b, &format!("{table}: DELETE is not granted"));
        }

        // A valid copy of A's own row, differing only in id and tenant.
        let insert_as_b = probe(
            store,
            a,
            &format!(
                "INSERT INTO {table} SELECT (jsonb_populate_record(NULL::{table}, to_jsonb(x) \
                 || jsonb_build_object('tenant_id', '{b}'::uuid, 'id', gen_random_uuid()))).* \
                 FROM {table} x"
            ),
        )
        .await;
        assert_refused(
            insert_as_b,
            &format!("{table}: A inserted a row carrying B's id"),
        );

        assert_eq!(
            rows_as_json(store, b, table).await,
            b_rows_before,
            "{table}: B's row changed"
        );
    }
}

#[tokio::test]
async fn without_a_tenant_context_nothing_is_visible_and_inserts_are_refused() {
    let db = TestDb::new().await;
    let store = db.store();
    let a = tenant_with_fixture(&db, "Tenant A").await;

    for &(table, ..) in TABLES {
        let template_row = rows_as_json(store, a, table).await.remove(0);
        let mut conn = store.raw_connection().await.unwrap();
        let outcome: Result<()> = conn
            .transaction(async |conn| {
                diesel::sql_query("SET LOCAL ROLE loyalty_app")
                    .execute(conn)
                    .await?;
                let visible: i64 =
                    diesel::select(sql::<BigInt>(&format!("(SELECT count(*) FROM {table})")))
                        .get_result(conn)
                        .await?;
                assert_eq!(visible, 0, "{table}: rows visible without a tenant");
                diesel::sql_query(format!(
                    "INSERT INTO {table} SELECT (jsonb_populate_record(NULL::{table}, \
                     $1::jsonb || jsonb_build_object('id', gen_random_uuid()))).*"
                ))
                .bind::<Text, _>(&template_row)
                .execute(conn)
                .await?;
                Ok(())
            })
            .await;
        assert!(
            crate::support::is_denial(&outcome),
            "{table}: insert without a tenant gave {outcome:?}"
        );
    }
}

#[tokio::test]
async fn loyalty_app_sees_only_its_own_tenant_row() {
    let db = TestDb::new().await;
    let store = db.store();
    let a = tenant_with_fixture(&db, "Tenant A").await;
    tenant_with_fixture(&db, "Tenant B").await;
    let mut tx = store.tenant(a).await.unwrap();
    let ids: Vec<String> = diesel::select(sql::<Text>("(SELECT id::text FROM tenants)"))
        .load(tx.conn())
        .await
        .unwrap();
    assert_eq!(ids, [a.to_string()]);
    tx.commit().await.unwrap();
    assert_refused(
        probe(
            store,
            a,
            &format!("UPDATE tenants SET name = 'x' WHERE id = '{a}'"),
        )
        .await,
        "loyalty_app may not update tenants",
    );
}

/// The seed's `999_test_rls.sql`, with tenants provisioned by the platform
/// scope, the check itself run as `loyalty_app`, and each tenant context
/// entered with its proof, as the guard's is.
const SEED_RLS_TEST: &str = r#"
DO $$
DECLARE
  tenant1_id uuid := current_setting('test.tenant1')::uuid;
  tenant2_id uuid := current_setting('test.tenant2')::uuid;
BEGIN
  PERFORM loyalty.enter_tenant(tenant1_id::text, current_setting('test.proof1'));
  INSERT INTO customers (tenant_id, phone_e164) VALUES (tenant1_id, '+26377111111');
  IF (SELECT COUNT(*) FROM customers) != 1 THEN
    RAISE EXCEPTION 'RLS test failed: saw customers from other tenants';
  END IF;
  PERFORM loyalty.enter_tenant(tenant2_id::text, current_setting('test.proof2'));
  IF (SELECT COUNT(*) FROM customers) != 0 THEN
    RAISE EXCEPTION 'RLS test failed: tenant2 saw tenant1 customers';
  END IF;
END $$;
"#;

async fn run_seed_rls_test(store: &Store, role: &str) -> Result<()> {
    let platform = store.platform();
    let t1 = platform
        .create(NewTenant::new("Tenant 1", "USD".parse()?))
        .await?
        .id;
    let t2 = platform
        .create(NewTenant::new("Tenant 2", "USD".parse()?))
        .await?
        .id;
    let (proof1, proof2) = (store.tenant_proof(t1).await?, store.tenant_proof(t2).await?);
    let mut conn = store.raw_connection().await?;
    let setup = format!(
        "SELECT set_config('test.tenant1', '{t1}', true), set_config('test.tenant2', '{t2}', true), \
                set_config('test.proof1', '{proof1}', true), set_config('test.proof2', '{proof2}', true); \
         SET LOCAL ROLE {role};"
    );
    conn.transaction(async |conn| {
        conn.batch_execute(&setup).await?;
        conn.batch_execute(SEED_RLS_TEST).await?;
        Ok(())
    })
    .await
}

#[tokio::test]
async fn seed_rls_test_passes_as_loyalty_app() {
    let db = TestDb::new().await;
    run_seed_rls_test(db.store(), "loyalty_app").await.unwrap();
}

#[tokio::test]
async fn seed_rls_test_proves_nothing_as_a_superuser() {
    // The seed ran its test as a superuser, which bypasses RLS: the check
    // fails there even though the policies are right.
    let db = TestDb::new().await;
    let outcome = run_seed_rls_test(&crate::support::privileged_login(&db).await, "postgres").await;
    let Err(Error::Database(err)) = outcome else {
        panic!("expected the seed's own exception, got {outcome:?}");
    };
    // Which check trips first depends on what else the database holds (on
    // Citus every test shares one).
    assert!(err.to_string().starts_with("RLS test failed"), "{err}");
}
