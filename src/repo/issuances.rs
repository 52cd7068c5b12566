//! Reward issuances: the money path.
//!
//! Issuing, redeeming, cancelling and expiring are each one statement calling
//! a function of the SQL layer (`loyalty.issue_reward`, `redeem_issuance`,
//! `cancel_issuance`, `expire_issuances`, `issue_reward_batch` in
//! `sql/50_issuance.sql`). Inside it the
//! checks, the locks and the writes run in the order that keeps concurrent
//! callers correct, and the whole call is one round trip. A refusal is an
//! error that rolls the statement back; nothing is half-written.
//!
//! Two steps wait for the commit: a single issuance counts itself against its
//! rule's global limit and reserves its cost on the budget inside `COMMIT`,
//! from deferred constraint triggers on the issuance and its ledger entry.
//! The budget row is shared by every issuance of a campaign, and a limited
//! rule's counter by every issuance of the rule; locking either any earlier
//! would make all of them queue behind each other's round trips to the
//! client. `issue` still refuses an exhausted budget or a used-up limit up
//! front; only when concurrent issuances take the last of it between `issue`
//! and `commit` does [`TenantConn::commit`] fail with
//! [`Refusal::BudgetExhausted`] or [`Refusal::LimitReached`], and then
//! nothing of the guard's work is kept. See `docs/money-path.md`.

use std::collections::HashSet;
use std::time::Duration;

use bigdecimal::BigDecimal;
use chrono::{DateTime, Utc};
use diesel::data_types::PgInterval;
use diesel::deserialize::FromSql;
use diesel::pg::{Pg, PgValue};
use diesel::prelude::*;
use diesel::sql_types::{
    Array, Integer, Interval, Jsonb, Nullable, Text, Timestamptz, Uuid as SqlUuid,
};
use diesel_async::RunQueryDsl;
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::ids::{
    BudgetId, CampaignId, CustomerId, IssuanceId, RewardId, RuleId, TenantId, VoucherCodeId,
};
use crate::money::Currency;
use crate::page::KeysetPage;
use crate::refusal::Refusal;
use crate::repo::customers::Customer;
use crate::schema::{issuances, voucher_codes};
use crate::tenant::TenantConn;
use crate::validate;

pub use crate::status::IssuanceStatus;

/// A row of `issuances`.
#[derive(Debug, Clone, PartialEq, Queryable, Selectable, Serialize, Deserialize)]
#[diesel(table_name = issuances, check_for_backend(diesel::pg::Pg))]
pub struct Issuance {
    pub tenant_id: TenantId,
    pub id: IssuanceId,
    pub campaign_id: CampaignId,
    pub rule_id: RuleId,
    pub customer_id: CustomerId,
    pub reward_id: RewardId,
    pub budget_id: BudgetId,
    pub voucher_code_id: Option<VoucherCodeId>,
    pub status: IssuanceStatus,
    pub cost_amount: BigDecimal,
    pub currency: Currency,
    pub idempotency_key: String,
    pub issued_at: DateTime<Utc>,
    pub expires_at: Option<DateTime<Utc>>,
    pub redeemed_at: Option<DateTime<Utc>>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    /// Set on a hold ([`IssuanceRepository::hold`]): when it lapses unless
    /// confirmed.
    pub hold_expires_at: Option<DateTime<Utc>>,
    /// When its redemption was reversed, if it was.
    pub reversed_at: Option<DateTime<Utc>>,
}

/// An issuance as a money-path call left it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Issued {
    #[serde(flatten)]
    pub issuance: Issuance,
    /// The voucher code, when the reward uses codes and one is attached.
    pub voucher_code: Option<String>,
    /// True when this call found the work already done (same idempotency
    /// key, or redeeming/cancelling twice) and changed nothing.
    pub replayed: bool,
}

/// Input for [`IssuanceRepository::hold`]: an issuance held for `hold_for`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NewHold {
    pub issuance: NewIssuance,
    /// How long the hold lasts unless confirmed or voided: 1 second to 1 day.
    pub hold_for: std::time::Duration,
}

/// What [`IssuanceRepository::redeem_code`] redeemed, and for whom.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TillRedemption {
    pub issuance: Issued,
    pub customer: Customer,
}

/// Input for [`IssuanceRepository::issue`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NewIssuance {
    pub rule_id: RuleId,
    pub customer_id: CustomerId,
    /// The caller's key for this issuance: retrying with it returns the
    /// first issuance and has no second effect.
    pub idempotency_key: String,
    pub expires_at: Option<DateTime<Utc>>,
}

/// Input for [`IssuanceRepository::issue_batch`]: one rule's reward for many
/// customers, each with its own idempotency key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NewBatch {
    pub rule_id: RuleId,
    pub recipients: Vec<(CustomerId, String)>,
    pub expires_at: Option<DateTime<Utc>>,
}

impl NewBatch {
    /// Keys each customer's issuance as `"{batch_key}:{customer_id}"`.
    pub fn for_customers(rule_id: RuleId, customers: &[CustomerId], batch_key: &str) -> Self {
        NewBatch {
            rule_id,
            recipients: customers
                .iter()
                .map(|c| (*c, format!("{batch_key}:{c}")))
                .collect(),
            expires_at: None,
        }
    }
}

/// Most recipients in one [`IssuanceRepository::issue_batch`] call.
pub const MAX_BATCH: usize = 10_000;

/// A recipient's issuance in a [`BatchReport`]; fetch the full row with
/// [`IssuanceRepository::get`] if needed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BatchIssuance {
    pub issuance_id: IssuanceId,
    pub voucher_code: Option<String>,
}

/// What happened, or would have happened, for one recipient of a batch.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "outcome", content = "issuance", rename_all = "snake_case")]
pub enum BatchOutcome {
    /// Issued by this call.
    Issued(BatchIssuance),
    /// Issued earlier under the same key; nothing new.
    Replayed(BatchIssuance),
    /// Would have been issued, but another recipient was refused, so the
    /// batch wrote nothing.
    Held,
    /// Refused for this recipient: [`Refusal::CustomerNotFound`],
    /// [`Refusal::CustomerInactive`], [`Refusal::LimitReached`] (per customer,
    /// counting this batch) or [`Refusal::IdempotencyConflict`].
    Refused(Refusal),
}

/// One recipient's line in a [`BatchReport`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BatchItem {
    pub customer_id: CustomerId,
    pub outcome: BatchOutcome,
}

/// What [`IssuanceRepository::issue_batch`] did: everything or nothing.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BatchReport {
    /// False when any recipient was refused; then nothing was written.
    pub applied: bool,
    /// One line per recipient, in input order.
    pub items: Vec<BatchItem>,
}

/// Issuances of one tenant.
pub trait IssuanceRepository {
    /// Issues a reward: replays a known idempotency key; checks that the
    /// campaign runs and the rule is active; enforces the rule's
    /// per-customer and global limits; claims a voucher code when the
    /// reward uses codes; reserves the cost on the campaign's budget; and
    /// writes the issuance and its ledger entry. A refusal is
    /// [`Error::Refused`] with the [`Refusal`] (campaign not running, rule
    /// inactive, limit reached, no codes, budget exhausted, rule or customer
    /// not found, customer inactive, reward archived, key used before with
    /// another rule or customer, ...); it leaves nothing written but ends
    /// the guard's transaction. The budget reservation and the global limit
    /// become binding at commit, so [`TenantConn::commit`] can also be
    /// refused with [`Refusal::BudgetExhausted`] or [`Refusal::LimitReached`]
    /// (see the module docs): treat the issuance as given only once the
    /// commit succeeds.
    /// Make one money-path call per guard (or use
    /// [`issue_batch`](IssuanceRepository::issue_batch)): a guard holding one
    /// issuance's locks while waiting for another's can deadlock with a
    /// guard doing the same in the opposite order.
    fn issue(&mut self, new: NewIssuance) -> impl Future<Output = Result<Issued>> + Send;
    /// Issues one rule's reward to many customers in a few set-based
    /// statements, all or nothing. Per-recipient refusals come back in the
    /// report with nothing written; batch-wide ones (codes, global limit,
    /// budget, campaign) are errors.
    fn issue_batch(&mut self, batch: NewBatch) -> impl Future<Output = Result<BatchReport>> + Send;
    /// Redeems an issued reward, moving its cost from reserved to spent.
    fn redeem(&mut self, id: IssuanceId) -> impl Future<Output = Result<Issued>> + Send;
    /// Redeems the voucher a till scanned, by its code alone (codes are
    /// unique in their tenant), and returns the issuance with its customer.
    /// Refused with [`Refusal::CodeNotFound`] for a code never handed out,
    /// [`Refusal::AlreadyRedeemed`] for a second scan,
    /// [`Refusal::IssuanceExpired`] for an expired voucher (swept or not),
    /// and [`Refusal::IssuanceNotIssued`] for a cancelled one or a hold.
    fn redeem_code(&mut self, code: &str) -> impl Future<Output = Result<TillRedemption>> + Send;
    /// Holds a reward for a checkout: issued with every check, limit, code
    /// and budget reservation of [`issue`](Self::issue), but `Reserved`
    /// (not redeemable) until [`confirm_hold`](Self::confirm_hold) or
    /// [`void_hold`](Self::void_hold) settles it. A hold not settled within
    /// `hold_for` is voided by [`expire_due`](Self::expire_due). Replays
    /// like `issue`.
    fn hold(&mut self, new: NewHold) -> impl Future<Output = Result<Issued>> + Send;
    /// Confirms a hold: the reward is issued. Confirming again is a replay;
    /// a lapsed hold is refused with [`Refusal::HoldExpired`], a voided one
    /// with [`Refusal::IssuanceNotIssued`].
    fn confirm_hold(&mut self, id: IssuanceId) -> impl Future<Output = Result<Issued>> + Send;
    /// Voids a hold: cancelled, its cost released, its code back in the
    /// pool. Voiding again is a replay; a confirmed hold is refused with
    /// [`Refusal::IssuanceNotIssued`] (cancel it instead).
    fn void_hold(&mut self, id: IssuanceId) -> impl Future<Output = Result<Issued>> + Send;
    /// Reverses a redemption made within `window` (a refund, a mistaken
    /// scan): the issuance is issued again and its cost moves from spent
    /// back to reserved, booked as a [`EntryType::Reversal`] ledger entry;
    /// it can then be redeemed, cancelled or expire as before. Once per
    /// issuance ([`Refusal::AlreadyReversed`]); reversing again right away
    /// is a replay. Refused with [`Refusal::NotRedeemed`] or
    /// [`Refusal::ReversalWindowClosed`].
    ///
    /// [`EntryType::Reversal`]: crate::repo::budgets::EntryType::Reversal
    fn reverse_redemption(
        &mut self,
        id: IssuanceId,
        window: std::time::Duration,
    ) -> impl Future<Output = Result<Issued>> + Send;
    /// Cancels an issued reward: releases its cost, stops it counting towards
    /// limits, and puts an undelivered voucher code back in the pool.
    fn cancel(&mut self, id: IssuanceId) -> impl Future<Output = Result<Issued>> + Send;
    /// Expires up to `batch` issued rewards whose `expires_at` is at or
    /// before `now`, and voids up to `batch` holds that lapsed by `now`,
    /// releasing their cost, one kind per call (expired issuances first).
    /// Returns how many; call again, in a guard of its own each time, until
    /// it returns 0: two sweeps in one guard take locks out of the money
    /// path's order and may deadlock ([`Error::Retryable`]).
    fn expire_due(
        &mut self,
        now: DateTime<Utc>,
        batch: u32,
    ) -> impl Future<Output = Result<u32>> + Send;
    /// One issuance, or [`Error::NotFound`].
    fn get(&mut self, id: IssuanceId) -> impl Future<Output = Result<Issuance>> + Send;
    /// The issuance an idempotency key stands for, if any: how a caller
    /// checks after [`crate::Error::CommitOutcomeUnknown`] whether its
    /// issuance was kept.
    fn find_by_key(
        &mut self,
        idempotency_key: &str,
    ) -> impl Future<Output = Result<Option<Issuance>>> + Send;
    /// The issuance that handed out a voucher code, if any; it stays linked
    /// after the issuance expires.
    fn find_by_code(&mut self, code: &str)
    -> impl Future<Output = Result<Option<Issuance>>> + Send;
    /// One customer's issuances, newest first, by keyset.
    fn list_for_customer(
        &mut self,
        customer_id: CustomerId,
        page: KeysetPage<IssuanceId>,
    ) -> impl Future<Output = Result<Vec<Issuance>>> + Send;
}

/// [`IssuanceRepository`] on a tenant guard: `tx.issuances()`.
#[derive(Debug)]
pub struct Issuances<'t>(&'t mut TenantConn);

impl TenantConn {
    /// This tenant's issuances.
    pub fn issuances(&mut self) -> Issuances<'_> {
        Issuances(self)
    }
}

diesel::define_sql_function! {
    #[sql_name = "loyalty.issue_reward"]
    fn issue_reward(tenant_id: SqlUuid, id: SqlUuid, rule_id: SqlUuid, customer_id: SqlUuid, key: Text,
                    expires_at: Nullable<Timestamptz>) -> Jsonb;
}
diesel::define_sql_function! {
    #[sql_name = "loyalty.issue_reward_batch"]
    fn issue_reward_batch(tenant_id: SqlUuid, rule_id: SqlUuid, customer_ids: Array<SqlUuid>, keys: Array<Text>,
                          ids: Array<SqlUuid>, expires_at: Nullable<Timestamptz>) -> Jsonb;
}
diesel::define_sql_function! {
    #[sql_name = "loyalty.redeem_issuance"]
    fn redeem_issuance(tenant_id: SqlUuid, id: SqlUuid) -> Jsonb;
}
diesel::define_sql_function! {
    #[sql_name = "loyalty.redeem_code"]
    fn redeem_code(tenant_id: SqlUuid, code: Text) -> Jsonb;
}
diesel::define_sql_function! {
    #[sql_name = "loyalty.hold_reward"]
    fn hold_reward(tenant_id: SqlUuid, id: SqlUuid, rule_id: SqlUuid, customer_id: SqlUuid, key: Text,
                   expires_at: Nullable<Timestamptz>, hold_for: Interval) -> Jsonb;
}
diesel::define_sql_function! {
    #[sql_name = "loyalty.settle_hold"]
    fn settle_hold(tenant_id: SqlUuid, id: SqlUuid, outcome: Text) -> Jsonb;
}
diesel::define_sql_function! {
    #[sql_name = "loyalty.reverse_redemption"]
    fn reverse_redemption(tenant_id: SqlUuid, id: SqlUuid, window: Interval) -> Jsonb;
}
diesel::define_sql_function! {
    #[sql_name = "loyalty.cancel_issuance"]
    fn cancel_issuance(tenant_id: SqlUuid, id: SqlUuid) -> Jsonb;
}
diesel::define_sql_function! {
    #[sql_name = "loyalty.expire_issuances"]
    fn expire_issuances(tenant_id: SqlUuid, now: Timestamptz, batch: Integer) -> Integer;
}

/// A `jsonb` answer parsed straight into `T`, without an intermediate
/// `serde_json::Value` tree: every money-path call reads one.
struct JsonAnswer<T>(T);

impl<T: serde::de::DeserializeOwned> FromSql<Jsonb, Pg> for JsonAnswer<T> {
    fn from_sql(value: PgValue<'_>) -> diesel::deserialize::Result<Self> {
        // Binary jsonb is a version byte (1) followed by the JSON text.
        match value.as_bytes().split_first() {
            Some((1, text)) => Ok(JsonAnswer(serde_json::from_slice(text)?)),
            _ => Err("unsupported jsonb format".into()),
        }
    }
}

impl<T: serde::de::DeserializeOwned> Queryable<Jsonb, Pg> for JsonAnswer<T> {
    type Row = Self;

    fn build(row: Self) -> diesel::deserialize::Result<Self> {
        Ok(row)
    }
}

/// The longest reversal window: ten years.
const MAX_WINDOW_MICROS: i64 = 10 * 366 * 86_400 * 1_000_000;

fn validate_key(key: &str) -> Result<()> {
    validate::text("idempotency_key", key, 1, 200)
}

/// An expiry checked as in the future by the client can still be at or
/// before the issue time, which is the start of the server's transaction: on
/// Citus the worker's, which begins when the call reaches it.
fn expiry_before_issue(err: diesel::result::Error) -> Error {
    match Error::from(err) {
        Error::CheckViolation { constraint } if constraint == "issuances_expiry_order" => {
            Error::invalid("expires_at", "must be after the issue time")
        }
        other => other,
    }
}

fn validate_expiry(expires_at: Option<DateTime<Utc>>) -> Result<()> {
    match expires_at {
        Some(at) if at <= Utc::now() => Err(Error::invalid("expires_at", "must be in the future")),
        Some(at) => validate::timestamp("expires_at", &at),
        None => Ok(()),
    }
}

#[derive(Deserialize)]
struct RawBatch {
    applied: bool,
    items: Option<Vec<RawItem>>,
}

/// One recipient's line as the SQL sends it: `verdict` is `issue`,
/// `replayed` or `refused`, and a refused line carries its refusal.
#[derive(Deserialize)]
struct RawItem {
    customer_id: CustomerId,
    verdict: String,
    refusal: Option<Refusal>,
    issuance_id: Option<IssuanceId>,
    voucher_code: Option<String>,
}

impl RawItem {
    fn into_item(self, applied: bool) -> Result<BatchItem> {
        let issuance = self.issuance_id.map(|issuance_id| BatchIssuance {
            issuance_id,
            voucher_code: self.voucher_code,
        });
        let outcome = match (self.verdict.as_str(), issuance, self.refusal) {
            ("issue", Some(issued), None) if applied => BatchOutcome::Issued(issued),
            ("issue", _, None) => BatchOutcome::Held,
            ("replayed", Some(issued), None) => BatchOutcome::Replayed(issued),
            ("refused", _, Some(refusal)) => BatchOutcome::Refused(refusal),
            (verdict, ..) => {
                return Err(Error::Database(
                    diesel::result::Error::DeserializationError(
                        format!("unexpected batch verdict {verdict:?}").into(),
                    ),
                ));
            }
        };
        Ok(BatchItem {
            customer_id: self.customer_id,
            outcome,
        })
    }
}

impl IssuanceRepository for Issuances<'_> {
    #[tracing::instrument(name = "loyalty.issuances.issue", skip_all, fields(tenant_id = %self.0.tenant_id()))]
    async fn issue(&mut self, new: NewIssuance) -> Result<Issued> {
        validate_key(&new.idempotency_key)?;
        validate_expiry(new.expires_at)?;
        let answer: JsonAnswer<Issued> = diesel::select(issue_reward(
            self.0.tenant_id(),
            IssuanceId::new(),
            new.rule_id,
            new.customer_id,
            new.idempotency_key,
            new.expires_at,
        ))
        .get_result(self.0.db())
        .await
        .map_err(expiry_before_issue)?;
        Ok(answer.0)
    }

    #[tracing::instrument(name = "loyalty.issuances.issue_batch", skip_all, fields(tenant_id = %self.0.tenant_id()))]
    async fn issue_batch(&mut self, batch: NewBatch) -> Result<BatchReport> {
        if batch.recipients.is_empty() || batch.recipients.len() > MAX_BATCH {
            return Err(Error::invalid(
                "recipients",
                format!("must hold 1 to {MAX_BATCH} customers"),
            ));
        }
        let mut seen = HashSet::with_capacity(batch.recipients.len());
        for (_, key) in &batch.recipients {
            validate_key(key)?;
            if !seen.insert(key.as_str()) {
                return Err(Error::invalid(
                    "recipients",
                    format!("key {key:?} appears twice"),
                ));
            }
        }
        validate_expiry(batch.expires_at)?;
        let (customers, keys): (Vec<CustomerId>, Vec<String>) =
            batch.recipients.into_iter().unzip();
        let ids: Vec<IssuanceId> = customers.iter().map(|_| IssuanceId::new()).collect();
        let JsonAnswer(raw): JsonAnswer<RawBatch> = diesel::select(issue_reward_batch(
            self.0.tenant_id(),
            batch.rule_id,
            customers,
            keys,
            ids,
            batch.expires_at,
        ))
        .get_result(self.0.db())
        .await?;
        let items = raw
            .items
            .unwrap_or_default()
            .into_iter()
            .map(|item| item.into_item(raw.applied))
            .collect::<Result<_>>()?;
        Ok(BatchReport {
            applied: raw.applied,
            items,
        })
    }

    #[tracing::instrument(name = "loyalty.issuances.redeem", skip_all, fields(tenant_id = %self.0.tenant_id()))]
    async fn redeem(&mut self, id: IssuanceId) -> Result<Issued> {
        let JsonAnswer(redeemed) = diesel::select(redeem_issuance(self.0.tenant_id(), id))
            .get_result(self.0.db())
            .await?;
        Ok(redeemed)
    }

    #[tracing::instrument(name = "loyalty.issuances.redeem_code", skip_all, fields(tenant_id = %self.0.tenant_id()))]
    async fn redeem_code(&mut self, code: &str) -> Result<TillRedemption> {
        validate::text("code", code, 1, 100)?;
        let JsonAnswer(redeemed) = diesel::select(redeem_code(self.0.tenant_id(), code))
            .get_result(self.0.db())
            .await?;
        Ok(redeemed)
    }

    #[tracing::instrument(name = "loyalty.issuances.hold", skip_all, fields(tenant_id = %self.0.tenant_id()))]
    async fn hold(&mut self, new: NewHold) -> Result<Issued> {
        let NewHold { issuance, hold_for } = new;
        validate_key(&issuance.idempotency_key)?;
        validate_expiry(issuance.expires_at)?;
        if !(Duration::from_secs(1)..=Duration::from_secs(86_400)).contains(&hold_for) {
            return Err(Error::invalid("hold_for", "must be 1 second to 1 day"));
        }
        let hold_for = PgInterval::from_microseconds(hold_for.as_micros() as i64);
        let JsonAnswer(held) = diesel::select(hold_reward(
            self.0.tenant_id(),
            IssuanceId::new(),
            issuance.rule_id,
            issuance.customer_id,
            issuance.idempotency_key,
            issuance.expires_at,
            hold_for,
        ))
        .get_result(self.0.db())
        .await
        .map_err(expiry_before_issue)?;
        Ok(held)
    }

    #[tracing::instrument(name = "loyalty.issuances.confirm_hold", skip_all, fields(tenant_id = %self.0.tenant_id()))]
    async fn confirm_hold(&mut self, id: IssuanceId) -> Result<Issued> {
        let JsonAnswer(confirmed) = diesel::select(settle_hold(self.0.tenant_id(), id, "confirm"))
            .get_result(self.0.db())
            .await?;
        Ok(confirmed)
    }

    #[tracing::instrument(name = "loyalty.issuances.void_hold", skip_all, fields(tenant_id = %self.0.tenant_id()))]
    async fn void_hold(&mut self, id: IssuanceId) -> Result<Issued> {
        let JsonAnswer(voided) = diesel::select(settle_hold(self.0.tenant_id(), id, "void"))
            .get_result(self.0.db())
            .await?;
        Ok(voided)
    }

    #[tracing::instrument(name = "loyalty.issuances.reverse_redemption", skip_all, fields(tenant_id = %self.0.tenant_id()))]
    async fn reverse_redemption(&mut self, id: IssuanceId, window: Duration) -> Result<Issued> {
        let window = PgInterval::from_microseconds(
            i64::try_from(window.as_micros())
                .ok()
                .filter(|us| *us <= MAX_WINDOW_MICROS)
                .ok_or_else(|| Error::invalid("window", "must be at most 10 years"))?,
        );
        let JsonAnswer(reversed) =
            diesel::select(reverse_redemption(self.0.tenant_id(), id, window))
                .get_result(self.0.db())
                .await?;
        Ok(reversed)
    }

    #[tracing::instrument(name = "loyalty.issuances.cancel", skip_all, fields(tenant_id = %self.0.tenant_id()))]
    async fn cancel(&mut self, id: IssuanceId) -> Result<Issued> {
        let JsonAnswer(cancelled) = diesel::select(cancel_issuance(self.0.tenant_id(), id))
            .get_result(self.0.db())
            .await?;
        Ok(cancelled)
    }

    #[tracing::instrument(name = "loyalty.issuances.expire_due", skip_all, fields(tenant_id = %self.0.tenant_id()))]
    async fn expire_due(&mut self, now: DateTime<Utc>, batch: u32) -> Result<u32> {
        let batch = validate::page_limit(batch)?;
        let expired: i32 = diesel::select(expire_issuances(self.0.tenant_id(), now, batch as i32))
            .get_result(self.0.db())
            .await?;
        Ok(expired.unsigned_abs())
    }

    async fn get(&mut self, id: IssuanceId) -> Result<Issuance> {
        Ok(issuances::table
            .filter(issuances::tenant_id.eq(self.0.tenant_id()))
            .filter(issuances::id.eq(id))
            .select(Issuance::as_select())
            .get_result(self.0.db())
            .await?)
    }

    async fn find_by_key(&mut self, idempotency_key: &str) -> Result<Option<Issuance>> {
        Ok(issuances::table
            .filter(issuances::tenant_id.eq(self.0.tenant_id()))
            .filter(issuances::idempotency_key.eq(idempotency_key))
            .select(Issuance::as_select())
            .get_result(self.0.db())
            .await
            .optional()?)
    }

    async fn find_by_code(&mut self, code: &str) -> Result<Option<Issuance>> {
        let handed_out = voucher_codes::table
            .filter(voucher_codes::tenant_id.eq(self.0.tenant_id()))
            .filter(voucher_codes::code.eq(code))
            .select(voucher_codes::id.nullable());
        Ok(issuances::table
            .filter(issuances::tenant_id.eq(self.0.tenant_id()))
            .filter(issuances::voucher_code_id.eq_any(handed_out))
            .select(Issuance::as_select())
            .get_result(self.0.db())
            .await
            .optional()?)
    }

    async fn list_for_customer(
        &mut self,
        customer_id: CustomerId,
        page: KeysetPage<IssuanceId>,
    ) -> Result<Vec<Issuance>> {
        let limit = validate::page_limit(page.limit)?;
        let mut query = issuances::table
            .filter(issuances::tenant_id.eq(self.0.tenant_id()))
            .filter(issuances::customer_id.eq(customer_id))
            .order((issuances::issued_at.desc(), issuances::id.desc()))
            .limit(limit)
            .select(Issuance::as_select())
            .into_boxed();
        if let Some(after) = page.after {
            query = query.filter(
                issuances::issued_at.lt(after.at).or(issuances::issued_at
                    .eq(after.at)
                    .and(issuances::id.lt(after.id))),
            );
        }
        Ok(query.load(self.0.db()).await?)
    }
}
