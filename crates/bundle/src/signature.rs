//! minisign signatures of the manifest, in the prehashed form minisign
//! itself writes by default (algorithm `ED`: Ed25519 over the BLAKE2b-512
//! of the file) plus the trusted comment and its global signature, so that
//! `minisign -Vm manifest.json -p key.pub` verifies a bundle's manifest.
//! Parsing is strict: the four lines exactly, no legacy `Ed` signatures.

use std::fmt;

use base64::Engine;
use blake2::{Blake2b512, Digest};
use ed25519_dalek::Signer;

use crate::keys::{KeyId, SecretKey, TrustedKeys};
use crate::BundleError;

const SIGALG_PREHASHED: [u8; 2] = *b"ED";
const UNTRUSTED_PREFIX: &str = "untrusted comment: ";
const TRUSTED_PREFIX: &str = "trusted comment: ";
/// minisign reads the untrusted comment line with `fgets` into 1024 bytes:
/// a longer line would be split and the file misread.
const MAX_UNTRUSTED_LINE: usize = 1022;
/// Longest trusted comment `sign` accepts; the signature member's 4 KiB
/// limit must hold it with the rest.
pub const MAX_TRUSTED_COMMENT: usize = 2048;

/// A parsed minisign signature file.
#[derive(Clone, PartialEq, Eq)]
pub struct Signature {
    key_id: KeyId,
    signature: [u8; 64],
    trusted_comment: String,
    global_signature: [u8; 64],
    untrusted_comment: String,
}

impl fmt::Debug for Signature {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Signature")
            .field("key_id", &self.key_id)
            .field("trusted_comment", &self.trusted_comment)
            .finish_non_exhaustive()
    }
}

/// Signs `message` (prehashed) with `key`; `trusted_comment` is signed too
/// and shown by `minisign -V`. It must be one line without control
/// characters other than tab.
pub fn sign(
    key: &SecretKey,
    message: &[u8],
    trusted_comment: &str,
) -> Result<Signature, BundleError> {
    check_trusted_comment(trusted_comment).map_err(|reason| BundleError::TrustedComment {
        comment: trusted_comment.to_string(),
        reason,
    })?;
    if trusted_comment.len() > MAX_TRUSTED_COMMENT {
        return Err(BundleError::TrustedComment {
            comment: trusted_comment.to_string(),
            reason: format!("longer than {MAX_TRUSTED_COMMENT} bytes"),
        });
    }
    let signature = key
        .signing_key()
        .sign(&Blake2b512::digest(message))
        .to_bytes();
    let mut global = Vec::with_capacity(64 + trusted_comment.len());
    global.extend_from_slice(&signature);
    global.extend_from_slice(trusted_comment.as_bytes());
    Ok(Signature {
        key_id: key.key_id(),
        signature,
        trusted_comment: trusted_comment.to_string(),
        global_signature: key.signing_key().sign(&global).to_bytes(),
        untrusted_comment: format!("signature from noreboot secret key {}", key.key_id()),
    })
}

/// Why a trusted comment cannot be signed, if it cannot.
fn check_trusted_comment(c: &str) -> Result<(), String> {
    // minisign cuts the comment at the first CR, LF or NUL before checking
    // it; other control characters would make it print deceptively.
    match c.chars().find(|&ch| ch.is_control() && ch != '\t') {
        Some(ch) => Err(format!("contains the control character {ch:?}")),
        None => Ok(()),
    }
}

impl Signature {
    /// Parses a signature file: untrusted comment line, base64 of `ED`, key
    /// id and signature, trusted comment line, base64 of the global
    /// signature, each ending in a newline, and nothing else.
    pub fn parse(bytes: &[u8]) -> Result<Self, BundleError> {
        let bad = |reason: &str| BundleError::MalformedSignature(reason.to_string());
        if bytes.iter().all(|b| b.is_ascii_whitespace()) {
            return Err(BundleError::Unsigned(format!(
                "`{}` is empty",
                crate::container::SIGNATURE
            )));
        }
        let text = std::str::from_utf8(bytes).map_err(|_| bad("not UTF-8 text"))?;
        let Some(body) = text.strip_suffix('\n') else {
            return Err(bad("does not end with a newline"));
        };
        let lines: Vec<&str> = body.split('\n').collect();
        let [untrusted, sig_line, trusted, global_line] = lines[..] else {
            return Err(bad(&format!(
                "has {} lines, a signature has 4",
                lines.len()
            )));
        };
        let Some(untrusted) = untrusted.strip_prefix(UNTRUSTED_PREFIX) else {
            return Err(bad("line 1 does not start with \"untrusted comment: \""));
        };
        if untrusted.len() + UNTRUSTED_PREFIX.len() > MAX_UNTRUSTED_LINE {
            return Err(bad("line 1 (untrusted comment) is too long for minisign"));
        }
        if untrusted.chars().any(|c| c.is_control() && c != '\t') {
            return Err(bad("line 1 (untrusted comment) has control characters"));
        }
        let raw = decode(sig_line, 74).map_err(|e| bad(&format!("line 2: {e}")))?;
        if raw[..2] == crate::keys::SIGALG {
            return Err(bad(
                "legacy (not prehashed) signature: sign with minisign's default, not -l",
            ));
        }
        if raw[..2] != SIGALG_PREHASHED {
            return Err(bad("line 2: unknown signature algorithm"));
        }
        let Some(trusted) = trusted.strip_prefix(TRUSTED_PREFIX) else {
            return Err(bad("line 3 does not start with \"trusted comment: \""));
        };
        check_trusted_comment(trusted)
            .map_err(|e| bad(&format!("line 3 (trusted comment) {e}")))?;
        let global = decode(global_line, 64).map_err(|e| bad(&format!("line 4: {e}")))?;
        let mut key_id = [0u8; 8];
        key_id.copy_from_slice(&raw[2..10]);
        let mut signature = [0u8; 64];
        signature.copy_from_slice(&raw[10..]);
        let mut global_signature = [0u8; 64];
        global_signature.copy_from_slice(&global);
        Ok(Self {
            key_id: KeyId(key_id),
            signature,
            trusted_comment: trusted.to_string(),
            global_signature,
            untrusted_comment: untrusted.to_string(),
        })
    }

    /// The signature file's text.
    pub fn to_minisign_string(&self) -> String {
        let b64 = &base64::engine::general_purpose::STANDARD;
        let mut raw = Vec::with_capacity(74);
        raw.extend_from_slice(&SIGALG_PREHASHED);
        raw.extend_from_slice(&self.key_id.0);
        raw.extend_from_slice(&self.signature);
        format!(
            "{UNTRUSTED_PREFIX}{}\n{}\n{TRUSTED_PREFIX}{}\n{}\n",
            self.untrusted_comment,
            b64.encode(raw),
            self.trusted_comment,
            b64.encode(self.global_signature)
        )
    }

    /// The id of the key that made it (not yet verified).
    pub fn key_id(&self) -> KeyId {
        self.key_id
    }

    /// The trusted comment (meaningful only once verified).
    pub fn trusted_comment(&self) -> &str {
        &self.trusted_comment
    }

    /// Verifies the signature of `message` and of the trusted comment with
    /// the trusted key whose id the signature names.
    pub fn verify(&self, message: &[u8], keys: &TrustedKeys) -> Result<(), BundleError> {
        let Some(key) = keys.get(&self.key_id) else {
            return Err(BundleError::UntrustedKey {
                key_id: self.key_id,
            });
        };
        let bad = |reason: &str| BundleError::BadSignature {
            key_id: self.key_id,
            reason: reason.to_string(),
        };
        let vk = key.verifying_key();
        let sig = ed25519_dalek::Signature::from_bytes(&self.signature);
        // verify_strict: refuses malleable encodings as libsodium does.
        vk.verify_strict(&Blake2b512::digest(message), &sig)
            .map_err(|_| bad("the signature does not match manifest.json"))?;
        let mut global = Vec::with_capacity(64 + self.trusted_comment.len());
        global.extend_from_slice(&self.signature);
        global.extend_from_slice(self.trusted_comment.as_bytes());
        vk.verify_strict(
            &global,
            &ed25519_dalek::Signature::from_bytes(&self.global_signature),
        )
        .map_err(|_| bad("the trusted comment's signature does not verify"))
    }
}

/// Strict base64 of exactly `len` bytes (canonical padding and bits).
fn decode(line: &str, len: usize) -> Result<Vec<u8>, String> {
    let raw = base64::engine::general_purpose::STANDARD
        .decode(line)
        .map_err(|e| format!("not base64: {e}"))?;
    if raw.len() != len {
        return Err(format!("{} bytes, expected {len}", raw.len()));
    }
    Ok(raw)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::keys::PublicKey;

    #[test]
    fn verifies_a_signature_made_by_minisign() {
        // `minisign -S -s t.key -m f` (0.11) of "hello\n", key 271D764220CFF14C.
        let pk = PublicKey::from_base64("RWRM8c8gQnYdJy8nSDq05XWiNgX+Hj71CwfHvr52Rt+BVmUGK7FaJI7u")
            .unwrap();
        let keys = TrustedKeys::from_keys([pk]).unwrap();
        let text = "untrusted comment: signature from minisign secret key\nRURM8c8gQnYdJ747WvOA3MmOVlnp8LxgJmo7aWhpoyXw/YOZgq1YquOIHVn8eu+wdAXSanC2ca+vXHu12qfa98huJhO6R5tovwQ=\ntrusted comment: timestamp:1796004432\tfile:f\thashed\ndg1baJcYfsEZ8i6phnZWQ7Yzi1jzDe3nu2Qb11qVgEEMy+fc2vJq9f1WVUZkvEcVKOxv4w/2fGQskD+BpwMSBg==\n";
        let sig = Signature::parse(text.as_bytes()).unwrap();
        assert_eq!(sig.key_id().to_string(), "271D764220CFF14C");
        sig.verify(b"hello\n", &keys).unwrap();
        assert!(matches!(
            sig.verify(b"hello!\n", &keys),
            Err(BundleError::BadSignature { .. })
        ));
        let forged = text.replace("file:f", "file:g");
        assert!(matches!(
            Signature::parse(forged.as_bytes())
                .unwrap()
                .verify(b"hello\n", &keys),
            Err(BundleError::BadSignature { .. })
        ));
    }

    #[test]
    fn round_trip() {
        let sk = SecretKey::generate().unwrap();
        let keys = TrustedKeys::from_keys([sk.public_key()]).unwrap();
        let sig = sign(&sk, b"data", "timestamp:0\tfile:x").unwrap();
        let back = Signature::parse(sig.to_minisign_string().as_bytes()).unwrap();
        assert_eq!(back, sig);
        back.verify(b"data", &keys).unwrap();
        assert!(sign(&sk, b"data", "two\nlines").is_err());
    }
}
