//! Budgets and their append-only ledger.
//!
//! Every movement is one call to the SQL function `loyalty.move_budget`, which locks
//! the budget row, checks, updates and writes the ledger entry in the same
//! statement. At every moment `hard_cap`, `reserved` and `spent` equal what
//! the budget's entries sum to; [`BudgetRepository::verify_ledger`] checks it.

use bigdecimal::{BigDecimal, Zero};
use chrono::{DateTime, Utc};
use diesel::prelude::*;
use diesel::sql_types::{Bool, Nullable, Numeric, Text, Uuid as SqlUuid};
use diesel_async::RunQueryDsl;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::error::{Error, Result};
use crate::ids::{BudgetId, LedgerEntryId, TenantId};
use crate::money::Currency;
use crate::page::Page;
use crate::refusal::Refusal;
use crate::schema::{budgets, ledger_entries};
use crate::tenant::TenantConn;
use crate::text_enum::text_enum;
use crate::validate;

text_enum! {
    /// What a ledger entry did to its budget.
    pub enum EntryType {
        /// Moved `amount` into `reserved`.
        Reserve => "reserve",
        /// Gave a reservation back.
        Release => "release",
        /// Turned a reservation into `spent`.
        Commit => "commit",
        /// Raised `hard_cap`.
        Topup => "topup",
        /// Undid a redemption: moved `amount` from `spent` back to `reserved`.
        Reversal => "reversal",
    }
}

/// A row of `budgets`.
#[derive(Debug, Clone, PartialEq, Queryable, Selectable, Serialize, Deserialize)]
#[diesel(table_name = budgets, check_for_backend(diesel::pg::Pg))]
pub struct Budget {
    pub tenant_id: TenantId,
    pub id: BudgetId,
    pub name: String,
    pub currency: Currency,
    pub hard_cap: BigDecimal,
    pub reserved: BigDecimal,
    pub spent: BigDecimal,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

impl Budget {
    /// What can still be reserved.
    pub fn available(&self) -> BigDecimal {
        &self.hard_cap - &self.reserved - &self.spent
    }
}

/// A row of `ledger_entries`.
#[derive(Debug, Clone, PartialEq, Queryable, Selectable, Serialize, Deserialize)]
#[diesel(table_name = ledger_entries, check_for_backend(diesel::pg::Pg))]
pub struct LedgerEntry {
    pub tenant_id: TenantId,
    pub id: LedgerEntryId,
    pub budget_id: BudgetId,
    pub entry_type: EntryType,
    pub amount: BigDecimal,
    pub currency: Currency,
    pub ref_type: String,
    pub ref_id: Uuid,
    /// Set on the reserve entries of one batch issuance, which reserved
    /// their whole cost at once.
    pub batch_id: Option<Uuid>,
    pub created_at: DateTime<Utc>,
    /// Set on a settlement (commit or release) of an issuance whose
    /// redemption was reversed: the second settlement of its reservation.
    pub reopened: bool,
}

/// Input for [`BudgetRepository::create`]. The hard cap is booked as the
/// budget's first top-up.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NewBudget {
    pub name: String,
    pub currency: Currency,
    pub hard_cap: BigDecimal,
}

/// The ref_type issuances book their reservations under.
const ISSUANCE_REF: &str = "issuance";

/// What a movement refers to. Each `(entry type, ref_type, ref_id)` is booked
/// at most once: a retry is a replay with no second effect.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LedgerRef {
    pub ref_type: String,
    pub ref_id: Uuid,
}

impl LedgerRef {
    /// A reference to `ref_id` of kind `ref_type`, for example `("order", id)`.
    pub fn new(ref_type: impl Into<String>, ref_id: impl Into<Uuid>) -> Self {
        LedgerRef {
            ref_type: ref_type.into(),
            ref_id: ref_id.into(),
        }
    }
}

/// The budget's figures after a movement.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Movement {
    /// False when the same movement had been booked before and this call
    /// changed nothing.
    pub applied: bool,
    pub hard_cap: BigDecimal,
    pub reserved: BigDecimal,
    pub spent: BigDecimal,
}

#[derive(QueryableByName)]
struct MoveRow {
    #[diesel(sql_type = Nullable<Text>)]
    refusal: Option<String>,
    #[diesel(sql_type = Bool)]
    replayed: bool,
    #[diesel(sql_type = Nullable<Numeric>)]
    hard_cap: Option<BigDecimal>,
    #[diesel(sql_type = Nullable<Numeric>)]
    reserved: Option<BigDecimal>,
    #[diesel(sql_type = Nullable<Numeric>)]
    spent: Option<BigDecimal>,
}

/// A budget whose figures disagree with its ledger.
#[derive(Debug, Clone, PartialEq, QueryableByName, Serialize, Deserialize)]
pub struct LedgerMismatch {
    #[diesel(sql_type = SqlUuid)]
    pub budget_id: BudgetId,
    #[diesel(sql_type = Numeric)]
    pub hard_cap: BigDecimal,
    #[diesel(sql_type = Numeric)]
    pub reserved: BigDecimal,
    #[diesel(sql_type = Numeric)]
    pub spent: BigDecimal,
    #[diesel(sql_type = Numeric)]
    pub ledger_hard_cap: BigDecimal,
    #[diesel(sql_type = Numeric)]
    pub ledger_reserved: BigDecimal,
    #[diesel(sql_type = Numeric)]
    pub ledger_spent: BigDecimal,
}

/// Budgets and ledger of one tenant.
pub trait BudgetRepository {
    /// Creates a budget and books its hard cap as a top-up.
    fn create(&mut self, new: NewBudget) -> impl Future<Output = Result<Budget>> + Send;
    /// One budget, or [`Error::NotFound`].
    fn get(&mut self, id: BudgetId) -> impl Future<Output = Result<Budget>> + Send;
    /// Budgets, newest first, one offset page at a time.
    fn list(&mut self, page: Page) -> impl Future<Output = Result<Vec<Budget>>> + Send;
    /// Raises the hard cap; `ref_id` names the top-up so a retry is a replay.
    fn top_up(
        &mut self,
        id: BudgetId,
        amount: BigDecimal,
        ref_id: Uuid,
    ) -> impl Future<Output = Result<Movement>> + Send;
    /// Reserves `amount`, or refuses with [`Refusal::BudgetExhausted`] if that
    /// would cross the cap.
    fn reserve(
        &mut self,
        id: BudgetId,
        amount: BigDecimal,
        reference: LedgerRef,
    ) -> impl Future<Output = Result<Movement>> + Send;
    /// Gives back the reservation booked under `reference`, which must be for `amount`.
    fn release(
        &mut self,
        id: BudgetId,
        amount: BigDecimal,
        reference: LedgerRef,
    ) -> impl Future<Output = Result<Movement>> + Send;
    /// Spends the reservation booked under `reference`, which must be for `amount`.
    fn commit(
        &mut self,
        id: BudgetId,
        amount: BigDecimal,
        reference: LedgerRef,
    ) -> impl Future<Output = Result<Movement>> + Send;
    /// A budget's ledger, oldest first.
    fn ledger(
        &mut self,
        id: BudgetId,
        page: Page,
    ) -> impl Future<Output = Result<Vec<LedgerEntry>>> + Send;
    /// Every budget whose figures disagree with its ledger. Always empty,
    /// unless something wrote to the tables behind this crate's back.
    ///
    /// Issuances made through this guard reserve their cost at commit; this
    /// reserves it first, so it can be refused with [`Refusal::BudgetExhausted`].
    fn verify_ledger(&mut self) -> impl Future<Output = Result<Vec<LedgerMismatch>>> + Send;
}

/// [`BudgetRepository`] on a tenant guard: `tx.budgets()`.
#[derive(Debug)]
pub struct Budgets<'t>(&'t mut TenantConn);

impl TenantConn {
    /// This tenant's budgets and ledger.
    pub fn budgets(&mut self) -> Budgets<'_> {
        Budgets(self)
    }
}

impl Budgets<'_> {
    #[tracing::instrument(name = "loyalty.budgets.move", skip_all, fields(tenant_id = %self.0.tenant_id(), budget_id = %id, entry_type = ?entry_type))]
    async fn mv(
        &mut self,
        id: BudgetId,
        entry_type: EntryType,
        amount: &BigDecimal,
        reference: &LedgerRef,
    ) -> Result<Movement> {
        validate::amount("amount", amount)?;
        validate::text("ref_type", &reference.ref_type, 1, 50)?;
        if reference.ref_type == ISSUANCE_REF {
            return Err(Error::invalid(
                "ref_type",
                "\"issuance\" is booked only by the issuance functions",
            ));
        }
        let row: MoveRow = diesel::sql_query(
            "SELECT refusal::text, replayed, hard_cap, reserved, spent \
               FROM loyalty.move_budget($1, $2, $3, $4, $5, $6)",
        )
        .bind::<SqlUuid, _>(self.0.tenant_id())
        .bind::<SqlUuid, _>(id)
        .bind::<Text, _>(entry_type)
        .bind::<Numeric, _>(amount)
        .bind::<Text, _>(&reference.ref_type)
        .bind::<SqlUuid, _>(reference.ref_id)
        .get_result(self.0.db())
        .await?;
        if let Some(refusal) = row.refusal {
            return Err(Refusal::from_json(&refusal)
                .map(Error::Refused)
                .unwrap_or_else(|| unreadable_answer(&refusal)));
        }
        match (row.hard_cap, row.reserved, row.spent) {
            (Some(hard_cap), Some(reserved), Some(spent)) => Ok(Movement {
                applied: !row.replayed,
                hard_cap,
                reserved,
                spent,
            }),
            _ => Err(unreadable_answer("a movement without figures")),
        }
    }
}

/// A database older or newer than this crate answered something it cannot read.
fn unreadable_answer(answer: &str) -> Error {
    Error::Database(diesel::result::Error::DeserializationError(
        format!("unexpected answer from loyalty.move_budget: {answer}").into(),
    ))
}

impl BudgetRepository for Budgets<'_> {
    async fn create(&mut self, new: NewBudget) -> Result<Budget> {
        validate::text("name", &new.name, 1, 200)?;
        let opening_top_up = !new.hard_cap.is_zero();
        if opening_top_up {
            validate::amount("hard_cap", &new.hard_cap)?;
        }
        let tenant = self.0.tenant_id();
        let id = BudgetId::new();
        diesel::insert_into(budgets::table)
            .values((
                budgets::tenant_id.eq(tenant),
                budgets::id.eq(id),
                budgets::name.eq(new.name),
                budgets::currency.eq(new.currency),
            ))
            .execute(self.0.db())
            .await?;
        if opening_top_up {
            self.mv(
                id,
                EntryType::Topup,
                &new.hard_cap,
                &LedgerRef::new("budget", id),
            )
            .await?;
        }
        self.get(id).await
    }

    async fn list(&mut self, page: Page) -> Result<Vec<Budget>> {
        let limit = validate::page_limit(page.limit)?;
        Ok(budgets::table
            .filter(budgets::tenant_id.eq(self.0.tenant_id()))
            .order((budgets::created_at.desc(), budgets::id.desc()))
            .limit(limit)
            .offset(i64::from(page.offset))
            .select(Budget::as_select())
            .load(self.0.db())
            .await?)
    }

    async fn get(&mut self, id: BudgetId) -> Result<Budget> {
        Ok(budgets::table
            .filter(budgets::tenant_id.eq(self.0.tenant_id()))
            .filter(budgets::id.eq(id))
            .select(Budget::as_select())
            .get_result(self.0.db())
            .await?)
    }

    async fn top_up(&mut self, id: BudgetId, amount: BigDecimal, ref_id: Uuid) -> Result<Movement> {
        self.mv(
            id,
            EntryType::Topup,
            &amount,
            &LedgerRef::new("topup", ref_id),
        )
        .await
    }

    async fn reserve(
        &mut self,
        id: BudgetId,
        amount: BigDecimal,
        reference: LedgerRef,
    ) -> Result<Movement> {
        self.mv(id, EntryType::Reserve, &amount, &reference).await
    }

    async fn release(
        &mut self,
        id: BudgetId,
        amount: BigDecimal,
        reference: LedgerRef,
    ) -> Result<Movement> {
        self.mv(id, EntryType::Release, &amount, &reference).await
    }

    async fn commit(
        &mut self,
        id: BudgetId,
        amount: BigDecimal,
        reference: LedgerRef,
    ) -> Result<Movement> {
        self.mv(id, EntryType::Commit, &amount, &reference).await
    }

    async fn ledger(&mut self, id: BudgetId, page: Page) -> Result<Vec<LedgerEntry>> {
        let limit = validate::page_limit(page.limit)?;
        Ok(ledger_entries::table
            .filter(ledger_entries::tenant_id.eq(self.0.tenant_id()))
            .filter(ledger_entries::budget_id.eq(id))
            .order((ledger_entries::created_at, ledger_entries::id))
            .limit(limit)
            .offset(i64::from(page.offset))
            .select(LedgerEntry::as_select())
            .load(self.0.db())
            .await?)
    }

    async fn verify_ledger(&mut self) -> Result<Vec<LedgerMismatch>> {
        let tenant = self.0.tenant_id();
        diesel::sql_query("SELECT loyalty.settle_now($1)")
            .bind::<SqlUuid, _>(tenant)
            .execute(self.0.db())
            .await?;
        Ok(diesel::sql_query(
            "SELECT b.id AS budget_id, b.hard_cap, b.reserved, b.spent, \
                    coalesce(l.topped_up, 0) AS ledger_hard_cap, \
                    coalesce(l.reserved, 0) AS ledger_reserved, \
                    coalesce(l.spent, 0) AS ledger_spent \
               FROM budgets b \
               LEFT JOIN ( \
                   SELECT budget_id, \
                          sum(amount) FILTER (WHERE entry_type = 'topup') AS topped_up, \
                          coalesce(sum(amount) FILTER (WHERE entry_type IN ('reserve', 'reversal')), 0) \
                            - coalesce(sum(amount) FILTER (WHERE entry_type IN ('release', 'commit')), 0) \
                            AS reserved, \
                          coalesce(sum(amount) FILTER (WHERE entry_type = 'commit'), 0) \
                            - coalesce(sum(amount) FILTER (WHERE entry_type = 'reversal'), 0) AS spent \
                     FROM ledger_entries WHERE tenant_id = $1 GROUP BY budget_id) l \
                 ON l.budget_id = b.id \
              WHERE b.tenant_id = $1 \
                AND (b.hard_cap <> coalesce(l.topped_up, 0) \
                     OR b.reserved <> coalesce(l.reserved, 0) \
                     OR b.spent <> coalesce(l.spent, 0)) \
              ORDER BY b.id",
        )
        .bind::<SqlUuid, _>(tenant)
        .load(self.0.db())
        .await?)
    }
}
