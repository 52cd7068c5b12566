//! The money path's speed next to raw SQL on the same schema, in one run:
//!
//! 1. single issuances through the crate and through pgbench running
//!    benches/sql/issue.sql (the same function, the same three round trips),
//!    all on one shared budget, at 1, 8 and 32 workers;
//! 2. `issue_batch` issuances per second, without and with voucher codes
//!    and a per-customer limit;
//! 3. voucher-code import: the crate (UNNEST in chunks, duplicate report
//!    included), binary COPY over tokio-postgres into a staging table, and
//!    `psql \copy` of the same file straight into the table.
//!
//! Every measurement is repeated for five rounds, the paths taking turns, and
//! the median round is shown: the two-core machine drifts too much for one
//! run each to compare them.
//!
//! `cargo bench --bench issuance`; `BENCH_SECONDS` (default 5) and
//! `BENCH_CODES` (default 1,000,000) size the runs.

mod common;
mod pgbench;

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use bigdecimal::BigDecimal;
use diesel::prelude::*;
use diesel_async::{RunQueryDsl, SimpleAsyncConnection};
use futures_util::pin_mut;
use loyalty_store::prelude::*;
use loyalty_store::schema::customers;
use loyalty_store::testing::{CampaignFixture, TestDb, pg_tool};
use serde_json::json;
use tokio_postgres::binary_copy::BinaryCopyInWriter;
use tokio_postgres::types::Type;

use common::median;
use pgbench::{Measured, measure, ms, pgbench};

const CUSTOMERS: usize = 1000;
const ROUNDS: usize = 5;
const BATCHES: usize = 10;
const SCRIPT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/benches/sql/issue.sql");

struct Setup {
    tenant: TenantId,
    /// What the guard sends with the tenant, for pgbench to send too.
    proof: String,
    rule: RuleId,
    /// Same campaign, a reward with voucher codes and a per-customer limit:
    /// the batch's heaviest path.
    coded_rule: RuleId,
    customers: Vec<CustomerId>,
}

async fn setup(store: &Store) -> Setup {
    let shop = CampaignFixture::builder()
        .hard_cap(10_i64.pow(12))
        .cost(1)
        .create(store)
        .await
        .unwrap();
    let (tenant, rule) = (shop.tenant, shop.rule);
    let new_rule = |reward_id, per_customer_limit| NewRule {
        campaign_id: shop.campaign,
        name: "Any purchase".into(),
        event_type: "purchase".into(),
        conditions: json!({}),
        reward_id,
        per_customer_limit,
        global_limit: None,
    };
    let mut tx = store.tenant(tenant).await.unwrap();
    // Ids pgbench can compute: md5(n)::uuid.
    tx.conn()
        .batch_execute(&format!(
            "INSERT INTO customers (tenant_id, id, phone_e164) \
             SELECT '{tenant}', md5(g::text)::uuid, '+1555' || lpad(g::text, 7, '0') \
               FROM generate_series(1, {CUSTOMERS}) g"
        ))
        .await
        .unwrap();
    let customers: Vec<CustomerId> = customers::table
        .select(customers::id)
        .order(customers::phone_e164)
        .load(tx.conn())
        .await
        .unwrap();
    tx.commit().await.unwrap();

    let coded_reward = fresh_reward(store, tenant, "Coded").await;
    let batched = ROUNDS * BATCHES;
    let mut tx = store.tenant(tenant).await.unwrap();
    let coded_rule = tx
        .rules()
        .create(new_rule(coded_reward, Some(batched as i32)))
        .await
        .unwrap()
        .id;
    let codes: Vec<String> = (0..batched * CUSTOMERS)
        .map(|i| format!("COUPON-{i:09}"))
        .collect();
    tx.voucher_codes()
        .import(coded_reward, &codes)
        .await
        .unwrap();
    tx.commit().await.unwrap();
    Setup {
        tenant,
        proof: store.tenant_proof(tenant).await.unwrap(),
        rule,
        coded_rule,
        customers,
    }
}

async fn crate_issuances(store: &Store, s: &Setup, workers: usize, run: Duration) -> Measured {
    let (store, tenant, rule, customers) = (store.clone(), s.tenant, s.rule, s.customers.clone());
    measure(workers, run, customers.len(), move |n| {
        let (store, customer) = (store.clone(), customers[n]);
        async move {
            let mut tx = store.tenant(tenant).await.unwrap();
            let new = NewIssuance {
                rule_id: rule,
                customer_id: customer,
                idempotency_key: uuid::Uuid::new_v4().to_string(),
                expires_at: None,
            };
            tx.issuances().issue(new).await.unwrap();
            tx.commit().await.unwrap();
        }
    })
    .await
}

fn pgbench_issuances(db: &TestDb, s: &Setup, clients: usize, run: Duration) -> Measured {
    pgbench(
        db,
        SCRIPT,
        clients,
        run,
        &[
            ("tenant", s.tenant.to_string()),
            ("proof", s.proof.clone()),
            ("rule", s.rule.to_string()),
        ],
    )
}

async fn batch_issuances(store: &Store, s: &Setup, rule: RuleId, round: usize) -> f64 {
    let started = Instant::now();
    for b in (0..BATCHES).map(|b| round * BATCHES + b) {
        let mut tx = store.tenant(s.tenant).await.unwrap();
        let report = tx
            .issuances()
            .issue_batch(NewBatch::for_customers(
                rule,
                &s.customers,
                &format!("batch-{rule}-{b}"),
            ))
            .await
            .unwrap();
        assert!(report.applied);
        tx.commit().await.unwrap();
    }
    (BATCHES * s.customers.len()) as f64 / started.elapsed().as_secs_f64()
}

async fn fresh_reward(store: &Store, tenant: TenantId, name: &str) -> RewardId {
    let mut tx = store.tenant(tenant).await.unwrap();
    let reward = tx
        .rewards()
        .create(NewReward {
            name: name.into(),
            description: None,
            reward_type: RewardType::Voucher,
            cost_amount: BigDecimal::from(1),
            currency: "USD".parse().unwrap(),
            uses_codes: true,
        })
        .await
        .unwrap()
        .id;
    tx.commit().await.unwrap();
    reward
}

async fn import_with_crate(
    store: &Store,
    tenant: TenantId,
    reward: RewardId,
    codes: &[String],
) -> Duration {
    let started = Instant::now();
    let mut tx = store.tenant(tenant).await.unwrap();
    let report = tx.voucher_codes().import(reward, codes).await.unwrap();
    tx.commit().await.unwrap();
    assert_eq!(report.inserted as usize, codes.len());
    started.elapsed()
}

async fn import_with_binary_copy(
    url: &str,
    tenant: TenantId,
    proof: &str,
    reward: RewardId,
    codes: &[String],
) -> Duration {
    let started = Instant::now();
    let (mut client, connection) = tokio_postgres::connect(url, tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(connection);
    let tx = client.transaction().await.unwrap();
    // loyalty_app may not create temporary tables: the staging table is
    // made before the role switch and handed over.
    tx.batch_execute(&format!(
        "CREATE TEMP TABLE staged_codes (id uuid, code text) ON COMMIT DROP; \
         GRANT SELECT, INSERT ON staged_codes TO loyalty_app; \
         SELECT set_config('role', 'loyalty_app', true), set_config('app.tenant_id', '{tenant}', true), \
                set_config('app.tenant_proof', '{proof}', true)"
    ))
    .await
    .unwrap();
    // The same strategy as the crate's import: time-ordered ids, and the
    // duplicate report only when some rows did not go in.
    let sink = tx
        .copy_in("COPY staged_codes (id, code) FROM STDIN (FORMAT binary)")
        .await
        .unwrap();
    let writer = BinaryCopyInWriter::new(sink, &[Type::UUID, Type::TEXT]);
    pin_mut!(writer);
    for code in codes {
        writer
            .as_mut()
            .write(&[&uuid::Uuid::now_v7(), code])
            .await
            .unwrap();
    }
    writer.finish().await.unwrap();
    let inserted = tokio_postgres::Transaction::execute(
        &tx,
        "INSERT INTO voucher_codes (tenant_id, id, reward_id, code) \
             SELECT $1, id, $2, code FROM staged_codes \
             ON CONFLICT (tenant_id, code) DO NOTHING",
        &[&tenant.0, &reward.0],
    )
    .await
    .unwrap();
    assert_eq!(inserted as usize, codes.len(), "the file has no duplicates");
    tx.commit().await.unwrap();
    started.elapsed()
}

fn import_with_psql_copy(url: &str, file: &Path) -> Duration {
    let started = Instant::now();
    let out = Command::new(pg_tool("psql"))
        .args([url, "-v", "ON_ERROR_STOP=1", "-qc"])
        .arg(format!(
            "\\copy voucher_codes (tenant_id, reward_id, code) FROM '{}' (FORMAT csv)",
            file.display()
        ))
        .output()
        .expect("running psql");
    assert!(
        out.status.success(),
        "psql: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    started.elapsed()
}

/// Every issuance leaves a dead version of the budget row; between runs,
/// vacuum so no run pays for the one before it. The analyze matters as much:
/// the pool's backends cache generic plans made while `issuances` was empty,
/// and without fresh statistics nothing replaces them as the table grows
/// (pgbench, reconnecting each run, would be measured with better plans).
async fn vacuum_analyze(db: &TestDb) {
    let mut conn = db.admin_connection().await;
    conn.batch_execute("VACUUM ANALYZE budgets, rules, issuances, ledger_entries")
        .await
        .unwrap();
}

#[tokio::main]
async fn main() {
    let env = |name: &str, default: u64| {
        std::env::var(name)
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(default)
    };
    let run = Duration::from_secs(env("BENCH_SECONDS", 5));
    let code_count = env("BENCH_CODES", 1_000_000) as usize;
    let db = TestDb::new().await;
    let store = Store::connect(db.config().with_pool_size(32))
        .await
        .unwrap();
    let s = setup(&store).await;

    println!(
        "single issuance, one shared budget: {ROUNDS} rounds of {}s per path, alternating, median shown",
        run.as_secs()
    );
    println!("| path | workers | issuances/s | p50 ms | p99 ms | crate / pgbench |");
    println!("|---|---|---|---|---|---|");
    for workers in [1, 8, 32] {
        let sized = Store::connect(db.config().with_pool_size(workers as u32))
            .await
            .unwrap();
        crate_issuances(&sized, &s, workers, Duration::from_millis(300)).await;
        let (mut floor, mut ours) = (Vec::new(), Vec::new());
        // The machine drifts (autovacuum, a growing table), so the paths take
        // turns, each starting from freshly vacuumed hot rows.
        for round in 0..ROUNDS {
            for crate_first in [round % 2 == 1, round % 2 == 0] {
                vacuum_analyze(&db).await;
                if crate_first {
                    ours.push(crate_issuances(&sized, &s, workers, run).await);
                } else {
                    floor.push(pgbench_issuances(&db, &s, workers, run));
                }
            }
        }
        let by_rate = |m: &Measured| m.per_second;
        let (floor, ours) = (median(floor, by_rate), median(ours, by_rate));
        println!(
            "| pgbench, benches/sql/issue.sql | {workers} | {:.0} | {} | {} | |",
            floor.per_second,
            ms(floor.p50),
            ms(floor.p99)
        );
        println!(
            "| crate, `tx.issuances().issue()` | {workers} | {:.0} | {} | {} | {:.0}% |",
            ours.per_second,
            ms(ours.p50),
            ms(ours.p99),
            100.0 * ours.per_second / floor.per_second
        );
    }

    let (mut plain, mut coded) = (Vec::new(), Vec::new());
    for round in 0..ROUNDS {
        for coded_first in [round % 2 == 1, round % 2 == 0] {
            vacuum_analyze(&db).await;
            if coded_first {
                coded.push(batch_issuances(&store, &s, s.coded_rule, round).await);
            } else {
                plain.push(batch_issuances(&store, &s, s.rule, round).await);
            }
        }
    }
    println!();
    println!(
        "issue_batch: {CUSTOMERS} customers per call, {BATCHES} calls per round, {ROUNDS} rounds, median shown"
    );
    println!("| reward | issuances/s |");
    println!("|---|---|");
    println!(
        "| no codes, no limit | {:.0} |",
        median(plain, |rate| *rate)
    );
    println!(
        "| voucher codes and a per-customer limit | {:.0} |",
        median(coded, |rate| *rate)
    );

    let file = tempfile::NamedTempFile::new().unwrap();
    let (mut psql, mut unnest, mut binary) = (Vec::new(), Vec::new(), Vec::new());
    for round in 0..ROUNDS {
        // Each import fills a new reward, and the order rotates so that no
        // path always meets the largest table.
        for turn in 0..3 {
            let reward = fresh_reward(&store, s.tenant, &format!("import {round}.{turn}")).await;
            // Codes are unique per tenant: each import brings its own.
            let codes: Vec<String> = (0..code_count)
                .map(|i| format!("BENCH-{round}{turn}-{i:09}"))
                .collect();
            match (round + turn) % 3 {
                0 => {
                    let csv: String = codes
                        .iter()
                        .map(|c| format!("{},{reward},{c}\n", s.tenant))
                        .collect();
                    std::fs::write(file.path(), csv).unwrap();
                    psql.push(import_with_psql_copy(&db.superuser_url(), file.path()));
                }
                1 => unnest.push(import_with_crate(&store, s.tenant, reward, &codes).await),
                _ => binary.push(
                    import_with_binary_copy(
                        &db.superuser_url(),
                        s.tenant,
                        &s.proof,
                        reward,
                        &codes,
                    )
                    .await,
                ),
            }
        }
    }
    let median_time = |times| median(times, Duration::as_secs_f64);
    let (psql_time, unnest_time, binary_time) =
        (median_time(psql), median_time(unnest), median_time(binary));
    let rate = |d: Duration| code_count as f64 / d.as_secs_f64();
    println!();
    println!("voucher-code import, {code_count} codes: {ROUNDS} rounds, median shown");
    println!("| path | rows/s | vs psql \\copy |");
    println!("|---|---|---|");
    println!(
        "| psql \\copy (no duplicate report; stops at the first) | {:.0} | 100% |",
        rate(psql_time)
    );
    println!(
        "| crate import: UNNEST chunks + duplicate report | {:.0} | {:.0}% |",
        rate(unnest_time),
        100.0 * psql_time.as_secs_f64() / unnest_time.as_secs_f64()
    );
    println!(
        "| binary COPY to staging + insert + duplicate report | {:.0} | {:.0}% |",
        rate(binary_time),
        100.0 * psql_time.as_secs_f64() / binary_time.as_secs_f64()
    );
}
