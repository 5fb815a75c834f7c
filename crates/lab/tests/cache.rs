//! `noreboot-lab cache` and the cap options, on a temporary cache with
//! fake workspace directories (never the real cache): what a user sees of
//! sizes, last use, use by another process, eviction and bad sizes.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, SystemTime};

use kernel_tree::evict::{SIZE_FILE, STAMP};
use kernel_tree::{Cache, Workspace};

const OLD: &str = "6.1.0-47-cloud-amd64";
const NEW: &str = "6.1.0-48-cloud-amd64";
const G: u64 = 1 << 30;

fn lab(cache: &Path, env_cap: Option<&str>, args: &[&str]) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_noreboot-lab"));
    cmd.env("NOREBOOT_CACHE", cache).args(args);
    match env_cap {
        Some(v) => cmd.env("NOREBOOT_CACHE_CAP", v),
        None => cmd.env_remove("NOREBOOT_CACHE_CAP"),
    };
    let out = cmd.output().expect("running noreboot-lab");
    eprintln!(
        "noreboot-lab {}: {}\n{}{}",
        args.join(" "),
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// A workspace directory the library opens, recorded as `bytes` and last
/// used `hours_ago`.
fn fake_workspace(cache: &Path, release: &str, bytes: u64, hours_ago: u64) -> PathBuf {
    let dir = cache.join("kernels").join(release);
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(
        dir.join("workspace.toml"),
        format!(
            "format = 1\nrelease = \"{release}\"\nversion = \"6.1.170-3\"\npackages = []\n\n\
             [identity]\nrelease = \"{release}\"\nbuild_id = \"0123abcd\"\n\
             uname_version = \"#1 SMP\"\ncompiler = \"gcc-12\"\nlinker = \"ld\"\n\
             compression = \"xz\"\n"
        ),
    )
    .unwrap();
    std::fs::write(dir.join(SIZE_FILE), format!("{bytes}\n")).unwrap();
    let stamp = std::fs::File::create(dir.join(STAMP)).unwrap();
    stamp
        .set_modified(SystemTime::now() - Duration::from_secs(hours_ago * 3600))
        .unwrap();
    dir
}

fn json(out: &Output) -> serde_json::Value {
    assert!(out.status.success());
    serde_json::from_slice(&out.stdout).expect("JSON on stdout")
}

#[test]
fn cache_status_shows_use_and_cap_and_evict_skips_the_workspace_in_use() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    fake_workspace(root, OLD, 3 * G, 5);
    fake_workspace(root, NEW, 2 * G, 1);
    // This test process uses the newer one, as a running build would.
    let held = Workspace::open(&Cache::at(root), &NEW.parse().unwrap())
        .unwrap()
        .expect("the fake workspace opens");

    let s = json(&lab(root, None, &["cache", "--json", "--cache-cap", "4G"]));
    assert_eq!(s["cap"], 4 * G);
    assert_eq!(s["total"], 5 * G);
    let w = s["workspaces"].as_array().unwrap();
    assert_eq!(
        (&w[0]["release"], &w[0]["in_use"]),
        (&OLD.into(), &false.into())
    );
    assert_eq!(
        (&w[1]["release"], &w[1]["in_use"]),
        (&NEW.into(), &true.into())
    );

    let out = lab(root, Some("4G"), &["cache", "status"]);
    let table = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success());
    assert!(
        table.contains("total 5.0 GiB, cap 4.0 GiB: over the cap"),
        "{table}"
    );
    let line = table.lines().find(|l| l.starts_with(NEW)).unwrap();
    assert!(
        line.contains("2.0 GiB") && line.ends_with("in use"),
        "{line}"
    );

    // To the cap of the variable: the old one goes.
    let out = lab(root, Some("4G"), &["cache", "evict"]);
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success());
    assert_eq!(
        said.trim(),
        format!("evicted {OLD} (3.0 GiB); kernels/ uses 2.0 GiB of cap 4.0 GiB")
    );
    // To nothing: the one in use stays, and the line says why.
    let e = json(&lab(root, None, &["cache", "evict", "--to", "0", "--json"]));
    assert_eq!(e["busy"][0], NEW);
    assert_eq!(e["evicted"].as_array().unwrap().len(), 0);
    assert!(root.join("kernels").join(NEW).is_dir());
    drop(held);
    let e = json(&lab(root, None, &["cache", "evict", "--to", "0", "--json"]));
    assert_eq!(e["evicted"][0]["release"], NEW);
    assert_eq!(e["after"], 0);
}

#[test]
fn bad_caps_name_the_variable_or_flag_and_the_value() {
    let tmp = tempfile::tempdir().unwrap();
    let out = lab(tmp.path(), Some("12 parsecs"), &["cache"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(3));
    assert!(
        err.contains("invalid NOREBOOT_CACHE_CAP \"12 parsecs\": unknown unit"),
        "{err}"
    );
    let out = lab(tmp.path(), None, &["fetch", "--cache-cap", "40GB"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        err.contains("invalid value '40GB' for '--cache-cap <SIZE>'") && err.contains("ambiguous"),
        "{err}"
    );
    // The flag wins over a bad variable.
    let s = json(&lab(
        tmp.path(),
        Some("lots"),
        &["cache", "--cache-cap", "1.5T", "--json"],
    ));
    assert_eq!(s["cap"], 3u64 << 39);
    // 0 is no cap, and evict then needs --to.
    let out = lab(tmp.path(), Some("0"), &["cache", "evict"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("no size to evict to"));
}
