//! Bundles that must open, and what they give back.

use std::os::unix::fs::PermissionsExt;

use bundle::container;
use bundle::{Bundle, Outcome, SecretKey};

use crate::{make, manifest, module, trusted};

#[test]
fn create_then_open() {
    let key = SecretKey::generate().unwrap();
    let bytes = make(&key);
    let b = bundle::open(&bytes, &trusted(&key)).unwrap();
    assert_eq!(b.module, module());
    assert_eq!(b.signer, key.key_id());
    assert_eq!(b.trusted_comment, "timestamp:0\tfile:manifest.json");
    let mut expected = manifest();
    expected.module = b.manifest.module.clone();
    assert_eq!(b.manifest, expected);
    assert_eq!(b.manifest.module.size, module().len() as u64);
    assert_eq!(b.manifest.module.sha256.len(), 64);
}

#[test]
fn members_are_exactly_the_three_in_order() {
    let key = SecretKey::generate().unwrap();
    let bytes = make(&key);
    let m = container::read(&bytes).unwrap();
    assert!(m.manifest.starts_with(b"{\n"));
    assert!(m.signature.unwrap().starts_with(b"untrusted comment: "));
    assert_eq!(m.module, module());
    assert_eq!(&bytes[0..13], b"manifest.json");
    assert_eq!(bytes.len() % 512, 0);
}

#[test]
fn deterministic() {
    // Ed25519 is deterministic, and the archive has no times or owners:
    // the same inputs give the same file.
    let key = SecretKey::generate().unwrap();
    assert_eq!(make(&key), make(&key));
}

#[test]
fn optional_fields_may_be_absent() {
    let key = SecretKey::generate().unwrap();
    let mut m = manifest();
    m.effective_version = None;
    m.builder = None;
    m.kernel.version = None;
    m.cves.clear();
    m.toolchain.clear();
    let b = Bundle::create(m, &module(), &key, "").unwrap();
    let text = String::from_utf8(container::read(b.bytes()).unwrap().manifest.to_vec()).unwrap();
    assert!(
        !text.contains("effective_version") && !text.contains("builder"),
        "{text}"
    );
    bundle::open(b.bytes(), &trusted(&key)).unwrap();
}

#[test]
fn write_to_is_atomic_and_world_readable() {
    let key = SecretKey::generate().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("p.nrb");
    std::fs::write(&path, b"old").unwrap();
    let b = Bundle::create(manifest(), &module(), &key, "x").unwrap();
    b.write_to(&path).unwrap();
    assert_eq!(std::fs::read(&path).unwrap(), b.bytes());
    let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o644);
    // No temporary file is left behind.
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
    let read = bundle::read_file(&path).unwrap();
    bundle::open(&read, &trusted(&key)).unwrap();
}

#[test]
fn inspect_reports_every_check() {
    let key = SecretKey::generate().unwrap();
    let bytes = make(&key);
    let r = bundle::inspect(&bytes, None);
    assert!(r.passed(), "{r}");
    assert_eq!(r.signer, Some(key.key_id()));
    assert!(matches!(r.checks[1].outcome, Outcome::Skipped(_)), "{r}");
    let r = bundle::inspect(&bytes, Some(&trusted(&key)));
    assert!(r.passed(), "{r}");
    assert!(
        r.checks
            .iter()
            .all(|c| matches!(c.outcome, Outcome::Pass(_))),
        "{r}"
    );
    assert_eq!(r.members.len(), 3);
    assert!(
        r.to_string().contains("patch nr_cve_2024_1086 level 2"),
        "{r}"
    );

    let other = SecretKey::generate().unwrap();
    let r = bundle::inspect(&bytes, Some(&trusted(&other)));
    assert!(!r.passed());
    assert!(
        r.to_string().contains(&format!(
            "signed by key {}, which is not trusted",
            key.key_id()
        )),
        "{r}"
    );
    // The rest is still reported.
    assert!(r.manifest.is_some());
}

#[test]
fn inspect_shows_which_check_fails() {
    let key = SecretKey::generate().unwrap();
    let mut bytes = make(&key);
    let [_, _, module] = crate::layout(&bytes);
    bytes[module.start + 100] ^= 0x40;
    let r = bundle::inspect(&bytes, Some(&trusted(&key)));
    let failed: Vec<&str> = r
        .checks
        .iter()
        .filter(|c| matches!(c.outcome, Outcome::Fail(_)))
        .map(|c| c.what)
        .collect();
    assert_eq!(failed, ["module sha256"], "{r}");
}
