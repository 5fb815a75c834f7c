//! The printable compliance report: one document for a period that an
//! auditor can sign — the policy, the figures at the period's end, the
//! fleet's standing per day and the exposure distribution as charts
//! (`charts`), each CVE's timeline, and the audit trail of releases, holds
//! and rollbacks — as HTML with a print stylesheet (`html`) and as PDF
//! (`pdf`), both from one [`Printable`].
//!
//! The figures come from the daily history (`crate::history`), so days
//! the server did not record show as missing; making a report counts the
//! fleet first (the cached count, `crate::counts`), so today is recorded.

pub mod charts;
pub mod html;
pub mod pdf;

use crate::context::Context;
use crate::error::{invalid, DbContext, Error};
use crate::history::{day_of, Day, DAY};
use crate::model::AuditEntry;
use crate::report::{CveCompliance, Policy, Summary};

/// The longest period a report covers, in days.
pub const MAX_DAYS: i64 = 366;
/// The period a report covers when none is given, in days.
pub const DEFAULT_DAYS: i64 = 30;
/// The most audit entries a report lists.
pub const MAX_AUDIT: i64 = 500;
/// The audit actions a report lists: what changed which level hosts get.
pub const AUDIT_ACTIONS: [&str; 6] = ["publish", "promote", "pin", "hold", "unpin", "rollback"];

/// A period of whole UTC days.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Period {
    /// Its first day (Unix seconds / 86400).
    pub first: i64,
    /// Its last day, included.
    pub last: i64,
}

/// The days since 1970-01-01 of a proleptic Gregorian date (Howard
/// Hinnant's `days_from_civil`).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// The day of a `YYYY-MM-DD` date; `what` names the parameter in errors.
pub fn parse_date(what: &str, s: &str) -> Result<i64, Error> {
    let bad = || invalid(format!("{what}: {s:?} is not a date (YYYY-MM-DD)"));
    let parts: Vec<&str> = s.split('-').collect();
    let [y, m, d] = parts[..] else {
        return Err(bad());
    };
    if y.len() != 4 || m.len() != 2 || d.len() != 2 {
        return Err(bad());
    }
    let num = |p: &str| {
        if p.bytes().all(|b| b.is_ascii_digit()) {
            p.parse::<i64>().map_err(|_| bad())
        } else {
            Err(bad())
        }
    };
    let (y, m, d) = (num(y)?, num(m)?, num(d)?);
    if !(1..=12).contains(&m) || d < 1 {
        return Err(bad());
    }
    let day = days_from_civil(y, m, d);
    // A day past the month's end lands in the next month.
    if charts::date(day) != s {
        return Err(bad());
    }
    Ok(day)
}

impl Period {
    /// The period `from`..=`to` (`YYYY-MM-DD`); `to` defaults to today and
    /// `from` to [`DEFAULT_DAYS`] days up to `to`. Refused: dates that are
    /// not dates, `from` after `to`, `to` after today, more than
    /// [`MAX_DAYS`] days.
    pub fn parse(from: Option<&str>, to: Option<&str>, now: i64) -> Result<Self, Error> {
        let today = day_of(now);
        let last = to
            .map(|t| parse_date("to", t))
            .transpose()?
            .unwrap_or(today);
        let first = from
            .map(|f| parse_date("from", f))
            .transpose()?
            .unwrap_or(last - (DEFAULT_DAYS - 1));
        if last > today {
            return Err(invalid(format!(
                "to: {} is after today ({}): there are no figures yet",
                charts::date(last),
                charts::date(today)
            )));
        }
        if first > last {
            return Err(invalid(format!(
                "from: {} is after to ({})",
                charts::date(first),
                charts::date(last)
            )));
        }
        if last - first + 1 > MAX_DAYS {
            return Err(invalid(format!(
                "the period {} to {} is {} days; a report covers at most {MAX_DAYS}",
                charts::date(first),
                charts::date(last),
                last - first + 1
            )));
        }
        Ok(Self { first, last })
    }

    /// Its days.
    pub fn days(&self) -> i64 {
        self.last - self.first + 1
    }
}

/// One CVE's timeline.
#[derive(Debug, Clone)]
pub struct CveTimeline {
    /// The CVE.
    pub cve: String,
    /// What it is.
    pub description: String,
    /// Its fixes: (kernel build-id, lowest level listing it, published).
    pub fixes: Vec<(String, i64, i64)>,
    /// Hosts with the fix and without it on each recorded day of the
    /// period that knew the CVE: (day, fixed, exposed); only the days
    /// on which the figures changed, and the last.
    pub protected: Vec<(i64, i64, i64)>,
}

/// Everything a report shows.
#[derive(Debug, Clone)]
pub struct Printable {
    /// When it was made.
    pub generated_at: i64,
    /// The period.
    pub period: Period,
    /// The policy the figures are judged by.
    pub policy: Policy,
    /// The recorded days of the period.
    pub days: Vec<Day>,
    /// Per CVE with a fix published by the period's end.
    pub cves: Vec<CveTimeline>,
    /// The audit entries of [`AUDIT_ACTIONS`] in the period, oldest
    /// first, at most [`MAX_AUDIT`].
    pub audit: Vec<AuditEntry>,
    /// How many there were in all.
    pub audit_total: i64,
}

impl Printable {
    /// The period's last recorded day: the figures at its end.
    pub fn last_day(&self) -> Option<&Day> {
        self.days.last()
    }

    /// Days of the period without a record.
    pub fn missing_days(&self) -> i64 {
        self.period.days() - self.days.len() as i64
    }

    /// The chart of hosts by standing per day.
    pub fn standing_chart(&self) -> String {
        charts::hosts_over_time(
            &self.days,
            self.period.first,
            self.period.last,
            self.policy.policy_days,
        )
    }

    /// The chart of the exposure distribution at the period's end.
    pub fn distribution_chart(&self) -> String {
        charts::exposure_distribution(self.last_day(), self.policy.policy_days)
    }
}

/// A table of plain text: the HTML and the PDF lay out the same cells.
#[derive(Debug, Clone)]
pub struct TextTable {
    /// Column names.
    pub header: Vec<&'static str>,
    /// Relative column widths (the PDF's; HTML sizes by content).
    pub widths: Vec<f64>,
    /// Rows of cells; a row of one cell spans the table (no record).
    pub rows: Vec<Vec<String>>,
}

/// An audit entry's detail (a JSON object) as `key: value, ...`, which
/// reads and wraps better than JSON; anything else as it is.
fn readable_detail(detail: &str) -> String {
    match serde_json::from_str::<serde_json::Value>(detail) {
        Ok(serde_json::Value::Object(m)) => m
            .iter()
            .map(|(k, v)| match v {
                serde_json::Value::String(s) => format!("{k}: {s}"),
                serde_json::Value::Array(a) => format!(
                    "{k}: [{}]",
                    a.iter()
                        .map(|x| x.as_str().map_or_else(|| x.to_string(), str::to_string))
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
                v => format!("{k}: {v}"),
            })
            .collect::<Vec<_>>()
            .join(", "),
        _ => detail.to_string(),
    }
}

/// A count and what it counts, with its plural.
fn plural(n: i64, one: &str, many: &str) -> String {
    format!("{n} {}", if n == 1 { one } else { many })
}

impl Printable {
    /// The title block's lines: (label, value).
    pub fn heading(&self) -> Vec<(&'static str, String)> {
        let p = &self.period;
        vec![
            (
                "Period",
                format!(
                    "{} to {} (UTC, {})",
                    charts::date(p.first),
                    charts::date(p.last),
                    plural(p.days(), "day", "days")
                ),
            ),
            (
                "Policy",
                format!(
                    "a published fix is applied within {}; hosts are stale after {} without a check-in",
                    plural(self.policy.policy_days, "day", "days"),
                    plural(self.policy.stale_hours, "hour", "hours")
                ),
            ),
            (
                "Record",
                format!(
                    "{} of {} recorded{}",
                    plural(self.days.len() as i64, "day", "days"),
                    p.days(),
                    match self.missing_days() {
                        0 => String::new(),
                        m => format!("; {} without a record, shown as missing", plural(m, "day", "days")),
                    }
                ),
            ),
            ("Generated", crate::clock::rfc3339(self.generated_at)),
        ]
    }

    /// The figures at the period's end: (label, value, css class).
    pub fn figures(&self) -> Vec<(&'static str, i64, &'static str)> {
        let Some(d) = self.last_day() else {
            return Vec::new();
        };
        vec![
            ("hosts", d.hosts_total, ""),
            ("protected", d.hosts_protected, "protected"),
            ("exposed", d.hosts_exposed, "exposed"),
            (
                "past policy",
                d.breaching(self.policy.policy_days),
                "breach",
            ),
            ("no level for kernel", d.hosts_unsupported, ""),
            ("stale", d.hosts_stale, "stale"),
        ]
    }

    /// The sentence above the figures: which day they are of.
    pub fn figures_caption(&self) -> String {
        match self.last_day() {
            Some(d) => format!(
                "At the end of the period: the record of {} (counted at {}).",
                charts::date(d.day),
                crate::clock::rfc3339(d.recorded_at)
            ),
            None => "No day of the period has a record: the server counted nothing then.".into(),
        }
    }

    /// Each day's figures, a day without a record included as such.
    pub fn daily_table(&self) -> TextTable {
        let mut rows = Vec::new();
        let mut recorded = self.days.iter().peekable();
        for day in self.period.first..=self.period.last {
            match recorded.next_if(|d| d.day == day) {
                Some(d) => rows.push(vec![
                    charts::date(day),
                    d.hosts_total.to_string(),
                    d.hosts_protected.to_string(),
                    d.hosts_exposed.to_string(),
                    d.breaching(self.policy.policy_days).to_string(),
                    d.hosts_unsupported.to_string(),
                    d.hosts_stale.to_string(),
                ]),
                None => rows.push(vec![charts::date(day), "no record".into()]),
            }
        }
        TextTable {
            header: vec![
                "Day",
                "Hosts",
                "Protected",
                "Exposed",
                "Past policy",
                "No level",
                "Stale",
            ],
            widths: vec![1.6, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0],
            rows,
        }
    }

    /// Each CVE's timeline.
    pub fn cve_table(&self) -> TextTable {
        let rows = self
            .cves
            .iter()
            .map(|c| {
                let fixes: Vec<String> = c
                    .fixes
                    .iter()
                    .map(|(b, l, at)| {
                        format!(
                            "level {l}, published {}\nkernel {}",
                            charts::date(day_of(*at)),
                            &b[..b.len().min(12)]
                        )
                    })
                    .collect();
                let protected: Vec<String> = c
                    .protected
                    .iter()
                    .map(|(d, f, e)| format!("{}: {f} of {}", charts::date(*d), f + e))
                    .collect();
                vec![
                    c.cve.clone(),
                    c.description.clone(),
                    fixes.join("\n"),
                    if protected.is_empty() {
                        "no record".into()
                    } else {
                        protected.join("\n")
                    },
                ]
            })
            .collect();
        TextTable {
            header: vec!["CVE", "What", "Fixed in", "Hosts protected by date"],
            widths: vec![1.3, 2.0, 2.4, 2.1],
            rows,
        }
    }

    /// The audit trail of releases, holds and rollbacks.
    pub fn audit_table(&self) -> TextTable {
        let rows = self
            .audit
            .iter()
            .map(|a| {
                vec![
                    crate::clock::rfc3339(a.at),
                    a.actor.clone(),
                    a.action.clone(),
                    a.target.clone(),
                    readable_detail(&a.detail),
                ]
            })
            .collect();
        TextTable {
            header: vec!["When", "Who", "Action", "Target", "Detail"],
            widths: vec![1.6, 0.9, 0.8, 2.4, 2.1],
            rows,
        }
    }

    /// The sentence under the audit trail when it was cut.
    pub fn audit_note(&self) -> Option<String> {
        (self.audit_total > self.audit.len() as i64).then(|| {
            format!(
                "The first {} of {} entries; the whole trail: noreboot-server admin audit.",
                self.audit.len(),
                self.audit_total
            )
        })
    }
}

impl Context {
    /// The report for `period` judged by `policy_days`. Counts the fleet
    /// first (so that today, if in the period, has its record).
    pub async fn printable(&self, period: Period, policy_days: i64) -> Result<Printable, Error> {
        Ok(self.printable_counted(period, policy_days).await?.0)
    }

    /// [`Context::printable`], with the summary and per-CVE view of the
    /// count it made (the dashboard shows both: one count, not two).
    pub async fn printable_counted(
        &self,
        period: Period,
        policy_days: i64,
    ) -> Result<(Printable, Summary, Vec<CveCompliance>), Error> {
        let policy = Policy {
            policy_days,
            stale_hours: self.counts.stale_hours(),
        };
        let (summary, now) = self.compliance_summary(policy).await?;
        let generated_at = self.clock.now();
        let (days, fixes, (audit, audit_total)) = tokio::try_join!(
            self.history(period.first, period.last),
            self.fixes(),
            self.release_audit(period)
        )?;
        let end = (period.last + 1) * DAY;
        let mut cves = Vec::new();
        for (cve, list) in fixes.fixes_by_cve() {
            let found: Vec<(String, i64, i64)> = list
                .into_iter()
                .filter(|(_, _, at)| *at < end)
                .map(|(b, l, at)| (b.to_string(), l, at))
                .collect();
            if found.is_empty() {
                continue;
            }
            let known: Vec<(i64, i64, i64)> = days
                .iter()
                .filter_map(|d| d.cves.get(cve).map(|(f, e)| (d.day, *f, *e)))
                .collect();
            let mut protected: Vec<(i64, i64, i64)> = Vec::new();
            for (i, p) in known.iter().enumerate() {
                let changed = protected.last().is_none_or(|l| (l.1, l.2) != (p.1, p.2));
                if changed || i + 1 == known.len() {
                    protected.push(*p);
                }
            }
            cves.push(CveTimeline {
                cve: cve.to_string(),
                description: fixes.description(cve).to_string(),
                fixes: found,
                protected,
            });
        }
        let report = Printable {
            generated_at,
            period,
            policy,
            days,
            cves,
            audit,
            audit_total,
        };
        Ok((report, summary, now))
    }

    /// The audit entries of [`AUDIT_ACTIONS`] in `period`, oldest first (at
    /// most [`MAX_AUDIT`]), and how many there are. The audit trail holds
    /// admin actions, not host events: small enough to filter by time
    /// without an index of its own.
    async fn release_audit(&self, period: Period) -> Result<(Vec<AuditEntry>, i64), Error> {
        let actions = AUDIT_ACTIONS.map(|a| format!("'{a}'")).join(", ");
        let (start, end) = (period.first * DAY, (period.last + 1) * DAY);
        let entries = sqlx::query_as::<_, AuditEntry>(&format!(
            "SELECT id, at, actor, action, target, detail FROM audit \
             WHERE at >= $1 AND at < $2 AND action IN ({actions}) ORDER BY id LIMIT $3"
        ))
        .bind(start)
        .bind(end)
        .bind(MAX_AUDIT)
        .fetch_all(self.db.pool())
        .await
        .ctx("read the audit trail for the report")?;
        let total: i64 = sqlx::query_scalar(&format!(
            "SELECT COUNT(*) FROM audit WHERE at >= $1 AND at < $2 AND action IN ({actions})"
        ))
        .bind(start)
        .bind(end)
        .fetch_one(self.db.pool())
        .await
        .ctx("count the audit trail for the report")?;
        Ok((entries, total))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_parse_strictly() {
        assert_eq!(parse_date("from", "1970-01-01").unwrap(), 0);
        assert_eq!(parse_date("from", "2025-06-15").unwrap(), 20_254);
        assert_eq!(parse_date("from", "2024-02-29").unwrap(), 19_782);
        for bad in [
            "2025-02-29",
            "2025-13-01",
            "2025-00-10",
            "2025-6-15",
            "20250615",
            "2025-06-15T00:00:00Z",
            "",
            "+025-06-15",
            "2025-06-1a",
        ] {
            let e = parse_date("from", bad).unwrap_err().to_string();
            assert!(
                e.starts_with("from: ") && e.contains("YYYY-MM-DD"),
                "{bad}: {e}"
            );
        }
    }

    #[test]
    fn periods_default_and_refuse_what_cannot_be_reported() {
        let now = 20_254 * DAY + 3600;
        let p = Period::parse(None, None, now).unwrap();
        assert_eq!((p.first, p.last), (20_254 - 29, 20_254));
        let p = Period::parse(Some("2025-06-01"), Some("2025-06-10"), now).unwrap();
        assert_eq!(p.days(), 10);
        for (from, to, says) in [
            (Some("2025-06-10"), Some("2025-06-01"), "is after to"),
            (None, Some("2025-06-16"), "after today"),
            (Some("2024-01-01"), None, "at most 366"),
        ] {
            let e = Period::parse(from, to, now).unwrap_err().to_string();
            assert!(e.contains(says), "{from:?} {to:?}: {e}");
        }
    }
}
