//! Interoperability with the standard tools a person would use: GNU tar
//! extracts a bundle, `minisign -V` verifies its manifest, `sha256sum`
//! matches the module; minisign's own keys and signatures work here, and
//! a bundle repacked by GNU tar in ustar format still opens.

use std::process::{Command, Stdio};

use bundle::container::{MANIFEST, MODULE, SIGNATURE};
use bundle::signature::Signature;
use bundle::{Bundle, PublicKey, SecretKey};

use crate::{manifest, module, trusted};

/// The tool, or a failure saying how to get it: these tests must not pass
/// silently where the tool is missing.
fn tool(name: &str) -> Command {
    let found = Command::new(name)
        .arg(if name == "minisign" {
            "-v"
        } else {
            "--version"
        })
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok();
    assert!(
        found,
        "`{name}` is not installed: run scripts/setup (it installs the Debian `{name}` package)"
    );
    Command::new(name)
}

fn run(cmd: &mut Command) -> String {
    let out = cmd.stdin(Stdio::null()).output().unwrap();
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn fails(cmd: &mut Command) -> bool {
    !cmd.stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .unwrap()
        .success()
}

#[test]
fn tar_minisign_sha256sum_check_a_bundle() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let key = SecretKey::generate().unwrap();
    key.public_key().write(&d.join("key.pub")).unwrap();
    let b = Bundle::create(manifest(), &module(), &key, "noreboot test").unwrap();
    b.write_to(&d.join("foo.nrb")).unwrap();

    let list = run(tool("tar").arg("-tf").arg(d.join("foo.nrb")));
    assert_eq!(
        list.lines().collect::<Vec<_>>(),
        [MANIFEST, SIGNATURE, MODULE]
    );
    let verbose = run(tool("tar").arg("-tvf").arg(d.join("foo.nrb")));
    for line in verbose.lines() {
        assert!(line.starts_with("-rw-r--r-- 0/0"), "{line}");
        assert!(line.contains("1970-01-01"), "{line}");
    }
    run(tool("tar").arg("-xf").arg("foo.nrb").current_dir(d));
    let out = run(tool("minisign")
        .args(["-Vm", MANIFEST, "-p", "key.pub"])
        .current_dir(d));
    assert!(out.contains("Trusted comment: noreboot test"), "{out}");
    let sum = run(tool("sha256sum").arg(MODULE).current_dir(d));
    assert_eq!(
        sum.split_whitespace().next(),
        Some(b.manifest().module.sha256.as_str())
    );

    // minisign refuses a changed manifest too.
    let mut text = std::fs::read(d.join(MANIFEST)).unwrap();
    text[10] ^= 1;
    std::fs::write(d.join(MANIFEST), text).unwrap();
    assert!(fails(
        tool("minisign")
            .args(["-Vm", MANIFEST, "-p", "key.pub"])
            .current_dir(d)
    ));
}

#[test]
fn minisign_signs_with_our_secret_key() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let key = SecretKey::generate().unwrap();
    key.write(&d.join("noreboot.key")).unwrap();
    std::fs::write(d.join("data"), b"some data\n").unwrap();
    // No password prompt: stdin is closed, so a prompt would fail.
    run(tool("minisign")
        .args([
            "-S",
            "-s",
            "noreboot.key",
            "-m",
            "data",
            "-t",
            "signed by minisign",
        ])
        .current_dir(d));
    let sig = Signature::parse(&std::fs::read(d.join("data.minisig")).unwrap()).unwrap();
    assert_eq!(sig.key_id(), key.key_id());
    assert_eq!(sig.trusted_comment(), "signed by minisign");
    sig.verify(b"some data\n", &trusted(&key)).unwrap();
    assert!(sig.verify(b"other data\n", &trusted(&key)).is_err());
}

#[test]
fn keys_made_by_minisign() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    run(tool("minisign")
        .args(["-G", "-W", "-p", "m.pub", "-s", "m.key"])
        .current_dir(d));
    let sk = SecretKey::read(&d.join("m.key")).unwrap();
    let pk = PublicKey::read(&d.join("m.pub")).unwrap();
    assert_eq!(sk.public_key(), pk);
    let pub_text = std::fs::read_to_string(d.join("m.pub")).unwrap();
    // minisign's comment writes the id without leading zeros
    // ("minisign public key C5AE6B07C528298"): compared as a number.
    let written = pub_text
        .lines()
        .next()
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|h| u64::from_str_radix(h.trim(), 16).ok())
        .unwrap_or_else(|| panic!("no key id in {pub_text}"));
    assert_eq!(
        written,
        u64::from_str_radix(&pk.key_id().to_string(), 16).unwrap(),
        "{pub_text}"
    );
    let b = Bundle::create(manifest(), &module(), &sk, "made with a minisign key").unwrap();
    bundle::open(b.bytes(), &trusted(&sk)).unwrap();
}

#[test]
fn repacked_by_gnu_tar() {
    // GNU tar writes owners, times and record padding; a bundle it packs
    // in ustar format, from the extracted members, still opens.
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let key = SecretKey::generate().unwrap();
    let b = Bundle::create(manifest(), &module(), &key, "x").unwrap();
    b.write_to(&d.join("a.nrb")).unwrap();
    run(tool("tar").arg("-xf").arg("a.nrb").current_dir(d));
    run(tool("tar")
        .args([
            "--format=ustar",
            "-cf",
            "b.nrb",
            MANIFEST,
            SIGNATURE,
            MODULE,
        ])
        .current_dir(d));
    let repacked = std::fs::read(d.join("b.nrb")).unwrap();
    bundle::open(&repacked, &trusted(&key)).unwrap();
    // GNU's default format is refused with advice.
    run(tool("tar")
        .args(["--format=gnu", "-cf", "c.nrb", MANIFEST, SIGNATURE, MODULE])
        .current_dir(d));
    let err = bundle::open(&std::fs::read(d.join("c.nrb")).unwrap(), &trusted(&key))
        .unwrap_err()
        .to_string();
    assert!(err.contains("--format=ustar"), "{err}");
}
