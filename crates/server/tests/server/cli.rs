//! The `noreboot-server` binary: `serve` works with nothing but a data
//! directory (database created in WAL mode, migrated, default feeds) or a
//! PostgreSQL URL, and `admin` drives the same database — also while the
//! server is running.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Output, Stdio};

use reqwest::StatusCode;

use crate::common::*;

const BIN: &str = env!("CARGO_BIN_EXE_noreboot-server");

pub(crate) fn admin(storage: &Storage, args: &[&str]) -> Output {
    Command::new(BIN)
        .arg("admin")
        .args(storage.args())
        .args(["--as", "cli-test"])
        .args(args)
        .env("NOREBOOT_LOG", "warn")
        .output()
        .unwrap()
}

/// The secret a `create` command printed on its last line.
pub(crate) fn last_line(s: &str) -> String {
    s.lines().last().unwrap().trim().to_string()
}

pub(crate) struct Serving(pub(crate) Child);

impl Drop for Serving {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn serve(storage: &Storage) -> (Serving, String) {
    serve_with(storage, &[])
}

pub(crate) fn serve_with(storage: &Storage, args: &[&str]) -> (Serving, String) {
    let mut child = Command::new(BIN)
        .args(["serve", "--listen", "127.0.0.1:0"])
        .args(storage.args())
        .args(args)
        .env("NOREBOOT_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let mut line = String::new();
    BufReader::new(stdout).read_line(&mut line).unwrap();
    let url = line
        .trim()
        .strip_prefix("listening on ")
        .unwrap_or_else(|| panic!("unexpected first line {line:?}"))
        .to_string();
    (Serving(child), url)
}

#[tokio::test]
async fn serve_just_works_and_the_admin_cli_drives_it() {
    let dir = tempfile::tempdir().unwrap();
    let storage = Storage::new(&dir.path().join("data"));
    let (server, url) = serve(&storage);
    let file = storage.data.join("noreboot.db");
    if storage.db_url.is_none() {
        // SQLite's header says WAL: read and write versions 2 (bytes 18, 19).
        let header = std::fs::read(&file).unwrap();
        assert_eq!(header[18..20], [2, 2], "the database is not in WAL mode");
    } else {
        assert!(!file.exists(), "--db is ignored: {} exists", file.display());
    }
    assert!(storage.data.join("trusted.d").is_dir());

    // Admin CLI against the running server's database.
    let token = last_line(&ok(admin(
        &storage,
        &["token", "create", "ops", "--role", "admin"],
    )));
    assert!(token.starts_with("nra_"));
    let reg = last_line(&ok(admin(
        &storage,
        &["key", "create", "--feed", "stable", "--note", "rack 4"],
    )));
    assert!(reg.starts_with("nrk_"));

    let key = bundle::SecretKey::generate().unwrap();
    let bundle_path = dir.path().join("fix-1.nrb");
    std::fs::write(
        &bundle_path,
        make_bundle(&key, KERNEL_A, 1, &["CVE-2024-1086"]),
    )
    .unwrap();
    // Not trusted yet: refused, exit status 4, the reason on stderr.
    let out = admin(
        &storage,
        &["publish", bundle_path.to_str().unwrap(), "--feed", "stable"],
    );
    assert_eq!(out.status.code(), Some(4));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("bundle refused: no trusted keys"), "{err}");

    key.public_key()
        .write(&storage.data.join("trusted.d/vendor.pub"))
        .unwrap();
    let out = ok(admin(
        &storage,
        &["publish", bundle_path.to_str().unwrap(), "--feed", "stable"],
    ));
    assert!(out.contains("published noreboot_test_1 level 1"), "{out}");
    assert!(out.contains("CVE-2024-1086"), "{out}");

    let http = reqwest::Client::new();
    let resp = http
        .post(format!("{url}/api/v1/register"))
        .json(&register_request(&reg, "web-1", KERNEL_A))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::CREATED);
    let host: protocol::RegisterResponse = resp.json().await.unwrap();
    let c: protocol::CheckinResponse = http
        .post(format!("{url}/api/v1/checkin"))
        .bearer_auth(&host.token)
        .json(&checkin_request(KERNEL_A, 0))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(c.target.unwrap().level, 1);

    let hosts = ok(admin(&storage, &["hosts"]));
    assert!(
        hosts.contains("web-1") && hosts.contains("stable"),
        "{hosts}"
    );
    let levels: serde_json::Value = serde_json::from_str(&ok(admin(
        &storage,
        &["--json", "levels", "--kernel", KERNEL_A],
    )))
    .unwrap();
    assert_eq!(levels[0]["feeds"], serde_json::json!(["stable"]));

    // Exit statuses: 3 not found, 4 refused, 2 usage.
    let out = admin(
        &storage,
        &[
            "promote", "--kernel", KERNEL_A, "--level", "7", "--to", "test",
        ],
    );
    assert_eq!(
        out.status.code(),
        Some(3),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = admin(&storage, &["feed", "create", "stable"]);
    assert_eq!(out.status.code(), Some(4));
    let out = admin(&storage, &["token", "create", "x", "--role", "root"]);
    assert_eq!(out.status.code(), Some(2));

    // The audit trail, over HTTP with the CLI-made token.
    let audit: serde_json::Value = http
        .get(format!("{url}/api/v1/admin/audit"))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let actions: Vec<&str> = audit["audit"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["action"].as_str().unwrap())
        .collect();
    assert_eq!(actions, ["publish", "key-create", "token-create"]);
    assert!(audit["audit"]
        .as_array()
        .unwrap()
        .iter()
        .all(|a| a["actor"] == "cli-test"));
    drop(server);

    // State survives a restart.
    let (_server, url) = serve(&storage);
    let s = reqwest::Client::new()
        .get(format!("{url}/api/v1/admin/hosts"))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(s.status(), StatusCode::OK);
    let hosts: serde_json::Value = s.json().await.unwrap();
    assert_eq!(hosts["hosts"][0]["hostname"], "web-1");
}

#[tokio::test]
async fn serves_https_with_the_given_certificate() {
    let dir = tempfile::tempdir().unwrap();
    let storage = Storage::new(&dir.path().join("data"));
    let rcgen::CertifiedKey { cert, key_pair } =
        rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).unwrap();
    let cert_path = dir.path().join("cert.pem");
    let key_path = dir.path().join("key.pem");
    std::fs::write(&cert_path, cert.pem()).unwrap();
    std::fs::write(&key_path, key_pair.serialize_pem()).unwrap();

    // A key that does not match the certificate: refused at start, exit 4.
    let other = rcgen::KeyPair::generate().unwrap();
    let wrong_key = dir.path().join("wrong.pem");
    std::fs::write(&wrong_key, other.serialize_pem()).unwrap();
    let out = Command::new(BIN)
        .args(["serve", "--listen", "127.0.0.1:0"])
        .args(storage.args())
        .arg("--tls-cert")
        .arg(&cert_path)
        .arg("--tls-key")
        .arg(&wrong_key)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(4));
    assert!(String::from_utf8_lossy(&out.stderr).contains("do not go together"));

    let (_server, url) = serve_with(
        &storage,
        &[
            "--tls-cert",
            cert_path.to_str().unwrap(),
            "--tls-key",
            key_path.to_str().unwrap(),
        ],
    );
    let addr: std::net::SocketAddr = url.strip_prefix("https://").unwrap().parse().unwrap();
    let reg = last_line(&ok(admin(&storage, &["key", "create", "--feed", "test"])));
    let http = reqwest::Client::builder()
        .use_rustls_tls()
        .add_root_certificate(reqwest::Certificate::from_pem(cert.pem().as_bytes()).unwrap())
        .resolve("localhost", addr)
        .build()
        .unwrap();
    let base = format!("https://localhost:{}", addr.port());
    let resp = http
        .post(format!("{base}/api/v1/register"))
        .json(&register_request(&reg, "tls-host", KERNEL_A))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::CREATED);
    let host: protocol::RegisterResponse = resp.json().await.unwrap();
    let c: protocol::CheckinResponse = http
        .post(format!("{base}/api/v1/checkin"))
        .bearer_auth(&host.token)
        .json(&checkin_request(KERNEL_A, 0))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(!c.supported);
    // Plain HTTP to the TLS port gets no answer.
    assert!(reqwest::get(format!("http://{addr}/healthz"))
        .await
        .is_err());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_checkins_survive_a_killed_server() {
    killed_mid_load(&[]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_checkins_survive_a_killed_server_flushing_each_batch() {
    killed_mid_load(&["--checkin-fsync"]).await;
}

/// Check-ins under load, the server killed (SIGKILL) and restarted with
/// `serve_args`: every acknowledged check-in is there.
async fn killed_mid_load(serve_args: &[&str]) {
    let dir = tempfile::tempdir().unwrap();
    let storage = Storage::new(&dir.path().join("data"));
    let reg = last_line(&ok(admin(&storage, &["key", "create", "--feed", "stable"])));
    let token = last_line(&ok(admin(
        &storage,
        &["token", "create", "ops", "--role", "read-only"],
    )));
    let (mut server, url) = serve_with(&storage, serve_args);
    let http = reqwest::Client::new();
    let mut hosts = Vec::new();
    for i in 0..8 {
        let resp = http
            .post(format!("{url}/api/v1/register"))
            .json(&register_request(&reg, &format!("h{i}"), KERNEL_A))
            .send()
            .await
            .unwrap();
        let host: protocol::RegisterResponse = resp.json().await.unwrap();
        hosts.push(host);
    }
    // Each host checks in with rising levels until the server is killed
    // (SIGKILL, mid-load); record the last level each had acknowledged.
    let mut tasks = tokio::task::JoinSet::new();
    for h in hosts {
        let (http, url) = (http.clone(), url.clone());
        tasks.spawn(async move {
            let mut acked = 0u32;
            for level in 1..10_000u32 {
                let sent = http
                    .post(format!("{url}/api/v1/checkin"))
                    .bearer_auth(&h.token)
                    .json(&checkin_request(KERNEL_A, level))
                    .send()
                    .await;
                match sent {
                    Ok(r) if r.status() == StatusCode::OK => acked = level,
                    _ => break,
                }
            }
            (h.host_id, acked)
        });
    }
    tokio::time::sleep(std::time::Duration::from_millis(700)).await;
    server.0.kill().unwrap();
    server.0.wait().unwrap();
    let mut acked = Vec::new();
    while let Some(r) = tasks.join_next().await {
        acked.push(r.unwrap());
    }
    assert!(
        acked.iter().all(|(_, l)| *l > 0),
        "no check-in was acknowledged: {acked:?}"
    );

    let (_server, url) = serve(&storage);
    let fleet: serde_json::Value = http
        .get(format!("{url}/api/v1/admin/hosts"))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    for (id, level) in acked {
        let h = fleet["hosts"]
            .as_array()
            .unwrap()
            .iter()
            .find(|h| h["id"] == id.as_str())
            .unwrap();
        // The acknowledged check-in is there; one more may have committed
        // before the kill cut its answer off.
        let stored = h["level"].as_u64().unwrap() as u32;
        assert!(
            stored == level || stored == level + 1,
            "host {id}: acknowledged {level}, stored {stored}"
        );
    }
}

#[test]
fn a_database_it_cannot_use_is_an_error_that_says_why() {
    let dir = tempfile::tempdir().unwrap();
    let run = |command: &[&str], db: &str| {
        let out = Command::new(BIN)
            .arg(command[0])
            .arg("--data")
            .arg(dir.path())
            .args(["--db", db])
            .args(&command[1..])
            .env("NOREBOOT_LOG", "warn")
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr).to_string();
        assert!(!err.contains("panicked"), "{err}");
        (out.status.code(), err)
    };
    // A scheme this build does not know: refused as a usage error.
    let (code, err) = run(&["admin", "feed", "list"], "mysql://root:s3cret@db/nr");
    assert_eq!(code, Some(4), "{err}");
    assert!(
        err.contains("unsupported") && !err.contains("s3cret"),
        "{err}"
    );
    // A PostgreSQL server that is not there (loopback port 1 refuses):
    // a server-side failure, with the URL but not its password.
    for command in [
        &["admin", "feed", "list"][..],
        &["serve", "--listen", "127.0.0.1:0"],
    ] {
        let (code, err) = run(command, "postgres://nr:s3cret@127.0.0.1:1/nr");
        assert_eq!(code, Some(1), "{command:?}: {err}");
        assert!(
            err.contains("cannot connect to the database postgres://nr:***@127.0.0.1:1/nr")
                && err.contains("refused")
                && !err.contains("s3cret"),
            "{command:?}: {err}"
        );
    }
}

#[test]
fn help_never_shows_secrets_from_the_environment() {
    for cmd in [&["serve", "--help"][..], &["admin", "--help"][..]] {
        let out = Command::new(BIN)
            .args(cmd)
            .env("NOREBOOT_SERVER_METRICS_TOKEN", "metrics-secret-1234")
            .env(
                "NOREBOOT_SERVER_DB",
                "postgres://nr:db-secret-5678@localhost/nr",
            )
            .output()
            .unwrap();
        let help = ok(out);
        assert!(help.contains("--db"), "{cmd:?}: {help}");
        assert!(
            !help.contains("metrics-secret-1234") && !help.contains("db-secret-5678"),
            "{cmd:?} shows a secret: {help}"
        );
    }
}
