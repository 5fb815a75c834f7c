//! `noreboot-build keygen` and `noreboot-build bundle` end to end, on a
//! synthetic factory output directory (the real factory takes minutes).

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Command, Output};

use sha2::Digest;

fn nb(args: &[&str], cwd: &Path) -> Output {
    let out = Command::new(env!("CARGO_BIN_EXE_noreboot-build"))
        .args(args)
        .current_dir(cwd)
        .output()
        .unwrap();
    eprintln!(
        "noreboot-build {}: {}\n{}{}",
        args.join(" "),
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

const BUILD_ID: &str = "8d1e4a6c0f27b93e5a1d2c3b4a59687766554433";

/// The marker the factory writes for this output's module.
fn marker(patch: &str, kernel: &str) -> String {
    format!("patch={patch} kernel={kernel} build={}", "ab".repeat(32))
}

fn note(owner: &str, n_type: u32, desc: &[u8]) -> Vec<u8> {
    let mut v = Vec::new();
    v.extend_from_slice(&(owner.len() as u32 + 1).to_le_bytes());
    v.extend_from_slice(&(desc.len() as u32).to_le_bytes());
    v.extend_from_slice(&n_type.to_le_bytes());
    v.extend_from_slice(owner.as_bytes());
    v.push(0);
    while !v.len().is_multiple_of(4) {
        v.push(0);
    }
    v.extend_from_slice(desc);
    while !v.len().is_multiple_of(4) {
        v.push(0);
    }
    v
}

/// A module file with what bundling looks at: the marker note (`None`:
/// a factory from before markers) and kbuild's GNU build-id note.
fn module(marker: Option<&str>, build_id: bool) -> Vec<u8> {
    use object::write::Object;
    use object::{Architecture, BinaryFormat, Endianness, SectionFlags, SectionKind};
    let mut o = Object::new(BinaryFormat::Elf, Architecture::X86_64, Endianness::Little);
    let text = o.add_section(Vec::new(), b".text".to_vec(), SectionKind::Text);
    o.append_section_data(text, &[0xc3; 5000], 16);
    let mut notes = Vec::new();
    if let Some(m) = marker {
        let mut desc = m.as_bytes().to_vec();
        desc.push(0);
        notes.push((".note.noreboot", note("noreboot", 1, &desc)));
    }
    if build_id {
        notes.push((".note.gnu.build-id", note("GNU", 3, &[0x5a; 20])));
    }
    for (name, data) in notes {
        let s = o.add_section(Vec::new(), name.as_bytes().to_vec(), SectionKind::Note);
        o.section_mut(s).flags = SectionFlags::Elf {
            sh_flags: object::elf::SHF_ALLOC.into(),
        };
        o.append_section_data(s, &data, 4);
    }
    o.write().unwrap()
}

fn good_module() -> Vec<u8> {
    module(Some(&marker("nr_cve_2024_1086", BUILD_ID)), true)
}

const DESCRIPTION: &str =
    "nf_tables: reject verdicts that drop into a chain\n\nBackport of f342de4e2f33.";

/// A factory output directory as `factory::build` writes it: manifest.json
/// (the factory's format, tuples as arrays) and the module it names.
fn factory_output(dir: &Path, ko: &[u8]) {
    std::fs::create_dir_all(dir).unwrap();
    std::fs::write(dir.join("nr_cve_2024_1086.ko"), ko).unwrap();
    let manifest = serde_json::json!({
        "name": "nr-cve-2024-1086",
        "kernel_release": "6.1.0-47-cloud-amd64",
        "kernel_build_id": BUILD_ID,
        "kernel_version": "6.1.170-3",
        "targets": [
            {
                "object": "nf_tables",
                "functions": [["nft_verdict_init", 0], ["nf_tables_newrule", 0]],
                "new_functions": [],
                "objects": ["net/netfilter/nf_tables_api.o"],
                "matched": [{"function": "nft_verdict_init", "bytes": 412, "masked": 40}],
                "notes": []
            },
            {
                "object": "vmlinux",
                "functions": [["s_start", 2]],
                "new_functions": ["helper"],
                "objects": ["kernel/kallsyms.o"],
                "matched": [],
                "notes": ["a note"],
                "not_carried": [{
                    "object": "kernel/kallsyms.o",
                    "subject": "kallsyms_init",
                    "rule": "init-code",
                    "reason": "changed .init.text code ran once, at boot"
                }]
            }
        ],
        "cves": ["CVE-2024-1086", "CVE-2023-52340"],
        "description": DESCRIPTION,
        "patches": [["fix.patch", "00".repeat(32)]],
        "module": ["nr_cve_2024_1086.ko", hex::encode(sha2::Sha256::digest(ko))],
        "signed": false,
        "toolchain": {"compiler": "gcc-12 (Debian 12.2.0-14) 12.2.0", "linker": "GNU ld 2.40", "noreboot-build": "0.1.0"},
        "built_at": "2025-03-01T10:20:30Z",
        "phases": [["workspace", 0.5], ["diff", 1.25]],
        "verify": {
            "transition_seconds": 1.0, "unpatch_seconds": 1.0, "patched": [["vmlinux", "1"]],
            "checks": [], "taint": 32768, "problems": [], "seconds": 30.0
        }
    });
    std::fs::write(
        dir.join("manifest.json"),
        serde_json::to_string_pretty(&manifest).unwrap(),
    )
    .unwrap();
}

#[test]
fn keygen_then_bundle() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    let ko = good_module();
    factory_output(&d.join("out"), &ko);

    // keygen: files, modes, no silent overwrite.
    assert!(nb(&["keygen", "-o", "keys"], d).status.success());
    let mode = std::fs::metadata(d.join("keys/noreboot.key"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);
    let first = std::fs::read(d.join("keys/noreboot.pub")).unwrap();
    let again = nb(&["keygen", "-o", "keys"], d);
    assert_eq!(again.status.code(), Some(1));
    assert!(
        stderr(&again).contains("already exists"),
        "{}",
        stderr(&again)
    );
    assert_eq!(std::fs::read(d.join("keys/noreboot.pub")).unwrap(), first);
    assert!(nb(&["keygen", "-o", "keys", "--force"], d).status.success());
    assert_ne!(std::fs::read(d.join("keys/noreboot.pub")).unwrap(), first);

    // bundle, default output path.
    let out = nb(
        &[
            "bundle",
            "--from",
            "out",
            "--level",
            "3",
            "--key",
            "keys/noreboot.key",
            "--effective-version",
            "6.1.192-3",
            "--cve-description",
            "CVE-2023-52340=ipv6: Packet Too Big memory exhaustion",
        ],
        d,
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let path = d.join("out/nr_cve_2024_1086-3.nrb");
    let bytes = bundle::read_file(&path).unwrap();
    let trusted = bundle::TrustedKeys::load_dir(&d.join("keys")).unwrap();
    let b = bundle::open(&bytes, &trusted).unwrap();
    assert!(String::from_utf8_lossy(&out.stdout).contains(&b.signer.to_string()));
    let m = &b.manifest;
    assert_eq!(b.module, ko);
    assert_eq!((m.name.as_str(), m.level), ("nr_cve_2024_1086", 3));
    assert_eq!(m.kernel.release, "6.1.0-47-cloud-amd64");
    assert_eq!(
        m.kernel.build_id,
        "8d1e4a6c0f27b93e5a1d2c3b4a59687766554433"
    );
    assert_eq!(m.kernel.version.as_deref(), Some("6.1.170-3"));
    assert_eq!(m.effective_version.as_deref(), Some("6.1.192-3"));
    assert_eq!(m.description, DESCRIPTION);
    // What the module leaves out travels signed with it.
    assert_eq!(
        m.not_carried,
        [bundle::manifest::NotCarried {
            object: "kernel/kallsyms.o".into(),
            subject: "kallsyms_init".into(),
            rule: "init-code".into(),
            reason: "changed .init.text code ran once, at boot".into(),
        }]
    );
    let cves: Vec<(&str, &str)> = m
        .cves
        .iter()
        .map(|c| (c.id.as_str(), c.description.as_str()))
        .collect();
    assert_eq!(
        cves,
        [
            ("CVE-2024-1086", DESCRIPTION),
            ("CVE-2023-52340", "ipv6: Packet Too Big memory exhaustion")
        ]
    );
    let targets: Vec<(&str, Vec<(&str, u32)>)> = m
        .targets
        .iter()
        .map(|t| {
            (
                t.object.as_str(),
                t.functions
                    .iter()
                    .map(|f| (f.name.as_str(), f.sympos))
                    .collect(),
            )
        })
        .collect();
    assert_eq!(
        targets,
        [
            (
                "nf_tables",
                vec![("nft_verdict_init", 0), ("nf_tables_newrule", 0)]
            ),
            ("vmlinux", vec![("s_start", 2)]),
        ]
    );
    assert_eq!(m.toolchain["compiler"], "gcc-12 (Debian 12.2.0-14) 12.2.0");
    assert_eq!(m.module.size, ko.len() as u64);
    assert!(
        b.trusted_comment.contains("nr_cve_2024_1086 level 3"),
        "{}",
        b.trusted_comment
    );

    // -o and --json.
    let out = nb(
        &[
            "bundle",
            "--from",
            "out",
            "--level",
            "1",
            "--key",
            "keys/noreboot.key",
            "-o",
            "x.nrb",
            "--json",
        ],
        d,
    );
    assert!(out.status.success());
    let printed: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(printed["level"], 1);
    bundle::open(&bundle::read_file(&d.join("x.nrb")).unwrap(), &trusted).unwrap();
}

#[test]
fn bundle_refusals() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    factory_output(&d.join("out"), &good_module());
    assert!(nb(&["keygen", "-o", "keys"], d).status.success());
    let base = ["bundle", "--from", "out", "--key", "keys/noreboot.key"];
    let run = |extra: &[&str]| nb(&[&base[..], extra].concat(), d);

    // Usage: level 0, a CVE the patch does not fix, a malformed argument.
    for extra in [
        &["--level", "0"][..],
        &["--level", "1", "--cve-description", "CVE-2020-0001=x"],
        &["--level", "1", "--cve-description", "no-equals-sign"],
    ] {
        assert_eq!(run(extra).status.code(), Some(2), "{extra:?}");
    }
    // The bundle format's own rules, e.g. an effective version with a space.
    let o = run(&["--level", "1", "--effective-version", "6.1 x"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("effective_version"), "{}", stderr(&o));
    // A module changed since the factory hashed it.
    std::fs::write(d.join("out/nr_cve_2024_1086.ko"), b"\x7fELF other").unwrap();
    let o = run(&["--level", "1"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("sha256"), "{}", stderr(&o));
    // A key that is not a key.
    factory_output(&d.join("out"), &good_module());
    let o = nb(
        &[
            "bundle",
            "--from",
            "out",
            "--key",
            "keys/noreboot.pub",
            "--level",
            "1",
        ],
        d,
    );
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("noreboot.pub"), "{}", stderr(&o));
    // Failed verification in the lab.
    let text = std::fs::read_to_string(d.join("out/manifest.json")).unwrap();
    let text = text.replace("\"problems\": []", "\"problems\": [\"taint changed\"]");
    std::fs::write(d.join("out/manifest.json"), text).unwrap();
    let o = run(&["--level", "1"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("taint changed"), "{}", stderr(&o));
    assert!(!d.join("out/nr_cve_2024_1086-1.nrb").exists());
}

/// A module the hosts could not tell from another of its name is not
/// bundled; one from a factory before markers is, by its GNU build-id.
#[test]
fn bundle_checks_the_module_identity() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    assert!(nb(&["keygen", "-o", "keys"], d).status.success());
    let run = || {
        nb(
            &[
                "bundle",
                "--from",
                "out",
                "--key",
                "keys/noreboot.key",
                "--level",
                "1",
            ],
            d,
        )
    };
    for (ko, expect) in [
        (
            module(None, false),
            "neither a noreboot marker nor a GNU build-id",
        ),
        (
            module(Some(&marker("another_patch", BUILD_ID)), true),
            "is not patch nr_cve_2024_1086",
        ),
        (
            module(Some(&marker("nr_cve_2024_1086", &"00".repeat(20))), true),
            "for kernel build-id 8d1e4a6c",
        ),
        (
            module(Some("patch=nr_cve_2024_1086 no-build"), true),
            "noreboot marker",
        ),
    ] {
        factory_output(&d.join("out"), &ko);
        let o = run();
        assert_eq!(o.status.code(), Some(1), "{expect}");
        assert!(stderr(&o).contains(expect), "{expect}: {}", stderr(&o));
        assert!(!d.join("out/nr_cve_2024_1086-1.nrb").exists());
    }
    factory_output(&d.join("out"), &module(None, true));
    let o = run();
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("carries no noreboot marker"),
        "{}",
        stderr(&o)
    );
}
