//! Voucher-code pools: codes per reward, claimed one at a time without two
//! callers ever getting the same code.

use chrono::{DateTime, Utc};
use diesel::prelude::*;
use diesel::sql_types::{Array, Nullable, Text, Timestamptz, Uuid as SqlUuid};
use diesel_async::RunQueryDsl;
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::ids::{IssuanceId, RewardId, TenantId, VoucherCodeId};
use crate::refusal::Refusal;
use crate::schema::voucher_codes;
use crate::tenant::TenantConn;

pub use crate::status::VoucherStatus;

/// A row of `voucher_codes`.
#[derive(
    Debug, Clone, PartialEq, Queryable, QueryableByName, Selectable, Serialize, Deserialize,
)]
#[diesel(table_name = voucher_codes, check_for_backend(diesel::pg::Pg))]
pub struct VoucherCode {
    pub tenant_id: TenantId,
    pub id: VoucherCodeId,
    pub reward_id: RewardId,
    pub code: String,
    pub status: VoucherStatus,
    pub issuance_id: Option<IssuanceId>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    pub issued_at: Option<DateTime<Utc>>,
}

/// What [`VoucherCodeRepository::import`] did.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImportReport {
    /// Codes added to the pool.
    pub inserted: u64,
    /// Codes not added because the pool already had them, or because they
    /// appeared earlier in the same import; in input order.
    pub duplicates: Vec<String>,
}

/// How many codes of a reward are in each status.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct StatusCounts {
    pub available: i64,
    pub reserved: i64,
    pub issued: i64,
    pub invalid: i64,
}

/// Codes per import statement: one array parameter each, far below the
/// protocol's 65,535-parameter limit, and a statement size that keeps memory flat.
pub const IMPORT_CHUNK: usize = 20_000;

/// Voucher-code pools of one tenant.
pub trait VoucherCodeRepository {
    /// Adds codes to a reward's pool, any number, in chunks of
    /// [`IMPORT_CHUNK`]. Codes already in the pool are reported, not
    /// re-inserted. Nothing is written if any code is empty or longer than
    /// 100 characters.
    fn import(
        &mut self,
        reward_id: RewardId,
        codes: &[String],
    ) -> impl Future<Output = Result<ImportReport>> + Send;
    /// Claims one available code for an issuance being created in this same
    /// transaction (the reference is checked at commit). Refused with
    /// [`crate::Refusal::NoCodesAvailable`] when the reward has none left;
    /// concurrent callers skip each other's codes rather than wait.
    fn reserve(
        &mut self,
        reward_id: RewardId,
        issuance_id: IssuanceId,
    ) -> impl Future<Output = Result<VoucherCode>> + Send;
    /// Marks a reserved code as delivered to the customer and stamps
    /// `issued_at`.
    fn mark_issued(
        &mut self,
        id: VoucherCodeId,
    ) -> impl Future<Output = Result<VoucherCode>> + Send;
    /// Withdraws an available code from the pool.
    fn invalidate(&mut self, id: VoucherCodeId)
    -> impl Future<Output = Result<VoucherCode>> + Send;
    /// A code of a reward, by its text.
    fn find(
        &mut self,
        reward_id: RewardId,
        code: &str,
    ) -> impl Future<Output = Result<Option<VoucherCode>>> + Send;
    /// Codes of a reward by status.
    fn counts(&mut self, reward_id: RewardId) -> impl Future<Output = Result<StatusCounts>> + Send;
}

/// [`VoucherCodeRepository`] on a tenant guard: `tx.voucher_codes()`.
#[derive(Debug)]
pub struct VoucherCodes<'t>(&'t mut TenantConn);

impl TenantConn {
    /// This tenant's voucher-code pools.
    pub fn voucher_codes(&mut self) -> VoucherCodes<'_> {
        VoucherCodes(self)
    }
}

#[derive(QueryableByName)]
struct Duplicate {
    #[diesel(sql_type = Text)]
    code: String,
}

impl VoucherCodes<'_> {
    /// The error for a code that was not in the status an update required.
    async fn not_in(&mut self, id: VoucherCodeId, required: VoucherStatus) -> Error {
        let current = voucher_codes::table
            .filter(voucher_codes::id.eq(id))
            .select(voucher_codes::status)
            .get_result::<VoucherStatus>(self.0.db())
            .await;
        match current {
            Ok(status) => Error::VoucherCodeStatus { status, required },
            Err(e) => e.into(),
        }
    }
}

impl VoucherCodeRepository for VoucherCodes<'_> {
    async fn import(&mut self, reward_id: RewardId, codes: &[String]) -> Result<ImportReport> {
        if let Some((n, bad)) = codes
            .iter()
            .enumerate()
            .find(|(_, code)| !(1..=100).contains(&code.chars().count()))
        {
            return Err(Error::invalid(
                "codes",
                format!("code #{n} ({bad:?}) must be 1 to 100 characters"),
            ));
        }
        let tenant = self.0.tenant_id();
        let mut report = ImportReport::default();
        for chunk in codes.chunks(IMPORT_CHUNK) {
            // Time-ordered ids keep the primary key's inserts on its right
            // edge, and tell afterwards which rows of the chunk went in.
            let ids: Vec<VoucherCodeId> = chunk.iter().map(|_| VoucherCodeId::new()).collect();
            let inserted = diesel::sql_query(
                "INSERT INTO voucher_codes (tenant_id, id, reward_id, code) \
                 SELECT $1, id, $2, code FROM unnest($3::uuid[], $4::text[]) AS input(id, code) \
                 ON CONFLICT (tenant_id, reward_id, code) DO NOTHING",
            )
            .bind::<SqlUuid, _>(tenant)
            .bind::<SqlUuid, _>(reward_id)
            .bind::<Array<SqlUuid>, _>(&ids)
            .bind::<Array<Text>, _>(chunk)
            .execute(self.0.db())
            .await?;
            report.inserted += inserted as u64;
            if inserted < chunk.len() {
                // Rare: only a chunk with duplicates pays for finding them.
                let duplicates: Vec<Duplicate> = diesel::sql_query(
                    "SELECT input.code FROM unnest($2::uuid[], $3::text[]) \
                            WITH ORDINALITY AS input(id, code, n) \
                      WHERE NOT EXISTS (SELECT 1 FROM voucher_codes v \
                                         WHERE v.tenant_id = $1 AND v.id = input.id) \
                      ORDER BY input.n",
                )
                .bind::<SqlUuid, _>(tenant)
                .bind::<Array<SqlUuid>, _>(&ids)
                .bind::<Array<Text>, _>(chunk)
                .load(self.0.db())
                .await?;
                report
                    .duplicates
                    .extend(duplicates.into_iter().map(|d| d.code));
            }
        }
        Ok(report)
    }

    async fn reserve(
        &mut self,
        reward_id: RewardId,
        issuance_id: IssuanceId,
    ) -> Result<VoucherCode> {
        let tenant = self.0.tenant_id();
        diesel::sql_query(
            "UPDATE voucher_codes SET status = 'reserved', issuance_id = $3 \
              WHERE tenant_id = $1 \
                AND id = (SELECT id FROM voucher_codes \
                           WHERE tenant_id = $1 AND reward_id = $2 AND status = 'available' \
                           LIMIT 1 FOR UPDATE SKIP LOCKED) \
             RETURNING *",
        )
        .bind::<SqlUuid, _>(tenant)
        .bind::<SqlUuid, _>(reward_id)
        .bind::<SqlUuid, _>(issuance_id)
        .get_result(self.0.db())
        .await
        .optional()?
        .ok_or(Error::Refused(Refusal::NoCodesAvailable))
    }

    async fn mark_issued(&mut self, id: VoucherCodeId) -> Result<VoucherCode> {
        let issued = diesel::update(
            voucher_codes::table
                .filter(voucher_codes::id.eq(id))
                .filter(voucher_codes::status.eq(VoucherStatus::Reserved)),
        )
        .set((
            voucher_codes::status.eq(VoucherStatus::Issued),
            voucher_codes::issued_at.eq(diesel::dsl::sql::<Nullable<Timestamptz>>("now()")),
        ))
        .returning(VoucherCode::as_returning())
        .get_result(self.0.db())
        .await
        .optional()?;
        match issued {
            Some(code) => Ok(code),
            None => Err(self.not_in(id, VoucherStatus::Reserved).await),
        }
    }

    async fn invalidate(&mut self, id: VoucherCodeId) -> Result<VoucherCode> {
        let withdrawn = diesel::update(
            voucher_codes::table
                .filter(voucher_codes::id.eq(id))
                .filter(voucher_codes::status.eq(VoucherStatus::Available)),
        )
        .set(voucher_codes::status.eq(VoucherStatus::Invalid))
        .returning(VoucherCode::as_returning())
        .get_result(self.0.db())
        .await
        .optional()?;
        match withdrawn {
            Some(code) => Ok(code),
            None => Err(self.not_in(id, VoucherStatus::Available).await),
        }
    }

    async fn find(&mut self, reward_id: RewardId, code: &str) -> Result<Option<VoucherCode>> {
        Ok(voucher_codes::table
            .filter(voucher_codes::reward_id.eq(reward_id))
            .filter(voucher_codes::code.eq(code))
            .select(VoucherCode::as_select())
            .get_result(self.0.db())
            .await
            .optional()?)
    }

    async fn counts(&mut self, reward_id: RewardId) -> Result<StatusCounts> {
        let rows: Vec<(VoucherStatus, i64)> = voucher_codes::table
            .filter(voucher_codes::reward_id.eq(reward_id))
            .group_by(voucher_codes::status)
            .select((voucher_codes::status, diesel::dsl::count_star()))
            .load(self.0.db())
            .await?;
        let mut counts = StatusCounts::default();
        for (status, n) in rows {
            *match status {
                VoucherStatus::Available => &mut counts.available,
                VoucherStatus::Reserved => &mut counts.reserved,
                VoucherStatus::Issued => &mut counts.issued,
                VoucherStatus::Invalid => &mut counts.invalid,
            } = n;
        }
        Ok(counts)
    }
}
