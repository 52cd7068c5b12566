//! Staff users: the people who run a tenant's loyalty programme.

use chrono::{DateTime, Utc};
use diesel::prelude::*;
use diesel::sql_types::Text;
use diesel_async::RunQueryDsl;
use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::error::Result;
use crate::ids::{StaffUserId, TenantId};
use crate::page::Page;
use crate::repo::audit_logs;
use crate::schema::staff_users;
use crate::tenant::TenantConn;
use crate::text_enum::text_enum;
use crate::validate;

diesel::define_sql_function!(fn lower(text: Text) -> Text);

text_enum! {
    /// What a staff user may do.
    pub enum StaffRole {
        Owner => "owner",
        Admin => "admin",
        Staff => "staff",
        Viewer => "viewer",
    }
}

text_enum! {
    /// Whether a staff user may sign in.
    pub enum StaffStatus {
        Active => "active",
        Disabled => "disabled",
    }
}

/// A row of `staff_users`. The password hash is never printed by `Debug`
/// and never serialized.
#[derive(Clone, PartialEq, Queryable, Selectable, Serialize, Deserialize)]
#[diesel(table_name = staff_users, check_for_backend(diesel::pg::Pg))]
pub struct StaffUser {
    pub tenant_id: TenantId,
    pub id: StaffUserId,
    pub email: String,
    pub full_name: String,
    pub role: StaffRole,
    #[serde(skip)]
    pub pwd_hash: String,
    pub status: StaffStatus,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

impl std::fmt::Debug for StaffUser {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StaffUser")
            .field("id", &self.id)
            .field("email", &self.email)
            .field("full_name", &self.full_name)
            .field("role", &self.role)
            .field("pwd_hash", &"<redacted>")
            .field("status", &self.status)
            .finish_non_exhaustive()
    }
}

/// Input for [`StaffUserRepository::create`]. `pwd_hash` is an already
/// hashed password (argon2 or similar); this crate never sees a password.
#[derive(Clone, PartialEq)]
pub struct NewStaffUser {
    pub email: String,
    pub full_name: String,
    pub role: StaffRole,
    pub pwd_hash: String,
}

impl std::fmt::Debug for NewStaffUser {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NewStaffUser")
            .field("email", &self.email)
            .field("full_name", &self.full_name)
            .field("role", &self.role)
            .field("pwd_hash", &"<redacted>")
            .finish()
    }
}

/// Staff users of one tenant. Emails are unique per tenant, ignoring case.
pub trait StaffUserRepository {
    /// Adds a staff user; [`crate::Error::Conflict`] if the email is taken.
    fn create(&mut self, new: NewStaffUser) -> impl Future<Output = Result<StaffUser>> + Send;
    /// One staff user, or [`crate::Error::NotFound`].
    fn get(&mut self, id: StaffUserId) -> impl Future<Output = Result<StaffUser>> + Send;
    /// The staff user with this email, ignoring case, if any.
    fn find_by_email(
        &mut self,
        email: &str,
    ) -> impl Future<Output = Result<Option<StaffUser>>> + Send;
    /// Staff users, newest first, one offset page at a time.
    fn list(&mut self, page: Page) -> impl Future<Output = Result<Vec<StaffUser>>> + Send;
    /// Disables a staff user (or enables one again) and returns the updated
    /// row, audited as `staff.disabled` or `staff.enabled`.
    fn set_status(
        &mut self,
        id: StaffUserId,
        status: StaffStatus,
    ) -> impl Future<Output = Result<StaffUser>> + Send;
    /// Changes the role and returns the updated row, audited as
    /// `staff.role_changed`.
    fn update_role(
        &mut self,
        id: StaffUserId,
        role: StaffRole,
    ) -> impl Future<Output = Result<StaffUser>> + Send;
}

/// [`StaffUserRepository`] on a tenant guard: `tx.staff_users()`.
#[derive(Debug)]
pub struct StaffUsers<'t>(&'t mut TenantConn);

impl TenantConn {
    /// This tenant's staff.
    pub fn staff_users(&mut self) -> StaffUsers<'_> {
        StaffUsers(self)
    }
}

impl StaffUserRepository for StaffUsers<'_> {
    async fn create(&mut self, new: NewStaffUser) -> Result<StaffUser> {
        validate::email(&new.email)?;
        validate::text("full_name", &new.full_name, 1, 200)?;
        validate::text("pwd_hash", &new.pwd_hash, 1, 1024)?;
        let tenant = self.0.tenant_id();
        Ok(diesel::insert_into(staff_users::table)
            .values((
                staff_users::tenant_id.eq(tenant),
                staff_users::id.eq(StaffUserId::new()),
                staff_users::email.eq(new.email),
                staff_users::full_name.eq(new.full_name),
                staff_users::role.eq(new.role),
                staff_users::pwd_hash.eq(new.pwd_hash),
            ))
            .returning(StaffUser::as_returning())
            .get_result(self.0.db())
            .await?)
    }

    async fn get(&mut self, id: StaffUserId) -> Result<StaffUser> {
        Ok(staff_users::table
            .filter(staff_users::tenant_id.eq(self.0.tenant_id()))
            .filter(staff_users::id.eq(id))
            .select(StaffUser::as_select())
            .get_result(self.0.db())
            .await?)
    }

    async fn find_by_email(&mut self, email: &str) -> Result<Option<StaffUser>> {
        validate::email(email)?;
        Ok(staff_users::table
            .filter(staff_users::tenant_id.eq(self.0.tenant_id()))
            .filter(lower(staff_users::email).eq(lower(email)))
            .select(StaffUser::as_select())
            .get_result(self.0.db())
            .await
            .optional()?)
    }

    async fn list(&mut self, page: Page) -> Result<Vec<StaffUser>> {
        let limit = validate::page_limit(page.limit)?;
        Ok(staff_users::table
            .filter(staff_users::tenant_id.eq(self.0.tenant_id()))
            .order((staff_users::created_at.desc(), staff_users::id.desc()))
            .limit(limit)
            .offset(i64::from(page.offset))
            .select(StaffUser::as_select())
            .load(self.0.db())
            .await?)
    }

    async fn set_status(&mut self, id: StaffUserId, status: StaffStatus) -> Result<StaffUser> {
        let updated = diesel::update(
            staff_users::table
                .filter(staff_users::tenant_id.eq(self.0.tenant_id()))
                .filter(staff_users::id.eq(id)),
        )
        .set(staff_users::status.eq(status))
        .returning(StaffUser::as_returning())
        .get_result(self.0.db())
        .await?;
        let action = match status {
            StaffStatus::Active => "staff.enabled",
            StaffStatus::Disabled => "staff.disabled",
        };
        audit_logs::record(self.0, action, "staff_user", id.0, json!({})).await?;
        Ok(updated)
    }

    async fn update_role(&mut self, id: StaffUserId, role: StaffRole) -> Result<StaffUser> {
        let updated = diesel::update(
            staff_users::table
                .filter(staff_users::tenant_id.eq(self.0.tenant_id()))
                .filter(staff_users::id.eq(id)),
        )
        .set(staff_users::role.eq(role))
        .returning(StaffUser::as_returning())
        .get_result(self.0.db())
        .await?;
        audit_logs::record(
            self.0,
            "staff.role_changed",
            "staff_user",
            id.0,
            json!({ "role": role }),
        )
        .await?;
        Ok(updated)
    }
}
