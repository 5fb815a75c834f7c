//! Hosts as the admin sees them: the lists of active and retired hosts,
//! and the actions on one registered host — move it to another feed,
//! replace its tags, retire it — with the lookup that turns what an
//! operator types into that host. Like every admin change, each is
//! audited in its own transaction (see `admin::audit`).
//!
//! A host is named by its id, or by its hostname when exactly one active
//! host has it. An id always wins: hostnames come from the hosts
//! themselves, and one that happens to look like another host's id must
//! not redirect an action. Hostnames are not unique (a reinstalled machine
//! registers again under the same name), so an ambiguous name is refused
//! with the candidates' ids rather than guessed.
//!
//! Retiring marks the row (`retired_at`, `retired_by`; migration 0002)
//! instead of deleting it. A decommissioned machine's reports
//! (`host_reports`, which reference the host) are the record of what it
//! applied and when, and the audit trail names it by id; deleting the row
//! would have to delete that history or leave it pointing at nothing. A
//! retired host's token is refused from the next request on
//! (`Context::authenticate_host`), and the host list, the compliance
//! reports, the metrics and the dashboard leave it out (`Context::hosts`);
//! its reports stay readable (`GET /admin/reports?host=ID`) and
//! [`Context::retired_hosts`] lists it. Retirement is final: a machine that
//! comes back registers again and becomes a new host.

use serde::{Serialize, Serializer};
use serde_json::json;
use sqlx::{AnyConnection, Row};

use crate::clock::rfc3339;
use crate::context::Context;
use crate::error::{conflict, not_found, DbContext, Error};
use crate::model::Host;
use crate::store;
use crate::validate;

fn time<S: Serializer>(t: &i64, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&rfc3339(*t))
}

/// The outcome of moving a host to another feed.
#[derive(Debug, Clone, Serialize)]
pub struct Moved {
    /// The host's id.
    pub id: String,
    /// Its name.
    pub hostname: String,
    /// The feed it was on.
    pub from: String,
    /// The feed it is on now.
    pub to: String,
    /// The level that feed serves for the host's kernel now: what its next
    /// check-in is told to apply (`None`: nothing).
    pub serving: Option<i64>,
}

/// The outcome of replacing a host's tags.
#[derive(Debug, Clone, Serialize)]
pub struct Tagged {
    /// The host's id.
    pub id: String,
    /// Its name.
    pub hostname: String,
    /// Its tags before.
    pub from: Vec<String>,
    /// Its tags now.
    pub to: Vec<String>,
}

/// The outcome of retiring a host.
#[derive(Debug, Clone, Serialize)]
pub struct Retired {
    /// The host's id.
    pub id: String,
    /// Its name.
    pub hostname: String,
    /// The feed it was on.
    pub feed: String,
    /// When it was retired.
    #[serde(serialize_with = "time")]
    pub retired_at: i64,
    /// Its reports, kept.
    pub reports: i64,
}

/// A retired host: its last state, and when and by whom it was retired.
#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
pub struct RetiredHost {
    /// The host as it last checked in.
    #[serde(flatten)]
    #[sqlx(flatten)]
    pub host: Host,
    /// When it was retired.
    #[serde(serialize_with = "time")]
    pub retired_at: i64,
    /// By whom.
    pub retired_by: String,
}

/// The columns [`resolve`] reads.
#[derive(Debug, sqlx::FromRow)]
struct Found {
    id: String,
    hostname: String,
    feed: String,
    build_id: String,
    kernel_release: String,
    level: i64,
    tags: String,
    registered_at: i64,
    last_checkin: Option<i64>,
    retired_at: Option<i64>,
    retired_by: Option<String>,
}

const FOUND: &str = "SELECT id, hostname, feed, build_id, kernel_release, level, tags, \
                     registered_at, last_checkin, retired_at, retired_by FROM hosts";

/// The active host `name` names: its id, or its hostname if exactly one
/// active host has it. A retired host is a conflict (it cannot change any
/// more), an unknown name is not found, an ambiguous hostname a conflict
/// that lists the candidates.
async fn resolve(conn: &mut AnyConnection, name: &str) -> Result<Found, Error> {
    validate::line("host", name, validate::MAX_HOSTNAME, true)?;
    let by_id = sqlx::query_as::<_, Found>(&format!("{FOUND} WHERE id = $1"))
        .bind(name)
        .fetch_optional(&mut *conn)
        .await
        .ctx("look up the host")?;
    if let Some(h) = by_id {
        if let Some(at) = h.retired_at {
            return Err(conflict(format!(
                "host {} ({}) was retired at {} by {}: a retired host does not change any more",
                h.id,
                h.hostname,
                rfc3339(at),
                h.retired_by.as_deref().unwrap_or("?")
            )));
        }
        return Ok(h);
    }
    let mut named = sqlx::query_as::<_, Found>(&format!(
        "{FOUND} WHERE hostname = $1 ORDER BY registered_at, id"
    ))
    .bind(name)
    .fetch_all(&mut *conn)
    .await
    .ctx("look up the host")?;
    let retired: Vec<String> = named
        .iter()
        .filter(|h| h.retired_at.is_some())
        .map(|h| h.id.clone())
        .collect();
    named.retain(|h| h.retired_at.is_none());
    match named.len() {
        1 => Ok(named.remove(0)),
        0 if retired.is_empty() => Err(not_found(format!(
            "no host with the id or hostname {name:?}"
        ))),
        0 => Err(not_found(format!(
            "no active host with the id or hostname {name:?} (retired: {})",
            retired.join(", ")
        ))),
        n => {
            let candidates: Vec<String> = named
                .iter()
                .map(|h| {
                    format!(
                        "{} (registered {}, last check-in {}, {})",
                        h.id,
                        rfc3339(h.registered_at),
                        h.last_checkin.map_or_else(|| "never".into(), rfc3339),
                        h.kernel_release
                    )
                })
                .collect();
            Err(conflict(format!(
                "hostname {name:?} is ambiguous: {n} active hosts have it; name one by its id: {}",
                candidates.join("; ")
            )))
        }
    }
}

impl Context {
    /// Moves a host to `feed`: from its next check-in on it is told the
    /// level that feed serves (its registration key's feed no longer
    /// matters to it).
    pub async fn move_host(&self, actor: &str, host: &str, feed: &str) -> Result<Moved, Error> {
        validate::name("feed", feed)?;
        let mut tx = self.begin_audited().await?;
        let now = tx.now();
        let h = resolve(&mut tx, host).await?;
        store::feed_delay(&mut tx, feed).await?;
        sqlx::query("UPDATE hosts SET feed = $1 WHERE id = $2")
            .bind(feed)
            .bind(&h.id)
            .execute(&mut *tx)
            .await
            .ctx("move the host")?;
        let serving = store::served_level(&mut tx, feed, &h.build_id, now).await?;
        tx.commit(
            actor,
            "host-move",
            &h.id,
            json!({"hostname": h.hostname, "from": h.feed, "to": feed, "serving": serving}),
            "commit the move",
        )
        .await?;
        Ok(Moved {
            id: h.id,
            hostname: h.hostname,
            from: h.feed,
            to: feed.to_string(),
            serving,
        })
    }

    /// Replaces a host's tags (none: clears them). Duplicates are dropped,
    /// the order kept. The agent sends tags only when it registers, so
    /// these stay until changed here again.
    pub async fn set_host_tags(
        &self,
        actor: &str,
        host: &str,
        tags: &[String],
    ) -> Result<Tagged, Error> {
        validate::tags("tags", tags)?;
        let mut to: Vec<String> = Vec::with_capacity(tags.len());
        for t in tags {
            if !to.contains(t) {
                to.push(t.clone());
            }
        }
        let mut tx = self.begin_audited().await?;
        let h = resolve(&mut tx, host).await?;
        // A column only a hand-edited database could break; show it as none.
        let from: Vec<String> = serde_json::from_str(&h.tags).unwrap_or_default();
        sqlx::query("UPDATE hosts SET tags = $1 WHERE id = $2")
            .bind(json!(to).to_string())
            .bind(&h.id)
            .execute(&mut *tx)
            .await
            .ctx("set the host's tags")?;
        tx.commit(
            actor,
            "host-tags",
            &h.id,
            json!({"hostname": h.hostname, "from": from, "to": to}),
            "commit the tags",
        )
        .await?;
        Ok(Tagged {
            id: h.id,
            hostname: h.hostname,
            from,
            to,
        })
    }

    /// Retires a decommissioned host: its token is refused from now on,
    /// and it leaves the host list and the compliance reports; its row and
    /// reports are kept (see the module documentation).
    pub async fn retire_host(&self, actor: &str, host: &str) -> Result<Retired, Error> {
        let mut tx = self.begin_audited().await?;
        let now = tx.now();
        let h = resolve(&mut tx, host).await?;
        sqlx::query(
            "UPDATE hosts SET retired_at = $1, retired_by = $2 WHERE id = $3 AND retired_at IS NULL",
        )
        .bind(now)
        .bind(actor)
        .bind(&h.id)
        .execute(&mut *tx)
        .await
        .ctx("retire the host")?;
        let reports: i64 = sqlx::query("SELECT COUNT(*) FROM host_reports WHERE host_id = $1")
            .bind(&h.id)
            .fetch_one(&mut *tx)
            .await
            .ctx("count the host's reports")?
            .try_get(0)
            .ctx("count the host's reports")?;
        tx.commit(
            actor,
            "host-retire",
            &h.id,
            json!({"hostname": h.hostname, "feed": h.feed, "kernel_release": h.kernel_release,
                   "build_id": h.build_id, "level": h.level,
                   "last_checkin": h.last_checkin.map(rfc3339), "reports": reports}),
            "commit the retirement",
        )
        .await?;
        Ok(Retired {
            id: h.id,
            hostname: h.hostname,
            feed: h.feed,
            retired_at: now,
            reports,
        })
    }

    /// Every host but the retired ones, by hostname.
    pub async fn hosts(&self) -> Result<Vec<Host>, Error> {
        sqlx::query_as::<_, Host>(
            "SELECT id, hostname, feed, kernel_release, kernel_version, build_id, level, effective_version, \
             skipped, agent_version, tags, registration_key, registered_at, last_checkin \
             FROM hosts WHERE retired_at IS NULL ORDER BY hostname, id",
        )
        .fetch_all(self.db.pool())
        .await
        .ctx("list hosts")
    }

    /// Every retired host, most recently retired first.
    pub async fn retired_hosts(&self) -> Result<Vec<RetiredHost>, Error> {
        sqlx::query_as::<_, RetiredHost>(
            "SELECT id, hostname, feed, kernel_release, kernel_version, build_id, level, effective_version, \
             skipped, agent_version, tags, registration_key, registered_at, last_checkin, \
             retired_at, retired_by \
             FROM hosts WHERE retired_at IS NOT NULL ORDER BY retired_at DESC, id",
        )
        .fetch_all(self.db.pool())
        .await
        .ctx("list retired hosts")
    }
}

#[cfg(test)]
mod tests {
    use crate::db::{Db, MIGRATOR};

    /// Migration 0002 is reversible: down drops the columns, up adds them
    /// again (the whole schema goes down and up too).
    #[tokio::test]
    async fn retirement_migration_goes_down_and_up() {
        let db = Db::open("sqlite::memory:").await.unwrap();
        let mut conn = db.pool().acquire().await.unwrap();
        let columns = "SELECT retired_at, retired_by FROM hosts";
        sqlx::query(columns).fetch_all(&mut *conn).await.unwrap();
        MIGRATOR.undo(&mut *conn, 1).await.unwrap();
        assert!(sqlx::query(columns).fetch_all(&mut *conn).await.is_err());
        sqlx::query("SELECT id, feed FROM hosts")
            .fetch_all(&mut *conn)
            .await
            .unwrap();
        MIGRATOR.undo(&mut *conn, 0).await.unwrap();
        assert!(sqlx::query("SELECT id FROM hosts")
            .fetch_all(&mut *conn)
            .await
            .is_err());
        MIGRATOR.run(&mut *conn).await.unwrap();
        sqlx::query(columns).fetch_all(&mut *conn).await.unwrap();
    }
}
