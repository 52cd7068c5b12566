//! Rule conditions as `loyalty.conditions_hold` evaluates them, case by case,
//! and through `match_event`.

use chrono::Utc;
use diesel::sql_types::{Bool, Jsonb};
use diesel_async::RunQueryDsl;
use loyalty_store::prelude::*;
use loyalty_store::testing::{CampaignFixture, TestDb};
use serde_json::{Value, json};

#[derive(diesel::QueryableByName)]
struct Held {
    #[diesel(sql_type = Bool)]
    held: bool,
}

#[tokio::test]
async fn conditions_hold_as_documented() {
    let db = TestDb::new().await;
    let p = CampaignFixture::builder().create(db.store()).await.unwrap();
    let amount_20 = json!({"path": "amount", "op": "gte", "value": 20});
    let cases: Vec<(Value, Value, bool)> = vec![
        (json!({}), json!({}), true),
        (amount_20.clone(), json!({"amount": 20}), true),
        (amount_20.clone(), json!({"amount": 20.5}), true),
        (amount_20.clone(), json!({"amount": 19.99}), false),
        (amount_20.clone(), json!({}), false),
        (amount_20.clone(), json!({"amount": null}), false),
        (amount_20.clone(), json!({"amount": "30"}), false),
        (amount_20.clone(), json!({"amount": true}), false),
        (amount_20.clone(), json!({"amount": [30]}), false),
        (
            json!({"path": "amount", "op": "lte", "value": 20}),
            json!({"amount": 3}),
            true,
        ),
        (
            json!({"path": "amount", "op": "lte", "value": 20}),
            json!({"amount": 21}),
            false,
        ),
        (
            json!({"path": "at", "op": "gte", "value": "2026-12-01"}),
            json!({"at": "2026-12-03"}),
            true,
        ),
        (
            json!({"path": "order.total", "op": "eq", "value": 5}),
            json!({"order": {"total": 5.0}}),
            true,
        ),
        (
            json!({"path": "order.total", "op": "eq", "value": 5}),
            json!({"order": 5}),
            false,
        ),
        (
            json!({"path": "day", "op": "in", "value": ["sat", "sun"]}),
            json!({"day": "sun"}),
            true,
        ),
        (
            json!({"path": "day", "op": "in", "value": ["sat", "sun"]}),
            json!({"day": "mon"}),
            false,
        ),
        (
            json!({"path": "day", "op": "in", "value": ["sat", "sun"]}),
            json!({"day": ["sat"]}),
            false,
        ),
        (
            json!({"path": "coupon", "op": "exists"}),
            json!({"coupon": ""}),
            true,
        ),
        (
            json!({"path": "coupon", "op": "exists"}),
            json!({"coupon": null}),
            false,
        ),
        (json!({"all": []}), json!({}), true),
        (json!({"any": []}), json!({}), false),
        (
            json!({"all": [amount_20.clone(), {"path": "day", "op": "in", "value": ["sat"]}]}),
            json!({"amount": 25, "day": "sat"}),
            true,
        ),
        (
            json!({"all": [amount_20.clone(), {"path": "day", "op": "in", "value": ["sat"]}]}),
            json!({"amount": 25, "day": "fri"}),
            false,
        ),
        (
            json!({"any": [amount_20.clone(), {"path": "vip", "op": "eq", "value": true}]}),
            json!({"amount": 5, "vip": true}),
            true,
        ),
        // Outside the language (written around the crate): nothing holds.
        (json!({"min_amount": 20}), json!({"amount": 25}), false),
        (
            json!({"path": "amount", "op": "gt", "value": 20}),
            json!({"amount": 25}),
            false,
        ),
        (
            json!({"all": {"path": "amount", "op": "exists"}}),
            json!({"amount": 25}),
            false,
        ),
        (json!([]), json!({}), false),
    ];
    let mut tx = db.store().tenant(p.tenant).await.unwrap();
    // Nested past what Rust accepts (written around the crate): no match,
    // and no error either. Built as text: a serde_json value that deep
    // would overflow this test's own stack when dropped.
    let deep = format!(
        "{}{}{}",
        r#"{"all": ["#.repeat(1500),
        r#"{"path": "amount", "op": "exists"}"#,
        "]}".repeat(1500)
    );
    let Held { held } = diesel::sql_query("SELECT loyalty.conditions_hold($1::jsonb, $2) AS held")
        .bind::<diesel::sql_types::Text, _>(&deep)
        .bind::<Jsonb, _>(json!({"amount": 1}))
        .get_result(tx.conn())
        .await
        .unwrap();
    assert!(!held);
    for (condition, properties, expected) in cases {
        let Held { held } = diesel::sql_query("SELECT loyalty.conditions_hold($1, $2) AS held")
            .bind::<Jsonb, _>(&condition)
            .bind::<Jsonb, _>(&properties)
            .get_result(tx.conn())
            .await
            .unwrap();
        assert_eq!(held, expected, "{condition} on {properties}");
        if let Ok(parsed) = Condition::parse(&condition) {
            assert_eq!(Value::from(parsed), condition, "Rust reads it as written");
        }
    }
}

#[tokio::test]
async fn match_event_keeps_the_rules_whose_conditions_hold() {
    let db = TestDb::new().await;
    let p = CampaignFixture::builder().create(db.store()).await.unwrap();
    let mut tx = db.store().tenant(p.tenant).await.unwrap();
    let base = tx.rules().get(p.rule).await.unwrap();
    let big = tx
        .rules()
        .create(NewRule {
            campaign_id: base.campaign_id,
            name: "Big orders".into(),
            event_type: base.event_type.clone(),
            conditions: Condition::gte("amount", 20).into(),
            reward_id: base.reward_id,
            per_customer_limit: None,
            global_limit: None,
        })
        .await
        .unwrap();
    let refused = tx
        .rules()
        .create(NewRule {
            conditions: json!({"min_amount": 20}),
            name: "Unreadable".into(),
            campaign_id: base.campaign_id,
            event_type: base.event_type.clone(),
            reward_id: base.reward_id,
            per_customer_limit: None,
            global_limit: None,
        })
        .await;
    assert!(
        matches!(
            &refused,
            Err(Error::InvalidInput {
                field: "conditions",
                ..
            })
        ),
        "{refused:?}"
    );
    let matched = |rules: Vec<Rule>| rules.into_iter().map(|r| r.id).collect::<Vec<_>>();
    let now = Utc::now();
    let small = tx
        .rules()
        .match_event(&base.event_type, &json!({"amount": 5}), now)
        .await
        .unwrap();
    assert_eq!(matched(small), [p.rule]);
    let large = tx
        .rules()
        .match_event(&base.event_type, &json!({"amount": 50}), now)
        .await
        .unwrap();
    assert_eq!(matched(large), [p.rule, big.id]);
    let none = tx
        .rules()
        .match_event(&base.event_type, &json!({}), now)
        .await
        .unwrap();
    assert_eq!(matched(none), [p.rule], "no amount meets no minimum");
}
