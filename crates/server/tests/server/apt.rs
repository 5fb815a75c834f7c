//! The APT repository and `/install.sh` against the real tools: packages
//! made by `dpkg-deb --build` are uploaded, and Debian's `apt-get`, with
//! its own configuration and state in a temporary directory (the host's
//! apt setup is not touched), updates from the server with `signed-by` the
//! served key, picks the newest version and downloads it byte for byte;
//! a tampered Release and a wrong key are refused by apt itself. The
//! script is checked by `sh -n` and `shellcheck`, and its refusals run in
//! a read-only sandbox (`bwrap`), which proves they changed nothing.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use reqwest::{Method, StatusCode};
use serde_json::json;
use server::api::Settings;
use server::blobs::sha256_hex;
use server::model::Role;

use crate::common::*;

/// A real .deb: `dpkg-deb --build` of a package with one file (`compress`:
/// what `dpkg-deb -Z` takes).
pub fn deb(dir: &Path, package: &str, version: &str, arch: &str, compress: &str) -> Vec<u8> {
    let root = dir.join(format!("{package}_{version}_{arch}_{compress}"));
    std::fs::create_dir_all(root.join("DEBIAN")).unwrap();
    std::fs::create_dir_all(root.join("usr/share/doc").join(package)).unwrap();
    std::fs::write(
        root.join("usr/share/doc").join(package).join("version"),
        version,
    )
    .unwrap();
    std::fs::write(
        root.join("DEBIAN/control"),
        format!(
            "Package: {package}\nVersion: {version}\nArchitecture: {arch}\n\
             Maintainer: test <test@example.invalid>\n\
             Description: a test package\n for the repository tests\n"
        ),
    )
    .unwrap();
    let out = root.with_extension("deb");
    let o = Command::new("dpkg-deb")
        .args(["--root-owner-group", "-Z", compress, "--build"])
        .arg(&root)
        .arg(&out)
        .output()
        .expect("dpkg-deb (Debian's dpkg) must be installed");
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    std::fs::read(out).unwrap()
}

/// `apt-get`/`apt-cache` confined to `root`: sources, keyrings, lists,
/// cache and dpkg status all there; nothing of the host's apt setup read
/// or written.
struct Apt {
    root: PathBuf,
}

impl Apt {
    fn new(root: &Path, sources: &str) -> Self {
        for d in [
            "etc/apt.conf.d",
            "etc/preferences.d",
            "etc/trusted.gpg.d",
            "etc/sources.list.d",
            "state/lists/partial",
            "cache/archives/partial",
            "log",
        ] {
            std::fs::create_dir_all(root.join(d)).unwrap();
        }
        std::fs::write(root.join("status"), "").unwrap();
        std::fs::write(root.join("etc/sources.list"), sources).unwrap();
        Self {
            root: root.to_path_buf(),
        }
    }

    fn run(&self, tool: &str, args: &[&str]) -> Output {
        let r = &self.root;
        let o = |k: &str, v: PathBuf| format!("{k}={}", v.display());
        let mut c = Command::new(tool);
        c.args(["-o", &o("Dir::Etc::SourceList", r.join("etc/sources.list"))])
            .args([
                "-o",
                &o("Dir::Etc::SourceParts", r.join("etc/sources.list.d")),
            ])
            .args(["-o", &o("Dir::Etc::Parts", r.join("etc/apt.conf.d"))])
            .args(["-o", &o("Dir::Etc::Preferences", r.join("etc/preferences"))])
            .args([
                "-o",
                &o("Dir::Etc::PreferencesParts", r.join("etc/preferences.d")),
            ])
            .args(["-o", &o("Dir::Etc::Trusted", r.join("etc/trusted.gpg"))])
            .args([
                "-o",
                &o("Dir::Etc::TrustedParts", r.join("etc/trusted.gpg.d")),
            ])
            .args(["-o", &o("Dir::State", r.join("state"))])
            .args(["-o", &o("Dir::State::status", r.join("status"))])
            .args(["-o", &o("Dir::Cache", r.join("cache"))])
            .args(["-o", &o("Dir::Log", r.join("log"))])
            .args(["-o", "Debug::NoLocking=1", "-o", "APT::Architecture=amd64"])
            .args(["-o", "APT::Architectures=amd64"])
            // The download sandbox user could not write into the test's
            // private temporary directory.
            .args(["-o", "APT::Sandbox::User=root"])
            .args(args)
            .current_dir(r)
            .env("LC_ALL", "C");
        c.output()
            .expect("apt-get (Debian's apt) must be installed")
    }

    fn ok(&self, tool: &str, args: &[&str]) -> String {
        let out = self.run(tool, args);
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(out.status.success(), "{tool} {args:?} failed:\n{text}");
        text
    }

    /// `apt-cache policy noreboot`'s candidate version.
    fn candidate(&self) -> String {
        let text = self.ok("apt-cache", &["policy", "noreboot"]);
        text.lines()
            .find_map(|l| l.trim().strip_prefix("Candidate: "))
            .unwrap_or_else(|| panic!("no candidate in:\n{text}"))
            .to_string()
    }
}

async fn get_bytes(s: &TestServer, path: &str) -> Vec<u8> {
    let r = s.http.get(format!("{}{path}", s.url)).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::OK, "{path}");
    r.bytes().await.unwrap().to_vec()
}

async fn upload(s: &TestServer, token: &str, bytes: Vec<u8>) -> (StatusCode, serde_json::Value) {
    s.call(
        Method::POST,
        "/api/v1/admin/agent-packages",
        Some(token),
        Some(Body::Raw(bytes, "application/vnd.debian.binary-package")),
    )
    .await
}

// apt and the script block their thread while the in-process server answers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn apt_installs_the_newest_uploaded_agent_package_and_refuses_a_forged_release() {
    let s = TestServer::start().await;
    let dir = tempfile::tempdir().unwrap();
    let admin = s.token("ops", Role::Admin).await;
    let reader = s.token("viewer", Role::ReadOnly).await;

    // Refusals, each naming what is wrong.
    let (st, b) = upload(&s, &admin, b"#!/bin/sh\n".to_vec()).await;
    assert_eq!(st, StatusCode::BAD_REQUEST, "{b}");
    assert!(
        b["error"]
            .as_str()
            .unwrap()
            .contains("not a Debian package"),
        "{b}"
    );
    let arm = deb(dir.path(), "noreboot", "0.1.0", "arm64", "xz");
    let (st, b) = upload(&s, &admin, arm).await;
    assert_eq!(st, StatusCode::BAD_REQUEST, "{b}");
    assert!(
        b["error"]
            .as_str()
            .unwrap()
            .contains("architecture \"arm64\""),
        "{b}"
    );
    let other = deb(dir.path(), "hello", "1.0", "amd64", "xz");
    let (st, b) = upload(&s, &admin, other).await;
    assert_eq!(st, StatusCode::BAD_REQUEST, "{b}");
    assert!(
        b["error"]
            .as_str()
            .unwrap()
            .contains("not the agent's package"),
        "{b}"
    );
    let v1 = deb(dir.path(), "noreboot", "0.1.0", "amd64", "gzip");
    let (st, _) = upload(&s, &reader, v1.clone()).await;
    assert_eq!(st, StatusCode::FORBIDDEN);

    let (st, b) = upload(&s, &admin, v1.clone()).await;
    assert_eq!(st, StatusCode::CREATED, "{b}");
    assert_eq!(
        b["filename"],
        "pool/main/n/noreboot/noreboot_0.1.0_amd64.deb"
    );
    let (st, b) = upload(&s, &admin, v1.clone()).await;
    assert_eq!(st, StatusCode::CONFLICT, "{b}");
    assert!(
        b["error"].as_str().unwrap().contains("this same file"),
        "{b}"
    );

    // apt, with the served key and nothing else trusted.
    let key = get_bytes(&s, "/apt/key.asc").await;
    let keyring = dir.path().join("noreboot.asc");
    std::fs::write(&keyring, &key).unwrap();
    let sources = format!(
        "deb [signed-by={}] {}/apt stable main\n",
        keyring.display(),
        s.url
    );
    let apt = Apt::new(&dir.path().join("apt"), &sources);
    let text = apt.ok("apt-get", &["update"]);
    assert!(text.contains("stable InRelease"), "{text}");
    assert_eq!(apt.candidate(), "0.1.0");

    // A newer upload (zstd-compressed this time) is what apt picks next.
    s.clock.advance(60);
    let v2 = deb(dir.path(), "noreboot", "0.2.0", "amd64", "zstd");
    let (st, b) = upload(&s, &admin, v2.clone()).await;
    assert_eq!(st, StatusCode::CREATED, "{b}");
    apt.ok("apt-get", &["update"]);
    assert_eq!(apt.candidate(), "0.2.0");
    apt.ok("apt-get", &["download", "noreboot"]);
    let got = std::fs::read(apt.root.join("noreboot_0.2.0_amd64.deb")).unwrap();
    assert!(got == v2, "apt downloaded other bytes than were uploaded");
    let (st, b) = s
        .call(
            Method::GET,
            "/api/v1/admin/agent-packages",
            Some(&reader),
            None,
        )
        .await;
    assert_eq!(st, StatusCode::OK);
    let versions: Vec<&str> = b["packages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["version"].as_str().unwrap())
        .collect();
    assert_eq!(versions, ["0.1.0", "0.2.0"]);

    // Withdrawn, the older version is the candidate again.
    s.clock.advance(60);
    let (st, b) = s
        .call(
            Method::POST,
            "/api/v1/admin/agent-packages/0.2.0/remove",
            Some(&admin),
            None,
        )
        .await;
    assert_eq!(st, StatusCode::OK, "{b}");
    apt.ok("apt-get", &["update"]);
    assert_eq!(apt.candidate(), "0.1.0");
    let audit = s.ctx.audit_log(10).await.unwrap();
    let actions: Vec<&str> = audit.iter().map(|a| a.action.as_str()).collect();
    assert_eq!(
        actions[..3],
        ["package-remove", "package-upload", "package-upload"]
    );

    // A copy of the repository whose signed Release says other than the
    // server signed: apt refuses it.
    let mirror = dir.path().join("mirror");
    let index = mirror.join("dists/stable/main/binary-amd64");
    std::fs::create_dir_all(&index).unwrap();
    let in_release = String::from_utf8(get_bytes(&s, "/apt/dists/stable/InRelease").await).unwrap();
    assert!(
        in_release.starts_with("-----BEGIN PGP SIGNED MESSAGE-----"),
        "{in_release}"
    );
    let packages = get_bytes(&s, "/apt/dists/stable/main/binary-amd64/Packages").await;
    let forged_packages = String::from_utf8(packages.clone())
        .unwrap()
        .replace("0.1.0", "0.1.1");
    std::fs::write(index.join("Packages"), &forged_packages).unwrap();
    let forged = in_release.replace(
        &format!(
            " {} {} main/binary-amd64/Packages\n",
            sha256_hex(&packages),
            packages.len()
        ),
        &format!(
            " {} {} main/binary-amd64/Packages\n",
            sha256_hex(forged_packages.as_bytes()),
            forged_packages.len()
        ),
    );
    assert_ne!(
        forged, in_release,
        "the Packages line was not found in:\n{in_release}"
    );
    std::fs::write(mirror.join("dists/stable/InRelease"), forged).unwrap();
    let tampered = Apt::new(
        &dir.path().join("apt-tampered"),
        &format!(
            "deb [signed-by={}] file://{} stable main\n",
            keyring.display(),
            mirror.display()
        ),
    );
    let out = tampered.run("apt-get", &["update"]);
    let text = String::from_utf8_lossy(&out.stderr);
    assert!(
        text.contains("BADSIG") || text.contains("signatures were invalid"),
        "apt took a forged InRelease:\n{text}"
    );
    let policy = tampered.run("apt-cache", &["policy", "noreboot"]);
    assert!(!String::from_utf8_lossy(&policy.stdout).contains("0.1.1"));

    // Another server's key does not sign for this one.
    let other = TestServer::start().await;
    let wrong_key = dir.path().join("other.asc");
    std::fs::write(&wrong_key, get_bytes(&other, "/apt/key.asc").await).unwrap();
    assert_ne!(std::fs::read(&wrong_key).unwrap(), key);
    let wrong = Apt::new(
        &dir.path().join("apt-wrong"),
        &format!(
            "deb [signed-by={}] {}/apt stable main\n",
            wrong_key.display(),
            s.url
        ),
    );
    let out = wrong.run("apt-get", &["update"]);
    let text = String::from_utf8_lossy(&out.stderr);
    assert!(
        text.contains("NO_PUBKEY"),
        "apt took a Release signed by another key:\n{text}"
    );
    other.stop().await;
    s.stop().await;
}

/// The script as a host gets it, in a file.
async fn install_script(s: &TestServer, dir: &Path) -> (PathBuf, String) {
    let text = String::from_utf8(get_bytes(s, "/install.sh").await).unwrap();
    let path = dir.join("install.sh");
    std::fs::write(&path, &text).unwrap();
    (path, text)
}

/// Runs the script as users do, `sh -s -- args` reading it from stdin,
/// in a sandbox whose whole filesystem is read-only (`bwrap`) but for a
/// private /tmp, with `etc` bound over `/etc` when given (a host without
/// Debian's files): whatever it refuses, it cannot have changed anything.
fn sandboxed(script: &Path, etc: Option<&Path>, args: &[&str]) -> Output {
    let mut c = Command::new("bwrap");
    c.args(["--ro-bind", "/", "/", "--dev", "/dev", "--proc", "/proc"]);
    c.args(["--tmpfs", "/tmp"]);
    if let Some(etc) = etc {
        c.arg("--ro-bind").arg(etc).arg("/etc");
    }
    c.args(["--unshare-pid", "--die-with-parent", "sh", "-s", "--"])
        .args(args)
        .stdin(std::fs::File::open(script).unwrap())
        .env("LC_ALL", "C");
    c.output().expect("bwrap (bubblewrap) must be installed")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn install_script_pins_the_key_and_refuses_before_changing_anything() {
    let s = TestServer::start().await;
    let dir = tempfile::tempdir().unwrap();
    let (script, text) = install_script(&s, dir.path()).await;
    let key = s.state.repo.key(&s.ctx).await.unwrap();

    // What the server rendered into it.
    assert!(text.contains(&format!("SERVER='{}'", s.url)), "{text}");
    assert!(text.contains(&format!("FINGERPRINT='{}'", key.fingerprint)));
    assert!(
        text.contains(&key.public_armored),
        "the key is not embedded as served"
    );
    let bundle_key = s.key.public_key().to_minisign_string();
    assert!(
        text.contains(&format!(
            "write_bundle_key {} <<'NOREBOOT_KEY'\n{bundle_key}NOREBOOT_KEY\n",
            s.key.key_id()
        )),
        "{text}"
    );
    assert!(!text.contains("@@"), "a placeholder is left:\n{text}");
    let o = Command::new("sh").arg("-n").arg(&script).output().unwrap();
    assert!(
        o.status.success(),
        "sh -n: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    let o = Command::new("shellcheck")
        .args(["-s", "sh"])
        .arg(&script)
        .output()
        .expect("shellcheck must be installed (scripts/setup)");
    assert!(
        o.status.success(),
        "shellcheck:\n{}",
        String::from_utf8_lossy(&o.stdout)
    );

    // The key check the script makes first.
    let reg = s.reg_key("stable").await;
    let (st, b) = s
        .call(
            Method::POST,
            "/api/v1/register/check",
            None,
            Some(Body::Json(json!({"registration_key": reg}))),
        )
        .await;
    assert_eq!((st, b), (StatusCode::OK, json!({"feed": "stable"})));
    let wrong = format!("nrk_{}", "0".repeat(64));

    // Refusals: exit status and message, with the host read-only.
    let o = sandboxed(&script, None, &[]);
    assert_eq!(o.status.code(), Some(2), "{o:?}");
    assert!(String::from_utf8_lossy(&o.stderr).contains("--key KEY is required"));
    let o = sandboxed(&script, None, &["--key", &wrong]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(4), "{o:?}");
    assert!(
        err.contains(
            "refused the registration key: registration key not recognised; nothing was changed"
        ),
        "{err}"
    );
    let not_debian = dir.path().join("etc");
    std::fs::create_dir_all(&not_debian).unwrap();
    std::fs::write(not_debian.join("os-release"), "ID=fedora\n").unwrap();
    let o = sandboxed(&script, Some(&not_debian), &["--key", &reg]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(3), "{o:?}");
    assert!(err.contains("this is not a Debian host"), "{err}");
    let o = sandboxed(&script, None, &["--key", &reg, "--bogus"]);
    assert_eq!(o.status.code(), Some(2), "{o:?}");
    s.stop().await;

    // Behind a proxy, the URL hosts use is the one configured.
    let proxied = TestServer::start_with(Settings {
        public_url: Some("https://noreboot.example".into()),
        ..Settings::default()
    })
    .await;
    let text = String::from_utf8(get_bytes(&proxied, "/install.sh").await).unwrap();
    assert!(
        text.contains("SERVER='https://noreboot.example'\n"),
        "{text}"
    );
    proxied.stop().await;
}
