//! [`Platform`]: tenant provisioning, the one scope that runs without a
//! tenant. It runs as the login role, outside any tenant context, and reaches
//! the `tenants` table and nothing tenant-owned.

use diesel::prelude::*;
use diesel_async::RunQueryDsl;
use serde_json::Value;

use crate::error::Result;
use crate::ids::TenantId;
use crate::repo::tenants::{
    NewTenant, Tenant, TenantPage, TenantRepository, TenantStatus, validate_theme,
};
use crate::schema::tenants;
use crate::store::Store;
use crate::validate;

/// The platform scope: [`TenantRepository`] on the store's pool.
#[derive(Debug, Clone, Copy)]
pub struct Platform<'a> {
    store: &'a Store,
}

impl Store {
    /// Tenant provisioning, the one scope that runs without a tenant.
    pub fn platform(&self) -> Platform<'_> {
        Platform { store: self }
    }
}

impl TenantRepository for Platform<'_> {
    async fn create(&self, new: NewTenant) -> Result<Tenant> {
        new.validate()?;
        let mut conn = self.store.pool().get().await?;
        Ok(diesel::insert_into(tenants::table)
            .values(&new)
            .returning(Tenant::as_returning())
            .get_result(&mut conn)
            .await?)
    }

    async fn get(&self, id: TenantId) -> Result<Tenant> {
        let mut conn = self.store.pool().get().await?;
        Ok(tenants::table
            .find(id)
            .select(Tenant::as_select())
            .get_result(&mut conn)
            .await?)
    }

    async fn list(&self, page: TenantPage) -> Result<Vec<Tenant>> {
        let limit = validate::page_limit(page.limit)?;
        let mut conn = self.store.pool().get().await?;
        let mut query = tenants::table
            .select(Tenant::as_select())
            .order(tenants::id)
            .limit(limit)
            .into_boxed();
        if let Some(after) = page.after {
            query = query.filter(tenants::id.gt(after));
        }
        Ok(query.load(&mut conn).await?)
    }

    async fn update_theme(&self, id: TenantId, theme: Value) -> Result<Tenant> {
        validate_theme(&theme)?;
        let mut conn = self.store.pool().get().await?;
        Ok(diesel::update(tenants::table.find(id))
            .set(tenants::theme.eq(theme))
            .returning(Tenant::as_returning())
            .get_result(&mut conn)
            .await?)
    }

    async fn set_status(&self, id: TenantId, status: TenantStatus) -> Result<Tenant> {
        let mut conn = self.store.pool().get().await?;
        Ok(diesel::update(tenants::table.find(id))
            .set(tenants::status.eq(status))
            .returning(Tenant::as_returning())
            .get_result(&mut conn)
            .await?)
    }
}
