//! The fleet's grouped counts — active hosts by kernel build and level,
//! and how many are stale — from which the compliance summary, the
//! per-CVE view, the builds hosts run and the `/metrics` gauges are made.
//!
//! Counting reads every active host (an index walk and a table scan: a
//! good third of a second for a million hosts). A fleet whose last count
//! took no longer than the budget (`serve --count-budget`, 50 ms by
//! default) is counted afresh for every request, so figures follow every
//! change at once; a larger one is answered from its last count while
//! that is at most [`MAX_AGE`] seconds old, then from the last count while
//! one new count runs in the background, and waits for a count only when
//! the last is older than [`HARD_MAX_AGE`]. Counts carry when they were
//! taken, and the pages and reports say it.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use sqlx::Row;

use crate::context::Context;
use crate::db::Backend;
use crate::error::{DbContext, Error};

/// How old, in seconds, counts of a large fleet may be before a request
/// starts a new count in the background.
pub const MAX_AGE: i64 = 15;
/// How old, in seconds, counts of a large fleet may be before a request
/// waits for a new count instead of taking them.
pub const HARD_MAX_AGE: i64 = 60;
/// The default budget: fleets counted faster are counted on every request.
pub const DEFAULT_BUDGET: Duration = Duration::from_millis(50);

/// Active hosts running one kernel (build-id, release, version) at one
/// applied level.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Group {
    /// The kernel's GNU build-id.
    pub build_id: String,
    /// `uname -r` as the hosts report it.
    pub release: String,
    /// `uname -v` as the hosts report it.
    pub version: String,
    /// The applied level.
    pub level: i64,
    /// How many active hosts.
    pub hosts: i64,
}

/// One count of the fleet.
#[derive(Debug, Clone)]
pub struct Counts {
    /// When it was taken (the server clock's seconds).
    pub at: i64,
    /// How long it took.
    pub took: Duration,
    /// When it started (monotonic), to tell whether it began after a
    /// request that waits for it.
    started: Instant,
    /// Active hosts by kernel and level, in (build-id, release, version,
    /// level) order.
    pub groups: Vec<Group>,
    /// The age of the last check-in, in hours, beyond which a host was
    /// counted stale.
    pub stale_hours: i64,
    /// Active hosts that had not checked in for `stale_hours` (or never
    /// had).
    pub stale: i64,
}

/// The last count of the fleet and the rule for when to count again.
#[derive(Debug)]
pub struct FleetCounts {
    /// Fleets whose count took longer are answered from the last count.
    /// `None`: always count afresh (the admin CLI, which runs once).
    budget: Option<Duration>,
    /// The stale threshold the kept count uses (the server's policy);
    /// other thresholds are counted on request.
    stale_hours: i64,
    last: Mutex<Option<Arc<Counts>>>,
    /// Held while counting: counts run one at a time.
    counting: tokio::sync::Mutex<()>,
    /// Set while a background count is asked for or running: one at a
    /// time, however many requests find the last count old.
    refreshing: AtomicBool,
    /// Counts taken (for the tests that they are shared).
    pub taken: AtomicU64,
    /// The time of the count this process last wrote to the daily
    /// compliance record (`crate::history`), which decides whether the
    /// next count is written: not per count, at most hourly.
    pub(crate) recorded_at: AtomicI64,
}

impl FleetCounts {
    /// Counts afresh on every request.
    pub fn always_fresh() -> Self {
        Self::new(None, crate::report::DEFAULT_STALE_HOURS)
    }

    /// Counts with this budget, keeping counts for this stale threshold.
    pub fn new(budget: Option<Duration>, stale_hours: i64) -> Self {
        Self {
            budget,
            stale_hours,
            last: Mutex::new(None),
            counting: tokio::sync::Mutex::new(()),
            refreshing: AtomicBool::new(false),
            taken: AtomicU64::new(0),
            recorded_at: AtomicI64::new(i64::MIN),
        }
    }

    /// The stale threshold of the counts kept.
    pub fn stale_hours(&self) -> i64 {
        self.stale_hours
    }

    fn last(&self) -> Option<Arc<Counts>> {
        self.last.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    fn keep(&self, c: &Arc<Counts>) {
        let mut last = self.last.lock().unwrap_or_else(|p| p.into_inner());
        // A count that finished late must not replace a newer one.
        if last.as_ref().is_none_or(|l| l.started <= c.started) {
            *last = Some(c.clone());
        }
    }
}

impl Context {
    /// The fleet's counts with hosts stale after `stale_hours`: fresh, or
    /// the last count while it may stand in (see the module's rule).
    pub async fn fleet_counts(&self, stale_hours: i64) -> Result<Arc<Counts>, Error> {
        let fc = &self.counts;
        if fc.budget.is_none() || stale_hours != fc.stale_hours {
            return self.count_fleet(stale_hours).await.map(Arc::new);
        }
        let now = self.clock.now();
        if let Some(last) = fc.last().filter(|l| l.at <= now) {
            let large = fc.budget.is_some_and(|b| last.took > b);
            let age = now - last.at;
            if large && age <= MAX_AGE {
                return Ok(last);
            }
            if large && age <= HARD_MAX_AGE {
                self.recount_in_background();
                return Ok(last);
            }
        }
        self.recount(Instant::now()).await
    }

    /// Counts now, unless a count that started after `asked` finishes
    /// while this one waits its turn: that one is as fresh as the caller
    /// needs.
    async fn recount(&self, asked: Instant) -> Result<Arc<Counts>, Error> {
        let fc = &self.counts;
        let _turn = fc.counting.lock().await;
        if let Some(last) = fc.last().filter(|l| l.started >= asked) {
            return Ok(last);
        }
        let c = Arc::new(self.count_fleet(fc.stale_hours).await?);
        fc.keep(&c);
        Ok(c)
    }

    /// Starts a count in the background unless one is running.
    fn recount_in_background(&self) {
        if self
            .counts
            .refreshing
            .compare_exchange(false, true, Ordering::AcqRel, Ordering::Acquire)
            .is_err()
        {
            return;
        }
        let ctx = self.clone();
        let asked = Instant::now();
        tokio::spawn(async move {
            let counted = ctx.recount(asked).await;
            ctx.counts.refreshing.store(false, Ordering::Release);
            if let Err(e) = counted {
                tracing::warn!("counting the fleet in the background: {e}");
            }
        });
    }

    /// Counts the fleet now. The groups come from the index
    /// `hosts_active_kernel` (migration 0004), read in its order; the stale
    /// hosts, which no index can count without every check-in paying for
    /// it, from one pass over the table, at the same time.
    async fn count_fleet(&self, stale_hours: i64) -> Result<Counts, Error> {
        let started = Instant::now();
        let now = self.clock.now();
        self.counts.taken.fetch_add(1, Ordering::Relaxed);
        let groups = async {
            sqlx::query(
                "SELECT build_id, kernel_release, kernel_version, level, COUNT(*) FROM hosts \
                 WHERE retired_at IS NULL \
                 GROUP BY build_id, kernel_release, kernel_version, level",
            )
            .fetch_all(self.db.pool())
            .await
            .ctx("count hosts by kernel and level")
        };
        // SQLite would walk an index of active hosts and look each row up
        // for its last check-in: three times slower than reading the table.
        let scan = match self.db.backend() {
            Backend::Sqlite => "hosts NOT INDEXED",
            Backend::Postgres => "hosts",
        };
        let stale_sql = format!(
            "SELECT COUNT(*) FROM {scan} WHERE retired_at IS NULL \
             AND (last_checkin IS NULL OR last_checkin < $1)"
        );
        let stale = async {
            sqlx::query(&stale_sql)
                .bind(now.saturating_sub(stale_hours.saturating_mul(3600)))
                .fetch_one(self.db.pool())
                .await
                .and_then(|r| r.try_get::<i64, _>(0))
                .ctx("count stale hosts")
        };
        let (rows, stale) = tokio::try_join!(groups, stale)?;
        let mut sorted = BTreeMap::new();
        for r in rows {
            let key: (String, String, String, i64) = (
                r.try_get(0).ctx("count hosts by kernel and level")?,
                r.try_get(1).ctx("count hosts by kernel and level")?,
                r.try_get(2).ctx("count hosts by kernel and level")?,
                r.try_get(3).ctx("count hosts by kernel and level")?,
            );
            let n: i64 = r.try_get(4).ctx("count hosts by kernel and level")?;
            *sorted.entry(key).or_insert(0) += n;
        }
        let groups = sorted
            .into_iter()
            .map(|((build_id, release, version, level), hosts)| Group {
                build_id,
                release,
                version,
                level,
                hosts,
            })
            .collect();
        Ok(Counts {
            at: now,
            took: started.elapsed(),
            started,
            groups,
            stale_hours,
            stale,
        })
    }
}
