//! Staff users, customers and consents.

use crate::support::{invalid_field, two_tenants};
use chrono::{Duration, Utc};
use diesel_async::SimpleAsyncConnection;
use loyalty_store::prelude::*;
use loyalty_store::repo::staff_users::StaffStatus;
use loyalty_store::testing::TestDb;
use serde_json::json;

fn staff(email: &str, role: StaffRole) -> NewStaffUser {
    NewStaffUser {
        email: email.into(),
        full_name: "Ada Lovelace".into(),
        role,
        pwd_hash: "$argon2id$v=19$secret-hash".into(),
    }
}

#[tokio::test]
async fn staff_users_create_find_list_and_change_role_with_audit() {
    let db = TestDb::new().await;
    let store = db.store();
    let (a, _) = two_tenants(store).await;
    let mut tx = store.tenant(a).await.unwrap();
    let ada = tx
        .staff_users()
        .create(staff("Ada@Example.com", StaffRole::Admin))
        .await
        .unwrap();
    assert_eq!(ada.status, StaffStatus::Active);
    assert_eq!(tx.staff_users().get(ada.id).await.unwrap(), ada);
    let found = tx
        .staff_users()
        .find_by_email("ada@EXAMPLE.com")
        .await
        .unwrap();
    assert_eq!(
        found.map(|s| s.id),
        Some(ada.id),
        "email lookup ignores case"
    );
    assert!(
        tx.staff_users()
            .find_by_email("nobody@example.com")
            .await
            .unwrap()
            .is_none()
    );
    let bob = tx
        .staff_users()
        .create(staff("bob@example.com", StaffRole::Viewer))
        .await
        .unwrap();
    let listed: Vec<_> = tx
        .staff_users()
        .list(Page::first(10))
        .await
        .unwrap()
        .into_iter()
        .map(|s| s.id)
        .collect();
    assert_eq!(listed, [bob.id, ada.id], "newest first");
    assert_eq!(
        tx.staff_users()
            .list(Page {
                limit: 10,
                offset: 1
            })
            .await
            .unwrap()
            .len(),
        1
    );
    tx.commit().await.unwrap();

    let mut tx = store.tenant_as(a, Actor::Staff(ada.id)).await.unwrap();
    let promoted = tx
        .staff_users()
        .update_role(bob.id, StaffRole::Owner)
        .await
        .unwrap();
    assert_eq!(promoted.role, StaffRole::Owner);
    let range = TimeRange::new(
        Utc::now() - Duration::hours(1),
        Utc::now() + Duration::hours(1),
    )
    .unwrap();
    let audit = tx
        .audit_logs()
        .list(range, KeysetPage::first(10))
        .await
        .unwrap();
    assert_eq!(audit.len(), 1);
    assert_eq!(audit[0].action, "staff.role_changed");
    assert_eq!(audit[0].actor_type, "staff");
    assert_eq!(audit[0].actor_id, Some(ada.id.0));
    assert_eq!(audit[0].resource_id, Some(bob.id.0));
    assert_eq!(audit[0].details, json!({"role": "owner"}));
    tx.commit().await.unwrap();
}

#[tokio::test]
async fn staff_users_errors() {
    let db = TestDb::new().await;
    let store = db.store();
    let (a, b) = two_tenants(store).await;
    let mut tx = store.tenant(a).await.unwrap();
    let ada = tx
        .staff_users()
        .create(staff("ada@example.com", StaffRole::Admin))
        .await
        .unwrap();
    assert!(matches!(
        tx.staff_users().get(StaffUserId::new()).await,
        Err(Error::NotFound)
    ));
    assert!(matches!(
        tx.staff_users()
            .update_role(StaffUserId::new(), StaffRole::Owner)
            .await,
        Err(Error::NotFound)
    ));
    assert_eq!(
        invalid_field(
            tx.staff_users()
                .create(staff("not-an-email", StaffRole::Staff))
                .await
        ),
        "email"
    );
    let mut nameless = staff("x@example.com", StaffRole::Staff);
    nameless.full_name = String::new();
    assert_eq!(
        invalid_field(tx.staff_users().create(nameless).await),
        "full_name"
    );
    let mut hashless = staff("x@example.com", StaffRole::Staff);
    hashless.pwd_hash = String::new();
    assert_eq!(
        invalid_field(tx.staff_users().create(hashless).await),
        "pwd_hash"
    );
    assert_eq!(
        invalid_field(tx.staff_users().list(Page::first(0)).await),
        "limit"
    );
    tx.commit().await.unwrap();

    let mut tx = store.tenant(a).await.unwrap();
    let duplicate = tx
        .staff_users()
        .create(staff("ADA@example.com", StaffRole::Staff))
        .await;
    assert!(
        matches!(duplicate, Err(Error::Conflict { ref constraint }) if constraint == "staff_users_tenant_email_key")
    );
    drop(tx);

    // Another tenant may use the same email and cannot see A's staff.
    let mut tx = store.tenant(b).await.unwrap();
    tx.staff_users()
        .create(staff("ada@example.com", StaffRole::Owner))
        .await
        .unwrap();
    assert!(matches!(
        tx.staff_users().get(ada.id).await,
        Err(Error::NotFound)
    ));
    assert!(matches!(
        tx.staff_users()
            .update_role(ada.id, StaffRole::Viewer)
            .await,
        Err(Error::NotFound)
    ));
    tx.commit().await.unwrap();
}

#[test]
fn staff_password_hash_is_never_printed_or_serialized() {
    let new = staff("ada@example.com", StaffRole::Admin);
    assert!(!format!("{new:?}").contains("secret-hash"));
    let row = loyalty_store::repo::staff_users::StaffUser {
        tenant_id: TenantId::new(),
        id: StaffUserId::new(),
        email: new.email,
        full_name: new.full_name,
        role: new.role,
        pwd_hash: new.pwd_hash,
        status: StaffStatus::Active,
        created_at: Utc::now(),
        updated_at: Utc::now(),
    };
    assert!(!format!("{row:?}").contains("secret-hash"));
    assert!(!serde_json::to_string(&row).unwrap().contains("secret-hash"));
}

#[tokio::test]
async fn customers_create_get_find_and_update_status() {
    let db = TestDb::new().await;
    let store = db.store();
    let (a, b) = two_tenants(store).await;
    let mut tx = store.tenant(a).await.unwrap();
    let ada = tx
        .customers()
        .create(NewCustomer::new("+263771234567").attributes(json!({"tier": "gold"})))
        .await
        .unwrap();
    assert_eq!(ada.status, CustomerStatus::Active);
    assert_eq!(tx.customers().get(ada.id).await.unwrap(), ada);
    assert_eq!(
        tx.customers().find_by_phone("+263771234567").await.unwrap(),
        Some(ada.clone())
    );
    assert_eq!(
        tx.customers().find_by_phone("+263771234568").await.unwrap(),
        None
    );
    let blocked = tx
        .customers()
        .update_status(ada.id, CustomerStatus::Blocked)
        .await
        .unwrap();
    assert_eq!(blocked.status, CustomerStatus::Blocked);
    assert!(matches!(
        tx.customers().get(CustomerId::new()).await,
        Err(Error::NotFound)
    ));
    assert!(matches!(
        tx.customers()
            .update_status(CustomerId::new(), CustomerStatus::Active)
            .await,
        Err(Error::NotFound)
    ));
    assert_eq!(
        invalid_field(tx.customers().create(NewCustomer::new("0771234567")).await),
        "phone_e164"
    );
    assert_eq!(
        invalid_field(
            tx.customers()
                .create(NewCustomer::new("+263771234569").attributes(json!([1])))
                .await
        ),
        "attributes"
    );
    assert_eq!(
        invalid_field(tx.customers().find_by_phone("not a phone").await),
        "phone_e164"
    );
    tx.commit().await.unwrap();

    let mut tx = store.tenant(a).await.unwrap();
    let duplicate = tx
        .customers()
        .create(NewCustomer::new("+263771234567"))
        .await;
    assert!(
        matches!(duplicate, Err(Error::Conflict { ref constraint }) if constraint == "customers_tenant_phone_key")
    );
    drop(tx);

    let mut tx = store.tenant(b).await.unwrap();
    assert!(matches!(
        tx.customers().get(ada.id).await,
        Err(Error::NotFound)
    ));
    assert_eq!(
        tx.customers().find_by_phone("+263771234567").await.unwrap(),
        None
    );
    assert!(matches!(
        tx.customers()
            .update_status(ada.id, CustomerStatus::Erased)
            .await,
        Err(Error::NotFound)
    ));
    tx.customers()
        .create(NewCustomer::new("+263771234567"))
        .await
        .unwrap();
    tx.commit().await.unwrap();
}

#[tokio::test]
async fn customers_list_by_keyset_and_change_attributes() {
    let db = TestDb::new().await;
    let store = db.store();
    let (a, b) = two_tenants(store).await;
    let mut tx = store.tenant(a).await.unwrap();
    let mut made = Vec::new();
    for n in 0..5 {
        made.push(
            tx.customers()
                .create(NewCustomer::new(format!("+1555000100{n}")))
                .await
                .unwrap()
                .id,
        );
    }
    made.reverse();
    let first = tx.customers().list(KeysetPage::first(3)).await.unwrap();
    let last = first.last().unwrap();
    let rest = tx
        .customers()
        .list(KeysetPage::after(
            loyalty_store::Cursor {
                at: last.created_at,
                id: last.id,
            },
            3,
        ))
        .await
        .unwrap();
    let listed: Vec<_> = first.iter().chain(&rest).map(|c| c.id).collect();
    assert_eq!(listed, made, "newest first, each once");
    let found: Vec<_> = tx
        .customers()
        .search_by_phone("+155500010", 10)
        .await
        .unwrap()
        .into_iter()
        .map(|c| c.phone_e164.unwrap())
        .collect();
    assert_eq!(
        found,
        (0..5)
            .map(|n| format!("+1555000100{n}"))
            .collect::<Vec<_>>(),
        "in number order"
    );
    assert_eq!(
        tx.customers()
            .search_by_phone("+1555000100", 2)
            .await
            .unwrap()
            .len(),
        2
    );
    assert!(
        tx.customers()
            .search_by_phone("+1556", 10)
            .await
            .unwrap()
            .is_empty()
    );
    for bad in ["", "1555", "+15a", "+1234567890123456"] {
        assert_eq!(
            invalid_field(tx.customers().search_by_phone(bad, 10).await),
            "prefix",
            "{bad:?}"
        );
    }
    let gold = tx
        .customers()
        .update_attributes(made[0], json!({"tier": "gold"}))
        .await
        .unwrap();
    assert_eq!(gold.attributes, json!({"tier": "gold"}));
    assert_eq!(
        invalid_field(tx.customers().update_attributes(made[0], json!([1])).await),
        "attributes"
    );
    tx.commit().await.unwrap();
    let mut tx = store.tenant(b).await.unwrap();
    assert!(
        tx.customers()
            .list(KeysetPage::first(10))
            .await
            .unwrap()
            .is_empty()
    );
    assert!(
        tx.customers()
            .search_by_phone("+1", 10)
            .await
            .unwrap()
            .is_empty()
    );
    assert!(matches!(
        tx.customers().update_attributes(made[0], json!({})).await,
        Err(Error::NotFound)
    ));
}

#[tokio::test]
async fn erasure_removes_personal_data_and_keeps_the_books() {
    let db = TestDb::new().await;
    let store = db.store();
    let p = loyalty_store::testing::CampaignFixture::builder()
        .customers(2)
        .create(store)
        .await
        .unwrap();
    let (ada, bo) = (p.customers[0], p.customers[1]);
    crate::support::issue(store, &p, ada, "before-erasure")
        .await
        .unwrap();
    let mut tx = store.tenant_as(p.tenant, Actor::Api).await.unwrap();
    let phone = tx.customers().get(ada).await.unwrap().phone_e164.unwrap();
    tx.customers()
        .update_attributes(ada, json!({"name": "Ada"}))
        .await
        .unwrap();
    for (wa_id, customer_id) in [("wa-ada", Some(ada)), ("wa-ada-unlinked", None)] {
        tx.wa_sessions()
            .upsert(NewWaSession {
                wa_id: wa_id.into(),
                customer_id,
                phone_e164: phone.clone(),
                state: "menu".into(),
            })
            .await
            .unwrap();
    }
    let erased = tx.customers().erase(ada).await.unwrap();
    assert_eq!(erased.status, CustomerStatus::Erased);
    assert_eq!(erased.phone_e164, None);
    assert_eq!(erased.attributes, json!({}));
    assert!(erased.erased_at.is_some());
    assert_eq!(tx.customers().find_by_phone(&phone).await.unwrap(), None);
    assert!(
        tx.customers()
            .search_by_phone(&phone, 10)
            .await
            .unwrap()
            .is_empty()
    );
    for wa_id in ["wa-ada", "wa-ada-unlinked"] {
        assert!(matches!(
            tx.wa_sessions().get(wa_id).await,
            Err(Error::NotFound)
        ));
    }
    // Final: again is a replay, and no status change brings it back.
    assert_eq!(tx.customers().erase(ada).await.unwrap(), erased);
    tx.commit().await.unwrap();
    // Not through the repository, nor through the guard's own SQL.
    let mut tx = store.tenant(p.tenant).await.unwrap();
    assert!(matches!(
        tx.customers()
            .update_status(ada, CustomerStatus::Active)
            .await,
        Err(Error::Refused(Refusal::InvalidArgument { .. }))
    ));
    drop(tx);
    let mut tx = store.tenant(p.tenant).await.unwrap();
    let undo = tx
        .conn()
        .batch_execute(&format!(
            "UPDATE customers SET status = 'active', phone_e164 = '{phone}', erased_at = NULL \
              WHERE id = '{ada}'"
        ))
        .await;
    assert!(undo.is_err(), "an erasure was undone");
    drop(tx);
    let mut tx = store.tenant(p.tenant).await.unwrap();
    assert!(matches!(
        tx.customers()
            .update_status(bo, CustomerStatus::Erased)
            .await,
        Err(Error::CheckViolation { .. })
    ));
    drop(tx);
    let mut tx = store.tenant(p.tenant).await.unwrap();
    assert!(matches!(
        tx.customers().erase(CustomerId::new()).await,
        Err(Error::NotFound)
    ));
    // The number is free for someone new.
    tx.customers()
        .create(NewCustomer::new(phone))
        .await
        .unwrap();
    let audited: Vec<_> = crate::support::recent_audit(&mut tx)
        .await
        .into_iter()
        .filter(|entry| entry.action == "customer.erased")
        .collect();
    assert_eq!(audited.len(), 1, "one erasure, audited once");
    assert_eq!(audited[0].resource_id, Some(ada.0));
    assert_eq!(audited[0].actor_type, "api");
    tx.commit().await.unwrap();
    // The money history stays, and balances.
    let mut tx = store.tenant(p.tenant).await.unwrap();
    let kept = tx
        .issuances()
        .find_by_key("before-erasure")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(kept.customer_id, ada);
    tx.commit().await.unwrap();
    crate::support::assert_books_balance(store, p.tenant).await;
    assert!(matches!(
        crate::support::issue(store, &p, ada, "after-erasure").await,
        Err(Error::Refused(Refusal::CustomerInactive {
            status: CustomerStatus::Erased
        }))
    ));
}

#[tokio::test]
async fn staff_users_are_disabled_with_audit() {
    let db = TestDb::new().await;
    let store = db.store();
    let (a, _) = two_tenants(store).await;
    let mut tx = store.tenant(a).await.unwrap();
    let ada = tx
        .staff_users()
        .create(staff("ada@example.com", StaffRole::Staff))
        .await
        .unwrap();
    let off = tx
        .staff_users()
        .set_status(ada.id, StaffStatus::Disabled)
        .await
        .unwrap();
    assert_eq!(off.status, StaffStatus::Disabled);
    let on = tx
        .staff_users()
        .set_status(ada.id, StaffStatus::Active)
        .await
        .unwrap();
    assert_eq!(on.status, StaffStatus::Active);
    let actions: Vec<_> = crate::support::recent_audit(&mut tx)
        .await
        .into_iter()
        .map(|entry| entry.action)
        .collect();
    assert_eq!(actions, ["staff.enabled", "staff.disabled"]);
    assert!(matches!(
        tx.staff_users()
            .set_status(StaffUserId::new(), StaffStatus::Disabled)
            .await,
        Err(Error::NotFound)
    ));
}

#[tokio::test]
async fn consents_keep_history_and_the_latest_wins() {
    let db = TestDb::new().await;
    let store = db.store();
    let (a, b) = two_tenants(store).await;
    let mut tx = store.tenant(a).await.unwrap();
    let ada = tx
        .customers()
        .create(NewCustomer::new("+263771234567"))
        .await
        .unwrap();
    let now = Utc::now();
    let consent = |granted, minutes_ago, channel| NewConsent {
        customer_id: ada.id,
        channel,
        purpose: Purpose::Marketing,
        granted,
        occurred_at: now - Duration::minutes(minutes_ago),
        source: Some("whatsapp-optin".into()),
    };
    let granted = tx
        .consents()
        .record(consent(true, 30, Channel::Whatsapp))
        .await
        .unwrap();
    let withdrawn = tx
        .consents()
        .record(consent(false, 10, Channel::Whatsapp))
        .await
        .unwrap();
    // Recorded late, but it happened first: it must not become the latest.
    let late = tx
        .consents()
        .record(consent(true, 60, Channel::Whatsapp))
        .await
        .unwrap();
    let sms = tx
        .consents()
        .record(consent(true, 5, Channel::Sms))
        .await
        .unwrap();

    let latest = tx
        .consents()
        .latest(ada.id, Channel::Whatsapp, Purpose::Marketing)
        .await
        .unwrap();
    assert_eq!(latest.map(|c| c.id), Some(withdrawn.id));
    assert_eq!(
        tx.consents()
            .latest(ada.id, Channel::Email, Purpose::Marketing)
            .await
            .unwrap(),
        None
    );
    let history: Vec<_> = tx
        .consents()
        .history(ada.id)
        .await
        .unwrap()
        .into_iter()
        .map(|c| c.id)
        .collect();
    assert_eq!(history, [sms.id, withdrawn.id, granted.id, late.id]);

    let mut bad_source = consent(true, 1, Channel::Email);
    bad_source.source = Some("x".repeat(101));
    assert_eq!(
        invalid_field(tx.consents().record(bad_source).await),
        "source"
    );
    tx.commit().await.unwrap();

    let mut tx = store.tenant(a).await.unwrap();
    let mut unknown_customer = consent(true, 1, Channel::Email);
    unknown_customer.customer_id = CustomerId::new();
    assert!(matches!(
        tx.consents().record(unknown_customer).await,
        Err(Error::MissingReference { .. })
    ));
    drop(tx);

    let mut tx = store.tenant(b).await.unwrap();
    assert!(tx.consents().history(ada.id).await.unwrap().is_empty());
    assert_eq!(
        tx.consents()
            .latest(ada.id, Channel::Whatsapp, Purpose::Marketing)
            .await
            .unwrap(),
        None
    );
    // B cannot record consent for A's customer: the composite key refuses it.
    let cross = tx.consents().record(consent(true, 1, Channel::Sms)).await;
    assert!(
        matches!(cross, Err(Error::MissingReference { .. })),
        "{cross:?}"
    );
}

/// A service's unit tests can swap the database for a fake of the trait.
mod fake {
    use super::*;
    use loyalty_store::repo::customers::Customer;
    use std::collections::HashMap;

    #[derive(Default)]
    struct FakeCustomers(HashMap<CustomerId, Customer>);

    impl CustomerRepository for FakeCustomers {
        async fn create(&mut self, new: NewCustomer) -> Result<Customer> {
            let customer = Customer {
                tenant_id: TenantId::new(),
                id: CustomerId::new(),
                phone_e164: Some(new.phone_e164),
                status: CustomerStatus::Active,
                attributes: new.attributes,
                created_at: Utc::now(),
                updated_at: Utc::now(),
                erased_at: None,
            };
            self.0.insert(customer.id, customer.clone());
            Ok(customer)
        }
        async fn get(&mut self, id: CustomerId) -> Result<Customer> {
            self.0.get(&id).cloned().ok_or(Error::NotFound)
        }
        async fn find_by_phone(&mut self, phone: &str) -> Result<Option<Customer>> {
            Ok(self
                .0
                .values()
                .find(|c| c.phone_e164.as_deref() == Some(phone))
                .cloned())
        }
        async fn search_by_phone(&mut self, prefix: &str, limit: u32) -> Result<Vec<Customer>> {
            let mut found: Vec<Customer> = self
                .0
                .values()
                .filter(|c| {
                    c.phone_e164
                        .as_deref()
                        .is_some_and(|p| p.starts_with(prefix))
                })
                .cloned()
                .collect();
            found.sort_by(|a, b| a.phone_e164.cmp(&b.phone_e164));
            Ok(found.into_iter().take(limit as usize).collect())
        }
        async fn list(&mut self, page: KeysetPage<CustomerId>) -> Result<Vec<Customer>> {
            let mut all: Vec<Customer> = self.0.values().cloned().collect();
            all.sort_by_key(|c| std::cmp::Reverse((c.created_at, c.id)));
            Ok(all.into_iter().take(page.limit as usize).collect())
        }
        async fn update_attributes(
            &mut self,
            id: CustomerId,
            attributes: serde_json::Value,
        ) -> Result<Customer> {
            let customer = self.0.get_mut(&id).ok_or(Error::NotFound)?;
            customer.attributes = attributes;
            Ok(customer.clone())
        }
        async fn erase(&mut self, id: CustomerId) -> Result<Customer> {
            let customer = self.0.get_mut(&id).ok_or(Error::NotFound)?;
            customer.phone_e164 = None;
            customer.status = CustomerStatus::Erased;
            customer.erased_at.get_or_insert_with(Utc::now);
            Ok(customer.clone())
        }
        async fn update_status(
            &mut self,
            id: CustomerId,
            status: CustomerStatus,
        ) -> Result<Customer> {
            let customer = self.0.get_mut(&id).ok_or(Error::NotFound)?;
            customer.status = status;
            Ok(customer.clone())
        }
    }

    /// Service code written against the trait, not the guard.
    async fn block_by_phone(repo: &mut impl CustomerRepository, phone: &str) -> Result<bool> {
        match repo.find_by_phone(phone).await? {
            Some(customer) => Ok(repo
                .update_status(customer.id, CustomerStatus::Blocked)
                .await?
                .status
                == CustomerStatus::Blocked),
            None => Ok(false),
        }
    }

    #[tokio::test]
    async fn service_code_runs_on_a_fake_and_on_the_database_alike() {
        let mut fake = FakeCustomers::default();
        fake.create(NewCustomer::new("+15550000001")).await.unwrap();
        assert!(block_by_phone(&mut fake, "+15550000001").await.unwrap());

        let db = TestDb::new().await;
        let (a, _) = two_tenants(db.store()).await;
        let mut tx = db.store().tenant(a).await.unwrap();
        tx.customers()
            .create(NewCustomer::new("+15550000001"))
            .await
            .unwrap();
        assert!(
            block_by_phone(&mut tx.customers(), "+15550000001")
                .await
                .unwrap()
        );
        assert!(
            !block_by_phone(&mut tx.customers(), "+15550000002")
                .await
                .unwrap()
        );
    }
}
