//! The embedded migrations: concurrent start-up, exact reversibility, and the
//! SQL-side checks agreeing with Rust's.

use std::process::Command;

use diesel::Connection;
use diesel::dsl::sql;
use diesel::sql_types::Bool;
use diesel_async::AsyncPgConnection;
use diesel_async::RunQueryDsl;
use diesel_async::async_connection_wrapper::AsyncConnectionWrapper;
use diesel_migrations::MigrationHarness;
use loyalty_store::testing::{TestDb, pg_tool};
use loyalty_store::{ISO_4217, MIGRATIONS, Store};

#[tokio::test(flavor = "multi_thread")]
async fn four_instances_migrating_at_once_apply_each_migration_once() {
    let db = TestDb::empty().await;
    let mut tasks = Vec::new();
    for _ in 0..4 {
        let store = Store::connect(db.config()).await.unwrap();
        tasks.push(tokio::spawn(async move { store.migrate().await }));
    }
    let mut applied = Vec::new();
    for task in tasks {
        applied.extend(task.await.unwrap().unwrap());
    }
    let expected = std::fs::read_dir("migrations").unwrap().count();
    assert_eq!(
        applied.len(),
        expected,
        "every migration applied exactly once: {applied:?}"
    );
    applied.sort();
    applied.dedup();
    assert_eq!(applied.len(), expected);
    assert!(
        db.store().migrate().await.unwrap().is_empty(),
        "nothing left to apply"
    );
}

pub fn schema_dump(url: &str) -> String {
    let out = Command::new(pg_tool("pg_dump"))
        .args(["--schema-only", "--no-owner", url])
        .output()
        .expect("running pg_dump");
    assert!(
        out.status.success(),
        "pg_dump: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    // Recent pg_dump releases wrap the dump in \restrict lines with a random key.
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .filter(|line| !line.starts_with("\\restrict") && !line.starts_with("\\unrestrict"))
        .collect::<Vec<_>>()
        .join("\n")
}

#[track_caller]
pub fn assert_same_schema(actual: &str, expected: &str, what: &str) {
    if actual != expected {
        let only_in = |a: &str, b: &str| {
            a.lines()
                .filter(|line| !b.lines().any(|other| other == *line))
                .collect::<Vec<_>>()
                .join("\n")
        };
        panic!(
            "{what}\n--- only after:\n{}\n--- only before:\n{}",
            only_in(actual, expected),
            only_in(expected, actual)
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn every_down_migration_reverts_its_up_migration_exactly() {
    let db = TestDb::empty().await;
    let url = db.migrator_url();
    tokio::task::spawn_blocking(move || {
        let mut conn = AsyncConnectionWrapper::<AsyncPgConnection>::establish(&url).unwrap();
        // Creates diesel's bookkeeping table, which every later state has too.
        conn.applied_migrations().unwrap();
        let mut states = vec![schema_dump(&url)];
        while conn.has_pending_migration(MIGRATIONS).unwrap() {
            conn.run_next_migration(MIGRATIONS).unwrap();
            states.push(schema_dump(&url));
        }
        assert_eq!(
            states.len(),
            std::fs::read_dir("migrations").unwrap().count() + 1
        );
        for step in (1..states.len()).rev() {
            let version = conn.revert_last_migration(MIGRATIONS).unwrap();
            assert_same_schema(
                &schema_dump(&url),
                &states[step - 1],
                &format!("down.sql of {version}"),
            );
            conn.run_next_migration(MIGRATIONS).unwrap();
            assert_same_schema(
                &schema_dump(&url),
                &states[step],
                &format!("re-applying {version}"),
            );
            conn.revert_last_migration(MIGRATIONS).unwrap();
        }
        conn.run_pending_migrations(MIGRATIONS).unwrap();
        assert_same_schema(
            &schema_dump(&url),
            states.last().unwrap(),
            "applying all again",
        );
    })
    .await
    .unwrap();
}

/// The layer stands on the migrations: reverting them all after a full
/// `migrate()` takes the layer too, and leaves the database as it was.
#[tokio::test(flavor = "multi_thread")]
async fn reverting_every_migration_after_migrate_leaves_nothing() {
    let db = TestDb::empty().await;
    let url = db.migrator_url();
    let empty = tokio::task::spawn_blocking({
        let url = url.clone();
        move || {
            let mut conn = AsyncConnectionWrapper::<AsyncPgConnection>::establish(&url).unwrap();
            conn.applied_migrations().unwrap();
            schema_dump(&url)
        }
    })
    .await
    .unwrap();
    db.store().migrate().await.unwrap();
    tokio::task::spawn_blocking(move || {
        let mut conn = AsyncConnectionWrapper::<AsyncPgConnection>::establish(&url).unwrap();
        conn.revert_all_migrations(MIGRATIONS).unwrap();
        assert_same_schema(&schema_dump(&url), &empty, "reverting everything");
    })
    .await
    .unwrap();
}

#[tokio::test]
async fn sql_and_rust_agree_on_currency_codes() {
    let db = TestDb::new().await;
    let mut conn = db.admin_connection().await;
    let listed = ISO_4217
        .iter()
        .map(|c| format!("'{c}'"))
        .collect::<Vec<_>>()
        .join(",");
    let all_known: bool = diesel::select(sql::<Bool>(&format!(
        "(SELECT bool_and(is_iso4217(c)) FROM unnest(ARRAY[{listed}]) c)"
    )))
    .get_result(&mut conn)
    .await
    .unwrap();
    assert!(all_known, "SQL rejects a code Rust accepts");
    let sql_count: bool = diesel::select(sql::<Bool>(&format!(
        "(SELECT count(*) = {} FROM unnest(string_to_array(\
            substring(pg_get_functiondef('is_iso4217'::regproc) from '\\{{([A-Z,]+)\\}}'), ',')))",
        ISO_4217.len()
    )))
    .get_result(&mut conn)
    .await
    .unwrap();
    assert!(sql_count, "SQL accepts a code Rust rejects");
}

#[tokio::test]
async fn loyalty_app_has_no_update_or_delete_on_append_only_tables() {
    let db = TestDb::new().await;
    let mut conn = db.admin_connection().await;
    for table in ["ledger_entries", "audit_logs", "consents"] {
        let may_change: bool = diesel::select(sql::<Bool>(&format!(
            "(has_table_privilege('loyalty_app', '{table}', 'UPDATE') \
              OR has_table_privilege('loyalty_app', '{table}', 'DELETE') \
              OR has_table_privilege('loyalty_app', '{table}', 'TRUNCATE'))"
        )))
        .get_result(&mut conn)
        .await
        .unwrap();
        assert!(!may_change, "{table} must be append-only for loyalty_app");
    }
    let bypasses: bool = diesel::select(sql::<Bool>(
        "(SELECT rolbypassrls OR rolsuper OR rolcanlogin FROM pg_roles WHERE rolname = 'loyalty_app')",
    ))
    .get_result(&mut conn)
    .await
    .unwrap();
    assert!(!bypasses, "loyalty_app must be NOLOGIN NOBYPASSRLS");
}

#[tokio::test]
async fn every_tenant_owned_table_forces_rls_with_one_checked_policy() {
    let db = TestDb::new().await;
    let mut conn = db.admin_connection().await;
    let all_forced: bool = diesel::select(sql::<Bool>(
        "(SELECT bool_and(c.relrowsecurity AND c.relforcerowsecurity \
                 AND p.polqual IS NOT NULL AND p.polwithcheck IS NOT NULL) \
            FROM pg_class c JOIN pg_attribute a ON a.attrelid = c.oid AND a.attname = 'tenant_id' \
            JOIN pg_policy p ON p.polrelid = c.oid \
           WHERE c.relkind = 'r' AND c.relnamespace = 'public'::regnamespace)",
    ))
    .get_result(&mut conn)
    .await
    .unwrap();
    assert!(all_forced);
    let covered: bool = diesel::select(sql::<Bool>(
        "(SELECT count(DISTINCT c.oid) = 14 FROM pg_class c \
            JOIN pg_attribute a ON a.attrelid = c.oid AND a.attname = 'tenant_id' \
            JOIN pg_policy p ON p.polrelid = c.oid \
           WHERE c.relkind = 'r' AND c.relnamespace = 'public'::regnamespace)",
    ))
    .get_result(&mut conn)
    .await
    .unwrap();
    assert!(covered, "all 14 tenant-owned tables carry a policy");
}
