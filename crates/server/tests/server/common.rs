//! The test server and helpers to make bundles, keys and requests.
//!
//! Every test runs on SQLite (a file in its temporary directory) or, with
//! `NOREBOOT_TEST_DB=postgres`, on a fresh database of the test process's
//! own PostgreSQL server (`pg`). [`Storage`] says which, to the library
//! and to the `noreboot-server` binary alike.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use bundle::manifest::{Cve, Function, Kernel, Manifest, Target, FORMAT};
use bundle::SecretKey;
use protocol::{CheckinRequest, CheckinResponse, RegisterRequest, RegisterResponse};
use reqwest::{Client, Method, StatusCode};
use serde_json::Value;
use server::api::{self, AppState, Settings};
use server::clock::ManualClock;
use server::model::Role;
use server::{Context, Options};
use tempfile::TempDir;
use tokio::sync::oneshot;

/// Where the tests' clock starts: 2025-06-15T15:06:40Z.
pub const T0: i64 = 1_750_000_000;
/// A kernel build-id.
pub const KERNEL_A: &str = "0123456789abcdef0123456789abcdef01234567";
/// Another.
pub const KERNEL_B: &str = "fedcba9876543210fedcba9876543210fedcba98";
/// The actor the tests' direct admin calls are audited as.
pub const ACTOR: &str = "test";

/// Where a test's server keeps its state: a data directory and, on
/// PostgreSQL, a database of its own.
#[derive(Debug, Clone)]
pub struct Storage {
    /// The data directory (bundles; the SQLite database).
    pub data: PathBuf,
    /// `None`: SQLite in `data`; else the PostgreSQL database URL.
    pub db_url: Option<String>,
}

impl Storage {
    /// `data`, with a new database on the backend `NOREBOOT_TEST_DB`
    /// names (`sqlite`, the default, or `postgres`).
    pub fn new(data: &Path) -> Self {
        let db_url = match std::env::var("NOREBOOT_TEST_DB").as_deref() {
            Err(_) | Ok("" | "sqlite") => None,
            Ok("postgres") => Some(crate::pg::database()),
            Ok(other) => panic!("NOREBOOT_TEST_DB={other:?}: use sqlite or postgres"),
        };
        Self {
            data: data.to_path_buf(),
            db_url,
        }
    }

    /// The `noreboot-server` options that name it: `--data`, `--db`.
    pub fn args(&self) -> Vec<OsString> {
        let mut a = vec!["--data".into(), self.data.clone().into()];
        if let Some(url) = &self.db_url {
            a.extend(["--db".into(), url.into()]);
        }
        a
    }
}

/// A server on 127.0.0.1 with its own data directory and clock.
pub struct TestServer {
    /// `http://127.0.0.1:PORT`.
    pub url: String,
    /// The same state the server uses, for admin actions without HTTP.
    pub ctx: Context,
    /// The server's clock.
    pub clock: Arc<ManualClock>,
    /// The key bundles are signed with (trusted by the server).
    pub key: SecretKey,
    /// An HTTP client.
    pub http: Client,
    /// Where it keeps its state.
    pub storage: Storage,
    /// What the server's handlers share.
    pub state: Arc<server::api::AppState>,
    shutdown: Option<oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<std::io::Result<()>>>,
    _dir: TempDir,
}

impl TestServer {
    /// A server with generous limits.
    pub async fn start() -> Self {
        Self::start_with(Settings {
            register_per_minute: 1000,
            ..Settings::default()
        })
        .await
    }

    /// A server with these settings.
    pub async fn start_with(settings: Settings) -> Self {
        Self::start_counting(settings, server::counts::FleetCounts::always_fresh()).await
    }

    /// A server with these settings that counts the fleet by this rule
    /// (`serve` sets it from `--count-budget-ms`).
    pub async fn start_counting(settings: Settings, counts: server::counts::FleetCounts) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let key = SecretKey::generate().unwrap();
        let trusted = dir.path().join("trusted.d");
        std::fs::create_dir_all(&trusted).unwrap();
        key.public_key().write(&trusted.join("test.pub")).unwrap();
        let clock = Arc::new(ManualClock::new(T0));
        let storage = Storage::new(&dir.path().join("data"));
        let opts = Options {
            db_url: storage.db_url.clone(),
            data_dir: storage.data.clone(),
            trusted_keys: Some(trusted),
        };
        let mut ctx = Context::open(&opts, clock.clone()).await.unwrap();
        ctx.counts = Arc::new(counts);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let (tx, rx) = oneshot::channel::<()>();
        let state = AppState::new(ctx.clone(), settings);
        let task = tokio::spawn(api::serve(listener, state.clone(), async {
            let _ = rx.await;
        }));
        Self {
            url,
            ctx,
            clock,
            key,
            http: Client::new(),
            storage,
            state,
            shutdown: Some(tx),
            task: Some(task),
            _dir: dir,
        }
    }

    /// The directory of keys the server trusts (`admin --trusted-keys`).
    pub fn trusted_dir(&self) -> PathBuf {
        self._dir.path().join("trusted.d")
    }

    /// Stops the server and waits for it.
    pub async fn stop(mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(t) = self.task.take() {
            t.await.unwrap().unwrap();
        }
    }

    /// A bundle signed with the trusted key.
    pub fn bundle(&self, build_id: &str, level: u32, cves: &[&str]) -> Vec<u8> {
        make_bundle(&self.key, build_id, level, cves)
    }

    /// Publishes a level straight through the library, released to `feeds`.
    pub async fn publish(&self, build_id: &str, level: u32, feeds: &[&str]) {
        self.publish_fixing(build_id, level, &[], feeds).await;
    }

    /// Publishes a level fixing `cves` straight through the library,
    /// released to `feeds`.
    pub async fn publish_fixing(&self, build_id: &str, level: u32, cves: &[&str], feeds: &[&str]) {
        let feeds: Vec<String> = feeds.iter().map(|f| f.to_string()).collect();
        self.ctx
            .publish(ACTOR, self.bundle(build_id, level, cves), &feeds)
            .await
            .unwrap();
    }

    /// A new admin API token.
    pub async fn token(&self, name: &str, role: Role) -> String {
        self.ctx
            .create_token(ACTOR, name, role)
            .await
            .unwrap()
            .token
    }

    /// A new registration key for `feed`.
    pub async fn reg_key(&self, feed: &str) -> String {
        self.ctx.create_key(ACTOR, feed, "").await.unwrap().secret
    }

    /// Sends a request; answers the status and the body as JSON (Null if
    /// it is not JSON).
    pub async fn call(
        &self,
        method: Method,
        path: &str,
        token: Option<&str>,
        body: Option<Body>,
    ) -> (StatusCode, Value) {
        let mut req = self.http.request(method, format!("{}{path}", self.url));
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

    /// Registers a host running `build_id` with `key`.
    pub async fn register(&self, key: &str, hostname: &str, build_id: &str) -> RegisterResponse {
        let (status, body) = self
            .call(
                Method::POST,
                "/api/v1/register",
                None,
                Some(Body::Json(
                    serde_json::to_value(register_request(key, hostname, build_id)).unwrap(),
                )),
            )
            .await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
        serde_json::from_value(body).unwrap()
    }

    /// Checks in as the host with `token`, running `build_id` at `level`.
    pub async fn checkin(&self, token: &str, build_id: &str, level: u32) -> CheckinResponse {
        let (status, body) = self
            .call(
                Method::POST,
                "/api/v1/checkin",
                Some(token),
                Some(Body::Json(
                    serde_json::to_value(checkin_request(build_id, level)).unwrap(),
                )),
            )
            .await;
        assert_eq!(status, StatusCode::OK, "{body}");
        serde_json::from_value(body).unwrap()
    }

    /// The level a host on `feed` running `build_id` is told to apply now.
    pub async fn target_on(&self, feed: &str, build_id: &str) -> Option<u32> {
        let key = self.reg_key(feed).await;
        let host = self.register(&key, "probe", build_id).await;
        self.checkin(&host.token, build_id, 0)
            .await
            .target
            .map(|t| t.level)
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
    }
}

/// A request body.
pub enum Body {
    /// JSON.
    Json(Value),
    /// Bytes with a content type.
    Raw(Vec<u8>, &'static str),
}

/// A manifest for `build_id` at `level`.
pub fn manifest(build_id: &str, level: u32, cves: &[&str]) -> Manifest {
    Manifest {
        format: FORMAT,
        name: format!("noreboot_test_{level}"),
        level,
        kernel: Kernel {
            release: "6.1.0-47-cloud-amd64".into(),
            build_id: build_id.into(),
            version: Some("6.1.170-3".into()),
        },
        effective_version: Some(format!("6.1.170-3+nr{level}")),
        cves: cves
            .iter()
            .map(|id| Cve {
                id: id.to_string(),
                description: format!("{id} test fix"),
            })
            .collect(),
        description: "test patch".into(),
        targets: vec![Target {
            object: "vmlinux".into(),
            functions: vec![Function {
                name: "cmdline_proc_show".into(),
                sympos: 0,
            }],
        }],
        module: Default::default(),
        toolchain: Default::default(),
        created: "2025-01-31T12:00:00Z".into(),
        builder: None,
        not_carried: Vec::new(),
    }
}

/// A bundle signed with `key`; the module is any bytes (the server never
/// loads it).
pub fn make_bundle(key: &SecretKey, build_id: &str, level: u32, cves: &[&str]) -> Vec<u8> {
    let module = format!("\x7fELF test module level {level} for {build_id}");
    bundle::Bundle::create(
        manifest(build_id, level, cves),
        module.as_bytes(),
        key,
        "test",
    )
    .unwrap()
    .into_bytes()
}

/// A registration request.
pub fn register_request(key: &str, hostname: &str, build_id: &str) -> RegisterRequest {
    RegisterRequest {
        registration_key: key.into(),
        hostname: hostname.into(),
        kernel: protocol::Kernel {
            release: "6.1.0-47-cloud-amd64".into(),
            version: "#1 SMP PREEMPT_DYNAMIC Debian 6.1.170-3".into(),
            build_id: build_id.into(),
        },
        agent_version: "0.1.0".into(),
        tags: vec!["web".into()],
    }
}

/// A check-in request.
pub fn checkin_request(build_id: &str, level: u32) -> CheckinRequest {
    CheckinRequest {
        kernel: protocol::Kernel {
            release: "6.1.0-47-cloud-amd64".into(),
            version: "#1 SMP PREEMPT_DYNAMIC Debian 6.1.170-3".into(),
            build_id: build_id.into(),
        },
        level,
        effective_version: "#1 SMP PREEMPT_DYNAMIC Debian 6.1.170-3".into(),
        skipped: vec![],
        agent_version: "0.1.0".into(),
    }
}

/// The stdout of a command that must have succeeded (status and both
/// streams shown otherwise).
pub fn ok(out: std::process::Output) -> String {
    assert!(
        out.status.success(),
        "exit {:?}\nstdout: {}\nstderr: {}",
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}
