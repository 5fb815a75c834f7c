//! Signing keys in minisign's own file formats, so that the `minisign` tool
//! can verify bundles and sign with the same keys: public keys
//! (`untrusted comment:` line + base64 of `Ed`, key id, Ed25519 key) and
//! unencrypted secret keys, plus the set of keys a host trusts (every
//! `*.pub` file of a directory such as `/etc/noreboot/trusted.d`).
//!
//! Secret keys are stored unencrypted (KDF algorithm bytes zero, as
//! `minisign -G -W` writes them) because the factory signs unattended;
//! protect them with file permissions.

use std::collections::BTreeMap;
use std::fmt;
use std::io::{Read, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use base64::Engine;
use blake2::digest::consts::U32;
use blake2::{Blake2b, Digest};
use ed25519_dalek::{SigningKey, VerifyingKey};

/// Signature algorithm bytes of keys (and of legacy signatures).
pub(crate) const SIGALG: [u8; 2] = *b"Ed";
const KDF_NONE: [u8; 2] = [0, 0];
const KDF_SCRYPT: [u8; 2] = *b"Sc";
const CHKALG: [u8; 2] = *b"B2";
const PUBLIC_LEN: usize = 2 + 8 + 32;
// sig_alg, kdf_alg, chk_alg, salt, opslimit, memlimit, key id, secret, checksum
const SECRET_LEN: usize = 2 + 2 + 2 + 32 + 8 + 8 + 8 + 64 + 32;
const COMMENT_PREFIX: &str = "untrusted comment: ";
/// Key files are tiny; anything larger is not a key.
const MAX_KEY_FILE: u64 = 4096;

/// Errors reading, writing or generating keys.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    /// A key file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// A key is not in minisign's format, or is not usable.
    #[error("{what}: {reason}")]
    Malformed {
        /// The file, or "public key" for a key given as text.
        what: String,
        /// What is wrong.
        reason: String,
    },
    /// Two trusted key files hold different keys with the same id.
    #[error("{second}: key id {key_id} is also in {first} with a different key")]
    Conflict {
        /// The id both claim.
        key_id: KeyId,
        /// The file read first.
        first: PathBuf,
        /// The file read second.
        second: PathBuf,
    },
    /// The operating system gave no randomness.
    #[error("generating a key: no randomness: {0}")]
    Random(String),
}

fn malformed(what: &str, reason: impl Into<String>) -> KeyError {
    KeyError::Malformed {
        what: what.to_string(),
        reason: reason.into(),
    }
}

/// A key id (minisign's "keynum"): 8 random bytes naming a key pair,
/// carried in every signature so a verifier can pick the key.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct KeyId(pub [u8; 8]);

impl fmt::Display for KeyId {
    /// The bytes as a little-endian u64 in uppercase hex, 16 digits: the
    /// number `minisign -V` and .pub comments print (minisign leaves out
    /// leading zeros).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:016X}", u64::from_le_bytes(self.0))
    }
}

impl fmt::Debug for KeyId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "KeyId({self})")
    }
}

/// A minisign public key.
#[derive(Clone, PartialEq, Eq)]
pub struct PublicKey {
    key_id: KeyId,
    key: VerifyingKey,
}

impl fmt::Debug for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PublicKey({})", self.key_id)
    }
}

impl PublicKey {
    /// The key from its bare base64 form (as given to `minisign -P`).
    pub fn from_base64(b64: &str) -> Result<Self, KeyError> {
        Self::decode("public key", b64.trim())
    }

    /// The key from the text of a minisign `.pub` file.
    pub fn from_minisign_str(text: &str) -> Result<Self, KeyError> {
        Self::parse("public key", text)
    }

    /// Reads a minisign `.pub` file.
    pub fn read(path: &Path) -> Result<Self, KeyError> {
        let text = read_key_file(path)?;
        Self::parse(&path.display().to_string(), &text)
    }

    fn parse(what: &str, text: &str) -> Result<Self, KeyError> {
        Self::decode(what, key_line(what, text)?)
    }

    fn decode(what: &str, b64: &str) -> Result<Self, KeyError> {
        let raw = decode_base64(what, b64, PUBLIC_LEN, "a public key")?;
        if raw[..2] != SIGALG {
            return Err(malformed(what, "not an Ed25519 minisign public key"));
        }
        let key_id = KeyId(raw[2..10].try_into().unwrap_or_default());
        let bytes: [u8; 32] = raw[10..].try_into().unwrap_or_default();
        let key = VerifyingKey::from_bytes(&bytes)
            .map_err(|_| malformed(what, "the key is not a valid Ed25519 point"))?;
        if key.is_weak() {
            return Err(malformed(
                what,
                "the key is a weak (small-order) Ed25519 key",
            ));
        }
        Ok(Self { key_id, key })
    }

    /// The key's id.
    pub fn key_id(&self) -> KeyId {
        self.key_id
    }

    pub(crate) fn verifying_key(&self) -> &VerifyingKey {
        &self.key
    }

    /// The bare base64 form.
    pub fn to_base64(&self) -> String {
        let mut raw = Vec::with_capacity(PUBLIC_LEN);
        raw.extend_from_slice(&SIGALG);
        raw.extend_from_slice(&self.key_id.0);
        raw.extend_from_slice(self.key.as_bytes());
        base64::engine::general_purpose::STANDARD.encode(raw)
    }

    /// The text of a minisign `.pub` file.
    pub fn to_minisign_string(&self) -> String {
        format!(
            "{COMMENT_PREFIX}noreboot public key {}\n{}\n",
            self.key_id,
            self.to_base64()
        )
    }

    /// Writes a `.pub` file (mode 0644); an existing file is an error.
    pub fn write(&self, path: &Path) -> Result<(), KeyError> {
        write_new(path, 0o644, self.to_minisign_string().as_bytes())
    }
}

/// A minisign secret key (unencrypted).
pub struct SecretKey {
    key_id: KeyId,
    key: SigningKey,
}

impl fmt::Debug for SecretKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SecretKey({})", self.key_id)
    }
}

impl SecretKey {
    /// A new random key pair.
    pub fn generate() -> Result<Self, KeyError> {
        let mut seed = [0u8; 32];
        let mut id = [0u8; 8];
        getrandom::fill(&mut seed).map_err(|e| KeyError::Random(e.to_string()))?;
        getrandom::fill(&mut id).map_err(|e| KeyError::Random(e.to_string()))?;
        let key = SigningKey::from_bytes(&seed);
        seed.fill(0);
        Ok(Self {
            key_id: KeyId(id),
            key,
        })
    }

    /// The key from the text of a minisign secret key file.
    pub fn from_minisign_str(text: &str) -> Result<Self, KeyError> {
        Self::parse("secret key", text)
    }

    /// Reads a minisign secret key file.
    pub fn read(path: &Path) -> Result<Self, KeyError> {
        let text = read_key_file(path)?;
        Self::parse(&path.display().to_string(), &text)
    }

    fn parse(what: &str, text: &str) -> Result<Self, KeyError> {
        let raw = decode_base64(what, key_line(what, text)?, SECRET_LEN, "a secret key")?;
        let (sig_alg, rest) = raw.split_at(2);
        let (kdf_alg, rest) = rest.split_at(2);
        let (chk_alg, rest) = rest.split_at(2);
        let (_kdf_params, rest) = rest.split_at(32 + 8 + 8);
        let (id, rest) = rest.split_at(8);
        let (secret, chk) = rest.split_at(64);
        if sig_alg != SIGALG {
            return Err(malformed(what, "not an Ed25519 minisign secret key"));
        }
        if kdf_alg == KDF_SCRYPT {
            return Err(malformed(
                what,
                "the key is password-protected; noreboot signs unattended and needs an unencrypted key (`minisign -C -W -s KEY` removes the password)",
            ));
        }
        if kdf_alg != KDF_NONE || chk_alg != CHKALG {
            return Err(malformed(
                what,
                "unsupported key derivation or checksum algorithm",
            ));
        }
        // minisign -W leaves the checksum zero for unencrypted keys;
        // otherwise it must match, catching a corrupted file.
        if chk.iter().any(|&b| b != 0) && chk != key_checksum(id, secret).as_slice() {
            return Err(malformed(
                what,
                "the key's checksum does not match (corrupted file?)",
            ));
        }
        let seed: [u8; 32] = secret[..32].try_into().unwrap_or_default();
        let key = SigningKey::from_bytes(&seed);
        if key.verifying_key().as_bytes() != &secret[32..] {
            return Err(malformed(
                what,
                "the secret key's public half does not match it",
            ));
        }
        Ok(Self {
            key_id: KeyId(id.try_into().unwrap_or_default()),
            key,
        })
    }

    /// The key's id.
    pub fn key_id(&self) -> KeyId {
        self.key_id
    }

    /// The matching public key.
    pub fn public_key(&self) -> PublicKey {
        PublicKey {
            key_id: self.key_id,
            key: self.key.verifying_key(),
        }
    }

    pub(crate) fn signing_key(&self) -> &SigningKey {
        &self.key
    }

    /// The text of a minisign secret key file, unencrypted.
    pub fn to_minisign_string(&self) -> String {
        let mut secret = [0u8; 64];
        secret[..32].copy_from_slice(self.key.as_bytes());
        secret[32..].copy_from_slice(self.key.verifying_key().as_bytes());
        let mut raw = Vec::with_capacity(SECRET_LEN);
        raw.extend_from_slice(&SIGALG);
        raw.extend_from_slice(&KDF_NONE);
        raw.extend_from_slice(&CHKALG);
        raw.extend_from_slice(&[0u8; 32 + 8 + 8]);
        raw.extend_from_slice(&self.key_id.0);
        raw.extend_from_slice(&secret);
        raw.extend_from_slice(&key_checksum(&self.key_id.0, &secret));
        let text = format!(
            "{COMMENT_PREFIX}noreboot secret key {} (unencrypted)\n{}\n",
            self.key_id,
            base64::engine::general_purpose::STANDARD.encode(&raw)
        );
        secret.fill(0);
        raw.fill(0);
        text
    }

    /// Writes a secret key file, readable by its owner only (mode 0600);
    /// an existing file is an error.
    pub fn write(&self, path: &Path) -> Result<(), KeyError> {
        write_new(path, 0o600, self.to_minisign_string().as_bytes())
    }
}

/// minisign's secret key checksum: BLAKE2b-256 of the algorithm, key id
/// and secret key.
fn key_checksum(id: &[u8], secret: &[u8]) -> [u8; 32] {
    let mut h = Blake2b::<U32>::new();
    h.update(SIGALG);
    h.update(id);
    h.update(secret);
    h.finalize().into()
}

/// The keys a verifier trusts, by key id.
#[derive(Debug, Clone, Default)]
pub struct TrustedKeys {
    keys: BTreeMap<KeyId, PublicKey>,
}

impl TrustedKeys {
    /// Every `*.pub` file in `dir`. A file that is not a valid public key
    /// is an error naming it (a typo must not silently drop trust), as is
    /// one id with two different keys.
    pub fn load_dir(dir: &Path) -> Result<Self, KeyError> {
        let (keys, skipped) = Self::load_dir_skipping(dir)?;
        match skipped.into_iter().next() {
            Some((_, e)) => Err(e),
            None => Ok(keys),
        }
    }

    /// Every usable `*.pub` file in `dir`, and each file left out with
    /// why: one that is not a valid public key, or whose key id another
    /// file (earlier by name) already holds with a different key. For a
    /// host whose trust must not fail closed: one garbage file must not
    /// disable the good keys beside it (the caller reports what was left
    /// out). Only a directory that cannot be read is an error.
    pub fn load_dir_skipping(dir: &Path) -> Result<(Self, Vec<(PathBuf, KeyError)>), KeyError> {
        let io = |source| KeyError::Io {
            path: dir.to_path_buf(),
            source,
        };
        let mut paths = Vec::new();
        for entry in std::fs::read_dir(dir).map_err(io)? {
            let path = entry.map_err(io)?.path();
            if path.extension().is_some_and(|e| e == "pub") {
                paths.push(path);
            }
        }
        paths.sort();
        let mut keys = Self::default();
        let mut from: BTreeMap<KeyId, PathBuf> = BTreeMap::new();
        let mut skipped = Vec::new();
        for path in paths {
            let key = match PublicKey::read(&path) {
                Ok(k) => k,
                Err(e) => {
                    skipped.push((path, e));
                    continue;
                }
            };
            if let Some(old) = keys.keys.get(&key.key_id) {
                if old != &key {
                    let first = from.get(&key.key_id).cloned().unwrap_or_default();
                    skipped.push((
                        path.clone(),
                        KeyError::Conflict {
                            key_id: key.key_id,
                            first,
                            second: path,
                        },
                    ));
                    continue;
                }
            }
            from.entry(key.key_id).or_insert(path);
            keys.keys.insert(key.key_id, key);
        }
        Ok((keys, skipped))
    }

    /// The given keys. Two different keys with one id are an error.
    pub fn from_keys(keys: impl IntoIterator<Item = PublicKey>) -> Result<Self, KeyError> {
        let mut out = Self::default();
        for key in keys {
            if let Some(old) = out.keys.get(&key.key_id) {
                if old != &key {
                    return Err(malformed(
                        "trusted keys",
                        format!("key id {} is given twice with different keys", key.key_id),
                    ));
                }
            }
            out.keys.insert(key.key_id, key);
        }
        Ok(out)
    }

    pub(crate) fn single(key: PublicKey) -> Self {
        Self {
            keys: BTreeMap::from([(key.key_id, key)]),
        }
    }

    /// The key with this id.
    pub fn get(&self, id: &KeyId) -> Option<&PublicKey> {
        self.keys.get(id)
    }

    /// The trusted keys, by id.
    pub fn iter(&self) -> impl Iterator<Item = &PublicKey> {
        self.keys.values()
    }

    /// How many keys are trusted.
    pub fn len(&self) -> usize {
        self.keys.len()
    }

    /// Whether no key is trusted.
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }
}

/// A key file's text, its size checked before reading.
fn read_key_file(path: &Path) -> Result<String, KeyError> {
    let io = |source| KeyError::Io {
        path: path.to_path_buf(),
        source,
    };
    let file = std::fs::File::open(path).map_err(io)?;
    let meta = file.metadata().map_err(io)?;
    if !meta.is_file() {
        return Err(malformed(&path.display().to_string(), "not a regular file"));
    }
    let mut bytes = Vec::new();
    file.take(MAX_KEY_FILE + 1)
        .read_to_end(&mut bytes)
        .map_err(io)?;
    if bytes.len() as u64 > MAX_KEY_FILE {
        return Err(malformed(
            &path.display().to_string(),
            format!("larger than {MAX_KEY_FILE} bytes: not a key file"),
        ));
    }
    String::from_utf8(bytes).map_err(|_| malformed(&path.display().to_string(), "not UTF-8 text"))
}

/// The base64 line of a key file: an `untrusted comment:` line, the key,
/// then nothing but blank lines (people paste keys with an extra newline).
fn key_line<'t>(what: &str, text: &'t str) -> Result<&'t str, KeyError> {
    let mut lines = text.split('\n').map(|l| l.strip_suffix('\r').unwrap_or(l));
    let comment = lines.next().unwrap_or_default();
    if !comment.starts_with(COMMENT_PREFIX) {
        return Err(malformed(
            what,
            format!("line 1 does not start with \"{COMMENT_PREFIX}\""),
        ));
    }
    let key = lines.next().unwrap_or_default().trim();
    if key.is_empty() {
        return Err(malformed(what, "line 2 (the key) is missing"));
    }
    if lines.any(|l| !l.trim().is_empty()) {
        return Err(malformed(what, "text after the key line"));
    }
    Ok(key)
}

fn decode_base64(what: &str, b64: &str, len: usize, kind: &str) -> Result<Vec<u8>, KeyError> {
    let raw = base64::engine::general_purpose::STANDARD
        .decode(b64)
        .map_err(|e| malformed(what, format!("the key line is not base64: {e}")))?;
    if raw.len() != len {
        return Err(malformed(
            what,
            format!("the key is {} bytes, {kind} has {len}", raw.len()),
        ));
    }
    Ok(raw)
}

fn write_new(path: &Path, mode: u32, bytes: &[u8]) -> Result<(), KeyError> {
    let io = |source| KeyError::Io {
        path: path.to_path_buf(),
        source,
    };
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(path)
        .map_err(io)?;
    f.write_all(bytes).map_err(io)?;
    f.sync_all().map_err(io)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_id_prints_like_minisign() {
        // minisign prints le64_load(keynum) with %016" PRIX64.
        let id = KeyId([0x4c, 0xf1, 0xcf, 0x20, 0x42, 0x76, 0x1d, 0x27]);
        assert_eq!(id.to_string(), "271D764220CFF14C");
    }

    #[test]
    fn secret_key_text_round_trip() {
        let sk = SecretKey::generate().unwrap();
        let back = SecretKey::from_minisign_str(&sk.to_minisign_string()).unwrap();
        assert_eq!(back.key_id(), sk.key_id());
        assert_eq!(back.public_key(), sk.public_key());
        let pk = PublicKey::from_minisign_str(&sk.public_key().to_minisign_string()).unwrap();
        assert_eq!(pk, sk.public_key());
        assert_eq!(PublicKey::from_base64(&pk.to_base64()).unwrap(), pk);
    }

    #[test]
    fn minisign_w_key_with_zero_checksum() {
        // Written by `minisign -G -W` (0.11): unencrypted, checksum zero.
        let text = "untrusted comment: minisign encrypted secret key\nRWQAAEIyAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAATPHPIEJ2HSelEWj7x2cW0URSdqsdBElh8A7A5fcdXQm0QHRBhyHP8i8nSDq05XWiNgX+Hj71CwfHvr52Rt+BVmUGK7FaJI7uAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=\n";
        let sk = SecretKey::from_minisign_str(text).unwrap();
        assert_eq!(sk.key_id().to_string(), "271D764220CFF14C");
        let pk = PublicKey::from_minisign_str(
            "untrusted comment: minisign public key 271D764220CFF14C\nRWRM8c8gQnYdJy8nSDq05XWiNgX+Hj71CwfHvr52Rt+BVmUGK7FaJI7u\n",
        )
        .unwrap();
        assert_eq!(sk.public_key(), pk);
    }

    #[test]
    fn corrupted_secret_key_refused() {
        let sk = SecretKey::generate().unwrap();
        let text = sk.to_minisign_string();
        let (comment, b64) = text.split_once('\n').unwrap();
        let mut raw = base64::engine::general_purpose::STANDARD
            .decode(b64.trim())
            .unwrap();
        raw[60] ^= 1;
        let bad = format!(
            "{comment}\n{}\n",
            base64::engine::general_purpose::STANDARD.encode(&raw)
        );
        let err = SecretKey::from_minisign_str(&bad).unwrap_err().to_string();
        assert!(err.contains("checksum"), "{err}");
    }
}
