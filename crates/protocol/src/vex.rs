//! OpenVEX (v0.2.0) documents saying which CVEs a live patch level fixes in
//! a running Debian kernel, for vulnerability scanners that suppress
//! findings with VEX (`trivy --vex`). One builder for the server (per host
//! and for the fleet) and the agent (its own host), so both state the same
//! thing the same way.
//!
//! The product of every statement is the Debian package of the running
//! kernel's image, as a package URL
//! (`pkg:deb/debian/linux-image-6.1.0-47-cloud-amd64@6.1.170-3?arch=amd64`):
//! what a scanner reports a kernel CVE against when it reads the host's
//! dpkg database. A statement names the level that fixes the CVE in its
//! notes; the package's files are unchanged, so the claim holds for the
//! running kernel, which the agent re-patches at every boot.
//!
//! The document's `@id` is a digest of its statements: the same facts give
//! the same id, whenever the document is made; its `timestamp` says when it
//! was made.

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// The OpenVEX context (spec version) of every document made here.
pub const CONTEXT: &str = "https://openvex.dev/ns/v0.2.0";

/// An OpenVEX document.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[cfg_attr(feature = "openapi", schema(as = VexDocument))]
pub struct Document {
    /// Always [`CONTEXT`].
    #[serde(rename = "@context")]
    pub context: String,
    /// `urn:noreboot:vex:<sha256 of the statements>`.
    #[serde(rename = "@id")]
    pub id: String,
    /// Who states it.
    pub author: String,
    /// The author's role.
    pub role: String,
    /// When the document was made (RFC 3339).
    pub timestamp: String,
    /// Always 1: a change of facts makes another document (another `@id`).
    pub version: u32,
    /// What made it.
    pub tooling: String,
    /// At least one.
    pub statements: Vec<Statement>,
}

/// One CVE's status in one product.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[cfg_attr(feature = "openapi", schema(as = VexStatement))]
pub struct Statement {
    /// The CVE.
    pub vulnerability: Vulnerability,
    /// When the statement was known to be true (RFC 3339).
    pub timestamp: String,
    /// The kernel package.
    pub products: Vec<Product>,
    /// `fixed`, or `affected` while a published level that fixes it is not
    /// applied.
    pub status: Status,
    /// How the status was determined: the level, the build-id.
    pub status_notes: String,
    /// What to do, for `affected`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub action_statement: Option<String>,
}

/// A vulnerability, by name.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[cfg_attr(feature = "openapi", schema(as = VexVulnerability))]
pub struct Vulnerability {
    /// `CVE-YYYY-NNNN`.
    pub name: String,
}

/// A product: the kernel image package.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[cfg_attr(feature = "openapi", schema(as = VexProduct))]
pub struct Product {
    /// Its package URL.
    #[serde(rename = "@id")]
    pub id: String,
    /// The same package URL, typed.
    pub identifiers: Identifiers,
}

/// A product's identifiers.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[cfg_attr(feature = "openapi", schema(as = VexIdentifiers))]
pub struct Identifiers {
    /// Package URL.
    pub purl: String,
}

/// The statuses made here.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[cfg_attr(feature = "openapi", schema(as = VexStatus))]
#[serde(rename_all = "snake_case")]
pub enum Status {
    /// The live patch level active on the kernel fixes it.
    Fixed,
    /// A published level fixes it, but it is not applied.
    Affected,
}

/// Why no document could be made.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum VexError {
    /// The kernel's package version is known from neither the level nor
    /// `uname -v`: the package cannot be named, and a package URL without
    /// a version would speak for every version of it.
    NoPackageVersion {
        /// `uname -r`.
        release: String,
    },
    /// Nothing to state (OpenVEX requires at least one statement).
    Empty(String),
}

impl std::fmt::Display for VexError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::NoPackageVersion { release } => write!(
                f,
                "cannot name the package of kernel {release}: neither its level nor its `uname -v` gives a Debian package version"
            ),
            Self::Empty(why) => write!(f, "no VEX statements to make: {why}"),
        }
    }
}

impl std::error::Error for VexError {}

/// The Debian package version in a Debian kernel's `uname -v`
/// (`#1 SMP PREEMPT_DYNAMIC Debian 6.1.170-3 (2025-08-15)` → `6.1.170-3`).
pub fn debian_version_from_uname_v(uname_v: &str) -> Option<&str> {
    let mut words = uname_v.split_whitespace();
    words.find(|w| *w == "Debian")?;
    words
        .next()
        .filter(|v| v.starts_with(|c: char| c.is_ascii_digit()))
}

/// The kernel image package of `release` at `version`, as a product. The
/// architecture qualifier comes from the release's flavour suffix where it
/// names one (`-amd64`, `-arm64`); otherwise it is left out, which matches
/// any architecture.
pub fn kernel_product(release: &str, version: &str) -> Product {
    let mut purl = format!(
        "pkg:deb/debian/{}@{}",
        encode(&format!("linux-image-{release}")),
        encode(version)
    );
    if let Some(arch) = ["amd64", "arm64"]
        .into_iter()
        .find(|a| release.ends_with(&format!("-{a}")))
    {
        purl.push_str("?arch=");
        purl.push_str(arch);
    }
    Product {
        id: purl.clone(),
        identifiers: Identifiers { purl },
    }
}

/// The product of a running kernel: its package version from the level's
/// manifest (`package_version`) or else from `uname -v`.
pub fn running_kernel_product(
    release: &str,
    package_version: Option<&str>,
    uname_v: &str,
) -> Result<Product, VexError> {
    package_version
        .filter(|v| !v.is_empty())
        .or_else(|| debian_version_from_uname_v(uname_v))
        .map(|v| kernel_product(release, v))
        .ok_or_else(|| VexError::NoPackageVersion {
            release: release.to_string(),
        })
}

/// Percent-encodes what a package URL component may not hold as it is
/// (`+` in Debian versions becomes `%2B`).
fn encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'_' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Collects statements, then makes the document.
#[derive(Debug, Clone)]
pub struct Builder {
    author: String,
    tooling: String,
    statements: Vec<Statement>,
}

impl Builder {
    /// A document by `author`, made by `tooling` (`noreboot-server 0.1.0`).
    pub fn new(author: impl Into<String>, tooling: impl Into<String>) -> Self {
        Self {
            author: author.into(),
            tooling: tooling.into(),
            statements: Vec::new(),
        }
    }

    /// `cve` is fixed in `product` by the active level `level`, known at
    /// `at`; `how` says more (which build, which hosts).
    pub fn fixed(&mut self, cve: &str, product: &Product, level: u64, at: &str, how: &str) {
        self.statements.push(Statement {
            vulnerability: Vulnerability { name: cve.into() },
            timestamp: at.into(),
            products: vec![product.clone()],
            status: Status::Fixed,
            status_notes: format!(
                "fixed in the running kernel by noreboot live patch level {level}{}{how}",
                if how.is_empty() { "" } else { ": " }
            ),
            action_statement: None,
        });
    }

    /// `cve` affects `product`: level `level` fixes it but is not applied
    /// (`how`: where); `action` says what to do.
    pub fn affected(
        &mut self,
        cve: &str,
        product: &Product,
        level: u64,
        at: &str,
        how: &str,
        action: &str,
    ) {
        self.statements.push(Statement {
            vulnerability: Vulnerability { name: cve.into() },
            timestamp: at.into(),
            products: vec![product.clone()],
            status: Status::Affected,
            status_notes: format!(
                "noreboot live patch level {level} fixes it but is not applied{}{how}",
                if how.is_empty() { "" } else { ": " }
            ),
            action_statement: Some(action.into()),
        });
    }

    /// Statements so far.
    pub fn len(&self) -> usize {
        self.statements.len()
    }

    /// No statements so far.
    pub fn is_empty(&self) -> bool {
        self.statements.is_empty()
    }

    /// The document, made at `now` (RFC 3339), statements by CVE then
    /// product; `empty` says why there is nothing, if there is nothing.
    pub fn build(mut self, now: &str, empty: &str) -> Result<Document, VexError> {
        if self.statements.is_empty() {
            return Err(VexError::Empty(empty.into()));
        }
        self.statements.sort_by(|a, b| {
            a.vulnerability
                .name
                .cmp(&b.vulnerability.name)
                .then_with(|| a.products.cmp(&b.products))
        });
        // Serialising plain data to a Vec cannot fail.
        let bytes = serde_json::to_vec(&(&self.author, &self.statements)).unwrap_or_default();
        Ok(Document {
            context: CONTEXT.into(),
            id: format!("urn:noreboot:vex:{}", hex(&Sha256::digest(bytes))),
            author: self.author,
            role: "live patch provider".into(),
            timestamp: now.into(),
            version: 1,
            tooling: self.tooling,
            statements: self.statements,
        })
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn package_urls_name_the_kernel_image_package() {
        assert_eq!(
            debian_version_from_uname_v("#1 SMP PREEMPT_DYNAMIC Debian 6.1.170-3 (2025-08-15)"),
            Some("6.1.170-3")
        );
        assert_eq!(debian_version_from_uname_v("#1 SMP Debian"), None);
        assert_eq!(debian_version_from_uname_v("#1 SMP PREEMPT_DYNAMIC"), None);
        assert_eq!(
            kernel_product("6.1.0-47-cloud-amd64", "6.1.170-3").id,
            "pkg:deb/debian/linux-image-6.1.0-47-cloud-amd64@6.1.170-3?arch=amd64"
        );
        assert_eq!(
            kernel_product("6.12.38+deb12-arm64", "6.12.38-1~bpo12+1").id,
            "pkg:deb/debian/linux-image-6.12.38%2Bdeb12-arm64@6.12.38-1~bpo12%2B1?arch=arm64"
        );
        assert_eq!(
            kernel_product("6.1.0-47-686-pae", "6.1.170-3").id,
            "pkg:deb/debian/linux-image-6.1.0-47-686-pae@6.1.170-3"
        );
        let uname = "#1 SMP PREEMPT_DYNAMIC Debian 6.1.170-3 (2025-08-15)";
        assert_eq!(
            running_kernel_product("r-amd64", Some("6.1.170-4"), uname)
                .unwrap()
                .identifiers
                .purl,
            "pkg:deb/debian/linux-image-r-amd64@6.1.170-4?arch=amd64"
        );
        assert_eq!(
            running_kernel_product("r", None, "#1 SMP"),
            Err(VexError::NoPackageVersion {
                release: "r".into()
            })
        );
    }

    #[test]
    fn ids_follow_the_statements_not_the_time_of_making() {
        let p = kernel_product("6.1.0-47-cloud-amd64", "6.1.170-3");
        let make = |cve: &str, now: &str| {
            let mut b = Builder::new("a", "t");
            b.fixed(cve, &p, 2, "2025-01-01T00:00:00Z", "");
            b.build(now, "").unwrap()
        };
        let one = make("CVE-2099-0001", "2025-01-02T00:00:00Z");
        assert_eq!(one.id, make("CVE-2099-0001", "2026-01-01T00:00:00Z").id);
        assert_ne!(one.id, make("CVE-2099-0002", "2025-01-02T00:00:00Z").id);
        assert!(one.id.starts_with("urn:noreboot:vex:"));
        let json = serde_json::to_value(&one).unwrap();
        assert_eq!(json["@context"], CONTEXT);
        assert_eq!(json["statements"][0]["status"], "fixed");
        assert_eq!(
            json["statements"][0]["vulnerability"]["name"],
            "CVE-2099-0001"
        );
        assert!(json["statements"][0].get("action_statement").is_none());
        assert_eq!(
            Builder::new("a", "t").build("now", "nothing applied"),
            Err(VexError::Empty("nothing applied".into()))
        );
    }
}
