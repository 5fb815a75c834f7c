//! Feeds: what a host is told depends on its feed — releases, the delay
//! of a delayed feed (with the server's clock moved, not slept), pins,
//! holds and rollbacks.

use reqwest::{Method, StatusCode};
use serde_json::json;
use server::model::Role;

use crate::common::*;

#[tokio::test]
async fn test_and_stable_feeds_see_what_was_released_to_them() {
    let s = TestServer::start().await;
    s.publish(KERNEL_A, 1, &["test", "stable"]).await;
    s.publish(KERNEL_A, 2, &["test"]).await;
    assert_eq!(s.target_on("test", KERNEL_A).await, Some(2));
    assert_eq!(s.target_on("stable", KERNEL_A).await, Some(1));

    let token = s.token("ops", Role::Admin).await;
    let (status, body) = s
        .call(
            Method::POST,
            "/api/v1/admin/promote",
            Some(&token),
            Some(Body::Json(
                json!({"kernel": KERNEL_A, "level": 2, "feed": "stable"}),
            )),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["already"], false);
    assert_eq!(s.target_on("stable", KERNEL_A).await, Some(2));

    let (status, body) = s
        .call(
            Method::POST,
            "/api/v1/admin/promote",
            Some(&token),
            Some(Body::Json(
                json!({"kernel": KERNEL_A, "level": 3, "feed": "stable"}),
            )),
        )
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{body}");
}

#[tokio::test]
async fn delayed_feed_serves_a_level_only_hours_after_publication() {
    let s = TestServer::start().await;
    let token = s.token("ops", Role::Admin).await;
    let (status, body) = s
        .call(
            Method::POST,
            "/api/v1/admin/feeds",
            Some(&token),
            Some(Body::Json(json!({"name": "delayed-2h", "delay_hours": 2}))),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");

    // Level 1 published two hours ago, level 2 just now.
    s.clock.set(T0 - 2 * 3600);
    s.publish(KERNEL_A, 1, &["delayed-2h", "stable"]).await;
    s.clock.set(T0);
    s.publish(KERNEL_A, 2, &["delayed-2h", "stable"]).await;
    assert_eq!(s.target_on("delayed-2h", KERNEL_A).await, Some(1));
    assert_eq!(s.target_on("stable", KERNEL_A).await, Some(2));

    s.clock.set(T0 + 2 * 3600 - 1);
    assert_eq!(s.target_on("delayed-2h", KERNEL_A).await, Some(1));
    s.clock.set(T0 + 2 * 3600);
    assert_eq!(s.target_on("delayed-2h", KERNEL_A).await, Some(2));

    // A level published now and nothing older: the delayed feed serves nothing yet.
    s.publish(KERNEL_B, 1, &["delayed-2h"]).await;
    assert_eq!(s.target_on("delayed-2h", KERNEL_B).await, None);

    let (_, feeds) = s
        .call(Method::GET, "/api/v1/admin/feeds", Some(&token), None)
        .await;
    let names: Vec<&str> = feeds["feeds"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["delayed-2h", "stable", "test"]);
}

#[tokio::test]
async fn pin_and_hold_override_releases_until_unpinned() {
    let s = TestServer::start().await;
    let token = s.token("ops", Role::Admin).await;
    for level in 1..=3 {
        s.publish(KERNEL_A, level, &["stable"]).await;
    }
    let post = |path: &'static str, body: serde_json::Value| {
        let s = &s;
        let token = token.clone();
        async move {
            s.call(Method::POST, path, Some(&token), Some(Body::Json(body)))
                .await
        }
    };
    let fk = json!({"feed": "stable", "kernel": KERNEL_A});

    let (status, body) = post(
        "/api/v1/admin/pin",
        json!({"feed": "stable", "kernel": KERNEL_A, "level": 2}),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["serving"], 2);
    assert_eq!(s.target_on("stable", KERNEL_A).await, Some(2));

    let (status, body) = post("/api/v1/admin/unpin", fk.clone()).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(s.target_on("stable", KERNEL_A).await, Some(3));

    let (status, body) = post("/api/v1/admin/hold", fk.clone()).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["level"], 3);
    s.publish(KERNEL_A, 4, &["stable"]).await;
    assert_eq!(s.target_on("stable", KERNEL_A).await, Some(3));
    let (_, state) = s
        .call(
            Method::GET,
            &format!("/api/v1/admin/feeds/stable/kernels/{KERNEL_A}"),
            Some(&token),
            None,
        )
        .await;
    assert_eq!(state["mode"], "hold");
    assert_eq!(state["serving"], 3);
    post("/api/v1/admin/unpin", fk.clone()).await;
    assert_eq!(s.target_on("stable", KERNEL_A).await, Some(4));

    // A pin needs a level released to the feed.
    s.publish(KERNEL_A, 5, &["test"]).await;
    let (status, body) = post(
        "/api/v1/admin/pin",
        json!({"feed": "stable", "kernel": KERNEL_A, "level": 5}),
    )
    .await;
    assert_eq!(status, StatusCode::CONFLICT, "{body}");
    assert!(body["error"].as_str().unwrap().contains("promote it first"));
    let (status, _) = post("/api/v1/admin/unpin", fk.clone()).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn rollback_moves_hosts_to_the_previous_level_at_their_next_checkin() {
    let s = TestServer::start().await;
    let token = s.token("ops", Role::Admin).await;
    s.publish(KERNEL_A, 1, &["test", "stable"]).await;
    s.publish(KERNEL_A, 2, &["test", "stable"]).await;
    let key = s.reg_key("stable").await;
    let host = s.register(&key, "web-1", KERNEL_A).await;
    assert_eq!(
        s.checkin(&host.token, KERNEL_A, 0)
            .await
            .target
            .unwrap()
            .level,
        2
    );

    let rollback = || async {
        s.call(
            Method::POST,
            "/api/v1/admin/rollback",
            Some(&token),
            Some(Body::Json(json!({"feed": "stable", "kernel": KERNEL_A}))),
        )
        .await
    };
    let (status, body) = rollback().await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["from"], 2);
    assert_eq!(body["to"], 1);
    assert_eq!(
        s.checkin(&host.token, KERNEL_A, 2)
            .await
            .target
            .unwrap()
            .level,
        1
    );
    // Only that feed.
    assert_eq!(s.target_on("test", KERNEL_A).await, Some(2));

    let (status, body) = rollback().await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["to"], serde_json::Value::Null);
    let c = s.checkin(&host.token, KERNEL_A, 1).await;
    assert!(c.supported && c.target.is_none());
    let (status, body) = rollback().await;
    assert_eq!(status, StatusCode::CONFLICT, "{body}");
    assert!(body["error"]
        .as_str()
        .unwrap()
        .contains("nothing to roll back"));

    // Promoting a withdrawn level releases it again.
    s.ctx.promote(ACTOR, KERNEL_A, 2, "stable").await.unwrap();
    assert_eq!(
        s.checkin(&host.token, KERNEL_A, 1)
            .await
            .target
            .unwrap()
            .level,
        2
    );

    // A rollback from a pinned level also withdraws the newer ones.
    s.publish(KERNEL_A, 3, &["stable"]).await;
    s.ctx.pin(ACTOR, "stable", KERNEL_A, 2).await.unwrap();
    let r = s.ctx.rollback(ACTOR, "stable", KERNEL_A).await.unwrap();
    assert_eq!((r.from, r.to, r.withdrawn), (2, None, vec![2, 3]));

    let audit = s.ctx.audit_log(100).await.unwrap();
    let rollbacks: Vec<_> = audit.iter().filter(|a| a.action == "rollback").collect();
    assert_eq!(rollbacks.len(), 3);
    assert_eq!(rollbacks[2].actor, "ops");
}
