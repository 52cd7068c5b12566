//! The rules every table keeps so that the schema can be distributed by
//! `tenant_id` (Citus; see docs/citus.md). A migration that adds a table
//! breaking one fails here.

use diesel::QueryableByName;
use diesel::sql_types::Text;
use diesel_async::{AsyncPgConnection, RunQueryDsl, SimpleAsyncConnection};
use loyalty_store::testing::TestDb;

/// One row per broken rule: the table, the rule, and what breaks it.
const BROKEN_RULES: &str = "\
WITH owned AS (
    SELECT c.oid, c.relname
      FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
     WHERE n.nspname = 'public' AND c.relkind IN ('r', 'p')
       AND c.relname NOT IN ('tenants', '__diesel_schema_migrations')
), tenant_column AS (
    SELECT o.oid, a.attnum
      FROM owned o JOIN pg_attribute a ON a.attrelid = o.oid AND a.attname = 'tenant_id'
     WHERE a.attnotnull AND a.atttypid = 'uuid'::regtype
)
SELECT relname::text AS table_name, 'a tenant_id uuid NOT NULL column' AS rule, '' AS detail
  FROM owned WHERE oid NOT IN (SELECT oid FROM tenant_column)
UNION ALL
SELECT o.relname::text, 'keys lead with tenant_id', i.indexrelid::regclass::text
  FROM owned o JOIN pg_index i ON i.indrelid = o.oid
  JOIN tenant_column t ON t.oid = o.oid
 WHERE (i.indisunique OR i.indisprimary) AND i.indkey[0] <> t.attnum
UNION ALL
SELECT o.relname::text, 'foreign keys lead with tenant_id', con.conname::text
  FROM owned o JOIN pg_constraint con ON con.conrelid = o.oid AND con.contype = 'f'
  JOIN tenant_column t ON t.oid = o.oid
 WHERE con.conkey[1] <> t.attnum
    OR (con.confrelid <> 'tenants'::regclass
        AND con.confkey[1] <> (SELECT attnum FROM pg_attribute
                                WHERE attrelid = con.confrelid AND attname = 'tenant_id'))
UNION ALL
SELECT o.relname::text, 'row-level security enabled and forced', ''
  FROM owned o JOIN pg_class c ON c.oid = o.oid
 WHERE NOT (c.relrowsecurity AND c.relforcerowsecurity)
UNION ALL
SELECT relname::text, 'a policy on current_tenant_id()', ''
  FROM owned o
 WHERE NOT EXISTS (SELECT FROM pg_policy p
                    WHERE p.polrelid = o.oid
                      AND pg_get_expr(p.polqual, p.polrelid) LIKE '%current_tenant_id()%')
UNION ALL
SELECT o.relname::text, 'no sequence-generated keys', a.attname::text
  FROM owned o JOIN pg_attrdef d ON d.adrelid = o.oid
  JOIN pg_attribute a ON a.attrelid = o.oid AND a.attnum = d.adnum
 WHERE pg_get_expr(d.adbin, d.adrelid) LIKE 'nextval(%'
UNION ALL
SELECT o.relname::text, 'no sequence-generated keys', a.attname::text
  FROM owned o JOIN pg_attribute a ON a.attrelid = o.oid
 WHERE a.attidentity <> '' AND NOT a.attisdropped
ORDER BY 1, 2, 3";

#[derive(QueryableByName, Debug, PartialEq)]
struct Broken {
    #[diesel(sql_type = Text)]
    table_name: String,
    #[diesel(sql_type = Text)]
    rule: String,
    #[diesel(sql_type = Text)]
    detail: String,
}

async fn broken_rules(conn: &mut AsyncPgConnection) -> Vec<Broken> {
    diesel::sql_query(BROKEN_RULES).load(conn).await.unwrap()
}

#[tokio::test]
async fn every_table_can_be_distributed_by_tenant_id() {
    let db = TestDb::new().await;
    let broken = broken_rules(&mut db.admin_connection().await).await;
    assert!(broken.is_empty(), "{broken:#?}");
}

/// The check itself: a table that breaks each rule is caught.
#[tokio::test]
async fn a_table_that_breaks_the_rules_is_caught() {
    let db = TestDb::new().await;
    let mut admin = db.admin_connection().await;
    admin
        .batch_execute(
            "CREATE TABLE stray (id bigserial PRIMARY KEY, tenant_id uuid NOT NULL, \
                                 customer_id uuid, FOREIGN KEY (customer_id, tenant_id) \
                                 REFERENCES customers (id, tenant_id)); \
             CREATE TABLE loose (id uuid PRIMARY KEY)",
        )
        .await
        .unwrap();
    let broken = broken_rules(&mut admin).await;
    let rules = |table: &str| -> Vec<&str> {
        broken
            .iter()
            .filter(|b| b.table_name == table)
            .map(|b| b.rule.as_str())
            .collect()
    };
    assert!(
        rules("loose").contains(&"a tenant_id uuid NOT NULL column"),
        "{broken:#?}"
    );
    for rule in [
        "keys lead with tenant_id",
        "foreign keys lead with tenant_id",
        "row-level security enabled and forced",
        "a policy on current_tenant_id()",
        "no sequence-generated keys",
    ] {
        assert!(rules("stray").contains(&rule), "{rule}: {broken:#?}");
    }
}
