//! Where bundle files live, addressed by the sha256 of their bytes. The
//! [`BlobStore`] trait is the seam: [`DiskStore`] keeps them under a
//! directory (`<dir>/<first two hex digits>/<sha256>.nrb`, SQLite
//! deployments: one server process), written atomically so a reader never
//! sees half a bundle; [`DbStore`] keeps them in the database in chunks
//! (PostgreSQL deployments), so that every server process on the database
//! serves every bundle, whichever process published it.

use std::future::Future;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::pin::Pin;

use sha2::{Digest, Sha256};
use sqlx::{AnyPool, Row};

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
    /// A database operation failed.
    #[error("bundle store: {op} {sha256}: {source}")]
    Db {
        /// What was being done.
        op: &'static str,
        /// On which bundle.
        sha256: String,
        /// The cause.
        source: sqlx::Error,
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
        /// The file (or, in the database, the key).
        path: PathBuf,
        /// Its key.
        sha256: String,
    },
    /// The blocking task doing file I/O panicked or was cancelled.
    #[error("bundle store: {op} {sha256}: the I/O task failed: {reason}")]
    Task {
        /// What was being done.
        op: &'static str,
        /// On which bundle.
        sha256: String,
        /// The join error.
        reason: String,
    },
}

/// What [`BlobStore`]'s methods answer: a boxed future, so the trait stays
/// usable as `dyn BlobStore`.
pub type BlobFuture<'a, T> = Pin<Box<dyn Future<Output = Result<T, BlobError>> + Send + 'a>>;

/// A content-addressed store of bundle files.
pub trait BlobStore: Send + Sync + std::fmt::Debug {
    /// Stores `bytes` under `sha256` (which the caller computed from them);
    /// storing the same content again is a no-op.
    fn put<'a>(&'a self, sha256: &'a str, bytes: Vec<u8>) -> BlobFuture<'a, ()>;
    /// The bytes stored under `sha256` (checked against it), or `None`.
    fn get<'a>(&'a self, sha256: &'a str) -> BlobFuture<'a, Option<Vec<u8>>>;
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

    /// The store under `dir` if that directory exists (nothing is created).
    pub fn existing(dir: &Path) -> Option<Self> {
        dir.is_dir().then(|| Self {
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

    /// [`BlobStore::put`], blocking the calling thread.
    pub fn put_blocking(&self, sha256: &str, bytes: &[u8]) -> Result<(), BlobError> {
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

    /// [`BlobStore::get`], blocking the calling thread.
    pub fn get_blocking(&self, sha256: &str) -> Result<Option<Vec<u8>>, BlobError> {
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

/// Runs `f` on tokio's blocking pool: file I/O must not stall the runtime.
async fn blocking<T: Send + 'static>(
    op: &'static str,
    sha256: &str,
    f: impl FnOnce() -> Result<T, BlobError> + Send + 'static,
) -> Result<T, BlobError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| BlobError::Task {
            op,
            sha256: sha256.to_string(),
            reason: e.to_string(),
        })?
}

impl BlobStore for DiskStore {
    fn put<'a>(&'a self, sha256: &'a str, bytes: Vec<u8>) -> BlobFuture<'a, ()> {
        let (store, key) = (self.clone(), sha256.to_string());
        Box::pin(blocking("store", sha256, move || {
            store.put_blocking(&key, &bytes)
        }))
    }

    fn get<'a>(&'a self, sha256: &'a str) -> BlobFuture<'a, Option<Vec<u8>>> {
        let (store, key) = (self.clone(), sha256.to_string());
        Box::pin(blocking("read", sha256, move || store.get_blocking(&key)))
    }
}

/// Bytes per row of `bundle_chunks`: a bundle (up to 64 MiB) is written
/// and read a chunk per statement, so neither end holds a whole bundle in
/// one protocol message, and a row stays far below PostgreSQL's limits.
pub const CHUNK: usize = 1 << 20;

/// Bundle files in the database (`bundle_blobs`, `bundle_chunks`): the
/// store of PostgreSQL deployments, where several server processes must
/// all serve what any of them published. A bundle is written in one
/// transaction (its chunks, then its `bundle_blobs` row), so a reader sees
/// all of it or none; its bytes are checked against its sha256 on read,
/// as on disk.
///
/// `legacy`: the deployment's bundle directory from before its bundles
/// moved into the database. A bundle missing from the database is taken
/// from there, and copied into the database on that first read; `serve`
/// also copies every one the database names at start
/// ([`DbStore::import_from_disk`]).
#[derive(Debug, Clone)]
pub struct DbStore {
    pool: AnyPool,
    legacy: Option<DiskStore>,
}

impl DbStore {
    /// A store in `pool`'s database, falling back to `legacy` files.
    pub fn new(pool: AnyPool, legacy: Option<DiskStore>) -> Self {
        Self { pool, legacy }
    }

    async fn put_db(&self, sha256: &str, bytes: &[u8]) -> Result<(), BlobError> {
        if !is_sha256(sha256) {
            return Err(BlobError::BadKey(sha256.to_string()));
        }
        let db = |op| {
            move |source| BlobError::Db {
                op,
                sha256: sha256.to_string(),
                source,
            }
        };
        if self.stored(sha256).await? {
            return Ok(());
        }
        let mut tx = self.pool.begin().await.map_err(db("begin storing"))?;
        // Two processes storing the same bundle at once: the second's
        // inserts wait for the first's commit and then change nothing.
        for (seq, chunk) in bytes.chunks(CHUNK).enumerate() {
            sqlx::query(
                "INSERT INTO bundle_chunks (sha256, seq, data) VALUES ($1, $2, $3) \
                 ON CONFLICT (sha256, seq) DO NOTHING",
            )
            .bind(sha256)
            .bind(seq as i64)
            .bind(chunk)
            .execute(&mut *tx)
            .await
            .map_err(db("store a chunk of"))?;
        }
        sqlx::query(
            "INSERT INTO bundle_blobs (sha256, size, chunks) VALUES ($1, $2, $3) \
             ON CONFLICT (sha256) DO NOTHING",
        )
        .bind(sha256)
        .bind(bytes.len() as i64)
        .bind(bytes.len().div_ceil(CHUNK) as i64)
        .execute(&mut *tx)
        .await
        .map_err(db("store"))?;
        tx.commit().await.map_err(db("commit"))
    }

    async fn stored(&self, sha256: &str) -> Result<bool, BlobError> {
        Ok(sqlx::query("SELECT 1 FROM bundle_blobs WHERE sha256 = $1")
            .bind(sha256)
            .fetch_optional(&self.pool)
            .await
            .map_err(|source| BlobError::Db {
                op: "look up",
                sha256: sha256.to_string(),
                source,
            })?
            .is_some())
    }

    async fn get_db(&self, sha256: &str) -> Result<Option<Vec<u8>>, BlobError> {
        if !is_sha256(sha256) {
            return Err(BlobError::BadKey(sha256.to_string()));
        }
        let db = |op| {
            move |source| BlobError::Db {
                op,
                sha256: sha256.to_string(),
                source,
            }
        };
        let Some(row) = sqlx::query("SELECT size, chunks FROM bundle_blobs WHERE sha256 = $1")
            .bind(sha256)
            .fetch_optional(&self.pool)
            .await
            .map_err(db("look up"))?
        else {
            return Ok(None);
        };
        let size: i64 = row.try_get(0).map_err(db("read the size of"))?;
        let chunks: i64 = row.try_get(1).map_err(db("read the size of"))?;
        let corrupt = || BlobError::Corrupt {
            path: PathBuf::from(format!("bundle_chunks/{sha256}")),
            sha256: sha256.to_string(),
        };
        // The row was written by this server; a size beyond any bundle's
        // means a damaged row, not an allocation to attempt.
        let size = usize::try_from(size)
            .ok()
            .filter(|&s| s as u64 <= bundle::MAX_BUNDLE)
            .ok_or_else(corrupt)?;
        let mut bytes = Vec::with_capacity(size);
        // A chunk per statement: the database sends one row at a time,
        // never the whole bundle in one message.
        for seq in 0..chunks {
            let chunk: Vec<u8> =
                sqlx::query("SELECT data FROM bundle_chunks WHERE sha256 = $1 AND seq = $2")
                    .bind(sha256)
                    .bind(seq)
                    .fetch_optional(&self.pool)
                    .await
                    .map_err(db("read a chunk of"))?
                    .ok_or_else(corrupt)?
                    .try_get(0)
                    .map_err(db("read a chunk of"))?;
            if bytes.len() + chunk.len() > size {
                return Err(corrupt());
            }
            bytes.extend_from_slice(&chunk);
        }
        if bytes.len() != size || sha256_hex(&bytes) != sha256 {
            return Err(corrupt());
        }
        Ok(Some(bytes))
    }

    /// Copies into the database every bundle `wanted` names that it lacks
    /// and the legacy directory has; answers how many were copied and the
    /// keys found in neither place.
    pub async fn import_from_disk(
        &self,
        wanted: &[String],
    ) -> Result<(usize, Vec<String>), BlobError> {
        let mut copied = 0;
        let mut missing = Vec::new();
        for sha256 in wanted {
            if self.stored(sha256).await? {
                continue;
            }
            match self.get_legacy(sha256).await? {
                Some(bytes) => {
                    self.put_db(sha256, &bytes).await?;
                    copied += 1;
                }
                None => missing.push(sha256.clone()),
            }
        }
        Ok((copied, missing))
    }

    async fn get_legacy(&self, sha256: &str) -> Result<Option<Vec<u8>>, BlobError> {
        match &self.legacy {
            Some(disk) => disk.get(sha256).await,
            None => Ok(None),
        }
    }
}

impl BlobStore for DbStore {
    fn put<'a>(&'a self, sha256: &'a str, bytes: Vec<u8>) -> BlobFuture<'a, ()> {
        Box::pin(async move { self.put_db(sha256, &bytes).await })
    }

    fn get<'a>(&'a self, sha256: &'a str) -> BlobFuture<'a, Option<Vec<u8>>> {
        Box::pin(async move {
            if let Some(bytes) = self.get_db(sha256).await? {
                return Ok(Some(bytes));
            }
            // Published to the disk store before the move (or by a process
            // of an older version during a rolling upgrade): serve it, and
            // copy it in so that every other process can too.
            let Some(bytes) = self.get_legacy(sha256).await? else {
                return Ok(None);
            };
            if let Err(e) = self.put_db(sha256, &bytes).await {
                tracing::warn!("copying bundle {sha256} from disk into the database: {e}");
            }
            Ok(Some(bytes))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::db::{pg, Db};

    #[tokio::test]
    async fn put_get_round_trip_and_refuses_non_hex_keys() {
        let dir = tempfile::tempdir().unwrap();
        let store = DiskStore::open(dir.path()).unwrap();
        let sha = sha256_hex(b"bundle");
        store.put(&sha, b"bundle".to_vec()).await.unwrap();
        store.put(&sha, b"bundle".to_vec()).await.unwrap();
        assert_eq!(store.get(&sha).await.unwrap().unwrap(), b"bundle");
        assert!(store.get(&sha256_hex(b"other")).await.unwrap().is_none());
        assert!(matches!(
            store.get("../../etc/passwd").await,
            Err(BlobError::BadKey(_))
        ));
    }

    #[tokio::test]
    async fn corrupted_file_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let store = DiskStore::open(dir.path()).unwrap();
        let sha = sha256_hex(b"bundle");
        store.put(&sha, b"bundle".to_vec()).await.unwrap();
        std::fs::write(store.path(&sha).unwrap(), b"bundlE").unwrap();
        assert!(matches!(
            store.get(&sha).await,
            Err(BlobError::Corrupt { .. })
        ));
    }

    /// Bytes that span several chunks and end in a partial one.
    fn big() -> Vec<u8> {
        (0..CHUNK * 2 + 12_345)
            .map(|i| (i * 7 % 251) as u8)
            .collect()
    }

    #[tokio::test]
    async fn database_store_round_trips_in_chunks_across_pools() {
        let url = pg::database();
        let (a, b) = (Db::open(&url).await.unwrap(), Db::open(&url).await.unwrap());
        // Two pools on one database: two server processes.
        let (sa, sb) = (
            DbStore::new(a.pool().clone(), None),
            DbStore::new(b.pool().clone(), None),
        );
        let bytes = big();
        let sha = sha256_hex(&bytes);
        assert!(sb.get(&sha).await.unwrap().is_none());
        sa.put(&sha, bytes.clone()).await.unwrap();
        sb.put(&sha, bytes.clone()).await.unwrap();
        assert_eq!(sb.get(&sha).await.unwrap().unwrap(), bytes);
        let chunks: i64 = sqlx::query("SELECT COUNT(*) FROM bundle_chunks WHERE sha256 = $1")
            .bind(&sha)
            .fetch_one(b.pool())
            .await
            .unwrap()
            .get(0);
        assert_eq!(chunks, 3);
        assert!(matches!(sb.get("nope").await, Err(BlobError::BadKey(_))));

        // A damaged chunk is an error, never bytes under a wrong hash.
        sqlx::query("UPDATE bundle_chunks SET data = $1 WHERE sha256 = $2 AND seq = 1")
            .bind(&b"short"[..])
            .bind(&sha)
            .execute(a.pool())
            .await
            .unwrap();
        assert!(matches!(sa.get(&sha).await, Err(BlobError::Corrupt { .. })));
    }

    #[tokio::test]
    async fn database_store_takes_over_the_disk_store() {
        let dir = tempfile::tempdir().unwrap();
        let disk = DiskStore::open(dir.path()).unwrap();
        let (one, two) = (b"bundle one".to_vec(), b"bundle two".to_vec());
        let (sha1, sha2) = (sha256_hex(&one), sha256_hex(&two));
        disk.put(&sha1, one.clone()).await.unwrap();
        disk.put(&sha2, two.clone()).await.unwrap();
        let db = Db::open(&pg::database()).await.unwrap();
        let store = DbStore::new(db.pool().clone(), DiskStore::existing(dir.path()));
        // Read through: served from disk, and copied in.
        assert_eq!(store.get(&sha1).await.unwrap().unwrap(), one);
        let gone = sha256_hex(b"gone");
        let (copied, missing) = store
            .import_from_disk(&[sha1.clone(), sha2.clone(), gone.clone()])
            .await
            .unwrap();
        assert_eq!((copied, missing), (1, vec![gone]));
        // Without the directory, the database has both.
        drop(dir);
        let store = DbStore::new(db.pool().clone(), None);
        assert_eq!(store.get(&sha1).await.unwrap().unwrap(), one);
        assert_eq!(store.get(&sha2).await.unwrap().unwrap(), two);
    }
}
