//! Rewards, campaigns and rules.

use crate::support::{invalid_field, two_tenants};
use bigdecimal::BigDecimal;
use chrono::{Duration, Utc};
use diesel_async::SimpleAsyncConnection;
use loyalty_store::prelude::*;
use loyalty_store::repo::budgets::{BudgetRepository, NewBudget};
use loyalty_store::repo::rewards::Reward;
use loyalty_store::testing::TestDb;
use serde_json::json;

fn coffee(cost: &str) -> NewReward {
    NewReward {
        name: "Free coffee".into(),
        description: Some("Any size".into()),
        reward_type: RewardType::Voucher,
        cost_amount: cost.parse().unwrap(),
        currency: "USD".parse().unwrap(),
        uses_codes: true,
    }
}

#[tokio::test]
async fn rewards_create_get_list_and_archive() {
    let db = TestDb::new().await;
    let store = db.store();
    let (a, b) = two_tenants(store).await;
    let mut tx = store.tenant(a).await.unwrap();
    let reward = tx.rewards().create(coffee("4.50")).await.unwrap();
    assert_eq!(reward.cost_amount, "4.50".parse::<BigDecimal>().unwrap());
    assert_eq!(tx.rewards().get(reward.id).await.unwrap(), reward);
    let mut cake = coffee("3");
    cake.name = "Cake".into();
    let cake = tx.rewards().create(cake).await.unwrap();
    let names: Vec<String> = tx
        .rewards()
        .list_active()
        .await
        .unwrap()
        .into_iter()
        .map(|r| r.name)
        .collect();
    assert_eq!(names, ["Cake", "Free coffee"]);
    let archived = tx
        .rewards()
        .set_status(cake.id, RewardStatus::Archived)
        .await
        .unwrap();
    assert_eq!(archived.status, RewardStatus::Archived);
    assert_eq!(tx.rewards().list_active().await.unwrap().len(), 1);
    assert!(matches!(
        tx.rewards().get(RewardId::new()).await,
        Err(Error::NotFound)
    ));
    assert!(matches!(
        tx.rewards()
            .set_status(RewardId::new(), RewardStatus::Active)
            .await,
        Err(Error::NotFound)
    ));
    for (input, field) in [
        (
            NewReward {
                name: String::new(),
                ..coffee("1")
            },
            "name",
        ),
        (
            NewReward {
                description: Some("x".repeat(2001)),
                ..coffee("1")
            },
            "description",
        ),
        (coffee("0"), "cost_amount"),
        (coffee("-2"), "cost_amount"),
        (coffee("1.005"), "cost_amount"),
    ] {
        assert_eq!(invalid_field(tx.rewards().create(input).await), field);
    }
    tx.commit().await.unwrap();

    let mut tx = store.tenant(b).await.unwrap();
    assert!(tx.rewards().list_active().await.unwrap().is_empty());
    assert!(matches!(
        tx.rewards().get(reward.id).await,
        Err(Error::NotFound)
    ));
    assert!(matches!(
        tx.rewards()
            .set_status(reward.id, RewardStatus::Archived)
            .await,
        Err(Error::NotFound)
    ));
}

#[tokio::test]
async fn campaigns_window_listing_and_audited_status() {
    let db = TestDb::new().await;
    let store = db.store();
    let (a, b) = two_tenants(store).await;
    let now = Utc::now();
    let mut tx = store.tenant(a).await.unwrap();
    let running = tx
        .campaigns()
        .create(NewCampaign {
            start_at: Some(now - Duration::days(1)),
            end_at: Some(now + Duration::days(1)),
            status: CampaignStatus::Active,
            ..NewCampaign::draft("Running")
        })
        .await
        .unwrap();
    let open_ended = tx
        .campaigns()
        .create(NewCampaign {
            status: CampaignStatus::Active,
            ..NewCampaign::draft("Open")
        })
        .await
        .unwrap();
    let finished = tx
        .campaigns()
        .create(NewCampaign {
            start_at: Some(now - Duration::days(3)),
            end_at: Some(now - Duration::days(2)),
            status: CampaignStatus::Active,
            ..NewCampaign::draft("Finished")
        })
        .await
        .unwrap();
    let future = tx
        .campaigns()
        .create(NewCampaign {
            start_at: Some(now + Duration::days(2)),
            status: CampaignStatus::Active,
            ..NewCampaign::draft("Future")
        })
        .await
        .unwrap();
    let draft = tx
        .campaigns()
        .create(NewCampaign::draft("Draft"))
        .await
        .unwrap();

    let active: Vec<_> = tx
        .campaigns()
        .list_active(now)
        .await
        .unwrap()
        .into_iter()
        .map(|c| c.id)
        .collect();
    assert_eq!(active, [open_ended.id, running.id]);
    assert!(
        running.is_running_at(now) && !finished.is_running_at(now) && !future.is_running_at(now)
    );
    let later: Vec<_> = tx
        .campaigns()
        .list_active(now + Duration::days(3))
        .await
        .unwrap()
        .into_iter()
        .map(|c| c.id)
        .collect();
    assert_eq!(later, [future.id, open_ended.id]);
    assert_eq!(tx.campaigns().list(Page::first(3)).await.unwrap().len(), 3);
    assert_eq!(
        tx.campaigns()
            .list(Page {
                limit: 10,
                offset: 3
            })
            .await
            .unwrap()
            .len(),
        2
    );
    assert_eq!(tx.campaigns().get(draft.id).await.unwrap(), draft);
    tx.commit().await.unwrap();

    let boss = StaffUserId::new();
    let mut tx = store.tenant_as(a, Actor::Staff(boss)).await.unwrap();
    let paused = tx
        .campaigns()
        .update_status(running.id, CampaignStatus::Paused)
        .await
        .unwrap();
    assert_eq!(paused.status, CampaignStatus::Paused);
    assert!(paused.updated_at >= running.updated_at);
    let range = TimeRange::new(now - Duration::hours(1), Utc::now() + Duration::hours(1)).unwrap();
    let audit = tx
        .audit_logs()
        .list(range, KeysetPage::first(10))
        .await
        .unwrap();
    assert_eq!(audit.len(), 1);
    assert_eq!(
        (audit[0].action.as_str(), audit[0].actor_id),
        ("campaign.status_changed", Some(boss.0))
    );
    assert_eq!(audit[0].details, json!({"status": "paused"}));
    tx.commit().await.unwrap();

    let mut tx = store.tenant(a).await.unwrap();
    assert!(matches!(
        tx.campaigns().get(CampaignId::new()).await,
        Err(Error::NotFound)
    ));
    assert!(matches!(
        tx.campaigns()
            .update_status(CampaignId::new(), CampaignStatus::Ended)
            .await,
        Err(Error::NotFound)
    ));
    let backwards = NewCampaign {
        start_at: Some(now),
        end_at: Some(now - Duration::seconds(1)),
        ..NewCampaign::draft("x")
    };
    assert_eq!(
        invalid_field(tx.campaigns().create(backwards).await),
        "end_at"
    );
    let empty_window = NewCampaign {
        start_at: Some(now),
        end_at: Some(now),
        ..NewCampaign::draft("x")
    };
    assert_eq!(
        invalid_field(tx.campaigns().create(empty_window).await),
        "end_at"
    );
    assert_eq!(
        invalid_field(tx.campaigns().create(NewCampaign::draft("")).await),
        "name"
    );
    assert_eq!(
        invalid_field(tx.campaigns().list(Page::first(1001)).await),
        "limit"
    );
    let no_budget = tx
        .campaigns()
        .create(NewCampaign {
            budget_id: Some(BudgetId::new()),
            ..NewCampaign::draft("x")
        })
        .await;
    assert!(matches!(no_budget, Err(Error::MissingReference { .. })));
    drop(tx);

    let mut tx = store.tenant(b).await.unwrap();
    assert!(tx.campaigns().list_active(now).await.unwrap().is_empty());
    assert!(matches!(
        tx.campaigns().get(running.id).await,
        Err(Error::NotFound)
    ));
    assert!(matches!(
        tx.campaigns()
            .update_status(running.id, CampaignStatus::Ended)
            .await,
        Err(Error::NotFound)
    ));
}

struct Setup {
    campaign: CampaignId,
    reward: Reward,
}

async fn campaign_with_reward(tx: &mut TenantConn, status: CampaignStatus) -> Setup {
    let reward = tx.rewards().create(coffee("2")).await.unwrap();
    let campaign = tx
        .campaigns()
        .create(NewCampaign {
            status,
            ..NewCampaign::draft("C")
        })
        .await
        .unwrap()
        .id;
    Setup { campaign, reward }
}

fn rule(setup: &Setup, event_type: &str) -> NewRule {
    NewRule {
        campaign_id: setup.campaign,
        name: format!("On {event_type}"),
        event_type: event_type.into(),
        conditions: Condition::gte("amount", 10).into(),
        reward_id: setup.reward.id,
        per_customer_limit: Some(1),
        global_limit: Some(100),
    }
}

#[tokio::test]
async fn rules_create_list_match_and_toggle() {
    let db = TestDb::new().await;
    let store = db.store();
    let (a, b) = two_tenants(store).await;
    let now = Utc::now();
    let mut tx = store.tenant(a).await.unwrap();
    let live = campaign_with_reward(&mut tx, CampaignStatus::Active).await;
    let paused = campaign_with_reward(&mut tx, CampaignStatus::Paused).await;
    let purchase = tx.rules().create(rule(&live, "purchase")).await.unwrap();
    let signup = tx.rules().create(rule(&live, "signup")).await.unwrap();
    tx.rules().create(rule(&paused, "purchase")).await.unwrap();
    assert!(purchase.active);
    assert_eq!(tx.rules().get(purchase.id).await.unwrap(), purchase);
    let listed: Vec<_> = tx
        .rules()
        .list_by_campaign(live.campaign)
        .await
        .unwrap()
        .into_iter()
        .map(|r| r.id)
        .collect();
    assert_eq!(listed, [purchase.id, signup.id]);
    let small = tx
        .rules()
        .match_event("purchase", &json!({"amount": 9.99}), now)
        .await
        .unwrap();
    assert!(small.is_empty(), "below the rule's minimum: {small:?}");
    let matched: Vec<_> = tx
        .rules()
        .match_event("purchase", &json!({"amount": 12}), now)
        .await
        .unwrap()
        .into_iter()
        .map(|r| r.id)
        .collect();
    assert_eq!(
        matched,
        [purchase.id],
        "the paused campaign's rule does not match"
    );
    tx.commit().await.unwrap();

    let mut tx = store.tenant_as(a, Actor::Api).await.unwrap();
    let off = tx.rules().set_active(purchase.id, false).await.unwrap();
    assert!(!off.active);
    assert!(
        tx.rules()
            .match_event("purchase", &json!({"amount": 12}), now)
            .await
            .unwrap()
            .is_empty()
    );
    tx.rules().set_active(purchase.id, true).await.unwrap();
    let range = TimeRange::new(now - Duration::hours(1), Utc::now() + Duration::hours(1)).unwrap();
    let actions: Vec<_> = tx
        .audit_logs()
        .list(range, KeysetPage::first(10))
        .await
        .unwrap()
        .into_iter()
        .map(|entry| (entry.action, entry.actor_type))
        .collect();
    assert_eq!(
        actions,
        [
            ("rule.activated".to_owned(), "api".to_owned()),
            ("rule.deactivated".to_owned(), "api".to_owned())
        ]
    );
    tx.commit().await.unwrap();

    let mut tx = store.tenant(a).await.unwrap();
    assert!(matches!(
        tx.rules().get(RuleId::new()).await,
        Err(Error::NotFound)
    ));
    assert!(matches!(
        tx.rules().set_active(RuleId::new(), true).await,
        Err(Error::NotFound)
    ));
    for (input, field) in [
        (
            NewRule {
                name: String::new(),
                ..rule(&live, "x")
            },
            "name",
        ),
        (
            NewRule {
                event_type: "e".repeat(101),
                ..rule(&live, "x")
            },
            "event_type",
        ),
        (
            NewRule {
                conditions: json!("min 10"),
                ..rule(&live, "x")
            },
            "conditions",
        ),
        (
            NewRule {
                per_customer_limit: Some(0),
                ..rule(&live, "x")
            },
            "per_customer_limit",
        ),
        (
            NewRule {
                global_limit: Some(-1),
                ..rule(&live, "x")
            },
            "global_limit",
        ),
    ] {
        assert_eq!(invalid_field(tx.rules().create(input).await), field);
    }
    let orphan = tx
        .rules()
        .create(NewRule {
            campaign_id: CampaignId::new(),
            ..rule(&live, "x")
        })
        .await;
    assert!(matches!(orphan, Err(Error::MissingReference { .. })));
    drop(tx);

    let mut tx = store.tenant(b).await.unwrap();
    assert!(
        tx.rules()
            .match_event("purchase", &json!({"amount": 12}), now)
            .await
            .unwrap()
            .is_empty()
    );
    assert!(
        tx.rules()
            .list_by_campaign(live.campaign)
            .await
            .unwrap()
            .is_empty()
    );
    assert!(matches!(
        tx.rules().get(purchase.id).await,
        Err(Error::NotFound)
    ));
    assert!(matches!(
        tx.rules().set_active(purchase.id, false).await,
        Err(Error::NotFound)
    ));
    // B cannot hang a rule on A's campaign.
    let cross = tx.rules().create(rule(&live, "purchase")).await;
    assert!(matches!(cross, Err(Error::MissingReference { .. })));
}

#[tokio::test]
async fn rule_issuance_counts_mean_this_rule() {
    let db = TestDb::new().await;
    let store = db.store();
    let (a, _) = two_tenants(store).await;
    let mut tx = store.tenant(a).await.unwrap();
    let setup = campaign_with_reward(&mut tx, CampaignStatus::Active).await;
    let first = tx.rules().create(rule(&setup, "purchase")).await.unwrap();
    let second = tx.rules().create(rule(&setup, "signup")).await.unwrap();
    let ada = tx
        .customers()
        .create(NewCustomer::new("+15550000001"))
        .await
        .unwrap();
    let bob = tx
        .customers()
        .create(NewCustomer::new("+15550000002"))
        .await
        .unwrap();
    let budget = tx
        .budgets()
        .create(NewBudget {
            name: "B".into(),
            currency: "USD".parse().unwrap(),
            hard_cap: 100.into(),
        })
        .await
        .unwrap()
        .id;
    // Counting by campaign would let a sibling rule's issuances leak into
    // this rule's count. Issuances are inserted directly here; the issuance
    // API has tests of its own.
    let issue = |rule: RuleId, customer: CustomerId, status: &str, days_ago: i64, key: &str| {
        format!(
            "INSERT INTO issuances (tenant_id, campaign_id, rule_id, customer_id, reward_id, budget_id, status, \
             cost_amount, currency, idempotency_key, issued_at, redeemed_at) VALUES ('{a}', '{}', '{rule}', \
             '{customer}', '{}', '{budget}', '{status}', 2, 'USD', '{key}', now() - interval '{days_ago} days', {})",
            setup.campaign,
            setup.reward.id,
            if status == "redeemed" {
                "now()"
            } else {
                "NULL"
            }
        )
    };
    let sql = [
        issue(first.id, ada.id, "issued", 0, "k1"),
        issue(first.id, ada.id, "redeemed", 5, "k2"),
        issue(first.id, bob.id, "cancelled", 0, "k3"),
        issue(first.id, bob.id, "issued", 0, "k4"),
        issue(second.id, ada.id, "issued", 0, "k5"),
    ]
    .join(";");
    // Backfilled by the tables' owner: only the SQL layer's functions may
    // write issuances.
    tx.commit().await.unwrap();
    let mut owner = db.admin_connection().await;
    owner.batch_execute(&sql).await.unwrap();
    drop(owner);
    let mut tx = store.tenant(a).await.unwrap();
    let yesterday = Utc::now() - Duration::days(1);
    assert_eq!(
        tx.rules()
            .issuance_count(first.id, yesterday)
            .await
            .unwrap(),
        2
    );
    assert_eq!(
        tx.rules()
            .issuance_count(first.id, Utc::now() - Duration::days(30))
            .await
            .unwrap(),
        3
    );
    assert_eq!(
        tx.rules()
            .customer_issuance_count(first.id, ada.id)
            .await
            .unwrap(),
        2
    );
    assert_eq!(
        tx.rules()
            .customer_issuance_count(first.id, bob.id)
            .await
            .unwrap(),
        1
    );
    assert_eq!(
        tx.rules()
            .customer_issuance_count(second.id, bob.id)
            .await
            .unwrap(),
        0
    );
    assert_eq!(
        tx.rules()
            .issuance_count(RuleId::new(), yesterday)
            .await
            .unwrap(),
        0
    );
}
