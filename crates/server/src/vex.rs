//! OpenVEX documents for vulnerability scanners, made with the builder the
//! agent uses too (`protocol::vex`): per host, every CVE a level for its
//! kernel build lists, `fixed` when its applied level includes the fix and
//! `affected` (with the level to apply) when not; for the fleet, one
//! statement per CVE and kernel package hosts run.
//!
//! The fleet's statement about a package may only say `fixed` when every
//! active host running that package has the fix: a scanner applies it to
//! every host with the package, and must not hide a finding on one that
//! lags. It is `affected` otherwise, saying how many hosts lag; the
//! per-host document is exact.

use std::collections::BTreeMap;

use protocol::vex::{self, Builder, Document, Product, VexError};

use crate::clock::rfc3339;
use crate::context::Context;
use crate::error::{conflict, not_found, Error};

/// The documents' author.
pub const AUTHOR: &str = "noreboot-server";

fn tooling() -> String {
    format!("noreboot-server {}", env!("CARGO_PKG_VERSION"))
}

fn vex_error(e: VexError) -> Error {
    match e {
        VexError::Empty(_) => not_found(e.to_string()),
        VexError::NoPackageVersion { .. } => conflict(e.to_string()),
    }
}

impl Context {
    /// The package versions of the kernel builds with published levels
    /// (from their manifests), by build-id.
    async fn package_versions(&self) -> Result<BTreeMap<String, String>, Error> {
        Ok(self
            .kernels()
            .await?
            .into_iter()
            .filter_map(|k| k.version.map(|v| (k.build_id, v)))
            .collect())
    }

    /// The OpenVEX document of one active host (an id, or a hostname one
    /// active host has): as of its last check-in.
    pub async fn host_vex(&self, host: &str) -> Result<Document, Error> {
        let h = self.active_host(host).await?;
        let (fixes, versions) = tokio::try_join!(self.fixes(), self.package_versions())?;
        let product = vex::running_kernel_product(
            &h.kernel_release,
            versions.get(&h.build_id).map(String::as_str),
            &h.kernel_version,
        )
        .map_err(vex_error)?;
        let known = rfc3339(h.last_checkin.unwrap_or(h.registered_at));
        let mut b = Builder::new(AUTHOR, tooling());
        for (cve, level, published_at) in fixes.cve_fixes(&h.build_id) {
            let how = format!(
                "host {} ({}), kernel build-id {}, level {level} first fixes it",
                h.hostname, h.id, h.build_id
            );
            if h.level >= level {
                b.fixed(cve, &product, h.level as u64, &known, &how);
            } else {
                let action = format!(
                    "apply level {level} or later (published {}): release it to feed {:?}, or run `noreboot update` on the host; the host has level {} applied",
                    rfc3339(published_at),
                    h.feed,
                    h.level
                );
                b.affected(cve, &product, level as u64, &known, &how, &action);
            }
        }
        b.build(
            &rfc3339(self.clock.now()),
            &format!(
                "no level is published for host {}'s kernel {} (build-id {})",
                h.hostname, h.kernel_release, h.build_id
            ),
        )
        .map_err(vex_error)
    }

    /// The fleet's OpenVEX document: one statement per CVE and kernel
    /// package active hosts run, from the fleet's counts (see
    /// [`crate::counts`]; the statements' time is the count's).
    pub async fn fleet_vex(&self) -> Result<Document, Error> {
        let (fixes, versions, counts) = tokio::try_join!(
            self.fixes(),
            self.package_versions(),
            self.fleet_counts(self.counts.stale_hours())
        )?;
        // Per package, per CVE: hosts, hosts with the fix, and the levels
        // that first fix it on the builds that run the package.
        #[derive(Default)]
        struct Tally {
            hosts: i64,
            fixed: i64,
            lowest_applied: Option<i64>,
            fix_levels: BTreeMap<i64, Vec<String>>,
        }
        let mut packages: BTreeMap<Product, (i64, BTreeMap<String, Tally>)> = BTreeMap::new();
        let mut unnamed = Vec::new();
        for g in &counts.groups {
            // Hosts on a build without levels still count for their
            // package: another build of it may have a fix they lack.
            let covered = fixes.newest(&g.build_id).is_some();
            let product = match vex::running_kernel_product(
                &g.release,
                versions.get(&g.build_id).map(String::as_str),
                &g.version,
            ) {
                Ok(p) => p,
                Err(e) => {
                    if covered {
                        unnamed.push(e.to_string());
                    }
                    continue;
                }
            };
            let (hosts, per_cve) = packages.entry(product).or_default();
            *hosts += g.hosts;
            for (cve, level, _) in fixes.cve_fixes(&g.build_id) {
                let t = per_cve.entry(cve.to_string()).or_default();
                if g.level >= level {
                    t.fixed += g.hosts;
                    t.lowest_applied = Some(t.lowest_applied.map_or(g.level, |l| l.min(g.level)));
                }
                let builds = t.fix_levels.entry(level).or_default();
                if !builds.contains(&g.build_id) {
                    builds.push(g.build_id.clone());
                }
            }
        }
        let known = rfc3339(counts.at);
        let mut b = Builder::new(AUTHOR, tooling());
        for (product, (hosts, per_cve)) in packages {
            for (cve, mut t) in per_cve {
                // A build of the package without any fix for the CVE
                // counts its hosts as not fixed.
                t.hosts = hosts;
                let levels = t
                    .fix_levels
                    .iter()
                    .map(|(l, builds)| format!("level {l} for build-id {}", builds.join(", ")))
                    .collect::<Vec<_>>()
                    .join("; ");
                let first = t.fix_levels.keys().next().copied().unwrap_or(0);
                if t.fixed == t.hosts {
                    let how = format!(
                        "on all {} active hosts running this package (first fixed in {levels})",
                        t.hosts
                    );
                    let level = t.lowest_applied.unwrap_or(first);
                    b.fixed(&cve, &product, level as u64, &known, &how);
                } else {
                    let how = format!(
                        "{} of {} active hosts running this package lack it (first fixed in {levels})",
                        t.hosts - t.fixed,
                        t.hosts
                    );
                    let action = format!(
                        "apply {levels} on the hosts that lack it (GET /api/v1/admin/reports/compliance lists them); until then use each host's own VEX document (GET /api/v1/admin/hosts/<host>/vex)"
                    );
                    b.affected(&cve, &product, first as u64, &known, &how, &action);
                }
            }
        }
        if !unnamed.is_empty() {
            tracing::warn!(
                "fleet VEX: left out kernels whose package cannot be named: {}",
                unnamed.join("; ")
            );
        }
        b.build(
            &rfc3339(self.clock.now()),
            "no active host runs a kernel build with a published level",
        )
        .map_err(vex_error)
    }
}
