//! Migrates, provisions two tenants, writes customers for both through tenant
//! guards, and shows that each tenant sees only its own.
//!
//! Uses `DATABASE_URL` when set; otherwise a throwaway database from the test
//! harness, so `cargo run --example quickstart` works on a fresh machine.

use diesel::prelude::*;
use diesel_async::RunQueryDsl;
use loyalty_store::prelude::*;
use loyalty_store::schema::customers;
use loyalty_store::testing::TestDb;

#[tokio::main]
async fn main() -> Result<()> {
    let throwaway;
    let store = match std::env::var("DATABASE_URL") {
        Ok(url) => Store::connect_url(&url).await?,
        Err(_) => {
            println!("DATABASE_URL is not set; using a throwaway database.");
            throwaway = TestDb::empty().await;
            throwaway.store().clone()
        }
    };
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
            .select(customers::phone_e164)
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
    Ok(())
}
