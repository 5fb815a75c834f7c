//! Compliance reports: which hosts are exposed to which CVEs, and for how
//! long, against a patch policy ("security fixes within 30 days").
//!
//! The rules, per host and per CVE:
//! - A CVE is *fixed by a published level* for a host when a level for the
//!   host's kernel build-id lists it. Levels are cumulative, so the fixing
//!   level is the lowest one listing it, and every higher level includes it.
//! - The host is *exposed* while its applied level is below that level.
//! - *Days exposed* count from the fixing level's **publication** on this
//!   server, not from its release to the host's feed. That is a choice:
//!   feeds, delays, pins and holds are the operator's own scheduling, and
//!   a compliance clock that a hold could stop would hide exactly the
//!   exposure the report is for.
//! - A host *breaches* the policy when it has been exposed to some CVE for
//!   longer than `policy_days`.
//! - A host is *stale* when it has not checked in for `stale_hours` (or
//!   never did): what the server knows about it may be out of date.
//!
//! One [`Compliance`] is computed from a consistent read of hosts and levels
//! and is cut into the four views the API and CLI serve (exposures, hosts,
//! CVEs, summary), each as JSON or CSV.

use std::collections::{BTreeMap, BTreeSet};

use serde::Serialize;

use crate::clock::rfc3339;
use crate::context::Context;
use crate::error::{invalid, Error};

/// Default patch policy, in days.
pub const DEFAULT_POLICY_DAYS: i64 = 30;
/// Default age of the last check-in after which a host counts as stale.
pub const DEFAULT_STALE_HOURS: i64 = 24;

/// What a report measures against.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Policy {
    /// Longest acceptable exposure to a fixed CVE.
    pub policy_days: i64,
    /// Hours without a check-in after which a host is stale.
    pub stale_hours: i64,
}

impl Default for Policy {
    fn default() -> Self {
        Self {
            policy_days: DEFAULT_POLICY_DAYS,
            stale_hours: DEFAULT_STALE_HOURS,
        }
    }
}

impl Policy {
    /// This policy with the given overrides, validated: days in 0..=3650,
    /// hours in 1..=87600 (bounds keep the arithmetic far from overflow).
    pub fn with(self, policy_days: Option<i64>, stale_hours: Option<i64>) -> Result<Self, Error> {
        let p = Self {
            policy_days: policy_days.unwrap_or(self.policy_days),
            stale_hours: stale_hours.unwrap_or(self.stale_hours),
        };
        if !(0..=3650).contains(&p.policy_days) {
            return Err(invalid(format!(
                "policy_days {} is out of range (0 to 3650)",
                p.policy_days
            )));
        }
        if !(1..=87_600).contains(&p.stale_hours) {
            return Err(invalid(format!(
                "stale_hours {} is out of range (1 to 87600)",
                p.stale_hours
            )));
        }
        Ok(p)
    }
}

/// One host exposed to one CVE.
#[derive(Debug, Clone, Serialize)]
pub struct Exposure {
    /// The host's id.
    pub host_id: String,
    /// Its name.
    pub hostname: String,
    /// Its feed.
    pub feed: String,
    /// `uname -r`.
    pub kernel_release: String,
    /// Its kernel's build-id.
    pub build_id: String,
    /// The level it has applied.
    pub applied_level: i64,
    /// The CVE.
    pub cve: String,
    /// The lowest level for this kernel that fixes it.
    pub fixed_in_level: i64,
    /// When that level was published (RFC 3339).
    pub fix_published_at: String,
    /// Whole days since then.
    pub days_exposed: i64,
    /// Exposed longer than the policy allows.
    pub breach: bool,
}

/// One host's standing.
#[derive(Debug, Clone, Serialize)]
pub struct HostCompliance {
    /// Its id.
    pub host_id: String,
    /// Its name.
    pub hostname: String,
    /// Its feed.
    pub feed: String,
    /// `uname -r`.
    pub kernel_release: String,
    /// Its kernel's build-id.
    pub build_id: String,
    /// The level it has applied.
    pub applied_level: i64,
    /// The newest level published for its kernel.
    pub newest_level: Option<i64>,
    /// `protected` (no exposure), `exposed`, or `unsupported` (no level
    /// published for its kernel: the report cannot tell).
    pub status: &'static str,
    /// The CVEs it is exposed to.
    pub exposed_cves: Vec<String>,
    /// The longest exposure, in whole days (0 if none).
    pub max_days_exposed: i64,
    /// Exposed to some CVE longer than the policy allows.
    pub breach: bool,
    /// Its last check-in (RFC 3339), if any.
    pub last_checkin: Option<String>,
    /// No check-in within `stale_hours`.
    pub stale: bool,
}

/// One CVE across the fleet.
#[derive(Debug, Clone, Serialize)]
pub struct CveCompliance {
    /// The CVE.
    pub cve: String,
    /// What it is (from the first level listing it).
    pub description: String,
    /// Kernel builds with a level fixing it.
    pub kernels: usize,
    /// Hosts on those kernels with the fix applied.
    pub hosts_fixed: usize,
    /// Hosts on those kernels without it.
    pub hosts_exposed: usize,
    /// Exposed hosts past the policy.
    pub hosts_breaching: usize,
    /// The earliest publication of a fix (RFC 3339).
    pub first_fix_published_at: String,
    /// The longest exposure of any host, in whole days (0 if none).
    pub max_days_exposed: i64,
}

/// The fleet in numbers.
#[derive(Debug, Clone, Serialize)]
pub struct Summary {
    /// When the report was made (RFC 3339).
    pub generated_at: String,
    /// The policy in days.
    pub policy_days: i64,
    /// The staleness threshold in hours.
    pub stale_hours: i64,
    /// Registered hosts.
    pub hosts_total: usize,
    /// Hosts with every published fix for their kernel applied.
    pub hosts_protected: usize,
    /// Hosts missing a published fix.
    pub hosts_exposed: usize,
    /// Hosts on kernels without published levels.
    pub hosts_unsupported: usize,
    /// Exposed hosts past the policy.
    pub hosts_breaching: usize,
    /// Hosts without a recent check-in.
    pub hosts_stale: usize,
    /// Host × CVE exposures.
    pub exposures: usize,
    /// Distinct CVEs some host is exposed to.
    pub cves_open: usize,
}

/// A whole compliance report.
#[derive(Debug, Clone, Serialize)]
pub struct Compliance {
    /// Totals.
    pub summary: Summary,
    /// Per host, by hostname.
    pub hosts: Vec<HostCompliance>,
    /// Per CVE, by id.
    pub cves: Vec<CveCompliance>,
    /// Every host × CVE exposure, longest first.
    pub exposures: Vec<Exposure>,
}

/// The fix of one CVE for one kernel build.
struct Fix {
    level: i64,
    published_at: i64,
}

impl Context {
    /// The compliance report as of now.
    pub async fn compliance(&self, policy: Policy) -> Result<Compliance, Error> {
        let now = self.clock.now();
        let hosts = self.hosts().await?;
        let levels = self.levels(None).await?;
        // build-id → CVE → its lowest fixing level; build-id → newest level.
        // `levels` comes ordered by build-id and level, so the first level
        // seen listing a CVE is the lowest.
        let mut fixes: BTreeMap<&str, BTreeMap<&str, Fix>> = BTreeMap::new();
        let mut newest: BTreeMap<&str, i64> = BTreeMap::new();
        let mut descriptions: BTreeMap<&str, &str> = BTreeMap::new();
        for l in &levels {
            newest.insert(&l.build_id, l.level);
            let per_kernel = fixes.entry(&l.build_id).or_default();
            for c in &l.cves {
                per_kernel.entry(&c.cve).or_insert(Fix {
                    level: l.level,
                    published_at: l.published_at,
                });
                descriptions.entry(&c.cve).or_insert(&c.description);
            }
        }
        let policy_secs = policy.policy_days * 86_400;
        let stale_secs = policy.stale_hours * 3600;
        let mut exposures = Vec::new();
        let mut host_rows = Vec::with_capacity(hosts.len());
        #[derive(Default)]
        struct CveAcc {
            kernels: BTreeSet<String>,
            fixed: usize,
            exposed: usize,
            breaching: usize,
            first_fix: Option<i64>,
            max_days: i64,
        }
        let mut per_cve: BTreeMap<&str, CveAcc> = BTreeMap::new();
        for (build_id, cves) in &fixes {
            for (cve, fix) in cves {
                let acc = per_cve.entry(cve).or_default();
                acc.kernels.insert(build_id.to_string());
                acc.first_fix = Some(
                    acc.first_fix
                        .map_or(fix.published_at, |t| t.min(fix.published_at)),
                );
            }
        }
        for h in &hosts {
            let mut exposed_cves = Vec::new();
            let mut max_days = 0;
            let mut breach = false;
            if let Some(cves) = fixes.get(h.build_id.as_str()) {
                for (cve, fix) in cves {
                    let acc = per_cve.entry(cve).or_default();
                    if h.level >= fix.level {
                        acc.fixed += 1;
                        continue;
                    }
                    let secs = now.saturating_sub(fix.published_at).max(0);
                    let days = secs / 86_400;
                    let late = secs > policy_secs;
                    acc.exposed += 1;
                    acc.breaching += usize::from(late);
                    acc.max_days = acc.max_days.max(days);
                    max_days = max_days.max(days);
                    breach |= late;
                    exposed_cves.push(cve.to_string());
                    exposures.push(Exposure {
                        host_id: h.id.clone(),
                        hostname: h.hostname.clone(),
                        feed: h.feed.clone(),
                        kernel_release: h.kernel_release.clone(),
                        build_id: h.build_id.clone(),
                        applied_level: h.level,
                        cve: cve.to_string(),
                        fixed_in_level: fix.level,
                        fix_published_at: rfc3339(fix.published_at),
                        days_exposed: days,
                        breach: late,
                    });
                }
            }
            let newest_level = newest.get(h.build_id.as_str()).copied();
            let status = match (newest_level, exposed_cves.is_empty()) {
                (None, _) => "unsupported",
                (Some(_), true) => "protected",
                (Some(_), false) => "exposed",
            };
            host_rows.push(HostCompliance {
                host_id: h.id.clone(),
                hostname: h.hostname.clone(),
                feed: h.feed.clone(),
                kernel_release: h.kernel_release.clone(),
                build_id: h.build_id.clone(),
                applied_level: h.level,
                newest_level,
                status,
                exposed_cves,
                max_days_exposed: max_days,
                breach,
                last_checkin: h.last_checkin.map(rfc3339),
                stale: h
                    .last_checkin
                    .is_none_or(|t| now.saturating_sub(t) > stale_secs),
            });
        }
        exposures.sort_by(|a, b| {
            b.days_exposed
                .cmp(&a.days_exposed)
                .then_with(|| a.hostname.cmp(&b.hostname))
                .then_with(|| a.cve.cmp(&b.cve))
        });
        let cves: Vec<CveCompliance> = per_cve
            .into_iter()
            .map(|(cve, a)| CveCompliance {
                cve: cve.to_string(),
                description: descriptions.get(cve).copied().unwrap_or("").to_string(),
                kernels: a.kernels.len(),
                hosts_fixed: a.fixed,
                hosts_exposed: a.exposed,
                hosts_breaching: a.breaching,
                first_fix_published_at: a.first_fix.map(rfc3339).unwrap_or_default(),
                max_days_exposed: a.max_days,
            })
            .collect();
        let count = |status: &str| host_rows.iter().filter(|h| h.status == status).count();
        let summary = Summary {
            generated_at: rfc3339(now),
            policy_days: policy.policy_days,
            stale_hours: policy.stale_hours,
            hosts_total: host_rows.len(),
            hosts_protected: count("protected"),
            hosts_exposed: count("exposed"),
            hosts_unsupported: count("unsupported"),
            hosts_breaching: host_rows.iter().filter(|h| h.breach).count(),
            hosts_stale: host_rows.iter().filter(|h| h.stale).count(),
            exposures: exposures.len(),
            cves_open: cves.iter().filter(|c| c.hosts_exposed > 0).count(),
        };
        Ok(Compliance {
            summary,
            hosts: host_rows,
            cves,
            exposures,
        })
    }
}

/// A table: column names and rows of cells, for CSV and the CLI.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Table {
    /// Column names.
    pub header: Vec<&'static str>,
    /// Rows, each as long as the header.
    pub rows: Vec<Vec<String>>,
}

impl Table {
    /// RFC 4180 CSV with CRLF line ends. Cells that a spreadsheet would
    /// run as a formula (host names come from hosts) get a leading `'`.
    pub fn to_csv(&self) -> String {
        let mut out = String::new();
        let header: Vec<String> = self.header.iter().map(|h| h.to_string()).collect();
        for row in std::iter::once(&header).chain(self.rows.iter()) {
            let cells: Vec<String> = row.iter().map(|c| csv_cell(c)).collect();
            out.push_str(&cells.join(","));
            out.push_str("\r\n");
        }
        out
    }

    /// Aligned columns for a terminal.
    pub fn to_text(&self) -> String {
        let mut widths: Vec<usize> = self.header.iter().map(|h| h.chars().count()).collect();
        for r in &self.rows {
            for (w, c) in widths.iter_mut().zip(r) {
                *w = (*w).max(c.chars().count());
            }
        }
        let mut out = String::new();
        let header: Vec<String> = self.header.iter().map(|h| h.to_uppercase()).collect();
        for row in std::iter::once(&header).chain(self.rows.iter()) {
            let line: Vec<String> = row
                .iter()
                .zip(&widths)
                // Control characters would move the terminal's cursor.
                .map(|(c, w)| format!("{:<w$}", c.replace(|ch: char| ch.is_control(), "?")))
                .collect();
            out.push_str(line.join("  ").trim_end());
            out.push('\n');
        }
        out
    }
}

/// A cell that is a plain decimal number (`-3`, `12.5`): nothing a
/// spreadsheet could run.
fn is_plain_number(c: &str) -> bool {
    let digits = c.strip_prefix('-').unwrap_or(c);
    !digits.is_empty()
        && digits.bytes().all(|b| b.is_ascii_digit() || b == b'.')
        && digits.bytes().filter(|&b| b == b'.').count() <= 1
        && digits.bytes().any(|b| b.is_ascii_digit())
}

fn csv_cell(c: &str) -> String {
    // OWASP's rule: a cell starting with = + - @ tab or CR is a formula to
    // a spreadsheet (`-2+3+cmd|...` too), so it gets a leading quote; a
    // plain number keeps its sign and stays a number.
    let c = if c.starts_with(['=', '+', '-', '@', '\t', '\r']) && !is_plain_number(c) {
        format!("'{c}")
    } else {
        c.to_string()
    };
    if c.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", c.replace('"', "\"\""))
    } else {
        c
    }
}

fn opt(v: Option<i64>) -> String {
    v.map_or_else(String::new, |v| v.to_string())
}

impl Compliance {
    /// The exposures.
    pub fn exposures_table(&self) -> Table {
        Table {
            header: vec![
                "hostname",
                "host_id",
                "feed",
                "kernel_release",
                "build_id",
                "applied_level",
                "cve",
                "fixed_in_level",
                "fix_published_at",
                "days_exposed",
                "breach",
            ],
            rows: self
                .exposures
                .iter()
                .map(|e| {
                    vec![
                        e.hostname.clone(),
                        e.host_id.clone(),
                        e.feed.clone(),
                        e.kernel_release.clone(),
                        e.build_id.clone(),
                        e.applied_level.to_string(),
                        e.cve.clone(),
                        e.fixed_in_level.to_string(),
                        e.fix_published_at.clone(),
                        e.days_exposed.to_string(),
                        e.breach.to_string(),
                    ]
                })
                .collect(),
        }
    }

    /// The hosts.
    pub fn hosts_table(&self) -> Table {
        Table {
            header: vec![
                "hostname",
                "host_id",
                "feed",
                "kernel_release",
                "applied_level",
                "newest_level",
                "status",
                "exposed_cves",
                "max_days_exposed",
                "breach",
                "last_checkin",
                "stale",
            ],
            rows: self
                .hosts
                .iter()
                .map(|h| {
                    vec![
                        h.hostname.clone(),
                        h.host_id.clone(),
                        h.feed.clone(),
                        h.kernel_release.clone(),
                        h.applied_level.to_string(),
                        opt(h.newest_level),
                        h.status.to_string(),
                        h.exposed_cves.join(" "),
                        h.max_days_exposed.to_string(),
                        h.breach.to_string(),
                        h.last_checkin.clone().unwrap_or_default(),
                        h.stale.to_string(),
                    ]
                })
                .collect(),
        }
    }

    /// The CVEs.
    pub fn cves_table(&self) -> Table {
        Table {
            header: vec![
                "cve",
                "kernels",
                "hosts_fixed",
                "hosts_exposed",
                "hosts_breaching",
                "first_fix_published_at",
                "max_days_exposed",
                "description",
            ],
            rows: self
                .cves
                .iter()
                .map(|c| {
                    vec![
                        c.cve.clone(),
                        c.kernels.to_string(),
                        c.hosts_fixed.to_string(),
                        c.hosts_exposed.to_string(),
                        c.hosts_breaching.to_string(),
                        c.first_fix_published_at.clone(),
                        c.max_days_exposed.to_string(),
                        c.description.clone(),
                    ]
                })
                .collect(),
        }
    }

    /// The summary, as one row.
    pub fn summary_table(&self) -> Table {
        let s = &self.summary;
        Table {
            header: vec![
                "generated_at",
                "policy_days",
                "stale_hours",
                "hosts_total",
                "hosts_protected",
                "hosts_exposed",
                "hosts_unsupported",
                "hosts_breaching",
                "hosts_stale",
                "exposures",
                "cves_open",
            ],
            rows: vec![vec![
                s.generated_at.clone(),
                s.policy_days.to_string(),
                s.stale_hours.to_string(),
                s.hosts_total.to_string(),
                s.hosts_protected.to_string(),
                s.hosts_exposed.to_string(),
                s.hosts_unsupported.to_string(),
                s.hosts_breaching.to_string(),
                s.hosts_stale.to_string(),
                s.exposures.to_string(),
                s.cves_open.to_string(),
            ]],
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn csv_quotes_and_defuses_formulas() {
        let t = Table {
            header: vec!["a", "b"],
            rows: vec![
                vec!["=cmd()".into(), "x,\"y\"".into()],
                vec!["-3".into(), "-x".into()],
                vec!["-2+3+cmd|' /C calc'!A0".into(), "-1.5".into()],
                vec!["+1".into(), "\tx".into()],
            ],
        };
        assert_eq!(
            t.to_csv(),
            "a,b\r\n'=cmd(),\"x,\"\"y\"\"\"\r\n-3,'-x\r\n'-2+3+cmd|' /C calc'!A0,-1.5\r\n'+1,'\tx\r\n"
        );
        assert!(!is_plain_number("-") && !is_plain_number("1.2.3") && !is_plain_number("-1e5"));
    }

    #[test]
    fn policy_bounds() {
        let p = Policy::default();
        assert_eq!(p.with(Some(7), None).unwrap().policy_days, 7);
        assert!(p.with(Some(-1), None).is_err());
        assert!(p.with(None, Some(0)).is_err());
        assert!(p.with(Some(i64::MAX), None).is_err());
    }
}
