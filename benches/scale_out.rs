//! Single issuances through the crate on one PostgreSQL node and on a Citus
//! cluster, in one run: the same workload (one guard, one `issue`, commit;
//! one shared budget; tenants of its own), at 1 and 4 workers.
//!
//! The cluster is `LOYALTY_BENCH_CITUS`, a coordinator's database URL as a
//! superuser, prepared as `scripts/test-citus.sh` prepares it (roles on
//! every node, database owned by the migrator); the bench migrates and
//! distributes it. One node is the test harness's server. On a two-core
//! machine with all three Citus servers on it the figures show the cost of
//! the hops, not what a cluster scales to.
//!
//! `LOYALTY_BENCH_CITUS=postgres://postgres@127.0.0.1:5601/loyalty cargo bench --bench scale_out`;
//! `BENCH_SECONDS` (default 5) sizes each run.

mod common;

use std::time::{Duration, Instant};

use loyalty_store::prelude::*;
use loyalty_store::testing::{CampaignFixture, TestDb};

use common::median;

const CUSTOMERS: usize = 200;
const ROUNDS: usize = 3;

fn login_url(admin: &str, login: &str) -> String {
    let mut url = url::Url::parse(admin).expect("LOYALTY_BENCH_CITUS is a URL");
    url.set_username(login).expect("a postgres URL has a user");
    let _ = url.set_password(None);
    url.into()
}

async fn cluster(admin: &str) -> Store {
    let config = Config::from_url(&login_url(admin, "loyalty_test_service"))
        .unwrap()
        .with_migrator_url(login_url(admin, "loyalty_test_migrator"));
    let store = Store::connect(config).await.unwrap();
    store.migrate().await.unwrap();
    store.distribute().await.unwrap();
    store
}

async fn campaign(store: &Store) -> CampaignFixture {
    CampaignFixture::builder()
        .hard_cap(10_i64.pow(12))
        .cost(1)
        .customers(CUSTOMERS)
        .create(store)
        .await
        .unwrap()
}

/// Issuances per second and the median latency of one run.
async fn issuances(
    store: &Store,
    p: &CampaignFixture,
    workers: usize,
    run: Duration,
) -> (f64, Duration) {
    let mut tasks = Vec::new();
    for worker in 0..workers {
        let (store, p) = (store.clone(), p.clone());
        tasks.push(tokio::spawn(async move {
            let mut latencies = Vec::new();
            let end = Instant::now() + run;
            let mut n = worker;
            while Instant::now() < end {
                let started = Instant::now();
                let mut tx = store.tenant(p.tenant).await.unwrap();
                tx.issuances()
                    .issue(NewIssuance {
                        rule_id: p.rule,
                        customer_id: p.customers[n % p.customers.len()],
                        idempotency_key: uuid::Uuid::new_v4().to_string(),
                        expires_at: None,
                    })
                    .await
                    .unwrap();
                tx.commit().await.unwrap();
                latencies.push(started.elapsed());
                n += workers;
            }
            latencies
        }));
    }
    let mut latencies = Vec::new();
    for task in tasks {
        latencies.extend(task.await.unwrap());
    }
    latencies.sort();
    (
        latencies.len() as f64 / run.as_secs_f64(),
        latencies[latencies.len() / 2],
    )
}

#[tokio::main]
async fn main() {
    let Some(admin) = std::env::var("LOYALTY_BENCH_CITUS")
        .ok()
        .filter(|url| !url.is_empty())
    else {
        eprintln!(
            "scale_out: set LOYALTY_BENCH_CITUS to a prepared Citus coordinator's URL \
             (see benches/README.md); nothing measured"
        );
        return;
    };
    let seconds = std::env::var("BENCH_SECONDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(5);
    let run = Duration::from_secs(seconds);
    let one_node = TestDb::new().await;
    let distributed = cluster(&admin).await;
    let targets = [
        ("one node", one_node.store().clone()),
        ("Citus, 1 coordinator + 2 workers", distributed),
    ];
    let mut campaigns = Vec::new();
    for (_, store) in &targets {
        campaigns.push(campaign(store).await);
    }

    println!("| where | workers | issuances/s | p50 latency |");
    println!("|---|---|---|---|");
    for workers in [1, 4] {
        let mut rounds: Vec<Vec<(f64, Duration)>> = vec![Vec::new(); targets.len()];
        for _ in 0..ROUNDS {
            for (i, (_, store)) in targets.iter().enumerate() {
                rounds[i].push(issuances(store, &campaigns[i], workers, run).await);
            }
        }
        for (i, (name, _)) in targets.iter().enumerate() {
            let (per_second, p50) = median(std::mem::take(&mut rounds[i]), |r| r.0);
            println!(
                "| {name} | {workers} | {per_second:.0} | {:.2} ms |",
                p50.as_secs_f64() * 1000.0
            );
        }
    }
}
