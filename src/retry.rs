//! [`Store::retrying`]: a unit of work run in a fresh guard, and run again
//! with backoff when it fails in a way that running it again can fix.

use std::time::Duration;

use futures_util::future::BoxFuture;

use crate::error::{Error, Result};
use crate::ids::TenantId;
use crate::store::Store;
use crate::tenant::TenantConn;

/// How [`Store::retrying`] runs a unit of work again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct RetryPolicy {
    /// Runs in all, the first included.
    pub attempts: u32,
    /// The wait before the second run; it doubles each time, with jitter.
    pub first_backoff: Duration,
    /// The longest wait between two runs.
    pub max_backoff: Duration,
    /// Whether running the work twice has the effect of running it once
    /// (every write in it carries an idempotency key or a ledger reference:
    /// `issue`, `issue_batch`, `ingest`, budget movements). Only then is
    /// [`Error::CommitOutcomeUnknown`] retried: the second run replays what
    /// the first committed, or does it if the first did not. Otherwise that
    /// error is returned, for the caller to check.
    pub idempotent: bool,
}

impl Default for RetryPolicy {
    /// Five runs, 20 ms then doubling up to 1 s, not idempotent.
    fn default() -> Self {
        RetryPolicy {
            attempts: 5,
            first_backoff: Duration::from_millis(20),
            max_backoff: Duration::from_secs(1),
            idempotent: false,
        }
    }
}

impl RetryPolicy {
    /// The default policy for work that may run twice (see
    /// [`RetryPolicy::idempotent`]).
    pub fn idempotent() -> Self {
        RetryPolicy {
            idempotent: true,
            ..RetryPolicy::default()
        }
    }

    /// Sets the number of runs, the first included (at least 1).
    pub fn with_attempts(mut self, attempts: u32) -> Self {
        self.attempts = attempts.max(1);
        self
    }

    fn retries(&self, err: &Error) -> bool {
        err.is_retryable() || (self.idempotent && matches!(err, Error::CommitOutcomeUnknown { .. }))
    }

    /// Full jitter: a random wait up to the doubled backoff, so callers that
    /// failed together do not retry together.
    fn backoff(&self, failures: u32) -> Duration {
        let ceiling = self
            .first_backoff
            .saturating_mul(1 << failures.min(16))
            .min(self.max_backoff);
        let random = uuid::Uuid::new_v4().as_u128() as u64;
        let nanos = u64::try_from(ceiling.as_nanos()).unwrap_or(u64::MAX);
        Duration::from_nanos(random % nanos.max(1))
    }
}

impl Store {
    /// Runs `work` in a guard for `tenant` and commits; when the work or the
    /// commit fails with an error [`Error::is_retryable`] accepts (and
    /// [`Error::CommitOutcomeUnknown`] for idempotent work), waits and runs
    /// it again in a new guard, up to `policy.attempts` runs. Any other
    /// error, or the last one, is returned.
    ///
    /// ```no_run
    /// # async fn demo(store: loyalty_store::Store, tenant: loyalty_store::TenantId,
    /// #   new: loyalty_store::repo::issuances::NewIssuance) -> loyalty_store::Result<()> {
    /// use futures_util::FutureExt;
    /// use loyalty_store::prelude::*;
    /// use loyalty_store::RetryPolicy;
    ///
    /// let issued = store
    ///     .retrying(tenant, RetryPolicy::idempotent(), |tx| {
    ///         let new = new.clone();
    ///         async move { tx.issuances().issue(new).await }.boxed()
    ///     })
    ///     .await?;
    /// # Ok(()) }
    /// ```
    pub async fn retrying<T, Work>(
        &self,
        tenant: TenantId,
        policy: RetryPolicy,
        mut work: Work,
    ) -> Result<T>
    where
        Work: for<'t> FnMut(&'t mut TenantConn) -> BoxFuture<'t, Result<T>>,
    {
        let mut failures = 0;
        loop {
            let outcome = async {
                let mut tx = self.tenant(tenant).await?;
                let value = work(&mut tx).await?;
                tx.commit().await?;
                Ok(value)
            }
            .await;
            match outcome {
                Err(err) if failures + 1 < policy.attempts.max(1) && policy.retries(&err) => {
                    tracing::debug!(error = %err, attempt = failures + 1, "retrying a unit of work");
                    tokio::time::sleep(policy.backoff(failures)).await;
                    failures += 1;
                }
                outcome => return outcome,
            }
        }
    }
}
