//! The database connection: one code path for every backend through
//! sqlx's `Any` driver, selected by URL (`sqlite://` or `postgres://`).
//! Opening a database connects, runs the same versioned migrations on
//! either backend and, on SQLite, creates the file and switches it to WAL
//! (readers never block the writer, and a commit is durable once
//! acknowledged), so `serve` works with no setup.
//!
//! The SQL is written once for both backends: BIGINT and TEXT columns,
//! `$n` placeholders, and `CAST(... AS BIGINT)` where the two would type
//! a result differently (PostgreSQL's `SUM` is `numeric`, which the `Any`
//! driver cannot decode). [`Db::backend`] is for what cannot be portable;
//! each use says why. Write transactions are serialised on both backends
//! ([`Db::begin_write`]), so code inside one may read, decide and write
//! (max + 1 ids, "is this level newer") as if it were alone.

use std::borrow::Cow;
use std::str::FromStr;
use std::time::Duration;

use sqlx::any::{AnyConnectOptions, AnyPoolOptions};
use sqlx::{AnyPool, ConnectOptions, Connection, Row};

use crate::error::{invalid, DbContext, Error};

/// The migrations, embedded in the binary.
pub static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations");

/// The key of the PostgreSQL advisory lock every write transaction takes:
/// "noreboot" in ASCII. Any constant would do, as long as it is the same
/// in every process that serves the database.
pub const WRITE_LOCK_KEY: i64 = 0x6e6f_7265_626f_6f74;

/// How long opening a PostgreSQL database waits for the server to answer.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// Which database is behind the URL.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// One file (`sqlite://PATH`, `sqlite::memory:`).
    Sqlite,
    /// A PostgreSQL server (`postgres://` or `postgresql://`).
    Postgres,
}

impl Backend {
    /// The backend a database URL names.
    pub fn of_url(url: &str) -> Result<Self, Error> {
        if url.starts_with("sqlite:") {
            Ok(Backend::Sqlite)
        } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            Ok(Backend::Postgres)
        } else {
            Err(invalid(format!(
                "database URL {}: unsupported; use sqlite://PATH or postgres://USER@HOST/DATABASE",
                redact(url)
            )))
        }
    }
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
    /// Connects to `url` (`sqlite:///path/noreboot.db`,
    /// `postgres://user@host/db`), creating the SQLite file as needed and
    /// migrating the database. A PostgreSQL database must exist.
    pub async fn open(url: &str) -> Result<Self, Error> {
        sqlx::any::install_default_drivers();
        let backend = Backend::of_url(url)?;
        let url = with_create_mode(url);
        let shown = redact(&url);
        let opts = AnyConnectOptions::from_str(&url)
            .map_err(|e| invalid(format!("database URL {shown}: {e}")))?
            .disable_statement_logging();

        if backend == Backend::Postgres {
            // The pool retries a refused connection until its acquire
            // timeout and then says only that it timed out; one connection
            // of our own says why (refused, no such database, password).
            let conn = tokio::time::timeout(CONNECT_TIMEOUT, opts.connect())
                .await
                .unwrap_or_else(|_| {
                    Err(sqlx::Error::Io(std::io::Error::new(
                        std::io::ErrorKind::TimedOut,
                        format!("no answer within {} s", CONNECT_TIMEOUT.as_secs()),
                    )))
                })
                .map_err(|cause| Error::Connect {
                    url: shown.clone(),
                    cause,
                })?;
            conn.close().await.ctx("close the first connection")?;
        }

        // An in-memory database lives as long as its one connection.
        let memory = backend == Backend::Sqlite && url.contains(":memory:");
        let pool = match backend {
            Backend::Sqlite if memory => AnyPoolOptions::new()
                .max_connections(1)
                .min_connections(1)
                .idle_timeout(None)
                .max_lifetime(None),
            // One writer at a time; readers run beside it.
            Backend::Sqlite => AnyPoolOptions::new().max_connections(8),
            // Each connection is a server process; several servers and
            // admin CLIs share PostgreSQL's 100 connections by default.
            Backend::Postgres => AnyPoolOptions::new().max_connections(10),
        };
        let pool = pool.after_connect(move |conn, _| {
            Box::pin(async move {
                if backend == Backend::Sqlite {
                    // Pages are read through a memory map instead of a
                    // pread each (measured: 4.5% of the server's time
                    // under check-in load), and each connection keeps up
                    // to 32 MiB of them instead of SQLite's 2 MiB.
                    sqlx::query("PRAGMA mmap_size = 268435456")
                        .execute(&mut *conn)
                        .await?;
                    sqlx::query("PRAGMA cache_size = -32768")
                        .execute(&mut *conn)
                        .await?;
                }
                Ok(())
            })
        });
        let pool = if memory {
            pool
        } else {
            pool.idle_timeout(Some(Duration::from_secs(600)))
                .max_lifetime(Some(Duration::from_secs(1800)))
        }
        .connect_with(opts)
        .await
        .map_err(|cause| Error::Connect {
            url: shown.clone(),
            cause,
        })?;
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
        // sqlx serialises concurrent migrators itself (a lock on SQLite's
        // file, an advisory lock on PostgreSQL).
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

    /// Begins a transaction that writes, after every other write
    /// transaction on the database (from any process) has ended: the
    /// caller may read and then write on what it read.
    ///
    /// On SQLite, `BEGIN IMMEDIATE` takes the write lock at once (a
    /// deferred transaction that reads and then writes fails with
    /// SQLITE_BUSY when another connection wrote in between, instead of
    /// waiting its turn). PostgreSQL has no database write lock: the
    /// transaction takes a transaction-scoped advisory lock
    /// ([`WRITE_LOCK_KEY`]), released at commit or rollback. It runs at
    /// READ COMMITTED whatever the server's default, because each
    /// statement must see what the previous lock holder committed; at
    /// REPEATABLE READ the snapshot would be taken by the statement that
    /// waits for the lock, before that commit.
    pub async fn begin_write(&self) -> Result<Tx, Error> {
        let begin: Cow<'static, str> = match self.backend {
            Backend::Sqlite => "BEGIN IMMEDIATE".into(),
            Backend::Postgres => format!(
                "BEGIN ISOLATION LEVEL READ COMMITTED; SELECT pg_advisory_xact_lock({WRITE_LOCK_KEY})"
            )
            .into(),
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

/// `url` as messages and logs may show it: without a password, in the
/// user part or as a `password=` parameter.
pub fn redact(url: &str) -> String {
    let mut out = url.to_string();
    if let Some(start) = url.find("://").map(|i| i + 3) {
        let rest = &url[start..];
        let authority = &rest[..rest.find(['/', '?', '#']).unwrap_or(rest.len())];
        if let Some(at) = authority.rfind('@') {
            if let Some(colon) = authority[..at].find(':') {
                out.replace_range(start + colon + 1..start + at, "***");
            }
        }
    }
    if let Some(q) = out.find('?') {
        let (head, query) = out.split_at(q + 1);
        let query: Vec<String> = query
            .split('&')
            .map(|p| match p.split_once('=') {
                Some((k, _)) if k.eq_ignore_ascii_case("password") => format!("{k}=***"),
                _ => p.to_string(),
            })
            .collect();
        out = format!("{head}{}", query.join("&"));
    }
    out
}

/// The tests' own PostgreSQL server, shared with the integration tests.
#[cfg(test)]
pub(crate) use test_support::pg;

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::error::Error;

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

    #[test]
    fn urls_name_their_backend() {
        assert_eq!(Backend::of_url("sqlite::memory:").unwrap(), Backend::Sqlite);
        assert_eq!(
            Backend::of_url("postgres://u@h/db").unwrap(),
            Backend::Postgres
        );
        assert_eq!(
            Backend::of_url("postgresql://u@h/db").unwrap(),
            Backend::Postgres
        );
        let e = Backend::of_url("mysql://u:pw@h/db").unwrap_err();
        assert!(matches!(e, Error::Invalid(_)), "{e:?}");
        let e = e.to_string();
        assert!(e.contains("unsupported") && !e.contains("pw"), "{e}");
    }

    #[test]
    fn passwords_stay_out_of_messages() {
        assert_eq!(
            redact("postgres://noreboot:s3cr:et@db:5432/nr?sslmode=prefer"),
            "postgres://noreboot:***@db:5432/nr?sslmode=prefer"
        );
        assert_eq!(
            redact("postgres://db/nr?user=nr&password=s3cret&host=/run"),
            "postgres://db/nr?user=nr&password=***&host=/run"
        );
        assert_eq!(redact("postgres://nr@db/nr"), "postgres://nr@db/nr");
        assert_eq!(
            redact("sqlite:///x/n.db?mode=rwc"),
            "sqlite:///x/n.db?mode=rwc"
        );
    }

    #[tokio::test]
    async fn an_unreachable_postgres_server_is_a_connect_error() {
        // Port 1 on loopback: refused at once (the pool alone would retry
        // for its whole acquire timeout and report only a timeout).
        let started = std::time::Instant::now();
        let e = Db::open("postgres://nr:s3cret@127.0.0.1:1/nr")
            .await
            .unwrap_err();
        assert!(
            started.elapsed() < CONNECT_TIMEOUT,
            "took {:?}",
            started.elapsed()
        );
        assert!(matches!(e, Error::Connect { .. }), "{e:?}");
        let e = e.to_string();
        assert!(
            e.contains("postgres://nr:***@127.0.0.1:1/nr") && !e.contains("s3cret"),
            "{e}"
        );
    }

    #[tokio::test]
    async fn postgres_opens_and_migrates_twice() {
        let url = pg::empty_database();
        let db = Db::open(&url).await.unwrap();
        assert_eq!(db.backend(), Backend::Postgres);
        db.close().await;
        let db = Db::open(&url).await.unwrap();
        let count = |sql: &'static str| {
            let db = db.clone();
            async move {
                sqlx::query(sql)
                    .fetch_one(db.pool())
                    .await
                    .unwrap()
                    .get::<i64, _>(0)
            }
        };
        assert_eq!(count("SELECT COUNT(*) FROM feeds").await, 2);
        assert_eq!(
            count("SELECT COUNT(*) FROM _sqlx_migrations").await,
            MIGRATOR
                .iter()
                .filter(|m| m.migration_type.is_up_migration())
                .count() as i64
        );
    }

    /// `writers` tasks each read max(id) + 1 from the audit table, wait,
    /// and insert that id, each in a transaction of its own from `begin`.
    /// `barrier`: all read before any writes (without serialisation they
    /// must collide); otherwise each sleeps between its read and its write.
    async fn max_plus_one_inserts<F, Fut>(
        db: &Db,
        writers: usize,
        barrier: bool,
        begin: F,
    ) -> Vec<Result<i64, sqlx::Error>>
    where
        F: Fn(Db) -> Fut + Clone + Send + 'static,
        Fut: std::future::Future<Output = Tx> + Send,
    {
        let barrier = barrier.then(|| Arc::new(tokio::sync::Barrier::new(writers)));
        let mut tasks = tokio::task::JoinSet::new();
        for _ in 0..writers {
            let (db, begin, barrier) = (db.clone(), begin.clone(), barrier.clone());
            tasks.spawn(async move {
                let mut tx = begin(db).await;
                let id: i64 = sqlx::query("SELECT COALESCE(MAX(id), 0) + 1 FROM audit")
                    .fetch_one(&mut *tx)
                    .await?
                    .try_get(0)?;
                match &barrier {
                    Some(b) => {
                        b.wait().await;
                    }
                    None => tokio::time::sleep(Duration::from_millis(20)).await,
                }
                sqlx::query(
                    "INSERT INTO audit (id, at, actor, action, target, detail) \
                     VALUES ($1, 0, 'test', 'test', '', '{}')",
                )
                .bind(id)
                .execute(&mut *tx)
                .await?;
                tx.commit().await?;
                Ok(id)
            });
        }
        tasks.join_all().await
    }

    async fn write_transactions_take_turns(db: Db) {
        let started = std::time::Instant::now();
        let results = max_plus_one_inserts(&db, 8, false, |db: Db| async move {
            db.begin_write().await.unwrap()
        })
        .await;
        let mut ids: Vec<i64> = results.into_iter().map(Result::unwrap).collect();
        ids.sort();
        assert_eq!(ids, (1..=8).collect::<Vec<_>>());
        // One after the other: each held the lock across its sleep.
        assert!(started.elapsed() >= Duration::from_millis(8 * 20));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn write_transactions_take_turns_on_postgres() {
        write_transactions_take_turns(Db::open(&pg::database()).await.unwrap()).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn write_transactions_take_turns_on_sqlite() {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}/n.db", dir.path().display());
        write_transactions_take_turns(Db::open(&url).await.unwrap()).await;
    }

    /// The control for the test above: it does see collisions when
    /// transactions are not serialised.
    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn plain_postgres_transactions_collide_on_max_plus_one() {
        let db = Db::open(&pg::database()).await.unwrap();
        let results = max_plus_one_inserts(&db, 4, true, |db: Db| async move {
            db.pool().begin().await.unwrap()
        })
        .await;
        let committed: Vec<i64> = results
            .iter()
            .filter_map(|r| r.as_ref().ok().copied())
            .collect();
        assert_eq!(committed, [1], "{results:?}");
    }
}
