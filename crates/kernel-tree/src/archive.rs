//! The distribution's package archive, as seen through apt. The [`Archive`]
//! trait is the seam between the package logic (which versions belong
//! together) and the tools that query and download; [`AptArchive`] is the
//! real implementation and shells out to `apt-cache` and `apt-get download`,
//! so the host's sources, proxies and keys apply unchanged.

use std::path::{Path, PathBuf};
use std::process::Command;

use debversion::Version;

use crate::{Error, Result};

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
}

/// The host's apt.
#[derive(Debug, Clone, Default)]
pub struct AptArchive {
    /// Extra `-o Key=Value` options for every apt call (e.g. a proxy).
    options: Vec<String>,
}

impl AptArchive {
    /// apt as configured on this host.
    pub fn new() -> Self {
        Self::default()
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
    fn show(&self, packages: &[String]) -> Result<Vec<PackageInfo>> {
        if packages.is_empty() {
            return Ok(Vec::new());
        }
        let mut cmd = self.command("apt-cache");
        cmd.arg("show").arg("--all-versions").args(packages);
        // apt-cache exits 100 when any one name is unknown but still prints
        // the others, so its output is read whatever the status.
        let out = cmd.output().map_err(|e| Error::spawn(&cmd, "apt", e))?;
        parse_stanzas(&String::from_utf8_lossy(&out.stdout))
    }

    fn package_names(&self, prefix: &str) -> Result<Vec<String>> {
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
                return Err(Error::AptListsEmpty);
            }
        }
        names.sort();
        Ok(names)
    }

    fn download(&self, package: &str, version: &Version, dir: &Path) -> Result<PathBuf> {
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
