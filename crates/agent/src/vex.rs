//! The host's own OpenVEX document: each CVE the active level fixes,
//! `fixed` in the running kernel's package, made with the builder the
//! server uses (`protocol::vex`). The engine keeps `vex.json` in the state
//! directory current with the other scanner files after every change of
//! level; `noreboot vex` prints it afresh.

use bundle::manifest::Manifest;
use protocol::vex::{self, Builder, Document, VexError};

/// The document for the kernel `release` / `uname_v` running level `m`
/// since `applied_at` (RFC 3339), on host `hostname`, made at `now`.
pub fn document(
    release: &str,
    uname_v: &str,
    hostname: &str,
    m: &Manifest,
    applied_at: &str,
    now: &str,
) -> Result<Document, VexError> {
    let product = vex::running_kernel_product(release, m.kernel.version.as_deref(), uname_v)?;
    let mut b = Builder::new(
        format!("noreboot agent on {hostname}"),
        format!("noreboot {}", env!("CARGO_PKG_VERSION")),
    );
    let how = format!(
        "live patch {} for kernel build-id {}, applied at {applied_at}",
        m.name, m.kernel.build_id
    );
    for c in &m.cves {
        b.fixed(&c.id, &product, u64::from(m.level), applied_at, &how);
    }
    b.build(now, &format!("level {} lists no CVE", m.level))
}

/// This machine's host name (`uname -n`).
pub fn hostname() -> String {
    rustix::system::uname()
        .nodename()
        .to_string_lossy()
        .into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;
    use bundle::manifest::{Cve, Kernel, Module, FORMAT};

    fn manifest(cves: &[&str], version: Option<&str>) -> Manifest {
        Manifest {
            format: FORMAT,
            name: "nrfix_3".into(),
            level: 3,
            kernel: Kernel {
                release: "6.1.0-47-cloud-amd64".into(),
                build_id: "ab".repeat(20),
                version: version.map(str::to_string),
            },
            effective_version: Some("6.1.170-3+nr3".into()),
            cves: cves
                .iter()
                .map(|id| Cve {
                    id: id.to_string(),
                    description: "test".into(),
                })
                .collect(),
            description: "test".into(),
            targets: Vec::new(),
            module: Module::default(),
            toolchain: Default::default(),
            created: "2025-01-31T12:00:00Z".into(),
            builder: None,
            not_carried: Vec::new(),
        }
    }

    const UNAME_V: &str = "#1 SMP PREEMPT_DYNAMIC Debian 6.1.170-3 (2025-08-15)";

    #[test]
    fn the_active_levels_cves_are_fixed_in_the_kernel_package_and_the_schema_holds() {
        let m = manifest(&["CVE-2099-1001", "CVE-2099-1002"], Some("6.1.170-3"));
        let doc = document(
            "6.1.0-47-cloud-amd64",
            UNAME_V,
            "web-1",
            &m,
            "2025-02-01T10:00:00Z",
            "2025-02-02T10:00:00Z",
        )
        .unwrap();
        let text = serde_json::to_string_pretty(&doc).unwrap();
        if let Err(e) = test_support::openvex::validate(&text) {
            panic!("not a valid OpenVEX document: {e}\n{text}");
        }
        let v: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_eq!(v["author"], "noreboot agent on web-1");
        let st = v["statements"].as_array().unwrap();
        assert_eq!(st.len(), 2);
        for (s, cve) in st.iter().zip(["CVE-2099-1001", "CVE-2099-1002"]) {
            assert_eq!(s["vulnerability"]["name"], cve);
            assert_eq!(s["status"], "fixed");
            assert_eq!(s["timestamp"], "2025-02-01T10:00:00Z");
            assert_eq!(
                s["products"][0]["@id"],
                "pkg:deb/debian/linux-image-6.1.0-47-cloud-amd64@6.1.170-3?arch=amd64"
            );
            let notes = s["status_notes"].as_str().unwrap();
            assert!(
                notes.contains("level 3") && notes.contains("nrfix_3"),
                "{notes}"
            );
        }
        // The same level made later: the same id.
        let later = document(
            "6.1.0-47-cloud-amd64",
            UNAME_V,
            "web-1",
            &m,
            "2025-02-01T10:00:00Z",
            "2025-03-01T00:00:00Z",
        )
        .unwrap();
        assert_eq!(later.id, doc.id);
    }

    #[test]
    fn no_document_without_a_cve_or_a_package_version() {
        let none = manifest(&[], Some("6.1.170-3"));
        let e = document("r-amd64", UNAME_V, "h", &none, "t", "t").unwrap_err();
        assert!(e.to_string().contains("lists no CVE"), "{e}");
        let unnamed = manifest(&["CVE-2099-1001"], None);
        let e = document("r-amd64", "#1 SMP", "h", &unnamed, "t", "t").unwrap_err();
        assert!(e.to_string().contains("package version"), "{e}");
        // The version from `uname -v` when the manifest has none.
        let doc = document("r-amd64", UNAME_V, "h", &unnamed, "t", "t").unwrap();
        assert!(doc.statements[0].products[0]
            .id
            .ends_with("@6.1.170-3?arch=amd64"));
    }
}
