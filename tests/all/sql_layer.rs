//! The SQL layer: its refusals agree with Rust's, and `migrate()` rebuilds it
//! exactly when its text changed.

use diesel::QueryableByName;
use diesel::sql_types::{Oid, Text};
use diesel_async::{RunQueryDsl, SimpleAsyncConnection};
use loyalty_store::testing::TestDb;
use loyalty_store::{Error, Refusal, SQL_LAYER_SCHEMA};

use crate::migrations::{assert_same_schema, schema_dump};

#[derive(QueryableByName)]
struct Label {
    #[diesel(sql_type = Text)]
    label: String,
}

#[derive(QueryableByName)]
struct Source {
    #[diesel(sql_type = Text)]
    name: String,
    #[diesel(sql_type = Text)]
    body: String,
}

#[derive(QueryableByName)]
struct SchemaOid {
    #[diesel(sql_type = Oid)]
    oid: u32,
}

#[tokio::test]
async fn sql_and_rust_list_the_same_refusals() {
    let db = TestDb::new().await;
    let mut conn = db.admin_connection().await;
    let labels: Vec<Label> =
        diesel::sql_query("SELECT unnest(enum_range(NULL::loyalty.refusal))::text AS label")
            .load(&mut conn)
            .await
            .unwrap();
    let sql: Vec<&str> = labels.iter().map(|l| l.label.as_str()).collect();
    assert_eq!(sql, Refusal::REASONS);
}

/// The literal after each `refuse('` or `refusal_json('` in `body`.
fn refusals_raised(body: &str) -> Vec<&str> {
    ["refuse('", "refusal_json('"]
        .iter()
        .flat_map(|call| body.match_indices(call).map(move |(at, _)| at + call.len()))
        .filter_map(|start| body[start..].split('\'').next())
        .collect()
}

#[tokio::test]
async fn every_refusal_is_raised_somewhere_and_nothing_else_is() {
    let db = TestDb::new().await;
    let mut conn = db.admin_connection().await;
    let sources: Vec<Source> = diesel::sql_query(
        "SELECT p.proname::text AS name, p.prosrc AS body FROM pg_proc p \
          WHERE p.pronamespace = 'loyalty'::regnamespace",
    )
    .load(&mut conn)
    .await
    .unwrap();
    assert!(sources.len() > 20, "the layer's functions are installed");
    for source in &sources {
        for reason in refusals_raised(&source.body) {
            assert!(
                Refusal::REASONS.contains(&reason),
                "{} raises {reason:?}, which Refusal does not know",
                source.name
            );
        }
    }
    for reason in Refusal::REASONS {
        let quoted = format!("'{reason}'");
        assert!(
            sources.iter().any(|s| s.body.contains(&quoted)),
            "no SQL function gives the refusal {reason}"
        );
    }
}

#[test]
fn the_source_scan_finds_what_it_should() {
    let body = "PERFORM loyalty.refuse('budget_exhausted', 'x'); \
                x := loyalty.refusal_json('limit_reached', '{}');";
    assert_eq!(refusals_raised(body), ["budget_exhausted", "limit_reached"]);
}

async fn layer_oid(db: &TestDb) -> u32 {
    let mut conn = db.admin_connection().await;
    let row: SchemaOid = diesel::sql_query("SELECT oid FROM pg_namespace WHERE nspname = $1")
        .bind::<Text, _>(SQL_LAYER_SCHEMA)
        .get_result(&mut conn)
        .await
        .unwrap();
    row.oid
}

#[tokio::test]
async fn migrate_rebuilds_the_layer_only_when_its_text_changed() {
    let db = TestDb::new().await;
    let before = layer_oid(&db).await;
    let dump = schema_dump(&db.superuser_url());
    assert!(db.store().migrate().await.unwrap().is_empty());
    assert_eq!(layer_oid(&db).await, before, "nothing changed: not rebuilt");

    // What a database built from other SQL files looks like.
    run_sql(&db, STALE).await;
    db.store().migrate().await.unwrap();
    assert_ne!(layer_oid(&db).await, before, "rebuilt");
    assert_same_schema(
        &schema_dump(&db.superuser_url()),
        &dump,
        "the rebuilt layer",
    );
}

async fn run_sql(db: &TestDb, sql: &str) {
    let mut conn = db.admin_connection().await;
    conn.batch_execute(sql).await.unwrap();
}

const STALE: &str = "COMMENT ON SCHEMA loyalty IS 'loyalty-store SQL layer 0.0.1 0'";

#[tokio::test]
async fn a_layer_built_by_a_newer_release_is_kept() {
    let db = TestDb::new().await;
    let before = layer_oid(&db).await;
    run_sql(
        &db,
        "COMMENT ON SCHEMA loyalty IS 'loyalty-store SQL layer 99.0.0 f00d'",
    )
    .await;
    assert!(db.store().migrate().await.unwrap().is_empty());
    assert_eq!(layer_oid(&db).await, before);
}

#[tokio::test]
async fn a_rebuild_that_would_drop_something_built_on_the_layer_fails_and_keeps_it() {
    let db = TestDb::new().await;
    let before = layer_oid(&db).await;
    run_sql(
        &db,
        "CREATE VIEW rule_locks AS SELECT loyalty.rule_lock(id) AS lock FROM rules",
    )
    .await;
    run_sql(&db, STALE).await;
    match db.store().migrate().await {
        Err(Error::Migration(message)) => assert!(message.contains("rule_locks"), "{message}"),
        other => panic!("expected a refused rebuild, got {other:?}"),
    }
    assert_eq!(layer_oid(&db).await, before, "the old layer stays");
    run_sql(&db, "SELECT * FROM rule_locks").await;
}

#[tokio::test]
async fn a_database_migrated_by_an_unknown_older_build_is_refused() {
    let db = TestDb::new().await;
    run_sql(
        &db,
        "INSERT INTO __diesel_schema_migrations (version) VALUES ('2026-11-22-000006')",
    )
    .await;
    match db.store().migrate().await {
        Err(Error::Migration(message)) => {
            assert!(message.contains("2026-11-22-000006"), "{message}")
        }
        other => panic!("expected a refusal, got {other:?}"),
    }
}

#[tokio::test]
async fn a_database_migrated_by_a_newer_release_is_left_alone() {
    let db = TestDb::new().await;
    let before = layer_oid(&db).await;
    run_sql(
        &db,
        "INSERT INTO __diesel_schema_migrations (version) VALUES ('2099-01-01-000001')",
    )
    .await;
    run_sql(&db, STALE).await;
    assert!(db.store().migrate().await.unwrap().is_empty());
    assert_eq!(layer_oid(&db).await, before, "not rebuilt");
}

/// The rebuild locks the tables its triggers are on; it gives up on a lock it
/// cannot get quickly, rather than stall every guard behind it, and retries.
#[tokio::test(flavor = "multi_thread")]
async fn a_rebuild_waiting_on_a_long_transaction_retries_until_it_gets_through() {
    let db = TestDb::new().await;
    let before = layer_oid(&db).await;
    run_sql(&db, STALE).await;
    let mut long = db.admin_connection().await;
    long.batch_execute("BEGIN; SELECT count(*) FROM budgets")
        .await
        .unwrap();
    let store = db.store().clone();
    let migrating = tokio::spawn(async move { store.migrate().await });
    tokio::time::sleep(std::time::Duration::from_secs(3)).await;
    if migrating.is_finished() {
        panic!("it should wait for the lock: {:?}", migrating.await);
    }
    long.batch_execute("COMMIT").await.unwrap();
    migrating.await.unwrap().unwrap();
    assert_ne!(
        layer_oid(&db).await,
        before,
        "rebuilt once the lock was free"
    );
}
