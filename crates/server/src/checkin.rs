//! Check-ins at fleet scale. Every check-in is authenticated and recorded
//! durably before it is answered, but not in a transaction of its own:
//! requests queue for one writer task, which authenticates and records
//! everything that queued up while the previous batch was being written
//! in one transaction (one `UPDATE ... FROM (VALUES ...) RETURNING` for
//! the batch, one commit; see [`Durability`]), then answers each request
//! with the level its host's feed serves. Those answers come from a cache keyed by (feed,
//! build-id): an entry is good while the audit trail's newest id, read in
//! the same batch, is unchanged — every admin action that can change a
//! target writes the audit trail in its own transaction, whichever process
//! made it — and for at most [`TARGET_TTL`] seconds, because delayed feeds
//! release levels by the clock alone.

use std::collections::HashMap;

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
        tokio::spawn(writer(ctx, rx, next_checkin_seconds, durability));
        Self { queue }
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

async fn writer(
    ctx: Context,
    mut rx: mpsc::Receiver<Pending>,
    next_checkin_seconds: Option<u64>,
    durability: Durability,
) {
    let mut batch = Vec::with_capacity(MAX_BATCH);
    let mut statements: Vec<Option<String>> = vec![None; MAX_BATCH.ilog2() as usize + 1];
    let mut targets: HashMap<(String, String), Target> = HashMap::new();
    let mut generation = None;
    let mut conn = None;
    while rx.recv_many(&mut batch, MAX_BATCH).await > 0 {
        let now = ctx.clock.now();
        let recorded = match writer_connection(&ctx, &mut conn, durability).await {
            Ok(c) => record(c, ctx.db.backend(), &mut statements, &batch, now).await,
            Err(e) => Err(e),
        };
        let hosts = match recorded {
            Ok((hosts, audit_head)) => {
                if generation != Some(audit_head) {
                    targets.clear();
                    generation = Some(audit_head);
                }
                hosts
            }
            Err(e) => {
                tracing::error!("recording {} check-ins failed: {e}", batch.len());
                // A fresh connection for the next batch, in case this
                // one is what failed.
                conn = None;
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

/// The writer's own connection, taken out of the pool so its durability
/// setting never reaches the admin actions that share the pool.
async fn writer_connection<'c>(
    ctx: &Context,
    conn: &'c mut Option<AnyConnection>,
    durability: Durability,
) -> Result<&'c mut AnyConnection, Error> {
    if conn.is_none() {
        let mut c = ctx
            .db
            .pool()
            .acquire()
            .await
            .ctx("connect the check-in writer")?
            .detach();
        if durability == Durability::Crash {
            let relax = match ctx.db.backend() {
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
    Ok(conn.as_mut().expect("set above"))
}

/// Writes the batch in one transaction; answers the feed of each token
/// that belongs to a host, and the audit trail's newest id.
async fn record(
    conn: &mut AnyConnection,
    backend: Backend,
    statements: &mut [Option<String>],
    batch: &[Pending],
    now: i64,
) -> Result<(HashMap<String, String>, i64), Error> {
    // The newest check-in of a host in the batch wins; the same host twice
    // in one UPDATE ... FROM would leave it to chance.
    let mut unique: HashMap<&str, &Pending> = HashMap::with_capacity(batch.len());
    for p in batch {
        unique.insert(&p.token_hash, p);
    }
    let rows: Vec<&Pending> = unique.into_values().collect();
    let size = rows.len().next_power_of_two();
    let sql = statements[size.ilog2() as usize].get_or_insert_with(|| update_sql(size, backend));
    let mut query = sqlx::query(sql.as_str()).bind(now);
    for i in 0..size {
        let p = rows[i.min(rows.len() - 1)];
        query = query
            .bind(p.token_hash.as_str())
            .bind(p.req.kernel.release.as_str())
            .bind(p.req.kernel.version.as_str())
            .bind(i64::from(p.req.level))
            .bind(p.req.effective_version.as_str())
            .bind(p.skipped.as_str())
            .bind(p.req.agent_version.as_str());
    }
    let mut tx = conn.begin().await.ctx("begin recording check-ins")?;
    let returned = query.fetch_all(&mut *tx).await.ctx("record check-ins")?;
    let mut hosts = HashMap::with_capacity(returned.len());
    let mut moved = Vec::new();
    for row in returned {
        let feed: String = row.try_get(0).ctx("read recorded check-ins")?;
        let token_hash: String = row.try_get(1).ctx("read recorded check-ins")?;
        let build_id: String = row.try_get(2).ctx("read recorded check-ins")?;
        if let Some(p) = rows.iter().find(|p| p.token_hash == token_hash) {
            if p.req.kernel.build_id != build_id {
                moved.push(*p);
            }
        }
        hosts.insert(token_hash, feed);
    }
    if !moved.is_empty() {
        // Hosts that booted another kernel: rare, and the only check-ins
        // that touch the build-id index.
        let sql = build_id_sql(moved.len(), backend);
        let mut query = sqlx::query(&sql);
        for p in &moved {
            query = query
                .bind(p.token_hash.as_str())
                .bind(p.req.kernel.build_id.as_str());
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
/// parameters per host; it answers each host's feed and stored build-id.
/// The build-id is not set here: it is indexed, and SQLite rewrites an
/// index entry for every row whose indexed column is SET, changed or not
/// (measured: about half the statement's cost). Portable but for the
/// placeholders: SQLite (3.35+) and PostgreSQL both name a VALUES list's
/// columns column1, column2, ... and both have UPDATE ... FROM and
/// RETURNING.
fn update_sql(n: usize, backend: Backend) -> String {
    let mut param = placeholders(backend);
    let mut sql = format!(
        "UPDATE hosts SET kernel_release = v.column2, kernel_version = v.column3, \
         level = v.column4, effective_version = v.column5, skipped = v.column6, \
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
         RETURNING feed, token_hash, build_id",
    );
    sql
}

/// The statement setting the build-id of `n` hosts (token hash, build-id).
fn build_id_sql(n: usize, backend: Backend) -> String {
    let mut param = placeholders(backend);
    let rows: Vec<String> = (0..n)
        .map(|_| format!("({}, {})", param(), param()))
        .collect();
    format!(
        "UPDATE hosts SET build_id = v.column2 FROM (VALUES {}) AS v \
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
        let sql = build_id_sql(3, Backend::Sqlite);
        assert_eq!(sql.matches('?').count(), 3 * 2);
        let sql = update_sql(2, Backend::Postgres);
        assert!(sql.contains("CAST($1 AS BIGINT)"), "{sql}");
        assert!(
            sql.contains("($9, $10, $11, CAST($12 AS BIGINT), $13, $14, $15)"),
            "{sql}"
        );
        assert!(!sql.contains('?') && !sql.contains("$16"), "{sql}");
    }
}
