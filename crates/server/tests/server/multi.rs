//! Several `serve` processes on one PostgreSQL database, as a large fleet
//! runs them behind a load balancer (issue 16, point 13): two real
//! `noreboot-server serve` processes, each with a data directory of its
//! own, and whatever one is asked, the other answers the same — bundles,
//! dashboard sessions, rate limits, admin changes. Always on PostgreSQL
//! (the test process's own server, `pg`): SQLite deployments run one
//! process.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use bundle::SecretKey;
use protocol::CheckinResponse;
use reqwest::{Client, Method, StatusCode};
use serde_json::{json, Value};
use server::blobs::{sha256_hex, BlobStore, DiskStore};
use server::clock::SystemClock;
use server::model::Role;
use server::{Context, Options};
use tempfile::TempDir;

use crate::cli::{serve_with, Serving};
use crate::common::*;
use crate::dashboard_sessions::{logout, page_status, sign_in};

/// One database, the keys every process trusts, and the library on the
/// same database for what the tests set up without HTTP (tokens, keys).
struct Site {
    db_url: String,
    key: SecretKey,
    trusted: PathBuf,
    ctx: Context,
    http: Client,
    dir: TempDir,
}

impl Site {
    async fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let key = SecretKey::generate().unwrap();
        let trusted = dir.path().join("trusted.d");
        std::fs::create_dir_all(&trusted).unwrap();
        key.public_key().write(&trusted.join("test.pub")).unwrap();
        let db_url = crate::pg::database();
        let opts = Options {
            db_url: Some(db_url.clone()),
            data_dir: dir.path().join("library"),
            trusted_keys: Some(trusted.clone()),
        };
        let ctx = Context::open(&opts, Arc::new(SystemClock)).await.unwrap();
        Self {
            db_url,
            key,
            trusted,
            ctx,
            http: Client::new(),
            dir,
        }
    }

    /// The data directory called `name`.
    fn data(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// Starts `serve` with the data directory `name` on the site's
    /// database, trusting `trusted` (the site's keys when `None`).
    fn serve(&self, name: &str, trusted: Option<&Path>, extra: &[&str]) -> (Serving, String) {
        let storage = Storage {
            data: self.data(name),
            db_url: Some(self.db_url.clone()),
        };
        let trusted = trusted.unwrap_or(&self.trusted).to_str().unwrap();
        let mut args = vec!["--trusted-keys", trusted];
        args.extend_from_slice(extra);
        serve_with(&storage, &args)
    }

    /// Two processes, `a` and `b`.
    fn pair(&self, extra: &[&str]) -> ((Serving, String), (Serving, String)) {
        (self.serve("a", None, extra), self.serve("b", None, extra))
    }

    async fn admin_token(&self) -> String {
        self.ctx
            .create_token(ACTOR, "ops", Role::Admin)
            .await
            .unwrap()
            .token
    }

    async fn call(
        &self,
        url: &str,
        method: Method,
        path: &str,
        token: Option<&str>,
        body: Option<Body>,
    ) -> (StatusCode, Value) {
        let mut req = self.http.request(method, format!("{url}{path}"));
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        req = match body {
            Some(Body::Json(v)) => req.json(&v),
            Some(Body::Raw(b, ct)) => req.header("content-type", ct).body(b),
            None => req,
        };
        let resp = req.send().await.unwrap();
        let status = resp.status();
        let bytes = resp.bytes().await.unwrap();
        (
            status,
            serde_json::from_slice(&bytes).unwrap_or(Value::Null),
        )
    }

    async fn publish(
        &self,
        url: &str,
        admin: &str,
        bytes: Vec<u8>,
        feed: &str,
    ) -> (StatusCode, Value) {
        self.call(
            url,
            Method::POST,
            &format!("/api/v1/admin/publish?feed={feed}"),
            Some(admin),
            Some(Body::Raw(bytes, "application/octet-stream")),
        )
        .await
    }

    /// Registers a host through `url`; answers the status and body.
    async fn register(&self, url: &str, key: &str, hostname: &str) -> (StatusCode, Value) {
        let req = serde_json::to_value(register_request(key, hostname, KERNEL_A)).unwrap();
        self.call(
            url,
            Method::POST,
            "/api/v1/register",
            None,
            Some(Body::Json(req)),
        )
        .await
    }

    /// A host's token, registered through `url` with `key`.
    async fn host(&self, url: &str, key: &str) -> String {
        let (status, body) = self.register(url, key, "web-1").await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
        body["token"].as_str().unwrap().to_string()
    }

    async fn checkin(&self, url: &str, token: &str, level: u32) -> CheckinResponse {
        let req = serde_json::to_value(checkin_request(KERNEL_A, level)).unwrap();
        let (status, body) = self
            .call(
                url,
                Method::POST,
                "/api/v1/checkin",
                Some(token),
                Some(Body::Json(req)),
            )
            .await;
        assert_eq!(status, StatusCode::OK, "{body}");
        serde_json::from_value(body).unwrap()
    }

    /// The bundle a host downloads through `url`.
    async fn download(&self, url: &str, token: &str, path: &str) -> Vec<u8> {
        let resp = self
            .http
            .get(format!("{url}{path}"))
            .bearer_auth(token)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), StatusCode::OK);
        resp.bytes().await.unwrap().to_vec()
    }
}

/// A bundle of `level` for KERNEL_A with a module of a few MiB: it spans
/// several of the database store's chunks.
fn big_bundle(key: &SecretKey, level: u32) -> Vec<u8> {
    let module: Vec<u8> = b"\x7fELF"
        .iter()
        .copied()
        .chain((0..(2 << 20) + 4321).map(|i: u32| (i.wrapping_mul(2_654_435_761) >> 24) as u8))
        .collect();
    bundle::Bundle::create(manifest(KERNEL_A, level, &[]), &module, key, "test")
        .unwrap()
        .into_bytes()
}

/// Every `*.nrb` file under `dir`.
fn bundle_files(dir: &Path) -> Vec<PathBuf> {
    let mut found = Vec::new();
    for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let p = e.path();
        if p.is_dir() {
            found.extend(bundle_files(&p));
        } else if p.extension().is_some_and(|x| x == "nrb") {
            found.push(p);
        }
    }
    found
}

#[tokio::test]
async fn a_bundle_published_through_one_process_is_served_by_the_other() {
    let site = Site::new().await;
    let ((_a, a), (_b, b)) = site.pair(&[]);
    let admin = site.admin_token().await;
    let bytes = big_bundle(&site.key, 1);
    let (status, body) = site.publish(&a, &admin, bytes.clone(), "stable").await;
    assert_eq!(status, StatusCode::CREATED, "{body}");

    let key = site
        .ctx
        .create_key(ACTOR, "stable", "")
        .await
        .unwrap()
        .secret;
    let host = site.host(&b, &key).await;
    let target = site.checkin(&b, &host, 0).await.target.expect("a target");
    assert_eq!(target.level, 1);
    assert_eq!(target.sha256, sha256_hex(&bytes));
    assert_eq!(target.size, bytes.len() as u64);
    let got = site.download(&b, &host, &target.bundle_url).await;
    assert_eq!(sha256_hex(&got), target.sha256);
    assert!(got == bytes, "B served other bytes than A was given");
    // And through A, of course.
    assert!(site.download(&a, &host, &target.bundle_url).await == bytes);
    // In the database, not in either process's data directory.
    for name in ["a", "b"] {
        let files = bundle_files(&site.data(name));
        assert!(files.is_empty(), "{files:?}");
    }

    // A damaged row: the download is cut off short of its size, never
    // complete bytes under the wrong hash.
    sqlx::query("UPDATE bundle_chunks SET data = $1 WHERE sha256 = $2 AND seq = 0")
        .bind(&vec![0u8; 1 << 20][..])
        .bind(&target.sha256)
        .execute(site.ctx.db.pool())
        .await
        .unwrap();
    let resp = site
        .http
        .get(format!("{b}{}", target.bundle_url))
        .bearer_auth(&host)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.content_length(), Some(bytes.len() as u64));
    match resp.bytes().await {
        Err(_) => {}
        Ok(got) => assert!(got.len() < bytes.len(), "a damaged bundle was served whole"),
    }
}

#[tokio::test]
async fn a_session_opened_on_one_process_is_closed_through_the_other() {
    let site = Site::new().await;
    let ((_a, a), (_b, b)) = site.pair(&[]);
    let token = site
        .ctx
        .create_token(ACTOR, "viewer", Role::ReadOnly)
        .await
        .unwrap()
        .token;
    let cookie = sign_in(&a, &token).await;
    assert_eq!(page_status(&b, &cookie).await, StatusCode::OK);
    let r = logout(&b, &cookie, &[("origin", &b)]).await;
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    assert_eq!(page_status(&a, &cookie).await, StatusCode::SEE_OTHER);
    assert_eq!(page_status(&b, &cookie).await, StatusCode::SEE_OTHER);
}

/// Waits, when the current minute has less than 20 s left, for the next:
/// the limits count per minute of the processes' clock (the system's),
/// and a test must not straddle two windows.
async fn a_fresh_minute() {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let left = 60 - now % 60;
    if left < 20 {
        tokio::time::sleep(Duration::from_secs(left + 1)).await;
    }
}

#[tokio::test]
async fn rate_limits_are_one_allowance_across_processes() {
    let site = Site::new().await;
    // Per address: 1 failure per key presented, 4 with any key, 20
    // registrations; 2 failed dashboard sign-ins.
    let ((_a, a), (_b, b)) = site.pair(&[
        "--register-per-minute",
        "1",
        "--login-failures-per-minute",
        "2",
    ]);
    let key = site
        .ctx
        .create_key(ACTOR, "stable", "")
        .await
        .unwrap()
        .secret;
    a_fresh_minute().await;

    // A wrong key, once through A: through B it is the second failure.
    let wrong = format!("nrk_{}", "0".repeat(64));
    assert_eq!(
        site.register(&a, &wrong, "x").await.0,
        StatusCode::UNAUTHORIZED
    );
    let (status, body) = site.register(&b, &wrong, "x").await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS, "{body}");

    // 20 registrations, alternating: the 21st is refused by both.
    for i in 0..20 {
        let url = if i % 2 == 0 { &a } else { &b };
        let (status, body) = site.register(url, &key, &format!("web-{i}")).await;
        assert_eq!(status, StatusCode::CREATED, "registration {i}: {body}");
    }
    for url in [&a, &b] {
        let (status, body) = site.register(url, &key, "one-too-many").await;
        assert_eq!(status, StatusCode::TOO_MANY_REQUESTS, "{body}");
    }

    // Failed dashboard sign-ins: one on each, then both refuse.
    let sign_in_status = |url: String| {
        let http = Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .unwrap();
        async move {
            http.post(format!("{url}/ui/login"))
                .header("origin", &url)
                .form(&[("token", "nra_not-a-token")])
                .send()
                .await
                .unwrap()
                .status()
        }
    };
    assert_eq!(sign_in_status(a.clone()).await, StatusCode::UNAUTHORIZED);
    assert_eq!(sign_in_status(b.clone()).await, StatusCode::UNAUTHORIZED);
    assert_eq!(
        sign_in_status(a.clone()).await,
        StatusCode::TOO_MANY_REQUESTS
    );
    assert_eq!(
        sign_in_status(b.clone()).await,
        StatusCode::TOO_MANY_REQUESTS
    );
}

#[tokio::test]
async fn an_admin_change_through_one_process_is_served_by_the_other() {
    let site = Site::new().await;
    let ((_a, a), (_b, b)) = site.pair(&[]);
    let admin = site.admin_token().await;
    for (level, feed) in [(1, "stable"), (2, "test")] {
        let bytes = site_bundle(&site, level);
        let (status, body) = site.publish(&a, &admin, bytes, feed).await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
    }
    let key = site
        .ctx
        .create_key(ACTOR, "stable", "")
        .await
        .unwrap()
        .secret;
    let host = site.host(&b, &key).await;
    let level = |r: CheckinResponse| r.target.map(|t| t.level);
    assert_eq!(level(site.checkin(&b, &host, 0).await), Some(1));

    // Promoted through A: B's very next answer is the new level.
    let promote = json!({"kernel": KERNEL_A, "level": 2, "feed": "stable"});
    let (status, body) = site
        .call(
            &a,
            Method::POST,
            "/api/v1/admin/promote",
            Some(&admin),
            Some(Body::Json(promote)),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let target = site.checkin(&b, &host, 1).await.target.expect("a target");
    assert_eq!(target.level, 2);
    let got = site.download(&b, &host, &target.bundle_url).await;
    assert_eq!(sha256_hex(&got), target.sha256);

    // Rolled back through B: A answers level 1 again.
    let rollback = json!({"kernel": KERNEL_A, "feed": "stable"});
    let (status, body) = site
        .call(
            &b,
            Method::POST,
            "/api/v1/admin/rollback",
            Some(&admin),
            Some(Body::Json(rollback)),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(level(site.checkin(&a, &host, 2).await), Some(1));
}

fn site_bundle(site: &Site, level: u32) -> Vec<u8> {
    make_bundle(&site.key, KERNEL_A, level, &[])
}

#[tokio::test]
async fn a_process_with_other_trusted_keys_refuses_to_publish() {
    let site = Site::new().await;
    let (_a, a) = site.serve("a", None, &[]);
    // C trusts one more key: started last, its set is the recorded one.
    let other = site.data("trusted-c");
    std::fs::create_dir_all(&other).unwrap();
    site.key
        .public_key()
        .write(&other.join("test.pub"))
        .unwrap();
    let extra = SecretKey::generate().unwrap();
    extra.public_key().write(&other.join("extra.pub")).unwrap();
    let (_c, c) = site.serve("c", Some(&other), &[]);
    let admin = site.admin_token().await;

    let (status, body) = site
        .publish(&a, &admin, site_bundle(&site, 1), "stable")
        .await;
    assert_eq!(status, StatusCode::CONFLICT, "{body}");
    let msg = body["error"].as_str().unwrap();
    assert!(
        msg.contains("--trusted-keys") && msg.contains(&extra.key_id().to_string()),
        "{msg}"
    );
    let (status, body) = site
        .publish(&c, &admin, site_bundle(&site, 1), "stable")
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    // A restarted with the same keys as C publishes again.
    drop(_a);
    let (_a, a) = site.serve("a", Some(&other), &[]);
    let (status, body) = site
        .publish(&a, &admin, site_bundle(&site, 2), "stable")
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
}

#[tokio::test]
async fn bundles_of_a_disk_store_are_taken_into_the_database_at_start() {
    let site = Site::new().await;
    // A level whose file is only in `old`'s bundle directory, as a
    // single-process PostgreSQL deployment of an earlier version kept it.
    let bytes = big_bundle(&site.key, 1);
    let sha = sha256_hex(&bytes);
    site.ctx
        .publish(ACTOR, bytes.clone(), &["stable".to_string()])
        .await
        .unwrap();
    for table in ["bundle_chunks", "bundle_blobs"] {
        sqlx::query(&format!("DELETE FROM {table}"))
            .execute(site.ctx.db.pool())
            .await
            .unwrap();
    }
    DiskStore::open(&site.data("old").join("bundles"))
        .unwrap()
        .put(&sha, bytes.clone())
        .await
        .unwrap();

    // `old` starts first and copies it in; `new` has never seen the file.
    let (_old, _) = site.serve("old", None, &[]);
    let (_new, new) = site.serve("new", None, &[]);
    let key = site
        .ctx
        .create_key(ACTOR, "stable", "")
        .await
        .unwrap()
        .secret;
    let host = site.host(&new, &key).await;
    let target = site.checkin(&new, &host, 0).await.target.expect("a target");
    let got = site.download(&new, &host, &target.bundle_url).await;
    assert_eq!(sha256_hex(&got), sha);
    assert!(got == bytes);
    // The old directory may go now.
    std::fs::remove_dir_all(site.data("old").join("bundles")).unwrap();
    assert!(site.ctx.blobs.get(&sha).await.unwrap().unwrap() == bytes);
}

#[tokio::test]
async fn both_processes_serve_one_apt_repository_signed_with_one_key() {
    let site = Site::new().await;
    // Started together: both make a key at start, one is kept for both.
    let ((_a, a), (_b, b)) = site.pair(&[]);
    let get = |url: String| {
        let http = site.http.clone();
        async move {
            let r = http.get(&url).send().await.unwrap();
            assert_eq!(r.status(), StatusCode::OK, "{url}");
            r.bytes().await.unwrap().to_vec()
        }
    };
    let key_a = get(format!("{a}/apt/key.asc")).await;
    assert_eq!(key_a, get(format!("{b}/apt/key.asc")).await);

    let dir = tempfile::tempdir().unwrap();
    let deb = crate::apt::deb(dir.path(), "noreboot", "0.3.0", "amd64", "xz");
    let admin = site.admin_token().await;
    let (status, body) = site
        .call(
            &a,
            Method::POST,
            "/api/v1/admin/agent-packages",
            Some(&admin),
            Some(Body::Raw(
                deb.clone(),
                "application/vnd.debian.binary-package",
            )),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let packages =
        String::from_utf8(get(format!("{b}/apt/dists/stable/main/binary-amd64/Packages")).await)
            .unwrap();
    assert!(packages.contains("Version: 0.3.0\n"), "{packages}");
    assert!(
        packages.contains(&format!("SHA256: {}\n", sha256_hex(&deb))),
        "{packages}"
    );
    let release_a = get(format!("{a}/apt/dists/stable/Release")).await;
    assert_eq!(
        release_a,
        get(format!("{b}/apt/dists/stable/Release")).await
    );
    assert!(
        get(format!(
            "{b}/apt/pool/main/n/noreboot/noreboot_0.3.0_amd64.deb"
        ))
        .await
            == deb
    );
}
