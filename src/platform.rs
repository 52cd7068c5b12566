//! [`Platform`]: tenant provisioning, the one scope that runs without a
//! tenant. It acts as `loyalty_app`, like a guard, with the platform's proof
//! in context instead of a tenant's (see `in_platform_scope()`), which lets it
//! see and edit the `tenants` table and nothing tenant-owned.

use diesel::prelude::*;
use diesel::sql_types::Text;
use diesel_async::{AsyncPgConnection, RunQueryDsl, SimpleAsyncConnection};
use futures_util::FutureExt;
use futures_util::future::BoxFuture;
use serde_json::Value;

use crate::error::Result;
use crate::ids::TenantId;
use crate::repo::tenants::{
    NewTenant, Tenant, TenantPage, TenantRepository, TenantStatus, validate_theme,
};
use crate::schema::tenants;
use crate::store::Store;
use crate::validate;

diesel::define_sql_function! {
    #[sql_name = "loyalty.enter_platform"]
    fn enter_platform(proof: Text) -> Bool;
}

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

impl Platform<'_> {
    /// Runs `work` in a transaction of its own, in the platform scope.
    async fn run<T, Work>(&self, work: Work) -> Result<T>
    where
        T: Send,
        Work: for<'c> FnOnce(&'c mut AsyncPgConnection) -> BoxFuture<'c, QueryResult<T>> + Send,
    {
        let proof = self.store.guard_key().await?.platform_proof();
        let opening = self.store.session().opening.clone();
        let mut conn = self.store.checkout().await?;
        // Pinned, like a guard's: a login's own defaults (which it may set
        // with ALTER ROLE) do not decide them.
        Ok(conn
            .build_transaction()
            .read_committed()
            .read_write()
            .run(async move |conn| {
                conn.batch_execute(&opening).await?;
                diesel::select(enter_platform(proof)).execute(conn).await?;
                work(conn).await
            })
            .await?)
    }
}

impl TenantRepository for Platform<'_> {
    async fn create(&self, new: NewTenant) -> Result<Tenant> {
        new.validate()?;
        self.run(|conn| {
            diesel::insert_into(tenants::table)
                .values(new)
                .returning(Tenant::as_returning())
                .get_result(conn)
                .boxed()
        })
        .await
    }

    async fn get(&self, id: TenantId) -> Result<Tenant> {
        self.run(|conn| {
            tenants::table
                .find(id)
                .select(Tenant::as_select())
                .get_result(conn)
                .boxed()
        })
        .await
    }

    async fn list(&self, page: TenantPage) -> Result<Vec<Tenant>> {
        let limit = validate::page_limit(page.limit)?;
        self.run(move |conn| {
            let mut query = tenants::table
                .select(Tenant::as_select())
                .order(tenants::id)
                .limit(limit)
                .into_boxed();
            if let Some(after) = page.after {
                query = query.filter(tenants::id.gt(after));
            }
            query.load(conn).boxed()
        })
        .await
    }

    async fn update_theme(&self, id: TenantId, theme: Value) -> Result<Tenant> {
        validate_theme(&theme)?;
        self.run(|conn| {
            diesel::update(tenants::table.find(id))
                .set(tenants::theme.eq(theme))
                .returning(Tenant::as_returning())
                .get_result(conn)
                .boxed()
        })
        .await
    }

    async fn set_status(&self, id: TenantId, status: TenantStatus) -> Result<Tenant> {
        self.run(|conn| {
            diesel::update(tenants::table.find(id))
                .set(tenants::status.eq(status))
                .returning(Tenant::as_returning())
                .get_result(conn)
                .boxed()
        })
        .await
    }
}
