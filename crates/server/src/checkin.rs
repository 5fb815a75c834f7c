//! Check-ins at fleet scale. Every check-in is authenticated and recorded
//! before it is answered, but not in a transaction of its own: requests
//! queue for one writer task, which authenticates and records everything
//! that queued up while the previous batch was being written in one
//! transaction (one `UPDATE ... FROM (VALUES ...) RETURNING` for the
//! batch, one commit; see [`Durability`]), then answers each request with
//! the level its host's feed serves. On a SQLite file the batch is written
//! by a thread with a direct connection, and WAL checkpoints run on a
//! thread of their own (`Store`); otherwise through sqlx.
//!
//! Answers come from a cache keyed by (feed, build-id): an entry is good
//! while the audit trail's newest id, read in the same batch, is
//! unchanged — every admin action that can change a target writes the
//! audit trail in its own transaction, whichever process made it — and
//! for at most [`TARGET_TTL`] seconds, because delayed feeds release
//! levels by the clock alone.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use protocol::{CheckinRequest, CheckinResponse, TargetLevel, API_PREFIX};
use sqlx::{AnyConnection, Connection, Row};
use tokio::sync::{mpsc, oneshot};

use crate::context::Context;
use crate::db::Backend;
use crate::error::{DbContext, Error};
use crate::{fleet, secrets, store, validate};

/// Most check-ins written by one statement. Batches are padded to a power
/// of two (repeating the last row, which changes nothing) so the database
/// sees at most nine statement shapes and keeps them prepared.
const MAX_BATCH: usize = 256;

/// Check-ins waiting for the writer before senders have to wait too.
const QUEUE: usize = 8192;

/// Longest a cached target is used, in seconds of the server's clock.
pub const TARGET_TTL: i64 = 1;

/// The check-in service: a handle on the writer task.
#[derive(Debug, Clone)]
pub struct Checkins {
    queue: mpsc::Sender<Pending>,
    batches: Arc<AtomicU64>,
}

#[derive(Debug)]
struct Pending {
    token_hash: String,
    req: CheckinRequest,
    skipped: String,
    reply: oneshot::Sender<Result<CheckinResponse, Error>>,
}

impl Checkins {
    /// Starts the writer task on the current tokio runtime; it ends when
    /// the last handle is dropped. `next_checkin_seconds` is what every
    /// answer suggests to agents.
    pub fn start(ctx: Context, next_checkin_seconds: Option<u64>, durability: Durability) -> Self {
        let (queue, rx) = mpsc::channel(QUEUE);
        let batches = Arc::new(AtomicU64::new(0));
        tokio::spawn(writer(
            ctx,
            rx,
            next_checkin_seconds,
            durability,
            batches.clone(),
        ));
        Self { queue, batches }
    }

    /// Batches recorded so far.
    pub fn batches(&self) -> u64 {
        self.batches.load(Ordering::Relaxed)
    }

    /// Records the check-in of the host whose token this is; answers the
    /// level its feed serves for the kernel it runs now. An unknown token
    /// is [`Error::Unauthorized`].
    pub async fn checkin(
        &self,
        token: &str,
        req: CheckinRequest,
    ) -> Result<CheckinResponse, Error> {
        let skipped = validate_request(&req)?;
        let (reply, answer) = oneshot::channel();
        let pending = Pending {
            token_hash: secrets::hash(token),
            req,
            skipped,
            reply,
        };
        let stopped = || Error::Task("the check-in writer stopped".into());
        self.queue.send(pending).await.map_err(|_| stopped())?;
        answer.await.map_err(|_| stopped())?
    }
}

/// Checks a request before it joins a batch, so one bad request cannot
/// fail the others; answers its skipped levels as stored (JSON).
fn validate_request(req: &CheckinRequest) -> Result<String, Error> {
    fleet::validate_kernel(&req.kernel)?;
    validate::line(
        "effective_version",
        &req.effective_version,
        validate::MAX_VERSION,
        false,
    )?;
    validate::line(
        "agent_version",
        &req.agent_version,
        validate::MAX_AGENT_VERSION,
        true,
    )?;
    fleet::levels_json("skipped", &req.skipped)
}

/// What a feed serves for a kernel build, as answered to hosts.
#[derive(Debug, Clone)]
struct Target {
    supported: bool,
    target: Option<TargetLevel>,
    /// Clock time until which it may be used.
    until: i64,
}

/// How check-ins reach the disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Durability {
    /// A batch is acknowledged once the database has it, before it is
    /// flushed to disk: it survives a crash of the server process, and
    /// on power loss the last moments' check-ins are lost — which the
    /// agents make good at their next check-in, since each one carries
    /// the host's whole state. (SQLite: `synchronous = NORMAL` in WAL
    /// mode on the writer's connection; PostgreSQL: `synchronous_commit
    /// = off` on it.) Admin actions and reports are flushed regardless.
    #[default]
    Crash,
    /// Every batch is flushed to disk before it is acknowledged: one
    /// fsync per batch, whose latency every check-in then waits for.
    PowerLoss,
}

/// What a batch's write answers: the feed of each token that belongs to
/// an active host, and the audit trail's newest id.
type Recorded = (HashMap<String, String>, i64);

/// Where batches are written.
enum Store {
    /// Through sqlx, on a connection of the writer's own, made on first
    /// use and again after a failure (PostgreSQL; an in-memory SQLite
    /// database, which no other connection can open).
    Sqlx(Option<AnyConnection>),
    /// A SQLite file, by a thread of its own with a direct connection:
    /// a batch crosses to it and back once, where sqlx's SQLite driver
    /// hands every statement and every returned row between threads
    /// (measured: a third of the server's time under check-in load).
    Sqlite(std::sync::mpsc::Sender<Job>),
}

/// A batch for the SQLite thread; it comes back with the reply.
struct Job {
    batch: Vec<Pending>,
    now: i64,
    reply: oneshot::Sender<(Vec<Pending>, Result<Recorded, Error>)>,
}

async fn writer(
    ctx: Context,
    mut rx: mpsc::Receiver<Pending>,
    next_checkin_seconds: Option<u64>,
    durability: Durability,
    batches: Arc<AtomicU64>,
) {
    let mut store = open_store(&ctx, durability).await;
    let mut batch = Vec::with_capacity(MAX_BATCH);
    let mut statements = Statements::default();
    let mut targets: HashMap<(String, String), Target> = HashMap::new();
    let mut generation = None;
    while rx.recv_many(&mut batch, MAX_BATCH).await > 0 {
        // Let every request that is ready to be read join this batch
        // first: a batch's fixed cost (commit, WAL header, the hand-over
        // to the SQLite thread) is then paid by many check-ins under load.
        // With nothing else ready, the yield returns at once.
        tokio::task::yield_now().await;
        while batch.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok(p) => batch.push(p),
                Err(_) => break,
            }
        }
        let now = ctx.clock.now();
        let recorded = match &mut store {
            Store::Sqlite(jobs) => {
                let (reply, answer) = oneshot::channel();
                let job = Job {
                    batch: std::mem::take(&mut batch),
                    now,
                    reply,
                };
                match jobs.send(job) {
                    Ok(()) => match answer.await {
                        Ok((back, recorded)) => {
                            batch = back;
                            recorded
                        }
                        // The thread is gone with the batch and its
                        // reply channels: its hosts see the writer stop.
                        Err(_) => continue,
                    },
                    Err(std::sync::mpsc::SendError(job)) => {
                        batch = job.batch;
                        Err(Error::Task("the SQLite check-in thread stopped".into()))
                    }
                }
            }
            Store::Sqlx(conn) => {
                record_sqlx(&ctx, conn, durability, &mut statements, &batch, now).await
            }
        };
        let hosts = match recorded {
            Ok((hosts, audit_head)) => {
                batches.fetch_add(1, Ordering::Relaxed);
                if generation != Some(audit_head) {
                    targets.clear();
                    generation = Some(audit_head);
                }
                hosts
            }
            Err(e) => {
                tracing::error!("recording {} check-ins failed: {e}", batch.len());
                for p in batch.drain(..) {
                    let _ = p.reply.send(Err(Error::Task(format!(
                        "recording the check-in failed: {e}"
                    ))));
                }
                continue;
            }
        };
        for p in batch.drain(..) {
            let answer = match hosts.get(&p.token_hash) {
                // Unknown or retired: the single lookup says which.
                None => match ctx.authenticate_token_hash(&p.token_hash).await {
                    Err(e) => Err(e),
                    Ok(_) => Err(Error::Unauthorized("unknown host token".into())),
                },
                Some(feed) => target(&ctx, &mut targets, feed, &p.req.kernel.build_id, now)
                    .await
                    .map(|t| CheckinResponse {
                        supported: t.supported,
                        target: t.target,
                        next_checkin_seconds,
                    }),
            };
            let _ = p.reply.send(answer);
        }
    }
}

/// The direct SQLite store when the database is a SQLite file, else sqlx.
async fn open_store(ctx: &Context, durability: Durability) -> Store {
    if ctx.db.backend() != Backend::Sqlite {
        return Store::Sqlx(None);
    }
    // SQLite itself says which file the pool opened ("" in memory).
    let file = sqlx::query("SELECT file FROM pragma_database_list WHERE name = 'main'")
        .fetch_one(ctx.db.pool())
        .await
        .and_then(|row| row.try_get::<String, _>(0));
    let path = match file {
        Ok(f) if !f.is_empty() => std::path::PathBuf::from(f),
        Ok(_) => return Store::Sqlx(None),
        Err(e) => {
            tracing::warn!(
                "cannot tell the SQLite database's file ({e}): check-ins go through sqlx"
            );
            return Store::Sqlx(None);
        }
    };
    let (jobs, rx) = std::sync::mpsc::channel();
    let spawned = std::thread::Builder::new()
        .name("checkin-sqlite".into())
        .spawn(move || sqlite_thread(&path, durability, rx));
    match spawned {
        Ok(_) => Store::Sqlite(jobs),
        Err(e) => {
            tracing::warn!(
                "cannot start the SQLite check-in thread ({e}): check-ins go through sqlx"
            );
            Store::Sqlx(None)
        }
    }
}

/// The SQL text of each batch size, made once.
#[derive(Default)]
struct Statements(Vec<Option<String>>);

impl Statements {
    fn update(&mut self, size: usize, backend: Backend) -> &str {
        let i = size.ilog2() as usize;
        if self.0.len() <= i {
            self.0.resize(i + 1, None);
        }
        self.0[i].get_or_insert_with(|| match backend {
            Backend::Sqlite => update_sql(size, backend),
            Backend::Postgres => postgres_sql(size),
        })
    }
}

/// The batch with each host once — its newest check-in: the same host
/// twice in one UPDATE ... FROM would leave it to chance which row wins.
fn unique(batch: &[Pending]) -> (Vec<&Pending>, HashMap<&str, &Pending>) {
    let mut by_token: HashMap<&str, &Pending> = HashMap::with_capacity(batch.len());
    for p in batch {
        by_token.insert(&p.token_hash, p);
    }
    (by_token.values().copied().collect(), by_token)
}

/// Runs batches for [`Store::Sqlite`] until the writer goes away. The
/// connection is opened on first use and again after a failure.
fn sqlite_thread(
    path: &std::path::Path,
    durability: Durability,
    jobs: std::sync::mpsc::Receiver<Job>,
) {
    // Checkpoints run beside the writer, not inside one of its commits:
    // a commit that crosses SQLite's checkpoint threshold copies the
    // whole WAL back into the database file first (measured: the p99 of
    // check-ins doubled). Ends when this thread drops `_alive`.
    let (_alive, stop) = std::sync::mpsc::channel::<()>();
    let ckpt_path = path.to_path_buf();
    let spawned = std::thread::Builder::new()
        .name("checkin-ckpt".into())
        .spawn(move || checkpointer(&ckpt_path, stop));
    if let Err(e) = spawned {
        tracing::warn!(
            "cannot start the WAL checkpoint thread ({e}): check-ins checkpoint themselves"
        );
    }
    let mut conn = None;
    let mut statements = Statements::default();
    for job in jobs {
        let recorded = match &mut conn {
            Some(c) => record_sqlite(c, &mut statements, &job.batch, job.now),
            None => open_sqlite(path, durability)
                .and_then(|c| record_sqlite(conn.insert(c), &mut statements, &job.batch, job.now)),
        };
        if recorded.is_err() {
            conn = None;
        }
        let _ = job.reply.send((job.batch, recorded));
    }
}

/// How often the checkpointer copies the WAL back into the database.
const CHECKPOINT_EVERY: std::time::Duration = std::time::Duration::from_millis(1000);

/// WAL pages after which the writer checkpoints by itself after all:
/// only if the checkpointer cannot keep up (or could not start).
const WRITER_CHECKPOINT_PAGES: u32 = 50_000;

/// Runs a passive checkpoint (it never blocks the writer) every
/// [`CHECKPOINT_EVERY`] until `stop`'s sender is dropped.
fn checkpointer(path: &std::path::Path, stop: std::sync::mpsc::Receiver<()>) {
    let mut conn = None;
    while let Err(std::sync::mpsc::RecvTimeoutError::Timeout) = stop.recv_timeout(CHECKPOINT_EVERY)
    {
        if conn.is_none() {
            match open_sqlite(path, Durability::PowerLoss) {
                Ok(c) => conn = Some(c),
                Err(e) => {
                    tracing::warn!("WAL checkpoint thread: {e}");
                    continue;
                }
            }
        }
        let c = conn.as_ref().expect("set above");
        if let Err(e) = c.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |_| Ok(())) {
            tracing::warn!("WAL checkpoint: {e}");
            conn = None;
        }
    }
}

fn open_sqlite(
    path: &std::path::Path,
    durability: Durability,
) -> Result<rusqlite::Connection, Error> {
    use rusqlite::OpenFlags;
    let conn = rusqlite::Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .ctx("open the database for check-ins")?;
    // As the pool's connections: wait for the write lock rather than
    // fail, map pages rather than read them.
    conn.busy_timeout(std::time::Duration::from_secs(5))
        .ctx("set the check-in connection's busy timeout")?;
    let sync = match durability {
        Durability::Crash => "NORMAL",
        Durability::PowerLoss => "FULL",
    };
    conn.execute_batch(&format!(
        "PRAGMA synchronous = {sync}; PRAGMA mmap_size = 268435456; PRAGMA cache_size = -32768; \
         PRAGMA wal_autocheckpoint = {WRITER_CHECKPOINT_PAGES};"
    ))
    .ctx("set up the check-in connection")?;
    conn.set_prepared_statement_cache_capacity(32);
    Ok(conn)
}

/// What the batch's UPDATE returns of a host besides its feed and token
/// hash: the kernel and level stored before this check-in.
struct Stored {
    build_id: String,
    release: String,
    version: String,
    level: i64,
}

/// One row the batch's UPDATE returned: the token's host is known, and
/// its kernel or level changed if what it reports is not what is stored.
fn recorded_row<'a>(
    by_token: &HashMap<&str, &'a Pending>,
    feed: String,
    token_hash: String,
    stored: &Stored,
    hosts: &mut HashMap<String, String>,
    moved: &mut Vec<&'a Pending>,
) {
    if let Some(p) = by_token.get(token_hash.as_str()) {
        let k = &p.req.kernel;
        if k.build_id != stored.build_id
            || k.release != stored.release
            || k.version != stored.version
            || i64::from(p.req.level) != stored.level
        {
            moved.push(*p);
        }
    }
    hosts.insert(token_hash, feed);
}

fn record_sqlite(
    conn: &mut rusqlite::Connection,
    statements: &mut Statements,
    batch: &[Pending],
    now: i64,
) -> Result<Recorded, Error> {
    let (rows, by_token) = unique(batch);
    let size = rows.len().next_power_of_two();
    let tx = conn.transaction().ctx("begin recording check-ins")?;
    let mut hosts = HashMap::with_capacity(rows.len());
    let mut moved = Vec::new();
    {
        let mut stmt = tx
            .prepare_cached(statements.update(size, Backend::Sqlite))
            .ctx("prepare recording check-ins")?;
        stmt.raw_bind_parameter(1, now).ctx("record check-ins")?;
        for i in 0..size {
            let p = rows[i.min(rows.len() - 1)];
            let k = 2 + i * 7;
            let r = &p.req;
            stmt.raw_bind_parameter(k, p.token_hash.as_str())
                .and_then(|()| stmt.raw_bind_parameter(k + 1, r.kernel.release.as_str()))
                .and_then(|()| stmt.raw_bind_parameter(k + 2, r.kernel.version.as_str()))
                .and_then(|()| stmt.raw_bind_parameter(k + 3, i64::from(r.level)))
                .and_then(|()| stmt.raw_bind_parameter(k + 4, r.effective_version.as_str()))
                .and_then(|()| stmt.raw_bind_parameter(k + 5, p.skipped.as_str()))
                .and_then(|()| stmt.raw_bind_parameter(k + 6, r.agent_version.as_str()))
                .ctx("record check-ins")?;
        }
        let mut returned = stmt.raw_query();
        while let Some(row) = returned.next().ctx("record check-ins")? {
            let stored = Stored {
                build_id: row.get(2).ctx("read recorded check-ins")?,
                release: row.get(3).ctx("read recorded check-ins")?,
                version: row.get(4).ctx("read recorded check-ins")?,
                level: row.get(5).ctx("read recorded check-ins")?,
            };
            recorded_row(
                &by_token,
                row.get(0).ctx("read recorded check-ins")?,
                row.get(1).ctx("read recorded check-ins")?,
                &stored,
                &mut hosts,
                &mut moved,
            );
        }
    }
    if !moved.is_empty() {
        let mut stmt = tx
            .prepare(&kernel_sql(moved.len(), Backend::Sqlite))
            .ctx("prepare recording changed kernels")?;
        for (i, p) in moved.iter().enumerate() {
            let k = &p.req.kernel;
            stmt.raw_bind_parameter(1 + 5 * i, p.token_hash.as_str())
                .and_then(|()| stmt.raw_bind_parameter(2 + 5 * i, k.build_id.as_str()))
                .and_then(|()| stmt.raw_bind_parameter(3 + 5 * i, k.release.as_str()))
                .and_then(|()| stmt.raw_bind_parameter(4 + 5 * i, k.version.as_str()))
                .and_then(|()| stmt.raw_bind_parameter(5 + 5 * i, i64::from(p.req.level)))
                .ctx("record changed kernels")?;
        }
        stmt.raw_execute().ctx("record changed kernels")?;
    }
    let audit_head: i64 = tx
        .prepare_cached("SELECT COALESCE(MAX(id), 0) FROM audit")
        .and_then(|mut s| s.query_row([], |r| r.get(0)))
        .ctx("read the audit trail's head")?;
    tx.commit().ctx("commit check-ins")?;
    Ok((hosts, audit_head))
}

/// [`record_sqlite`] through sqlx, on the writer's own connection, taken
/// out of the pool so its durability setting never reaches the admin
/// actions that share the pool. A failure drops the connection.
async fn record_sqlx(
    ctx: &Context,
    conn: &mut Option<AnyConnection>,
    durability: Durability,
    statements: &mut Statements,
    batch: &[Pending],
    now: i64,
) -> Result<Recorded, Error> {
    let backend = ctx.db.backend();
    if conn.is_none() {
        let mut c = ctx
            .db
            .pool()
            .acquire()
            .await
            .ctx("connect the check-in writer")?
            .detach();
        if durability == Durability::Crash {
            let relax = match backend {
                Backend::Sqlite => "PRAGMA synchronous = NORMAL",
                Backend::Postgres => "SET synchronous_commit = off",
            };
            sqlx::query(relax)
                .execute(&mut c)
                .await
                .ctx("set the check-in writer's durability")?;
        }
        *conn = Some(c);
    }
    let c = conn.as_mut().expect("set above");
    let recorded = match backend {
        Backend::Postgres => record_postgres(c, statements, batch, now).await,
        Backend::Sqlite => record_sqlx_on(c, backend, statements, batch, now).await,
    };
    if recorded.is_err() {
        *conn = None;
    }
    recorded
}

async fn record_sqlx_on(
    conn: &mut AnyConnection,
    backend: Backend,
    statements: &mut Statements,
    batch: &[Pending],
    now: i64,
) -> Result<Recorded, Error> {
    let (rows, by_token) = unique(batch);
    let size = rows.len().next_power_of_two();
    let sql = statements.update(size, backend);
    let query = bind_rows(sqlx::query(sql).bind(now), &rows, size, false);
    let mut tx = conn.begin().await.ctx("begin recording check-ins")?;
    let returned = query.fetch_all(&mut *tx).await.ctx("record check-ins")?;
    let mut hosts = HashMap::with_capacity(returned.len());
    let mut moved = Vec::new();
    for row in returned {
        let stored = Stored {
            build_id: row.try_get(2).ctx("read recorded check-ins")?,
            release: row.try_get(3).ctx("read recorded check-ins")?,
            version: row.try_get(4).ctx("read recorded check-ins")?,
            level: row.try_get(5).ctx("read recorded check-ins")?,
        };
        recorded_row(
            &by_token,
            row.try_get(0).ctx("read recorded check-ins")?,
            row.try_get(1).ctx("read recorded check-ins")?,
            &stored,
            &mut hosts,
            &mut moved,
        );
    }
    if !moved.is_empty() {
        // Hosts that booted another kernel or applied another level:
        // rare, and the only check-ins that touch the kernel indexes.
        let sql = kernel_sql(moved.len(), backend);
        let mut query = sqlx::query(&sql);
        for p in &moved {
            query = query
                .bind(p.token_hash.as_str())
                .bind(p.req.kernel.build_id.as_str())
                .bind(p.req.kernel.release.as_str())
                .bind(p.req.kernel.version.as_str())
                .bind(i64::from(p.req.level));
        }
        query
            .execute(&mut *tx)
            .await
            .ctx("record changed kernels")?;
    }
    let audit_head: i64 = sqlx::query("SELECT COALESCE(MAX(id), 0) FROM audit")
        .fetch_one(&mut *tx)
        .await
        .ctx("read the audit trail's head")?
        .try_get(0)
        .ctx("read the audit trail's head")?;
    tx.commit().await.ctx("commit check-ins")?;
    Ok((hosts, audit_head))
}

/// Binds each host's check-in to a batch statement, `size` rows (the
/// last repeated to pad the batch): token hash, build-id when the
/// statement sets it ([`postgres_sql`]; [`update_sql`] does not), release,
/// version, level, effective version, skipped levels, agent version.
fn bind_rows<'q>(
    mut query: sqlx::query::Query<'q, sqlx::Any, sqlx::any::AnyArguments<'q>>,
    rows: &[&'q Pending],
    size: usize,
    with_build_id: bool,
) -> sqlx::query::Query<'q, sqlx::Any, sqlx::any::AnyArguments<'q>> {
    for i in 0..size {
        let p = rows[i.min(rows.len() - 1)];
        query = query.bind(p.token_hash.as_str());
        if with_build_id {
            query = query.bind(p.req.kernel.build_id.as_str());
        }
        query = query
            .bind(p.req.kernel.release.as_str())
            .bind(p.req.kernel.version.as_str())
            .bind(i64::from(p.req.level))
            .bind(p.req.effective_version.as_str())
            .bind(p.skipped.as_str())
            .bind(p.req.agent_version.as_str());
    }
    query
}

/// Records a batch on PostgreSQL in one statement, committed on its own
/// ([`postgres_sql`]): one round trip instead of four (begin, update,
/// audit head, commit), the writer's whole wait per batch.
async fn record_postgres(
    conn: &mut AnyConnection,
    statements: &mut Statements,
    batch: &[Pending],
    now: i64,
) -> Result<Recorded, Error> {
    let (rows, _) = unique(batch);
    let size = rows.len().next_power_of_two();
    let sql = statements.update(size, Backend::Postgres);
    let query = bind_rows(sqlx::query(sql).bind(now), &rows, size, true);
    let returned = query.fetch_all(&mut *conn).await.ctx("record check-ins")?;
    let mut hosts = HashMap::with_capacity(returned.len());
    let mut audit_head = 0;
    for row in returned {
        audit_head = row.try_get(0).ctx("read recorded check-ins")?;
        let feed: Option<String> = row.try_get(1).ctx("read recorded check-ins")?;
        let token_hash: Option<String> = row.try_get(2).ctx("read recorded check-ins")?;
        if let (Some(feed), Some(token_hash)) = (feed, token_hash) {
            hosts.insert(token_hash, feed);
        }
    }
    Ok((hosts, audit_head))
}

/// PostgreSQL's statement recording `n` check-ins: the time, then eight
/// parameters per host (token hash, build-id, release, version, level,
/// effective version, skipped levels, agent version). Unlike SQLite's
/// ([`update_sql`]) it sets the kernel and level too, changed or not:
/// PostgreSQL compares the values of indexed columns, and an update that
/// changes none stays a heap-only tuple (no index entries written). It
/// answers the audit trail's head (read with the update's snapshot, as
/// the transaction did) beside each updated host's feed and token hash,
/// and once with no host when no token matched.
fn postgres_sql(n: usize) -> String {
    let mut param = placeholders(Backend::Postgres);
    let mut sql = format!(
        "WITH u AS (UPDATE hosts SET build_id = v.column2, kernel_release = v.column3, \
         kernel_version = v.column4, level = v.column5, effective_version = v.column6, \
         skipped = v.column7, agent_version = v.column8, last_checkin = CAST({} AS BIGINT) \
         FROM (VALUES ",
        param()
    );
    for i in 0..n {
        if i > 0 {
            sql.push_str(", ");
        }
        let p: Vec<String> = (0..8).map(|_| param()).collect();
        sql.push_str(&format!(
            "({}, {}, {}, {}, CAST({} AS BIGINT), {}, {}, {})",
            p[0], p[1], p[2], p[3], p[4], p[5], p[6], p[7]
        ));
    }
    sql.push_str(
        ") AS v WHERE hosts.token_hash = v.column1 AND hosts.retired_at IS NULL \
         RETURNING hosts.feed, hosts.token_hash) \
         SELECT a.head, u.feed, u.token_hash \
         FROM (SELECT COALESCE(MAX(id), 0) AS head FROM audit) AS a LEFT JOIN u ON true",
    );
    sql
}

/// Placeholders for `backend`: SQLite gets positional `?`, since it
/// treats `$N` as a named parameter, and binding each named one searches
/// the statement's list of names — quadratic in a batch's 1,793
/// parameters (measured: 7% of the server's time at 256 rows).
fn placeholders(backend: Backend) -> impl FnMut() -> String {
    let mut next = 0;
    move || {
        next += 1;
        if backend == Backend::Sqlite {
            "?".to_string()
        } else {
            format!("${next}")
        }
    }
}

/// The statement recording `n` check-ins: the time, then seven
/// parameters per host; it answers each host's feed and stored kernel
/// (build-id, release, version) and level. Those four are not set here:
/// they are indexed (the build-id alone, and all four together for the
/// fleet's grouped counts, migration 0004), and SQLite rewrites an index
/// entry for every row whose indexed column is SET, changed or not
/// (measured for the build-id: about half the statement's cost); they
/// rarely change, and [`kernel_sql`] sets them for the hosts whose did.
/// For SQLite (3.35+: UPDATE ... FROM, RETURNING, a VALUES list's columns
/// named column1, column2, ...); PostgreSQL has [`postgres_sql`].
fn update_sql(n: usize, backend: Backend) -> String {
    let mut param = placeholders(backend);
    let mut sql = format!(
        "UPDATE hosts SET effective_version = v.column5, skipped = v.column6, \
         agent_version = v.column7, last_checkin = CAST({} AS BIGINT) FROM (VALUES ",
        param()
    );
    for i in 0..n {
        if i > 0 {
            sql.push_str(", ");
        }
        let p: Vec<String> = (0..7).map(|_| param()).collect();
        sql.push_str(&format!(
            "({}, {}, {}, CAST({} AS BIGINT), {}, {}, {})",
            p[0], p[1], p[2], p[3], p[4], p[5], p[6]
        ));
    }
    sql.push_str(
        ") AS v WHERE hosts.token_hash = v.column1 AND hosts.retired_at IS NULL \
         RETURNING feed, token_hash, build_id, kernel_release, kernel_version, level",
    );
    sql
}

/// The statement setting the kernel and level of `n` hosts (token hash,
/// build-id, release, version, level).
fn kernel_sql(n: usize, backend: Backend) -> String {
    let mut param = placeholders(backend);
    let rows: Vec<String> = (0..n)
        .map(|_| {
            format!(
                "({}, {}, {}, {}, CAST({} AS BIGINT))",
                param(),
                param(),
                param(),
                param(),
                param()
            )
        })
        .collect();
    format!(
        "UPDATE hosts SET build_id = v.column2, kernel_release = v.column3, \
         kernel_version = v.column4, level = v.column5 FROM (VALUES {}) AS v \
         WHERE hosts.token_hash = v.column1",
        rows.join(", ")
    )
}

/// The target for (feed, build-id), from the cache or the database.
async fn target(
    ctx: &Context,
    cache: &mut HashMap<(String, String), Target>,
    feed: &str,
    build_id: &str,
    now: i64,
) -> Result<Target, Error> {
    let key = (feed.to_string(), build_id.to_string());
    if let Some(t) = cache.get(&key) {
        if now < t.until {
            return Ok(t.clone());
        }
    }
    let t = resolve(ctx, feed, build_id, now).await?;
    cache.insert(key, t.clone());
    Ok(t)
}

async fn resolve(ctx: &Context, feed: &str, build_id: &str, now: i64) -> Result<Target, Error> {
    let mut conn = ctx.db.pool().acquire().await.ctx("connect")?;
    let supported = sqlx::query("SELECT level FROM levels WHERE build_id = $1 LIMIT 1")
        .bind(build_id)
        .fetch_optional(&mut *conn)
        .await
        .ctx("look up the kernel")?
        .is_some();
    let mut target = None;
    if supported {
        if let Some(level) = store::served_level(&mut conn, feed, build_id, now).await? {
            let row = sqlx::query(
                "SELECT name, sha256, size FROM levels WHERE build_id = $1 AND level = $2",
            )
            .bind(build_id)
            .bind(level)
            .fetch_one(&mut *conn)
            .await
            .ctx("read the target level")?;
            let sha256: String = row.try_get(1).ctx("read the target level")?;
            target = Some(TargetLevel {
                level: u32::try_from(level).unwrap_or(u32::MAX),
                name: row.try_get(0).ctx("read the target level")?,
                bundle_url: format!("{API_PREFIX}/bundles/{sha256}"),
                size: u64::try_from(row.try_get::<i64, _>(2).ctx("read the target level")?)
                    .unwrap_or(0),
                sha256,
            });
        }
    }
    Ok(Target {
        supported,
        target,
        until: now.saturating_add(TARGET_TTL),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statement_numbers_parameters_in_order() {
        let sql = update_sql(2, Backend::Sqlite);
        assert_eq!(sql.matches('?').count(), 1 + 2 * 7);
        assert!(!sql.contains('$'));
        let sql = kernel_sql(3, Backend::Sqlite);
        assert_eq!(sql.matches('?').count(), 3 * 5);
        let sql = postgres_sql(2);
        assert!(sql.contains("CAST($1 AS BIGINT)"), "{sql}");
        assert!(
            sql.contains("($10, $11, $12, $13, CAST($14 AS BIGINT), $15, $16, $17)"),
            "{sql}"
        );
        assert!(!sql.contains('?') && !sql.contains("$18"), "{sql}");
    }
}
