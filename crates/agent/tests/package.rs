//! The agent's Debian package: built by scripts/package-agent, its control
//! data and contents as a user installs them, a real `dpkg -i` and purge
//! into a scratch root (maintainer scripts run there), and the systemd
//! units checked by `systemd-analyze verify`.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::run;

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

#[test]
fn debian_package_installs_configures_and_purges() {
    let deb = run(&mut Command::new(repo().join("scripts/package-agent")));
    let deb = PathBuf::from(deb.trim());
    assert!(deb.is_file(), "{}", deb.display());
    let field = |f: &str| run(Command::new("dpkg-deb").args(["-f"]).arg(&deb).arg(f));
    assert_eq!(field("Package").trim(), "noreboot");
    assert_eq!(field("Version").trim(), env!("CARGO_PKG_VERSION"));
    assert!(field("Depends").contains("libc6 (>= 2."));
    let contents = run(Command::new("dpkg-deb").arg("-c").arg(&deb));
    for f in [
        "./usr/bin/noreboot",
        "./etc/noreboot/config.toml",
        "./etc/noreboot/trusted.d/",
        "./lib/systemd/system/noreboot-boot.service",
        "./lib/systemd/system/noreboot-update.service",
        "./lib/systemd/system/noreboot-update.timer",
        "./usr/share/doc/noreboot/README.md",
    ] {
        assert!(contents.contains(f), "{f} missing:\n{contents}");
    }
    let conffiles = run(Command::new("dpkg-deb")
        .args(["-I"])
        .arg(&deb)
        .arg("conffiles"));
    assert_eq!(conffiles.trim(), "/etc/noreboot/config.toml");

    // A scratch root with a dpkg database, a shell and /dev/null: enough
    // for dpkg to unpack and run the maintainer scripts chrooted there.
    let root = tempfile::tempdir().unwrap();
    let r = root.path();
    for d in [
        "var/lib/dpkg/info",
        "var/lib/dpkg/updates",
        "var/lib/dpkg/triggers",
        "bin",
        "dev",
        "tmp",
    ] {
        std::fs::create_dir_all(r.join(d)).unwrap();
    }
    std::fs::write(r.join("var/lib/dpkg/status"), "").unwrap();
    std::fs::copy("/bin/busybox", r.join("bin/busybox")).unwrap();
    for a in ["sh", "mkdir", "chmod", "rm"] {
        std::os::unix::fs::symlink("busybox", r.join("bin").join(a)).unwrap();
    }
    run(Command::new("mknod")
        .arg(r.join("dev/null"))
        .args(["c", "1", "3"]));
    run(Command::new("dpkg")
        .arg(format!("--root={}", r.display()))
        .args(["--force-depends", "-i"])
        .arg(&deb));
    let status = run(Command::new("dpkg")
        .arg(format!("--root={}", r.display()))
        .args(["-s", "noreboot"]));
    assert!(status.contains("Status: install ok installed"), "{status}");
    assert!(
        r.join("var/lib/noreboot").is_dir(),
        "postinst made the state directory"
    );
    // The installed binary runs, and its configuration is the default.
    let v = run(Command::new(r.join("usr/bin/noreboot")).arg("--version"));
    assert!(v.contains(env!("CARGO_PKG_VERSION")), "{v}");
    let text = std::fs::read_to_string(r.join("etc/noreboot/config.toml")).unwrap();
    assert!(text.contains("signal_after = \"15s\""));

    // The units, with ExecStart pointing at the installed binary.
    let units = tempfile::tempdir().unwrap();
    let mut names = Vec::new();
    for u in [
        "noreboot-boot.service",
        "noreboot-update.service",
        "noreboot-update.timer",
    ] {
        let text = std::fs::read_to_string(r.join("lib/systemd/system").join(u)).unwrap();
        let text = text.replace(
            "/usr/bin/noreboot",
            &r.join("usr/bin/noreboot").display().to_string(),
        );
        let p = units.path().join(u);
        std::fs::write(&p, text).unwrap();
        names.push(p);
    }
    let out = Command::new("systemd-analyze")
        .arg("verify")
        .args(&names)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success() && err.trim().is_empty(),
        "systemd-analyze verify: {err}"
    );
    let boot = std::fs::read_to_string(&names[0]).unwrap();
    assert!(boot.contains("Before=network-pre.target"), "{boot}");
    let timer = std::fs::read_to_string(&names[2]).unwrap();
    assert!(timer.contains("OnUnitActiveSec=4h") && timer.contains("RandomizedDelaySec="));

    // Purge removes the state and keeps nothing of ours but what dpkg owns.
    run(Command::new("dpkg")
        .arg(format!("--root={}", r.display()))
        .args(["--purge", "noreboot"]));
    assert!(!r.join("usr/bin/noreboot").exists());
    assert!(!r.join("var/lib/noreboot").exists());
    assert!(!r.join("etc/noreboot/config.toml").exists());
}
