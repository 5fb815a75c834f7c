//! Secrets handed out once (host tokens, admin tokens, registration keys,
//! dashboard session ids) and the hashes kept of them. The server stores only sha256 hashes:
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
/// Prefix of dashboard session ids (the session cookie's value).
pub const SESSION: &str = "nrs_";

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

/// Whether `s` has the form of a secret [`new_secret`] made with `prefix`
/// (a cheap check before a database look-up).
pub fn is_well_formed(prefix: &str, s: &str) -> bool {
    s.strip_prefix(prefix).is_some_and(|hex| {
        hex.len() == 64 && hex.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
    })
}

/// The hash stored for `secret`.
pub fn hash(secret: &str) -> String {
    crate::blobs::sha256_hex(secret.as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn new_secrets_are_well_formed() {
        let s = new_secret(SESSION).unwrap();
        assert!(is_well_formed(SESSION, &s), "{s}");
        assert!(!is_well_formed(ADMIN_TOKEN, &s));
        assert!(!is_well_formed(SESSION, &s[..s.len() - 1]));
        let upper = format!("{SESSION}{}", s[SESSION.len()..].to_uppercase());
        assert!(!is_well_formed(SESSION, &upper));
    }
}
