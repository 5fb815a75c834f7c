//! Secrets handed out once (host tokens, admin tokens, registration keys)
//! and the hashes kept of them. The server stores only sha256 hashes:
//! the secrets carry 256 random bits, so a plain hash is enough, and a
//! stolen database grants no access. Looking a secret up by its hash also
//! means no secret is ever compared byte by byte.

use crate::error::Error;

/// Prefix of host tokens.
pub const HOST_TOKEN: &str = "nrh_";
/// Prefix of admin API tokens.
pub const ADMIN_TOKEN: &str = "nra_";
/// Prefix of registration keys.
pub const REGISTRATION_KEY: &str = "nrk_";

/// `n` random bytes, hex.
pub fn random_hex(n: usize) -> Result<String, Error> {
    let mut buf = vec![0u8; n];
    getrandom::fill(&mut buf).map_err(|e| Error::Task(format!("no randomness: {e}")))?;
    Ok(hex::encode(buf))
}

/// A new secret with `prefix` and 256 random bits.
pub fn new_secret(prefix: &str) -> Result<String, Error> {
    Ok(format!("{prefix}{}", random_hex(32)?))
}

/// The hash stored for `secret`.
pub fn hash(secret: &str) -> String {
    crate::blobs::sha256_hex(secret.as_bytes())
}
