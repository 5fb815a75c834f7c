//! `noreboot-build plan` on the example catalog (examples/catalog: the two
//! revision fixes of 6.1.192 and netlabel's policy fix, diffs made from
//! Debian's source packages at run time) for three real 6.1 builds: the
//! pinned 6.1.170-3 build, which the nfsd fix reaches only at an offset
//! and which lacks the ext4 backport the mballoc fix repairs (its hunks
//! conflict); 6.1.192-1, which takes both revision fixes and already has
//! netlabel's; and 6.1.192-3, which has all three. Reads only the builds'
//! source packages (downloaded once into the cache).

use std::process::Command;

#[test]
#[ignore = "slow tier: downloads three 6.1 source packages; scripts/test runs it"]
fn the_example_catalog_is_planned_per_build() {
    let catalog = concat!(env!("CARGO_MANIFEST_DIR"), "/../../examples/catalog");
    let out = Command::new(env!("CARGO_BIN_EXE_noreboot-build"))
        .args(["plan", "--catalog", catalog, "--json"])
        .args(["--kernel", "6.1.0-47-cloud-amd64"])
        .args(["--kernel", "6.1.0-55-cloud-amd64"])
        .args(["--kernel", "6.1.0-57-cloud-amd64"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    let plans: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let state = |build: usize, fix: &str| -> (String, serde_json::Value) {
        let entry = plans[build]["fixes"]
            .as_array()
            .unwrap()
            .iter()
            .find(|f| f[0] == fix)
            .unwrap_or_else(|| panic!("no {fix} in {}", plans[build]));
        (
            entry[1]["state"].as_str().unwrap().to_string(),
            entry[1].clone(),
        )
    };
    assert_eq!(plans[0]["release"], "6.1.0-47-cloud-amd64");
    assert_eq!(plans[0]["version"], "6.1.170-3");
    let (s, nfsd) = state(0, "cve-2026-99362");
    assert_eq!(s, "applies", "{nfsd}");
    assert!(
        nfsd["adjusted"].to_string().contains("offset"),
        "reached at an offset, reported: {nfsd}"
    );
    let (s, ext4) = state(0, "ext4-mballoc-null-folio");
    assert_eq!(s, "conflict", "{ext4}");
    assert!(
        ext4["hunks"]
            .to_string()
            .contains("fs/ext4/mballoc.c: Hunk #1 FAILED"),
        "{ext4}"
    );
    assert_eq!(state(0, "netlabel-addr-policy").0, "applies");
    assert_eq!(
        plans[0]["level"],
        serde_json::json!(["cve-2026-99362", "netlabel-addr-policy"])
    );

    assert_eq!(plans[1]["version"], "6.1.192-1");
    assert_eq!(state(1, "cve-2026-99362").0, "applies");
    assert_eq!(state(1, "ext4-mballoc-null-folio").0, "applies");
    assert_eq!(state(1, "netlabel-addr-policy").0, "contained");

    assert_eq!(plans[2]["version"], "6.1.192-3");
    for fix in [
        "cve-2026-99362",
        "ext4-mballoc-null-folio",
        "netlabel-addr-policy",
    ] {
        assert_eq!(state(2, fix).0, "contained", "{fix}");
    }
    assert_eq!(plans[2]["level"], serde_json::json!([]));

    // Not a build the archive offers: named, and how to list them.
    let out = Command::new(env!("CARGO_BIN_EXE_noreboot-build"))
        .args([
            "plan",
            "--catalog",
            catalog,
            "--kernel",
            "6.1.0-1-cloud-amd64",
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("6.1.0-1-cloud-amd64") && stderr.contains("noreboot-lab releases"),
        "{stderr}"
    );
}
