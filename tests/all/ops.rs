//! Health, diagnostics, and the backup and restore scripts.

use std::path::Path;
use std::process::Command;

use diesel::prelude::*;
use diesel_async::{RunQueryDsl, SimpleAsyncConnection};
use loyalty_store::prelude::*;
use loyalty_store::repo::customers::Customer;
use loyalty_store::schema::customers;
use loyalty_store::testing::{TestDb, pg_tool};

const TABLES: [&str; 14] = [
    "tenants",
    "staff_users",
    "customers",
    "consents",
    "reward_catalog",
    "campaigns",
    "rules",
    "budgets",
    "ledger_entries",
    "issuances",
    "voucher_codes",
    "events",
    "wa_sessions",
    "audit_logs",
];

#[tokio::test]
async fn health_reports_a_reachable_database() {
    let db = TestDb::new().await;
    let health = db.store().health().await;
    assert!(health.database_reachable, "{health:?}");
    assert_eq!(health.error, None);
    assert!(health.round_trip.is_some());
    let version = health.server_version.expect("a server version");
    assert!(
        version.starts_with(|c: char| c.is_ascii_digit()),
        "{version}"
    );
    assert!(health.pool.connections >= 1, "{:?}", health.pool);
    assert!(health.pool.idle <= health.pool.connections);
    assert_eq!(health.pool.max_size, db.store().config().pool_size);
}

#[tokio::test]
async fn health_reports_an_unreachable_database_without_failing() {
    let db = TestDb::new().await;
    let store = Store::connect(
        db.config()
            .with_checkout_timeout(std::time::Duration::from_millis(500)),
    )
    .await
    .unwrap();
    // The database goes away under the store, its connections with it.
    drop(db);
    let health = store.health().await;
    assert!(!health.database_reachable);
    assert!(health.error.as_deref().is_some_and(|e| !e.is_empty()));
    assert_eq!(health.round_trip, None);
    assert_eq!(health.server_version, None);
    serde_json::to_value(&health).expect("health serializes for a probe endpoint");
}

#[tokio::test]
async fn diagnostics_cover_every_table_and_index() {
    let db = TestDb::new().await;
    let diagnostics = db.store().diagnostics().await.unwrap();
    for table in TABLES {
        let size = diagnostics
            .tables
            .iter()
            .find(|t| t.table == table)
            .unwrap_or_else(|| panic!("{table} missing from {:?}", diagnostics.tables));
        assert!(
            size.total_bytes >= 0
                && size.table_bytes >= 0
                && size.index_bytes >= 0
                && size.estimated_rows >= 0,
            "{size:?}"
        );
        assert!(size.total_bytes >= size.table_bytes + size.index_bytes);
    }
    assert!(
        diagnostics
            .tables
            .windows(2)
            .all(|w| w[0].total_bytes >= w[1].total_bytes),
        "largest first"
    );
    assert!(
        diagnostics
            .indexes
            .iter()
            .any(|i| i.table == "customers" && i.index == "customers_tenant_phone_key"),
        "{:?}",
        diagnostics.indexes
    );
    assert!(
        diagnostics
            .indexes
            .iter()
            .all(|i| i.scans >= 0 && i.bytes > 0)
    );
    assert!(
        diagnostics
            .indexes
            .windows(2)
            .all(|w| w[0].bytes >= w[1].bytes),
        "largest first"
    );
    assert!(diagnostics.slow_statements.is_none());
}

#[tokio::test]
async fn an_extension_the_server_did_not_preload_counts_as_absent() {
    // The throwaway server does not preload pg_stat_statements, so its view
    // would refuse to be read; diagnostics must still answer.
    let db = TestDb::new().await;
    let mut admin = db.admin_connection().await;
    admin
        .batch_execute("CREATE EXTENSION pg_stat_statements")
        .await
        .unwrap();
    drop(admin);
    let diagnostics = db.store().diagnostics().await.unwrap();
    assert!(diagnostics.slow_statements.is_none());
    assert!(!diagnostics.tables.is_empty());
}

async fn load_customers(store: &Store, tenant: TenantId) -> Vec<Customer> {
    let mut tx = store.tenant(tenant).await.unwrap();
    let rows = customers::table
        .select(Customer::as_select())
        .order(customers::id)
        .load(tx.conn())
        .await
        .unwrap();
    tx.commit().await.unwrap();
    rows
}

async fn all_tenants(store: &Store) -> Vec<Tenant> {
    store
        .platform()
        .list(TenantPage {
            after: None,
            limit: 100,
        })
        .await
        .unwrap()
}

fn run_script(script: &str, db: &TestDb, args: &[&Path]) -> String {
    let pg_bin = pg_tool("pg_dump")
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_default();
    let mut command = Command::new(Path::new(env!("CARGO_MANIFEST_DIR")).join(script));
    command.args(args).env("DATABASE_URL", db.superuser_url());
    // A bare "pg_dump" (found on PATH) has no directory to pin.
    if pg_bin.as_os_str().is_empty() {
        command.env_remove("PG_BIN");
    } else {
        command.env("PG_BIN", &pg_bin);
    }
    let out = command
        .output()
        .unwrap_or_else(|e| panic!("running {script}: {e}"));
    assert!(
        out.status.success(),
        "{script} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

#[tokio::test]
async fn backup_and_restore_round_trip() {
    let db = TestDb::new().await;
    let store = db.store();
    let usd: Currency = "USD".parse().unwrap();
    let acme = store
        .platform()
        .create(NewTenant::new("Acme", usd))
        .await
        .unwrap();
    let globex = store
        .platform()
        .create(NewTenant::new("Globex", usd).country("ZW"))
        .await
        .unwrap();
    let mut tx = store.tenant(acme.id).await.unwrap();
    diesel::insert_into(customers::table)
        .values((
            customers::tenant_id.eq(acme.id),
            customers::phone_e164.eq("+263771234567"),
        ))
        .execute(tx.conn())
        .await
        .unwrap();
    tx.commit().await.unwrap();
    let tenants_before = all_tenants(store).await;
    let acme_customers = load_customers(store, acme.id).await;
    assert_eq!(tenants_before, vec![acme.clone(), globex.clone()]);
    assert_eq!(acme_customers.len(), 1);

    let dir = tempfile::tempdir().unwrap();
    let dump = dir.path().join("loyalty.dump");
    let printed = run_script("scripts/backup.sh", &db, &[&dump]);
    assert_eq!(printed.trim(), dump.to_str().unwrap());
    assert!(std::fs::metadata(&dump).unwrap().len() > 0);

    let mut admin = db.admin_connection().await;
    admin
        .batch_execute("TRUNCATE tenants CASCADE")
        .await
        .unwrap();
    drop(admin);
    assert!(all_tenants(store).await.is_empty());

    run_script("scripts/restore.sh", &db, &[&dump]);
    assert_eq!(all_tenants(store).await, tenants_before);
    assert_eq!(load_customers(store, acme.id).await, acme_customers);
    assert!(load_customers(store, globex.id).await.is_empty());
}
