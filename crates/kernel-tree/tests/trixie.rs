//! Debian 13 kernels against the real Debian archive, through noreboot's
//! private apt view (`AptArchive::debian`, lists under the cache): what the
//! archive offers for trixie and trixie-backports, and the newest 6.12+deb13
//! and backports builds fetched into workspaces whose identity, symbols and
//! source agree with the image, the source compiled in the trixie build
//! root (gcc 14). The kernels are whatever the archive offers today (the
//! newest of each), so a build Debian drops is replaced, never skipped.
//! Cold: about 1 GB of downloads per kernel; warm: seconds. Needs root or
//! bubblewrap for the build root.

use std::sync::OnceLock;
use std::time::Instant;

use debversion::Version;
use kernel_tree::{discover, AptArchive, Archive, Cache, Error, Release, Workspace};

fn cache() -> Cache {
    Cache::from_env().expect("cache directory")
}

fn archive() -> &'static AptArchive {
    static A: OnceLock<AptArchive> = OnceLock::new();
    A.get_or_init(|| {
        let started = Instant::now();
        let a = AptArchive::debian(&cache()).expect("noreboot's apt view of Debian");
        eprintln!(
            "private apt lists ready in {:.1}s",
            started.elapsed().as_secs_f64()
        );
        a
    })
}

fn available() -> &'static [(Release, Version)] {
    static L: OnceLock<Vec<(Release, Version)>> = OnceLock::new();
    L.get_or_init(|| {
        let started = Instant::now();
        let l = discover::all_available_releases(archive(), "cloud-amd64")
            .expect("listing the archive's releases");
        eprintln!(
            "{} complete releases listed in {:.1}s",
            l.len(),
            started.elapsed().as_secs_f64()
        );
        l
    })
}

fn newest_trixie_6_12() -> Release {
    let (r, v) = discover::newest_for_debian(available(), 13, |s| s == "6.12")
        .expect("the archive offers no 6.12+deb13 build");
    eprintln!("trixie 6.12 kernel: {r} ({v})");
    r
}

fn newest_backports() -> Release {
    let (r, v) = discover::newest_for_debian(available(), 13, |s| s != "6.12")
        .expect("the archive offers no trixie-backports build");
    eprintln!("trixie-backports kernel: {r} ({v})");
    r
}

#[test]
#[ignore = "slow tier: refreshes the private apt lists from Debian's archive; scripts/test runs it"]
fn discovery_lists_trixie_and_backports_builds_with_their_suites() {
    let list = available();
    let suites = discover::suites_of(archive(), list).unwrap();
    let with = |pred: &dyn Fn(&Release, &str) -> bool| {
        list.iter()
            .zip(&suites)
            .any(|((r, _), s)| s.as_deref().is_some_and(|s| pred(r, s)))
    };
    assert!(
        with(&|r, s| r.series() == "6.12"
            && r.debian_release() == Some(13)
            && s.starts_with("trixie")
            && !s.ends_with("backports")),
        "no 6.12+deb13 build from trixie: {list:?} {suites:?}"
    );
    assert!(
        with(&|r, s| r.series() != "6.12"
            && r.debian_release() == Some(13)
            && s == "trixie-backports"),
        "no trixie-backports build: {list:?} {suites:?}"
    );
    // Debian 12's kernels are still there through the same view.
    assert!(list
        .iter()
        .any(|(r, _)| r.series() == "6.1" || r.debian_release() == Some(12)));

    // An unknown release names the suites searched.
    let err = kernel_tree::plan::plan(archive(), &"6.12.1+deb13-cloud-amd64".parse().unwrap())
        .unwrap_err();
    assert!(matches!(err, Error::UnknownRelease { .. }), "{err}");
    let msg = err.to_string();
    for suite in ["bookworm", "trixie-security", "trixie-backports"] {
        assert!(msg.contains(suite), "{msg}");
    }
}

/// Fetches `release` with its symbols and checks what a Debian 13 build
/// must look like; returns the workspace.
fn check_workspace(release: &Release) -> Workspace {
    let cache = cache();
    let started = Instant::now();
    let ws = Workspace::fetch(&cache, archive(), release).expect("fetching the workspace");
    let fetched = started.elapsed();
    let id = ws.identity();
    assert_eq!(id.release, release.as_str());
    assert_eq!(id.build_id.as_bytes().len(), 20);
    assert_eq!(id.debian_version.as_deref(), Some(ws.version()));
    assert!(
        id.compiler
            .starts_with("x86_64-linux-gnu-gcc-14 (Debian 14."),
        "{}",
        id.compiler
    );
    assert_eq!(
        ws.config_value("CONFIG_CC_VERSION_TEXT")
            .unwrap()
            .as_deref(),
        Some(id.compiler.as_str())
    );
    for p in [
        ws.vmlinuz(),
        ws.config(),
        ws.headers_dir(),
        ws.module_symvers(),
        ws.source_tarball(),
        ws.modules_dir().join("modules.order"),
    ] {
        assert!(p.exists(), "{} missing", p.display());
    }
    let symvers = std::fs::read_to_string(ws.module_symvers()).unwrap();
    assert!(symvers.contains("\tklp_enable_patch\tvmlinux\tEXPORT_SYMBOL_GPL"));
    // The modules are compressed (xz on every Debian 13 build so far).
    let order = std::fs::read_to_string(ws.modules_dir().join("modules.order")).unwrap();
    let first = order.lines().next().expect("modules.order is empty");
    let compressed = ["xz", "zst"]
        .iter()
        .any(|x| ws.modules_dir().join(format!("{first}.{x}")).exists());
    assert!(compressed, "{first} is neither .ko.xz nor .ko.zst");

    // gcc 14 is not on this Debian 12 host: the trixie build root has it.
    let toolchain = ws.toolchain().expect("a toolchain for gcc 14");
    assert!(toolchain.build_root().is_some(), "{toolchain}");

    let started = Instant::now();
    let table = ws.symbols(&cache, archive()).expect("the -dbg symbols");
    let symbols = started.elapsed();
    assert_eq!(
        kernel_tree::symbols::vmlinux_build_id(&table.vmlinux).unwrap(),
        id.build_id
    );
    let map = std::fs::read_to_string(&table.system_map).unwrap();
    assert!(map.contains(" T cmdline_proc_show") || map.contains(" t cmdline_proc_show"));
    let mb = |p: &std::path::Path| std::fs::metadata(p).map(|m| m.len() >> 20).unwrap_or(0);
    eprintln!(
        "{release}: workspace {:.1}s, symbols {:.1}s; packages {} MiB (source {} MiB), vmlinux {} MiB",
        fetched.as_secs_f64(),
        symbols.as_secs_f64(),
        ws.manifest().packages.iter().map(|p| p.size).sum::<u64>() >> 20,
        mb(&ws.source_tarball()),
        mb(&table.vmlinux),
    );
    // A second fetch is the cached one.
    let again = Workspace::fetch(&cache, archive(), release).unwrap();
    assert_eq!(again.identity(), ws.identity());
    ws
}

/// Prepares `ws`'s source in the build root and compiles one object with
/// gcc 14 there.
fn check_source(ws: &Workspace) {
    let release = ws.release();
    let cache = cache();
    let started = Instant::now();
    let tree = ws
        .source_tree(&cache, archive())
        .expect("preparing the source in the build root");
    eprintln!(
        "{release}: source prepared in {:.1}s with {}",
        started.elapsed().as_secs_f64(),
        tree.toolchain()
    );
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("cmdline.o");
    let started = Instant::now();
    tree.compile("fs/proc/cmdline.o", kernel_tree::DIFF_CFLAGS, &out)
        .expect("compiling one object in the build root");
    eprintln!(
        "{release}: fs/proc/cmdline.o in {:.1}s",
        started.elapsed().as_secs_f64()
    );
    let bytes = std::fs::read(&out).unwrap();
    let text = String::from_utf8_lossy(&bytes);
    assert!(text.contains(".text.cmdline_proc_show"));
    assert!(text.contains("GCC: (Debian 14."), "not built by gcc 14");
}

#[test]
#[ignore = "slow tier: downloads a 6.12+deb13 workspace and prepares it in the trixie build root; scripts/test runs it"]
fn trixie_6_12_workspace_and_source_in_the_build_root() {
    check_source(&check_workspace(&newest_trixie_6_12()));
}

/// The source is not prepared here: Debian's 7.x configs enable Rust
/// (`CONFIG_RUSTC_VERSION`), which the trixie build root (no rustc,
/// bindgen, rust-src) cannot keep through `make olddefconfig`; the tree
/// refuses that as an inconsistent config, as it should.
#[test]
#[ignore = "slow tier: downloads a trixie-backports kernel workspace; scripts/test runs it"]
fn newest_backports_workspace() {
    check_workspace(&newest_backports());
}

#[test]
#[ignore = "slow tier: refreshes the private apt lists from Debian's archive; scripts/test runs it"]
fn private_lists_are_reused_while_fresh() {
    let a = archive();
    // The first query applies the freshness rule.
    a.show(&["linux-source-6.12".to_string()]).unwrap();
    let age = a.lists_age().expect("the lists were refreshed");
    assert!(age < kernel_tree::archive::LISTS_MAX_AGE, "{age:?}");
    let started = Instant::now();
    let again = AptArchive::debian(&cache()).unwrap();
    let sources = again.show(&["linux-source-6.12".to_string()]).unwrap();
    let warm = started.elapsed();
    eprintln!("fresh lists reused in {:.3}s", warm.as_secs_f64());
    assert!(again.lists_age().unwrap() >= age, "refreshed again");
    // Debian 13's own 6.12 sources, beside Debian 12's ~deb12u ones.
    assert!(sources
        .iter()
        .any(|i| !i.version.to_string().contains("~deb12")));
}

#[test]
fn unreachable_mirror_without_lists_is_reported_as_such() {
    let dir = tempfile::tempdir().unwrap();
    let cache = Cache::at(dir.path());
    let sources =
        kernel_tree::archive::debian_sources("http://127.0.0.1:9/debian", "http://127.0.0.1:9/sec");
    let a = AptArchive::private(&cache, &sources, std::time::Duration::ZERO).unwrap();
    let err = discover::all_available_releases(&a, "cloud-amd64").unwrap_err();
    assert!(matches!(err, Error::ArchiveUnreachable { .. }), "{err}");
    assert!(a.lists_age().is_none());
}
