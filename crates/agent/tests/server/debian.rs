//! The agent as users install it, on the lab's Debian 12 host (systemd,
//! openssh-server; `lab::DebianImage`) running the 6.1 cloud kernel: the
//! host joins the fleet with the README's one command (the server's
//! install.sh over HTTPS: its signed APT repository read by the real apt,
//! the package, bundle keys, registration, timer; a wrong key refused with
//! nothing changed; a second run changing nothing), its units enabled by
//! the package, an agent upgrade arriving with `apt upgrade`,
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

use super::{admin, common, fixture, serve, server_exe, Pki};

/// The agent's Debian package, built by scripts/package-agent once per
/// test binary (two builds at once would write the same file).
fn agent_package() -> PathBuf {
    static DEB: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    DEB.get_or_init(|| {
        let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..");
        PathBuf::from(
            common::run(&mut Command::new(root.join("scripts/package-agent")))
                .trim()
                .to_string(),
        )
    })
    .clone()
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

/// `deb` again as version `version`: what an upgrade of the agent looks
/// like to apt.
fn repack(deb: &std::path::Path, version: &str, dir: &std::path::Path) -> PathBuf {
    let tree = dir.join("repack");
    let _ = std::fs::remove_dir_all(&tree);
    common::run(Command::new("dpkg-deb").arg("-R").arg(deb).arg(&tree));
    let control = tree.join("DEBIAN/control");
    let text = std::fs::read_to_string(&control).unwrap();
    let text: String = text
        .lines()
        .map(|l| {
            if l.starts_with("Version:") {
                format!("Version: {version}\n")
            } else {
                format!("{l}\n")
            }
        })
        .collect();
    std::fs::write(&control, text).unwrap();
    let out = dir.join(format!("noreboot_{version}_amd64.deb"));
    common::run(
        Command::new("dpkg-deb")
            .args(["--root-owner-group", "-Zxz", "--build"])
            .arg(&tree)
            .arg(&out),
    );
    out
}

/// The README's one command for a server whose certificate comes from its
/// own CA (the CA file given to curl and to the script).
fn join_command(url: &str, key: &str) -> String {
    format!(
        "curl -fsSL --cacert /root/server-ca.pem {url}/install.sh | sudo sh -s -- --key {key} --ca /root/server-ca.pem"
    )
}

#[test]
#[ignore = "slow: builds the agent's package and boots the Debian 12 host (systemd) in QEMU, with a reboot"]
fn debian_host_joins_in_one_command_and_systemd_runs_the_agent() {
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
    let deb = agent_package();
    admin(
        &exe,
        &data,
        &["agent-package", "upload", deb.to_str().unwrap()],
    );
    let pki = Pki::new(&f.dir.join("debian-pki"));
    let server = serve(&exe, &data, &pki.serve_args());
    let url = format!("https://10.0.2.2:{}", server.port);

    let cache = Cache::from_env().unwrap();
    let image = lab::DebianImage::ensure(&cache, &f.ws).unwrap();
    let mut g = lab::DebianGuest::boot(&image).unwrap();
    eprintln!("Debian host up in {:.1}s", g.boot_time().as_secs_f64());
    g.copy_in(&pki.ca, "/root/server-ca.pem").unwrap();

    // A wrong registration key: refused before anything on the host changed.
    let wrong = g
        .ssh(&join_command(
            &url,
            "nrk_0000000000000000000000000000000000000000000000000000000000000000",
        ))
        .unwrap();
    assert_eq!(wrong.status, 4, "{wrong:?}");
    assert!(
        wrong.stderr.contains("refused the registration key")
            && wrong.stderr.contains("nothing was changed"),
        "{wrong:?}"
    );
    let untouched = g
        .ssh(
            "ls /etc/apt/sources.list.d /etc/apt/keyrings 2>/dev/null; dpkg-query -W noreboot 2>&1",
        )
        .unwrap();
    assert!(
        !untouched.stdout.contains("noreboot.") && untouched.stdout.contains("no packages found"),
        "{untouched:?}"
    );

    // The one command: repository, package (the real apt over HTTPS from
    // the server, Release signature checked against the pinned key), bundle
    // keys, registration, timer.
    let joined = g.ssh_ok(&join_command(&url, &key)).unwrap();
    assert!(
        joined.contains("done: this host is in the fleet"),
        "{joined}"
    );
    let policy = g.ssh_ok("apt-cache policy noreboot").unwrap();
    assert!(
        policy.contains(&format!("{url}/apt stable/main amd64 Packages")),
        "{policy}"
    );
    let enabled = g
        .ssh("systemctl is-enabled noreboot-boot.service noreboot-update.timer")
        .unwrap();
    assert_eq!(enabled.stdout, "enabled\nenabled\n", "{enabled:?}");
    let active = g.ssh("systemctl is-active noreboot-update.timer").unwrap();
    assert_eq!(active.stdout.trim(), "active", "{active:?}");
    let trusted = g
        .ssh_ok("cat /etc/noreboot/trusted.d/noreboot-server-*.pub")
        .unwrap();
    assert_eq!(trusted, std::fs::read_to_string(&f.public).unwrap());
    let registered = g.ssh_ok("cat /var/lib/noreboot/server.json").unwrap();
    assert!(registered.contains(&format!("\"{url}\"")), "{registered}");
    let hosts = admin(&exe, &data, &["hosts"]);
    assert_eq!(hosts.as_array().map(Vec::len), Some(1), "{hosts}");
    assert_eq!(level(&mut g), "none");
    // Again: nothing to do, and it says so.
    let again = g.ssh_ok(&join_command(&url, &key)).unwrap();
    assert!(
        again.contains("nothing to do: this host was already in the fleet"),
        "{again}"
    );

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

    // An agent upgrade arrives with the host's normal updates.
    let newer = repack(&deb, "0.1.0+upgrade1", &f.dir);
    admin(
        &exe,
        &data,
        &["agent-package", "upload", newer.to_str().unwrap()],
    );
    g.ssh_ok("apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get upgrade -y -q")
        .unwrap();
    let version = g.ssh_ok("dpkg-query -W -f='${Version}' noreboot").unwrap();
    assert_eq!(version, "0.1.0+upgrade1");
    assert_eq!(level(&mut g), "2");

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
    // apt purge: configuration and state go too (the bundle key
    // install.sh added stays: dpkg removes only what it installed);
    // the live patch stays until the next reboot.
    g.ssh_ok("DEBIAN_FRONTEND=noninteractive apt-get purge -y noreboot")
        .unwrap();
    let state = g
        .ssh(
            "test ! -e /etc/noreboot/config.toml && echo config-gone; \
             test ! -e /var/lib/noreboot && echo state-gone; \
             test ! -e /etc/systemd/system/timers.target.wants/noreboot-update.timer && echo timer-forgotten; \
             dpkg-query -W -f='${Status}' noreboot 2>&1 | grep -q 'no packages\\|not-installed' && echo not-installed; \
             ls /etc/noreboot/trusted.d/noreboot-server-*.pub >/dev/null && echo admin-key-kept; \
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

/// `ansible-playbook` with the repository's example playbook and `vars`.
fn ansible_playbook(dir: &std::path::Path, inventory: &std::path::Path) -> String {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..");
    common::run(
        Command::new("ansible-playbook")
            .arg("-i")
            .arg(inventory)
            .arg(root.join("deploy/ansible/site.yml"))
            .arg("-e")
            .arg(format!("@{}", dir.join("vars.yml").display()))
            .env("ANSIBLE_NOCOLOR", "1")
            .env("ANSIBLE_RETRY_FILES_ENABLED", "0")
            .env("ANSIBLE_LOCAL_TEMP", dir.join("tmp"))
            .env("ANSIBLE_HOME", dir.join("home")),
    )
}

/// The numbers of a play recap line: `ok=N changed=N ... failed=N`.
fn recap(output: &str, field: &str) -> u32 {
    let line = output
        .lines()
        .find(|l| l.starts_with("guest ") && l.contains(" : "))
        .unwrap_or_else(|| panic!("no play recap in:\n{output}"));
    line.split_whitespace()
        .find_map(|w| w.strip_prefix(&format!("{field}=")))
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no {field}= in {line:?}"))
}

#[test]
#[ignore = "slow: boots the Debian 12 host in QEMU and runs ansible-playbook against it over SSH, twice"]
fn ansible_role_joins_a_debian_host_and_a_second_run_changes_nothing() {
    let f = fixture();
    let exe = server_exe();
    let data = f.dir.join("ansible-server-data");
    let _ = std::fs::remove_dir_all(&data);
    std::fs::create_dir_all(data.join("trusted.d")).unwrap();
    std::fs::copy(&f.public, data.join("trusted.d/test.pub")).unwrap();
    admin(
        &exe,
        &data,
        &["publish", f.levels[0].to_str().unwrap(), "--feed", "stable"],
    );
    let key = admin(&exe, &data, &["key", "create", "--feed", "stable"]);
    let key = key["secret"].as_str().unwrap().to_string();
    admin(
        &exe,
        &data,
        &["agent-package", "upload", agent_package().to_str().unwrap()],
    );
    let pki = Pki::new(&f.dir.join("ansible-pki"));
    let server = serve(&exe, &data, &pki.serve_args());
    let url = format!("https://10.0.2.2:{}", server.port);

    let cache = Cache::from_env().unwrap();
    let image = lab::DebianImage::ensure(&cache, &f.ws).unwrap();
    let mut g = lab::DebianGuest::boot(&image).unwrap();

    let dir = f.dir.join("ansible");
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let inventory = dir.join("inventory.ini");
    std::fs::write(
        &inventory,
        format!(
            "[noreboot]\nguest ansible_host=127.0.0.1 ansible_port={port} ansible_user=root \
             ansible_ssh_private_key_file={key} ansible_python_interpreter=/usr/bin/python3 \
             ansible_ssh_common_args='-o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null'\n",
            port = g.ssh_port(),
            key = g.ssh_key().display(),
        ),
    )
    .unwrap();
    std::fs::write(
        dir.join("vars.yml"),
        format!(
            "noreboot_server_url: {url}\nnoreboot_registration_key: {key}\n\
             noreboot_ca_cert: {ca}\nnoreboot_tags: [lab, ansible]\nnoreboot_update_interval: 1h\n",
            ca = pki.ca.display()
        ),
    )
    .unwrap();

    let first = ansible_playbook(&dir, &inventory);
    assert_eq!(recap(&first, "failed"), 0, "{first}");
    assert!(recap(&first, "changed") >= 8, "{first}");
    assert!(
        !first.contains(&key),
        "the registration key was logged:\n{first}"
    );
    let second = ansible_playbook(&dir, &inventory);
    assert_eq!(recap(&second, "changed"), 0, "{second}");
    assert_eq!(recap(&second, "failed"), 0, "{second}");

    // The host is what the role says: package from the repository, keys,
    // timer with the interval, registered with its tags; and it works:
    // an update over HTTPS with the server's CA takes the released level.
    let state = g
        .ssh(
            "dpkg-query -W -f='${Status}\\n' noreboot; \
             systemctl is-enabled noreboot-update.timer; systemctl is-active noreboot-update.timer; \
             systemctl show -p TimersMonotonic noreboot-update.timer; \
             ls /etc/noreboot/trusted.d/",
        )
        .unwrap();
    assert!(
        state
            .stdout
            .starts_with("install ok installed\nenabled\nactive\n")
            && state.stdout.contains("OnUnitActiveUSec=1h")
            && state.stdout.contains("noreboot-server-"),
        "{state:?}"
    );
    let listed = admin(&exe, &data, &["hosts"]);
    let host = &listed.as_array().unwrap()[0];
    assert_eq!(
        host["tags"],
        serde_json::json!(["lab", "ansible"]),
        "{listed}"
    );
    g.ssh_ok("noreboot update").unwrap();
    assert_eq!(level(&mut g), "1");
    drop(server);
    g.poweroff().unwrap();
}
