//! Demo data, as an idempotent function rather than a migration:
//! production databases never get it, and running it twice changes nothing.

use diesel::prelude::*;
use diesel_async::RunQueryDsl;
use serde::Serialize;
use serde_json::{Value, json};
use uuid::Uuid;

use crate::conditions::Condition;
use crate::error::{Error, Result};
use crate::ids::*;
use crate::repo::budgets::BudgetRepository;
use crate::repo::campaigns::CampaignStatus;
use crate::repo::rewards::RewardType;
use crate::repo::staff_users::StaffRole;
use crate::repo::tenants::{NewTenant, TenantRepository};
use crate::repo::voucher_codes::VoucherCodeRepository;
use crate::schema::{budgets, campaigns, customers, reward_catalog, rules, staff_users};
use crate::store::Store;

/// The demo tenant's fixed id.
pub const DEMO_TENANT: TenantId =
    TenantId(Uuid::from_u128(0xd3e0_0000_0000_4000_8000_0000_0000_0001));

// Every demo row has a fixed id, so a second run finds it and inserts nothing.
const fn demo(n: u128) -> Uuid {
    Uuid::from_u128(0xd3e0_0000_0000_4000_8000_0000_0000_0000 + n)
}

/// Rows each run inserted; all zero when the demo data was already there.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct DemoSummary {
    pub tenant: usize,
    pub staff_users: usize,
    pub customers: usize,
    pub rewards: usize,
    pub budgets: usize,
    pub campaigns: usize,
    pub rules: usize,
    pub voucher_codes: usize,
}

impl DemoSummary {
    /// Rows inserted in all.
    pub fn total(&self) -> usize {
        self.tenant
            + self.staff_users
            + self.customers
            + self.rewards
            + self.budgets
            + self.campaigns
            + self.rules
            + self.voucher_codes
    }
}

/// Creates the demo tenant with staff in all four roles, customers, catalog
/// items, a budget, two running campaigns, rules (on sign-up; on purchases
/// of 20 or more; on weekend purchases) and voucher codes for the free
/// coffee, leaving any that already exist. Every rule can issue.
pub async fn seed_demo(store: &Store) -> Result<DemoSummary> {
    let mut summary = DemoSummary::default();
    let platform = store.platform();
    match platform.get(DEMO_TENANT).await {
        Ok(_) => {}
        Err(Error::NotFound) => {
            let tenant = NewTenant {
                id: DEMO_TENANT,
                ..NewTenant::new("Demo Coffee Co", "USD".parse()?)
                    .country("ZW")
                    .theme(json!({"primary": "#6f4e37", "logo": "coffee-cup"}))
            };
            match platform.create(tenant).await {
                Ok(_) => summary.tenant = 1,
                // Another seeder got there first.
                Err(Error::Conflict { .. }) => {}
                Err(e) => return Err(e),
            }
        }
        Err(e) => return Err(e),
    }

    let mut tx = store.tenant(DEMO_TENANT).await?;
    let t = DEMO_TENANT;
    let conn = tx.db();

    let staff: Vec<_> = [
        (1, "owner@demo.coffee", "Olivia Owner", StaffRole::Owner),
        (2, "admin@demo.coffee", "Adam Admin", StaffRole::Admin),
        (3, "staff@demo.coffee", "Sam Staff", StaffRole::Staff),
        (4, "viewer@demo.coffee", "Vera Viewer", StaffRole::Viewer),
    ]
    .into_iter()
    .map(|(n, email, name, role)| {
        (
            staff_users::tenant_id.eq(t),
            staff_users::id.eq(StaffUserId(demo(n))),
            staff_users::email.eq(email),
            staff_users::full_name.eq(name),
            staff_users::role.eq(role),
            // Not a usable credential: demo staff cannot sign in until a real hash is set.
            staff_users::pwd_hash.eq("!demo-account-no-password"),
        )
    })
    .collect();
    summary.staff_users = diesel::insert_into(staff_users::table)
        .values(&staff)
        .on_conflict_do_nothing()
        .execute(conn)
        .await?;

    let people: Vec<_> = (1..=5)
        .map(|n| {
            (
                customers::tenant_id.eq(t),
                customers::id.eq(CustomerId(demo(100 + n))),
                customers::phone_e164.eq(format!("+2637700000{n:02}")),
                customers::attributes.eq(json!({"demo": true, "visits": n * 3})),
            )
        })
        .collect();
    summary.customers = diesel::insert_into(customers::table)
        .values(&people)
        .on_conflict_do_nothing()
        .execute(conn)
        .await?;

    let coffee = RewardId(demo(201));
    let discount = RewardId(demo(202));
    let cashback = RewardId(demo(203));
    let catalog: Vec<_> = [
        (coffee, "Free coffee", RewardType::Voucher, "3.50", true),
        (
            discount,
            "10% off your next order",
            RewardType::Discount,
            "2.00",
            false,
        ),
        (cashback, "$5 cashback", RewardType::Cashback, "5.00", false),
    ]
    .into_iter()
    .map(|(id, name, kind, cost, uses_codes)| {
        (
            reward_catalog::tenant_id.eq(t),
            reward_catalog::id.eq(id),
            reward_catalog::name.eq(name),
            reward_catalog::type_.eq(kind),
            reward_catalog::cost_amount
                .eq(cost.parse::<bigdecimal::BigDecimal>().expect("literal")),
            reward_catalog::currency.eq("USD"),
            reward_catalog::uses_codes.eq(uses_codes),
        )
    })
    .collect();
    summary.rewards = diesel::insert_into(reward_catalog::table)
        .values(&catalog)
        .on_conflict_do_nothing()
        .execute(conn)
        .await?;

    let budget = BudgetId(demo(301));
    summary.budgets = diesel::insert_into(budgets::table)
        .values((
            budgets::tenant_id.eq(t),
            budgets::id.eq(budget),
            budgets::name.eq("Demo rewards budget"),
            budgets::currency.eq("USD"),
        ))
        .on_conflict_do_nothing()
        .execute(conn)
        .await?;
    // Through the ledger, so the cap has its entry; a second run is a replay.
    tx.budgets()
        .top_up(budget, bigdecimal::BigDecimal::from(10_000), budget.0)
        .await?;
    let conn = tx.db();

    let welcome = CampaignId(demo(401));
    let weekend = CampaignId(demo(402));
    let programme: Vec<_> = [
        (welcome, "Welcome offer", CampaignStatus::Active),
        (weekend, "Weekend double treats", CampaignStatus::Active),
    ]
    .into_iter()
    .map(|(id, name, status)| {
        (
            campaigns::tenant_id.eq(t),
            campaigns::id.eq(id),
            campaigns::name.eq(name),
            campaigns::budget_id.eq(budget),
            campaigns::status.eq(status),
        )
    })
    .collect();
    summary.campaigns = diesel::insert_into(campaigns::table)
        .values(&programme)
        .on_conflict_do_nothing()
        .execute(conn)
        .await?;

    let rule_rows: Vec<_> = [
        (
            501,
            welcome,
            "Coffee on sign-up",
            "signup",
            json!({}),
            coffee,
            Some(1),
            Some(1000),
        ),
        (
            502,
            welcome,
            "Discount on big orders",
            "purchase",
            Value::from(Condition::gte("amount", 20)),
            discount,
            Some(3),
            None,
        ),
        (
            503,
            weekend,
            "Weekend cashback",
            "purchase",
            Value::from(Condition::one_of("day", ["sat", "sun"])),
            cashback,
            Some(1),
            Some(200),
        ),
    ]
    .into_iter()
    .map(
        |(n, campaign, name, event_type, conditions, reward, per_customer, global)| {
            (
                rules::tenant_id.eq(t),
                rules::id.eq(RuleId(demo(n))),
                rules::campaign_id.eq(campaign),
                rules::name.eq(name),
                rules::event_type.eq(event_type),
                rules::conditions.eq(conditions),
                rules::reward_id.eq(reward),
                rules::per_customer_limit.eq(per_customer),
                rules::global_limit.eq(global),
            )
        },
    )
    .collect();
    summary.rules = diesel::insert_into(rules::table)
        .values(&rule_rows)
        .on_conflict_do_nothing()
        .execute(conn)
        .await?;

    // The free coffee is a voucher with a code: enough for the demo's
    // customers to each get theirs.
    let codes: Vec<String> = (1..=DEMO_CODES)
        .map(|n| format!("DEMO-COFFEE-{n:04}"))
        .collect();
    summary.voucher_codes = tx.voucher_codes().import(coffee, &codes).await?.inserted as usize;

    tx.commit().await?;
    Ok(summary)
}

/// Voucher codes the demo seeds for its free coffee.
pub const DEMO_CODES: usize = 50;
