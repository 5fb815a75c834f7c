//! Fixtures for the agent's guest tests: real live patch levels for the
//! 6.1 cloud kernel (and for the newest Debian 13 build the archive
//! offers) built by noreboot-build from edits of its own source
//! (level 1 and 2 change /proc/cmdline; level 3 also patches kthreadd,
//! which never leaves its function, so its transition stalls), signed
//! into bundles with a test key, plus bad bundles of every kind, and live
//! patch modules that are not levels (as another vendor's would be).
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use kernel_tree::{discover, AptArchive, Cache, Release, Workspace};

pub const RELEASE: &str = "6.1.0-47-cloud-amd64";

/// Everything the tests need, built once per test binary.
pub struct Fixture {
    pub ws: Workspace,
    pub dir: PathBuf,
    pub agent: PathBuf,
    pub secret: PathBuf,
    pub public: PathBuf,
    /// Level bundles: 1, 2, 3 (stall).
    pub levels: Vec<PathBuf>,
    /// The kernel's build-id.
    pub build_id: String,
}

/// A binary of this workspace beside the test executable, built on demand
/// (cargo builds only this package's binaries for its tests).
pub fn workspace_bin(name: &str, package: &str) -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let dir = exe.parent().unwrap().parent().unwrap();
    let bin = dir.join(name);
    let profile = dir.file_name().unwrap().to_str().unwrap().to_string();
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let mut cmd = Command::new(cargo);
    cmd.args(["build", "--quiet", "-p", package, "--bin", name]);
    // `cargo test` runs this test with the agent's CARGO_MANIFEST_DIR and
    // CARGO_PKG_*. Build scripts that read those declare them
    // rerun-if-env-changed (ring's does), so a nested cargo that inherits
    // them reran ring's build script and rebuilt ring, rustls and the
    // server above them on every test run (a minute here), and a plain
    // `cargo build` rebuilt them back.
    for (key, _) in std::env::vars_os() {
        let key = key.to_string_lossy();
        if key.starts_with("CARGO_PKG_")
            || key.starts_with("CARGO_CRATE_")
            || key.starts_with("CARGO_BIN_")
            || matches!(
                &*key,
                "CARGO_MANIFEST_DIR" | "CARGO_MANIFEST_PATH" | "CARGO_PRIMARY_PACKAGE"
            )
        {
            cmd.env_remove(&*key);
        }
    }
    if profile == "release" {
        cmd.arg("--release");
    }
    let st = cmd.status().unwrap();
    assert!(st.success(), "building {name} failed");
    assert!(bin.is_file(), "{} missing after the build", bin.display());
    bin
}

pub fn run(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "{cmd:?} failed ({}):\n{}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn unified_diff(rel: &str, old: &Path, new: &Path) -> String {
    let out = Command::new("diff")
        .arg("-u")
        .arg(format!("--label=a/{rel}"))
        .arg(format!("--label=b/{rel}"))
        .arg(old)
        .arg(new)
        .output()
        .unwrap();
    String::from_utf8(out.stdout).unwrap()
}

/// A patch of `rel` in `tree` with each `from` replaced by `to` once.
fn edit(tree: &Path, rel: &str, edits: &[(&str, &str)], out: &Path) -> PathBuf {
    let mut text = std::fs::read_to_string(tree.join(rel)).unwrap();
    for (from, to) in edits {
        assert!(text.contains(from), "{rel} has no {from:?}");
        text = text.replacen(from, to, 1);
    }
    let name = rel.replace('/', "_");
    let edited = out.join(format!("{name}.edited"));
    std::fs::write(&edited, text).unwrap();
    let patch = out.join(format!("{name}-{}.patch", edits.len() + edits[0].1.len()));
    std::fs::write(&patch, unified_diff(rel, &tree.join(rel), &edited)).unwrap();
    patch
}

fn cmdline_patch(tree: &Path, level: u32, out: &Path) -> PathBuf {
    let d = out.join(format!("cmdline-{level}"));
    std::fs::create_dir_all(&d).unwrap();
    edit(
        tree,
        "fs/proc/cmdline.c",
        &[(
            "\tseq_puts(m, saved_command_line);",
            &format!(
                "\tseq_puts(m, \"noreboot-level-{level} \");\n\tseq_puts(m, saved_command_line);"
            ),
        )],
        &d,
    )
}

fn stall_patch(tree: &Path, out: &Path) -> PathBuf {
    let d = out.join("stall");
    std::fs::create_dir_all(&d).unwrap();
    // kthreadd sleeps inside kthreadd() for ever: no transition of a patch
    // replacing it can finish.
    edit(
        tree,
        "kernel/kthread.c",
        &[(
            "\t\t__set_current_state(TASK_RUNNING);\n\n\t\tspin_lock(&kthread_create_lock);",
            "\t\t__set_current_state(TASK_RUNNING);\n\t\tcpu_relax();\n\n\t\tspin_lock(&kthread_create_lock);",
        )],
        &d,
    )
}

fn factory(build: &Path, release: &str, patches: &[&Path], name: &str, cves: &[&str], out: &Path) {
    let mut cmd = Command::new(build);
    cmd.args(["--kernel", release, "--name", name, "-o"])
        .arg(out);
    for p in patches {
        cmd.arg("--patch").arg(p);
    }
    for c in cves {
        cmd.args(["--cve", c]);
    }
    cmd.args(["--description", &format!("test level {name}")]);
    run(&mut cmd);
}

/// Live patch modules for the 6.1 fixture's kernel that are no level of
/// the agent's, built by noreboot-build like the levels but never bundled:
/// loaded by hand in a guest, they are what another vendor's patch looks
/// like to the agent.
pub struct ForeignModules {
    /// `nrforeign.ko`: prefixes /proc/cmdline with `foreign-patch `.
    pub foreign: PathBuf,
    /// `nrtest_l2.ko` built from another edit (`impostor-level-2 `): named
    /// like level 2, but not level 2's module.
    pub impostor: PathBuf,
}

/// The 6.1 fixture's foreign modules, built once per test binary.
pub fn foreign_modules() -> &'static ForeignModules {
    static F: OnceLock<ForeignModules> = OnceLock::new();
    F.get_or_init(|| {
        let f = fixture();
        let cache = Cache::from_env().unwrap();
        let archive = AptArchive::debian(&cache).unwrap();
        let tree = f.ws.source_tree(&cache, &archive).unwrap();
        let build = workspace_bin("noreboot-build", "factory");
        let mut out = Vec::new();
        for (name, text) in [
            ("nrforeign", "foreign-patch "),
            ("nrtest_l2", "impostor-level-2 "),
        ] {
            let d = f.dir.join(format!("foreign-{name}"));
            let _ = std::fs::remove_dir_all(&d);
            std::fs::create_dir_all(&d).unwrap();
            let patch = edit(
                tree.dir(),
                "fs/proc/cmdline.c",
                &[(
                    "\tseq_puts(m, saved_command_line);",
                    &format!("\tseq_puts(m, \"{text}\");\n\tseq_puts(m, saved_command_line);"),
                )],
                &d,
            );
            let built = d.join("out");
            let release = f.ws.release().to_string();
            factory(&build, &release, &[&patch], name, &[], &built);
            out.push(built.join(format!("{name}.ko")));
        }
        ForeignModules {
            impostor: out.pop().unwrap(),
            foreign: out.pop().unwrap(),
        }
    })
}

/// The pinned 6.1 kernel's fixture; level 2 and 3 claim 6.1.192-3.
pub fn fixture() -> &'static Fixture {
    static F: OnceLock<Fixture> = OnceLock::new();
    F.get_or_init(|| {
        make_fixture(
            &RELEASE.parse().unwrap(),
            "agent-fixture",
            Some("6.1.192-3"),
        )
    })
}

/// The newest 6.12+deb13 build the archive offers (Debian 13's own
/// kernel, compiled in a trixie build root); its levels claim no
/// effective version.
pub fn debian13_fixture() -> &'static Fixture {
    static F: OnceLock<Fixture> = OnceLock::new();
    F.get_or_init(|| {
        let cache = Cache::from_env().unwrap();
        let archive = AptArchive::debian(&cache).unwrap();
        let list = discover::all_available_releases(&archive, "cloud-amd64").unwrap();
        let (release, _) = discover::newest_for_debian(&list, 13, |s| s == "6.12")
            .expect("the archive offers no 6.12+deb13 build");
        make_fixture(&release, "agent-fixture-deb13", None)
    })
}

fn make_fixture(release: &Release, name: &str, effective: Option<&str>) -> Fixture {
    let cache = Cache::from_env().unwrap();
    let archive = AptArchive::debian(&cache).unwrap();
    let ws = Workspace::fetch(&cache, &archive, release).unwrap();
    let tree = ws.source_tree(&cache, &archive).unwrap();
    let t = tree.dir().to_path_buf();
    let base = option_env!("CARGO_TARGET_TMPDIR")
        .map(PathBuf::from)
        .unwrap_or_else(std::env::temp_dir);
    let dir = base.join(name);
    std::fs::create_dir_all(&dir).unwrap();
    // The agent's test binaries run at the same time (scripts/run-tests)
    // and share the fixture: one builds it, the others wait, then find
    // it built from the same inputs and take it as it is.
    let lock = std::fs::File::create(base.join(format!("{name}.lock"))).unwrap();
    lock.lock().unwrap();
    let build = workspace_bin("noreboot-build", "factory");
    let agent = option_env!("CARGO_BIN_EXE_noreboot")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace_bin("noreboot", "agent"));
    let secret = dir.join("keys/noreboot.key");
    let public = dir.join("keys/noreboot.pub");
    let p1 = cmdline_patch(&t, 1, &dir);
    let p2 = cmdline_patch(&t, 2, &dir);
    let ps = stall_patch(&t, &dir);
    // What the levels are made of: the factory that builds them, this
    // file (the specs below), the kernel and the patches.
    let inputs = {
        use sha2::{Digest, Sha256};
        let mut h = Sha256::new();
        h.update(std::fs::read(&build).unwrap());
        h.update(include_str!("mod.rs"));
        h.update(format!("{release} {effective:?}"));
        for p in [&p1, &p2, &ps] {
            h.update(std::fs::read(p).unwrap());
        }
        format!("{:x}", h.finalize())
    };
    let stamp = dir.join("inputs.sha256");
    let levels: Vec<PathBuf> = (1..=3)
        .map(|i| dir.join(format!("nrtest_l{i}.nrb")))
        .collect();
    let built = std::fs::read_to_string(&stamp).is_ok_and(|s| s == inputs)
        && levels.iter().chain([&secret, &public]).all(|p| p.is_file());
    if !built {
        build_levels(
            &build,
            release,
            effective,
            [p1.as_path(), p2.as_path(), ps.as_path()],
            &dir,
        );
        std::fs::write(&stamp, &inputs).unwrap();
    }
    drop(lock);
    let build_id = ws.identity().build_id.to_string();
    Fixture {
        ws,
        dir,
        agent,
        secret,
        public,
        levels,
        build_id,
    }
}

/// Builds the fixture's key pair and its three level bundles into `dir`.
fn build_levels(
    build: &Path,
    release: &Release,
    effective: Option<&str>,
    [p1, p2, ps]: [&Path; 3],
    dir: &Path,
) {
    let _ = std::fs::remove_file(dir.join("inputs.sha256"));
    let _ = std::fs::remove_dir_all(dir.join("keys"));
    run(Command::new(build)
        .args(["keygen", "-o"])
        .arg(dir.join("keys")));
    let secret = dir.join("keys/noreboot.key");
    // (name, patches, CVEs, effective version)
    type Spec<'a> = (&'a str, Vec<&'a Path>, Vec<&'a str>, Option<&'a str>);
    let specs: [Spec; 3] = [
        ("nrtest_l1", vec![p1], vec!["CVE-2099-1001"], None),
        (
            "nrtest_l2",
            vec![p2],
            vec!["CVE-2099-1001", "CVE-2099-1002"],
            effective,
        ),
        (
            "nrtest_l3",
            vec![p2, ps],
            vec!["CVE-2099-1001", "CVE-2099-1002", "CVE-2099-1003"],
            effective,
        ),
    ];
    for (i, (name, patches, cves, eff)) in specs.iter().enumerate() {
        let out = dir.join(name);
        let _ = std::fs::remove_dir_all(&out);
        factory(build, release.as_str(), patches, name, cves, &out);
        let nrb = dir.join(format!("{name}.nrb"));
        let mut cmd = Command::new(build);
        cmd.args(["bundle", "--from"])
            .arg(&out)
            .args(["--level", &(i + 1).to_string(), "--key"])
            .arg(&secret)
            .arg("-o")
            .arg(&nrb);
        if let Some(e) = eff {
            cmd.args(["--effective-version", e]);
        }
        run(&mut cmd);
    }
}

/// The agent's configuration in the guest.
pub fn config(signal_after: &str, timeout: &str, extra: &str) -> String {
    format!(
        "[transition]\nsignal_after = \"{signal_after}\"\ntimeout = \"{timeout}\"\n\n[update]\ndirectory = \"/root/feed\"\n{extra}"
    )
}

/// A guest with the agent, the test key trusted, and the levels in
/// /root/l1.nrb ... and the update feed /root/feed (levels 1 and 2).
pub fn guest_config(f: &Fixture, cfg: &str) -> lab::GuestConfig {
    let mut g = lab::GuestConfig::for_workspace(&f.ws)
        .with_binary(&f.agent, "/usr/sbin/noreboot")
        .with_file(&f.public, "/etc/noreboot/trusted.d/test.pub");
    for (i, l) in f.levels.iter().enumerate() {
        g = g.with_file(l, format!("/root/l{}.nrb", i + 1));
    }
    for (i, l) in f.levels.iter().take(2).enumerate() {
        g = g.with_file(l, format!("/root/feed/l{}.nrb", i + 1));
    }
    g.contents.push((
        "/etc/noreboot/config.toml".into(),
        cfg.as_bytes().to_vec(),
        0o644,
    ));
    g
}

/// Runs a script in the guest; returns (exit status, stdout, stderr).
pub fn sh(g: &mut lab::Guest, script: &str) -> (i32, String, String) {
    let r = g.exec(script).unwrap();
    (r.status, r.stdout, r.stderr)
}
