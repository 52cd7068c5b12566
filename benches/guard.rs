//! The tenant guard's cost, next to a plain pooled read and the raw-SQL floor
//! (pgbench running benches/sql/guard_read.sql) on the same database. The
//! read runs through the repository, and as a diesel query of the caller's
//! own through `tx.conn()`, after which the guard resets the session.
//!
//! `cargo bench --bench guard`; `DATABASE_URL` picks the server (default: a
//! throwaway one). `BENCH_SECONDS` sets the length of each run (default 5).

mod common;

use std::process::Command;
use std::time::{Duration, Instant};

use diesel::prelude::*;
use diesel_async::{RunQueryDsl, SimpleAsyncConnection};
use loyalty_store::prelude::*;
use loyalty_store::repo::customers::Customer;
use loyalty_store::schema::customers;
use loyalty_store::testing::{TestDb, pg_tool};
use loyalty_store::{Config, Recycling};

use common::median;

const CUSTOMERS: u32 = 10_000;
const ROUNDS: usize = 5;
const SCRIPT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/benches/sql/guard_read.sql");

fn phone(n: u32) -> String {
    format!("+1555{n:07}")
}

fn random_customer(state: &mut u64) -> u32 {
    // xorshift: cheap, and good enough to spread reads over the table.
    *state ^= *state << 13;
    *state ^= *state >> 7;
    *state ^= *state << 17;
    (*state % u64::from(CUSTOMERS)) as u32 + 1
}

#[derive(Clone, Copy)]
enum Mode {
    /// The read as a diesel query of the caller's own, through `tx.conn()`:
    /// the guard then resets the session as it ends.
    Guard,
    /// The same read through the repository, which leaves no session state.
    Repository,
    Plain,
}

struct Measured {
    per_second: f64,
    p50: Duration,
    p99: Duration,
}

async fn measure(
    store: &Store,
    tenant: TenantId,
    mode: Mode,
    workers: u32,
    run: Duration,
) -> Measured {
    let mut tasks = Vec::new();
    for worker in 0..workers {
        let store = store.clone();
        tasks.push(tokio::spawn(async move {
            let mut seed = 0x9e37_79b9_7f4a_7c15_u64 ^ u64::from(worker + 1);
            let mut latencies = Vec::new();
            let end = Instant::now() + run;
            while Instant::now() < end {
                let wanted = phone(random_customer(&mut seed));
                let started = Instant::now();
                // The repository's query: row-level security adds the tenant.
                let query = customers::table
                    .filter(customers::phone_e164.eq(wanted.clone()))
                    .select(Customer::as_select());
                let row: Customer = match mode {
                    Mode::Guard => {
                        let mut tx = store.tenant(tenant).await.unwrap();
                        let row = query.get_result(tx.conn()).await.unwrap();
                        tx.commit().await.unwrap();
                        row
                    }
                    Mode::Repository => {
                        let mut tx = store.tenant(tenant).await.unwrap();
                        let customer = tx.customers().find_by_phone(&wanted).await.unwrap();
                        tx.commit().await.unwrap();
                        customer.expect("every phone exists")
                    }
                    Mode::Plain => {
                        let mut conn = store.raw_connection().await.unwrap();
                        customers::table
                            .filter(customers::tenant_id.eq(tenant))
                            .filter(customers::phone_e164.eq(wanted))
                            .select(Customer::as_select())
                            .get_result(&mut *conn)
                            .await
                            .unwrap()
                    }
                };
                std::hint::black_box(row);
                latencies.push(started.elapsed());
            }
            latencies
        }));
    }
    let mut latencies = Vec::new();
    for task in tasks {
        latencies.extend(task.await.unwrap());
    }
    latencies.sort();
    let at = |q: f64| latencies[((latencies.len() - 1) as f64 * q) as usize];
    Measured {
        per_second: latencies.len() as f64 / run.as_secs_f64(),
        p50: at(0.50),
        p99: at(0.99),
    }
}

fn pgbench(url: &str, tenant: TenantId, proof: &str, clients: u32, run: Duration) -> f64 {
    let out = Command::new(pg_tool("pgbench"))
        .args([
            "-n",
            "-M",
            "simple",
            "-c",
            &clients.to_string(),
            "-j",
            &clients.min(2).to_string(),
        ])
        .args([
            "-T",
            &run.as_secs().to_string(),
            "-D",
            &format!("tenant={tenant}"),
            "-D",
            &format!("proof={proof}"),
            "-f",
            SCRIPT,
            url,
        ])
        .output()
        .expect("running pgbench");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "pgbench failed: {stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
        .lines()
        .find_map(|line| line.strip_prefix("tps = "))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|tps| tps.parse().ok())
        .expect("a tps line from pgbench")
}

fn ms(d: Duration) -> String {
    format!("{:.2}", d.as_secs_f64() * 1000.0)
}

#[tokio::main]
async fn main() {
    let run = Duration::from_secs(
        std::env::var("BENCH_SECONDS")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(5),
    );
    let db = TestDb::new().await;
    let tenant = db
        .store()
        .platform()
        .create(NewTenant::new("Bench", "USD".parse().unwrap()))
        .await
        .unwrap()
        .id;
    let mut tx = db.store().tenant(tenant).await.unwrap();
    tx.conn()
        .batch_execute(&format!(
            "INSERT INTO customers (tenant_id, phone_e164) \
             SELECT '{tenant}', '+1555' || lpad(g::text, 7, '0') FROM generate_series(1, {CUSTOMERS}) g; \
             ANALYZE customers"
        ))
        .await
        .unwrap();
    tx.commit().await.unwrap();

    let proof = db.store().tenant_proof(tenant).await.unwrap();
    println!(
        "point read of one customer by phone, {CUSTOMERS} customers: \
         {ROUNDS} rounds of {}s per path, alternating, median shown",
        run.as_secs()
    );
    println!("| path | workers | ops/s | p50 ms | p99 ms | vs raw floor |");
    println!("|---|---|---|---|---|---|");
    let paths = [
        (
            "guard, repository read, recycling=fast",
            Mode::Repository,
            Recycling::Fast,
        ),
        (
            "guard, own query + session reset, recycling=fast",
            Mode::Guard,
            Recycling::Fast,
        ),
        (
            "guard, own query + session reset, recycling=verified",
            Mode::Guard,
            Recycling::Verified,
        ),
        ("plain pooled read, no guard", Mode::Plain, Recycling::Fast),
    ];
    for workers in [1, 8] {
        let mut stores = Vec::new();
        for (_, mode, recycling) in paths {
            // With no guard there is no role switch: the plain read needs
            // a login that may read the table as itself.
            let login = match mode {
                Mode::Plain => Config::from_url(&db.superuser_url())
                    .unwrap()
                    .danger_allow_privileged_login(),
                _ => db.config(),
            };
            let config = login.with_pool_size(workers).with_recycling(recycling);
            let store = Store::connect(config).await.unwrap();
            // Warm the pool and the statement caches before timing.
            measure(&store, tenant, mode, workers, Duration::from_millis(300)).await;
            stores.push(store);
        }
        let mut floors = Vec::new();
        let mut rounds: Vec<Vec<Measured>> = paths.iter().map(|_| Vec::new()).collect();
        for _ in 0..ROUNDS {
            floors.push(pgbench(&db.url(), tenant, &proof, workers, run));
            for ((_, mode, _), (store, measured)) in
                paths.iter().zip(stores.iter().zip(rounds.iter_mut()))
            {
                measured.push(measure(store, tenant, *mode, workers, run).await);
            }
        }
        let floor = median(floors, |tps| *tps);
        println!("| raw SQL floor (pgbench, 3 round trips) | {workers} | {floor:.0} | | | 100% |");
        for ((label, _, _), measured) in paths.iter().zip(rounds) {
            let m = median(measured, |m| m.per_second);
            println!(
                "| {label} | {workers} | {:.0} | {} | {} | {:.0}% |",
                m.per_second,
                ms(m.p50),
                ms(m.p99),
                100.0 * m.per_second / floor
            );
        }
    }
}
