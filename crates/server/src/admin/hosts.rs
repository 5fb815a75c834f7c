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
use crate::db::Backend;
use crate::error::{conflict, invalid, not_found, DbContext, Error};
use crate::model::Host;
use crate::page::{prefix_end, Bind, Page, PageRequest, Sql};
use crate::report::Policy;
use crate::store;
use crate::validate;

fn time<S: Serializer>(t: &i64, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&rfc3339(*t))
}

/// The outcome of moving a host to another feed.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
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
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
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
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct Retired {
    /// The host's id.
    pub id: String,
    /// Its name.
    pub hostname: String,
    /// The feed it was on.
    pub feed: String,
    /// When it was retired.
    #[serde(serialize_with = "time")]
    #[schema(value_type = String, format = DateTime)]
    pub retired_at: i64,
    /// Its reports, kept.
    pub reports: i64,
}

/// A retired host: its last state, and when and by whom it was retired.
#[derive(Debug, Clone, Serialize, sqlx::FromRow, utoipa::ToSchema)]
pub struct RetiredHost {
    /// The host as it last checked in.
    #[serde(flatten)]
    #[sqlx(flatten)]
    pub host: Host,
    /// When it was retired.
    #[serde(serialize_with = "time")]
    #[schema(value_type = String, format = DateTime)]
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

    /// The active host `host` names (an id, or a hostname exactly one
    /// active host has), as it last checked in.
    pub async fn active_host(&self, host: &str) -> Result<Host, Error> {
        let mut conn = self
            .db
            .pool()
            .acquire()
            .await
            .ctx("connect to the database")?;
        let id = resolve(&mut conn, host).await?.id;
        sqlx::query_as::<_, Host>(&format!("SELECT {HOST_COLUMNS} FROM hosts WHERE id = $1"))
            .bind(&id)
            .fetch_one(&mut *conn)
            .await
            .ctx("read the host")
    }

    /// Every host but the retired ones, by hostname (the CLI's list and
    /// the in-memory report; the API pages with [`Context::host_page`]).
    pub async fn hosts(&self) -> Result<Vec<Host>, Error> {
        sqlx::query_as::<_, Host>(&format!(
            "SELECT {HOST_COLUMNS} FROM hosts WHERE retired_at IS NULL ORDER BY hostname, id"
        ))
        .fetch_all(self.db.pool())
        .await
        .ctx("list hosts")
    }

    /// One page of the active hosts that pass `filter`, by hostname then
    /// id (the index `hosts_active_name` and its per-feed and per-build
    /// siblings, migration 0004).
    pub async fn host_page(
        &self,
        filter: &HostFilter,
        page: &PageRequest,
        policy: Policy,
    ) -> Result<Page<Host>, Error> {
        let mut sql = Sql::new(&format!(
            "SELECT {HOST_COLUMNS} FROM hosts WHERE retired_at IS NULL"
        ));
        filter.push_sql(&mut sql, self.db.backend(), self.clock.now(), policy);
        let desc = page.backwards();
        if let Some(c) = &page.cursor {
            sql.push(if desc {
                " AND (hostname, id) < ("
            } else {
                " AND (hostname, id) > ("
            })
            .bind(Bind::Text(c.text(0)?.to_string()))
            .push(", ")
            .bind(Bind::Text(c.text(1)?.to_string()))
            .push(")");
        }
        sql.push(if desc {
            " ORDER BY hostname DESC, id DESC LIMIT "
        } else {
            " ORDER BY hostname, id LIMIT "
        })
        .bind(Bind::Int(page.fetch()));
        let rows = sql
            .query_as::<Host>()
            .fetch_all(self.db.pool())
            .await
            .ctx("list hosts")?;
        Ok(Page::from_rows(HOSTS_LIST, page, rows, |h| {
            vec![json!(h.hostname), json!(h.id)]
        }))
    }

    /// Every retired host, most recently retired first.
    pub async fn retired_hosts(&self) -> Result<Vec<RetiredHost>, Error> {
        sqlx::query_as::<_, RetiredHost>(&format!(
            "SELECT {HOST_COLUMNS}, retired_at, retired_by \
             FROM hosts WHERE retired_at IS NOT NULL ORDER BY retired_at DESC, id"
        ))
        .fetch_all(self.db.pool())
        .await
        .ctx("list retired hosts")
    }

    /// One page of the retired hosts, most recently retired first (then
    /// by id, descending; index `hosts_retired`, migration 0004).
    pub async fn retired_host_page(&self, page: &PageRequest) -> Result<Page<RetiredHost>, Error> {
        let mut sql = Sql::new(&format!(
            "SELECT {HOST_COLUMNS}, retired_at, retired_by FROM hosts WHERE retired_at IS NOT NULL"
        ));
        // The list runs newest first: "after" is older.
        let back = page.backwards();
        if let Some(c) = &page.cursor {
            let (at, id) = (c.int(0)?, c.text(1)?.to_string());
            sql.push(if back {
                " AND (retired_at, id) > ("
            } else {
                " AND (retired_at, id) < ("
            })
            .bind(Bind::Int(at))
            .push(", ")
            .bind(Bind::Text(id))
            .push(")");
        }
        // Both keys descending, so one index serves either direction.
        sql.push(if back {
            " ORDER BY retired_at, id LIMIT "
        } else {
            " ORDER BY retired_at DESC, id DESC LIMIT "
        })
        .bind(Bind::Int(page.fetch()));
        let rows = sql
            .query_as::<RetiredHost>()
            .fetch_all(self.db.pool())
            .await
            .ctx("list retired hosts")?;
        Ok(Page::from_rows(RETIRED_LIST, page, rows, |h| {
            vec![json!(h.retired_at), json!(h.host.id)]
        }))
    }
}

/// The cursor name of the active hosts' list.
pub const HOSTS_LIST: &str = "hosts";
/// The cursor name of the retired hosts' list.
pub const RETIRED_LIST: &str = "retired-hosts";

/// The columns of [`Host`].
const HOST_COLUMNS: &str = "id, hostname, feed, kernel_release, kernel_version, build_id, level, \
     effective_version, skipped, agent_version, tags, registration_key, registered_at, last_checkin";

/// A host's compliance status, as a filter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    /// Every published fix for its kernel applied.
    Protected,
    /// Missing a published fix.
    Exposed,
    /// No level published for its kernel.
    Unsupported,
}

impl std::str::FromStr for Status {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self, Error> {
        match s {
            "protected" => Ok(Self::Protected),
            "exposed" => Ok(Self::Exposed),
            "unsupported" => Ok(Self::Unsupported),
            other => Err(invalid(format!(
                "status: {other:.40?} is not one of protected, exposed, unsupported"
            ))),
        }
    }
}

/// Which active hosts a list shows; every field set must hold.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HostFilter {
    /// Following this feed.
    pub feed: Option<String>,
    /// Running a kernel whose build-id starts with this, or whose release
    /// (`uname -r`) is exactly this.
    pub kernel: Option<String>,
    /// At this applied level.
    pub level: Option<i64>,
    /// With this tag.
    pub tag: Option<String>,
    /// Whose hostname starts with this.
    pub hostname: Option<String>,
    /// In this compliance state.
    pub status: Option<Status>,
    /// Only stale hosts (`true`) or only fresh ones (`false`).
    pub stale: Option<bool>,
}

impl HostFilter {
    /// Checks the values' form; a wrong one is refused naming its field.
    pub fn validate(&self) -> Result<(), Error> {
        for (name, v) in [
            ("feed", &self.feed),
            ("kernel", &self.kernel),
            ("tag", &self.tag),
            ("hostname", &self.hostname),
        ] {
            if let Some(v) = v {
                validate::line(name, v, validate::MAX_HOSTNAME, true)?;
            }
        }
        Ok(())
    }

    /// Appends the filter's conditions (`AND ...`) to a query of `hosts`.
    fn push_sql(&self, sql: &mut Sql, backend: Backend, now: i64, policy: Policy) {
        if let Some(f) = &self.feed {
            sql.push(" AND feed = ").bind(Bind::Text(f.clone()));
        }
        if let Some(k) = &self.kernel {
            sql.push(" AND (kernel_release = ")
                .bind(Bind::Text(k.clone()));
            // A build-id prefix as a range, which the build-id index serves
            // on both backends (LIKE would not on PostgreSQL's C collation
            // without a pattern index, and ignores case on SQLite).
            sql.push(" OR (build_id >= ").bind(Bind::Text(k.clone()));
            if let Some(end) = prefix_end(k) {
                sql.push(" AND build_id < ").bind(Bind::Text(end));
            }
            sql.push("))");
        }
        if let Some(l) = self.level {
            sql.push(" AND level = ").bind(Bind::Int(l));
        }
        if let Some(t) = &self.tag {
            // Tags are a JSON array of strings: a tag is present when its
            // JSON string, quotes included, is (an escaped quote inside a
            // longer tag is preceded by a backslash and cannot close one).
            let needle = serde_json::Value::from(t.as_str()).to_string();
            sql.push(match backend {
                Backend::Sqlite => " AND instr(tags, ",
                Backend::Postgres => " AND strpos(tags, ",
            })
            .bind(Bind::Text(needle))
            .push(") > 0");
        }
        if let Some(p) = &self.hostname {
            sql.push(" AND hostname >= ").bind(Bind::Text(p.clone()));
            if let Some(end) = prefix_end(p) {
                sql.push(" AND hostname < ").bind(Bind::Text(end));
            }
        }
        if let Some(status) = self.status {
            // A host is exposed when its level is below the fix of some CVE
            // of its build, that is below the highest of its build's
            // lowest-fixing levels; the levels are few, the subquery is
            // per row of the page's scan.
            const THRESHOLD: &str = "(SELECT MAX(f.fix) FROM (SELECT cve, MIN(c.level) AS fix \
                 FROM level_cves c WHERE c.build_id = hosts.build_id GROUP BY cve) f)";
            match status {
                Status::Unsupported => {
                    sql.push(" AND NOT EXISTS (SELECT 1 FROM kernels k WHERE k.build_id = hosts.build_id)");
                }
                Status::Exposed => {
                    sql.push(&format!(" AND level < {THRESHOLD}"));
                }
                Status::Protected => {
                    sql.push(&format!(
                        " AND EXISTS (SELECT 1 FROM kernels k WHERE k.build_id = hosts.build_id) \
                         AND level >= COALESCE({THRESHOLD}, 0)"
                    ));
                }
            }
        }
        if let Some(stale) = self.stale {
            let since = now.saturating_sub(policy.stale_hours * 3600);
            if stale {
                sql.push(" AND (last_checkin IS NULL OR last_checkin < ")
                    .bind(Bind::Int(since))
                    .push(")");
            } else {
                sql.push(" AND last_checkin >= ").bind(Bind::Int(since));
            }
        }
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
