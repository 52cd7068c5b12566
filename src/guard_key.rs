//! [`GuardKey`]: the secret that proves a tenant context was set by the
//! guard. The database keeps it in `loyalty_secret.guard_key`, readable only
//! by the migrator; `current_tenant_id()` accepts `app.tenant_id` only with
//! `app.tenant_proof` = HMAC-SHA256(key, tenant id). SQL sent through a guard
//! can set both settings, but cannot compute the proof for another tenant.

use hmac::{Hmac, Mac};
use sha2::Sha256;

use crate::ids::TenantId;

/// The 32-byte guard key. Its `Debug` never shows it.
#[derive(Clone, PartialEq, Eq)]
pub struct GuardKey([u8; 32]);

impl std::fmt::Debug for GuardKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("GuardKey(..)")
    }
}

impl GuardKey {
    /// A key from its 32 bytes, as `loyalty_secret.guard_key.key` holds them.
    pub fn from_bytes(bytes: [u8; 32]) -> Self {
        GuardKey(bytes)
    }

    /// The proof that the guard, and nobody else, put `tenant` in context:
    /// HMAC-SHA256 of the id's text under the key, in lower-case hex.
    pub(crate) fn proof(&self, tenant: TenantId) -> String {
        self.sign(&tenant.to_string())
    }

    /// The proof of the platform scope ([`crate::Store::platform`]): the
    /// same over the word `platform`, which no tenant id's text equals.
    pub(crate) fn platform_proof(&self) -> String {
        self.sign("platform")
    }

    fn sign(&self, claim: &str) -> String {
        let mut mac =
            <Hmac<Sha256> as Mac>::new_from_slice(&self.0).expect("HMAC takes a key of any length");
        mac.update(claim.as_bytes());
        mac.finalize()
            .into_bytes()
            .iter()
            .map(|byte| format!("{byte:02x}"))
            .collect()
    }
}
