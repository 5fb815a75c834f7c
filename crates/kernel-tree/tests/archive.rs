//! Kernel workspaces against the real Debian archive through the host's
//! apt: fetching, identity, the symbol table, and the failure paths a user
//! meets (unknown release, no network, disk full). Needs root for the
//! disk-full cases (they mount small tmpfs file systems) and fails, never
//! skips, without it.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use kernel_tree::{discover, AptArchive, Archive, Cache, Error, Release, Workspace};

fn selection() -> &'static discover::Selection {
    static SEL: OnceLock<discover::Selection> = OnceLock::new();
    SEL.get_or_init(|| {
        let s = discover::default_release(&Cache::from_env().unwrap(), &AptArchive::new())
            .expect("choosing the test kernel");
        eprintln!("test kernel: {s}");
        s
    })
}

fn ws() -> Workspace {
    let cache = Cache::from_env().unwrap();
    Workspace::fetch(&cache, &AptArchive::new(), &selection().release)
        .expect("fetching the workspace")
}

#[test]
#[ignore = "slow tier: queries the archive's releases through apt; scripts/test runs it"]
fn discovery_lists_complete_releases_oldest_first() {
    let r: Release = discover::PINNED_RELEASE.parse().unwrap();
    let list = discover::available_releases(&AptArchive::new(), r.flavour(), r.series()).unwrap();
    assert!(
        !list.is_empty(),
        "the archive must offer some {} kernel",
        r.series()
    );
    assert!(list.windows(2).all(|w| w[0].1 <= w[1].1), "{list:?}");
    assert!(list.iter().any(|(r, _)| r == &selection().release));
}

#[test]
#[ignore = "slow tier: downloads the 6.1 kernel workspace into the cache; scripts/test runs it"]
fn workspace_has_consistent_packages_identity_and_paths() {
    let ws = ws();
    let id = ws.identity();
    assert_eq!(id.release, ws.release().as_str());
    assert_eq!(id.build_id.as_bytes().len(), 20, "GNU build-id is a SHA-1");
    assert_eq!(id.debian_version.as_deref(), Some(ws.version()));
    assert!(
        id.uname_version.starts_with("#1 SMP"),
        "{}",
        id.uname_version
    );
    let cc = ws.config_value("CONFIG_CC_VERSION_TEXT").unwrap().unwrap();
    assert_eq!(cc, id.compiler);
    ws.check_compiler()
        .expect("the host compiler must be the kernel's");
    for p in [
        ws.vmlinuz(),
        ws.config(),
        ws.headers_dir(),
        ws.module_symvers(),
        ws.source_tarball(),
        ws.modules_dir(),
    ] {
        assert!(p.exists(), "{} missing", p.display());
        assert!(
            p.starts_with(ws.dir()),
            "{} outside the workspace",
            p.display()
        );
    }
    let symvers = std::fs::read_to_string(ws.module_symvers()).unwrap();
    assert!(
        symvers.contains("\tklp_enable_patch\tvmlinux\tEXPORT_SYMBOL_GPL"),
        "livepatch API not exported?"
    );
    assert!(std::fs::metadata(ws.source_tarball()).unwrap().len() > 100 << 20);
    let m = ws.manifest();
    for p in &m.packages {
        if p.package != ws.release().kbuild_package() {
            assert_eq!(p.version, ws.version(), "{p:?}");
        }
    }
    // Nothing was installed on the host.
    assert!(!Path::new(&format!("/usr/src/linux-headers-{}", ws.release())).exists());
    // A second fetch is the cached one.
    let again = Workspace::fetch(
        &Cache::from_env().unwrap(),
        &AptArchive::new(),
        ws.release(),
    )
    .unwrap();
    assert_eq!(again.identity(), ws.identity());
}

#[test]
#[ignore = "slow tier: downloads the 6.1 kernel workspace and its -dbg symbols; scripts/test runs it"]
fn symbol_table_comes_from_the_same_build() {
    let ws = ws();
    let table = ws
        .symbols(&Cache::from_env().unwrap(), &AptArchive::new())
        .unwrap();
    let map = std::fs::read_to_string(&table.system_map).unwrap();
    let syms = kernel_tree::symbols::parse_system_map(&map).unwrap();
    assert!(syms.len() > 50_000, "only {} symbols", syms.len());
    assert!(syms
        .iter()
        .any(|s| s.name == "cmdline_proc_show" && s.kind == 't'));
    assert!(syms
        .iter()
        .any(|s| s.name == "init_task" && s.kind.eq_ignore_ascii_case(&'d')));
    assert_eq!(
        kernel_tree::symbols::vmlinux_build_id(&table.vmlinux).unwrap(),
        ws.identity().build_id
    );
}

#[test]
#[ignore = "slow tier: queries the archive's releases through apt; scripts/test runs it"]
fn unknown_release_names_what_is_offered() {
    let cache = tempfile::tempdir().unwrap();
    let release: Release = "6.1.0-9-cloud-amd64".parse().unwrap();
    let err = Workspace::fetch(&Cache::at(cache.path()), &AptArchive::new(), &release).unwrap_err();
    let msg = err.to_string();
    assert!(matches!(err, Error::UnknownRelease { .. }), "{msg}");
    assert!(
        msg.contains("unknown kernel release 6.1.0-9-cloud-amd64"),
        "{msg}"
    );
    assert!(
        msg.contains(selection().release.as_str()),
        "available releases expected in: {msg}"
    );
}

#[test]
#[ignore = "slow tier: picks the test kernel from the cache or apt's lists; scripts/test runs it"]
fn no_network_is_reported_and_leaves_no_workspace() {
    let cache = tempfile::tempdir().unwrap();
    // A proxy nobody listens on: apt fails to connect exactly as it does
    // when the archive is unreachable.
    let archive = AptArchive::new().with_option("Acquire::http::Proxy=http://127.0.0.1:9");
    let cache = Cache::at(cache.path());
    let err = Workspace::fetch(&cache, &archive, &selection().release).unwrap_err();
    let msg = err.to_string();
    assert!(matches!(err, Error::ArchiveUnreachable { .. }), "{msg}");
    assert!(msg.contains("cannot reach the package archive"), "{msg}");
    assert!(Workspace::open(&cache, &selection().release)
        .unwrap()
        .is_none());
}

/// A tmpfs of `size` mounted for the test's lifetime; the temporary
/// directory it is mounted on is removed after the unmount.
struct SmallFs(PathBuf, #[allow(dead_code)] tempfile::TempDir);

impl SmallFs {
    fn new(size: &str) -> SmallFs {
        let dir = tempfile::tempdir().unwrap();
        let st = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir.path())
            .status()
            .unwrap();
        assert!(
            st.success(),
            "mounting a tmpfs needs root (the tests run as root in CI)"
        );
        SmallFs(dir.path().to_path_buf(), dir)
    }
}

impl Drop for SmallFs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.0).status();
    }
}

#[test]
#[ignore = "slow tier: picks the test kernel from the cache or apt's lists; mounts a tmpfs (root); scripts/test runs it"]
fn disk_full_is_caught_before_downloading() {
    let fs = SmallFs::new("4m");
    let err =
        Workspace::fetch(&Cache::at(&fs.0), &AptArchive::new(), &selection().release).unwrap_err();
    let msg = err.to_string();
    assert!(matches!(err, Error::DiskFull { .. }), "{msg}");
    assert!(msg.contains(&fs.0.display().to_string()), "{msg}");
}

#[test]
#[ignore = "slow tier: downloads a kernel package; mounts a tmpfs (root); scripts/test runs it"]
fn disk_full_during_download_is_reported_as_such() {
    let fs = SmallFs::new("256k");
    let release = &selection().release;
    let archive = AptArchive::new();
    let info = archive.show(&[release.kbuild_package()]).unwrap();
    let kbuild = info
        .iter()
        .max_by(|a, b| a.version.cmp(&b.version))
        .unwrap();
    let err = archive
        .download(&kbuild.package, &kbuild.version, &fs.0)
        .unwrap_err();
    assert!(matches!(err, Error::DiskFull { .. }), "{err}");
}

#[test]
fn never_updated_apt_is_reported_as_such() {
    let lists = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(lists.path().join("partial")).unwrap();
    let archive = AptArchive::new()
        .with_option(format!("Dir::State::Lists={}", lists.path().display()))
        .with_option("Dir::Cache::pkgcache=")
        .with_option("Dir::Cache::srcpkgcache=");
    let err = discover::available_releases(&archive, "cloud-amd64", "6.1").unwrap_err();
    assert!(matches!(err, Error::AptListsEmpty { .. }), "{err}");
    assert!(err.to_string().contains("apt-get update"), "{err}");
}

/// noreboot's private view with its lists gone behind a fresh stamp: the
/// error names the private lists (not the host's `apt-get update`, which
/// would not help) and the stamp goes, so the next run downloads them.
#[test]
fn empty_private_lists_are_refreshed_by_the_next_run() {
    let dir = tempfile::tempdir().unwrap();
    let cache = Cache::at(dir.path());
    let archive = AptArchive::private(
        &cache,
        "# no sources\n",
        std::time::Duration::from_secs(3600),
    )
    .unwrap();
    let stamp = dir.path().join("apt/updated");
    std::fs::write(&stamp, "").unwrap();
    let err = discover::available_releases(&archive, "cloud-amd64", "6.1").unwrap_err();
    assert!(matches!(err, Error::AptListsEmpty { .. }), "{err}");
    let msg = err.to_string();
    assert!(msg.contains("private package lists"), "{msg}");
    assert!(
        msg.contains(&dir.path().join("apt/state/lists").display().to_string()),
        "{msg}"
    );
    assert!(!msg.contains("apt-get update"), "{msg}");
    assert!(!stamp.exists());
}

#[test]
#[ignore = "slow tier: downloads and prepares the 6.1 kernel source; scripts/test runs it"]
fn source_tree_compiles_single_objects_reproducibly() {
    let ws = ws();
    let cache = Cache::from_env().unwrap();
    let tree = ws.source_tree(&cache, &AptArchive::new()).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = (dir.path().join("a.o"), dir.path().join("b.o"));
    tree.compile("fs/proc/cmdline.o", kernel_tree::source::DIFF_CFLAGS, &a)
        .unwrap();
    tree.compile("fs/proc/cmdline.o", kernel_tree::source::DIFF_CFLAGS, &b)
        .unwrap();
    let (x, y) = (std::fs::read(&a).unwrap(), std::fs::read(&b).unwrap());
    assert_eq!(x, y, "two compilations of one object must be identical");
    // Function sections are in effect.
    let text = String::from_utf8_lossy(&x);
    assert!(
        text.contains(".text.cmdline_proc_show"),
        "no function section for cmdline_proc_show"
    );
    let err = tree.compile("fs/proc/no_such_file.o", "", &a).unwrap_err();
    assert!(err.to_string().contains("no_such_file"), "{err}");

    // compile_objects keeps what it compiled: the second time, the same
    // bytes and command come from the kept copy, without kbuild (a flag
    // set of this test's own, so the first compile is a real one).
    let flags = format!(
        "{} -DNOREBOOT_KEEP_TEST={}",
        kernel_tree::source::DIFF_CFLAGS,
        std::process::id()
    );
    let first = tree
        .compile_objects(&["fs/proc/cmdline.o"], &flags, 1, &dir.path().join("first"))
        .unwrap();
    let kept_dir = tree
        .dir()
        .parent()
        .unwrap()
        .join(kernel_tree::source::ORIGINALS_DIR);
    // This test's own copy: the one whose command carries its flag.
    let kept: Vec<std::path::PathBuf> = std::fs::read_dir(&kept_dir)
        .unwrap()
        .map(|e| e.unwrap().path().join("fs/proc/cmdline.o"))
        .filter(|p| {
            std::fs::read_to_string(p.with_extension("o.cmd"))
                .is_ok_and(|c| c.contains(&format!("NOREBOOT_KEEP_TEST={}", std::process::id())))
        })
        .collect();
    assert_eq!(kept.len(), 1, "not kept once under {}", kept_dir.display());
    let started = std::time::Instant::now();
    let second = tree
        .compile_objects(
            &["fs/proc/cmdline.o"],
            &flags,
            1,
            &dir.path().join("second"),
        )
        .unwrap();
    let took = started.elapsed();
    assert_eq!(first.commands, second.commands);
    assert!(
        first.commands[0].contains("NOREBOOT_KEEP_TEST"),
        "{}",
        first.commands[0]
    );
    assert_eq!(
        std::fs::read(&first.paths[0]).unwrap(),
        std::fs::read(&second.paths[0]).unwrap()
    );
    assert!(
        took < std::time::Duration::from_secs(1),
        "not taken from the copy: {took:?}"
    );
    // A kept copy without its command is not used: compiled again.
    std::fs::remove_file(kept[0].with_extension("o.cmd")).unwrap();
    let third = tree
        .compile_objects(&["fs/proc/cmdline.o"], &flags, 1, &dir.path().join("third"))
        .unwrap();
    assert_eq!(third.commands, first.commands);
    // Compiled again, so kept again; then this test's copy goes.
    assert!(kept[0].with_extension("o.cmd").is_file());
    std::fs::remove_dir_all(
        kept[0]
            .parent()
            .unwrap()
            .parent()
            .unwrap()
            .parent()
            .unwrap(),
    )
    .unwrap();
}
