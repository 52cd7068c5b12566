//! The SQL layer: its refusals agree with Rust's, and `migrate()` rebuilds it
//! exactly when its text changed.

use diesel::QueryableByName;
use diesel::sql_types::{Oid, Text};
use diesel_async::{RunQueryDsl, SimpleAsyncConnection};
use loyalty_store::testing::TestDb;
use loyalty_store::{Refusal, SQL_LAYER_SCHEMA};

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
    let mut conn = db.store().raw_connection().await.unwrap();
    let labels: Vec<Label> =
        diesel::sql_query("SELECT unnest(enum_range(NULL::loyalty.refusal))::text AS label")
            .load(&mut *conn)
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
    let mut conn = db.store().raw_connection().await.unwrap();
    let sources: Vec<Source> = diesel::sql_query(
        "SELECT p.proname::text AS name, p.prosrc AS body FROM pg_proc p \
          WHERE p.pronamespace = 'loyalty'::regnamespace",
    )
    .load(&mut *conn)
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
    let mut conn = db.store().raw_connection().await.unwrap();
    let row: SchemaOid = diesel::sql_query("SELECT oid FROM pg_namespace WHERE nspname = $1")
        .bind::<Text, _>(SQL_LAYER_SCHEMA)
        .get_result(&mut *conn)
        .await
        .unwrap();
    row.oid
}

#[tokio::test]
async fn migrate_rebuilds_the_layer_only_when_its_text_changed() {
    let db = TestDb::new().await;
    let before = layer_oid(&db).await;
    let dump = schema_dump(db.url());
    assert!(db.store().migrate().await.unwrap().is_empty());
    assert_eq!(layer_oid(&db).await, before, "nothing changed: not rebuilt");

    // What a database built from other SQL files looks like.
    let mut conn = db.store().raw_connection().await.unwrap();
    conn.batch_execute("COMMENT ON SCHEMA loyalty IS 'loyalty-store SQL layer 0'")
        .await
        .unwrap();
    drop(conn);
    db.store().migrate().await.unwrap();
    assert_ne!(layer_oid(&db).await, before, "rebuilt");
    assert_same_schema(&schema_dump(db.url()), &dump, "the rebuilt layer");
}
