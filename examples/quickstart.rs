//! Migrates, provisions two tenants, writes customers for both through tenant
//! guards, and shows that each tenant sees only its own. Then sets up a
//! campaign with a budget, voucher codes and a rule, issues a reward,
//! redeems it, and prints the budget and its ledger.
//!
//! Uses `DATABASE_URL` (a service login) and `MIGRATOR_DATABASE_URL` (the
//! migrator) when set (see `docs/security.md`); otherwise a throwaway database from the test
//! harness, so `cargo run --example quickstart` works on a fresh machine.

use bigdecimal::BigDecimal;
use diesel::prelude::*;
use diesel_async::RunQueryDsl;
use loyalty_store::prelude::*;
use loyalty_store::repo::tenants::Tenant;
use loyalty_store::schema::customers;
use loyalty_store::testing::TestDb;

#[tokio::main]
async fn main() -> Result<()> {
    let (store, _throwaway) = TestDb::store_from_env_or_throwaway().await?;
    let applied = store.migrate().await?;
    println!("migrations applied: {}", applied.len());

    let platform = store.platform();
    let acme = platform
        .create(NewTenant::new("Acme Coffee", "USD".parse()?).country("US"))
        .await?;
    let globex = platform
        .create(NewTenant::new("Globex Grocers", "ZAR".parse()?).country("ZA"))
        .await?;
    println!(
        "tenants: {} ({}), {} ({})",
        acme.name, acme.id, globex.name, globex.id
    );

    for (tenant, phones) in [
        (&acme, &["+15550000001", "+15550000002"][..]),
        (&globex, &["+27820000001"][..]),
    ] {
        let mut tx = store.tenant(tenant.id).await?;
        for phone in phones {
            diesel::insert_into(customers::table)
                .values((
                    customers::tenant_id.eq(tenant.id),
                    customers::phone_e164.eq(*phone),
                ))
                .execute(tx.conn())
                .await?;
        }
        tx.commit().await?;
    }

    for tenant in [&acme, &globex] {
        let mut tx = store.tenant(tenant.id).await?;
        let phones: Vec<String> = customers::table
            .filter(customers::phone_e164.is_not_null())
            .select(customers::phone_e164.assume_not_null())
            .order(customers::phone_e164)
            .load(tx.conn())
            .await?;
        tx.commit().await?;
        println!(
            "{} sees {} customer(s): {}",
            tenant.name,
            phones.len(),
            phones.join(", ")
        );
    }

    let mut tx = store.tenant(acme.id).await?;
    let smuggled = diesel::insert_into(customers::table)
        .values((
            customers::tenant_id.eq(globex.id),
            customers::phone_e164.eq("+15550000009"),
        ))
        .execute(tx.conn())
        .await;
    println!(
        "{} writing a row for {}: {}",
        acme.name,
        globex.name,
        match smuggled.map_err(Error::from) {
            Err(Error::PermissionDenied { .. }) => "refused by row-level security".to_owned(),
            other => format!("unexpected: {other:?}"),
        }
    );
    drop(tx);

    reward_round_trip(&store, &acme).await
}

async fn reward_round_trip(store: &Store, acme: &Tenant) -> Result<()> {
    let usd: Currency = "USD".parse()?;
    let mut tx = store.tenant(acme.id).await?;
    let budget = tx
        .budgets()
        .create(NewBudget {
            name: "Launch budget".into(),
            currency: usd,
            hard_cap: BigDecimal::from(100),
        })
        .await?;
    let coffee = tx
        .rewards()
        .create(NewReward {
            name: "Free coffee".into(),
            description: None,
            reward_type: RewardType::Voucher,
            cost_amount: "3.50".parse().expect("a decimal literal"),
            currency: usd,
            uses_codes: true,
        })
        .await?;
    let codes: Vec<String> = (1..=3).map(|n| format!("COFFEE-{n:04}")).collect();
    let imported = tx.voucher_codes().import(coffee.id, &codes).await?;
    let campaign = tx
        .campaigns()
        .create(NewCampaign {
            budget_id: Some(budget.id),
            status: CampaignStatus::Active,
            ..NewCampaign::draft("Launch")
        })
        .await?;
    let rule = tx
        .rules()
        .create(NewRule {
            campaign_id: campaign.id,
            name: "Coffee on first purchase".into(),
            event_type: "purchase".into(),
            conditions: serde_json::json!({}),
            reward_id: coffee.id,
            per_customer_limit: Some(1),
            global_limit: None,
        })
        .await?;
    let customer = tx
        .customers()
        .find_by_phone("+15550000001")
        .await?
        .expect("created above");
    tx.commit().await?;
    println!(
        "\n{} codes imported for {}; campaign {:?} is running",
        imported.inserted, coffee.name, campaign.name
    );

    let mut tx = store.tenant(acme.id).await?;
    let issued = tx
        .issuances()
        .issue(NewIssuance {
            rule_id: rule.id,
            customer_id: customer.id,
            idempotency_key: "pos-order-1001".into(),
            expires_at: None,
        })
        .await?;
    tx.commit().await?;
    println!(
        "issued {} to {} with code {}",
        coffee.name,
        customer.phone_e164.as_deref().unwrap_or("-"),
        issued.voucher_code.as_deref().unwrap_or("-")
    );
    // Once the code has been sent to the customer (after the commit, e.g.
    // through the outbox), mark it delivered: a cancel then withdraws it
    // instead of handing it to someone else. Marking again is harmless.
    if let Some(code) = issued.issuance.voucher_code_id {
        let mut tx = store.tenant(acme.id).await?;
        tx.voucher_codes().mark_issued(code).await?;
        tx.commit().await?;
    }

    let mut tx = store.tenant(acme.id).await?;
    let again = tx
        .issuances()
        .issue(NewIssuance {
            rule_id: rule.id,
            customer_id: customer.id,
            idempotency_key: "pos-order-1001".into(),
            expires_at: None,
        })
        .await?;
    println!(
        "retrying the same order: replayed = {}, same issuance = {}",
        again.replayed,
        again.issuance.id == issued.issuance.id
    );
    let redeemed = tx.issuances().redeem(issued.issuance.id).await?;
    println!(
        "redeemed at {}",
        redeemed.issuance.redeemed_at.expect("just redeemed")
    );
    let budget = tx.budgets().get(budget.id).await?;
    println!(
        "budget {}: cap {} {}, reserved {}, spent {}, available {}",
        budget.name,
        budget.hard_cap,
        budget.currency,
        budget.reserved,
        budget.spent,
        budget.available()
    );
    for entry in tx.budgets().ledger(budget.id, Page::first(10)).await? {
        println!(
            "  ledger {:<7} {:>7} {}  {} {}",
            entry.entry_type, entry.amount, entry.currency, entry.ref_type, entry.ref_id
        );
    }
    println!(
        "ledger matches the budget: {}",
        tx.budgets().verify_ledger().await?.is_empty()
    );
    tx.commit().await?;
    Ok(())
}
