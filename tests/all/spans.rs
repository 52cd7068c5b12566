//! The guard and the money calls open `tracing` spans that carry the tenant.

use std::sync::{Arc, Mutex};

use loyalty_store::testing::{CampaignFixture, TestDb};
use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id, Record};
use tracing::{Event, Metadata, Subscriber};

use loyalty_store::prelude::*;

use crate::support::issue;

/// A span's name and its `tenant_id` field, if it has one.
type SeenSpan = (String, Option<String>);

/// Records each span's name and `tenant_id` field, and nothing else.
#[derive(Clone, Default)]
struct Spans(Arc<Mutex<Vec<SeenSpan>>>);

struct TenantField(Option<String>);

impl Visit for TenantField {
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        if field.name() == "tenant_id" {
            self.0 = Some(format!("{value:?}"));
        }
    }
}

impl Subscriber for Spans {
    fn enabled(&self, _: &Metadata<'_>) -> bool {
        true
    }
    fn new_span(&self, span: &Attributes<'_>) -> Id {
        let mut tenant = TenantField(None);
        span.record(&mut tenant);
        let mut spans = self.0.lock().unwrap();
        spans.push((span.metadata().name().to_string(), tenant.0));
        Id::from_u64(spans.len() as u64)
    }
    fn record(&self, _: &Id, _: &Record<'_>) {}
    fn record_follows_from(&self, _: &Id, _: &Id) {}
    fn event(&self, _: &Event<'_>) {}
    fn enter(&self, _: &Id) {}
    fn exit(&self, _: &Id) {}
}

#[tokio::test]
async fn guards_and_money_calls_open_spans_with_the_tenant() {
    let db = TestDb::new().await;
    let p = CampaignFixture::builder()
        .customers(1)
        .create(db.store())
        .await
        .unwrap();
    let spans = Spans::default();
    // The test runs on one thread, so the default subscriber sees it all.
    let _default = tracing::subscriber::set_default(spans.clone());
    let issued = issue(db.store(), &p, p.customers[0], "traced")
        .await
        .unwrap();
    let mut tx = db.store().tenant(p.tenant).await.unwrap();
    tx.issuances().redeem(issued.issuance.id).await.unwrap();
    tx.commit().await.unwrap();

    let tenant = p.tenant.to_string();
    let seen = spans.0.lock().unwrap().clone();
    for name in [
        "loyalty.guard.open",
        "loyalty.issuances.issue",
        "loyalty.issuances.redeem",
        "loyalty.guard.commit",
    ] {
        assert!(
            seen.iter()
                .any(|(span, t)| span == name && t.as_deref() == Some(tenant.as_str())),
            "no {name} span for tenant {tenant} in {seen:?}"
        );
    }
}
