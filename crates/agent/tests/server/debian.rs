//! The agent as users install it, on the lab's Debian 12 host (systemd,
//! openssh-server; `lab::DebianImage`) running the 6.1 cloud kernel: the
//! package installed with the real apt, its units enabled by the package,
//! the update timer (shortened by a drop-in, as an administrator would)
//! taking the level the server releases and then a promoted one, the boot
//! service re-applying the cached level on a real reboot before
//! `network-pre.target` (read from the journal), the agent's output in the
//! journal, and `apt remove` / `apt purge` leaving what the agent's README
//! says they leave.

use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use kernel_tree::Cache;

use super::{admin, common, fixture, serve, server_exe};

/// The agent's Debian package, built by scripts/package-agent.
fn agent_package() -> PathBuf {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..");
    PathBuf::from(
        common::run(&mut Command::new(root.join("scripts/package-agent")))
            .trim()
            .to_string(),
    )
}

/// The level /proc/cmdline shows (the fixture's levels prefix it).
fn level(g: &mut lab::DebianGuest) -> String {
    let c = g.ssh_ok("cat /proc/cmdline").unwrap();
    c.strip_prefix("noreboot-level-")
        .and_then(|r| r.split(' ').next())
        .unwrap_or("none")
        .to_string()
}

/// The position of the first journal line of this boot containing `what`.
fn journal_position(journal: &str, what: &str) -> usize {
    journal
        .lines()
        .position(|l| l.contains(what))
        .unwrap_or_else(|| panic!("no {what:?} in this boot's journal:\n{journal}"))
}

#[test]
#[ignore = "slow: builds the agent's package and boots the Debian 12 host (systemd) in QEMU, with a reboot"]
fn debian_host_installs_the_agent_with_apt_and_systemd_runs_it() {
    let f = fixture();
    let exe = server_exe();
    let data = f.dir.join("debian-server-data");
    let _ = std::fs::remove_dir_all(&data);
    std::fs::create_dir_all(data.join("trusted.d")).unwrap();
    std::fs::copy(&f.public, data.join("trusted.d/test.pub")).unwrap();
    let l1 = f.levels[0].to_str().unwrap();
    let l2 = f.levels[1].to_str().unwrap();
    admin(&exe, &data, &["publish", l1, "--feed", "stable"]);
    admin(&exe, &data, &["publish", l2]);
    let key = admin(&exe, &data, &["key", "create", "--feed", "stable"]);
    let key = key["secret"].as_str().unwrap().to_string();
    let server = serve(&exe, &data, &[]);
    let url = format!("http://10.0.2.2:{}", server.port);

    let deb = agent_package();
    let cache = Cache::from_env().unwrap();
    let image = lab::DebianImage::ensure(&cache, &f.ws).unwrap();
    let mut g = lab::DebianGuest::boot(&image).unwrap();
    eprintln!("Debian host up in {:.1}s", g.boot_time().as_secs_f64());

    // apt installs the package file (the real resolver and dpkg, the
    // maintainer scripts under a running systemd).
    g.copy_in(&deb, "/root/noreboot.deb").unwrap();
    g.ssh_ok("DEBIAN_FRONTEND=noninteractive apt-get install -y /root/noreboot.deb")
        .unwrap();
    let enabled = g
        .ssh("systemctl is-enabled noreboot-boot.service noreboot-update.timer")
        .unwrap();
    assert_eq!(enabled.stdout, "enabled\nenabled\n", "{enabled:?}");
    let active = g.ssh("systemctl is-active noreboot-update.timer").unwrap();
    assert_eq!(active.stdout.trim(), "active", "{active:?}");

    g.copy_in(&f.public, "/etc/noreboot/trusted.d/test.pub")
        .unwrap();
    g.ssh_ok(&format!("noreboot register --server {url} --key {key}"))
        .unwrap();
    assert_eq!(level(&mut g), "none");

    // The timer, shortened the way an administrator would (a drop-in;
    // its first empty assignment resets all of the unit's timers), fires
    // and takes the level the server releases to the host's feed.
    g.ssh_ok(
        "mkdir -p /etc/systemd/system/noreboot-update.timer.d && \
         printf '[Timer]\\nOnBootSec=\\nOnBootSec=5s\\nOnActiveSec=2s\\nOnUnitActiveSec=10s\\nRandomizedDelaySec=0\\nAccuracySec=1s\\n' \
           > /etc/systemd/system/noreboot-update.timer.d/test.conf && \
         systemctl daemon-reload && systemctl restart noreboot-update.timer",
    )
    .unwrap();
    g.wait_until(
        "grep -q '^noreboot-level-1 ' /proc/cmdline",
        Duration::from_secs(120),
    )
    .unwrap();
    // The agent logs to the journal under its unit.
    let log = g
        .ssh_ok("journalctl -u noreboot-update.service --no-pager -o cat")
        .unwrap();
    assert!(log.contains("level 1 (nrtest_l1) applied"), "{log}");

    // A real reboot: the boot service re-applies level 1 from the cache,
    // before network-pre.target (so before any network).
    let took = g.reboot().unwrap();
    eprintln!("rebooted in {:.1}s", took.as_secs_f64());
    assert_eq!(level(&mut g), "1");
    let journal = g
        .ssh_ok("journalctl -b --no-pager -o short-monotonic")
        .unwrap();
    let applied = journal_position(&journal, "Finished noreboot-boot.service");
    let network_pre = journal_position(&journal, "Reached target network-pre.target");
    assert!(
        applied < network_pre,
        "the boot service finished after network-pre.target:\n{journal}"
    );
    let boot_log = g
        .ssh_ok("journalctl -b -u noreboot-boot.service --no-pager -o cat")
        .unwrap();
    assert!(
        boot_log.contains("boot: level 1 (nrtest_l1) re-applied"),
        "{boot_log}"
    );

    // Level 2 promoted: the next timer tick takes it.
    admin(
        &exe,
        &data,
        &[
            "promote",
            "--kernel",
            &f.build_id,
            "--level",
            "2",
            "--to",
            "stable",
        ],
    );
    g.wait_until(
        "grep -q '^noreboot-level-2 ' /proc/cmdline",
        Duration::from_secs(120),
    )
    .unwrap();

    // apt remove: the agent and its units go, the timer is stopped, the
    // live patch stays loaded, configuration and state stay.
    g.ssh_ok("DEBIAN_FRONTEND=noninteractive apt-get remove -y noreboot")
        .unwrap();
    let state = g
        .ssh(
            "test ! -e /usr/bin/noreboot && echo binary-gone; \
             systemctl is-active noreboot-update.timer; \
             test -f /etc/noreboot/config.toml && echo config-kept; \
             test -d /var/lib/noreboot && echo state-kept; \
             cat /sys/kernel/livepatch/nrtest_l2/enabled",
        )
        .unwrap();
    assert_eq!(
        state.stdout, "binary-gone\ninactive\nconfig-kept\nstate-kept\n1\n",
        "{state:?}"
    );
    assert_eq!(level(&mut g), "2");
    // apt purge: configuration and state go too (the trusted key the
    // administrator added stays: dpkg removes only what it installed);
    // the live patch stays until the next reboot.
    g.ssh_ok("DEBIAN_FRONTEND=noninteractive apt-get purge -y noreboot")
        .unwrap();
    let state = g
        .ssh(
            "test ! -e /etc/noreboot/config.toml && echo config-gone; \
             test ! -e /var/lib/noreboot && echo state-gone; \
             test ! -e /etc/systemd/system/timers.target.wants/noreboot-update.timer && echo timer-forgotten; \
             dpkg-query -W -f='${Status}' noreboot 2>&1 | grep -q 'no packages\\|not-installed' && echo not-installed; \
             test -f /etc/noreboot/trusted.d/test.pub && echo admin-key-kept; \
             cat /sys/kernel/livepatch/nrtest_l2/enabled",
        )
        .unwrap();
    assert_eq!(
        state.stdout,
        "config-gone\nstate-gone\ntimer-forgotten\nnot-installed\nadmin-key-kept\n1\n",
        "{state:?}"
    );
    drop(server);
    g.poweroff().unwrap();
}
