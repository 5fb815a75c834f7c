//! The fleet's compliance figures day by day, for the printable report's
//! charts: one row per UTC day, written from the compliance summaries the
//! server counts anyway (`Context::compliance_summary`, which the
//! dashboard, the API, `/metrics`, the report itself and `serve`'s hourly
//! tick ask for). A day's row is its first count, rewritten by later ones
//! at most once an hour ([`REWRITE_AFTER`]): a day's figures are those of
//! its last hour with a count, and a day costs at most 24 writes.
//!
//! The record reuses the summary's grouped count, so it adds no read of
//! the hosts; a process remembers when it last wrote, so the counts in
//! between cost nothing. A day on which the server counted nothing has no
//! row, and nothing here invents one: readers get the days that exist and
//! show the others as missing. Exposure is kept in seconds per host
//! group, not as breaches, so that a report can judge past days against
//! whatever policy it is asked for.

use std::collections::BTreeMap;
use std::sync::atomic::Ordering;

use sqlx::Row;

use crate::context::Context;
use crate::counts::Counts;
use crate::error::{DbContext, Error};
use crate::report::{CveCompliance, Summary};

/// Seconds in a day.
pub const DAY: i64 = 86_400;
/// How old, in seconds, a day's row must be before a newer count of the
/// same day rewrites it.
pub const REWRITE_AFTER: i64 = 3600;

/// The UTC day (Unix seconds / 86400) of `t`.
pub fn day_of(t: i64) -> i64 {
    t.div_euclid(DAY)
}

/// One day's figures.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Day {
    /// Unix seconds / 86400.
    pub day: i64,
    /// When the count behind it was taken.
    pub recorded_at: i64,
    /// The threshold `hosts_stale` was counted with.
    pub stale_hours: i64,
    /// Active hosts.
    pub hosts_total: i64,
    /// Hosts with every published fix for their kernel applied.
    pub hosts_protected: i64,
    /// Hosts missing a published fix.
    pub hosts_exposed: i64,
    /// Hosts on kernels without published levels.
    pub hosts_unsupported: i64,
    /// Hosts without a recent check-in.
    pub hosts_stale: i64,
    /// The exposed hosts by their longest exposure: (seconds, hosts),
    /// by seconds.
    pub exposure: Vec<(i64, i64)>,
    /// Per CVE: (hosts with its fix, hosts without), by CVE.
    pub cves: BTreeMap<String, (i64, i64)>,
}

impl Day {
    /// The day of a count, from the summary made of it.
    pub fn of(
        counts: &Counts,
        summary: &Summary,
        cves: &[CveCompliance],
        exposure: BTreeMap<i64, i64>,
    ) -> Self {
        let n = |v: usize| i64::try_from(v).unwrap_or(i64::MAX);
        Self {
            day: day_of(counts.at),
            recorded_at: counts.at,
            stale_hours: counts.stale_hours,
            hosts_total: n(summary.hosts_total),
            hosts_protected: n(summary.hosts_protected),
            hosts_exposed: n(summary.hosts_exposed),
            hosts_unsupported: n(summary.hosts_unsupported),
            hosts_stale: n(summary.hosts_stale),
            exposure: exposure.into_iter().collect(),
            cves: cves
                .iter()
                .map(|c| (c.cve.clone(), (n(c.hosts_fixed), n(c.hosts_exposed))))
                .collect(),
        }
    }

    /// Exposed hosts past a policy of `policy_days` that day (the rule of
    /// `crate::report`: longer than the policy, to the second).
    pub fn breaching(&self, policy_days: i64) -> i64 {
        let limit = policy_days.saturating_mul(DAY);
        self.exposure
            .iter()
            .filter(|(secs, _)| *secs > limit)
            .map(|(_, n)| n)
            .sum()
    }
}

impl Context {
    /// Records `day`: a new row, or a newer count of a day whose row is at
    /// least [`REWRITE_AFTER`] old (this process's or another's: the
    /// newest count wins).
    pub(crate) async fn record_day(&self, day: &Day) -> Result<(), Error> {
        let last = &self.counts.recorded_at;
        let before = last.load(Ordering::Acquire);
        if day.recorded_at <= before
            || (day_of(before) == day.day && day.recorded_at.saturating_sub(before) < REWRITE_AFTER)
        {
            return Ok(());
        }
        let exposure = serde_json::to_string(&day.exposure)
            .map_err(|e| Error::Render(format!("the day's exposure: {e}")))?;
        let mut tx = self.db.begin_write().await?;
        let written = sqlx::query(
            "INSERT INTO compliance_days (day, recorded_at, stale_hours, hosts_total, \
             hosts_protected, hosts_exposed, hosts_unsupported, hosts_stale, exposure) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) ON CONFLICT (day) DO UPDATE SET \
             recorded_at = excluded.recorded_at, stale_hours = excluded.stale_hours, \
             hosts_total = excluded.hosts_total, hosts_protected = excluded.hosts_protected, \
             hosts_exposed = excluded.hosts_exposed, hosts_unsupported = excluded.hosts_unsupported, \
             hosts_stale = excluded.hosts_stale, exposure = excluded.exposure \
             WHERE compliance_days.recorded_at <= excluded.recorded_at - $10",
        )
        .bind(day.day)
        .bind(day.recorded_at)
        .bind(day.stale_hours)
        .bind(day.hosts_total)
        .bind(day.hosts_protected)
        .bind(day.hosts_exposed)
        .bind(day.hosts_unsupported)
        .bind(day.hosts_stale)
        .bind(exposure)
        .bind(REWRITE_AFTER)
        .execute(&mut *tx)
        .await
        .ctx("record the day's compliance figures")?
        .rows_affected();
        if written == 1 {
            sqlx::query("DELETE FROM compliance_day_cves WHERE day = $1")
                .bind(day.day)
                .execute(&mut *tx)
                .await
                .ctx("replace the day's figures per CVE")?;
            for (cve, (fixed, exposed)) in &day.cves {
                sqlx::query(
                    "INSERT INTO compliance_day_cves (day, cve, hosts_fixed, hosts_exposed) \
                     VALUES ($1, $2, $3, $4)",
                )
                .bind(day.day)
                .bind(cve)
                .bind(fixed)
                .bind(exposed)
                .execute(&mut *tx)
                .await
                .ctx("record the day's figures per CVE")?;
            }
        }
        tx.commit()
            .await
            .ctx("commit the day's compliance figures")?;
        last.fetch_max(day.recorded_at, Ordering::AcqRel);
        Ok(())
    }

    /// The recorded days from `first` to `last` (days, inclusive), by day.
    /// Days without a record are not in it.
    pub async fn history(&self, first: i64, last: i64) -> Result<Vec<Day>, Error> {
        let rows = sqlx::query(
            "SELECT day, recorded_at, stale_hours, hosts_total, hosts_protected, hosts_exposed, \
             hosts_unsupported, hosts_stale, exposure FROM compliance_days \
             WHERE day >= $1 AND day <= $2 ORDER BY day",
        )
        .bind(first)
        .bind(last)
        .fetch_all(self.db.pool())
        .await
        .ctx("read the compliance history")?;
        let mut days = Vec::with_capacity(rows.len());
        for r in rows {
            let get = |i: usize| r.try_get::<i64, _>(i).ctx("read the compliance history");
            let exposure: String = r.try_get(8).ctx("read the compliance history")?;
            let day = get(0)?;
            days.push(Day {
                day,
                recorded_at: get(1)?,
                stale_hours: get(2)?,
                hosts_total: get(3)?,
                hosts_protected: get(4)?,
                hosts_exposed: get(5)?,
                hosts_unsupported: get(6)?,
                hosts_stale: get(7)?,
                // Written by `record_day` only; a row it cannot read is
                // shown without its distribution rather than failing the
                // whole report.
                exposure: serde_json::from_str(&exposure).unwrap_or_default(),
                cves: BTreeMap::new(),
            });
        }
        let rows = sqlx::query(
            "SELECT day, cve, hosts_fixed, hosts_exposed FROM compliance_day_cves \
             WHERE day >= $1 AND day <= $2 ORDER BY day, cve",
        )
        .bind(first)
        .bind(last)
        .fetch_all(self.db.pool())
        .await
        .ctx("read the compliance history per CVE")?;
        for r in rows {
            let day: i64 = r.try_get(0).ctx("read the compliance history per CVE")?;
            let cve: String = r.try_get(1).ctx("read the compliance history per CVE")?;
            let fixed: i64 = r.try_get(2).ctx("read the compliance history per CVE")?;
            let exposed: i64 = r.try_get(3).ctx("read the compliance history per CVE")?;
            if let Ok(i) = days.binary_search_by_key(&day, |d| d.day) {
                days[i].cves.insert(cve, (fixed, exposed));
            }
        }
        Ok(days)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn days_are_utc_and_breaches_follow_the_policy_to_the_second() {
        assert_eq!(day_of(0), 0);
        assert_eq!(day_of(DAY - 1), 0);
        assert_eq!(day_of(-1), -1);
        let d = Day {
            day: 1,
            recorded_at: DAY,
            stale_hours: 24,
            hosts_total: 6,
            hosts_protected: 1,
            hosts_exposed: 5,
            hosts_unsupported: 0,
            hosts_stale: 0,
            exposure: vec![(3 * DAY, 2), (3 * DAY + 1, 1), (40 * DAY, 2)],
            cves: BTreeMap::new(),
        };
        assert_eq!(d.breaching(3), 3);
        assert_eq!(d.breaching(30), 2);
        assert_eq!(d.breaching(40), 0);
    }
}
