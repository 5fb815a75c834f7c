//! Which kernel releases the archive offers right now, and which one to use.
//! Debian drops old ABIs from the archive over time, so a pinned release
//! may vanish; selection then falls back to the oldest complete release of
//! the same series and says so, instead of letting a test skip silently.

use std::fmt;
use std::path::{Path, PathBuf};

use debversion::Version;

use crate::archive::{Archive, PackageInfo};
use crate::cache::Cache;
use crate::plan::plan;
use crate::release::Release;
use crate::workspace::Workspace;
use crate::{Error, Result};

/// The release the project pins for its tests and demo: Debian 12's
/// 6.1.170-3 cloud kernel, the base of the fixes the factory is tested on.
pub const PINNED_RELEASE: &str = "6.1.0-47-cloud-amd64";

/// Image package names of `flavour` that are real releases (not meta
/// packages such as `linux-image-cloud-amd64`), sorted by name.
pub fn release_names(archive: &dyn Archive, flavour: &str) -> Result<Vec<Release>> {
    let suffix = format!("-{flavour}");
    Ok(archive
        .package_names("linux-image-")?
        .iter()
        .filter_map(|n| n.strip_prefix("linux-image-"))
        .filter(|n| n.ends_with(&suffix))
        .filter_map(|n| n.parse::<Release>().ok())
        .filter(|r| r.flavour() == flavour)
        .collect())
}

/// An archive view answering `show` from one bulk query.
struct Snapshot(Vec<PackageInfo>);

impl Archive for Snapshot {
    fn show(&self, packages: &[String]) -> Result<Vec<PackageInfo>> {
        Ok(self
            .0
            .iter()
            .filter(|i| packages.contains(&i.package))
            .cloned()
            .collect())
    }
    fn package_names(&self, prefix: &str) -> Result<Vec<String>> {
        let mut v: Vec<String> = self
            .0
            .iter()
            .filter(|i| i.package.starts_with(prefix))
            .map(|i| i.package.clone())
            .collect();
        v.dedup();
        Ok(v)
    }
    fn download(&self, package: &str, _: &Version, _: &Path) -> Result<PathBuf> {
        Err(Error::Command {
            command: format!("download {package}"),
            status: "not supported".into(),
            stderr: "a snapshot of the archive cannot download".into(),
        })
    }
}

/// Releases of `flavour` in `series` whose whole package set (image,
/// headers, kbuild, source, all of one version) the archive offers, oldest
/// first.
pub fn available_releases(
    archive: &dyn Archive,
    flavour: &str,
    series: &str,
) -> Result<Vec<(Release, Version)>> {
    complete_releases(archive, flavour, Some(series))
}

/// Releases of `flavour` of every series whose whole package set the
/// archive offers, ordered by series (numerically), then oldest first.
pub fn all_available_releases(
    archive: &dyn Archive,
    flavour: &str,
) -> Result<Vec<(Release, Version)>> {
    let mut list = complete_releases(archive, flavour, None)?;
    let key = |r: &Release| -> (u32, u32) {
        let mut p = r.series().split('.').map(|n| n.parse().unwrap_or(0));
        (p.next().unwrap_or(0), p.next().unwrap_or(0))
    };
    list.sort_by(|a, b| {
        key(&a.0)
            .cmp(&key(&b.0))
            .then_with(|| a.1.cmp(&b.1))
            .then_with(|| a.0.cmp(&b.0))
    });
    Ok(list)
}

/// The suite (`bookworm`, `trixie-security`, `trixie-backports`, ...) each
/// of `releases` comes from, in order; `None` where the archive cannot tell.
pub fn suites_of(
    archive: &dyn Archive,
    releases: &[(Release, Version)],
) -> Result<Vec<Option<String>>> {
    let names: Vec<String> = releases.iter().map(|(r, _)| r.image_package()).collect();
    let known = archive.suites(&names)?;
    Ok(releases
        .iter()
        .map(|(r, v)| {
            let (name, version) = (r.image_package(), v.to_string());
            known
                .iter()
                .find(|(p, kv, _)| *p == name && *kv == version)
                .map(|(_, _, s)| s.clone())
        })
        .collect())
}

fn complete_releases(
    archive: &dyn Archive,
    flavour: &str,
    series: Option<&str>,
) -> Result<Vec<(Release, Version)>> {
    let releases: Vec<Release> = release_names(archive, flavour)?
        .into_iter()
        .filter(|r| series.is_none_or(|s| r.series() == s))
        .collect();
    let mut names: Vec<String> = Vec::new();
    for r in &releases {
        names.extend([
            r.image_package(),
            r.headers_package(),
            r.headers_common_package(),
            r.dbg_package(),
            format!("linux-kbuild-{}", r.abi()),
        ]);
        names.extend(r.image_part_packages());
    }
    for r in &releases {
        for n in [r.kbuild_package(), r.source_package()] {
            if !names.contains(&n) {
                names.push(n);
            }
        }
    }
    // apt-cache answers a name it does not know by searching every package
    // (tens of milliseconds each), so only known names are asked about.
    let known: std::collections::HashSet<String> =
        archive.package_names("linux-")?.into_iter().collect();
    names.retain(|n| known.contains(n));
    let snapshot = Snapshot(archive.show(&names)?);
    let mut complete: Vec<(Release, Version)> = releases
        .into_iter()
        .filter_map(|r| plan(&snapshot, &r).ok().map(|p| (r, p.version)))
        .collect();
    complete.sort_by(|a, b| a.1.cmp(&b.1).then_with(|| a.0.cmp(&b.0)));
    Ok(complete)
}

/// The newest of `available` built for Debian `debian` (a `+deb<N>` ABI)
/// whose series `series` accepts: how tests pick "the newest Debian 13 6.12
/// build" or "the newest backports build" from what the archive offers
/// today.
pub fn newest_for_debian(
    available: &[(Release, Version)],
    debian: u32,
    series: impl Fn(&str) -> bool,
) -> Option<(Release, Version)> {
    available
        .iter()
        .filter(|(r, _)| r.debian_release() == Some(debian) && series(r.series()))
        .max_by(|a, b| a.1.cmp(&b.1).then_with(|| a.0.cmp(&b.0)))
        .cloned()
}

/// The chosen release and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Selection {
    /// The release to use.
    pub release: Release,
    /// Its Debian version.
    pub version: Version,
    /// Set when a pinned release was unavailable and this is the fallback.
    pub fallback_from: Option<Release>,
}

impl fmt::Display for Selection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.fallback_from {
            None => write!(f, "{} ({}, pinned)", self.release, self.version),
            Some(p) => write!(
                f,
                "{} ({}): the pinned {p} is no longer offered by the package archive, falling back to the oldest complete release of series {}",
                self.release,
                self.version,
                self.release.series()
            ),
        }
    }
}

/// Picks the first of `pinned` that is available, else the oldest
/// available release of the first pin's series and flavour.
pub fn select_release(pinned: &[Release], available: &[(Release, Version)]) -> Result<Selection> {
    for p in pinned {
        if let Some((r, v)) = available.iter().find(|(r, _)| r == p) {
            return Ok(Selection {
                release: r.clone(),
                version: v.clone(),
                fallback_from: None,
            });
        }
    }
    let Some(first) = pinned.first() else {
        return Err(Error::NoReleases {
            flavour: "(none pinned)".into(),
            series: "(none pinned)".into(),
        });
    };
    available
        .iter()
        .find(|(r, _)| r.series() == first.series() && r.flavour() == first.flavour())
        .map(|(r, v)| Selection {
            release: r.clone(),
            version: v.clone(),
            fallback_from: Some(first.clone()),
        })
        .ok_or_else(|| Error::NoReleases {
            flavour: first.flavour().to_string(),
            series: first.series().to_string(),
        })
}

/// The release tests and the demo use: `$NOREBOOT_KERNEL` if set (no
/// fallback then: the user asked for exactly that one), else
/// [`PINNED_RELEASE`] with the archive fallback. A release already in the
/// cache is used without asking the archive, so cached kernels work offline.
pub fn default_release(cache: &Cache, archive: &dyn Archive) -> Result<Selection> {
    let wanted = std::env::var_os("NOREBOOT_KERNEL").filter(|v| !v.is_empty());
    let explicit = wanted.is_some();
    let pinned: Release = match wanted {
        Some(v) => v.to_string_lossy().parse()?,
        None => PINNED_RELEASE.parse()?,
    };
    if let Some(ws) = Workspace::open(cache, &pinned)? {
        let version = ws.version().parse().map_err(|_| Error::CorruptWorkspace {
            path: ws.dir().to_path_buf(),
            reason: format!("version {:?} in the manifest", ws.version()),
        })?;
        return Ok(Selection {
            release: pinned,
            version,
            fallback_from: None,
        });
    }
    if explicit {
        let p = plan(archive, &pinned)?;
        return Ok(Selection {
            release: pinned,
            version: p.version,
            fallback_from: None,
        });
    }
    let available = available_releases(archive, pinned.flavour(), pinned.series())?;
    select_release(&[pinned], &available)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan::tests::debian_archive;

    #[test]
    fn only_complete_releases_are_available() {
        let a = debian_archive();
        let got: Vec<String> = available_releases(&a, "cloud-amd64", "6.1")
            .unwrap()
            .iter()
            .map(|(r, v)| format!("{r}={v}"))
            .collect();
        assert_eq!(
            got,
            [
                "6.1.0-47-cloud-amd64=6.1.170-3",
                "6.1.0-57-cloud-amd64=6.1.192-3"
            ]
        );
    }

    #[test]
    fn pinned_release_wins_when_offered() {
        let a = debian_archive();
        let avail = available_releases(&a, "cloud-amd64", "6.1").unwrap();
        let s = select_release(&["6.1.0-47-cloud-amd64".parse().unwrap()], &avail).unwrap();
        assert_eq!(s.release.as_str(), "6.1.0-47-cloud-amd64");
        assert!(s.fallback_from.is_none());
        assert!(s.to_string().contains("pinned"));
    }

    #[test]
    fn vanished_pin_falls_back_loudly_to_the_oldest() {
        let a = debian_archive();
        let avail = available_releases(&a, "cloud-amd64", "6.1").unwrap();
        let s = select_release(&["6.1.0-40-cloud-amd64".parse().unwrap()], &avail).unwrap();
        assert_eq!(s.release.as_str(), "6.1.0-47-cloud-amd64");
        let msg = s.to_string();
        assert!(
            msg.contains("6.1.0-40-cloud-amd64 is no longer offered"),
            "{msg}"
        );
    }

    #[test]
    fn newest_debian_13_builds_are_picked_by_series() {
        let v = |r: &str, v: &str| (r.parse::<Release>().unwrap(), v.parse::<Version>().unwrap());
        let list = [
            v("6.12.118+deb12-cloud-amd64", "6.12.118-1~deb12u1"),
            v("6.12.117+deb13-cloud-amd64", "6.12.117-1"),
            v("6.12.118+deb13-cloud-amd64", "6.12.118-1"),
            v("7.2.12+deb13-cloud-amd64", "7.2.12-1~bpo13+1"),
            v("7.3.4+deb13-cloud-amd64", "7.3.4-1~bpo13+1"),
            v("6.1.0-47-cloud-amd64", "6.1.170-3"),
        ];
        let t = newest_for_debian(&list, 13, |s| s == "6.12").unwrap();
        assert_eq!(t.0.as_str(), "6.12.118+deb13-cloud-amd64");
        let b = newest_for_debian(&list, 13, |s| s != "6.12").unwrap();
        assert_eq!(b.0.as_str(), "7.3.4+deb13-cloud-amd64");
        assert!(newest_for_debian(&list, 14, |_| true).is_none());
    }

    #[test]
    fn split_images_plan_their_parts_and_all_series_are_listed() {
        let a = crate::plan::tests::Canned::new(&[
            ("linux-image-7.3.4+deb13-cloud-amd64", "7.3.4-1~bpo13+1", "dracut | initramfs-tools, linux-base-7.3.4+deb13-cloud-amd64 (= 7.3.4-1~bpo13+1), linux-binary-7.3.4+deb13-cloud-amd64 (= 7.3.4-1~bpo13+1), linux-modules-7.3.4+deb13-cloud-amd64 (= 7.3.4-1~bpo13+1)"),
            ("linux-base-7.3.4+deb13-cloud-amd64", "7.3.4-1~bpo13+1", ""),
            ("linux-binary-7.3.4+deb13-cloud-amd64", "7.3.4-1~bpo13+1", ""),
            ("linux-modules-7.3.4+deb13-cloud-amd64", "7.3.4-1~bpo13+1", ""),
            ("linux-headers-7.3.4+deb13-cloud-amd64", "7.3.4-1~bpo13+1", "gcc-14-for-host, linux-headers-7.3.4+deb13-common (= 7.3.4-1~bpo13+1), linux-kbuild-7.3.4+deb13"),
            ("linux-headers-7.3.4+deb13-common", "7.3.4-1~bpo13+1", ""),
            ("linux-kbuild-7.3.4+deb13", "7.3.4-1~bpo13+1", ""),
            ("linux-source-7.3", "7.3.4-1~bpo13+1", ""),
            // 7.2.6: its modules part is gone.
            ("linux-image-7.2.6+deb13-cloud-amd64", "7.2.6-1~bpo13+1", "linux-modules-7.2.6+deb13-cloud-amd64 (= 7.2.6-1~bpo13+1)"),
            ("linux-headers-7.2.6+deb13-cloud-amd64", "7.2.6-1~bpo13+1", "linux-kbuild-7.2.6+deb13"),
            ("linux-headers-7.2.6+deb13-common", "7.2.6-1~bpo13+1", ""),
            ("linux-kbuild-7.2.6+deb13", "7.2.6-1~bpo13+1", ""),
            ("linux-source-7.2", "7.2.6-1~bpo13+1", ""),
            ("linux-image-6.1.0-47-cloud-amd64", "6.1.170-3", ""),
            ("linux-headers-6.1.0-47-cloud-amd64", "6.1.170-3", "linux-kbuild-6.1 (>= 6.1.170-3)"),
            ("linux-headers-6.1.0-47-common", "6.1.170-3", ""),
            ("linux-kbuild-6.1", "6.1.170-3", ""),
            ("linux-source-6.1", "6.1.170-3", ""),
        ]);
        let r: Release = "7.3.4+deb13-cloud-amd64".parse().unwrap();
        let p = plan(&a, &r).unwrap();
        let parts: Vec<&str> = p
            .packages
            .iter()
            .filter(|p| p.role == crate::plan::Role::ImagePart)
            .map(|p| p.info.package.as_str())
            .collect();
        assert_eq!(parts.len(), 3, "{parts:?}");
        let err = plan(&a, &"7.2.6+deb13-cloud-amd64".parse().unwrap()).unwrap_err();
        assert!(
            err.to_string()
                .contains("linux-modules-7.2.6+deb13-cloud-amd64"),
            "{err}"
        );
        let all: Vec<String> = all_available_releases(&a, "cloud-amd64")
            .unwrap()
            .iter()
            .map(|(r, _)| r.to_string())
            .collect();
        assert_eq!(all, ["6.1.0-47-cloud-amd64", "7.3.4+deb13-cloud-amd64"]);
    }

    #[test]
    fn nothing_of_the_series_is_an_error() {
        let a = debian_archive();
        let avail = available_releases(&a, "cloud-amd64", "6.1").unwrap();
        let err =
            select_release(&["6.12.1+deb13-cloud-amd64".parse().unwrap()], &avail).unwrap_err();
        assert!(err.to_string().contains("series 6.12"), "{err}");
        assert!(select_release(&[], &avail).is_err());
    }
}
