//! Check-ins are written in batches by one writer (`server::checkin`):
//! every host in a batch still gets its own answer, an unknown token in
//! the middle of a batch fails alone, what each host sent is what is
//! recorded, and a change made by another process (the admin CLI) is
//! seen by the very next check-in, not after some cache expires.

use reqwest::{Method, StatusCode};
use serde_json::Value;
use server::clock::{Clock, SystemClock};

use crate::common::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_answers_each_host_for_its_own_feed_and_records_each() {
    let s = TestServer::start().await;
    s.publish(KERNEL_A, 1, &["test", "stable"]).await;
    s.publish(KERNEL_A, 2, &["test"]).await;
    s.publish(KERNEL_B, 1, &["test"]).await;
    let (test_key, stable_key) = (s.reg_key("test").await, s.reg_key("stable").await);
    let mut hosts = Vec::new();
    for i in 0..60 {
        let (key, feed) = if i % 2 == 0 {
            (&test_key, "test")
        } else {
            (&stable_key, "stable")
        };
        let build_id = if i % 3 == 0 { KERNEL_B } else { KERNEL_A };
        let h = s.register(key, &format!("h{i}"), build_id).await;
        hosts.push((h.token, feed, build_id, i as u32 % 7));
    }
    // All at once, twice over, so they share batches; unknown tokens among them.
    let mut tasks = tokio::task::JoinSet::new();
    for round in 0..2 {
        for (i, (token, feed, build_id, level)) in hosts.iter().cloned().enumerate() {
            let (http, url) = (s.http.clone(), s.url.clone());
            tasks.spawn(async move {
                let mut req = checkin_request(build_id, level);
                req.agent_version = format!("0.{round}.{i}");
                let resp = http
                    .post(format!("{url}/api/v1/checkin"))
                    .bearer_auth(&token)
                    .json(&req)
                    .send()
                    .await
                    .unwrap();
                assert_eq!(resp.status(), StatusCode::OK, "host {i}");
                let body: protocol::CheckinResponse = resp.json().await.unwrap();
                let want = match (feed, build_id) {
                    ("test", KERNEL_B) => Some(1),
                    ("stable", KERNEL_B) => None,
                    ("test", _) => Some(2),
                    _ => Some(1),
                };
                assert!(body.supported);
                assert_eq!(body.target.map(|t| t.level), want, "host {i} on {feed}");
            });
        }
        for _ in 0..5 {
            let (http, url) = (s.http.clone(), s.url.clone());
            tasks.spawn(async move {
                let resp = http
                    .post(format!("{url}/api/v1/checkin"))
                    .bearer_auth(
                        "nrh_0000000000000000000000000000000000000000000000000000000000000000",
                    )
                    .json(&checkin_request(KERNEL_A, 0))
                    .send()
                    .await
                    .unwrap();
                assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);
            });
        }
        while let Some(r) = tasks.join_next().await {
            r.unwrap();
        }
    }
    let listed = s.ctx.hosts().await.unwrap();
    assert_eq!(listed.len(), 60);
    for h in listed {
        let i: usize = h.hostname[1..].parse().unwrap();
        let (_, _, build_id, level) = &hosts[i];
        assert_eq!(h.build_id, *build_id, "{}", h.hostname);
        assert_eq!(h.level, i64::from(*level), "{}", h.hostname);
        assert_eq!(h.last_checkin, Some(T0), "{}", h.hostname);
        assert_eq!(h.agent_version, format!("0.1.{i}"), "{}", h.hostname);
    }
}

#[tokio::test]
async fn a_change_by_the_admin_cli_is_seen_by_the_next_checkin() {
    let s = TestServer::start().await;
    // The CLI releases at the real time: the server's clock is set past it
    // and then stands still, so a cached answer never expires by time.
    s.clock.set(SystemClock.now() + 60);
    s.publish(KERNEL_A, 1, &["test", "stable"]).await;
    s.publish(KERNEL_A, 2, &["test"]).await;
    let key = s.reg_key("stable").await;
    let host = s.register(&key, "web1", KERNEL_A).await;
    let level = |r: protocol::CheckinResponse| r.target.map(|t| t.level);
    // Answered (and cached) before the change...
    assert_eq!(level(s.checkin(&host.token, KERNEL_A, 1).await), Some(1));
    // ...changed by another process, writing the database directly...
    let out = crate::transfer::admin(
        &s,
        &[
            "promote", "--kernel", KERNEL_A, "--level", "2", "--to", "stable",
        ],
    );
    ok(out);
    // ...and the very next check-in sees it.
    assert_eq!(level(s.checkin(&host.token, KERNEL_A, 1).await), Some(2));
    // A pin, which does not depend on the clock.
    let out = crate::transfer::admin(
        &s,
        &[
            "pin", "--feed", "stable", "--kernel", KERNEL_A, "--level", "1",
        ],
    );
    ok(out);
    assert_eq!(level(s.checkin(&host.token, KERNEL_A, 2).await), Some(1));
}

#[tokio::test]
async fn a_bad_request_in_a_batch_fails_alone_with_its_reason() {
    let s = TestServer::start().await;
    s.publish(KERNEL_A, 1, &["stable"]).await;
    let key = s.reg_key("stable").await;
    let host = s.register(&key, "web1", KERNEL_A).await;
    let mut bad = serde_json::to_value(checkin_request(KERNEL_A, 0)).unwrap();
    bad["kernel"]["build_id"] = Value::from("not hex");
    let (status, body) = s
        .call(
            Method::POST,
            "/api/v1/checkin",
            Some(&host.token),
            Some(Body::Json(bad)),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert!(
        body["error"].as_str().unwrap().contains("build_id"),
        "{body}"
    );
    // Nothing of it was recorded; the next good one is.
    assert_eq!(s.ctx.hosts().await.unwrap()[0].last_checkin, None);
    s.checkin(&host.token, KERNEL_A, 1).await;
    assert_eq!(s.ctx.hosts().await.unwrap()[0].level, 1);
}

/// Issue 16, point 11: a hostname or tag with a bidirectional override or
/// a zero-width character is refused at registration, naming the field,
/// and no host is created (U+202E would show the name reversed in the
/// dashboard).
#[tokio::test]
async fn invisible_formatting_in_hostnames_and_tags_is_refused() {
    let s = TestServer::start().await;
    s.publish(KERNEL_A, 1, &["stable"]).await;
    let key = s.reg_key("stable").await;
    for (hostname, tag, field) in [
        ("web\u{202E}1", "web", "hostname"),
        ("we\u{200B}b1", "web", "hostname"),
        ("web1", "e\u{2066}u", "tags"),
    ] {
        let mut req = serde_json::to_value(register_request(&key, hostname, KERNEL_A)).unwrap();
        req["tags"] = serde_json::json!([tag]);
        let (status, body) = s
            .call(
                Method::POST,
                "/api/v1/register",
                None,
                Some(Body::Json(req)),
            )
            .await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
        let e = body["error"].as_str().unwrap();
        assert!(
            e.contains(field) && e.contains("invisible formatting"),
            "{e}"
        );
    }
    assert!(s.ctx.hosts().await.unwrap().is_empty());
}
