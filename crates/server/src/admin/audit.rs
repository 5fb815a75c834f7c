//! The audit trail: the transaction every admin change runs in, and the
//! trail's read. An [`AuditedTx`] is a write transaction that can only be
//! committed together with the audit entry naming the change, so there is
//! no change without a record and no record without a change; dropping it
//! unfinished (any `?` in the change) rolls both back.

use std::ops::{Deref, DerefMut};

use sqlx::AnyConnection;

use crate::context::Context;
use crate::db::Tx;
use crate::error::{DbContext, Error};
use crate::model::AuditEntry;
use crate::page::{Bind, Page, PageRequest, Sql};
use serde_json::json;

/// A write transaction whose commit writes its audit entry first: begun by
/// [`Context::begin_audited`], ended by [`AuditedTx::commit`]. It derefs to
/// the connection, for the change's own queries.
#[derive(Debug)]
pub(crate) struct AuditedTx {
    tx: Tx,
    now: i64,
}

impl Context {
    /// Begins an admin change: reads the clock once, so the change and
    /// its audit entry share one time, and takes the write lock (see
    /// [`crate::db::Db::begin_write`]).
    pub(crate) async fn begin_audited(&self) -> Result<AuditedTx, Error> {
        let now = self.clock.now();
        let tx = self.db.begin_write().await?;
        Ok(AuditedTx { tx, now })
    }

    /// The newest `limit` audit entries, newest first.
    pub async fn audit_log(&self, limit: i64) -> Result<Vec<AuditEntry>, Error> {
        sqlx::query_as::<_, AuditEntry>(
            "SELECT id, at, actor, action, target, detail FROM audit ORDER BY id DESC LIMIT $1",
        )
        .bind(limit.clamp(1, 100_000))
        .fetch_all(self.db.pool())
        .await
        .ctx("read the audit trail")
    }

    /// One page of the audit trail, newest first, of the entries with the
    /// given action, actor and target (each exact; none: any).
    pub async fn audit_page(
        &self,
        filter: &AuditFilter,
        page: &PageRequest,
    ) -> Result<Page<AuditEntry>, Error> {
        let mut sql =
            Sql::new("SELECT id, at, actor, action, target, detail FROM audit WHERE 1 = 1");
        for (column, value) in [
            ("action", &filter.action),
            ("actor", &filter.actor),
            ("target", &filter.target),
        ] {
            if let Some(v) = value {
                sql.push(&format!(" AND {column} = "))
                    .bind(Bind::Text(v.clone()));
            }
        }
        // Newest first: the next page has smaller ids.
        let back = page.backwards();
        if let Some(c) = &page.cursor {
            sql.push(if back { " AND id > " } else { " AND id < " })
                .bind(Bind::Int(c.int(0)?));
        }
        sql.push(if back {
            " ORDER BY id LIMIT "
        } else {
            " ORDER BY id DESC LIMIT "
        })
        .bind(Bind::Int(page.fetch()));
        let rows = sql
            .query_as::<AuditEntry>()
            .fetch_all(self.db.pool())
            .await
            .ctx("read the audit trail")?;
        Ok(Page::from_rows(AUDIT_LIST, page, rows, |a| {
            vec![json!(a.id)]
        }))
    }
}

/// The cursor name of the audit trail.
pub const AUDIT_LIST: &str = "audit";

/// Which audit entries a page shows; every field set must match exactly.
#[derive(Debug, Clone, Default)]
pub struct AuditFilter {
    /// The action (`publish`, `host-move`, ...).
    pub action: Option<String>,
    /// Who did it.
    pub actor: Option<String>,
    /// What it was done to.
    pub target: Option<String>,
}

impl AuditedTx {
    /// The time of the change (Unix seconds), as its audit entry records it.
    pub fn now(&self) -> i64 {
        self.now
    }

    /// Writes the audit entry — `actor` did `action` on `target`, with
    /// `detail` — and commits it with the change; `what` names the commit
    /// in its error ("commit the pin").
    pub async fn commit(
        mut self,
        actor: &str,
        action: &str,
        target: &str,
        detail: serde_json::Value,
        what: &'static str,
    ) -> Result<(), Error> {
        append(&mut self.tx, self.now, actor, action, target, detail).await?;
        self.tx.commit().await.ctx(what)
    }
}

impl Deref for AuditedTx {
    type Target = AnyConnection;

    fn deref(&self) -> &AnyConnection {
        &self.tx
    }
}

impl DerefMut for AuditedTx {
    fn deref_mut(&mut self) -> &mut AnyConnection {
        &mut self.tx
    }
}

/// Appends an audit entry. Ids are max + 1 within the write transaction:
/// portable SQL (no SERIAL or AUTOINCREMENT) and gap-free.
async fn append(
    conn: &mut AnyConnection,
    at: i64,
    actor: &str,
    action: &str,
    target: &str,
    detail: serde_json::Value,
) -> Result<(), Error> {
    sqlx::query(
        "INSERT INTO audit (id, at, actor, action, target, detail) \
         SELECT COALESCE(MAX(id), 0) + 1, $1, $2, $3, $4, $5 FROM audit",
    )
    .bind(at)
    .bind(actor)
    .bind(action)
    .bind(target)
    .bind(detail.to_string())
    .execute(conn)
    .await
    .ctx("write the audit trail")?;
    Ok(())
}
