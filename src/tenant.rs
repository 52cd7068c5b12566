//! [`TenantConn`]: the RAII guard that puts one tenant's context on a pooled
//! connection for the length of one transaction.

use diesel::connection::{
    TransactionDepthChange, TransactionManagerStatus, ValidTransactionManagerStatus,
};
use diesel::sql_types::Text;
use diesel_async::{
    AnsiTransactionManager, AsyncPgConnection, RunQueryDsl, SimpleAsyncConnection,
    TransactionManager,
};

use std::sync::Arc;

use crate::checkout::Pooled;
use crate::error::{Error, Result, connection_lost};
use crate::ids::{CustomerId, StaffUserId, TenantId};
use crate::session::{ConnectionEvents, SessionSql};
use serde::{Deserialize, Serialize};

diesel::define_sql_function! {
    #[sql_name = "loyalty.enter_tenant"]
    fn enter_tenant(tenant: Text, proof: Text) -> Bool;
}

/// One tenant's unit of work: a pooled connection inside a transaction that
/// runs as the `loyalty_app` role with `app.tenant_id` set, so row-level
/// security limits every statement to that tenant.
///
/// Both settings are transaction-local. [`commit`](TenantConn::commit) ends the
/// guard; dropping it without a commit rolls everything back. Either way the
/// connection returns to the pool with no tenant and no role on it.
///
/// Opening costs one round trip: `BEGIN`, the context and the tenant check are
/// sent together. An unknown tenant is refused with [`Refusal::UnknownTenant`],
/// a suspended one with [`Refusal::TenantSuspended`].
///
/// [`Refusal::UnknownTenant`]: crate::Refusal::UnknownTenant
/// [`Refusal::TenantSuspended`]: crate::Refusal::TenantSuspended
///
/// ```no_run
/// # async fn demo(store: loyalty_store::Store, tenant: loyalty_store::TenantId)
/// # -> loyalty_store::Result<()> {
/// use diesel::prelude::*;
/// use diesel_async::RunQueryDsl;
/// use loyalty_store::schema::customers;
///
/// let mut tx = store.tenant(tenant).await?;
/// let visible: i64 = customers::table.count().get_result(tx.conn()).await?;
/// tx.commit().await?;
/// # Ok(()) }
/// ```
///
/// Do not send `COMMIT` or `ROLLBACK` through [`conn`](TenantConn::conn): that
/// would end the guard's transaction behind its back. Nested
/// `conn.transaction(..)` calls are fine; they become savepoints. What SQL
/// sent through it can and cannot do is on [`TenantConn::conn`].
pub struct TenantConn {
    conn: Option<Pooled>,
    tenant: TenantId,
    actor: Actor,
    session: Arc<SessionSql>,
    /// Whether SQL of the caller's own may have run, through [`Self::conn`]:
    /// only then can the session carry state the next guard must not see.
    raw: bool,
    /// Savepoints [`Self::savepoint`] opened and has not closed: above zero
    /// at commit only if a savepoint's future was dropped half-way.
    savepoints: u32,
}

/// Who is acting through a guard. Audited writes record it in `audit_logs`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", content = "id", rename_all = "snake_case")]
pub enum Actor {
    /// The platform itself: jobs, imports, automatic expiry.
    System,
    /// A signed-in staff user.
    Staff(StaffUserId),
    /// An API client.
    Api,
    /// The customer, for example through WhatsApp.
    Customer(CustomerId),
}

impl Actor {
    pub(crate) fn kind(self) -> &'static str {
        match self {
            Actor::System => "system",
            Actor::Staff(_) => "staff",
            Actor::Api => "api",
            Actor::Customer(_) => "customer",
        }
    }

    pub(crate) fn id(self) -> Option<uuid::Uuid> {
        match self {
            Actor::Staff(id) => Some(id.0),
            Actor::Customer(id) => Some(id.0),
            Actor::System | Actor::Api => None,
        }
    }
}

impl std::fmt::Debug for TenantConn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TenantConn")
            .field("tenant", &self.tenant)
            .field("open", &self.conn.is_some())
            .finish()
    }
}

impl TenantConn {
    /// Opens the guard in one round trip: `BEGIN` with the search path and
    /// the role, then the tenant with its `proof` (see [`crate::GuardKey`])
    /// and the tenant check, pipelined. The tenant and proof travel as bind
    /// parameters, so they never appear in `pg_stat_activity`'s query text,
    /// which other sessions of the same login can read. `session_reset` is
    /// what the guard sends when it ends if SQL of the caller's own ran
    /// (see [`TenantConn::commit`]).
    pub(crate) async fn begin(
        mut conn: Pooled,
        tenant: TenantId,
        actor: Actor,
        session: Arc<SessionSql>,
        proof: &str,
    ) -> Result<Self> {
        // Until the guard is open, a connection whose opening was cancelled
        // half-way (its future dropped) is one the pool must discard.
        mark_broken(&mut conn);
        let tenant_text = tenant.to_string();
        let (begun, role, context) = {
            let (mut for_begin, mut for_role, mut for_context): (
                &AsyncPgConnection,
                &AsyncPgConnection,
                &AsyncPgConnection,
            ) = (&conn, &conn, &conn);
            tokio::join!(
                // Polled, and so sent, in this order.
                biased;
                for_begin.batch_execute("BEGIN ISOLATION LEVEL READ COMMITTED READ WRITE"),
                for_role.batch_execute(&session.opening),
                // One statement, prepared once per connection.
                diesel::select(enter_tenant(&tenant_text, proof))
                .execute(&mut for_context),
            )
        };
        let outcome = begun.and(role).and(context.map(drop));
        let status = AnsiTransactionManager::transaction_manager_status_mut(&mut *conn);
        match outcome {
            Ok(()) => {
                let mut open = ValidTransactionManagerStatus::default();
                open.change_transaction_depth(TransactionDepthChange::IncreaseDepth)?;
                *status = TransactionManagerStatus::Valid(open);
            }
            Err(err) => {
                // The server may be inside a (failed) transaction: end it, or
                // leave the connection marked for the pool to discard.
                if conn.batch_execute("ROLLBACK").await.is_ok() {
                    *AnsiTransactionManager::transaction_manager_status_mut(&mut *conn) =
                        TransactionManagerStatus::Valid(Default::default());
                }
                return Err(err.into());
            }
        }
        Ok(TenantConn {
            conn: Some(conn),
            tenant,
            actor,
            session,
            raw: false,
            savepoints: 0,
        })
    }

    /// The tenant this guard acts for.
    pub fn tenant_id(&self) -> TenantId {
        self.tenant
    }

    /// Who is acting, as given to [`crate::Store::tenant_as`].
    pub fn actor(&self) -> Actor {
        self.actor
    }

    /// The connection, for diesel queries of your own. Everything run on it is
    /// part of this guard's transaction and sees only this tenant's rows.
    ///
    /// The threat model (`docs/security.md`): whatever SQL is sent here, an
    /// injection included, and whatever login the store uses, as long as
    /// [`crate::Store::connect`] accepted it without
    /// [`crate::Config::danger_allow_privileged_login`], it cannot
    /// - act for another tenant: setting `app.tenant_id` (or any other
    ///   setting) without the guard's proof puts no tenant in context, and
    ///   the guard key cannot be read;
    /// - enter the platform scope, or see any tenant's row but this one;
    /// - leave the guard's role for one with more privileges, or change the
    ///   crate's tables, policies or functions;
    /// - set budget figures, rule counters, issuance or code statuses, or
    ///   ledger entries, except through the repository methods;
    /// - leave anything for the next guard on this connection: the session
    ///   is reset when this guard ends, and temporary tables cannot be made.
    ///
    /// It can do what this tenant's guard may: read and change this tenant's
    /// rows within `loyalty_app`'s grants.
    pub fn conn(&mut self) -> &mut AsyncPgConnection {
        self.raw = true;
        self.db()
    }

    /// The connection, for the crate's own statements, which leave no
    /// session state behind.
    pub(crate) fn db(&mut self) -> &mut AsyncPgConnection {
        self.conn
            .as_mut()
            .expect("a live guard always holds its connection")
    }

    /// Runs `work` in a nested unit of the guard's transaction (a
    /// savepoint). If `work` returns an error, everything it did is undone
    /// and the guard stays usable, so a refusal in one step (an issuance
    /// refused by a limit, say) does not lose what the guard did before it;
    /// if it returns `Ok`, its work joins the guard's, to be committed or
    /// rolled back with it. If a statement inside failed but `work`
    /// returned `Ok` anyway, the unit is undone all the same and this is
    /// [`Error::TransactionAborted`]. If this future is dropped before it
    /// ends, [`commit`](Self::commit) rolls the whole guard back and returns
    /// [`Error::CallAbandoned`]. Savepoints nest.
    ///
    /// ```no_run
    /// # use loyalty_store::prelude::*;
    /// # async fn demo(store: Store, tenant: TenantId, event: NewEvent, issue: NewIssuance)
    /// # -> loyalty_store::Result<()> {
    /// let mut tx = store.tenant(tenant).await?;
    /// tx.events().ingest(event).await?;
    /// let reward = tx
    ///     .savepoint(async |tx| tx.issuances().issue(issue).await)
    ///     .await;
    /// if let Err(Error::Refused(why)) = &reward {
    ///     eprintln!("no reward this time ({why}); the event is kept");
    /// }
    /// tx.commit().await?;
    /// # Ok(()) }
    /// ```
    ///
    /// The money path's commit-time checks (a single issuance's budget
    /// reservation and global limit) run at the guard's commit, not at the
    /// savepoint's end, so those refusals still end the whole guard.
    pub async fn savepoint<R, F>(&mut self, work: F) -> Result<R>
    where
        F: AsyncFnOnce(&mut TenantConn) -> Result<R>,
    {
        // The crate's own savepoints, named by depth, beside diesel's
        // transaction manager (which `conn().transaction(..)` inside `work`
        // still uses): a failed RELEASE must be undone here, not by it.
        let name = format!("loyalty_savepoint_{}", self.savepoints);
        self.db()
            .batch_execute(&format!("SAVEPOINT {name}"))
            .await?;
        // Left raised if the future is dropped inside `work`: commit() then
        // refuses rather than keep half of the unit.
        self.savepoints += 1;
        let outcome = work(self).await;
        self.savepoints -= 1;
        if ConnectionEvents::abandoned(self.db()) {
            return outcome;
        }
        let undo = format!("ROLLBACK TO SAVEPOINT {name}; RELEASE SAVEPOINT {name}");
        match outcome {
            Ok(value) => match self
                .db()
                .batch_execute(&format!("RELEASE SAVEPOINT {name}"))
                .await
            {
                Ok(()) => Ok(value),
                // A statement in `work` failed and `work` went on to return
                // Ok: its unit is lost, and undone so the guard goes on.
                Err(_) => {
                    self.db().batch_execute(&undo).await?;
                    Err(Error::TransactionAborted)
                }
            },
            Err(err) => {
                self.db().batch_execute(&undo).await?;
                Err(err)
            }
        }
    }

    /// The session reset to send after the guard's transaction ends, if the
    /// caller's own SQL may have run (the crate's own leaves nothing).
    /// Whether the database has Citus (see [`SessionSql::commit_probe`]).
    pub(crate) fn on_citus(&self) -> bool {
        self.session.on_citus()
    }

    fn cleanup(&self) -> Option<Arc<SessionSql>> {
        self.raw.then(|| self.session.clone())
    }

    /// Commits and ends the guard.
    ///
    /// If any statement failed since the guard opened (and was not undone by
    /// a savepoint rollback), PostgreSQL has already discarded the
    /// transaction and would answer `COMMIT` with a silent `ROLLBACK`. This
    /// returns [`Error::TransactionAborted`] then, rather than reporting a
    /// commit that did not happen.
    ///
    /// Checks deferred to commit run here: an issuance whose budget no
    /// longer covers it fails the commit with [`Refusal::BudgetExhausted`],
    /// and one whose rule's global limit is used up by then with
    /// [`Refusal::LimitReached`].
    ///
    /// If SQL of your own ran through [`conn`](TenantConn::conn), the
    /// session is then reset whatever the outcome (role, settings, temporary
    /// tables, advisory locks, listeners, cursors), in the same round trip,
    /// so nothing it set at session level reaches the next guard on this
    /// connection.
    ///
    /// [`Refusal::BudgetExhausted`]: crate::Refusal::BudgetExhausted
    /// [`Refusal::LimitReached`]: crate::Refusal::LimitReached
    #[tracing::instrument(name = "loyalty.guard.commit", skip_all, fields(tenant_id = %self.tenant))]
    pub async fn commit(mut self) -> Result<()> {
        let mut conn = self
            .conn
            .take()
            .expect("a live guard always holds its connection");
        if ConnectionEvents::abandoned(&mut conn) {
            abandon(conn);
            return Err(Error::CallAbandoned);
        }
        if self.savepoints > 0 {
            // A savepoint's work was dropped half-way: roll it all back.
            roll_back(&mut conn, self.cleanup()).await;
            return Err(Error::CallAbandoned);
        }
        // After SQL of the caller's, the probe also checks the prepared
        // statements, inside the transaction, as loyalty_app.
        let cleanup = self.cleanup();
        let probe = self.session.commit_probe(self.tenant, self.raw, &mut conn);
        // A probe, COMMIT and the session reset, pipelined in one round
        // trip: in a failed transaction the probe errors, and COMMIT then
        // only rolls back.
        let (mut for_probe, mut for_commit, mut for_reset): (
            &AsyncPgConnection,
            &AsyncPgConnection,
            &AsyncPgConnection,
        ) = (&conn, &conn, &conn);
        let (probe, commit, reset) = tokio::join!(
            // Polled, and so sent, in this order.
            biased;
            for_probe.batch_execute(&probe),
            for_commit.batch_execute("COMMIT"),
            async {
                match &cleanup {
                    None => Ok(()),
                    Some(session) => for_reset.batch_execute(session.reset()).await,
                }
            },
        );
        // After the caller's own SQL the probe is the statements check: a
        // connection where it failed (or where the transaction had already
        // failed, which hides it) is not trusted again.
        let untrusted = cleanup.is_some() && probe.is_err();
        let status = AnsiTransactionManager::transaction_manager_status_mut(&mut *conn);
        let outcome = match (probe, commit) {
            (_, Err(err)) if connection_lost(&err) => {
                // The outcome is unknown and the connection unusable: the pool
                // must not hand it out again.
                status.set_in_error();
                Err(Error::CommitOutcomeUnknown {
                    message: err.to_string(),
                })
            }
            (_, Err(err)) => {
                *status = TransactionManagerStatus::Valid(Default::default());
                Err(err.into())
            }
            (Err(err), Ok(())) => {
                *status = TransactionManagerStatus::Valid(Default::default());
                // A refusal of the commit-time checks run before COMMIT
                // (on Citus) keeps its type; anything else means the
                // transaction had already failed.
                match Error::from(err) {
                    refused @ Error::Refused(_) => Err(refused),
                    _ => Err(Error::TransactionAborted),
                }
            }
            (Ok(()), Ok(())) => {
                *status = TransactionManagerStatus::Valid(Default::default());
                Ok(())
            }
        };
        // After the outcome, which resets the status: a failed reset must
        // leave the connection marked for the pool to discard.
        if let Err(err) = reset {
            tracing::warn!(error = %err, "session reset after a guard failed; connection discarded");
            mark_broken(&mut conn);
        } else if untrusted {
            mark_broken(&mut conn);
        }
        outcome
    }

    /// Rolls back and ends the guard. Dropping the guard does the same in
    /// the background; this waits for it.
    pub async fn rollback(mut self) {
        if let Some(mut conn) = self.conn.take() {
            if ConnectionEvents::abandoned(&mut conn) {
                abandon(conn);
            } else {
                roll_back(&mut conn, self.cleanup()).await;
            }
        }
    }
}

impl Drop for TenantConn {
    fn drop(&mut self) {
        let Some(mut conn) = self.conn.take() else {
            return;
        };
        // Rolling back lets the pool keep the connection. Without a runtime
        // the connection is dropped still in its transaction, and the pool
        // discards it rather than hand it out.
        if ConnectionEvents::abandoned(&mut conn) {
            abandon(conn);
        } else if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            let cleanup = self.cleanup();
            runtime.spawn(async move { roll_back(&mut conn, cleanup).await });
        }
    }
}

/// Rolling back undoes the guard's settings, but not all session state
/// (session advisory locks, for one), so the session is reset as well.
async fn roll_back(conn: &mut Pooled, cleanup: Option<Arc<SessionSql>>) {
    // On failure the manager marks itself broken and the pool discards the
    // connection, so there is nothing more to do with the error.
    if let Err(err) = AnsiTransactionManager::rollback_transaction(&mut **conn).await {
        tracing::warn!(error = %err, "tenant guard rollback failed; connection discarded");
        mark_broken(conn);
    } else if let Some(session) = cleanup
        && let Err(err) = {
            let reset = session.reset_after_rollback(conn);
            conn.batch_execute(&reset).await
        }
    {
        tracing::warn!(error = %err, "session reset after a guard failed; connection discarded");
        mark_broken(conn);
    }
}

/// Ends a guard one of whose calls was dropped before its statement came
/// back: that statement may still be running, and whatever it did must not
/// be committed. It is cancelled on the server, and the connection is
/// discarded rather than reused, since a cancel request that arrives late
/// could hit the next statement sent on it. Closing the connection rolls the
/// transaction back.
fn abandon(mut conn: Pooled) {
    tracing::warn!("a call on a tenant guard was abandoned mid-flight; cancelled and discarded");
    let cancel = conn.cancel_token();
    mark_broken(&mut conn);
    drop(conn);
    if let Ok(runtime) = tokio::runtime::Handle::try_current() {
        runtime.spawn(async move {
            if let Err(err) = cancel.cancel_query(tokio_postgres::NoTls).await {
                tracing::warn!(error = %err, "cancelling an abandoned statement failed");
            }
        });
    }
}

fn mark_broken(conn: &mut Pooled) {
    AnsiTransactionManager::transaction_manager_status_mut(&mut **conn).set_in_error();
}
