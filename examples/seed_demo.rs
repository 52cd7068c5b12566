//! Seeds the demo tenant and prints what it made. Run it twice: the second
//! run inserts nothing.
//!
//! Uses `DATABASE_URL` (a service login) and `MIGRATOR_DATABASE_URL` (the
//! migrator) when set (see `docs/security.md`); otherwise a throwaway database.

use loyalty_store::demo::{DEMO_TENANT, seed_demo};
use loyalty_store::prelude::*;
use loyalty_store::testing::TestDb;

#[tokio::main]
async fn main() -> Result<()> {
    let (store, _throwaway) = TestDb::store_from_env_or_throwaway().await?;
    store.migrate().await?;
    let first = seed_demo(&store).await?;
    println!("inserted: {first:?} ({} rows)", first.total());
    let second = seed_demo(&store).await?;
    println!("seeding again inserted {} rows", second.total());

    let tenant = store.platform().get(DEMO_TENANT).await?;
    println!(
        "tenant: {} ({}), {} {}",
        tenant.name,
        tenant.id,
        tenant.country_code.unwrap_or_default(),
        tenant.default_ccy
    );
    let mut tx = store.tenant(DEMO_TENANT).await?;
    for staff in tx.staff_users().list(Page::first(10)).await? {
        println!("  staff    {:<6} {}", staff.role, staff.email);
    }
    for reward in tx.rewards().list_active().await? {
        println!(
            "  reward   {} ({} {})",
            reward.name, reward.cost_amount, reward.currency
        );
    }
    for campaign in tx.campaigns().list(Page::first(10)).await? {
        println!("  campaign {} [{}]", campaign.name, campaign.status);
        for rule in tx.rules().list_by_campaign(campaign.id).await? {
            println!("    rule   {} on {:?}", rule.name, rule.event_type);
        }
    }
    let stats = tx
        .analytics()
        .dashboard(chrono::Utc::now() - chrono::Duration::days(1))
        .await?;
    println!("  active customers: {}", stats.active_customers);
    tx.commit().await?;
    Ok(())
}
