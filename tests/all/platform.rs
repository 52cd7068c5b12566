//! Tenant provisioning through the platform scope.

use loyalty_store::prelude::*;
use loyalty_store::testing::TestDb;
use serde_json::json;

fn usd() -> Currency {
    "USD".parse().unwrap()
}

#[tokio::test]
async fn create_get_and_update_theme() {
    let db = TestDb::new().await;
    let platform = db.store().platform();
    let created = platform
        .create(
            NewTenant::new("Acme", usd())
                .country("ZW")
                .theme(json!({"primary": "#123456"})),
        )
        .await
        .unwrap();
    assert_eq!(created.status, TenantStatus::Active);
    assert_eq!(created.country_code.as_deref(), Some("ZW"));
    assert_eq!(platform.get(created.id).await.unwrap(), created);

    let themed = platform
        .update_theme(created.id, json!({"primary": "#ff0000"}))
        .await
        .unwrap();
    assert_eq!(themed.theme, json!({"primary": "#ff0000"}));
    assert!(
        themed.updated_at > created.updated_at,
        "trigger keeps updated_at"
    );
    assert_eq!(themed.created_at, created.created_at);
}

#[tokio::test]
async fn missing_tenants_are_not_found() {
    let db = TestDb::new().await;
    let platform = db.store().platform();
    let ghost = TenantId::new();
    assert!(matches!(platform.get(ghost).await, Err(Error::NotFound)));
    assert!(matches!(
        platform.update_theme(ghost, json!({})).await,
        Err(Error::NotFound)
    ));
    assert!(matches!(
        platform.set_status(ghost, TenantStatus::Suspended).await,
        Err(Error::NotFound)
    ));
}

#[tokio::test]
async fn duplicate_ids_conflict() {
    let db = TestDb::new().await;
    let platform = db.store().platform();
    let first = NewTenant::new("Acme", usd());
    platform.create(first.clone()).await.unwrap();
    let again = platform.create(first).await;
    assert!(
        matches!(again, Err(Error::Conflict { ref constraint }) if constraint == "tenants_pkey")
    );
}

#[tokio::test]
async fn invalid_input_is_refused_before_writing() {
    let db = TestDb::new().await;
    let platform = db.store().platform();
    let cases = [
        (NewTenant::new("", usd()), "name"),
        (NewTenant::new("x".repeat(201), usd()), "name"),
        (NewTenant::new("Acme", usd()).country("zw"), "country_code"),
        (NewTenant::new("Acme", usd()).country("ZWE"), "country_code"),
        (
            NewTenant::new("Acme", usd()).theme(json!(["not", "an", "object"])),
            "theme",
        ),
    ];
    for (input, field) in cases {
        let outcome = platform.create(input).await;
        assert!(
            matches!(outcome, Err(Error::InvalidInput { field: f, .. }) if f == field),
            "{field}: {outcome:?}"
        );
    }
    let acme = platform
        .create(NewTenant::new("Acme", usd()))
        .await
        .unwrap();
    assert!(matches!(
        platform.update_theme(acme.id, json!("dark")).await,
        Err(Error::InvalidInput { field: "theme", .. })
    ));
    let all = platform
        .list(TenantPage {
            after: None,
            limit: 100,
        })
        .await
        .unwrap();
    assert_eq!(all.len(), 1, "only the valid tenant was written");
}

#[tokio::test]
async fn the_database_enforces_the_same_rules() {
    use diesel_async::SimpleAsyncConnection;
    let db = TestDb::new().await;
    let mut conn = db.admin_connection().await;
    for bad in [
        "INSERT INTO tenants (name, default_ccy) VALUES ('', 'USD')",
        "INSERT INTO tenants (name, default_ccy) VALUES ('Acme', 'XXX')",
        "INSERT INTO tenants (name, default_ccy, country_code) VALUES ('Acme', 'USD', 'zw')",
        "INSERT INTO tenants (name, default_ccy, theme) VALUES ('Acme', 'USD', '[]')",
        "INSERT INTO tenants (name, default_ccy, status) VALUES ('Acme', 'USD', 'gone')",
    ] {
        let outcome = conn.batch_execute(bad).await.map_err(Error::from);
        assert!(
            matches!(outcome, Err(Error::CheckViolation { .. })),
            "{bad}: {outcome:?}"
        );
    }
}

#[tokio::test]
async fn list_pages_by_id() {
    let db = TestDb::new().await;
    let platform = db.store().platform();
    let mut created = Vec::new();
    for n in 0..5 {
        created.push(
            platform
                .create(NewTenant::new(format!("T{n}"), usd()))
                .await
                .unwrap()
                .id,
        );
    }
    let first = platform
        .list(TenantPage {
            after: None,
            limit: 2,
        })
        .await
        .unwrap();
    let second = platform
        .list(TenantPage {
            after: Some(first[1].id),
            limit: 2,
        })
        .await
        .unwrap();
    let third = platform
        .list(TenantPage {
            after: Some(second[1].id),
            limit: 2,
        })
        .await
        .unwrap();
    let seen: Vec<TenantId> = first
        .iter()
        .chain(&second)
        .chain(&third)
        .map(|t| t.id)
        .collect();
    assert_eq!(seen, created, "v7 ids list in creation order");
    assert!(matches!(
        platform
            .list(TenantPage {
                after: None,
                limit: 0
            })
            .await,
        Err(Error::InvalidInput { field: "limit", .. })
    ));
}

#[test]
fn tenant_rows_round_trip_through_serde() {
    let tenant = NewTenant::new("Acme", usd());
    let json = serde_json::to_value(&tenant).unwrap();
    assert_eq!(json["default_ccy"], "USD");
    let back: NewTenant = serde_json::from_value(json).unwrap();
    assert_eq!(back, tenant);
    assert!(
        serde_json::from_value::<NewTenant>(json!({
            "id": tenant.id, "name": "x", "country_code": null, "default_ccy": "usd", "theme": {}
        }))
        .is_err()
    );
}
