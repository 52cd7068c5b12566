//! The highest-volume write, next to raw SQL on the same schema, in one run:
//! an event ingested and matched against the tenant's rules (ten rules for
//! the event type, with conditions of every kind), each in a guard of its
//! own, through the crate and through pgbench running benches/sql/ingest.sql
//! (the same statements, the same four round trips), at 1 and 8 workers.
//!
//! Five rounds per path, the paths taking turns, the median shown.
//! `cargo bench --bench ingest`; `BENCH_SECONDS` (default 3) sizes a round.

mod common;
mod pgbench;

use std::time::Duration;

use chrono::Utc;
use diesel_async::SimpleAsyncConnection;
use loyalty_store::prelude::*;
use loyalty_store::testing::{CampaignFixture, TestDb};
use serde_json::json;

use common::median;
use pgbench::{Measured, measure, ms, pgbench};

const CUSTOMERS: usize = 1000;
const ROUNDS: usize = 5;
const SCRIPT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/benches/sql/ingest.sql");

struct Setup {
    tenant: TenantId,
    proof: String,
    customers: Vec<CustomerId>,
}

async fn setup(store: &Store) -> Setup {
    let shop = CampaignFixture::builder().create(store).await.unwrap();
    let tenant = shop.tenant;
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
    let conditions = [
        Condition::gte("amount", 20),
        Condition::gte("amount", 50),
        Condition::lte("amount", 10),
        Condition::one_of("day", ["sat", "sun"]),
        Condition::eq("channel", "app"),
        Condition::exists("coupon"),
        Condition::all([Condition::gte("amount", 30), Condition::eq("day", "sat")]),
        Condition::any([Condition::gte("amount", 90), Condition::exists("vip")]),
        Condition::all([]),
    ];
    for (n, condition) in conditions.into_iter().enumerate() {
        tx.rules()
            .create(NewRule {
                campaign_id: shop.campaign,
                name: format!("Purchase rule {n}"),
                event_type: "purchase".into(),
                conditions: condition.into(),
                reward_id: shop.reward,
                per_customer_limit: None,
                global_limit: None,
            })
            .await
            .unwrap();
    }
    let customers = tx
        .customers()
        .list(KeysetPage::first(CUSTOMERS as u32))
        .await
        .unwrap();
    tx.commit().await.unwrap();
    Setup {
        tenant,
        proof: store.tenant_proof(tenant).await.unwrap(),
        customers: customers.into_iter().map(|c| c.id).collect(),
    }
}

async fn crate_ingests(store: &Store, s: &Setup, workers: usize, run: Duration) -> Measured {
    let (store, tenant, customers) = (store.clone(), s.tenant, s.customers.clone());
    measure(workers, run, customers.len(), move |n| {
        let (store, customer) = (store.clone(), customers[n]);
        async move {
            let properties = json!({"amount": n % 100 + 1, "day": "sat"});
            let mut tx = store.tenant(tenant).await.unwrap();
            let event = NewEvent {
                customer_id: Some(customer),
                event_type: "purchase".into(),
                properties: properties.clone(),
                occurred_at: Utc::now(),
                source: "bench".into(),
                idempotency_key: uuid::Uuid::new_v4().to_string(),
            };
            tx.events().ingest(event).await.unwrap();
            tx.rules()
                .match_event("purchase", &properties, Utc::now())
                .await
                .unwrap();
            tx.commit().await.unwrap();
        }
    })
    .await
}

#[tokio::main]
async fn main() {
    let secs = std::env::var("BENCH_SECONDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(3);
    let run = Duration::from_secs(secs);
    let db = TestDb::new().await;
    let s = setup(db.store()).await;
    println!(
        "event ingest + rule match (10 rules with conditions): {ROUNDS} rounds of {secs}s per path, alternating, median shown"
    );
    println!("| path | workers | events/s | p50 ms | p99 ms | crate / pgbench |");
    println!("|---|---|---|---|---|---|");
    for workers in [1, 8] {
        let sized = Store::connect(db.config().with_pool_size(workers as u32))
            .await
            .unwrap();
        crate_ingests(&sized, &s, workers, Duration::from_millis(300)).await;
        let (mut floor, mut ours) = (Vec::new(), Vec::new());
        for round in 0..ROUNDS {
            for crate_first in [round % 2 == 1, round % 2 == 0] {
                if crate_first {
                    ours.push(crate_ingests(&sized, &s, workers, run).await);
                } else {
                    floor.push(pgbench(
                        &db,
                        SCRIPT,
                        workers,
                        run,
                        &[("tenant", s.tenant.to_string()), ("proof", s.proof.clone())],
                    ));
                }
            }
        }
        let by_rate = |m: &Measured| m.per_second;
        let (floor, ours) = (median(floor, by_rate), median(ours, by_rate));
        println!(
            "| pgbench, benches/sql/ingest.sql | {workers} | {:.0} | {} | {} | |",
            floor.per_second,
            ms(floor.p50),
            ms(floor.p99)
        );
        println!(
            "| crate, `ingest` + `match_event` | {workers} | {:.0} | {} | {} | {:.0}% |",
            ours.per_second,
            ms(ours.p50),
            ms(ours.p99),
            100.0 * ours.per_second / floor.per_second
        );
    }
}
