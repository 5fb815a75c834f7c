//! Build roots against the real Debian archive: a trixie root made with
//! Debian's tools provides gcc 14 on this Debian 12 host, and kbuild run in
//! a bookworm root (forced with `NOREBOOT_BUILDROOT=always`) produces the
//! same bytes as the host for the pinned 6.1 kernel, through each path that
//! runs the kernel's toolchain (make, the saved kbuild commands with
//! objtool, an external module's link). Roots live in the user's cache like
//! kernel workspaces: the first run downloads them (25-40 s each, see
//! BENCHMARKS.md), later runs reuse them. Needs root or bubblewrap.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use kernel_tree::buildroot::{BuildRoot, Rust, Toolchain, SUITES};
use kernel_tree::{AptArchive, Cache, Workspace, DIFF_CFLAGS};

const RELEASE: &str = "6.1.0-47-cloud-amd64";
const OBJECT: &str = "fs/proc/cmdline.o";

/// Set by the outer test for the inner run of [`forced_build_root`].
const INNER_OUT: &str = "NOREBOOT_BUILDROOT_TEST_OUT";

fn suite(name: &str) -> kernel_tree::buildroot::Suite {
    *SUITES.iter().find(|s| s.name == name).unwrap()
}

#[test]
#[ignore = "slow tier: makes the trixie build root with mmdebstrap; scripts/test runs it"]
fn trixie_root_provides_gcc_14_and_is_made_once() {
    let cache = Cache::from_env().unwrap();
    let started = Instant::now();
    let root = BuildRoot::ensure(&cache, suite("trixie"), Rust::Without).unwrap();
    eprintln!(
        "trixie build root at {} in {:.1}s",
        root.dir().display(),
        started.elapsed().as_secs_f64()
    );
    let stamp = root.dir().join(".noreboot-buildroot");
    let made = std::fs::metadata(&stamp).unwrap().modified().unwrap();

    let version = root.version("gcc-14").unwrap();
    assert!(version.starts_with("gcc-14 (Debian 14."), "{version}");
    // The host has no gcc-14: a kernel built with it resolves to this root.
    let toolchain = Toolchain::for_compiler(&cache, &version).unwrap();
    assert_eq!(
        toolchain.build_root().map(|r| r.dir()),
        Some(root.dir()),
        "{toolchain}"
    );

    // A gcc-14 of another Debian revision than trixie ships (an older
    // kernel's) is refused naming both texts: no root can reproduce it.
    let old = "gcc-14 (Debian 14.2.0-7) 14.2.0";
    let err = Toolchain::for_compiler(&cache, old).unwrap_err();
    assert!(
        matches!(err, kernel_tree::Error::BuildRootCompiler { .. }),
        "{err}"
    );
    let msg = err.to_string();
    assert!(msg.contains(old) && msg.contains(&version), "{msg}");
    assert!(msg.contains("trixie"), "{msg}");

    // A program compiled and run inside, in a directory of the cache bound
    // at its own path.
    std::fs::create_dir_all(cache.root()).unwrap();
    let work = tempfile::tempdir_in(cache.root()).unwrap();
    std::fs::write(
        work.path().join("hello.c"),
        "#include <stdio.h>\nint main(void) { printf(\"%d.%d\\n\", __GNUC__, __GNUC_MINOR__); return 0; }\n",
    )
    .unwrap();
    let out = root
        .command("sh", work.path(), &[work.path()])
        .args(["-c", "gcc-14 -O2 -o hello hello.c && ./hello && pwd"])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(stdout, format!("14.2\n{}\n", work.path().display()));
    assert!(
        work.path().join("hello").exists(),
        "written through the bind"
    );

    // The root itself is read-only to what runs in it: kernels share it.
    let out = root
        .command("touch", Path::new("/"), &[])
        .arg("/usr/noreboot-was-here")
        .output()
        .unwrap();
    assert!(!out.status.success(), "the root must be read-only inside");

    // Warm: found, not made again.
    let started = Instant::now();
    let again = BuildRoot::ensure(&cache, suite("trixie"), Rust::Without).unwrap();
    let warm = started.elapsed();
    eprintln!("warm: {:.3}s", warm.as_secs_f64());
    assert_eq!(again.dir(), root.dir());
    assert_eq!(std::fs::metadata(&stamp).unwrap().modified().unwrap(), made);
    assert!(warm.as_secs_f64() < 1.0, "a warm root took {warm:?}");
}

fn workspace() -> Workspace {
    let cache = Cache::from_env().unwrap();
    Workspace::fetch(&cache, &AptArchive::new(), &RELEASE.parse().unwrap()).unwrap()
}

/// Compiles [`OBJECT`] through make and through kbuild's saved command in a
/// scratch copy, and links the livepatch fixture module, with whatever
/// toolchain the environment selects; writes `make.o`, `like.o` (without
/// debug info) and `module.ko` to `out`. Returns the toolchain used.
fn compile_all(out: &Path) -> Toolchain {
    let ws = workspace();
    let cache = Cache::from_env().unwrap();
    let tree = ws.source_tree(&cache, &AptArchive::new()).unwrap();
    let objs = out.join("objs");
    let compiled = tree
        .compile_objects(&[OBJECT], DIFF_CFLAGS, 1, &objs)
        .unwrap();
    std::fs::copy(&compiled.paths[0], out.join("make.o")).unwrap();
    let scratch = tree.scratch_copy("buildroot-test").unwrap();
    let like = scratch
        .compile_like(&compiled, &[OBJECT], 1, &out.join("like"))
        .unwrap();
    // The scratch copy's directory (named after the process) is in the
    // object's debug info; the rest must not differ.
    let status = Command::new("objcopy")
        .arg("--strip-debug")
        .arg(&like[0])
        .arg(out.join("like.o"))
        .status()
        .unwrap();
    assert!(
        status.success(),
        "objcopy --strip-debug {}",
        like[0].display()
    );

    let fixture = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fixtures/livepatch-cmdline");
    // One build directory for both toolchains: its path is in the
    // module's debug info.
    let build = cache.root().join("tmp/buildroot-test-module");
    let _ = std::fs::remove_dir_all(&build);
    let kos = ws.build_module(&fixture, &build).unwrap();
    std::fs::copy(&kos[0], out.join("module.ko")).unwrap();
    let _ = std::fs::remove_dir_all(&build);
    tree.toolchain().clone()
}

/// The inner half of [`bookworm_root_builds_the_same_bytes_as_the_host`],
/// run by it in a child process with `NOREBOOT_BUILDROOT` set (the
/// environment is the process's): does nothing when a test run reaches it
/// by itself.
#[test]
#[ignore = "slow tier: the inner half of bookworm_root_builds_the_same_bytes_as_the_host (a bookworm build root); scripts/test runs it"]
fn forced_build_root() {
    let Some(out) = std::env::var_os(INNER_OUT) else {
        return;
    };
    let toolchain = compile_all(Path::new(&out));
    let root = toolchain.build_root().expect("NOREBOOT_BUILDROOT is set");
    assert_eq!(root.suite().name, "bookworm");
    let mode = std::env::var("NOREBOOT_BUILDROOT").unwrap();
    let entry = if mode == "chroot" { "chroot" } else { "bwrap" };
    assert_eq!(root.entered_with(), entry);
    // Read-only to what runs in it, however it is entered: kernels share it.
    let out = root
        .command("touch", Path::new("/"), &[])
        .arg("/usr/noreboot-was-here")
        .output()
        .unwrap();
    assert!(!out.status.success(), "the {mode} root must be read-only");
    assert!(!root.dir().join("usr/noreboot-was-here").exists());
}

#[test]
#[ignore = "slow tier: prepares the 6.1 kernel source and makes the bookworm build root; scripts/test runs it"]
fn bookworm_root_builds_the_same_bytes_as_the_host() {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("buildroot-test");
    let _ = std::fs::remove_dir_all(&dir);
    let native = dir.join("native");
    std::fs::create_dir_all(&native).unwrap();

    let started = Instant::now();
    let toolchain = compile_all(&native);
    assert!(toolchain.build_root().is_none(), "{toolchain}");
    eprintln!("native: {:.1}s", started.elapsed().as_secs_f64());

    // bubblewrap, and the fallback for hosts without it.
    for mode in ["always", "chroot"] {
        let rooted = dir.join(mode);
        std::fs::create_dir_all(&rooted).unwrap();
        let started = Instant::now();
        let status = Command::new(std::env::current_exe().unwrap())
            // The inner test is slow-tier (ignored) like this one.
            .args([
                "--exact",
                "forced_build_root",
                "--include-ignored",
                "--nocapture",
            ])
            .env("NOREBOOT_BUILDROOT", mode)
            .env(INNER_OUT, &rooted)
            .status()
            .unwrap();
        assert!(status.success(), "the NOREBOOT_BUILDROOT={mode} run failed");
        eprintln!(
            "NOREBOOT_BUILDROOT={mode}: {:.1}s",
            started.elapsed().as_secs_f64()
        );
        for name in ["make.o", "like.o", "module.ko"] {
            let (a, b) = (native.join(name), rooted.join(name));
            let (x, y) = (std::fs::read(&a).unwrap(), std::fs::read(&b).unwrap());
            assert!(
                x == y,
                "{name}: NOREBOOT_BUILDROOT={mode} built other bytes than the host\n  cmp {} {}",
                a.display(),
                b.display()
            );
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
}
