//! The agent and noreboot-server together: a real server on the host's
//! loopback, two guests running the real 6.1 kernel reaching it through
//! QEMU user networking (10.0.2.2), registered on different feeds, one
//! over plain HTTP and one over HTTPS with the server's own CA in
//! `server.ca`. Each takes the level its feed serves, follows a promotion
//! and a rollback, reports back, and keeps its level while the server is
//! down. On the host alone (no guest, fast): `register` over HTTPS
//! succeeds with the right CA and fails clearly, without retrying and
//! without writing anything, with none or the wrong one.

mod common;
#[path = "server/debian.rs"]
mod debian;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};

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

/// `noreboot-server serve` on a free loopback port, with `args`.
fn serve(exe: &Path, data: &Path, args: &[&str]) -> Server {
    let mut child = Command::new(exe)
        .args(["serve", "--listen", "127.0.0.1:0", "--data"])
        .arg(data)
        .args(args)
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

/// The server binary: NOREBOOT_SERVER_EXE (a prebuilt one, another
/// checkout's), or this workspace's.
fn server_exe() -> PathBuf {
    std::env::var_os("NOREBOOT_SERVER_EXE")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace_bin("noreboot-server", "server"))
}

/// A private CA and a server certificate it signed, valid for the
/// addresses the server is reached at (10.0.2.2 from a guest, 127.0.0.1
/// from the host), as PEM files; plus another CA that signed nothing.
struct Pki {
    ca: PathBuf,
    other_ca: PathBuf,
    cert: PathBuf,
    key: PathBuf,
}

impl Pki {
    fn new(dir: &Path) -> Pki {
        use rcgen::{
            BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair,
            KeyUsagePurpose,
        };
        std::fs::create_dir_all(dir).unwrap();
        let ca = |name: &str| {
            let key = KeyPair::generate().unwrap();
            let mut p = CertificateParams::new(Vec::<String>::new()).unwrap();
            p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
            p.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
            p.distinguished_name.push(DnType::CommonName, name);
            (p.self_signed(&key).unwrap(), key)
        };
        let (ca_cert, ca_key) = ca("noreboot test CA");
        let (other, _) = ca("some other CA");
        let key = KeyPair::generate().unwrap();
        let mut p =
            CertificateParams::new(vec!["10.0.2.2".to_string(), "127.0.0.1".to_string()]).unwrap();
        p.distinguished_name
            .push(DnType::CommonName, "noreboot-server test");
        p.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        let cert = p.signed_by(&key, &ca_cert, &ca_key).unwrap();
        let pki = Pki {
            ca: dir.join("ca.pem"),
            other_ca: dir.join("other-ca.pem"),
            cert: dir.join("server.pem"),
            key: dir.join("server.key"),
        };
        std::fs::write(&pki.ca, ca_cert.pem()).unwrap();
        std::fs::write(&pki.other_ca, other.pem()).unwrap();
        std::fs::write(&pki.cert, cert.pem()).unwrap();
        std::fs::write(&pki.key, key.serialize_pem()).unwrap();
        pki
    }

    /// `serve` arguments for HTTPS with the server certificate.
    fn serve_args(&self) -> [&str; 4] {
        [
            "--tls-cert",
            self.cert.to_str().unwrap(),
            "--tls-key",
            self.key.to_str().unwrap(),
        ]
    }
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
#[ignore = "slow tier: builds the 6.1 patch levels and boots two guests; scripts/test runs it"]
fn two_hosts_on_two_feeds_follow_the_server() {
    let f = fixture();
    let exe = server_exe();
    let pki = Pki::new(&f.dir.join("pki"));
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
    // Two servers on one database, as replicas would run: one plain HTTP,
    // one HTTPS with a certificate of a CA of our own.
    let server = serve(&exe, &data, &[]);
    let tls_server = serve(&exe, &data, &pki.serve_args());
    let url = format!("http://10.0.2.2:{}", server.port);
    let tls_url = format!("https://10.0.2.2:{}", tls_server.port);

    // Few quick retries, so the server-down case is short.
    let retries = "\n[server]\nattempts = 2\nbackoff = \"200ms\"\ntimeout = \"10s\"\n";
    let cfg = config("15s", "1m", retries);
    let tls_cfg = config(
        "15s",
        "1m",
        &format!("{retries}ca = \"/etc/noreboot/server-ca.pem\"\n"),
    );
    let plain = guest_config(f, &cfg).with_network();
    let tls = guest_config(f, &tls_cfg)
        .with_file(&pki.ca, "/etc/noreboot/server-ca.pem")
        .with_network();
    let mut hosts = [
        (
            lab::Guest::boot(&plain).unwrap(),
            key_test["secret"].as_str().unwrap().to_string(),
            "2",
            url,
        ),
        (
            lab::Guest::boot(&tls).unwrap(),
            key_stable["secret"].as_str().unwrap().to_string(),
            "1",
            tls_url.clone(),
        ),
    ];
    for (i, (g, key, _, url)) in hosts.iter_mut().enumerate() {
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
    for (g, _, want, _) in hosts.iter_mut() {
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

    // The HTTPS host registered with the TLS server's URL.
    let reg = hosts[1]
        .0
        .exec_ok("cat /var/lib/noreboot/server.json")
        .unwrap();
    assert!(reg.contains(&format!("\"{tls_url}\"")), "{reg}");

    // Promote level 2 to stable: the stable host follows (check-in,
    // download and report over HTTPS).
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
    drop(tls_server);
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

/// A `/sys/kernel/notes` with a GNU build-id note, for an agent on the
/// host (whose real kernel identity is not ours to use).
fn fake_notes(path: &Path, build_id: &[u8; 20]) {
    let mut notes = Vec::new();
    notes.extend_from_slice(&4u32.to_le_bytes()); // namesz: "GNU\0"
    notes.extend_from_slice(&20u32.to_le_bytes()); // descsz
    notes.extend_from_slice(&3u32.to_le_bytes()); // NT_GNU_BUILD_ID
    notes.extend_from_slice(b"GNU\0");
    notes.extend_from_slice(build_id);
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, notes).unwrap();
}

/// The names in a directory (none if it does not exist).
fn entries(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .map(|d| {
            d.map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    names
}

#[test]
fn register_over_https_trusts_the_configured_ca_only() {
    let exe = server_exe();
    let agent_exe = env!("CARGO_BIN_EXE_noreboot");
    let dir = tempfile::tempdir().unwrap();
    let dir = dir.path();
    let pki = Pki::new(&dir.join("pki"));
    let data = dir.join("server-data");
    let key = admin(&exe, &data, &["key", "create", "--feed", "stable"]);
    let key = key["secret"].as_str().unwrap();
    let server = serve(&exe, &data, &pki.serve_args());
    let url = format!("https://127.0.0.1:{}", server.port);
    let sys = dir.join("sys");
    fake_notes(&sys.join("kernel/notes"), &[0xab; 20]);
    let not_pem = dir.join("not-pem.txt");
    std::fs::write(&not_pem, "this is no certificate\n").unwrap();

    // `noreboot register` with its own state directory and `server.ca`
    // (none: the public roots); a wrong certificate must not be retried,
    // so three quick attempts would show as "retrying".
    let register = |name: &str, url: &str, ca: Option<&Path>| -> (Output, PathBuf) {
        let state = dir.join(format!("state-{name}"));
        let mut cfg = format!(
            "state_dir = {state:?}\ntrusted_keys = {:?}\n\n[kernel]\nsys = {sys:?}\n\n\
             [server]\nattempts = 3\nbackoff = \"50ms\"\ntimeout = \"10s\"\n",
            dir.join("trusted.d")
        );
        if let Some(ca) = ca {
            cfg.push_str(&format!("ca = {ca:?}\n"));
        }
        let cfg_path = dir.join(format!("{name}.toml"));
        std::fs::write(&cfg_path, cfg).unwrap();
        let out = Command::new(agent_exe)
            .arg("--config")
            .arg(&cfg_path)
            .args(["register", "--server", url, "--key", key, "--tag", "tls"])
            .output()
            .unwrap();
        (out, state)
    };
    let refused = |name: &str, url: &str, ca: Option<&Path>, want: &[&str]| {
        let (out, state) = register(name, url, ca);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{name}: {err}");
        for w in want {
            assert!(err.contains(w), "{name}: no {w:?} in: {err}");
        }
        assert!(!err.contains("retrying"), "{name}: retried: {err}");
        // Nothing of the attempt stays: no registration, no audit entry
        // (the lock file is the agent's own, taken before any request).
        let left: Vec<String> = entries(&state)
            .into_iter()
            .filter(|e| e != "lock")
            .collect();
        assert!(
            left.is_empty(),
            "{name}: left {left:?} in {}",
            state.display()
        );
    };

    refused(
        "no-ca",
        &url,
        None,
        &[
            "TLS failed",
            "invalid peer certificate: UnknownIssuer",
            "set `ca` in the [server] section",
        ],
    );
    let other = pki.other_ca.display().to_string();
    refused(
        "wrong-ca",
        &url,
        Some(&pki.other_ca),
        &["UnknownIssuer", "not signed by a CA in server.ca", &other],
    );
    let not_pem_name = not_pem.display().to_string();
    refused(
        "not-pem",
        &url,
        Some(&not_pem),
        &["server.ca", &not_pem_name, "no PEM certificate"],
    );
    refused(
        "missing-ca",
        &url,
        Some(&dir.join("missing.pem")),
        &["server.ca", "missing.pem", "No such file"],
    );
    // HTTPS to a plain HTTP server (the same database) says so.
    let plain = serve(&exe, &data, &[]);
    refused(
        "plain-http",
        &format!("https://127.0.0.1:{}", plain.port),
        Some(&pki.ca),
        &["TLS failed", "is the server serving HTTPS on this port?"],
    );
    drop(plain);
    let listed = admin(&exe, &data, &["hosts"]);
    assert_eq!(
        listed,
        serde_json::json!([]),
        "a refused attempt registered"
    );

    let (out, state) = register("right-ca", &url, Some(&pki.ca));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(
        said.contains(&format!("registered with {url} as host")),
        "{said}"
    );
    let reg: serde_json::Value =
        serde_json::from_slice(&std::fs::read(state.join("server.json")).unwrap()).unwrap();
    assert_eq!(reg["url"], url.as_str());
    assert_eq!(reg["feed"], "stable");
    let listed = admin(&exe, &data, &["hosts"]);
    assert_eq!(listed[0]["id"], reg["host_id"], "{listed}");
    assert_eq!(listed[0]["build_id"], "ab".repeat(20));
    assert_eq!(listed[0]["tags"], serde_json::json!(["tls"]));
}

/// A guest of `release` with the agent, trusting `public`, configured to
/// take its levels from a server.
fn release_guest(release: &str, agent_exe: &Path, public: &Path) -> lab::GuestConfig {
    let cache = kernel_tree::Cache::from_env().unwrap();
    let archive = kernel_tree::AptArchive::debian(&cache).unwrap();
    let ws = kernel_tree::Workspace::fetch(&cache, &archive, &release.parse().unwrap()).unwrap();
    let mut g = lab::GuestConfig::for_workspace(&ws)
        .with_binary(agent_exe, "/usr/sbin/noreboot")
        .with_file(public, "/etc/noreboot/trusted.d/release.pub")
        .with_network();
    g.contents.push((
        "/etc/noreboot/config.toml".into(),
        config(
            "15s",
            "1m",
            "\n[server]\nattempts = 2\nbackoff = \"200ms\"\n",
        )
        .into_bytes(),
        0o644,
    ));
    g
}

#[test]
#[ignore = "slow tier: releases the example catalog for two 6.1 builds and boots a guest of each; scripts/test runs it"]
fn a_release_run_reaches_each_build_through_the_server() {
    // Two hosts on two builds register; `noreboot-build release
    // --kernels-from-server` builds, verifies and publishes each build's
    // own level of the example catalog; each host's `noreboot update`
    // takes its own level, and the compliance report shows both protected.
    let dir = tempfile::tempdir().unwrap();
    let exe = server_exe();
    let build = workspace_bin("noreboot-build", "factory");
    let agent_exe = option_env!("CARGO_BIN_EXE_noreboot")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace_bin("noreboot", "agent"));
    let keys = dir.path().join("keys");
    common::run(Command::new(&build).args(["keygen", "-o"]).arg(&keys));
    let data = dir.path().join("server-data");
    std::fs::create_dir_all(data.join("trusted.d")).unwrap();
    std::fs::copy(
        keys.join("noreboot.pub"),
        data.join("trusted.d/release.pub"),
    )
    .unwrap();
    let reg = admin(&exe, &data, &["key", "create", "--feed", "test"]);
    let token = admin(
        &exe,
        &data,
        &["token", "create", "release", "--role", "admin"],
    );
    let token_file = dir.path().join("token");
    std::fs::write(&token_file, token["token"].as_str().unwrap()).unwrap();
    let server = serve(&exe, &data, &[]);

    let builds = ["6.1.0-47-cloud-amd64", "6.1.0-56-cloud-amd64"];
    let mut guests: Vec<lab::Guest> = Vec::new();
    for (i, b) in builds.iter().enumerate() {
        let mut g =
            lab::Guest::boot(&release_guest(b, &agent_exe, &keys.join("noreboot.pub"))).unwrap();
        g.exec_ok(&format!("hostname host{i}")).unwrap();
        let (code, out) = agent(
            &mut g,
            &format!(
                "register --server http://10.0.2.2:{} --key {}",
                server.port,
                reg["secret"].as_str().unwrap()
            ),
        );
        assert_eq!(code, 0, "{out}");
        guests.push(g);
    }

    // Both builds are reported and no level covers them yet: what the
    // next release run must cover.
    let uncovered = admin(&exe, &data, &["kernels", "--uncovered"]);
    let mut names: Vec<&str> = uncovered
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k["release"].as_str().unwrap())
        .collect();
    names.sort();
    assert_eq!(names, builds, "{uncovered}");

    let catalog = dir.path().join("catalog");
    common::run(
        Command::new("cp")
            .arg("-r")
            .arg(concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/../../examples/catalog"
            ))
            .arg(&catalog),
    );
    let url = format!("http://127.0.0.1:{}", server.port);
    let out = common::run(
        Command::new(&build)
            .args(["release", "--json", "--catalog"])
            .arg(&catalog)
            .args([
                "--kernels-from-server",
                &url,
                "--publish",
                &url,
                "--feed",
                "test",
            ])
            .arg("--token-file")
            .arg(&token_file)
            .arg("--key")
            .arg(keys.join("noreboot.key"))
            .stdin(Stdio::null()),
    );
    let outcomes: Vec<serde_json::Value> = serde_json::from_str(&out).unwrap();
    let released: Vec<&str> = outcomes
        .iter()
        .filter(|o| o["result"] == "released" && o["published"] == url.as_str())
        .map(|o| o["release"].as_str().unwrap())
        .collect();
    assert_eq!(released, builds, "{out}");

    let uncovered = admin(&exe, &data, &["kernels", "--uncovered"]);
    assert_eq!(
        uncovered,
        serde_json::json!([]),
        "every reported build has a level now"
    );
    let before = admin(&exe, &data, &["report", "summary"]);
    assert_eq!(before["hosts_exposed"].as_u64(), Some(2), "{before}");
    for g in guests.iter_mut() {
        let (code, out) = agent(g, "update");
        assert_eq!(code, 0, "{out}");
        let (code, s) = agent(g, "status --json");
        assert_eq!(code, 0, "{s}");
        assert!(s.contains("noreboot_l1"), "{s}");
    }
    // Each runs its own build's level: the 6.1.192-2 host's level
    // completes 6.1.192-3, the 6.1.170-3 host's claims nothing.
    let (_, uname) = agent(&mut guests[1], "uname -v");
    assert!(uname.contains("6.1.192-3"), "{uname}");
    let (_, uname) = agent(&mut guests[0], "uname -v");
    assert!(!uname.contains("6.1.192-3"), "{uname}");
    let after = admin(&exe, &data, &["report", "summary"]);
    assert_eq!(after["hosts_protected"].as_u64(), Some(2), "{after}");
    assert_eq!(after["hosts_exposed"].as_u64(), Some(0), "{after}");
}
