//! The database connection: one code path for every backend through
//! sqlx's `Any` driver, selected by URL. Opening a SQLite database creates
//! the file, switches it to WAL (readers never block the writer, and a
//! commit is durable once acknowledged), and runs the versioned
//! migrations, so `serve` works with no setup. Only SQLite is compiled in
//! today; the SQL is kept portable for PostgreSQL.

use std::str::FromStr;
use std::time::Duration;

use sqlx::any::{AnyConnectOptions, AnyPoolOptions};
use sqlx::{AnyPool, ConnectOptions, Row};

use crate::error::{invalid, DbContext, Error};

/// The migrations, embedded in the binary.
pub static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations");

/// Which database is behind the URL.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// One file.
    Sqlite,
}

/// A migrated database.
#[derive(Debug, Clone)]
pub struct Db {
    pool: AnyPool,
    backend: Backend,
}

/// A write transaction.
pub type Tx = sqlx::Transaction<'static, sqlx::Any>;

impl Db {
    /// Connects to `url` (`sqlite:///path/noreboot.db`), creating and
    /// migrating the database as needed.
    pub async fn open(url: &str) -> Result<Self, Error> {
        sqlx::any::install_default_drivers();
        let backend = if url.starts_with("sqlite:") {
            Backend::Sqlite
        } else {
            return Err(invalid(format!(
                "database URL {url:?}: only sqlite: URLs are supported in this build"
            )));
        };
        let url = with_create_mode(url);
        let opts = AnyConnectOptions::from_str(&url)
            .map_err(|e| invalid(format!("database URL {url:?}: {e}")))?
            .disable_statement_logging();

        // An in-memory database lives as long as its one connection.
        let memory = url.contains(":memory:");
        let pool = AnyPoolOptions::new()
            .after_connect(move |conn, _| {
                Box::pin(async move {
                    if backend == Backend::Sqlite {
                        // Pages are read through a memory map instead of a
                        // pread each (measured: 4.5% of the server's time
                        // under check-in load), and each connection keeps
                        // up to 32 MiB of them instead of SQLite's 2 MiB.
                        sqlx::query("PRAGMA mmap_size = 268435456")
                            .execute(&mut *conn)
                            .await?;
                        sqlx::query("PRAGMA cache_size = -32768")
                            .execute(&mut *conn)
                            .await?;
                    }
                    Ok(())
                })
            })
            .max_connections(if memory { 1 } else { 8 })
            .min_connections(if memory { 1 } else { 0 })
            .idle_timeout(if memory {
                None
            } else {
                Some(Duration::from_secs(600))
            })
            .max_lifetime(if memory {
                None
            } else {
                Some(Duration::from_secs(1800))
            })
            .connect_with(opts)
            .await
            .ctx("open the database")?;
        let mut conn = pool.acquire().await.ctx("connect")?;
        if backend == Backend::Sqlite {
            // WAL is a property of the file, set once; on a database in WAL
            // mode already (another process serving it) this is a no-op.
            let mode: String = sqlx::query("PRAGMA journal_mode = WAL")
                .fetch_one(&mut *conn)
                .await
                .ctx("enable WAL")?
                .try_get(0)
                .ctx("enable WAL")?;
            if mode != "wal" && mode != "memory" {
                tracing::warn!("the database stays in journal mode {mode:?}, not WAL");
            }
        }
        MIGRATOR.run(&mut *conn).await?;
        drop(conn);
        Ok(Self { pool, backend })
    }

    /// The connection pool, for reads and single-statement writes.
    pub fn pool(&self) -> &AnyPool {
        &self.pool
    }

    /// Which backend this is.
    pub fn backend(&self) -> Backend {
        self.backend
    }

    /// Begins a transaction that writes. On SQLite it takes the write lock
    /// at once (`BEGIN IMMEDIATE`): a deferred transaction that reads and
    /// then writes fails with SQLITE_BUSY when another connection wrote in
    /// between, instead of waiting its turn.
    pub async fn begin_write(&self) -> Result<Tx, Error> {
        let begin = match self.backend {
            Backend::Sqlite => "BEGIN IMMEDIATE",
        };
        self.pool.begin_with(begin).await.ctx("begin a transaction")
    }

    /// Closes every connection.
    pub async fn close(&self) {
        self.pool.close().await;
    }
}

/// SQLite opens an existing file only unless told `mode=rwc`.
fn with_create_mode(url: &str) -> String {
    if !url.starts_with("sqlite:") || url.contains("mode=") || url.contains(":memory:") {
        return url.to_string();
    }
    let sep = if url.contains('?') { '&' } else { '?' };
    format!("{url}{sep}mode=rwc")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sqlite_urls_get_create_mode() {
        assert_eq!(
            with_create_mode("sqlite:///x/n.db"),
            "sqlite:///x/n.db?mode=rwc"
        );
        assert_eq!(
            with_create_mode("sqlite:///x/n.db?cache=shared"),
            "sqlite:///x/n.db?cache=shared&mode=rwc"
        );
        assert_eq!(
            with_create_mode("sqlite:///x/n.db?mode=ro"),
            "sqlite:///x/n.db?mode=ro"
        );
    }

    #[tokio::test]
    async fn opens_in_wal_mode_and_migrates_twice() {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}/n.db", dir.path().display());
        let db = Db::open(&url).await.unwrap();
        let mode: String = sqlx::query("PRAGMA journal_mode")
            .fetch_one(db.pool())
            .await
            .unwrap()
            .get(0);
        assert_eq!(mode, "wal");
        db.close().await;
        let db = Db::open(&url).await.unwrap();
        let feeds: i64 = sqlx::query("SELECT COUNT(*) FROM feeds")
            .fetch_one(db.pool())
            .await
            .unwrap()
            .get(0);
        assert_eq!(feeds, 2);
    }

    #[tokio::test]
    async fn in_memory_database_keeps_its_schema() {
        let db = Db::open("sqlite::memory:").await.unwrap();
        let feeds: i64 = sqlx::query("SELECT COUNT(*) FROM feeds")
            .fetch_one(db.pool())
            .await
            .unwrap()
            .get(0);
        assert_eq!(feeds, 2);
    }
}
