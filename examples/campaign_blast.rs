//! A campaign blast: imports a pool of voucher codes, then issues one reward
//! to thousands of customers with `issue_batch`, a thousand per call,
//! showing progress. Re-running a batch key replays instead of issuing twice.
//!
//! Uses `DATABASE_URL` (a service login) and `MIGRATOR_DATABASE_URL` (the
//! migrator) when set (see `docs/security.md`); otherwise a throwaway database.
//! `BLAST_CUSTOMERS` sets the audience (default 5,000).

use std::time::Instant;

use bigdecimal::BigDecimal;
use diesel_async::SimpleAsyncConnection;
use loyalty_store::prelude::*;
use loyalty_store::repo::issuances::BatchOutcome;
use loyalty_store::schema::customers;
use loyalty_store::testing::TestDb;

const PER_CALL: usize = 1000;

#[tokio::main]
async fn main() -> Result<()> {
    let audience: usize = std::env::var("BLAST_CUSTOMERS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(5000);
    let (store, _throwaway) = TestDb::store_from_env_or_throwaway().await?;
    store.migrate().await?;
    let usd: Currency = "USD".parse()?;
    let shop = store
        .platform()
        .create(NewTenant::new("Blast Coffee", usd))
        .await?;

    let mut tx = store.tenant(shop.id).await?;
    let budget = tx
        .budgets()
        .create(NewBudget {
            name: "Blast".into(),
            currency: usd,
            hard_cap: BigDecimal::from(audience as i64 * 5),
        })
        .await?;
    let reward = tx
        .rewards()
        .create(NewReward {
            name: "Welcome pastry".into(),
            description: None,
            reward_type: RewardType::Voucher,
            cost_amount: BigDecimal::from(2),
            currency: usd,
            uses_codes: true,
        })
        .await?;
    let campaign = tx
        .campaigns()
        .create(NewCampaign {
            budget_id: Some(budget.id),
            status: CampaignStatus::Active,
            ..NewCampaign::draft("Blast")
        })
        .await?;
    let rule = tx
        .rules()
        .create(NewRule {
            campaign_id: campaign.id,
            name: "Welcome".into(),
            event_type: "blast".into(),
            conditions: serde_json::json!({}),
            reward_id: reward.id,
            per_customer_limit: Some(1),
            global_limit: None,
        })
        .await?;
    tx.conn()
        .batch_execute(&format!(
            // ON CONFLICT also keeps Citus from routing the rows through
            // COPY, which row-level security refuses (docs/citus.md).
            "INSERT INTO customers (tenant_id, phone_e164) \
             SELECT '{}', '+1777' || lpad(g::text, 7, '0') FROM generate_series(1, {audience}) g \
             ON CONFLICT (tenant_id, phone_e164) DO NOTHING",
            shop.id
        ))
        .await?;
    let audience_ids: Vec<CustomerId> = {
        use diesel::prelude::*;
        use diesel_async::RunQueryDsl;
        customers::table
            .select(customers::id)
            .order(customers::phone_e164)
            .load(tx.conn())
            .await?
    };
    tx.commit().await?;
    println!("{} customers ready", audience_ids.len());

    let codes: Vec<String> = (0..audience + audience / 10)
        .map(|n| format!("PASTRY-{n:08}"))
        .collect();
    let started = Instant::now();
    let mut tx = store.tenant(shop.id).await?;
    let report = tx.voucher_codes().import(reward.id, &codes).await?;
    let again = tx.voucher_codes().import(reward.id, &codes[..10]).await?;
    tx.commit().await?;
    println!(
        "imported {} codes in {:.2?} ({:.0}/s); re-importing 10 reported {} duplicates",
        report.inserted,
        started.elapsed(),
        report.inserted as f64 / started.elapsed().as_secs_f64(),
        again.duplicates.len()
    );

    let started = Instant::now();
    let mut issued = 0;
    for (n, chunk) in audience_ids.chunks(PER_CALL).enumerate() {
        let mut tx = store.tenant(shop.id).await?;
        let batch = tx
            .issuances()
            .issue_batch(NewBatch::for_customers(
                rule.id,
                chunk,
                &format!("blast-{n}"),
            ))
            .await?;
        tx.commit().await?;
        issued += batch
            .items
            .iter()
            .filter(|i| matches!(i.outcome, BatchOutcome::Issued(_)))
            .count();
        println!(
            "  batch {:>3}: {issued:>6}/{} issued, {:.2?} so far",
            n + 1,
            audience_ids.len(),
            started.elapsed()
        );
    }
    println!(
        "{issued} issued in {:.2?} ({:.0}/s)",
        started.elapsed(),
        issued as f64 / started.elapsed().as_secs_f64()
    );

    let mut tx = store.tenant(shop.id).await?;
    let replay = tx
        .issuances()
        .issue_batch(NewBatch::for_customers(
            rule.id,
            &audience_ids[..PER_CALL.min(audience_ids.len())],
            "blast-0",
        ))
        .await?;
    let replayed = replay
        .items
        .iter()
        .filter(|i| matches!(i.outcome, BatchOutcome::Replayed(_)))
        .count();
    println!("re-sending batch 0: {replayed} replayed, nothing issued twice");
    let budget = tx.budgets().get(budget.id).await?;
    let pool = tx.voucher_codes().counts(reward.id).await?;
    println!(
        "budget: reserved {} of {} {}; codes: {} available, {} reserved; ledger balanced: {}",
        budget.reserved,
        budget.hard_cap,
        budget.currency,
        pool.available,
        pool.reserved,
        tx.budgets().verify_ledger().await?.is_empty()
    );
    tx.commit().await?;
    Ok(())
}
