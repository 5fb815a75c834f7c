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

use std::collections::BTreeMap;

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
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
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
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
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
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
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
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
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
#[derive(Debug, Clone)]
struct Fix {
    level: i64,
    published_at: i64,
}

/// What the published levels say about one kernel build.
#[derive(Debug, Clone, Default)]
struct BuildFixes {
    /// Its newest level.
    newest: i64,
    /// Each CVE a level lists, with its lowest such level, by CVE.
    cves: BTreeMap<String, Fix>,
}

/// Everything the compliance rules need from the published levels: small
/// (levels, not hosts), read once per report, and applied to each host —
/// or to each group of hosts on the same build and level, which is how
/// [`Context::compliance_summary`] counts a large fleet without reading
/// its rows.
#[derive(Debug, Clone, Default)]
pub struct Fixes {
    builds: BTreeMap<String, BuildFixes>,
    descriptions: BTreeMap<String, String>,
}

/// One host's exposure to one CVE, before it is tied to the host's row.
struct Exposed<'a> {
    cve: &'a str,
    fix: &'a Fix,
    days: i64,
    late: bool,
}

impl Fixes {
    /// The newest level published for `build_id`.
    pub fn newest(&self, build_id: &str) -> Option<i64> {
        self.builds.get(build_id).map(|b| b.newest)
    }

    /// Each CVE a level for `build_id` lists, with the lowest such level
    /// and its publication time, by CVE (none: no level for the build).
    pub fn cve_fixes<'a>(
        &'a self,
        build_id: &str,
    ) -> impl Iterator<Item = (&'a str, i64, i64)> + 'a {
        self.builds
            .get(build_id)
            .into_iter()
            .flat_map(|b| b.cves.iter())
            .map(|(cve, fix)| (cve.as_str(), fix.level, fix.published_at))
    }

    /// The CVEs a host on `build_id` at `level` has been exposed to for
    /// longer than `policy` allows at `now`, with the days of each.
    pub fn late_cves(
        &self,
        build_id: &str,
        level: i64,
        now: i64,
        policy: Policy,
    ) -> Vec<(String, i64)> {
        self.exposed(build_id, level, now, policy)
            .into_iter()
            .filter(|e| e.late)
            .map(|e| (e.cve.to_string(), e.days))
            .collect()
    }

    /// The CVEs a host on `build_id` at `level` is exposed to, by CVE.
    fn exposed(&self, build_id: &str, level: i64, now: i64, policy: Policy) -> Vec<Exposed<'_>> {
        let Some(b) = self.builds.get(build_id) else {
            return Vec::new();
        };
        b.cves
            .iter()
            .filter(|(_, fix)| level < fix.level)
            .map(|(cve, fix)| {
                let secs = now.saturating_sub(fix.published_at).max(0);
                Exposed {
                    cve,
                    fix,
                    days: secs / 86_400,
                    late: secs > policy.policy_days * 86_400,
                }
            })
            .collect()
    }

    /// How long, in seconds, a host on `build_id` at `level` has been
    /// exposed at `now` to the CVE it has been exposed to longest; `None`
    /// when it is not exposed (protected, or on a kernel without levels).
    pub fn longest_exposure(&self, build_id: &str, level: i64, now: i64) -> Option<i64> {
        let b = self.builds.get(build_id)?;
        b.cves
            .values()
            .filter(|fix| level < fix.level)
            .map(|fix| now.saturating_sub(fix.published_at).max(0))
            .max()
    }

    /// Each CVE a level lists, with the lowest level listing it for each
    /// kernel build: (build-id, level, published at), by CVE then build.
    pub fn fixes_by_cve(&self) -> BTreeMap<&str, Vec<(&str, i64, i64)>> {
        let mut out: BTreeMap<&str, Vec<(&str, i64, i64)>> = BTreeMap::new();
        for (build, b) in &self.builds {
            for (cve, fix) in &b.cves {
                out.entry(cve)
                    .or_default()
                    .push((build, fix.level, fix.published_at));
            }
        }
        out
    }

    /// What `cve` is, from the first level listing it.
    pub fn description(&self, cve: &str) -> &str {
        self.descriptions.get(cve).map_or("", String::as_str)
    }

    /// One host's standing, and its exposures (by CVE).
    pub fn standing(
        &self,
        h: &crate::model::Host,
        now: i64,
        policy: Policy,
    ) -> (HostCompliance, Vec<Exposure>) {
        let exposed = self.exposed(&h.build_id, h.level, now, policy);
        let newest_level = self.newest(&h.build_id);
        let status = match (newest_level, exposed.is_empty()) {
            (None, _) => "unsupported",
            (Some(_), true) => "protected",
            (Some(_), false) => "exposed",
        };
        let exposures: Vec<Exposure> = exposed
            .iter()
            .map(|e| Exposure {
                host_id: h.id.clone(),
                hostname: h.hostname.clone(),
                feed: h.feed.clone(),
                kernel_release: h.kernel_release.clone(),
                build_id: h.build_id.clone(),
                applied_level: h.level,
                cve: e.cve.to_string(),
                fixed_in_level: e.fix.level,
                fix_published_at: rfc3339(e.fix.published_at),
                days_exposed: e.days,
                breach: e.late,
            })
            .collect();
        let standing = HostCompliance {
            host_id: h.id.clone(),
            hostname: h.hostname.clone(),
            feed: h.feed.clone(),
            kernel_release: h.kernel_release.clone(),
            build_id: h.build_id.clone(),
            applied_level: h.level,
            newest_level,
            status,
            exposed_cves: exposed.iter().map(|e| e.cve.to_string()).collect(),
            max_days_exposed: exposed.iter().map(|e| e.days).max().unwrap_or(0),
            breach: exposed.iter().any(|e| e.late),
            last_checkin: h.last_checkin.map(rfc3339),
            stale: is_stale(h.last_checkin, now, policy),
        };
        (standing, exposures)
    }
}

/// Whether a host last seen at `last_checkin` is stale at `now`.
fn is_stale(last_checkin: Option<i64>, now: i64, policy: Policy) -> bool {
    last_checkin.is_none_or(|t| now.saturating_sub(t) > policy.stale_hours * 3600)
}

/// Per CVE, while counting.
#[derive(Default)]
struct CveAcc {
    kernels: usize,
    fixed: usize,
    exposed: usize,
    breaching: usize,
    first_fix: Option<i64>,
    max_days: i64,
}

impl Fixes {
    /// The per-CVE counters, every CVE some level lists at zero hosts.
    fn cve_accumulators(&self) -> BTreeMap<&str, CveAcc> {
        let mut per_cve: BTreeMap<&str, CveAcc> = BTreeMap::new();
        for b in self.builds.values() {
            for (cve, fix) in &b.cves {
                let acc = per_cve.entry(cve).or_default();
                acc.kernels += 1;
                acc.first_fix = Some(
                    acc.first_fix
                        .map_or(fix.published_at, |t| t.min(fix.published_at)),
                );
            }
        }
        per_cve
    }

    /// Counts `n` hosts on `build_id` at `level` (`stale` of them stale)
    /// into `summary` and `per_cve`.
    #[allow(clippy::too_many_arguments)]
    fn count(
        &self,
        summary: &mut Summary,
        per_cve: &mut BTreeMap<&str, CveAcc>,
        build_id: &str,
        level: i64,
        n: usize,
        stale: usize,
        now: i64,
        policy: Policy,
    ) {
        summary.hosts_total += n;
        summary.hosts_stale += stale;
        let Some(b) = self.builds.get(build_id) else {
            summary.hosts_unsupported += n;
            return;
        };
        let exposed = self.exposed(build_id, level, now, policy);
        for (cve, fix) in &b.cves {
            if level >= fix.level {
                if let Some(acc) = per_cve.get_mut(cve.as_str()) {
                    acc.fixed += n;
                }
            }
        }
        for e in &exposed {
            if let Some(acc) = per_cve.get_mut(e.cve) {
                acc.exposed += n;
                acc.breaching += if e.late { n } else { 0 };
                acc.max_days = acc.max_days.max(e.days);
            }
        }
        if exposed.is_empty() {
            summary.hosts_protected += n;
        } else {
            summary.hosts_exposed += n;
            summary.exposures += n * exposed.len();
            if exposed.iter().any(|e| e.late) {
                summary.hosts_breaching += n;
            }
        }
    }

    /// The per-CVE rows from the counters.
    fn cve_rows(&self, per_cve: BTreeMap<&str, CveAcc>) -> Vec<CveCompliance> {
        per_cve
            .into_iter()
            .map(|(cve, a)| CveCompliance {
                cve: cve.to_string(),
                description: self.descriptions.get(cve).cloned().unwrap_or_default(),
                kernels: a.kernels,
                hosts_fixed: a.fixed,
                hosts_exposed: a.exposed,
                hosts_breaching: a.breaching,
                first_fix_published_at: a.first_fix.map(rfc3339).unwrap_or_default(),
                max_days_exposed: a.max_days,
            })
            .collect()
    }
}

fn empty_summary(now: i64, policy: Policy) -> Summary {
    Summary {
        generated_at: rfc3339(now),
        policy_days: policy.policy_days,
        stale_hours: policy.stale_hours,
        hosts_total: 0,
        hosts_protected: 0,
        hosts_exposed: 0,
        hosts_unsupported: 0,
        hosts_breaching: 0,
        hosts_stale: 0,
        exposures: 0,
        cves_open: 0,
    }
}

impl Context {
    /// What the published levels say, for the compliance rules.
    pub async fn fixes(&self) -> Result<Fixes, Error> {
        let levels = self.levels(None).await?;
        let mut fixes = Fixes::default();
        // `levels` comes ordered by build-id and level, so the first level
        // seen listing a CVE is the lowest.
        for l in levels {
            let b = fixes.builds.entry(l.build_id.clone()).or_default();
            b.newest = l.level;
            for c in l.cves {
                b.cves.entry(c.cve.clone()).or_insert(Fix {
                    level: l.level,
                    published_at: l.published_at,
                });
                fixes.descriptions.entry(c.cve).or_insert(c.description);
            }
        }
        Ok(fixes)
    }

    /// The summary and the per-CVE view, counted from the active hosts
    /// grouped by kernel and level instead of from their rows: the rules
    /// depend on nothing else, and a fleet has few distinct pairs. The
    /// counts are the fleet's last ones while they may stand in (see
    /// [`crate::counts`]); the summary's `generated_at` says when they were
    /// taken. The levels are read afresh.
    pub async fn compliance_summary(
        &self,
        policy: Policy,
    ) -> Result<(Summary, Vec<CveCompliance>), Error> {
        let (fixes, counts) =
            tokio::try_join!(self.fixes(), self.fleet_counts(policy.stale_hours))?;
        // Groups by (build-id, level), summed over the releases and
        // versions the counts group by too.
        let mut by_level: BTreeMap<(&str, i64), i64> = BTreeMap::new();
        for g in &counts.groups {
            *by_level.entry((&g.build_id, g.level)).or_default() += g.hosts;
        }
        let mut summary = empty_summary(counts.at, policy);
        let mut per_cve = fixes.cve_accumulators();
        // The exposed hosts by their longest exposure, for the history.
        let mut exposure: BTreeMap<i64, i64> = BTreeMap::new();
        for ((build_id, level), n) in by_level {
            if let Some(secs) = fixes.longest_exposure(build_id, level, counts.at) {
                *exposure.entry(secs).or_default() += n.max(0);
            }
            fixes.count(
                &mut summary,
                &mut per_cve,
                build_id,
                level,
                n.max(0) as usize,
                0,
                counts.at,
                policy,
            );
        }
        summary.hosts_stale = counts.stale.max(0) as usize;
        let cves = fixes.cve_rows(per_cve);
        summary.cves_open = cves.iter().filter(|c| c.hosts_exposed > 0).count();
        // Counts of the server's own kind make the daily record.
        if counts.stale_hours == self.counts.stale_hours() {
            let day = crate::history::Day::of(&counts, &summary, &cves, exposure);
            if let Err(e) = self.record_day(&day).await {
                // The figures asked for are right; only the history misses
                // a day, which the next count will try again.
                tracing::warn!("recording the day's compliance figures: {e}");
            }
        }
        Ok((summary, cves))
    }

    /// The whole compliance report as of now, every host in memory: for
    /// the CLI's table and tests. The HTTP API pages and streams the host
    /// and exposure views instead (`api::admin::reports`).
    pub async fn compliance(&self, policy: Policy) -> Result<Compliance, Error> {
        let now = self.clock.now();
        let hosts = self.hosts().await?;
        let fixes = self.fixes().await?;
        let mut exposures = Vec::new();
        let mut host_rows = Vec::with_capacity(hosts.len());
        let mut summary = empty_summary(now, policy);
        let mut per_cve = fixes.cve_accumulators();
        for h in &hosts {
            let (standing, mut exposed) = fixes.standing(h, now, policy);
            fixes.count(
                &mut summary,
                &mut per_cve,
                &h.build_id,
                h.level,
                1,
                usize::from(standing.stale),
                now,
                policy,
            );
            exposures.append(&mut exposed);
            host_rows.push(standing);
        }
        exposures.sort_by(|a, b| {
            b.days_exposed
                .cmp(&a.days_exposed)
                .then_with(|| a.hostname.cmp(&b.hostname))
                .then_with(|| a.cve.cmp(&b.cve))
        });
        let cves = fixes.cve_rows(per_cve);
        summary.cves_open = cves.iter().filter(|c| c.hosts_exposed > 0).count();
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
        let mut out = csv_line(&self.header);
        for row in &self.rows {
            out.push_str(&csv_line(row));
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

/// One CSV line (CRLF-terminated) of `cells`, as [`Table::to_csv`] writes.
pub fn csv_line(cells: &[impl AsRef<str>]) -> String {
    let cells: Vec<String> = cells.iter().map(|c| csv_cell(c.as_ref())).collect();
    let mut line = cells.join(",");
    line.push_str("\r\n");
    line
}

/// The columns of the exposures view.
pub const EXPOSURE_COLUMNS: [&str; 11] = [
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
];

/// The columns of the hosts view.
pub const HOST_COLUMNS: [&str; 12] = [
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
];

impl Exposure {
    /// Its cells, in [`EXPOSURE_COLUMNS`] order.
    pub fn cells(&self) -> Vec<String> {
        vec![
            self.hostname.clone(),
            self.host_id.clone(),
            self.feed.clone(),
            self.kernel_release.clone(),
            self.build_id.clone(),
            self.applied_level.to_string(),
            self.cve.clone(),
            self.fixed_in_level.to_string(),
            self.fix_published_at.clone(),
            self.days_exposed.to_string(),
            self.breach.to_string(),
        ]
    }
}

impl HostCompliance {
    /// Its cells, in [`HOST_COLUMNS`] order.
    pub fn cells(&self) -> Vec<String> {
        vec![
            self.hostname.clone(),
            self.host_id.clone(),
            self.feed.clone(),
            self.kernel_release.clone(),
            self.applied_level.to_string(),
            opt(self.newest_level),
            self.status.to_string(),
            self.exposed_cves.join(" "),
            self.max_days_exposed.to_string(),
            self.breach.to_string(),
            self.last_checkin.clone().unwrap_or_default(),
            self.stale.to_string(),
        ]
    }
}

fn opt(v: Option<i64>) -> String {
    v.map_or_else(String::new, |v| v.to_string())
}

impl Compliance {
    /// The exposures.
    pub fn exposures_table(&self) -> Table {
        Table {
            header: EXPOSURE_COLUMNS.to_vec(),
            rows: self.exposures.iter().map(Exposure::cells).collect(),
        }
    }

    /// The hosts.
    pub fn hosts_table(&self) -> Table {
        Table {
            header: HOST_COLUMNS.to_vec(),
            rows: self.hosts.iter().map(HostCompliance::cells).collect(),
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
