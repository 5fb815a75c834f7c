//! The agent and noreboot-server together: a real server on the host's
//! loopback, two guests running the real 6.1 kernel reaching it through
//! QEMU user networking (10.0.2.2), registered on different feeds. Each
//! takes the level its feed serves, follows a promotion and a rollback,
//! reports back, and keeps its level while the server is down.

mod common;

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};

use common::{config, fixture, guest_config, sh, workspace_bin};

/// The server, killed on drop.
struct Server {
    child: Child,
    port: u16,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn serve(exe: &Path, data: &Path) -> Server {
    let mut child = Command::new(exe)
        .args(["serve", "--listen", "127.0.0.1:0", "--data"])
        .arg(data)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let port = line
        .trim()
        .rsplit(':')
        .next()
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("no port in {line:?}"));
    Server { child, port }
}

/// `noreboot-server admin --json ...`.
fn admin(exe: &Path, data: &Path, args: &[&str]) -> serde_json::Value {
    let out = common::run(
        Command::new(exe)
            .args(["admin", "--json", "--data"])
            .arg(data)
            .args(args),
    );
    serde_json::from_str(&out).unwrap_or_else(|e| panic!("admin {args:?}: {e}: {out}"))
}

fn cmdline_level(g: &mut lab::Guest) -> String {
    let c = g.exec_ok("cat /proc/cmdline").unwrap();
    c.strip_prefix("noreboot-level-")
        .and_then(|r| r.split(' ').next())
        .unwrap_or("none")
        .to_string()
}

fn agent(g: &mut lab::Guest, args: &str) -> (i32, String) {
    let (code, out, err) = sh(g, &format!("/usr/sbin/noreboot {args}"));
    (code, format!("{out}{err}"))
}

#[test]
fn two_hosts_on_two_feeds_follow_the_server() {
    let f = fixture();
    // NOREBOOT_SERVER_EXE: a prebuilt server (another checkout's).
    let exe = std::env::var_os("NOREBOOT_SERVER_EXE")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| workspace_bin("noreboot-server", "server"));
    let data = f.dir.join("server-data");
    let _ = std::fs::remove_dir_all(&data);
    std::fs::create_dir_all(data.join("trusted.d")).unwrap();
    std::fs::copy(&f.public, data.join("trusted.d/test.pub")).unwrap();
    let l1 = f.levels[0].to_str().unwrap();
    let l2 = f.levels[1].to_str().unwrap();
    admin(
        &exe,
        &data,
        &["publish", l1, "--feed", "test", "--feed", "stable"],
    );
    admin(&exe, &data, &["publish", l2, "--feed", "test"]);
    let key_test = admin(&exe, &data, &["key", "create", "--feed", "test"]);
    let key_stable = admin(&exe, &data, &["key", "create", "--feed", "stable"]);
    let server = serve(&exe, &data);
    let url = format!("http://10.0.2.2:{}", server.port);

    // Few quick retries, so the server-down case is short.
    let cfg = config(
        "15s",
        "1m",
        "\n[server]\nattempts = 2\nbackoff = \"200ms\"\ntimeout = \"10s\"\n",
    );
    let boot = || lab::Guest::boot(&guest_config(f, &cfg).with_network()).unwrap();
    let mut hosts = [
        (
            boot(),
            key_test["secret"].as_str().unwrap().to_string(),
            "2",
        ),
        (
            boot(),
            key_stable["secret"].as_str().unwrap().to_string(),
            "1",
        ),
    ];
    for (i, (g, key, _)) in hosts.iter_mut().enumerate() {
        g.exec_ok(&format!("hostname host{i}")).unwrap();
        let (code, out) = agent(g, &format!("register --server {url} --key {key} --tag lab"));
        assert_eq!(code, 0, "{out}");
        let (code, _) = agent(g, "status");
        assert_eq!(code, 1, "registered, nothing applied yet");
    }
    // Both registered on the vulnerable kernel: exposed to the CVE level
    // 1 fixes.
    let summary = admin(&exe, &data, &["report", "summary"]);
    assert_eq!(summary["hosts_exposed"].as_u64(), Some(2), "{summary}");
    assert_eq!(summary["hosts_protected"].as_u64(), Some(0), "{summary}");
    for (g, _, want) in hosts.iter_mut() {
        let (code, out) = agent(g, "update");
        assert_eq!(code, 0, "{out}");
        assert_eq!(cmdline_level(g), *want, "{out}");
        let (code, out) = agent(g, "update");
        assert_eq!(code, 0, "{out}");
        assert!(out.contains("up to date"), "{out}");
    }
    // The test host has every fix; the stable host still lacks level 2's
    // CVE, which is published (only not yet on its feed).
    let exposed = |data: &Path| {
        let s = admin(&exe, data, &["report", "summary"]);
        (
            s["hosts_protected"].as_u64().unwrap(),
            s["hosts_exposed"].as_u64().unwrap(),
        )
    };
    assert_eq!(exposed(&data), (1, 1));
    // The server knows both, on their feeds, at their levels, and heard
    // their reports.
    let listed = admin(&exe, &data, &["hosts"]);
    let text = listed.to_string();
    for (name, feed, level) in [("host0", "test", 2), ("host1", "stable", 1)] {
        let h = listed
            .as_array()
            .unwrap()
            .iter()
            .find(|h| h["hostname"] == name)
            .unwrap_or_else(|| panic!("{name} not in {text}"));
        assert_eq!(h["feed"], feed, "{text}");
        assert_eq!(h["level"].as_u64(), Some(level), "{text}");
    }

    // Promote level 2 to stable: the stable host follows.
    let build_id = f.build_id.as_str();
    admin(
        &exe,
        &data,
        &[
            "promote", "--kernel", build_id, "--level", "2", "--to", "stable",
        ],
    );
    let (code, out) = agent(&mut hosts[1].0, "update");
    assert_eq!(code, 0, "{out}");
    assert_eq!(cmdline_level(&mut hosts[1].0), "2", "{out}");
    assert_eq!(exposed(&data), (2, 0));

    // Roll the test feed back: the test host goes back to level 1.
    admin(
        &exe,
        &data,
        &["rollback", "--feed", "test", "--kernel", build_id],
    );
    let (code, out) = agent(&mut hosts[0].0, "update");
    assert_eq!(code, 0, "{out}");
    assert_eq!(cmdline_level(&mut hosts[0].0), "1", "{out}");
    assert_eq!(exposed(&data), (1, 1));

    // Server down: the update fails after its retries, the level stays.
    drop(server);
    let (code, out) = agent(&mut hosts[1].0, "update");
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains("retrying") && out.contains("level 2 stays active"),
        "{out}"
    );
    assert_eq!(cmdline_level(&mut hosts[1].0), "2");
    let (code, s) = agent(&mut hosts[1].0, "status --json");
    assert_eq!(code, 0, "{s}");
}
