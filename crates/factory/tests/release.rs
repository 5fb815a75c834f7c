//! `noreboot-build release` on the example catalog (the two revision fixes
//! of 6.1.192 and netlabel's policy fix with its hook, diffs made from
//! Debian's source packages at run time) for two real 6.1 builds: the
//! pinned 6.1.170-3 build (takes nfsd's fix at an offset and netlabel's;
//! lacks the backport the ext4 fix repairs) and 6.1.192-2 (takes nfsd's
//! fix; has the other two, so its level may say 6.1.192-3). Each level is
//! built and verified in a guest of its build. The first run is killed
//! with SIGKILL mid-way and started again; then an unchanged catalog
//! builds nothing, and one added fix rebuilds exactly the build it reaches.

use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

const OLD: &str = "6.1.0-47-cloud-amd64";
const NEW: &str = "6.1.0-56-cloud-amd64";

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        let t = to.join(e.file_name());
        if e.file_type().unwrap().is_dir() {
            copy_dir(&e.path(), &t);
        } else {
            std::fs::copy(e.path(), t).unwrap();
        }
    }
}

struct Setup {
    _dir: tempfile::TempDir,
    catalog: PathBuf,
    key: PathBuf,
    public: PathBuf,
    out: PathBuf,
}

fn setup() -> Setup {
    let dir = tempfile::tempdir().unwrap();
    let catalog = dir.path().join("catalog");
    copy_dir(
        Path::new(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../examples/catalog"
        )),
        &catalog,
    );
    let keys = dir.path().join("keys");
    let st = Command::new(env!("CARGO_BIN_EXE_noreboot-build"))
        .args(["keygen", "-o"])
        .arg(&keys)
        .output()
        .unwrap();
    assert!(st.status.success(), "{st:?}");
    let out = dir.path().join("out");
    Setup {
        catalog,
        key: keys.join("noreboot.key"),
        public: keys.join("noreboot.pub"),
        out,
        _dir: dir,
    }
}

fn release(s: &Setup) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_noreboot-build"));
    c.args(["release", "--json", "--jobs", "1", "--catalog"])
        .arg(&s.catalog)
        .args(["--kernel", OLD, "--kernel", NEW, "--key"])
        .arg(&s.key)
        .arg("-o")
        .arg(&s.out)
        .stdin(std::process::Stdio::null());
    c
}

/// Runs a release to its end; its outcomes by release.
fn run(s: &Setup) -> Vec<serde_json::Value> {
    let out = release(s).output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    serde_json::from_slice::<Vec<serde_json::Value>>(&out.stdout)
        .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&out.stdout)))
}

fn state(s: &Setup, release: &str) -> serde_json::Value {
    let p = s.catalog.join("state").join(format!("{release}.json"));
    serde_json::from_slice(&std::fs::read(&p).unwrap()).unwrap()
}

fn levels(s: &Setup, release: &str) -> Vec<u64> {
    state(s, release)["levels"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["level"].as_u64().unwrap())
        .collect()
}

fn outcome<'a>(all: &'a [serde_json::Value], release: &str) -> &'a serde_json::Value {
    all.iter().find(|o| o["release"] == release).unwrap()
}

fn fix_state(o: &serde_json::Value, id: &str) -> String {
    o["fixes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["id"] == id)
        .unwrap_or_else(|| panic!("no {id} in {o}"))["state"]
        .as_str()
        .unwrap()
        .to_string()
}

/// The bundle's manifest, its signature checked with the release key.
fn bundle_manifest(s: &Setup, path: &str) -> bundle::Manifest {
    let bytes = bundle::read_file(Path::new(path)).unwrap();
    let key = bundle::PublicKey::read(&s.public).unwrap();
    let trusted = bundle::TrustedKeys::from_keys([key]).unwrap();
    bundle::open(&bytes, &trusted).unwrap().manifest
}

#[test]
#[ignore = "slow tier: builds and verifies two levels in guests of two 6.1 builds; scripts/test runs it"]
fn a_catalog_is_released_resumed_after_sigkill_and_rebuilt_only_where_it_changed() {
    let s = setup();

    // The first run, killed with SIGKILL (the whole process group: the
    // compilers and the guest too) once the first build's level is
    // recorded and the second build's level is being made.
    let mut child = release(&s)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .process_group(0)
        .spawn()
        .unwrap();
    let started = Instant::now();
    let second_started = s.out.join(NEW).join("level-1");
    loop {
        assert!(
            child.try_wait().unwrap().is_none(),
            "the release ended before it could be killed"
        );
        if s.catalog.join("state").join(format!("{OLD}.json")).exists() && second_started.exists() {
            break;
        }
        assert!(started.elapsed() < Duration::from_secs(1200), "no progress");
        std::thread::sleep(Duration::from_millis(200));
    }
    std::thread::sleep(Duration::from_secs(2));
    let pgid = child.id().to_string();
    let st = Command::new("kill")
        .args(["-KILL", "--", &format!("-{pgid}")])
        .status()
        .unwrap();
    assert!(st.success());
    let _ = child.wait();
    assert_eq!(levels(&s, OLD), vec![1]);
    assert!(
        !s.catalog.join("state").join(format!("{NEW}.json")).exists(),
        "killed before the second build's level was recorded"
    );

    // Started again: completes, with no number skipped or repeated.
    let all = run(&s);
    let old = outcome(&all, OLD);
    let new = outcome(&all, NEW);
    assert_eq!(old["result"], "up-to-date", "{old}");
    assert_eq!(old["level"], 1);
    assert_eq!(new["result"], "released", "{new}");
    assert_eq!(new["level"], 1);
    assert_eq!(levels(&s, OLD), vec![1]);
    assert_eq!(levels(&s, NEW), vec![1]);

    // What each build's level carries, and why the others are left out.
    assert_eq!(fix_state(old, "cve-2026-99362"), "in*");
    assert_eq!(fix_state(old, "netlabel-addr-policy"), "in");
    assert_eq!(fix_state(old, "ext4-mballoc-null-folio"), "conflict");
    assert_eq!(fix_state(new, "cve-2026-99362"), "in");
    assert_eq!(fix_state(new, "ext4-mballoc-null-folio"), "contained");
    assert_eq!(fix_state(new, "netlabel-addr-policy"), "contained");
    assert_eq!(
        state(&s, OLD)["levels"][0]["fixes"],
        serde_json::json!(["cve-2026-99362", "netlabel-addr-policy"])
    );

    // The bundles: signed, each for its own build and level; only the
    // build that has both revision fixes claims 6.1.192-3.
    let m_new = bundle_manifest(&s, new["bundle"].as_str().unwrap());
    assert_eq!(m_new.kernel.release, NEW);
    assert_eq!(m_new.level, 1);
    assert_eq!(m_new.effective_version.as_deref(), Some("6.1.192-3"));
    assert_eq!(
        m_new.cves.iter().map(|c| c.id.as_str()).collect::<Vec<_>>(),
        ["CVE-2026-99362"]
    );
    let old_bundle = s.out.join(OLD).join("level-1.nrb");
    let m_old = bundle_manifest(&s, old_bundle.to_str().unwrap());
    assert_eq!(m_old.kernel.release, OLD);
    assert_eq!(
        m_old.effective_version, None,
        "a partial level claims no version"
    );
    let targets: Vec<&str> = m_old.targets.iter().map(|t| t.object.as_str()).collect();
    assert!(targets.contains(&"nfsd"), "{targets:?}");

    // Unchanged catalog: nothing is built.
    let all = run(&s);
    for o in &all {
        assert_eq!(o["result"], "up-to-date", "{o}");
    }
    assert!(!s.out.join(OLD).join("level-2").exists());

    // One fix added, which 6.1.192-2 already has: only the old build gets
    // a new level, carrying all three.
    let fix = s.catalog.join("fixes").join("seg6-hmac");
    std::fs::create_dir_all(&fix).unwrap();
    std::fs::write(
        fix.join("fix.toml"),
        "description = \"ipv6: seg6: HMAC validation fixes of 6.1.192-1\"\n\n[source]\nfrom = \"6.1.170-3\"\nto = \"6.1.192-2\"\nfiles = [\"net/ipv6/seg6_hmac.c\"]\n",
    )
    .unwrap();
    let all = run(&s);
    let old = outcome(&all, OLD);
    let new = outcome(&all, NEW);
    assert_eq!(old["result"], "released", "{old}");
    assert_eq!(old["level"], 2);
    assert_eq!(fix_state(old, "seg6-hmac"), "in");
    assert_eq!(new["result"], "up-to-date", "{new}");
    assert_eq!(fix_state(new, "seg6-hmac"), "contained");
    assert_eq!(levels(&s, OLD), vec![1, 2]);
    assert_eq!(levels(&s, NEW), vec![1]);
    assert_eq!(
        state(&s, OLD)["levels"][1]["fixes"],
        serde_json::json!(["cve-2026-99362", "netlabel-addr-policy", "seg6-hmac"])
    );
    let m = bundle_manifest(&s, old["bundle"].as_str().unwrap());
    assert_eq!(m.level, 2);
    assert!(
        m.targets.iter().any(|t| t.object == "vmlinux"),
        "{:?}",
        m.targets
    );
}
