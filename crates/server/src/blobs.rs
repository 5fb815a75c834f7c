//! Where bundle files live, addressed by the sha256 of their bytes. The
//! [`BlobStore`] trait is the seam for object storage; [`DiskStore`] keeps
//! them under a directory (`<dir>/<first two hex digits>/<sha256>.nrb`),
//! written atomically so a reader never sees half a bundle. The trait is
//! synchronous: async callers run it with `spawn_blocking`.

use std::io::Write;
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

/// Why the blob store failed.
#[derive(Debug, thiserror::Error)]
pub enum BlobError {
    /// A file operation failed.
    #[error("bundle store: {op} {path}: {source}")]
    Io {
        /// What was being done.
        op: &'static str,
        /// On which file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// The key is not a lowercase hex sha256.
    #[error("bundle store: {0:?} is not a sha256")]
    BadKey(String),
    /// A bundle the database names is not in the store.
    #[error("bundle store: {0} is missing")]
    Missing(String),
    /// Stored bytes no longer hash to their key.
    #[error("bundle store: {path} does not have sha256 {sha256} any more (corrupted?)")]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// Its key.
        sha256: String,
    },
}

/// A content-addressed store of bundle files.
pub trait BlobStore: Send + Sync + std::fmt::Debug {
    /// Stores `bytes` under `sha256` (which the caller computed from them);
    /// storing the same content again is a no-op.
    fn put(&self, sha256: &str, bytes: &[u8]) -> Result<(), BlobError>;
    /// The bytes stored under `sha256`, or `None`.
    fn get(&self, sha256: &str) -> Result<Option<Vec<u8>>, BlobError>;
}

/// The sha256 of `bytes`, lowercase hex: the key a blob is stored under.
pub fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// Whether `s` is a lowercase hex sha256.
pub fn is_sha256(s: &str) -> bool {
    s.len() == 64 && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

/// Bundle files in a directory on local disk.
#[derive(Debug, Clone)]
pub struct DiskStore {
    dir: PathBuf,
}

impl DiskStore {
    /// A store under `dir`, created if missing.
    pub fn open(dir: &Path) -> Result<Self, BlobError> {
        std::fs::create_dir_all(dir).map_err(|source| BlobError::Io {
            op: "create",
            path: dir.to_path_buf(),
            source,
        })?;
        Ok(Self {
            dir: dir.to_path_buf(),
        })
    }

    fn path(&self, sha256: &str) -> Result<PathBuf, BlobError> {
        // The key becomes a path: only hex may reach the filesystem.
        if !is_sha256(sha256) {
            return Err(BlobError::BadKey(sha256.to_string()));
        }
        Ok(self.dir.join(&sha256[..2]).join(format!("{sha256}.nrb")))
    }
}

impl BlobStore for DiskStore {
    fn put(&self, sha256: &str, bytes: &[u8]) -> Result<(), BlobError> {
        let path = self.path(sha256)?;
        let io = |op, source| BlobError::Io {
            op,
            path: path.clone(),
            source,
        };
        if path.exists() {
            return Ok(());
        }
        let dir = path.parent().unwrap_or(&self.dir);
        std::fs::create_dir_all(dir).map_err(|e| io("create", e))?;
        let mut tmp = tempfile::Builder::new()
            .prefix(".incoming-")
            .tempfile_in(dir)
            .map_err(|e| io("create", e))?;
        tmp.write_all(bytes).map_err(|e| io("write", e))?;
        // Durable before the database row that points at it commits.
        tmp.as_file().sync_all().map_err(|e| io("sync", e))?;
        tmp.persist(&path).map_err(|e| io("rename", e.error))?;
        if let Ok(d) = std::fs::File::open(dir) {
            let _ = d.sync_all();
        }
        Ok(())
    }

    fn get(&self, sha256: &str) -> Result<Option<Vec<u8>>, BlobError> {
        let path = self.path(sha256)?;
        let bytes = match std::fs::read(&path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(source) => {
                return Err(BlobError::Io {
                    op: "read",
                    path,
                    source,
                })
            }
        };
        // A flipped bit on disk must not reach a host as a "verified" hash.
        if sha256_hex(&bytes) != sha256 {
            return Err(BlobError::Corrupt {
                path,
                sha256: sha256.to_string(),
            });
        }
        Ok(Some(bytes))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn put_get_round_trip_and_refuses_non_hex_keys() {
        let dir = tempfile::tempdir().unwrap();
        let store = DiskStore::open(dir.path()).unwrap();
        let sha = sha256_hex(b"bundle");
        store.put(&sha, b"bundle").unwrap();
        store.put(&sha, b"bundle").unwrap();
        assert_eq!(store.get(&sha).unwrap().unwrap(), b"bundle");
        assert!(store.get(&sha256_hex(b"other")).unwrap().is_none());
        assert!(matches!(
            store.get("../../etc/passwd"),
            Err(BlobError::BadKey(_))
        ));
    }

    #[test]
    fn corrupted_file_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let store = DiskStore::open(dir.path()).unwrap();
        let sha = sha256_hex(b"bundle");
        store.put(&sha, b"bundle").unwrap();
        std::fs::write(store.path(&sha).unwrap(), b"bundlE").unwrap();
        assert!(matches!(store.get(&sha), Err(BlobError::Corrupt { .. })));
    }
}
