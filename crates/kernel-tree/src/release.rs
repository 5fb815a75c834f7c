//! Debian kernel release names (`uname -r`) and the package names that
//! belong to one. The name is validated strictly because it ends up in
//! apt command lines and cache paths.

use std::fmt;
use std::str::FromStr;

use crate::Error;

/// A Debian kernel release, e.g. `6.1.0-47-cloud-amd64` (ABI `6.1.0-47`,
/// flavour `cloud-amd64`) or `6.12.111+deb12-cloud-amd64`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Release {
    full: String,
    abi_len: usize,
    series: String,
}

/// Flavours Debian builds for amd64; the name is split at the first of them.
const FLAVOURS: &[&str] = &["cloud-amd64", "rt-amd64", "amd64"];

impl Release {
    /// The whole release string.
    pub fn as_str(&self) -> &str {
        &self.full
    }

    /// ABI name, e.g. `6.1.0-47`.
    pub fn abi(&self) -> &str {
        &self.full[..self.abi_len]
    }

    /// Flavour, e.g. `cloud-amd64`.
    pub fn flavour(&self) -> &str {
        &self.full[self.abi_len + 1..]
    }

    /// Upstream series, e.g. `6.1`: names the source and kbuild packages.
    pub fn series(&self) -> &str {
        &self.series
    }

    /// The Debian release a `+debN` ABI was built for (`6.12.118+deb13`
    /// gives 13, `7.3.4+deb13` too); `None` for Debian 12's own `6.1.0-47`
    /// style ABIs, which do not say.
    pub fn debian_release(&self) -> Option<u32> {
        let tail = self.abi().split_once("+deb")?.1;
        let digits: String = tail.chars().take_while(|c| c.is_ascii_digit()).collect();
        digits.parse().ok()
    }

    /// `linux-image-<release>`: the signed image hosts actually run.
    pub fn image_package(&self) -> String {
        format!("linux-image-{}", self.full)
    }

    /// `linux-headers-<release>`.
    pub fn headers_package(&self) -> String {
        format!("linux-headers-{}", self.full)
    }

    /// `linux-headers-<abi>-common`: the flavour-independent headers.
    pub fn headers_common_package(&self) -> String {
        format!("linux-headers-{}-common", self.abi())
    }

    /// `linux-kbuild-<series>`: modpost, fixdep and the kbuild scripts.
    pub fn kbuild_package(&self) -> String {
        format!("linux-kbuild-{}", self.series)
    }

    /// `linux-source-<series>`: the patched source tarball.
    pub fn source_package(&self) -> String {
        format!("linux-source-{}", self.series)
    }

    /// The packages Debian's newer kernels (trixie-backports from 6.18 on)
    /// split the image into, which `linux-image-<release>` then depends
    /// on: `linux-base-` (config, System.map), `linux-binary-` (vmlinuz)
    /// and `linux-modules-` (the modules).
    pub fn image_part_packages(&self) -> [String; 3] {
        ["base", "binary", "modules"].map(|p| format!("linux-{p}-{}", self.full))
    }

    /// `linux-image-<release>-dbg`: full vmlinux and the real System.map.
    pub fn dbg_package(&self) -> String {
        format!("linux-image-{}-dbg", self.full)
    }
}

impl fmt::Display for Release {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.full)
    }
}

impl FromStr for Release {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self, Error> {
        let bad = |why: &str| Error::BadRelease {
            release: s.to_string(),
            reason: why.to_string(),
        };
        if s.is_empty() || s.len() > 64 {
            return Err(bad("must be 1 to 64 characters"));
        }
        if !s
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b".+-".contains(&b))
        {
            return Err(bad("only a-z, 0-9, '.', '+' and '-' may appear"));
        }
        let (abi, _flavour) = FLAVOURS
            .iter()
            .find_map(|fl| {
                s.strip_suffix(fl)
                    .and_then(|a| a.strip_suffix('-'))
                    .map(|a| (a, *fl))
            })
            .ok_or_else(|| bad(&format!("flavour must be one of {}", FLAVOURS.join(", "))))?;
        // ABI: "6.1.0-47" (upstream x.y.0, ABI number) or "6.12.111+deb12".
        let upstream = abi.split(['-', '+']).next().unwrap_or("");
        let parts: Vec<&str> = upstream.split('.').collect();
        if parts.len() != 3
            || parts
                .iter()
                .any(|p| p.is_empty() || !p.bytes().all(|b| b.is_ascii_digit()))
        {
            return Err(bad(
                "ABI must start with a three-part version such as 6.1.0",
            ));
        }
        if abi.len() == upstream.len() {
            return Err(bad("ABI needs a suffix such as -47 or +deb12"));
        }
        Ok(Release {
            full: s.to_string(),
            abi_len: abi.len(),
            series: format!("{}.{}", parts[0], parts[1]),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debian_12_cloud_release() {
        let r: Release = "6.1.0-47-cloud-amd64".parse().unwrap();
        assert_eq!(r.abi(), "6.1.0-47");
        assert_eq!(r.flavour(), "cloud-amd64");
        assert_eq!(r.series(), "6.1");
        assert_eq!(r.image_package(), "linux-image-6.1.0-47-cloud-amd64");
        assert_eq!(r.headers_common_package(), "linux-headers-6.1.0-47-common");
        assert_eq!(r.kbuild_package(), "linux-kbuild-6.1");
        assert_eq!(r.source_package(), "linux-source-6.1");
        assert_eq!(r.dbg_package(), "linux-image-6.1.0-47-cloud-amd64-dbg");
    }

    #[test]
    fn debian_12_backported_6_12_and_generic_flavour() {
        let r: Release = "6.12.111+deb12-cloud-amd64".parse().unwrap();
        assert_eq!(r.abi(), "6.12.111+deb12");
        assert_eq!(r.series(), "6.12");
        assert_eq!(
            r.headers_common_package(),
            "linux-headers-6.12.111+deb12-common"
        );
        assert_eq!(r.debian_release(), Some(12));
        let t: Release = "6.12.115+deb13.1-cloud-amd64".parse().unwrap();
        assert_eq!(t.debian_release(), Some(13));
        assert_eq!(t.series(), "6.12");
        let b: Release = "7.3.4+deb13-cloud-amd64".parse().unwrap();
        assert_eq!((b.series(), b.debian_release()), ("7.3", Some(13)));
        assert_eq!(
            b.image_part_packages(),
            [
                "linux-base-7.3.4+deb13-cloud-amd64",
                "linux-binary-7.3.4+deb13-cloud-amd64",
                "linux-modules-7.3.4+deb13-cloud-amd64"
            ]
        );
        let g: Release = "6.1.0-47-amd64".parse().unwrap();
        assert_eq!(g.debian_release(), None);
        assert_eq!(g.flavour(), "amd64");
        assert_eq!(g.abi(), "6.1.0-47");
    }

    #[test]
    fn rejects_meta_packages_and_junk() {
        for bad in [
            "",
            "6.12-cloud-amd64",
            "cloud-amd64",
            "6.1.0-cloud-amd64",
            "6.1.0-47-arm64",
            "6.1.0-47-cloud-amd64; rm -rf /",
            "../../etc",
            "6.1.0-47-Cloud-amd64",
        ] {
            let err = bad.parse::<Release>().unwrap_err();
            assert!(err.to_string().contains("release"), "{bad}: {err}");
        }
    }
}
