//! Where bundle files live, addressed by the sha256 of their bytes. The
//! [`BlobStore`] trait is the seam: [`DiskStore`] keeps them under a
//! directory (`<dir>/<first two hex digits>/<sha256>.nrb`, SQLite
//! deployments: one server process), written atomically so a reader never
//! sees half a bundle; [`DbStore`] keeps them in the database in chunks
//! (PostgreSQL deployments), so that every server process on the database
//! serves every bundle, whichever process published it, and reads them
//! for downloads a chunk at a time ([`BlobReader`]).

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
    /// The bytes stored under `sha256` as they are read, or `None`: for
    /// downloads, which should not hold a whole bundle per client. By
    /// default the whole of [`BlobStore::get`] in one piece.
    fn read<'a>(&'a self, sha256: &'a str) -> BlobFuture<'a, Option<BlobReader>> {
        Box::pin(async move { Ok(self.get(sha256).await?.map(BlobReader::whole)) })
    }
}

/// A bundle being read: its size, then its bytes in pieces from a task
/// that reads ahead at most one piece. The hash is checked before the last
/// piece is handed over: a damaged bundle ends in an error (and a download
/// cut short of its size) instead of complete bytes under a wrong hash.
#[derive(Debug)]
pub struct BlobReader {
    /// The bundle's size in bytes.
    pub size: u64,
    /// The pieces, in order; an error ends them.
    pub pieces: tokio::sync::mpsc::Receiver<Result<Vec<u8>, BlobError>>,
}

impl BlobReader {
    /// A reader of bytes already in memory (and checked).
    pub fn whole(bytes: Vec<u8>) -> Self {
        let (tx, rx) = tokio::sync::mpsc::channel(1);
        let size = bytes.len() as u64;
        // A fresh channel with room for one: this cannot fail.
        let _ = tx.try_send(Ok(bytes));
        Self { size, pieces: rx }
    }
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
        let Some((size, chunks)) = self.header(sha256).await? else {
            return Ok(None);
        };
        let mut bytes = Vec::with_capacity(size);
        for seq in 0..chunks {
            let chunk = read_chunk(&self.pool, sha256, seq).await?;
            if bytes.len() + chunk.len() > size {
                return Err(corrupt(sha256));
            }
            bytes.extend_from_slice(&chunk);
        }
        if bytes.len() != size || sha256_hex(&bytes) != sha256 {
            return Err(corrupt(sha256));
        }
        Ok(Some(bytes))
    }

    /// Starts reading `sha256` from the database a chunk at a time (see
    /// [`BlobReader`]); `None` when it is not there.
    async fn read_db(&self, sha256: &str) -> Result<Option<BlobReader>, BlobError> {
        let Some((size, chunks)) = self.header(sha256).await? else {
            return Ok(None);
        };
        let (tx, rx) = tokio::sync::mpsc::channel(1);
        let (pool, key) = (self.pool.clone(), sha256.to_string());
        tokio::spawn(async move {
            let mut hasher = Sha256::new();
            let mut held: Option<Vec<u8>> = None;
            let mut read = 0usize;
            for seq in 0..chunks {
                let chunk = match read_chunk(&pool, &key, seq).await {
                    Ok(c) => c,
                    Err(e) => {
                        tracing::error!("{e}");
                        let _ = tx.send(Err(e)).await;
                        return;
                    }
                };
                read += chunk.len();
                if read > size {
                    let e = corrupt(&key);
                    tracing::error!("{e}");
                    let _ = tx.send(Err(e)).await;
                    return;
                }
                hasher.update(&chunk);
                // Hand over the previous chunk; the newest waits for the
                // hash of them all. A closed channel: the client left.
                if let Some(prev) = held.replace(chunk) {
                    if tx.send(Ok(prev)).await.is_err() {
                        return;
                    }
                }
            }
            let last = if read == size && hex::encode(hasher.finalize()) == key {
                Ok(held.unwrap_or_default())
            } else {
                Err(corrupt(&key))
            };
            if let Err(e) = &last {
                tracing::error!("{e}");
            }
            let _ = tx.send(last).await;
        });
        Ok(Some(BlobReader {
            size: size as u64,
            pieces: rx,
        }))
    }

    /// A stored bundle's size (at most a bundle's maximum) and chunk count.
    async fn header(&self, sha256: &str) -> Result<Option<(usize, i64)>, BlobError> {
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
        // The row was written by this server; a size beyond any bundle's
        // means a damaged row, not an allocation to attempt.
        let size = usize::try_from(size)
            .ok()
            .filter(|&s| s as u64 <= bundle::MAX_BUNDLE)
            .ok_or_else(|| corrupt(sha256))?;
        Ok(Some((size, chunks)))
    }

    /// Copies into the database every bundle `wanted` names that it lacks
    /// and the legacy directory has (intact); answers how many were copied
    /// and the keys found in neither place (or damaged on disk, logged).
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
            match self.get_legacy(sha256).await {
                Ok(Some(bytes)) => {
                    self.put_db(sha256, &bytes).await?;
                    copied += 1;
                }
                Ok(None) => missing.push(sha256.clone()),
                // A damaged or unreadable file is one bundle missing, not a
                // reason to copy none of the others.
                Err(e) => {
                    tracing::warn!("{e}");
                    missing.push(sha256.clone());
                }
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

/// Chunk `seq` of `sha256`: a statement per chunk, so the database sends
/// one row at a time, never a whole bundle in one message.
async fn read_chunk(pool: &AnyPool, sha256: &str, seq: i64) -> Result<Vec<u8>, BlobError> {
    let db = |source| BlobError::Db {
        op: "read a chunk of",
        sha256: sha256.to_string(),
        source,
    };
    sqlx::query("SELECT data FROM bundle_chunks WHERE sha256 = $1 AND seq = $2")
        .bind(sha256)
        .bind(seq)
        .fetch_optional(pool)
        .await
        .map_err(db)?
        .ok_or_else(|| corrupt(sha256))?
        .try_get(0)
        .map_err(db)
}

/// The error for database rows that no longer make up bundle `sha256`.
fn corrupt(sha256: &str) -> BlobError {
    BlobError::Corrupt {
        path: PathBuf::from(format!("bundle_chunks/{sha256}")),
        sha256: sha256.to_string(),
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

    fn read<'a>(&'a self, sha256: &'a str) -> BlobFuture<'a, Option<BlobReader>> {
        Box::pin(async move {
            if let Some(r) = self.read_db(sha256).await? {
                return Ok(Some(r));
            }
            // Not in the database: `get` reads through to the old disk
            // store (once per bundle: it copies it in).
            Ok(self.get(sha256).await?.map(BlobReader::whole))
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

    /// Every piece of `r`, and the error that ended them, if any.
    async fn drain(mut r: BlobReader) -> (Vec<Vec<u8>>, Option<BlobError>) {
        let mut pieces = Vec::new();
        while let Some(p) = r.pieces.recv().await {
            match p {
                Ok(p) => pieces.push(p),
                Err(e) => return (pieces, Some(e)),
            }
        }
        (pieces, None)
    }

    #[tokio::test]
    async fn database_store_reads_a_chunk_at_a_time_and_withholds_the_last_until_checked() {
        let db = Db::open(&pg::database()).await.unwrap();
        let store = DbStore::new(db.pool().clone(), None);
        let bytes = big();
        let sha = sha256_hex(&bytes);
        assert!(store.read(&sha).await.unwrap().is_none());
        store.put(&sha, bytes.clone()).await.unwrap();
        let r = store.read(&sha).await.unwrap().unwrap();
        assert_eq!(r.size, bytes.len() as u64);
        let (pieces, err) = drain(r).await;
        assert!(err.is_none(), "{err:?}");
        assert_eq!(
            pieces.iter().map(Vec::len).collect::<Vec<_>>(),
            [CHUNK, CHUNK, 12_345]
        );
        assert!(pieces.concat() == bytes);

        // One flipped byte in the last chunk: the first two pieces, then
        // the error — the last piece is never handed over.
        sqlx::query("UPDATE bundle_chunks SET data = $1 WHERE sha256 = $2 AND seq = 2")
            .bind(&vec![0u8; 12_345][..])
            .bind(&sha)
            .execute(db.pool())
            .await
            .unwrap();
        let (pieces, err) = drain(store.read(&sha).await.unwrap().unwrap()).await;
        assert_eq!(pieces.len(), 2);
        assert!(matches!(err, Some(BlobError::Corrupt { .. })), "{err:?}");
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
        let (gone, damaged) = (sha256_hex(b"gone"), sha256_hex(b"damaged"));
        let legacy = DiskStore::existing(dir.path()).unwrap();
        legacy.put(&damaged, b"damaged".to_vec()).await.unwrap();
        std::fs::write(legacy.path(&damaged).unwrap(), b"damagEd").unwrap();
        let (copied, missing) = store
            .import_from_disk(&[sha1.clone(), sha2.clone(), gone.clone(), damaged.clone()])
            .await
            .unwrap();
        assert_eq!((copied, missing), (1, vec![gone, damaged]));
        // Without the directory, the database has both.
        drop(dir);
        let store = DbStore::new(db.pool().clone(), None);
        assert_eq!(store.get(&sha1).await.unwrap().unwrap(), one);
        assert_eq!(store.get(&sha2).await.unwrap().unwrap(), two);
    }
}
