//! Every kind of tampering and malformation, each refused with the error
//! that names it.

use bundle::container::{self, MANIFEST, MODULE, SIGNATURE};
use bundle::manifest::{Cve, Function, MAX_CVES};
use bundle::{Bundle, BundleError, SecretKey, TrustedKeys};

use crate::{json_of, layout, make, manifest, module, set_size, signed_raw, trusted};

fn open(bytes: &[u8], key: &SecretKey) -> Result<bundle::VerifiedBundle, BundleError> {
    bundle::open(bytes, &trusted(key))
}

#[test]
fn every_manifest_byte_is_signed() {
    let key = SecretKey::generate().unwrap();
    let good = make(&key);
    let [manifest, _, _] = layout(&good);
    for i in manifest {
        let mut bytes = good.clone();
        bytes[i] ^= 0x01;
        match open(&bytes, &key) {
            Err(BundleError::BadSignature { key_id, reason }) => {
                assert_eq!(key_id, key.key_id());
                assert!(reason.contains("manifest.json"), "{reason}");
            }
            other => panic!("manifest byte {i} flipped: {other:?}"),
        }
    }
}

#[test]
fn module_bytes_are_pinned() {
    let key = SecretKey::generate().unwrap();
    let good = make(&key);
    let [_, _, module] = layout(&good);
    for i in module
        .clone()
        .step_by(97)
        .chain([module.start, module.end - 1])
    {
        let mut bytes = good.clone();
        bytes[i] ^= 0x80;
        match open(&bytes, &key) {
            Err(BundleError::ModuleHashMismatch { expected, actual }) => {
                assert_ne!(expected, actual)
            }
            other => panic!("module byte {i} flipped: {other:?}"),
        }
    }
}

#[test]
fn signature_bytes() {
    let key = SecretKey::generate().unwrap();
    let good = make(&key);
    let [_, sig, _] = layout(&good);
    let text = good[sig.clone()].to_vec();
    let first_nl = text.iter().position(|&b| b == b'\n').unwrap();
    let mut untouched = 0;
    for i in 0..text.len() {
        let mut bytes = good.clone();
        // A flip that keeps the byte printable ASCII and off the newline.
        bytes[sig.start + i] = if text[i] == b'A' { b'B' } else { b'A' };
        let r = open(&bytes, &key);
        if i >= "untrusted comment: ".len() && i < first_nl {
            // The untrusted comment is, as in minisign, not signed.
            assert!(r.is_ok(), "untrusted comment byte {i}: {r:?}");
            untouched += 1;
            continue;
        }
        match r {
            Err(
                BundleError::BadSignature { .. }
                | BundleError::MalformedSignature(_)
                | BundleError::UntrustedKey { .. },
            ) => {}
            other => panic!("signature byte {i} changed: {other:?}"),
        }
    }
    assert!(untouched > 10);
}

#[test]
fn trusted_comment_is_signed() {
    let key = SecretKey::generate().unwrap();
    let good = make(&key);
    let [_, sig, _] = layout(&good);
    let text = String::from_utf8(good[sig.clone()].to_vec()).unwrap();
    let at = sig.start + text.find("timestamp:0").unwrap() + "timestamp:".len();
    let mut bytes = good.clone();
    bytes[at] = b'1';
    match open(&bytes, &key) {
        Err(BundleError::BadSignature { reason, .. }) => {
            assert!(reason.contains("trusted comment"), "{reason}")
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn truncated_anywhere() {
    let key = SecretKey::generate().unwrap();
    let good = make(&key);
    for len in 0..good.len() {
        match open(&good[..len], &key) {
            Err(BundleError::Truncated { len: l, inside, .. }) => {
                assert_eq!(l, len as u64);
                let e = open(&good[..len], &key).unwrap_err().to_string();
                assert!(
                    e.contains(&format!("ends at byte {len}")) && e.contains(&inside),
                    "{e}"
                );
            }
            other => panic!("truncated to {len} bytes: {other:?}"),
        }
    }
    let [_, sig, _] = layout(&good);
    let e = open(&good[..sig.start + 10], &key).unwrap_err().to_string();
    assert!(e.contains("manifest.json.minisig"), "{e}");
    let e = open(&good[..good.len() - 1024], &key)
        .unwrap_err()
        .to_string();
    assert!(e.contains("end-of-archive"), "{e}");
}

#[test]
fn untrusted_key() {
    let signer = SecretKey::generate().unwrap();
    let other = SecretKey::generate().unwrap();
    let bytes = make(&signer);
    let err = open(&bytes, &other).unwrap_err();
    assert!(matches!(err, BundleError::UntrustedKey { key_id } if key_id == signer.key_id()));
    assert_eq!(
        err.to_string(),
        format!(
            "bundle signed by key {}, which is not trusted",
            signer.key_id()
        )
    );
    let none = TrustedKeys::default();
    assert!(matches!(
        bundle::open(&bytes, &none),
        Err(BundleError::UntrustedKey { .. })
    ));
}

#[test]
fn same_key_id_different_key() {
    // A forger who copies the trusted key's id into their own signature
    // gets a bad signature, not acceptance.
    let key = SecretKey::generate().unwrap();
    let forger = SecretKey::generate().unwrap();
    let forged = make(&forger);
    let text = String::from_utf8(
        container::read(&forged)
            .unwrap()
            .signature
            .unwrap()
            .to_vec(),
    )
    .unwrap();
    let mut lines: Vec<String> = text.lines().map(String::from).collect();
    use base64::Engine;
    let b64 = base64::engine::general_purpose::STANDARD;
    let mut raw = b64.decode(&lines[1]).unwrap();
    raw[2..10].copy_from_slice(&key.key_id().0);
    lines[1] = b64.encode(raw);
    let sig = lines.join("\n") + "\n";
    let m = container::read(&forged).unwrap();
    let bytes = container::write(m.manifest, sig.as_bytes(), m.module);
    assert!(matches!(
        open(&bytes, &key),
        Err(BundleError::BadSignature { .. })
    ));
}

#[test]
fn missing_or_empty_signature() {
    let key = SecretKey::generate().unwrap();
    let good = make(&key);
    let m = container::read(&good).unwrap();
    let unsigned = container::write_members(&[(MANIFEST, m.manifest), (MODULE, m.module)]).unwrap();
    let err = open(&unsigned, &key).unwrap_err();
    assert!(matches!(err, BundleError::Unsigned(_)), "{err:?}");
    assert!(
        err.to_string().contains("no `manifest.json.minisig`"),
        "{err}"
    );
    for empty in [&b""[..], b"\n", b"  \n\n"] {
        let bytes = container::write(m.manifest, empty, m.module);
        assert!(matches!(open(&bytes, &key), Err(BundleError::Unsigned(_))));
    }
}

#[test]
fn malformed_signatures() {
    let key = SecretKey::generate().unwrap();
    let good = make(&key);
    let m = container::read(&good).unwrap();
    let sig = std::str::from_utf8(m.signature.unwrap()).unwrap();
    let lines: Vec<&str> = sig.lines().collect();
    // Legacy (not prehashed) algorithm "Ed".
    use base64::Engine;
    let b64 = base64::engine::general_purpose::STANDARD;
    let mut raw = b64.decode(lines[1]).unwrap();
    raw[1] = b'd';
    let legacy = format!(
        "{}\n{}\n{}\n{}\n",
        lines[0],
        b64.encode(raw),
        lines[2],
        lines[3]
    );
    let cases = [
        (legacy, "legacy"),
        (sig.trim_end().to_string(), "newline"),
        (format!("{sig}extra\n"), "5 lines"),
        (
            sig.replacen("untrusted comment: ", "comment: ", 1),
            "line 1",
        ),
        (
            sig.replacen(
                "trusted comment: timestamp",
                "trusted comment: time\u{1b}stamp",
                1,
            ),
            "control",
        ),
        (sig.replace('\n', "\r\n"), "line 1"),
    ];
    for (text, needle) in cases {
        let bytes = container::write(m.manifest, text.as_bytes(), m.module);
        match open(&bytes, &key) {
            Err(BundleError::MalformedSignature(reason)) => {
                assert!(reason.contains(needle), "{needle}: {reason}")
            }
            other => panic!("{needle}: {other:?}"),
        }
    }
}

#[test]
fn extra_member() {
    let key = SecretKey::generate().unwrap();
    let good = make(&key);
    let m = container::read(&good).unwrap();
    let bytes = container::write_members(&[
        (MANIFEST, m.manifest),
        (SIGNATURE, m.signature.unwrap()),
        (MODULE, m.module),
        ("evil.ko", b"x"),
    ])
    .unwrap();
    let err = open(&bytes, &key).unwrap_err();
    assert!(matches!(err, BundleError::Malformed { .. }), "{err:?}");
    assert!(err.to_string().contains("extra member `evil.ko`"), "{err}");
}

#[test]
fn wrong_order_and_names() {
    let key = SecretKey::generate().unwrap();
    let good = make(&key);
    let m = container::read(&good).unwrap();
    let s = m.signature.unwrap();
    let cases: [&[(&str, &[u8])]; 5] = [
        &[(SIGNATURE, s), (MANIFEST, m.manifest), (MODULE, m.module)],
        &[(MANIFEST, m.manifest), (MODULE, m.module), (SIGNATURE, s)],
        &[
            (MANIFEST, m.manifest),
            (SIGNATURE, s),
            (MANIFEST, m.manifest),
        ],
        &[
            ("./manifest.json", m.manifest),
            (SIGNATURE, s),
            (MODULE, m.module),
        ],
        &[(MANIFEST, m.manifest), (SIGNATURE, s)],
    ];
    for members in cases {
        let bytes = container::write_members(members).unwrap();
        match open(&bytes, &key) {
            Err(BundleError::Malformed { reason, .. }) => {
                assert!(
                    reason.contains("where")
                        || reason.contains("ends after")
                        || reason.contains("extra"),
                    "{reason}"
                )
            }
            other => panic!(
                "{:?}: {other:?}",
                members.iter().map(|m| m.0).collect::<Vec<_>>()
            ),
        }
    }
}

#[test]
fn container_strictness() {
    let key = SecretKey::generate().unwrap();
    let good = make(&key);
    let [manifest, _, _] = layout(&good);
    let mut cases: Vec<(Vec<u8>, &str)> = Vec::new();
    // A header byte changed without fixing the checksum.
    let mut b = good.clone();
    b[140] = b'1';
    cases.push((b, "checksum"));
    // A symbolic link, checksum fixed.
    let mut b = good.clone();
    b[156] = b'2';
    crate::fix_checksum(&mut b[..512]);
    cases.push((b, "not a regular file"));
    // GNU tar's own format.
    let mut b = good.clone();
    b[257..265].copy_from_slice(b"ustar  \0");
    crate::fix_checksum(&mut b[..512]);
    cases.push((b, "GNU tar format"));
    // Hidden bytes in a member's padding.
    assert_ne!(manifest.end % 512, 0);
    let mut b = good.clone();
    b[manifest.end] = b'X';
    cases.push((b, "padding"));
    // Data after the end-of-archive marker.
    let mut b = good.clone();
    b.extend_from_slice(&[0u8; 511]);
    b.push(1);
    cases.push((b, "after the end-of-archive"));
    // Zero blocks but a ragged end.
    let mut b = good.clone();
    b.extend_from_slice(&[0u8; 100]);
    cases.push((b, "512-byte block"));
    // A name prefix (ustar's long-name field).
    let mut b = good.clone();
    b[345] = b'x';
    crate::fix_checksum(&mut b[..512]);
    cases.push((b, "prefix"));
    // Base-256 size.
    let mut b = good.clone();
    b[124] = 0x80;
    crate::fix_checksum(&mut b[..512]);
    cases.push((b, "size is not an octal number"));
    for (bytes, needle) in cases {
        match open(&bytes, &key) {
            Err(BundleError::Malformed { reason, .. }) => {
                assert!(reason.contains(needle), "{needle}: {reason}")
            }
            other => panic!("{needle}: {other:?}"),
        }
    }
    // More zero blocks at the end are fine (tar pads to records).
    let mut b = good.clone();
    b.extend_from_slice(&[0u8; 512 * 18]);
    open(&b, &key).unwrap();
}

#[test]
fn sizes_checked_before_use() {
    let key = SecretKey::generate().unwrap();
    let good = make(&key);
    let [manifest, sig, module] = layout(&good);
    let header = |r: &std::ops::Range<usize>| r.start - 512;
    for (h, size, what) in [
        (header(&manifest), bundle::MAX_MANIFEST + 1, "manifest.json"),
        (
            header(&sig),
            bundle::MAX_SIGNATURE + 1,
            "manifest.json.minisig",
        ),
        (header(&module), bundle::MAX_MODULE + 1, "module.ko"),
        (header(&module), 0o777_7777_7777, "module.ko"),
    ] {
        let mut b = good.clone();
        set_size(&mut b, h, size);
        match open(&b, &key) {
            Err(BundleError::TooLarge {
                what: w, size: s, ..
            }) => {
                assert_eq!((w.as_str(), s), (what, size));
            }
            other => panic!("{what}: {other:?}"),
        }
    }
    // A size within the limit but past the end of the file.
    let mut b = good.clone();
    set_size(&mut b, header(&module), 50 << 20);
    assert!(matches!(open(&b, &key), Err(BundleError::Truncated { .. })));
    // The whole file.
    let big = vec![0u8; (bundle::MAX_BUNDLE + 1) as usize];
    assert!(
        matches!(open(&big, &key), Err(BundleError::TooLarge { what, .. }) if what == "bundle")
    );
}

#[test]
fn oversized_module_refused_when_creating() {
    let key = SecretKey::generate().unwrap();
    let huge = vec![0u8; (bundle::MAX_MODULE + 1) as usize];
    assert!(matches!(
        Bundle::create(manifest(), &huge, &key, ""),
        Err(BundleError::TooLarge { what, .. }) if what == "module.ko"
    ));
}

fn manifest_error(key: &SecretKey, json: &[u8]) -> (String, String) {
    match open(&signed_raw(key, json, &module()), key) {
        Err(BundleError::ManifestInvalid(e)) => (e.field, e.reason),
        other => panic!("{other:?}"),
    }
}

#[test]
fn invalid_manifests_name_the_field() {
    let key = SecretKey::generate().unwrap();
    let mut cases: Vec<(bundle::Manifest, &str, &str)> = Vec::new();
    let mut m = manifest();
    m.name = "a".repeat(56);
    cases.push((m, "name", "1 to 55"));
    let mut m = manifest();
    m.name = "Has-Dash".into();
    cases.push((m, "name", "not allowed"));
    let mut m = manifest();
    m.level = 0;
    cases.push((m, "level", "≥ 1"));
    let mut m = manifest();
    m.format = 2;
    cases.push((m, "format", "not supported"));
    let mut m = manifest();
    m.description = "x".repeat(16 * 1024 + 1);
    cases.push((m, "description", "more than 16384"));
    let mut m = manifest();
    m.description = "bell\u{7}".into();
    cases.push((m, "description", "control"));
    let mut m = manifest();
    m.cves[1].description = "y".repeat(4097);
    cases.push((m, "cves[1].description", "more than 4096"));
    let mut m = manifest();
    m.cves[0].id = "CVE-2024-1".into();
    cases.push((m, "cves[0].id", "CVE-YYYY-NNNN"));
    let mut m = manifest();
    m.cves = (0..=MAX_CVES)
        .map(|i| Cve {
            id: format!("CVE-2024-{:05}", i),
            description: String::new(),
        })
        .collect();
    cases.push((m, "cves", "more than 4096"));
    let mut m = manifest();
    m.cves[1].id = m.cves[0].id.clone();
    cases.push((m, "cves[1].id", "twice"));
    let mut m = manifest();
    m.targets[1].functions[0].name = "f".repeat(512);
    cases.push((m, "targets[1].functions[0].name", "1 to 511"));
    let mut m = manifest();
    m.targets[0].functions.push(Function {
        name: "s_start".into(),
        sympos: 2,
    });
    cases.push((m, "targets[0].functions[2].name", "twice"));
    let mut m = manifest();
    m.targets[0].functions = (0..100_001)
        .map(|i| Function {
            name: format!("f{i}"),
            sympos: 0,
        })
        .collect();
    cases.push((m, "targets", "100001 functions"));
    let mut m = manifest();
    m.targets.clear();
    cases.push((m, "targets", "no target"));
    let mut m = manifest();
    m.targets[1].object = "../evil".into();
    cases.push((m, "targets[1].object", "not allowed"));
    let mut m = manifest();
    m.kernel.build_id = "ABCDEF".into();
    cases.push((m, "kernel.build_id", "lowercase hex"));
    let mut m = manifest();
    m.kernel.build_id = "abc".into();
    cases.push((m, "kernel.build_id", "lowercase hex"));
    let mut m = manifest();
    m.kernel.release = "6.1.0 evil".into();
    cases.push((m, "kernel.release", "not allowed"));
    let mut m = manifest();
    m.effective_version = Some("6.1.192-3\n".into());
    cases.push((m, "effective_version", "not allowed"));
    let mut m = manifest();
    m.created = "2025-03-01 10:20:30".into();
    cases.push((m, "created", "RFC 3339"));
    let mut m = manifest();
    m.toolchain.insert("compiler".into(), "gcc\u{1b}[2J".into());
    cases.push((m, "toolchain.compiler", "control"));
    let mut m = manifest();
    m.builder = Some("b".repeat(1025));
    cases.push((m, "builder", "more than 1024"));
    let not_carried = bundle::manifest::NotCarried {
        object: "kernel/audit.o".into(),
        subject: "audit_init".into(),
        rule: "init-code".into(),
        reason: "ran once, at boot".into(),
    };
    let mut m = manifest();
    m.not_carried = vec![not_carried.clone(), not_carried.clone()];
    m.not_carried[1].rule = String::new();
    cases.push((m, "not_carried[1].rule", "empty"));
    let mut m = manifest();
    m.not_carried = vec![not_carried.clone()];
    m.not_carried[0].subject = "a\nb".into();
    cases.push((m, "not_carried[0].subject", "control"));
    let mut m = manifest();
    m.not_carried = vec![not_carried];
    m.not_carried[0].rule = "r".repeat(65);
    cases.push((m, "not_carried[0].rule", "more than 64"));

    for (m, field, reason) in cases {
        // Bundle::create refuses to sign it...
        match Bundle::create(m.clone(), &module(), &key, "") {
            Err(BundleError::ManifestInvalid(e)) => assert_eq!(e.field, field),
            Err(BundleError::TooLarge { what, .. }) => assert_eq!(what, "manifest.json", "{field}"),
            other => panic!("{field}: {:?}", other.map(|_| ())),
        }
        // ...and a signed one is refused by open, naming the field.
        let json = json_of(m, &module());
        if json.len() as u64 > bundle::MAX_MANIFEST {
            continue;
        }
        let (f, r) = manifest_error(&key, &json);
        assert_eq!(f, field, "{r}");
        assert!(r.contains(reason), "{field}: {r}");
    }
}

#[test]
fn too_many_functions_for_the_manifest_size() {
    // 100 000 functions do not fit in 1 MiB of JSON: the size limit stops
    // them before the parser sees them.
    let key = SecretKey::generate().unwrap();
    let mut m = manifest();
    m.targets[0].functions = (0..100_000)
        .map(|i| Function {
            name: format!("function_{i}"),
            sympos: 0,
        })
        .collect();
    let json = json_of(m, &module());
    assert!(json.len() as u64 > bundle::MAX_MANIFEST);
    match open(&signed_raw(&key, &json, &module()), &key) {
        Err(BundleError::TooLarge { what, .. }) => assert_eq!(what, "manifest.json"),
        other => panic!("{other:?}"),
    }
}

#[test]
fn unknown_and_duplicate_fields() {
    let key = SecretKey::generate().unwrap();
    let json = String::from_utf8(json_of(manifest(), &module())).unwrap();
    let (f, r) = manifest_error(
        &key,
        json.replacen("{\n", "{\n  \"extra\": 1,\n", 1).as_bytes(),
    );
    assert!(r.contains("unknown field `extra`"), "{f}: {r}");
    let (f, r) = manifest_error(
        &key,
        json.replacen("\"release\"", "\"arch\": \"x86\", \"release\"", 1)
            .as_bytes(),
    );
    assert_eq!(f, "kernel.arch");
    assert!(r.contains("unknown field `arch`"), "{r}");
    let (_, r) = manifest_error(
        &key,
        json.replacen("\"level\": 2", "\"level\": 2, \"level\": 3", 1)
            .as_bytes(),
    );
    assert!(r.contains("duplicate field `level`"), "{r}");
    let (f, r) = manifest_error(
        &key,
        json.replacen("\"compiler\"", "\"linker\": \"x\", \"compiler\"", 1)
            .as_bytes(),
    );
    assert!(
        f == "toolchain" && r.contains("duplicate key `linker`"),
        "{f}: {r}"
    );
    let (_, r) = manifest_error(&key, format!("{json} {{}}").as_bytes());
    assert!(r.contains("data after the manifest"), "{r}");
    let (f, r) = manifest_error(
        &key,
        json.replacen("\"level\": 2", "\"level\": -2", 1).as_bytes(),
    );
    assert_eq!(f, "level", "{r}");
    let (f, _) = manifest_error(&key, b"[]");
    assert_eq!(f, "");
}

#[test]
fn module_size_mismatch() {
    let key = SecretKey::generate().unwrap();
    let mut other = module();
    other.push(0);
    // Manifest pins `module()`, the archive carries one byte more.
    let json = json_of(manifest(), &module());
    match open(&signed_raw(&key, &json, &other), &key) {
        Err(BundleError::ModuleSizeMismatch { expected, actual }) => {
            assert_eq!(expected + 1, actual)
        }
        other => panic!("{other:?}"),
    }
}
