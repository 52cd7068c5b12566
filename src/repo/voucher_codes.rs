//! Voucher-code pools: codes per reward, claimed one at a time without two
//! callers ever getting the same code.

use chrono::{DateTime, Utc};
use diesel::prelude::*;
use diesel::sql_types::{Array, Text, Uuid as SqlUuid};
use diesel_async::{AsyncPgConnection, RunQueryDsl};
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::ids::{IssuanceId, RewardId, TenantId, VoucherCodeId};
use crate::schema::voucher_codes;
use crate::tenant::TenantConn;
use crate::validate;

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
    /// [`IMPORT_CHUNK`]. Codes the tenant already has, in this pool or
    /// another reward's, are reported, not re-inserted. Nothing is written if any code is empty or longer than
    /// 100 characters.
    fn import(
        &mut self,
        reward_id: RewardId,
        codes: &[String],
    ) -> impl Future<Output = Result<ImportReport>> + Send;
    /// Marks a reserved code (one an issuance holds) as delivered to the
    /// customer and stamps `issued_at`. Call it once the code has been sent
    /// (an outbox worker does, after each send): from then on a cancelled
    /// issuance's code is withdrawn, never handed to someone else, where an
    /// undelivered one goes back to the pool. Marking a delivered code
    /// again returns it unchanged, so a retried send is safe. A code that
    /// is available or invalid is refused with [`Error::VoucherCodeStatus`];
    /// an unknown one with [`Error::NotFound`].
    fn mark_issued(
        &mut self,
        id: VoucherCodeId,
    ) -> impl Future<Output = Result<VoucherCode>> + Send;
    /// Withdraws an available code from the pool for good. A code in any
    /// other status is refused with [`Error::VoucherCodeStatus`]; an unknown
    /// one with [`Error::NotFound`].
    fn invalidate(&mut self, id: VoucherCodeId)
    -> impl Future<Output = Result<VoucherCode>> + Send;
    /// One code, or [`Error::NotFound`].
    fn get(&mut self, id: VoucherCodeId) -> impl Future<Output = Result<VoucherCode>> + Send;
    /// A code by its text: codes are unique in their tenant, across rewards.
    fn find(&mut self, code: &str) -> impl Future<Output = Result<Option<VoucherCode>>> + Send;
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

diesel::define_sql_function! {
    #[sql_name = "loyalty.advance_code"]
    fn advance_code(tenant_id: SqlUuid, id: SqlUuid, to: Text) -> Bool;
}

impl VoucherCodes<'_> {
    /// Moves a code to `to` through the SQL layer and reads it back, in one
    /// round trip: the read is sent right behind the move, so it sees the
    /// moved row or, when the code was not in `required`, why not.
    async fn advance(
        &mut self,
        id: VoucherCodeId,
        to: VoucherStatus,
        required: VoucherStatus,
    ) -> Result<VoucherCode> {
        let tenant = self.0.tenant_id();
        let conn: &AsyncPgConnection = self.0.db();
        let (mut for_move, mut for_read) = (conn, conn);
        let (moved, code) = tokio::join!(
            // Polled, and so sent, in this order.
            biased;
            diesel::select(advance_code(tenant, id, to.as_str())).get_result::<bool>(&mut for_move),
            voucher_codes::table
                .filter(voucher_codes::tenant_id.eq(tenant))
                .filter(voucher_codes::id.eq(id))
                .select(VoucherCode::as_select())
                .get_result(&mut for_read),
        );
        // The move was sent first: its failure is the cause of the read's.
        let moved = moved?;
        let code = code?;
        match moved {
            true => Ok(code),
            false => Err(Error::VoucherCodeStatus {
                status: code.status,
                required,
            }),
        }
    }
}

impl VoucherCodeRepository for VoucherCodes<'_> {
    async fn import(&mut self, reward_id: RewardId, codes: &[String]) -> Result<ImportReport> {
        if let Some((n, bad)) = codes
            .iter()
            .enumerate()
            .find(|(_, code)| validate::text("codes", code, 1, 100).is_err())
        {
            return Err(Error::invalid(
                "codes",
                format!("code #{n} ({bad:?}) must be 1 to 100 characters, without NUL"),
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
                 ON CONFLICT (tenant_id, code) DO NOTHING",
            )
            .bind::<SqlUuid, _>(tenant)
            .bind::<SqlUuid, _>(reward_id)
            .bind::<Array<SqlUuid>, _>(&ids)
            .bind::<Array<Text>, _>(chunk)
            .execute(self.0.db())
            .await?;
            // On Citus the count is of the rows the coordinator sent to the
            // shard, duplicates included, so it is not taken at its word.
            if inserted < chunk.len() || self.0.on_citus() {
                // Rare on plain PostgreSQL: only a chunk with duplicates
                // pays for finding them.
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
                report.inserted += (chunk.len() - duplicates.len()) as u64;
                report
                    .duplicates
                    .extend(duplicates.into_iter().map(|d| d.code));
            } else {
                report.inserted += inserted as u64;
            }
        }
        Ok(report)
    }

    async fn mark_issued(&mut self, id: VoucherCodeId) -> Result<VoucherCode> {
        self.advance(id, VoucherStatus::Issued, VoucherStatus::Reserved)
            .await
    }

    async fn invalidate(&mut self, id: VoucherCodeId) -> Result<VoucherCode> {
        self.advance(id, VoucherStatus::Invalid, VoucherStatus::Available)
            .await
    }

    async fn get(&mut self, id: VoucherCodeId) -> Result<VoucherCode> {
        Ok(voucher_codes::table
            .filter(voucher_codes::tenant_id.eq(self.0.tenant_id()))
            .filter(voucher_codes::id.eq(id))
            .select(VoucherCode::as_select())
            .get_result(self.0.db())
            .await?)
    }

    async fn find(&mut self, code: &str) -> Result<Option<VoucherCode>> {
        Ok(voucher_codes::table
            .filter(voucher_codes::tenant_id.eq(self.0.tenant_id()))
            .filter(voucher_codes::code.eq(code))
            .select(VoucherCode::as_select())
            .get_result(self.0.db())
            .await
            .optional()?)
    }

    async fn counts(&mut self, reward_id: RewardId) -> Result<StatusCounts> {
        let rows: Vec<(VoucherStatus, i64)> = voucher_codes::table
            .filter(voucher_codes::tenant_id.eq(self.0.tenant_id()))
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
