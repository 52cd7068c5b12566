//! What both benches need: the median of alternating rounds.

/// The round whose `key` is the median. On a shared two-core machine one run
/// of a path drifts by more than the gaps being measured, so every path runs
/// several rounds, the paths taking turns, and the median round is shown.
pub fn median<T>(mut rounds: Vec<T>, key: impl Fn(&T) -> f64) -> T {
    rounds.sort_by(|a, b| key(a).total_cmp(&key(b)));
    rounds.swap_remove(rounds.len() / 2)
}

/// The proof a guard sends for `tenant`, as the raw-SQL floor must send it
/// too, computed in SQL from the guard key (the bench's login may read it).
pub async fn tenant_proof(store: &loyalty_store::Store, tenant: loyalty_store::TenantId) -> String {
    use diesel_async::RunQueryDsl;
    let mut conn = store.raw_connection().await.unwrap();
    diesel::dsl::sql::<diesel::sql_types::Text>(&format!(
        "SELECT encode(sha256(outer_pad || sha256(inner_pad || convert_to('{tenant}', 'UTF8'))), 'hex') \
           FROM loyalty_secret.guard_key"
    ))
    .get_result(&mut *conn)
    .await
    .unwrap()
}
