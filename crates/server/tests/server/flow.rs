//! The agent's whole conversation: register, check in, download the
//! target bundle, report; and what the fleet view shows afterwards.

use reqwest::{Method, StatusCode};
use serde_json::json;
use server::blobs::sha256_hex;
use server::model::Role;

use crate::common::*;

#[tokio::test]
async fn register_checkin_download_report() {
    let s = TestServer::start().await;
    let bytes = s.bundle(KERNEL_A, 1, &["CVE-2024-1086"]);
    s.ctx
        .publish(ACTOR, bytes.clone(), &["stable".into()])
        .await
        .unwrap();
    let key = s.reg_key("stable").await;

    let host = s.register(&key, "web-1", KERNEL_A).await;
    assert!(host.token.starts_with("nrh_"));
    assert_eq!(host.feed, "stable");

    let c = s.checkin(&host.token, KERNEL_A, 0).await;
    assert!(c.supported);
    assert_eq!(c.next_checkin_seconds, Some(4 * 3600));
    let t = c.target.unwrap();
    assert_eq!(t.level, 1);
    assert_eq!(t.name, "noreboot_test_1");
    assert_eq!(t.sha256, sha256_hex(&bytes));
    assert_eq!(t.size, bytes.len() as u64);
    assert_eq!(t.bundle_url, format!("/api/v1/bundles/{}", t.sha256));

    let resp = s
        .http
        .get(format!("{}{}", s.url, t.bundle_url))
        .bearer_auth(&host.token)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(resp.headers()["content-type"], "application/octet-stream");
    let got = resp.bytes().await.unwrap();
    assert_eq!(&got[..], &bytes[..]);
    // What the agent will do with it: verify with the vendor's key.
    let trusted = bundle::TrustedKeys::from_keys([s.key.public_key()]).unwrap();
    assert_eq!(bundle::open(&got, &trusted).unwrap().manifest.level, 1);

    let (status, body) = s
        .call(
            Method::POST,
            "/api/v1/report",
            Some(&host.token),
            Some(Body::Json(json!({
                "action": "update", "level": 1, "result": "applied",
                "duration_ms": 120, "active_level": 1
            }))),
        )
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT, "{body}");

    let admin = s.token("viewer", Role::ReadOnly).await;
    let (_, hosts) = s
        .call(Method::GET, "/api/v1/admin/hosts", Some(&admin), None)
        .await;
    let h = &hosts["hosts"][0];
    assert_eq!(h["id"], host.host_id.as_str());
    assert_eq!(h["hostname"], "web-1");
    assert_eq!(h["level"], 1);
    assert_eq!(h["tags"], json!(["web"]));
    assert_eq!(h["last_checkin"], "2025-06-15T15:06:40Z");
    assert_eq!(h["build_id"], KERNEL_A);
    let (_, reports) = s
        .call(
            Method::GET,
            &format!("/api/v1/admin/reports?host={}", host.host_id),
            Some(&admin),
            None,
        )
        .await;
    assert_eq!(reports["reports"][0]["result"], "applied");
    assert_eq!(reports["reports"][0]["duration_ms"], 120);

    // A newer level reaches the host at its next check-in.
    s.publish(KERNEL_A, 2, &["stable"]).await;
    assert_eq!(
        s.checkin(&host.token, KERNEL_A, 1)
            .await
            .target
            .unwrap()
            .level,
        2
    );
    s.stop().await;
}

#[tokio::test]
async fn unsupported_kernel_and_unreleased_levels() {
    let s = TestServer::start().await;
    s.publish(KERNEL_A, 1, &["test"]).await;
    let key = s.reg_key("stable").await;
    let host = s.register(&key, "db-1", KERNEL_B).await;
    let c = s.checkin(&host.token, KERNEL_B, 0).await;
    assert!(!c.supported);
    assert!(c.target.is_none());
    // Known kernel, but nothing released to this host's feed yet.
    let c = s.checkin(&host.token, KERNEL_A, 0).await;
    assert!(c.supported);
    assert!(c.target.is_none());
}

#[tokio::test]
async fn a_host_that_changed_kernels_sees_only_its_new_kernels_bundles() {
    let s = TestServer::start().await;
    let a = s.bundle(KERNEL_A, 1, &[]);
    s.ctx
        .publish(ACTOR, a.clone(), &["stable".into()])
        .await
        .unwrap();
    s.publish(KERNEL_B, 1, &["stable"]).await;
    let key = s.reg_key("stable").await;
    let host = s.register(&key, "web-2", KERNEL_A).await;
    let path = format!("/api/v1/bundles/{}", sha256_hex(&a));
    let (status, _) = s.call(Method::GET, &path, Some(&host.token), None).await;
    assert_eq!(status, StatusCode::OK);
    // Rebooted into kernel B: the check-in records it, and A's bundle is closed.
    let c = s.checkin(&host.token, KERNEL_B, 0).await;
    assert_ne!(c.target.unwrap().sha256, sha256_hex(&a));
    let (status, body) = s.call(Method::GET, &path, Some(&host.token), None).await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{body}");
    assert!(body["error"]
        .as_str()
        .unwrap()
        .contains("this host's kernel"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_checkins_and_admin_writes_all_succeed() {
    let s = TestServer::start().await;
    s.publish(KERNEL_A, 1, &["stable"]).await;
    let key = s.reg_key("stable").await;
    let mut tokens = Vec::new();
    for i in 0..20 {
        tokens.push(s.register(&key, &format!("h{i}"), KERNEL_A).await.token);
    }
    let mut tasks = tokio::task::JoinSet::new();
    for (i, token) in tokens.into_iter().enumerate() {
        let (http, url) = (s.http.clone(), s.url.clone());
        tasks.spawn(async move {
            for level in 0..5u32 {
                let resp = http
                    .post(format!("{url}/api/v1/checkin"))
                    .bearer_auth(&token)
                    .json(&checkin_request(KERNEL_A, level))
                    .send()
                    .await
                    .unwrap();
                assert_eq!(resp.status(), StatusCode::OK, "host {i}");
            }
        });
    }
    // Admin writes in the same moments, each its own transaction.
    for level in 2..=6 {
        s.publish(KERNEL_A, level, &["stable"]).await;
        s.ctx.create_key(ACTOR, "test", "").await.unwrap();
    }
    while let Some(r) = tasks.join_next().await {
        r.unwrap();
    }
    let hosts = s.ctx.hosts().await.unwrap();
    assert!(hosts
        .iter()
        .all(|h| h.level == 4 && h.last_checkin.is_some()));
    assert_eq!(s.ctx.audit_log(1000).await.unwrap().len(), 1 + 1 + 10);
}
