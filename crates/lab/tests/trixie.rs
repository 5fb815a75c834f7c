//! Debian 13 kernels in the lab: the newest 6.12+deb13 build and the newest
//! trixie-backports build the archive offers (through noreboot's private
//! apt view of Debian), each booted in QEMU with its own modules in the
//! initramfs (a module and its dependency loaded at boot), running a
//! command. Real kernels, nothing mocked; they fail,
//! never skip, when the archive or QEMU is missing. Cold, each fetches
//! about 200 MiB of packages; warm, each boots in seconds.

use kernel_tree::{discover, AptArchive, Cache, Release, Workspace};
use lab::GuestConfig;

fn boot_and_run(pick: impl Fn(&str) -> bool, what: &str) {
    let cache = Cache::from_env().expect("cache directory");
    let archive = AptArchive::debian(&cache).expect("noreboot's apt view of Debian");
    let list = discover::all_available_releases(&archive, "cloud-amd64").unwrap();
    let (release, version): (Release, _) = discover::newest_for_debian(&list, 13, pick)
        .unwrap_or_else(|| panic!("the archive offers no {what} build"));
    eprintln!("{what} kernel: {release} ({version})");
    let ws = Workspace::fetch(&cache, &archive, &release).expect("fetching the workspace");
    // vfat needs fat: a module with a dependency, both shipped .ko.xz,
    // loaded at boot from the initramfs.
    let mut cfg = GuestConfig::for_workspace(&ws);
    cfg.modules = vec!["vfat".into()];
    let r = lab::run(&cfg, "uname -r; cut -d' ' -f1 /proc/modules | sort").unwrap();
    assert_eq!(r.status, 0, "{}", r.console);
    let lines: Vec<&str> = r.stdout.lines().collect();
    assert_eq!(lines.first(), Some(&release.as_str()), "{}", r.stdout);
    assert_eq!(&lines[1..], ["fat", "vfat"], "{}", r.stdout);
    assert!(
        r.dmesg.contains(&format!("Debian {version}")),
        "{}",
        r.dmesg
    );
    eprintln!(
        "{release}: boot {:?}, command {:?}, total {:?}",
        r.boot, r.exec, r.total
    );
}

#[test]
#[ignore = "slow tier: downloads and boots a 6.12+deb13 guest; scripts/test runs it"]
fn trixie_6_12_guest_runs_a_command() {
    boot_and_run(|s| s == "6.12", "6.12+deb13");
}

#[test]
#[ignore = "slow tier: downloads and boots a trixie-backports guest; scripts/test runs it"]
fn backports_guest_runs_a_command() {
    boot_and_run(|s| s != "6.12", "trixie-backports");
}
