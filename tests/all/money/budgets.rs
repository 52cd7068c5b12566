//! Budgets and the ledger.

use crate::support::money;
use diesel_async::SimpleAsyncConnection;
use loyalty_store::prelude::*;
use loyalty_store::repo::budgets::EntryType;
use loyalty_store::testing::{CampaignFixture, TestDb};
use uuid::Uuid;

/// A tenant with one budget of 100 USD, nothing reserved.
async fn shop(store: &Store) -> (TenantId, BudgetId) {
    let shop = CampaignFixture::builder()
        .hard_cap(100)
        .create(store)
        .await
        .unwrap();
    let mut tx = store.tenant(shop.tenant).await.unwrap();
    let budget = tx.budgets().get(shop.budget).await.unwrap();
    assert_eq!(
        (budget.hard_cap.clone(), budget.available()),
        (money("100"), money("100"))
    );
    (shop.tenant, shop.budget)
}

#[tokio::test]
async fn reserve_release_commit_and_top_up_keep_the_ledger_exact() {
    let db = TestDb::new().await;
    let store = db.store();
    let (tenant, budget) = shop(store).await;
    let order = |n: u128| LedgerRef::new("order", Uuid::from_u128(n));
    let mut tx = store.tenant(tenant).await.unwrap();
    let b = tx.budgets();
    let mut b = b;
    let first = b.reserve(budget, money("30"), order(1)).await.unwrap();
    assert!(first.applied);
    assert_eq!((first.reserved, first.spent), (money("30"), money("0")));
    let again = b.reserve(budget, money("30"), order(1)).await.unwrap();
    assert!(!again.applied, "a retried reservation is a replay");
    assert_eq!(again.reserved, money("30"));
    b.reserve(budget, money("50"), order(2)).await.unwrap();
    // 80 of 100 taken: 21 more would cross the cap, and refusing it leaves
    // the transaction usable.
    assert!(matches!(
        b.reserve(budget, money("21"), order(3)).await,
        Err(Error::Refused(Refusal::BudgetExhausted))
    ));
    let committed = b.commit(budget, money("30"), order(1)).await.unwrap();
    assert_eq!(
        (committed.reserved, committed.spent),
        (money("50"), money("30"))
    );
    let released = b.release(budget, money("50"), order(2)).await.unwrap();
    assert_eq!(
        (released.reserved, released.spent),
        (money("0"), money("30"))
    );
    assert!(
        !b.release(budget, money("50"), order(2))
            .await
            .unwrap()
            .applied
    );
    assert!(
        matches!(
            b.commit(budget, money("50"), order(2)).await,
            Err(Error::Refused(Refusal::AlreadySettled))
        ),
        "released, so not committable"
    );
    assert!(
        matches!(
            b.release(budget, money("5"), order(9)).await,
            Err(Error::Refused(Refusal::NotReserved))
        ),
        "never reserved"
    );
    assert!(matches!(
        b.commit(budget, money("29"), order(1)).await,
        Err(Error::Refused(Refusal::ReferenceReused))
    ));
    let topped = b
        .top_up(budget, money("20.50"), Uuid::from_u128(77))
        .await
        .unwrap();
    assert_eq!(topped.hard_cap, money("120.50"));
    assert!(
        !b.top_up(budget, money("20.50"), Uuid::from_u128(77))
            .await
            .unwrap()
            .applied
    );
    let entries: Vec<EntryType> = b
        .ledger(budget, Page::first(100))
        .await
        .unwrap()
        .into_iter()
        .map(|e| e.entry_type)
        .collect();
    assert_eq!(
        entries,
        [
            EntryType::Topup,
            EntryType::Reserve,
            EntryType::Reserve,
            EntryType::Commit,
            EntryType::Release,
            EntryType::Topup
        ]
    );
    assert!(b.verify_ledger().await.unwrap().is_empty());
    tx.commit().await.unwrap();
}

#[tokio::test]
async fn bad_amounts_and_unknown_budgets_are_refused() {
    let db = TestDb::new().await;
    let store = db.store();
    let (tenant, budget) = shop(store).await;
    let r = LedgerRef::new("order", Uuid::from_u128(1));
    let mut tx = store.tenant(tenant).await.unwrap();
    for amount in ["0", "-5", "1.001"] {
        let outcome = tx.budgets().reserve(budget, money(amount), r.clone()).await;
        assert!(
            matches!(
                outcome,
                Err(Error::InvalidInput {
                    field: "amount",
                    ..
                })
            ),
            "{amount}: {outcome:?}"
        );
    }
    let no_type = LedgerRef::new("", Uuid::from_u128(1));
    assert!(matches!(
        tx.budgets().reserve(budget, money("1"), no_type).await,
        Err(Error::InvalidInput {
            field: "ref_type",
            ..
        })
    ));
    assert!(matches!(
        tx.budgets()
            .reserve(BudgetId::new(), money("1"), r.clone())
            .await,
        Err(Error::Refused(Refusal::BudgetNotFound))
    ));
    assert!(matches!(
        tx.budgets().get(BudgetId::new()).await,
        Err(Error::NotFound)
    ));
    let nameless = NewBudget {
        name: String::new(),
        currency: "USD".parse().unwrap(),
        hard_cap: money("1"),
    };
    assert!(matches!(
        tx.budgets().create(nameless).await,
        Err(Error::InvalidInput { field: "name", .. })
    ));
    tx.commit().await.unwrap();

    let other = store
        .platform()
        .create(NewTenant::new("Other", "USD".parse().unwrap()))
        .await
        .unwrap()
        .id;
    let mut tx = store.tenant(other).await.unwrap();
    assert!(matches!(
        tx.budgets().reserve(budget, money("1"), r).await,
        Err(Error::Refused(Refusal::BudgetNotFound))
    ));
    assert!(matches!(
        tx.budgets().get(budget).await,
        Err(Error::NotFound)
    ));
    assert!(tx.budgets().verify_ledger().await.unwrap().is_empty());
}

#[tokio::test]
async fn verify_ledger_finds_a_budget_changed_behind_its_back() {
    let db = TestDb::new().await;
    let store = db.store();
    let (tenant, budget) = shop(store).await;
    let mut conn = db.admin_connection().await;
    conn.batch_execute(&format!(
        "UPDATE budgets SET reserved = 7 WHERE id = '{budget}'"
    ))
    .await
    .unwrap();
    drop(conn);
    let mut tx = store.tenant(tenant).await.unwrap();
    let mismatches = tx.budgets().verify_ledger().await.unwrap();
    assert_eq!(mismatches.len(), 1);
    assert_eq!(mismatches[0].budget_id, budget);
    assert_eq!(
        (
            mismatches[0].reserved.clone(),
            mismatches[0].ledger_reserved.clone()
        ),
        (money("7"), money("0"))
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn reserve_budget_never_overspends_under_concurrency() {
    let db = TestDb::new().await;
    let store = db.store().clone();
    let (tenant, budget) = shop(&store).await;
    // 100 of cap, 10 per call: exactly 10 of 32 concurrent calls may succeed.
    let mut tasks = Vec::new();
    for n in 0..32_u128 {
        let store = store.clone();
        tasks.push(tokio::spawn(async move {
            let mut tx = store.tenant(tenant).await.unwrap();
            let ok: bool = diesel::select(diesel::dsl::sql::<diesel::sql_types::Bool>(&format!(
                "loyalty.reserve_budget('{tenant}', '{budget}', 10, 'USD', '{}')",
                Uuid::from_u128(n)
            )))
            .get_result(tx.conn())
            .await
            .unwrap();
            tx.commit().await.unwrap();
            ok
        }));
    }
    let mut granted = 0;
    for task in tasks {
        granted += usize::from(task.await.unwrap());
    }
    assert_eq!(granted, 10);
    crate::support::assert_books_balance(&store, tenant).await;
    let mut tx = store.tenant(tenant).await.unwrap();
    let capacity: bool = diesel::select(diesel::dsl::sql::<diesel::sql_types::Bool>(&format!(
        "loyalty.check_budget_capacity('{tenant}', '{budget}', 0.01)"
    )))
    .get_result(tx.conn())
    .await
    .unwrap();
    assert!(!capacity, "the budget is full");
}

use diesel_async::RunQueryDsl;

#[tokio::test]
async fn a_reference_booked_on_one_budget_is_not_a_replay_on_another() {
    let db = TestDb::new().await;
    let store = db.store();
    let (tenant, first) = shop(store).await;
    let mut tx = store.tenant(tenant).await.unwrap();
    let second = tx
        .budgets()
        .create(NewBudget {
            name: "Second".into(),
            currency: "USD".parse().unwrap(),
            hard_cap: money("10"),
        })
        .await
        .unwrap()
        .id;
    let grant = Uuid::from_u128(42);
    assert!(
        tx.budgets()
            .top_up(first, money("5"), grant)
            .await
            .unwrap()
            .applied
    );
    let elsewhere = tx.budgets().top_up(second, money("5"), grant).await;
    assert!(
        matches!(elsewhere, Err(Error::Refused(Refusal::ReferenceReused))),
        "{elsewhere:?}"
    );
    assert_eq!(
        tx.budgets().get(second).await.unwrap().hard_cap,
        money("10")
    );
    tx.commit().await.unwrap();
}

/// Money moves only through the SQL layer's functions: SQL sent through a
/// guard cannot set a budget's figures, a rule's counter, an issuance's
/// status or a ledger entry, whatever the login.
#[tokio::test]
async fn money_moves_only_through_the_money_functions() {
    let db = TestDb::new().await;
    let shop = CampaignFixture::builder()
        .hard_cap(5)
        .global_limit(10)
        .customers(1)
        .create(db.store())
        .await
        .unwrap();
    let issued = crate::support::issue(db.store(), &shop, shop.customers[0], "k")
        .await
        .unwrap();
    let before = crate::support::budget(db.store(), &shop).await;
    for (login, store) in crate::support::logins(&db).await {
        for attempt in [
            "UPDATE budgets SET hard_cap = hard_cap + 1000000".to_owned(),
            "UPDATE budgets SET reserved = 0".to_owned(),
            "INSERT INTO budgets (tenant_id, name, currency, hard_cap) \
             SELECT tenant_id, 'Free money', 'USD', 1000000 FROM budgets"
                .to_owned(),
            "UPDATE rules SET issued_count = 0".to_owned(),
            format!(
                "UPDATE issuances SET status = 'cancelled' WHERE id = '{}'",
                issued.issuance.id
            ),
            format!(
                "INSERT INTO ledger_entries (tenant_id, budget_id, entry_type, amount, currency, \
                                             ref_type, ref_id, batch_id) \
                 VALUES ('{}', '{}', 'reserve', 1, 'USD', 'issuance', gen_random_uuid(), \
                         gen_random_uuid())",
                shop.tenant, shop.budget
            ),
        ] {
            crate::support::assert_denied(&store, shop.tenant, &attempt, login).await;
        }
    }
    assert_eq!(crate::support::budget(db.store(), &shop).await, before);
    crate::support::assert_books_balance(db.store(), shop.tenant).await;
}

#[tokio::test]
async fn budgets_are_listed_newest_first() {
    let db = TestDb::new().await;
    let store = db.store();
    let (tenant, first) = shop(store).await;
    let mut tx = store.tenant(tenant).await.unwrap();
    let second = tx
        .budgets()
        .create(NewBudget {
            name: "Second".into(),
            currency: "USD".parse().unwrap(),
            hard_cap: money("5"),
        })
        .await
        .unwrap();
    let listed: Vec<_> = tx
        .budgets()
        .list(Page::first(10))
        .await
        .unwrap()
        .into_iter()
        .map(|b| b.id)
        .collect();
    assert_eq!(listed, [second.id, first]);
    let page_two = tx
        .budgets()
        .list(Page {
            offset: 1,
            limit: 1,
        })
        .await
        .unwrap();
    assert_eq!(page_two.len(), 1);
    assert_eq!(page_two[0].id, first);
}
