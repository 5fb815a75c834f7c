//! The distribution's package archive, as seen through apt. The [`Archive`]
//! trait is the seam between the package logic (which versions belong
//! together) and the tools that query and download; [`AptArchive`] is the
//! real implementation and shells out to `apt-cache` and `apt-get download`.
//!
//! [`AptArchive::new`] uses the host's apt as it is. [`AptArchive::debian`]
//! gives noreboot its own view of Debian's archive, whatever release the
//! host runs: a private sources list, lists and cache under
//! `<cache>/apt/`, covering [`DEBIAN_SUITES`] (Debian 12 and 13 with their
//! security, updates and backports suites) and verified with the host's
//! `debian-archive-keyring`, which carries both releases' keys. Only the
//! `Dir::Etc::sourcelist`, `Dir::Etc::sourceparts`, `Dir::State` and
//! `Dir::Cache` settings are overridden, so the host's proxies and other
//! apt settings still apply and the host's own lists are never touched.
//!
//! Freshness rule: before its first query, a private view refreshes its
//! lists (`apt-get update` on the private configuration, under the cache's
//! `apt` lock) when they were never fetched, when the sources list changed,
//! or when the last successful refresh is older than [`LISTS_MAX_AGE`] (24
//! hours; override with `$NOREBOOT_APT_MAX_AGE` in seconds, `0` refreshes
//! every time). A refresh that fails while older lists exist is logged and
//! the older lists are used (offline work with cached kernels goes on);
//! with no lists at all the failure is the query's error.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use debversion::Version;

use crate::cache::Cache;
use crate::{Error, Result};

/// Debian suites the private configuration covers: (archive, suite).
/// Debian 12's kernels come from bookworm and bookworm-security (and its
/// 6.12 backport), Debian 13's from trixie, trixie-security and, for 6.16
/// onwards, trixie-backports.
pub const DEBIAN_SUITES: &[(&str, &str)] = &[
    ("debian", "bookworm"),
    ("debian", "bookworm-updates"),
    ("debian", "bookworm-backports"),
    ("debian-security", "bookworm-security"),
    ("debian", "trixie"),
    ("debian", "trixie-updates"),
    ("debian", "trixie-backports"),
    ("debian-security", "trixie-security"),
];

/// How old the private package lists may grow before they are refreshed.
pub const LISTS_MAX_AGE: Duration = Duration::from_secs(24 * 3600);

/// The keyring that signs both Debian 12's and Debian 13's archives.
const KEYRING: &str = "/usr/share/keyrings/debian-archive-keyring.gpg";

/// One version of one package as the archive describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PackageInfo {
    /// Package name.
    pub package: String,
    /// Its version.
    pub version: Version,
    /// Size of the .deb in bytes.
    pub size: u64,
    /// Unpacked size in bytes.
    pub installed_size: u64,
    /// The raw `Depends` field.
    pub depends: String,
}

/// Queries and downloads of a package archive.
pub trait Archive {
    /// Every version the archive knows of each of `packages` (a package it
    /// does not know contributes nothing).
    fn show(&self, packages: &[String]) -> Result<Vec<PackageInfo>>;
    /// Names of all packages that start with `prefix`.
    fn package_names(&self, prefix: &str) -> Result<Vec<String>>;
    /// Downloads `package` at `version` into `dir`, returning the .deb path.
    fn download(&self, package: &str, version: &Version, dir: &Path) -> Result<PathBuf>;
    /// The suite each version of each of `packages` comes from, as
    /// `(package, version, suite)` (e.g. `trixie-backports`); an archive
    /// that cannot tell answers nothing.
    fn suites(&self, packages: &[String]) -> Result<Vec<(String, String, String)>> {
        let _ = packages;
        Ok(Vec::new())
    }
    /// The sources this archive searches, for error messages.
    fn searched(&self) -> String {
        "the package archive".into()
    }
}

/// The archive as apt sees it: the host's configuration, or noreboot's
/// private one ([`AptArchive::debian`]).
#[derive(Debug, Clone, Default)]
pub struct AptArchive {
    /// Extra `-o Key=Value` options for every apt call (e.g. a proxy).
    options: Vec<String>,
    /// The private configuration, when there is one.
    private: Option<std::sync::Arc<Private>>,
}

/// A private configuration's place and freshness state.
#[derive(Debug)]
struct Private {
    dir: PathBuf,
    cache: Cache,
    max_age: Duration,
    /// Set once the lists were checked (and refreshed if stale).
    checked: std::sync::Mutex<bool>,
}

/// The sources list of the private configuration for `mirror` (the Debian
/// archive) and `security` (its security archive).
pub fn debian_sources(mirror: &str, security: &str) -> String {
    let mut text = String::from("# Written by noreboot: its private view of Debian's archive.\n");
    for (archive, suite) in DEBIAN_SUITES {
        let uri = if *archive == "debian-security" {
            security
        } else {
            mirror
        };
        text.push_str(&format!("deb [signed-by={KEYRING}] {uri} {suite} main\n"));
    }
    text
}

impl AptArchive {
    /// apt as configured on this host.
    pub fn new() -> Self {
        Self::default()
    }

    /// noreboot's private view of Debian 12 and 13 (see the module docs),
    /// under `<cache>/apt/`, refreshed before its first query if stale. The mirrors are
    /// `$NOREBOOT_DEBIAN_MIRROR` (default `http://deb.debian.org/debian`)
    /// and `$NOREBOOT_DEBIAN_SECURITY_MIRROR` (default
    /// `http://deb.debian.org/debian-security`).
    pub fn debian(cache: &Cache) -> Result<Self> {
        let env = |k: &str, d: &str| {
            std::env::var(k)
                .ok()
                .filter(|v| !v.trim().is_empty())
                .unwrap_or_else(|| d.to_string())
        };
        let max_age = std::env::var("NOREBOOT_APT_MAX_AGE")
            .ok()
            .and_then(|v| v.trim().parse::<u64>().ok())
            .map(Duration::from_secs)
            .unwrap_or(LISTS_MAX_AGE);
        let sources = debian_sources(
            &env("NOREBOOT_DEBIAN_MIRROR", "http://deb.debian.org/debian"),
            &env(
                "NOREBOOT_DEBIAN_SECURITY_MIRROR",
                "http://deb.debian.org/debian-security",
            ),
        );
        Self::private(cache, &sources, max_age)
    }

    /// A private configuration under `<cache>/apt/` with `sources` as its
    /// sources list, refreshed before its first query if its lists are
    /// older than `max_age`.
    pub fn private(cache: &Cache, sources: &str, max_age: Duration) -> Result<Self> {
        let dir = cache.root().join("apt");
        let archive = Self::private_unrefreshed(cache, &dir, max_age)?;
        let _lock = cache.lock("apt")?;
        let list = dir.join("sources.list");
        let current = std::fs::read_to_string(&list).ok();
        if current.as_deref() != Some(sources) {
            std::fs::write(&list, sources).map_err(|e| Error::io("write", &list, e))?;
            // New sources: the old stamp says nothing about them.
            let _ = std::fs::remove_file(dir.join("updated"));
        }
        Ok(archive)
    }

    fn private_unrefreshed(cache: &Cache, dir: &Path, max_age: Duration) -> Result<Self> {
        for d in [
            dir.join("sources.list.d"),
            dir.join("state/lists/partial"),
            dir.join("cache/archives/partial"),
        ] {
            std::fs::create_dir_all(&d).map_err(|e| Error::io("create", &d, e))?;
        }
        let opt = |k: &str, p: PathBuf| format!("{k}={}", p.display());
        Ok(AptArchive {
            options: vec![
                opt("Dir::Etc::sourcelist", dir.join("sources.list")),
                opt("Dir::Etc::sourceparts", dir.join("sources.list.d")),
                opt("Dir::State", dir.join("state")),
                opt("Dir::Cache", dir.join("cache")),
                "Acquire::Languages=none".into(),
            ],
            private: Some(std::sync::Arc::new(Private {
                dir: dir.to_path_buf(),
                cache: cache.clone(),
                max_age,
                checked: std::sync::Mutex::new(false),
            })),
        })
    }

    /// Applies the freshness rule (module docs) once per view.
    fn ensure_fresh(&self) -> Result<()> {
        let Some(p) = &self.private else {
            return Ok(());
        };
        let mut checked = p.checked.lock().unwrap_or_else(|e| e.into_inner());
        if *checked {
            return Ok(());
        }
        let _lock = p.cache.lock("apt")?;
        match self.lists_age() {
            Some(age) if age < p.max_age => {}
            before => {
                if let Err(e) = self.refresh_locked() {
                    let Some(age) = before else {
                        return Err(e);
                    };
                    tracing::warn!(
                        error = %e,
                        hours = age.as_secs() / 3600,
                        "refreshing the private apt lists failed; using the older lists"
                    );
                }
            }
        }
        *checked = true;
        Ok(())
    }

    /// How long ago the private lists were last refreshed (`None` for the
    /// host's apt, or when they never were).
    pub fn lists_age(&self) -> Option<Duration> {
        let stamp = self.private.as_ref()?.dir.join("updated");
        let modified = std::fs::metadata(stamp).ok()?.modified().ok()?;
        Some(modified.elapsed().unwrap_or_default())
    }

    /// The sources apt searches: the private configuration's suites, or
    /// "the host's apt sources".
    pub fn sources(&self) -> String {
        match &self.private {
            None => "the host's apt sources".into(),
            Some(_) => DEBIAN_SUITES
                .iter()
                .map(|(_, s)| *s)
                .collect::<Vec<_>>()
                .join(", "),
        }
    }

    /// Runs `apt-get update` on the private configuration now (the host's
    /// is left to its administrator: this does nothing for it).
    pub fn refresh(&self) -> Result<()> {
        let Some(p) = &self.private else {
            return Ok(());
        };
        let _lock = p.cache.lock("apt")?;
        self.refresh_locked()?;
        *p.checked.lock().unwrap_or_else(|e| e.into_inner()) = true;
        Ok(())
    }

    fn refresh_locked(&self) -> Result<()> {
        let Some(p) = &self.private else {
            return Ok(());
        };
        let dir = &p.dir;
        let started = std::time::Instant::now();
        let mut cmd = self.command("apt-get");
        // Without --error-on=any, apt-get update exits 0 when indexes fail
        // to download, which would stamp unfetched lists as fresh.
        cmd.arg("-q").arg("--error-on=any").arg("update");
        run(cmd, "apt")?;
        let stamp = dir.join("updated");
        std::fs::write(&stamp, b"").map_err(|e| Error::io("write", &stamp, e))?;
        tracing::info!(
            seconds = started.elapsed().as_secs_f64(),
            "private apt lists refreshed"
        );
        Ok(())
    }

    /// Adds an apt configuration option (`Key=Value`) to every call.
    pub fn with_option(mut self, option: impl Into<String>) -> Self {
        self.options.push(option.into());
        self
    }

    fn command(&self, program: &str) -> Command {
        let mut cmd = Command::new(program);
        for o in &self.options {
            cmd.arg("-o").arg(o);
        }
        cmd
    }
}

/// Runs `cmd`, mapping a missing program and apt's network complaints to
/// their own errors.
fn run(mut cmd: Command, tool_package: &str) -> Result<std::process::Output> {
    let line = format!("{cmd:?}").replace('"', "");
    let out = cmd
        .output()
        .map_err(|e| Error::spawn(&cmd, tool_package, e))?;
    if !out.status.success() {
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        return Err(classify_apt_failure(&line, out.status.to_string(), &stderr));
    }
    Ok(out)
}

/// Turns apt's stderr into the error a user can act on.
pub(crate) fn classify_apt_failure(command: &str, status: String, stderr: &str) -> Error {
    const NETWORK: &[&str] = &[
        "Could not connect",
        "Temporary failure resolving",
        "Could not resolve",
        "Connection failed",
        "Connection timed out",
        "Unable to connect",
        "Network is unreachable",
        "No route to host",
        "Failed to fetch",
    ];
    let relevant: Vec<&str> = stderr
        .lines()
        .filter(|l| !l.starts_with("W: Download is performed unsandboxed"))
        .collect();
    let text = relevant.join("\n");
    if text.contains("No space left on device") {
        return Error::DiskFull {
            path: PathBuf::from(
                command
                    .split_whitespace()
                    .last()
                    .unwrap_or("(download directory)"),
            ),
            needed: 0,
            available: 0,
        };
    }
    if NETWORK.iter().any(|n| text.contains(n)) {
        let detail = relevant
            .iter()
            .find(|l| NETWORK.iter().any(|n| l.contains(n)))
            .map(|l| l.trim().to_string())
            .unwrap_or_else(|| text.clone());
        return Error::ArchiveUnreachable {
            command: command.to_string(),
            detail,
        };
    }
    let tail: Vec<&str> = relevant.iter().rev().take(8).rev().copied().collect();
    Error::Command {
        command: command.to_string(),
        status,
        stderr: tail.join("\n"),
    }
}

impl Archive for AptArchive {
    fn searched(&self) -> String {
        self.sources()
    }

    fn suites(&self, packages: &[String]) -> Result<Vec<(String, String, String)>> {
        if packages.is_empty() {
            return Ok(Vec::new());
        }
        self.ensure_fresh()?;
        let mut cmd = self.command("apt-cache");
        cmd.arg("madison").args(packages);
        // Like `show`, madison complains about unknown names but still
        // answers for the others.
        let out = cmd.output().map_err(|e| Error::spawn(&cmd, "apt", e))?;
        Ok(parse_madison(&String::from_utf8_lossy(&out.stdout)))
    }

    fn show(&self, packages: &[String]) -> Result<Vec<PackageInfo>> {
        if packages.is_empty() {
            return Ok(Vec::new());
        }
        self.ensure_fresh()?;
        let mut cmd = self.command("apt-cache");
        cmd.arg("show").arg("--all-versions").args(packages);
        // apt-cache exits 100 when any one name is unknown but still prints
        // the others, so its output is read whatever the status.
        let out = cmd.output().map_err(|e| Error::spawn(&cmd, "apt", e))?;
        parse_stanzas(&String::from_utf8_lossy(&out.stdout))
    }

    fn package_names(&self, prefix: &str) -> Result<Vec<String>> {
        self.ensure_fresh()?;
        let mut cmd = self.command("apt-cache");
        cmd.arg("pkgnames").arg(prefix);
        let out = run(cmd, "apt")?;
        let mut names: Vec<String> = String::from_utf8_lossy(&out.stdout)
            .lines()
            .map(|l| l.trim().to_string())
            .filter(|l| !l.is_empty())
            .collect();
        if names.is_empty() {
            // No match may mean apt never downloaded any package index;
            // installed packages alone do not make an archive.
            let mut probe = self.command("apt-get");
            probe
                .arg("indextargets")
                .arg("--format")
                .arg("$(FILENAME)")
                .arg("Created-By: Packages");
            let targets = run(probe, "apt")?;
            if targets.stdout.iter().all(|b| b.is_ascii_whitespace()) {
                let remedy = match &self.private {
                    Some(p) => {
                        // Lists removed behind a fresh stamp: the stamp
                        // goes too, so the next run downloads them.
                        let _ = std::fs::remove_file(p.dir.join("updated"));
                        format!(
                            "noreboot's private package lists in {} are empty; the next run downloads them again (the archive must be reachable)",
                            p.dir.join("state/lists").display()
                        )
                    }
                    None => "run `apt-get update` first (as root)".to_string(),
                };
                return Err(Error::AptListsEmpty { remedy });
            }
        }
        names.sort();
        Ok(names)
    }

    fn download(&self, package: &str, version: &Version, dir: &Path) -> Result<PathBuf> {
        self.ensure_fresh()?;
        // A fresh directory per download makes the result unambiguous,
        // whatever apt does to the file name (epochs become %3a).
        let staging = dir.join(format!(".download-{package}"));
        let _ = std::fs::remove_dir_all(&staging);
        std::fs::create_dir_all(&staging).map_err(|e| Error::io("create", &staging, e))?;
        let mut cmd = self.command("apt-get");
        // Downloading as root into a directory the _apt user cannot write
        // otherwise warns; the sandbox buys nothing for a plain download.
        cmd.arg("-o")
            .arg("APT::Sandbox::User=root")
            .arg("-q")
            .arg("download")
            .arg(format!("{package}={version}"))
            .current_dir(&staging);
        let line = format!(
            "apt-get download {package}={version} in {}",
            staging.display()
        );
        let out = cmd.output().map_err(|e| Error::spawn(&cmd, "apt", e))?;
        if !out.status.success() {
            let _ = std::fs::remove_dir_all(&staging);
            let stderr = String::from_utf8_lossy(&out.stderr);
            return Err(
                match classify_apt_failure(&line, out.status.to_string(), &stderr) {
                    Error::DiskFull { .. } => Error::DiskFull {
                        path: dir.to_path_buf(),
                        needed: 0,
                        available: crate::cache::free_space(dir).unwrap_or(0),
                    },
                    other => other,
                },
            );
        }
        let mut debs: Vec<PathBuf> = std::fs::read_dir(&staging)
            .map_err(|e| Error::io("list", &staging, e))?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|x| x == "deb"))
            .collect();
        if debs.len() != 1 {
            return Err(Error::Command {
                command: line,
                status: "succeeded".into(),
                stderr: format!("expected one .deb, found {}", debs.len()),
            });
        }
        let src = debs.remove(0);
        let dest = dir.join(src.file_name().unwrap_or_default());
        std::fs::rename(&src, &dest).map_err(|e| Error::io("move", &src, e))?;
        let _ = std::fs::remove_dir_all(&staging);
        Ok(dest)
    }
}

/// Parses `apt-cache madison` lines (`package | version | uri suite/component
/// arch Packages`) into `(package, version, suite)`.
pub fn parse_madison(text: &str) -> Vec<(String, String, String)> {
    text.lines()
        .filter_map(|l| {
            let mut f = l.split('|').map(str::trim);
            let package = f.next()?;
            let version = f.next()?;
            let suite = f.next()?.split_whitespace().nth(1)?.split('/').next()?;
            Some((package.to_string(), version.to_string(), suite.to_string()))
        })
        .collect()
}

/// Parses `apt-cache show` output: RFC 822 style stanzas separated by
/// blank lines. Stanzas without a parsable version are an error, since they
/// would silently shrink the set of candidates.
pub fn parse_stanzas(text: &str) -> Result<Vec<PackageInfo>> {
    let mut out = Vec::new();
    for stanza in text.split("\n\n") {
        if stanza.trim().is_empty() {
            continue;
        }
        let field = |name: &str| -> Option<&str> {
            stanza.lines().find_map(|l| {
                l.strip_prefix(name)
                    .and_then(|r| r.strip_prefix(':'))
                    .map(str::trim)
            })
        };
        let Some(package) = field("Package") else {
            continue;
        };
        let raw_version = field("Version").unwrap_or("");
        let version: Version = raw_version.parse().map_err(|_| Error::Command {
            command: "apt-cache show".into(),
            status: "unparsable output".into(),
            stderr: format!("package {package} has version {raw_version:?}"),
        })?;
        let num = |name: &str| field(name).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
        out.push(PackageInfo {
            package: package.to_string(),
            version,
            size: num("Size"),
            installed_size: num("Installed-Size") * 1024,
            depends: field("Depends").unwrap_or("").to_string(),
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    const SHOW: &str = "Package: linux-headers-6.1.0-47-cloud-amd64
Source: linux
Version: 6.1.170-3
Installed-Size: 2607
Depends: linux-headers-6.1.0-47-common (= 6.1.170-3), linux-kbuild-6.1 (>= 6.1.170-3), linux-compiler-gcc-12-x86
Description: Header files for Linux 6.1.0-47-cloud-amd64
 This package provides the architecture-specific kernel header files.
Size: 1407332

Package: linux-kbuild-6.1
Version: 6.1.192-3
Installed-Size: 5000
Size: 1567812
";

    #[test]
    fn parses_apt_cache_show() {
        let p = parse_stanzas(SHOW).unwrap();
        assert_eq!(p.len(), 2);
        assert_eq!(p[0].package, "linux-headers-6.1.0-47-cloud-amd64");
        assert_eq!(p[0].version.to_string(), "6.1.170-3");
        assert_eq!(p[0].size, 1407332);
        assert_eq!(p[0].installed_size, 2607 * 1024);
        assert!(p[0].depends.contains("linux-kbuild-6.1 (>= 6.1.170-3)"));
        assert_eq!(p[1].version.to_string(), "6.1.192-3");
    }

    #[test]
    fn bad_version_in_output_is_an_error() {
        let err = parse_stanzas("Package: x\nVersion: !!\n").unwrap_err();
        assert!(err.to_string().contains("package x"), "{err}");
    }

    #[test]
    fn parses_madison_and_writes_the_private_sources() {
        let m = parse_madison(
            "linux-image-7.3.4+deb13-cloud-amd64 | 7.3.4-1~bpo13+1 | http://deb.debian.org/debian trixie-backports/main amd64 Packages\n\
             linux-image-6.1.0-47-cloud-amd64 |  6.1.170-3 | http://deb.debian.org/debian bookworm/main amd64 Packages\n\
             garbage\n",
        );
        assert_eq!(m.len(), 2);
        assert_eq!(m[0].1, "7.3.4-1~bpo13+1");
        assert_eq!(m[0].2, "trixie-backports");
        assert_eq!(m[1].2, "bookworm");
        let s = debian_sources("http://m/debian", "http://m/sec");
        assert!(s.contains(&format!(
            "deb [signed-by={KEYRING}] http://m/sec trixie-security main"
        )));
        assert!(s.contains("http://m/debian trixie-backports main"));
        assert!(s.contains("http://m/debian bookworm main"));
        assert_eq!(s.lines().filter(|l| l.starts_with("deb ")).count(), 8);
    }

    #[test]
    fn classifies_network_failures() {
        let e = classify_apt_failure(
            "apt-get download x",
            "exit status: 100".into(),
            "W: Download is performed unsandboxed as root\nErr:1 http://deb.debian.org/debian bookworm/main amd64 x amd64 1\n  Could not connect to 127.0.0.1:9 (127.0.0.1). - connect (111: Connection refused)\nE: Failed to fetch http://...",
        );
        assert!(matches!(e, Error::ArchiveUnreachable { .. }), "{e}");
        assert!(e.to_string().contains("Could not connect"), "{e}");
        let e = classify_apt_failure(
            "c",
            "1".into(),
            "E: Write error - write (28: No space left on device)",
        );
        assert!(matches!(e, Error::DiskFull { .. }), "{e}");
        let e = classify_apt_failure("c", "1".into(), "E: Unable to locate package foo");
        assert!(matches!(e, Error::Command { .. }), "{e}");
    }
}
