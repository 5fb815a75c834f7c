//! How the admin commands print their results: each result type states
//! its text form once ([`Render::text`]: lines, or a [`Table`]), and
//! [`Output::print`] prints that, or with `--json` the result itself,
//! serialized. The few results whose printing depends on more than their
//! type (a pin, a hold and an unpin all answer a `FeedState`; the report's
//! view; a token's revocation, which has no JSON) are types of their own
//! here.

use serde::Serialize;
use server::admin::packages::AgentPackage;
use server::admin::{Coverage, FeedState, NewKey, NewToken, Promoted, Published, Rollback};
use server::admin::{Moved, Retired, RetiredHost, Tagged};
use server::clock::rfc3339;
use server::model::{
    AdminToken, AuditEntry, Feed, Host, Kernel, Level, RegistrationKey, ReportedBuild,
};
use server::report::{Compliance, Table};
use server::transfer::{Exported, Imported, Outcome};

use super::admin::ReportKind;

/// A result as a command prints it.
pub trait Output {
    /// Prints the result: its text form, or (`json`) its JSON.
    fn print(&self, json: bool) -> anyhow::Result<()>;
}

/// The text form of a result whose JSON form is its serialization.
pub trait Render: Serialize {
    /// What the command prints without `--json`, newline-terminated.
    fn text(&self) -> String;
}

impl<T: Render> Output for T {
    fn print(&self, json: bool) -> anyhow::Result<()> {
        if json {
            println!("{}", serde_json::to_string_pretty(self)?);
        } else {
            print!("{}", self.text());
        }
        Ok(())
    }
}

/// An OpenVEX document: JSON with or without `--json`, for scanners.
pub struct VexDocument(pub protocol::vex::Document);

impl Output for VexDocument {
    fn print(&self, _json: bool) -> anyhow::Result<()> {
        println!("{}", serde_json::to_string_pretty(&self.0)?);
        Ok(())
    }
}

/// A file the command wrote.
#[derive(Debug, Serialize)]
pub struct Wrote {
    /// Where.
    pub path: String,
    /// Its size.
    pub bytes: usize,
}

impl Render for Wrote {
    fn text(&self) -> String {
        format!("wrote {} ({} bytes)\n", self.path, self.bytes)
    }
}

/// A level, or `-` for none.
fn opt(v: Option<i64>) -> String {
    v.map_or_else(|| "-".to_string(), |l| l.to_string())
}

/// `active`, or when it was revoked.
fn revoked(at: Option<i64>) -> String {
    at.map_or("active".to_string(), |t| format!("revoked {}", rfc3339(t)))
}

impl Render for Published {
    fn text(&self) -> String {
        let p = self;
        let cves = if p.cves.is_empty() {
            "-".into()
        } else {
            p.cves.join(" ")
        };
        let released = if p.feeds.is_empty() {
            format!(
                "released to no feed yet: `promote --kernel {} --level {} --to FEED`",
                p.build_id, p.level
            )
        } else {
            format!("released to: {}", p.feeds.join(" "))
        };
        format!(
            "published {} level {} for {} ({}){}\nbundle sha256 {} ({} bytes)\nCVEs: {cves}\n{released}\n",
            p.name,
            p.level,
            p.release,
            p.build_id,
            if p.new_kernel { ", a new kernel" } else { "" },
            p.sha256,
            p.size,
        )
    }
}

impl Render for Feed {
    fn text(&self) -> String {
        format!(
            "created feed {} (delay {} h)\n",
            self.name, self.delay_hours
        )
    }
}

impl Render for Vec<Feed> {
    fn text(&self) -> String {
        self.iter()
            .map(|f| format!("{:<20} delay {:>4} h\n", f.name, f.delay_hours))
            .collect()
    }
}

impl Render for Promoted {
    fn text(&self) -> String {
        let p = self;
        if p.already {
            format!(
                "level {} of {} was already released to {}\n",
                p.level, p.build_id, p.feed
            )
        } else {
            format!(
                "released level {} of {} to {}\n",
                p.level, p.build_id, p.feed
            )
        }
    }
}

/// A feed's state after `pin`.
#[derive(Serialize)]
#[serde(transparent)]
pub struct Pinned(pub FeedState);

impl Render for Pinned {
    fn text(&self) -> String {
        let s = &self.0;
        format!(
            "feed {} pinned to level {} for {}\n",
            s.feed,
            opt(s.level),
            s.build_id
        )
    }
}

/// A feed's state after `hold`.
#[derive(Serialize)]
#[serde(transparent)]
pub struct Held(pub FeedState);

impl Render for Held {
    fn text(&self) -> String {
        let s = &self.0;
        format!(
            "feed {} held at level {} for {}\n",
            s.feed,
            opt(s.level),
            s.build_id
        )
    }
}

/// A feed's state after `unpin`.
#[derive(Serialize)]
#[serde(transparent)]
pub struct Unpinned(pub FeedState);

impl Render for Unpinned {
    fn text(&self) -> String {
        let s = &self.0;
        format!(
            "feed {} follows its releases for {} again: serving level {}\n",
            s.feed,
            s.build_id,
            opt(s.serving)
        )
    }
}

impl Render for Rollback {
    fn text(&self) -> String {
        let r = self;
        format!(
            "feed {} rolled back from level {} to {} for {} (withdrawn: {:?}); hosts move at their next check-in\n",
            r.feed,
            r.from,
            opt(r.to),
            r.build_id,
            r.withdrawn
        )
    }
}

impl Render for server::webhooks::NewWebhook {
    fn text(&self) -> String {
        format!(
            "webhook {} to {} for {} (signing secret, shown once):\n{}\n",
            self.webhook.id,
            self.webhook.url,
            self.webhook.events.join(", "),
            self.secret
        )
    }
}

/// `webhook delete` answers the webhook deleted.
impl Render for server::webhooks::Webhook {
    fn text(&self) -> String {
        format!("deleted webhook {} to {}\n", self.id, self.url)
    }
}

impl Render for Vec<server::webhooks::Webhook> {
    fn text(&self) -> String {
        self.iter()
            .map(|w| {
                format!(
                    "{}  {}  {}  secret {}\n",
                    w.id,
                    w.url,
                    w.events.join(","),
                    w.secret_hint
                )
            })
            .collect()
    }
}

impl Render for NewKey {
    fn text(&self) -> String {
        format!(
            "registration key {} for feed {} (shown once):\n{}\n",
            self.id, self.feed, self.secret
        )
    }
}

/// `key revoke` answers the key as revoked.
impl Render for RegistrationKey {
    fn text(&self) -> String {
        format!("revoked registration key {}\n", self.id)
    }
}

impl Render for Vec<RegistrationKey> {
    fn text(&self) -> String {
        self.iter()
            .map(|k| {
                format!(
                    "{}  {:<12} {:<28} {}\n",
                    k.id,
                    k.feed,
                    revoked(k.revoked_at),
                    k.note
                )
            })
            .collect()
    }
}

impl Render for AgentPackage {
    fn text(&self) -> String {
        format!(
            "added {} {} ({}) to the repository: /apt/{}\n",
            self.package, self.version, self.architecture, self.filename
        )
    }
}

impl Render for Vec<AgentPackage> {
    fn text(&self) -> String {
        self.iter()
            .map(|p| {
                format!(
                    "{:<20} {:<6} {:>10}  {}  {}\n",
                    p.version,
                    p.architecture,
                    p.size,
                    rfc3339(p.uploaded_at),
                    p.uploaded_by
                )
            })
            .collect()
    }
}

/// `agent-package remove`: what left the repository.
#[derive(Serialize)]
#[serde(transparent)]
pub struct RemovedPackages(pub Vec<AgentPackage>);

impl Render for RemovedPackages {
    fn text(&self) -> String {
        self.0
            .iter()
            .map(|p| {
                format!(
                    "removed {} {} ({}) from the repository\n",
                    p.package, p.version, p.architecture
                )
            })
            .collect()
    }
}

/// `apt-key`: the repository key.
#[derive(Serialize)]
pub struct AptKey {
    /// Its fingerprint.
    pub fingerprint: String,
    /// The armored public key.
    pub public_key: String,
}

impl Render for AptKey {
    fn text(&self) -> String {
        format!("fingerprint {}\n{}", self.fingerprint, self.public_key)
    }
}

impl Render for NewToken {
    fn text(&self) -> String {
        format!(
            "{} token {} (shown once):\n{}\n",
            self.role.as_str(),
            self.name,
            self.token
        )
    }
}

/// A revoked token, by name. Revoking answers nothing else, so with
/// `--json` there is nothing to print.
pub struct RevokedToken(pub String);

impl Output for RevokedToken {
    fn print(&self, json: bool) -> anyhow::Result<()> {
        if !json {
            println!("revoked token {}", self.0);
        }
        Ok(())
    }
}

impl Render for Vec<AdminToken> {
    fn text(&self) -> String {
        self.iter()
            .map(|t| format!("{:<24} {:<10} {}\n", t.name, t.role, revoked(t.revoked_at)))
            .collect()
    }
}

impl Render for Vec<Host> {
    fn text(&self) -> String {
        self.iter()
            .map(|h| {
                format!(
                    "{}  {:<24} {:<10} {:<24} level {:<3} last check-in {}\n",
                    h.id,
                    h.hostname,
                    h.feed,
                    h.kernel_release,
                    h.level,
                    h.last_checkin.map_or("never".into(), rfc3339)
                )
            })
            .collect()
    }
}

impl Render for Vec<RetiredHost> {
    fn text(&self) -> String {
        self.iter()
            .map(|r| {
                format!(
                    "{}  {:<24} {:<10} {:<24} level {:<3} retired {} by {}\n",
                    r.host.id,
                    r.host.hostname,
                    r.host.feed,
                    r.host.kernel_release,
                    r.host.level,
                    rfc3339(r.retired_at),
                    r.retired_by
                )
            })
            .collect()
    }
}

impl Render for Moved {
    fn text(&self) -> String {
        let m = self;
        if m.from == m.to {
            format!(
                "host {} ({}) is on feed {} already\n",
                m.hostname, m.id, m.to
            )
        } else {
            format!(
                "moved host {} ({}) from feed {} to {}; its next check-in gets level {}\n",
                m.hostname,
                m.id,
                m.from,
                m.to,
                opt(m.serving)
            )
        }
    }
}

impl Render for Tagged {
    fn text(&self) -> String {
        format!(
            "host {} ({}) tags: [{}] (were [{}])\n",
            self.hostname,
            self.id,
            self.to.join(" "),
            self.from.join(" ")
        )
    }
}

impl Render for Retired {
    fn text(&self) -> String {
        format!(
            "retired host {} ({}) of feed {}: its token no longer works; reports kept: {}\n",
            self.hostname, self.id, self.feed, self.reports
        )
    }
}

impl Render for Vec<Kernel> {
    fn text(&self) -> String {
        self.iter()
            .map(|k| {
                format!(
                    "{:<28} {}  {} levels, newest {}\n",
                    k.release,
                    k.build_id,
                    k.levels,
                    opt(k.newest_level)
                )
            })
            .collect()
    }
}

/// The builds hosts run (`kernels --reported` or `--uncovered`).
#[derive(Serialize)]
#[serde(transparent)]
pub struct Builds {
    /// Which were asked for.
    #[serde(skip)]
    pub which: Coverage,
    /// The builds.
    pub builds: Vec<ReportedBuild>,
}

impl Render for Builds {
    fn text(&self) -> String {
        if !self.builds.is_empty() {
            return builds_table(&self.builds, self.which).to_text();
        }
        let none = match self.which {
            Coverage::Uncovered => "every kernel build active hosts run has a published level",
            Coverage::All => "no active hosts",
        };
        format!("{none}\n")
    }
}

/// The builds hosts run as a table, with their newest levels unless only
/// uncovered ones (no level: the column would say `none` throughout).
fn builds_table(builds: &[ReportedBuild], which: Coverage) -> Table {
    let mut header = vec!["release", "version", "build id", "hosts"];
    if which == Coverage::All {
        header.push("newest level");
    }
    let rows = builds
        .iter()
        .map(|b| {
            let mut row = vec![
                b.release.clone(),
                b.version.clone(),
                b.build_id.clone(),
                b.hosts.to_string(),
            ];
            if which == Coverage::All {
                row.push(b.newest_level.map_or("none".into(), |l| l.to_string()));
            }
            row
        })
        .collect();
    Table { header, rows }
}

impl Render for Vec<Level> {
    fn text(&self) -> String {
        self.iter()
            .map(|l| {
                let cves: Vec<&str> = l.cves.iter().map(|c| c.cve.as_str()).collect();
                format!(
                    "{} level {:<3} {:<28} {}  feeds [{}]  CVEs [{}]\n",
                    l.build_id,
                    l.level,
                    l.name,
                    rfc3339(l.published_at),
                    l.feeds.join(" "),
                    cves.join(" ")
                )
            })
            .collect()
    }
}

/// One view of the compliance report, as a table, CSV or JSON.
pub struct ReportView {
    /// Which view.
    pub kind: ReportKind,
    /// CSV instead of a table.
    pub csv: bool,
    /// The report.
    pub report: Compliance,
}

impl Output for ReportView {
    fn print(&self, json: bool) -> anyhow::Result<()> {
        let c = &self.report;
        if json {
            // The admin API's bodies for the same views, but for the
            // summary alone: printed as itself, in its fields' order, where
            // the API's `json!` value is a map in key order.
            let body = match self.kind {
                ReportKind::Compliance => serde_json::to_string_pretty(
                    &serde_json::json!({"summary": c.summary, "exposures": c.exposures}),
                ),
                ReportKind::Hosts => serde_json::to_string_pretty(
                    &serde_json::json!({"summary": c.summary, "hosts": c.hosts}),
                ),
                ReportKind::Cves => serde_json::to_string_pretty(
                    &serde_json::json!({"summary": c.summary, "cves": c.cves}),
                ),
                ReportKind::Summary => serde_json::to_string_pretty(&c.summary),
            }?;
            println!("{body}");
            return Ok(());
        }
        let table = match self.kind {
            ReportKind::Compliance => c.exposures_table(),
            ReportKind::Hosts => c.hosts_table(),
            ReportKind::Cves => c.cves_table(),
            ReportKind::Summary => c.summary_table(),
        };
        if self.csv {
            print!("{}", table.to_csv());
            return Ok(());
        }
        if let ReportKind::Summary = self.kind {
            // One row reads better as a list.
            for (k, v) in table.header.iter().zip(&table.rows[0]) {
                println!("{k:<18} {v}");
            }
            return Ok(());
        }
        let s = &c.summary;
        // A header over no rows says nothing the summary line does not.
        if !table.rows.is_empty() {
            print!("{}", table.to_text());
        }
        println!(
            "{} hosts: {} protected, {} exposed, {} unsupported, {} breaching the {}-day policy, {} stale",
            s.hosts_total,
            s.hosts_protected,
            s.hosts_exposed,
            s.hosts_unsupported,
            s.hosts_breaching,
            s.policy_days,
            s.hosts_stale
        );
        Ok(())
    }
}

impl Render for Exported {
    fn text(&self) -> String {
        let x = self;
        let mut out: String = x
            .bundles
            .iter()
            .map(|b| {
                format!(
                    "{}  {} {} level {:<3} feeds [{}]\n",
                    b.file,
                    b.kernel.release,
                    b.kernel.build_id,
                    b.level,
                    b.feeds.join(" ")
                )
            })
            .collect();
        if !x.removed.is_empty() {
            out += &format!(
                "removed from the previous export: {}\n",
                x.removed.join(" ")
            );
        }
        out += &format!(
            "exported {} bundle{} to {} (index.json last)\n",
            x.bundles.len(),
            if x.bundles.len() == 1 { "" } else { "s" },
            x.dir
        );
        out
    }
}

impl Render for Imported {
    fn text(&self) -> String {
        let i = self;
        let mut out: String = i
            .levels
            .iter()
            .map(|l| {
                let what = match l.outcome {
                    Outcome::Published => "published",
                    Outcome::Present => "present  ",
                    Outcome::Superseded => "skipped  ",
                };
                let note = match l.outcome {
                    Outcome::Superseded => "  (a newer level is published here)".to_string(),
                    _ if l.released.is_empty() => String::new(),
                    _ => format!("  released to {}", l.released.join(" ")),
                };
                format!(
                    "{what} {} {} level {} ({}){note}\n",
                    l.release, l.build_id, l.level, l.file
                )
            })
            .collect();
        if !i.feeds_missing.is_empty() {
            out += &format!(
                "feeds in the index that do not exist here (nothing released to them): {}\n",
                i.feeds_missing.join(" ")
            );
        }
        let n = |o: Outcome| i.levels.iter().filter(|l| l.outcome == o).count();
        out += &format!(
            "imported {}: {} published, {} present already, {} skipped\n",
            i.dir,
            n(Outcome::Published),
            n(Outcome::Present),
            n(Outcome::Superseded)
        );
        out
    }
}

impl Render for Vec<AuditEntry> {
    fn text(&self) -> String {
        self.iter()
            .map(|a| {
                format!(
                    "{} {:<16} {:<14} {} {}\n",
                    rfc3339(a.at),
                    a.actor,
                    a.action,
                    a.target,
                    a.detail
                )
            })
            .collect()
    }
}
