//! Webhooks (`webhooks`): events POSTed to a real local receiver — a
//! Python `http.server` on 127.0.0.1 that checks each signature with
//! Python's own `hmac` — including the receiver down at first (retried,
//! then delivered) and down for good (given up); each end audited. And a
//! delivery a dead process held, taken over by another on the database.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use server::api::Settings;
use server::model::Role;
use server::webhooks::DeliverySettings;

use crate::common::*;

/// The receiver: prints one JSON line per POST (its signature checked
/// against the secret), answers 204, or 401 to a bad signature.
const RECEIVER: &str = r#"
import hashlib, hmac, json, sys
from http.server import BaseHTTPRequestHandler, HTTPServer
port, secret = int(sys.argv[1]), sys.argv[2].encode()
class Hook(BaseHTTPRequestHandler):
    def do_POST(self):
        body = self.rfile.read(int(self.headers["Content-Length"]))
        sig = dict(p.split("=", 1) for p in self.headers.get("X-Noreboot-Signature", "").split(",") if "=" in p)
        want = hmac.new(secret, sig.get("t", "").encode() + b"." + body, hashlib.sha256).hexdigest()
        ok = hmac.compare_digest(want, sig.get("v1", ""))
        print(json.dumps({"verified": ok, "delivery": self.headers.get("X-Noreboot-Delivery"),
            "event": self.headers.get("X-Noreboot-Event"), "type": self.headers.get("Content-Type"),
            "body": json.loads(body)}), flush=True)
        self.send_response(204 if ok else 401)
        self.end_headers()
    def log_message(self, *args):
        pass
server = HTTPServer(("127.0.0.1", port), Hook)
print(json.dumps({"ready": True}), flush=True)
server.serve_forever()
"#;

/// A running receiver and the requests it got.
struct Receiver {
    child: Child,
    got: mpsc::Receiver<Value>,
}

impl Receiver {
    async fn start(port: u16, secret: &str) -> Self {
        let mut child = Command::new("python3")
            .args(["-c", RECEIVER, &port.to_string(), secret])
            .stdout(Stdio::piped())
            .spawn()
            .expect("python3 runs the test's webhook receiver");
        let out = BufReader::new(child.stdout.take().unwrap());
        let (tx, got) = mpsc::channel();
        std::thread::spawn(move || {
            for line in out.lines().map_while(Result::ok) {
                if tx.send(serde_json::from_str(&line).unwrap()).is_err() {
                    break;
                }
            }
        });
        let r = Self { child, got };
        assert_eq!(r.next().await["ready"], true);
        r
    }

    /// The next request (10 s at most), waited for without blocking the
    /// runtime the server runs on.
    async fn next(&self) -> Value {
        let until = Instant::now() + Duration::from_secs(10);
        loop {
            match self.got.try_recv() {
                Ok(v) => return v,
                Err(mpsc::TryRecvError::Empty) if Instant::now() < until => {
                    tokio::time::sleep(Duration::from_millis(20)).await
                }
                Err(e) => panic!("the receiver got no request within 10 s: {e}"),
            }
        }
    }

    /// The next request, which must be a verified `event`.
    async fn event(&self, event: &str) -> Value {
        let r = self.next().await;
        assert_eq!(r["event"], event, "{r:#}");
        assert_eq!(r["verified"], true, "bad signature: {r:#}");
        assert_eq!(r["type"], "application/json");
        assert_eq!(r["delivery"], r["body"]["delivery"], "{r:#}");
        assert_eq!(r["body"]["event"], event);
        r["body"].clone()
    }

    fn stop(self) {}
}

impl Drop for Receiver {
    fn drop(&mut self) {
        // Our own child, ended by its handle (a failed test too).
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A port nothing listens on (until the receiver does).
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

async fn report(s: &TestServer, token: &str, result: &str, level: u32) {
    let body = json!({"action": "update", "level": level, "result": result,
        "reason": "health check failed", "stalled_tasks": [], "duration_ms": 5, "active_level": 0});
    let started = Instant::now();
    let (st, _) = s
        .call(
            Method::POST,
            "/api/v1/report",
            Some(token),
            Some(Body::Json(body)),
        )
        .await;
    assert_eq!(st, StatusCode::NO_CONTENT);
    // Delivery is not the report's business, receiver down or not.
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );
}

/// The audit entries with `action`, newest first.
async fn audited(s: &TestServer, action: &str) -> Vec<Value> {
    let log = s.ctx.audit_log(1000).await.unwrap();
    log.into_iter()
        .filter(|a| a.action == action)
        .map(|a| serde_json::from_str(&a.detail).unwrap())
        .collect()
}

/// Waits (10 s at most) for an audit entry with `action` on `delivery`.
async fn wait_audited(s: &TestServer, action: &str, delivery: &str) -> Value {
    let until = Instant::now() + Duration::from_secs(10);
    loop {
        if let Some(d) = audited(s, action)
            .await
            .into_iter()
            .find(|d| d["delivery"] == delivery)
        {
            return d;
        }
        assert!(Instant::now() < until, "no {action} audited for {delivery}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn events_are_signed_retried_until_the_receiver_is_up_given_up_when_it_stays_down_and_audited(
) {
    let s = TestServer::start_with(Settings {
        register_per_minute: 1000,
        webhooks: DeliverySettings {
            attempts: 4,
            backoff: Duration::from_millis(300),
            max_backoff: Duration::from_secs(1),
            timeout: Duration::from_secs(2),
            poll: Duration::from_millis(100),
        },
        ..Settings::default()
    })
    .await;
    let admin = s.token("ops", Role::Admin).await;
    let viewer = s.token("viewer", Role::ReadOnly).await;
    let port = free_port();
    let url = format!("http://127.0.0.1:{port}/hooks/noreboot");
    let events = [
        "apply-failed",
        "rolled-back",
        "crash-guard-skip",
        "policy-breach",
    ];
    let (st, hook) = s
        .call(
            Method::POST,
            "/api/v1/admin/webhooks",
            Some(&admin),
            Some(Body::Json(json!({"url": url, "events": events}))),
        )
        .await;
    assert_eq!(st, StatusCode::CREATED, "{hook}");
    let secret = hook["secret"].as_str().unwrap().to_string();
    assert!(secret.starts_with("nrw_") && secret.len() > 60, "{hook}");
    // Never shown again in full; the read-only token may list, not create.
    let (st, list) = s
        .call(Method::GET, "/api/v1/admin/webhooks", Some(&viewer), None)
        .await;
    assert_eq!(st, StatusCode::OK);
    assert_eq!(list["webhooks"][0]["url"], url.as_str());
    assert!(!list.to_string().contains(&secret[4..]), "{list}");
    let (st, _) = s
        .call(
            Method::POST,
            "/api/v1/admin/webhooks",
            Some(&viewer),
            Some(Body::Json(json!({"url": url, "events": ["apply-failed"]}))),
        )
        .await;
    assert_eq!(st, StatusCode::FORBIDDEN);
    for bad in [
        json!({"url": url, "events": ["reboot"]}),
        json!({"url": url, "events": []}),
        json!({"url": "ftp://127.0.0.1/x", "events": ["apply-failed"]}),
    ] {
        let (st, body) = s
            .call(
                Method::POST,
                "/api/v1/admin/webhooks",
                Some(&admin),
                Some(Body::Json(bad)),
            )
            .await;
        assert_eq!(st, StatusCode::BAD_REQUEST, "{body}");
    }

    s.publish_fixing(KERNEL_A, 1, &["CVE-2024-0001"], &["stable"])
        .await;
    let key = s.reg_key("stable").await;
    let host = s.register(&key, "web-1", KERNEL_A).await;
    s.checkin(&host.token, KERNEL_A, 0).await;

    // The receiver is down: the report is answered at once, and its event
    // is retried until the receiver is up.
    report(&s, &host.token, "failed", 1).await;
    tokio::time::sleep(Duration::from_millis(700)).await;
    let receiver = Receiver::start(port, &secret).await;
    let failed = receiver.event("apply-failed").await;
    assert_eq!(failed["host"]["hostname"], "web-1");
    assert_eq!(failed["host"]["id"], host.host_id.as_str());
    assert_eq!(failed["report"]["result"], "failed");
    assert_eq!(failed["report"]["level"], 1);
    let delivery = failed["delivery"].as_str().unwrap();
    let audit = wait_audited(&s, "webhook-delivered", delivery).await;
    assert!(audit["attempts"].as_i64().unwrap() >= 2, "{audit}");
    assert_eq!(audit["status"], 204);

    report(&s, &host.token, "rolled-back", 1).await;
    let rolled = receiver.event("rolled-back").await;
    assert_eq!(rolled["report"]["result"], "rolled-back");
    assert_eq!(
        wait_audited(
            &s,
            "webhook-delivered",
            rolled["delivery"].as_str().unwrap()
        )
        .await["attempts"],
        1
    );
    // An applied report is no event.
    report(&s, &host.token, "applied", 1).await;

    // The crash guard skipped level 1 at boot: the check-in says so once
    // (the same list again is no new event).
    let mut ci = serde_json::to_value(checkin_request(KERNEL_A, 0)).unwrap();
    ci["skipped"] = json!([1]);
    for _ in 0..2 {
        let (st, body) = s
            .call(
                Method::POST,
                "/api/v1/checkin",
                Some(&host.token),
                Some(Body::Json(ci.clone())),
            )
            .await;
        assert_eq!(st, StatusCode::OK, "{body}");
    }
    let skip = receiver.event("crash-guard-skip").await;
    assert_eq!(skip["levels"], json!([1]));
    assert_eq!(skip["host"]["hostname"], "web-1");

    // 31 days on, still at level 0: the host crosses the 30-day policy.
    s.clock.advance(31 * 86_400);
    let breach = receiver.event("policy-breach").await;
    assert_eq!(breach["host"]["id"], host.host_id.as_str());
    assert_eq!(breach["cves"], json!(["CVE-2024-0001"]));
    assert_eq!(breach["max_days_exposed"], 31);
    assert_eq!(breach["policy_days"], 30);

    // Down for good: every attempt fails, the delivery is given up and
    // the failure audited with its last error.
    receiver.stop();
    report(&s, &host.token, "failed", 1).await;
    let until = Instant::now() + Duration::from_secs(10);
    let failure = loop {
        if let Some(d) = audited(&s, "webhook-failed").await.into_iter().next() {
            break d;
        }
        assert!(Instant::now() < until, "the delivery was never given up");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(failure["event"], "apply-failed");
    assert_eq!(failure["attempts"], 4);
    assert!(
        failure["error"]
            .as_str()
            .unwrap()
            .to_lowercase()
            .contains("connect"),
        "{failure}"
    );
    // Audited as the server's, against the webhook.
    let entry = s
        .ctx
        .audit_log(1000)
        .await
        .unwrap()
        .into_iter()
        .find(|a| a.action == "webhook-failed")
        .unwrap();
    assert_eq!(
        (entry.actor.as_str(), entry.target.as_str()),
        ("noreboot-server", hook["id"].as_str().unwrap())
    );

    // Deleting the webhook is audited; nothing more is queued for it.
    let (st, _) = s
        .call(
            Method::POST,
            &format!(
                "/api/v1/admin/webhooks/{}/delete",
                hook["id"].as_str().unwrap()
            ),
            Some(&admin),
            None,
        )
        .await;
    assert_eq!(st, StatusCode::OK);
    assert_eq!(audited(&s, "webhook-delete").await.len(), 1);
    let (_, list) = s
        .call(Method::GET, "/api/v1/admin/webhooks", Some(&viewer), None)
        .await;
    assert_eq!(list["webhooks"], json!([]));
}

#[tokio::test]
async fn a_new_process_takes_over_the_deliveries_of_one_that_died() {
    // The first process: its receiver is down and it waits an hour after
    // a failed attempt — as good as dead, holding its lease.
    let slow = DeliverySettings {
        attempts: 10,
        backoff: Duration::from_secs(3600),
        max_backoff: Duration::from_secs(3600),
        timeout: Duration::from_secs(2),
        poll: Duration::from_secs(3600),
    };
    let s = TestServer::start_with(Settings {
        webhooks: slow,
        ..Settings::default()
    })
    .await;
    let port = free_port();
    let hook = s
        .ctx
        .create_webhook(
            ACTOR,
            &format!("http://127.0.0.1:{port}/"),
            &["apply-failed".into()],
        )
        .await
        .unwrap();
    s.publish_fixing(KERNEL_A, 1, &["CVE-2024-0001"], &["stable"])
        .await;
    let key = s.reg_key("stable").await;
    let host = s.register(&key, "web-1", KERNEL_A).await;
    report(&s, &host.token, "failed", 1).await;
    // Its first attempt is made and recorded.
    let until = Instant::now() + Duration::from_secs(10);
    while attempts_made(&s).await < 1 {
        assert!(Instant::now() < until, "no first attempt");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // A second process on the same database, once the first one's lease
    // (its attempt and its wait) is over, delivers it: attempt 2.
    let receiver = Receiver::start(port, &hook.secret).await;
    s.clock.advance(3600 + 60);
    let opts = server::Options {
        db_url: s.storage.db_url.clone(),
        data_dir: s.storage.data.clone(),
        trusted_keys: Some(s.trusted_dir()),
    };
    let other = server::Context::open(&opts, s.clock.clone()).await.unwrap();
    server::webhooks::start(
        other,
        DeliverySettings {
            backoff: Duration::from_millis(100),
            ..slow
        },
        server::report::Policy::default(),
    );
    let event = receiver.event("apply-failed").await;
    let audit = wait_audited(&s, "webhook-delivered", event["delivery"].as_str().unwrap()).await;
    assert_eq!(audit["attempts"], 2, "{audit}");
}

/// Attempts recorded on the outbox's deliveries.
async fn attempts_made(s: &TestServer) -> i64 {
    use sqlx::Row;
    sqlx::query("SELECT COALESCE(MAX(attempts), 0) FROM webhook_deliveries")
        .fetch_one(s.ctx.db.pool())
        .await
        .unwrap()
        .try_get(0)
        .unwrap()
}
