//! The security matrix: every endpoint with no token, a wrong token, the
//! wrong kind of token and another host's token; read-only tokens change
//! nothing; revoked keys and tokens stop working; registrations are rate
//! limited; oversized and malformed requests get a 4xx with a JSON
//! message — never a 5xx.

use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use server::api::Settings;
use server::blobs::sha256_hex;
use server::model::Role;

use crate::common::*;

/// A request: what it tests, method, path, token, body.
type Case<'a> = (&'static str, Method, String, Option<&'a str>, Option<Body>);

/// Every error answer is a 4xx with `{"error": "..."}` (non-empty).
fn assert_client_error(what: &str, status: StatusCode, body: &Value) {
    assert!(status.is_client_error(), "{what}: {status} {body}");
    let msg = body["error"].as_str().unwrap_or("");
    assert!(!msg.is_empty(), "{what}: no JSON error message: {body}");
}

struct Fixture {
    s: TestServer,
    admin: String,
    read_only: String,
    host_a: protocol::RegisterResponse,
    host_b: protocol::RegisterResponse,
    sha_a: String,
    key_id: String,
}

async fn fixture() -> Fixture {
    let s = TestServer::start().await;
    let a = s.bundle(KERNEL_A, 1, &[]);
    s.ctx
        .publish(ACTOR, a.clone(), &["stable".into()])
        .await
        .unwrap();
    s.publish(KERNEL_B, 1, &["stable"]).await;
    let admin = s.token("ops", Role::Admin).await;
    let read_only = s.token("auditor", Role::ReadOnly).await;
    let key = s.ctx.create_key(ACTOR, "stable", "").await.unwrap();
    let host_a = s.register(&key.secret, "a", KERNEL_A).await;
    let host_b = s.register(&key.secret, "b", KERNEL_B).await;
    Fixture {
        s,
        admin,
        read_only,
        host_a,
        host_b,
        sha_a: sha256_hex(&a),
        key_id: key.id,
    }
}

fn agent_endpoints(f: &Fixture) -> Vec<(Method, String, Option<Value>)> {
    vec![
        (
            Method::POST,
            "/api/v1/checkin".into(),
            Some(json!(checkin_request(KERNEL_A, 0))),
        ),
        (Method::GET, format!("/api/v1/bundles/{}", f.sha_a), None),
        (
            Method::POST,
            "/api/v1/report".into(),
            Some(
                json!({"action": "update", "level": 1, "result": "applied", "duration_ms": 1, "active_level": 1}),
            ),
        ),
    ]
}

fn admin_reads() -> Vec<String> {
    [
        "/api/v1/admin/hosts",
        "/api/v1/admin/hosts/retired",
        "/api/v1/admin/reports",
        "/api/v1/admin/kernels",
        "/api/v1/admin/kernels/reported",
        "/api/v1/admin/kernels/reported?uncovered=true",
        "/api/v1/admin/levels",
        "/api/v1/admin/feeds",
        "/api/v1/admin/audit",
        "/api/v1/admin/keys",
        "/api/v1/admin/reports/compliance",
        "/api/v1/admin/reports/hosts",
        "/api/v1/admin/reports/cves",
        "/api/v1/admin/reports/summary?format=csv",
    ]
    .iter()
    .map(|p| p.to_string())
    .chain([format!("/api/v1/admin/feeds/stable/kernels/{KERNEL_A}")])
    .collect()
}

fn admin_writes(f: &Fixture) -> Vec<(String, Body)> {
    let j = |v: Value| Body::Json(v);
    vec![
        ("/api/v1/admin/feeds".into(), j(json!({"name": "new-feed"}))),
        ("/api/v1/admin/keys".into(), j(json!({"feed": "stable"}))),
        (
            format!("/api/v1/admin/keys/{}/revoke", f.key_id),
            j(json!({})),
        ),
        (
            "/api/v1/admin/publish?feed=stable".into(),
            Body::Raw(f.s.bundle(KERNEL_A, 2, &[]), "application/octet-stream"),
        ),
        (
            "/api/v1/admin/promote".into(),
            j(json!({"kernel": KERNEL_A, "level": 1, "feed": "test"})),
        ),
        (
            "/api/v1/admin/pin".into(),
            j(json!({"feed": "stable", "kernel": KERNEL_A, "level": 1})),
        ),
        (
            "/api/v1/admin/hold".into(),
            j(json!({"feed": "stable", "kernel": KERNEL_A})),
        ),
        (
            "/api/v1/admin/unpin".into(),
            j(json!({"feed": "stable", "kernel": KERNEL_A})),
        ),
        (
            "/api/v1/admin/rollback".into(),
            j(json!({"feed": "stable", "kernel": KERNEL_A})),
        ),
        (
            format!("/api/v1/admin/hosts/{}/move", f.host_b.host_id),
            j(json!({"feed": "test"})),
        ),
        (
            format!("/api/v1/admin/hosts/{}/tags", f.host_b.host_id),
            j(json!({"tags": ["db"]})),
        ),
        (
            format!("/api/v1/admin/hosts/{}/retire", f.host_b.host_id),
            j(json!({})),
        ),
    ]
}

#[tokio::test]
async fn every_endpoint_refuses_missing_wrong_and_misplaced_tokens() {
    let f = fixture().await;
    let s = &f.s;
    let wrong_host = format!("nrh_{}", "0".repeat(64));
    let oversized = "x".repeat(300);
    let bad: Vec<(&str, Option<&str>)> = vec![
        ("no token", None),
        ("wrong token", Some(wrong_host.as_str())),
        ("empty token", Some("")),
        ("oversized token", Some(oversized.as_str())),
    ];
    for (method, path, body) in agent_endpoints(&f) {
        for (what, token) in bad
            .iter()
            .chain([("admin token", Some(f.admin.as_str()))].iter())
        {
            let (status, resp) = s
                .call(method.clone(), &path, *token, body.clone().map(Body::Json))
                .await;
            assert_eq!(
                status,
                StatusCode::UNAUTHORIZED,
                "{method} {path} with {what}: {resp}"
            );
            assert_client_error(&path, status, &resp);
        }
    }
    for path in admin_reads() {
        for (what, token) in bad
            .iter()
            .chain([("host token", Some(f.host_a.token.as_str()))].iter())
        {
            let (status, resp) = s.call(Method::GET, &path, *token, None).await;
            assert_eq!(
                status,
                StatusCode::UNAUTHORIZED,
                "GET {path} with {what}: {resp}"
            );
        }
        let (status, resp) = s.call(Method::GET, &path, Some(&f.read_only), None).await;
        assert_eq!(status, StatusCode::OK, "GET {path} read-only: {resp}");
    }
    for (path, body) in admin_writes(&f) {
        for (what, token) in bad
            .iter()
            .chain([("host token", Some(f.host_a.token.as_str()))].iter())
        {
            let body = match &body {
                Body::Json(v) => Body::Json(v.clone()),
                Body::Raw(b, ct) => Body::Raw(b.clone(), ct),
            };
            let (status, resp) = s.call(Method::POST, &path, *token, Some(body)).await;
            assert_eq!(
                status,
                StatusCode::UNAUTHORIZED,
                "POST {path} with {what}: {resp}"
            );
        }
    }
    // A malformed Authorization header.
    let resp = s
        .http
        .post(format!("{}/api/v1/checkin", s.url))
        .header("authorization", format!("Basic {}", f.host_a.token))
        .json(&checkin_request(KERNEL_A, 0))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(resp.headers()["www-authenticate"], "Bearer");
}

#[tokio::test]
async fn read_only_tokens_change_nothing() {
    let f = fixture().await;
    let before = f.s.ctx.audit_log(1000).await.unwrap().len();
    for (path, body) in admin_writes(&f) {
        let (status, resp) =
            f.s.call(Method::POST, &path, Some(&f.read_only), Some(body))
                .await;
        assert_eq!(status, StatusCode::FORBIDDEN, "POST {path}: {resp}");
        assert!(
            resp["error"].as_str().unwrap().contains("read-only"),
            "{resp}"
        );
    }
    assert_eq!(f.s.ctx.audit_log(1000).await.unwrap().len(), before);
    assert_eq!(f.s.ctx.levels(None).await.unwrap().len(), 2);
    assert_eq!(f.s.ctx.feeds().await.unwrap().len(), 2);
    assert!(f.s.ctx.keys().await.unwrap()[0].revoked_at.is_none());

    // The same writes with the admin token go through (none is a 5xx).
    for (path, body) in admin_writes(&f) {
        let (status, resp) =
            f.s.call(Method::POST, &path, Some(&f.admin), Some(body))
                .await;
        assert!(status.is_success(), "POST {path}: {status} {resp}");
    }
}

#[tokio::test]
async fn a_host_token_sees_only_its_own_host() {
    let f = fixture().await;
    let s = &f.s;
    // Host B runs kernel B: kernel A's bundle is not its to download.
    let (status, resp) = s
        .call(
            Method::GET,
            &format!("/api/v1/bundles/{}", f.sha_a),
            Some(&f.host_b.token),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{resp}");
    let (status, _) = s
        .call(
            Method::GET,
            &format!("/api/v1/bundles/{}", f.sha_a),
            Some(&f.host_a.token),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    // B's check-in and report change B only.
    s.checkin(&f.host_b.token, KERNEL_B, 1).await;
    let (status, _) = s
        .call(
            Method::POST,
            "/api/v1/report",
            Some(&f.host_b.token),
            Some(Body::Json(json!({"action": "update", "level": 1, "result": "applied", "duration_ms": 1, "active_level": 1}))),
        )
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let hosts = s.ctx.hosts().await.unwrap();
    let a = hosts.iter().find(|h| h.id == f.host_a.host_id).unwrap();
    let b = hosts.iter().find(|h| h.id == f.host_b.host_id).unwrap();
    assert_eq!((a.level, a.last_checkin), (0, None));
    assert_eq!(b.level, 1);
    assert!(b.last_checkin.is_some());
    let reports = s.ctx.reports(Some(&f.host_a.host_id), 10).await.unwrap();
    assert!(reports.is_empty());
    // A host cannot register more hosts or read the fleet with its token.
    let (status, _) = s
        .call(
            Method::GET,
            "/api/v1/admin/hosts",
            Some(&f.host_a.token),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn revoked_and_unknown_registration_keys_and_revoked_tokens() {
    let f = fixture().await;
    let s = &f.s;
    let (status, resp) = s
        .call(
            Method::POST,
            &format!("/api/v1/admin/keys/{}/revoke", f.key_id),
            Some(&f.admin),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{resp}");
    let key = s
        .ctx
        .keys()
        .await
        .unwrap()
        .into_iter()
        .find(|k| k.id == f.key_id)
        .unwrap();
    assert!(key.revoked_at.is_some());
    // The secret is gone from this process; a revoked key's secret is tried
    // through a fresh key revoked the same way.
    let fresh = s.ctx.create_key(ACTOR, "stable", "").await.unwrap();
    s.ctx.revoke_key(ACTOR, &fresh.id).await.unwrap();
    let body = |k: &str| Some(Body::Json(json!(register_request(k, "x", KERNEL_A))));
    let (status, resp) = s
        .call(Method::POST, "/api/v1/register", None, body(&fresh.secret))
        .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{resp}");
    assert!(
        resp["error"].as_str().unwrap().contains("revoked"),
        "{resp}"
    );
    let (status, resp) = s
        .call(Method::POST, "/api/v1/register", None, body("nrk_nonsense"))
        .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{resp}");
    assert!(
        resp["error"].as_str().unwrap().contains("not recognised"),
        "{resp}"
    );
    // Hosts registered before keep working.
    s.checkin(&f.host_a.token, KERNEL_A, 0).await;

    s.ctx.revoke_token(ACTOR, "auditor").await.unwrap();
    let (status, resp) = s
        .call(Method::GET, "/api/v1/admin/hosts", Some(&f.read_only), None)
        .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert!(
        resp["error"].as_str().unwrap().contains("revoked"),
        "{resp}"
    );
}

#[tokio::test]
async fn registrations_are_rate_limited_per_address_and_minute() {
    let s = TestServer::start_with(Settings {
        register_per_minute: 3,
        ..Settings::default()
    })
    .await;
    let key = s.reg_key("stable").await;
    let with = |k: &str| Some(Body::Json(json!(register_request(k, "h", KERNEL_A))));
    // A client retrying a wrong key: refused after 3 failures...
    for _ in 0..3 {
        let (status, _) = s
            .call(Method::POST, "/api/v1/register", None, with("nrk_guess"))
            .await;
        assert_eq!(status, StatusCode::UNAUTHORIZED);
    }
    let resp = s
        .http
        .post(format!("{}/api/v1/register", s.url))
        .json(&register_request("nrk_guess", "h", KERNEL_A))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::TOO_MANY_REQUESTS);
    assert!(resp.headers().contains_key("retry-after"));
    let body_json: Value = resp.json().await.unwrap();
    assert!(
        body_json["error"]
            .as_str()
            .unwrap()
            .contains("too many failed registrations"),
        "{body_json}"
    );
    // ...while the other hosts behind the same address register: more
    // of them than the failure limit.
    for _ in 0..10 {
        let (status, _) = s
            .call(Method::POST, "/api/v1/register", None, with(&key))
            .await;
        assert_eq!(status, StatusCode::CREATED);
    }
    // Guessing many keys: the address may fail 4 x 3 times a minute in all.
    let mut codes = Vec::new();
    for i in 0..12 {
        let (status, _) = s
            .call(
                Method::POST,
                "/api/v1/register",
                None,
                with(&format!("nrk_other{i}")),
            )
            .await;
        codes.push(status.as_u16());
    }
    assert_eq!(codes.iter().filter(|&&c| c == 401).count(), 9, "{codes:?}");
    assert_eq!(codes.iter().filter(|&&c| c == 429).count(), 3, "{codes:?}");
    s.clock.advance(60);
    let (status, _) = s
        .call(Method::POST, "/api/v1/register", None, with("nrk_guess"))
        .await;
    assert_eq!(
        status,
        StatusCode::UNAUTHORIZED,
        "a new minute, a new allowance"
    );
    let (status, _) = s
        .call(Method::POST, "/api/v1/register", None, with(&key))
        .await;
    assert_eq!(status, StatusCode::CREATED);
}

#[tokio::test]
async fn oversized_and_malformed_requests_get_4xx_with_a_message() {
    let f = fixture().await;
    let s = &f.s;
    let host = f.host_a.token.as_str();
    let raw = |b: &[u8], ct: &'static str| Some(Body::Raw(b.to_vec(), ct));
    let json_ct = "application/json";
    let big_json = format!("{{\"hostname\": \"{}\"}}", "x".repeat(70 << 10));
    let long_name = json!(register_request(
        &"k".repeat(100),
        &"h".repeat(10_000),
        KERNEL_A
    ));
    let mut bad_build = checkin_request("XYZ", 0);
    bad_build.kernel.build_id = "../../etc/passwd".into();
    let mut control = checkin_request(KERNEL_A, 0);
    control.agent_version = "0.1\u{0}".into();
    let too_many_skipped = json!({
        "kernel": {"release": "r", "version": "v", "build_id": KERNEL_A},
        "level": 0, "effective_version": "", "agent_version": "1",
        "skipped": (0..1000).collect::<Vec<u32>>()
    });

    let cases: Vec<Case> = vec![
        (
            "register oversized",
            Method::POST,
            "/api/v1/register".into(),
            None,
            raw(big_json.as_bytes(), json_ct),
        ),
        (
            "checkin oversized",
            Method::POST,
            "/api/v1/checkin".into(),
            Some(host),
            raw(big_json.as_bytes(), json_ct),
        ),
        (
            "report oversized",
            Method::POST,
            "/api/v1/report".into(),
            Some(host),
            raw(big_json.as_bytes(), json_ct),
        ),
        (
            "admin promote oversized",
            Method::POST,
            "/api/v1/admin/promote".into(),
            Some(&f.admin),
            raw(big_json.as_bytes(), json_ct),
        ),
        (
            "register not JSON",
            Method::POST,
            "/api/v1/register".into(),
            None,
            raw(b"{nope", json_ct),
        ),
        (
            "register empty",
            Method::POST,
            "/api/v1/register".into(),
            None,
            raw(b"", json_ct),
        ),
        (
            "register wrong shape",
            Method::POST,
            "/api/v1/register".into(),
            None,
            Some(Body::Json(json!([1, 2]))),
        ),
        (
            "register no content type",
            Method::POST,
            "/api/v1/register".into(),
            None,
            raw(b"{}", "text/plain"),
        ),
        (
            "register over-long fields",
            Method::POST,
            "/api/v1/register".into(),
            None,
            Some(Body::Json(long_name)),
        ),
        (
            "checkin unknown field",
            Method::POST,
            "/api/v1/checkin".into(),
            Some(host),
            Some(Body::Json(json!({"level": 1, "extra": true}))),
        ),
        (
            "checkin negative level",
            Method::POST,
            "/api/v1/checkin".into(),
            Some(host),
            Some(Body::Json(
                json!({"kernel": {"release": "r", "version": "v", "build_id": KERNEL_A}, "level": -1, "effective_version": "", "agent_version": "1"}),
            )),
        ),
        (
            "checkin bad build-id",
            Method::POST,
            "/api/v1/checkin".into(),
            Some(host),
            Some(Body::Json(json!(bad_build))),
        ),
        (
            "checkin control characters",
            Method::POST,
            "/api/v1/checkin".into(),
            Some(host),
            Some(Body::Json(json!(control))),
        ),
        (
            "checkin too many skipped",
            Method::POST,
            "/api/v1/checkin".into(),
            Some(host),
            Some(Body::Json(too_many_skipped)),
        ),
        (
            "report bad result",
            Method::POST,
            "/api/v1/report".into(),
            Some(host),
            Some(Body::Json(
                json!({"action": "update", "level": 1, "result": "Bad Result!", "duration_ms": 1, "active_level": 1}),
            )),
        ),
        (
            "report huge duration",
            Method::POST,
            "/api/v1/report".into(),
            Some(host),
            Some(Body::Json(
                json!({"action": "update", "level": 1, "result": "applied", "duration_ms": u64::MAX, "active_level": 1}),
            )),
        ),
        (
            "bundle not a sha256",
            Method::GET,
            "/api/v1/bundles/..%2F..%2Fetc%2Fpasswd".into(),
            Some(host),
            None,
        ),
        (
            "bundle unknown sha256",
            Method::GET,
            format!("/api/v1/bundles/{}", "0".repeat(64)),
            Some(host),
            None,
        ),
        (
            "unknown route",
            Method::GET,
            "/api/v1/nothing-here".into(),
            None,
            None,
        ),
        (
            "wrong method",
            Method::GET,
            "/api/v1/checkin".into(),
            Some(host),
            None,
        ),
        (
            "promote level 0",
            Method::POST,
            "/api/v1/admin/promote".into(),
            Some(&f.admin),
            Some(Body::Json(
                json!({"kernel": KERNEL_A, "level": 0, "feed": "stable"}),
            )),
        ),
        (
            "promote bad kernel",
            Method::POST,
            "/api/v1/admin/promote".into(),
            Some(&f.admin),
            Some(Body::Json(
                json!({"kernel": "zz", "level": 1, "feed": "stable"}),
            )),
        ),
        (
            "feed bad name",
            Method::POST,
            "/api/v1/admin/feeds".into(),
            Some(&f.admin),
            Some(Body::Json(json!({"name": "Bad Name"}))),
        ),
        (
            "feed negative delay",
            Method::POST,
            "/api/v1/admin/feeds".into(),
            Some(&f.admin),
            Some(Body::Json(json!({"name": "d", "delay_hours": -1}))),
        ),
        (
            "feed exists",
            Method::POST,
            "/api/v1/admin/feeds".into(),
            Some(&f.admin),
            Some(Body::Json(json!({"name": "stable"}))),
        ),
        (
            "key unknown feed",
            Method::POST,
            "/api/v1/admin/keys".into(),
            Some(&f.admin),
            Some(Body::Json(json!({"feed": "nosuch"}))),
        ),
        (
            "revoke unknown key",
            Method::POST,
            "/api/v1/admin/keys/nosuch/revoke".into(),
            Some(&f.admin),
            None,
        ),
        (
            "levels bad filter",
            Method::GET,
            "/api/v1/admin/levels?kernel=NOPE".into(),
            Some(&f.admin),
            None,
        ),
        (
            "reported kernels unknown parameter",
            Method::GET,
            "/api/v1/admin/kernels/reported?kernel=x".into(),
            Some(&f.admin),
            None,
        ),
        (
            "audit bad limit",
            Method::GET,
            "/api/v1/admin/audit?limit=many".into(),
            Some(&f.admin),
            None,
        ),
        (
            "publish not a bundle",
            Method::POST,
            "/api/v1/admin/publish".into(),
            Some(&f.admin),
            raw(b"\0\0\0", "application/octet-stream"),
        ),
    ];
    for (what, method, path, token, body) in cases {
        let (status, resp) = s.call(method, &path, token, body).await;
        assert_client_error(what, status, &resp);
    }

    // The publish limit: one byte over a bundle's maximum.
    let huge = vec![0u8; bundle::MAX_BUNDLE as usize + 1];
    let (status, resp) = s
        .call(
            Method::POST,
            "/api/v1/admin/publish",
            Some(&f.admin),
            raw(&huge, "application/octet-stream"),
        )
        .await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE, "{resp}");
    assert_client_error("publish oversized", status, &resp);

    // The server is still fine.
    s.checkin(host, KERNEL_A, 0).await;
}

/// Issue 16, point 11: an answer of the server's hard body ceiling is
/// JSON like every other error. (A request line or headers too long for
/// the HTTP parser are answered by hyper itself, 414 or 431 with an empty
/// body, before any of the server's code runs.)
#[tokio::test]
async fn limit_answers_are_json_too() {
    let s = TestServer::start().await;
    // Over the outer ceiling (any route), announced by Content-Length.
    let huge = vec![b'x'; bundle::MAX_BUNDLE as usize + 2 * 1024 * 1024];
    let r = s
        .http
        .post(format!("{}/api/v1/checkin", s.url))
        .header("content-type", "application/json")
        .body(huge)
        .send()
        .await
        .unwrap();
    let status = r.status();
    let ct = r
        .headers()
        .get("content-type")
        .map(|v| v.to_str().unwrap().to_string());
    let body = r.text().await.unwrap();
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE, "{body}");
    assert_eq!(ct.as_deref(), Some("application/json"), "{body}");
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert!(v["error"].is_string(), "{body}");
}
