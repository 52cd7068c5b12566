//! `Store::connect` refuses a login that could leave tenant isolation, and
//! says why; the loudly named opt-out admits it.

use loyalty_store::testing::TestDb;
use loyalty_store::{Config, Error, LoginPrivilege, Store};

use crate::support::{as_admin, ensure_login, login_config};

async fn refusal(config: Config) -> (String, Vec<LoginPrivilege>) {
    match Store::connect(config).await {
        Err(Error::PrivilegedLogin { login, privileges }) => (login, privileges),
        other => panic!("expected PrivilegedLogin, got {other:?}"),
    }
}

#[tokio::test]
async fn connect_refuses_every_login_that_can_leave_isolation() {
    let db = TestDb::new().await;
    ensure_login(
        &db,
        "loyalty_test_bypassrls",
        "NOINHERIT BYPASSRLS",
        &["loyalty_app"],
    )
    .await;
    ensure_login(
        &db,
        "loyalty_test_createrole",
        "NOINHERIT CREATEROLE",
        &["loyalty_app"],
    )
    .await;
    ensure_login(
        &db,
        "loyalty_test_read_all",
        "NOINHERIT",
        &["loyalty_app", "pg_read_all_data"],
    )
    .await;
    // NOINHERIT does not help: a member may still SET ROLE to the owner.
    ensure_login(
        &db,
        "loyalty_test_owner_member",
        "NOINHERIT",
        &["loyalty_app", "loyalty_test_migrator"],
    )
    .await;
    ensure_login(&db, "loyalty_test_creator", "NOINHERIT", &["loyalty_app"]).await;
    as_admin(&db, "GRANT CREATE ON SCHEMA public TO loyalty_test_creator").await;
    ensure_login(&db, "loyalty_test_temp", "NOINHERIT", &["loyalty_app"]).await;
    as_admin(
        &db,
        &format!(
            "GRANT TEMPORARY ON DATABASE {} TO loyalty_test_temp",
            db.name()
        ),
    )
    .await;

    let superuser = Config::from_url(&db.superuser_url()).unwrap();
    let (login, privileges) = refusal(superuser).await;
    assert_eq!(login, "postgres");
    assert!(privileges.contains(&LoginPrivilege::Superuser {
        role: "postgres".into()
    }));

    let (login, privileges) = refusal(Config::from_url(&db.migrator_url()).unwrap()).await;
    assert_eq!(login, "loyalty_test_migrator");
    for object in [
        "schema loyalty".to_owned(),
        "schema loyalty_secret".to_owned(),
        "table public.customers".to_owned(),
        "table loyalty_secret.guard_key".to_owned(),
        "function current_tenant_id()".to_owned(),
    ] {
        let owner = LoginPrivilege::Owner {
            role: "loyalty_test_migrator".into(),
            object,
        };
        assert!(privileges.contains(&owner), "{owner:?} in {privileges:?}");
    }

    let cases = [
        (
            "loyalty_test_bypassrls",
            LoginPrivilege::BypassRls {
                role: "loyalty_test_bypassrls".into(),
            },
        ),
        (
            "loyalty_test_createrole",
            LoginPrivilege::CreateRole {
                role: "loyalty_test_createrole".into(),
            },
        ),
        (
            "loyalty_test_read_all",
            LoginPrivilege::PredefinedRole {
                role: "pg_read_all_data".into(),
            },
        ),
        (
            "loyalty_test_owner_member",
            LoginPrivilege::Owner {
                role: "loyalty_test_migrator".into(),
                object: "table public.customers".into(),
            },
        ),
        (
            "loyalty_test_temp",
            LoginPrivilege::Temporary {
                role: "loyalty_test_temp".into(),
            },
        ),
        (
            "loyalty_test_creator",
            LoginPrivilege::Create {
                role: "loyalty_test_creator".into(),
                schema: "public".into(),
            },
        ),
    ];
    for (name, expected) in cases {
        let (login, privileges) = refusal(login_config(&db, name)).await;
        assert_eq!(login, name);
        assert!(privileges.contains(&expected), "{name}: {privileges:?}");
    }
}

#[tokio::test]
async fn the_refusal_names_the_login_and_what_it_can_do() {
    let db = TestDb::new().await;
    let err = Store::connect(Config::from_url(&db.superuser_url()).unwrap())
        .await
        .unwrap_err();
    let message = err.to_string();
    assert!(message.contains("login postgres"), "{message}");
    assert!(message.contains("postgres is a superuser"), "{message}");
}

#[tokio::test]
async fn the_opt_out_admits_a_privileged_login_and_the_service_login_needs_none() {
    let db = TestDb::new().await;
    let admitted = Store::connect(
        Config::from_url(&db.superuser_url())
            .unwrap()
            .danger_allow_privileged_login(),
    )
    .await;
    assert!(admitted.is_ok(), "{admitted:?}");
    let service = Store::connect(db.config()).await;
    assert!(service.is_ok(), "{service:?}");
}

/// A database made before PostgreSQL 15 grants `CREATE` on `public` to
/// PUBLIC: the service login is refused until `migrate()` takes it away.
#[tokio::test]
async fn migrate_takes_create_on_public_away_from_public() {
    let db = TestDb::new().await;
    as_admin(&db, "GRANT CREATE ON SCHEMA public TO PUBLIC").await;
    let (_, privileges) = refusal(db.config()).await;
    assert!(
        privileges.contains(&LoginPrivilege::Create {
            role: "loyalty_test_service".into(),
            schema: "public".into(),
        }),
        "{privileges:?}"
    );
    db.store().migrate().await.unwrap();
    let store = Store::connect(db.config()).await;
    assert!(store.is_ok(), "{store:?}");
}
