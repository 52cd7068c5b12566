//! Voucher-code pools.

use loyalty_store::prelude::*;
use loyalty_store::repo::voucher_codes::{IMPORT_CHUNK, StatusCounts, VoucherStatus};
use loyalty_store::testing::CampaignFixture;
use loyalty_store::testing::TestDb;

fn codes(names: &[&str]) -> Vec<String> {
    names.iter().map(|s| s.to_string()).collect()
}

#[tokio::test]
async fn import_reports_duplicates_in_the_pool_and_in_the_input() {
    let db = TestDb::new().await;
    let store = db.store();
    let p = CampaignFixture::builder()
        .uses_codes()
        .create(store)
        .await
        .unwrap();
    let mut tx = store.tenant(p.tenant).await.unwrap();
    let first = tx
        .voucher_codes()
        .import(p.reward, &codes(&["A", "B", "C"]))
        .await
        .unwrap();
    assert_eq!((first.inserted, first.duplicates.len()), (3, 0));
    let second = tx
        .voucher_codes()
        .import(p.reward, &codes(&["C", "D", "D", "A", "E"]))
        .await
        .unwrap();
    assert_eq!(second.inserted, 2);
    let mut dups = second.duplicates.clone();
    dups.sort();
    assert_eq!(dups, ["A", "C", "D"]);
    assert_eq!(
        tx.voucher_codes().counts(p.reward).await.unwrap(),
        StatusCounts {
            available: 5,
            ..StatusCounts::default()
        }
    );
    tx.commit().await.unwrap();
}

#[tokio::test]
async fn import_takes_more_than_one_chunk_and_refuses_bad_codes_whole() {
    let db = TestDb::new().await;
    let store = db.store();
    let p = CampaignFixture::builder()
        .uses_codes()
        .create(store)
        .await
        .unwrap();
    let many: Vec<String> = (0..IMPORT_CHUNK * 2 + 17)
        .map(|i| format!("BULK-{i}"))
        .collect();
    let mut tx = store.tenant(p.tenant).await.unwrap();
    let report = tx.voucher_codes().import(p.reward, &many).await.unwrap();
    assert_eq!(report.inserted as usize, many.len());
    let mut bad = codes(&["NEW-1", "NEW-2"]);
    bad.push("x".repeat(101));
    assert!(matches!(
        tx.voucher_codes().import(p.reward, &bad).await,
        Err(Error::InvalidInput { field: "codes", .. })
    ));
    assert!(matches!(
        tx.voucher_codes().import(p.reward, &codes(&[""])).await,
        Err(Error::InvalidInput { field: "codes", .. })
    ));
    assert_eq!(
        tx.voucher_codes().counts(p.reward).await.unwrap().available as usize,
        many.len()
    );
    tx.commit().await.unwrap();
}

#[tokio::test]
async fn issuing_mark_issued_and_invalidate_move_codes_through_their_states() {
    let db = TestDb::new().await;
    let store = db.store();
    let p = CampaignFixture::builder()
        .uses_codes()
        .create(store)
        .await
        .unwrap();
    let people = crate::support::customers(store, p.tenant, 2).await;
    let customer = people[0];
    let mut tx = store.tenant(p.tenant).await.unwrap();
    tx.voucher_codes()
        .import(p.reward, &codes(&["ONLY", "SPARE"]))
        .await
        .unwrap();
    let spare = tx.voucher_codes().find("SPARE").await.unwrap().unwrap();
    assert_eq!(spare.status, VoucherStatus::Available);
    let spare = tx.voucher_codes().invalidate(spare.id).await.unwrap();
    assert_eq!(spare.status, VoucherStatus::Invalid);
    assert!(tx.voucher_codes().find("NOPE").await.unwrap().is_none());
    assert!(matches!(
        tx.voucher_codes().invalidate(spare.id).await,
        Err(Error::VoucherCodeStatus {
            status: VoucherStatus::Invalid,
            required: VoucherStatus::Available
        })
    ));
    tx.commit().await.unwrap();

    // Issuing claims the code; a second claim finds the pool empty.
    let issued = crate::support::issue(store, &p, customer, "k1")
        .await
        .unwrap();
    assert_eq!(issued.voucher_code.as_deref(), Some("ONLY"));
    assert!(matches!(
        crate::support::issue(store, &p, people[1], "k2").await,
        Err(Error::Refused(Refusal::NoCodesAvailable))
    ));
    let mut tx = store.tenant(p.tenant).await.unwrap();
    let code_id = issued.issuance.voucher_code_id.unwrap();
    let delivered = tx.voucher_codes().mark_issued(code_id).await.unwrap();
    assert_eq!(delivered.status, VoucherStatus::Issued);
    assert!(delivered.issued_at.is_some());
    // Delivering again (a retried send) is a replay that changes nothing.
    assert_eq!(
        tx.voucher_codes().mark_issued(code_id).await.unwrap(),
        delivered
    );
    assert!(matches!(
        tx.voucher_codes().invalidate(code_id).await,
        Err(Error::VoucherCodeStatus {
            status: VoucherStatus::Issued,
            ..
        })
    ));
    assert!(matches!(
        tx.voucher_codes().mark_issued(VoucherCodeId::new()).await,
        Err(Error::NotFound)
    ));
    assert_eq!(
        tx.voucher_codes().counts(p.reward).await.unwrap(),
        StatusCounts {
            issued: 1,
            invalid: 1,
            ..StatusCounts::default()
        }
    );
    tx.commit().await.unwrap();
}

/// Statuses move only through the repository (the SQL layer's functions):
/// a guard's own SQL can neither return a held code to the pool nor import
/// one already claimed.
#[tokio::test]
async fn a_guards_own_sql_cannot_move_a_code() {
    let db = TestDb::new().await;
    let store = db.store();
    let p = CampaignFixture::builder()
        .uses_codes()
        .customers(1)
        .create(store)
        .await
        .unwrap();
    crate::support::import_codes(store, &p, 1).await;
    let issued = crate::support::issue(store, &p, p.customers[0], "k")
        .await
        .unwrap();
    for (login, store) in crate::support::logins(&db).await {
        for attempt in [
            "UPDATE voucher_codes SET status = 'available', issuance_id = NULL".to_owned(),
            "UPDATE voucher_codes SET status = 'issued'".to_owned(),
            format!(
                "INSERT INTO voucher_codes (tenant_id, reward_id, code, status, issuance_id) \
                 VALUES ('{}', '{}', 'FORGED', 'issued', '{}')",
                p.tenant, p.reward, issued.issuance.id
            ),
        ] {
            crate::support::assert_denied(&store, p.tenant, &attempt, login).await;
        }
    }
    let mut tx = store.tenant(p.tenant).await.unwrap();
    assert_eq!(
        tx.voucher_codes().counts(p.reward).await.unwrap(),
        StatusCounts {
            reserved: 1,
            ..StatusCounts::default()
        }
    );
}

#[tokio::test]
async fn pools_are_per_tenant() {
    let db = TestDb::new().await;
    let store = db.store();
    let p = CampaignFixture::builder()
        .uses_codes()
        .create(store)
        .await
        .unwrap();
    let other = store
        .platform()
        .create(NewTenant::new("Other", "USD".parse().unwrap()))
        .await
        .unwrap()
        .id;
    let mut tx = store.tenant(p.tenant).await.unwrap();
    tx.voucher_codes()
        .import(p.reward, &codes(&["A"]))
        .await
        .unwrap();
    let code = tx.voucher_codes().find("A").await.unwrap().unwrap();
    tx.commit().await.unwrap();
    let mut tx = store.tenant(other).await.unwrap();
    assert_eq!(
        tx.voucher_codes().counts(p.reward).await.unwrap(),
        StatusCounts::default()
    );
    assert!(matches!(
        tx.voucher_codes().invalidate(code.id).await,
        Err(Error::NotFound)
    ));
    let cross = tx.voucher_codes().import(p.reward, &codes(&["B"])).await;
    assert!(
        matches!(cross, Err(Error::MissingReference { .. })),
        "{cross:?}"
    );
}
