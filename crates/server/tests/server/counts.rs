//! The fleet's counts (`server::counts`): a fleet counted within the budget
//! is counted for every request; a larger one is answered from its last
//! count, recounted in the background once that is 15 s old and waited
//! for once it is 60 s old, one count at a time, and the pages and
//! reports say when the hosts were counted.

use std::sync::atomic::Ordering;
use std::time::Duration;

use reqwest::Method;
use serde_json::Value;
use server::api::Settings;
use server::clock::rfc3339;
use server::counts::{FleetCounts, HARD_MAX_AGE, MAX_AGE};
use server::model::Role;

use crate::common::*;
use crate::dashboard::{page, sign_in};

fn settings() -> Settings {
    Settings {
        register_per_minute: 1000,
        ..Settings::default()
    }
}

async fn summary(s: &TestServer, token: &str) -> Value {
    let (status, v) = s
        .call(
            Method::GET,
            "/api/v1/admin/reports/summary",
            Some(token),
            None,
        )
        .await;
    assert!(status.is_success(), "{status} {v}");
    v
}

/// `n` summaries asked for at once.
async fn summaries_at_once(s: &TestServer, token: &str, n: usize) -> Vec<Value> {
    let mut set = tokio::task::JoinSet::new();
    for _ in 0..n {
        let req = s
            .http
            .get(format!("{}/api/v1/admin/reports/summary", s.url))
            .bearer_auth(token);
        set.spawn(async move {
            let r = req.send().await.unwrap();
            assert!(r.status().is_success(), "{}", r.status());
            r.json::<Value>().await.unwrap()
        });
    }
    set.join_all().await
}

fn taken(s: &TestServer) -> u64 {
    s.ctx.counts.taken.load(Ordering::Relaxed)
}

/// Waits (up to 10 s) for the background count to bring the summary to
/// `hosts` hosts.
async fn wait_for_hosts(s: &TestServer, token: &str, hosts: u64) -> Value {
    for _ in 0..200 {
        let v = summary(s, token).await;
        if v["hosts_total"] == hosts {
            return v;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("the background count never showed {hosts} hosts");
}

#[tokio::test]
async fn a_large_fleet_is_answered_from_its_last_count_and_says_when_it_was_taken() {
    // A budget of zero: every count is "too slow", as at a million hosts.
    let s =
        TestServer::start_counting(settings(), FleetCounts::new(Some(Duration::ZERO), 24)).await;
    s.publish(KERNEL_A, 1, &["stable"]).await;
    let key = s.reg_key("stable").await;
    let admin = s.token("admin", Role::Admin).await;
    let a = s.register(&key, "a", KERNEL_A).await;
    s.checkin(&a.token, KERNEL_A, 1).await;

    // The first request counts: there is nothing to answer from.
    let v = summary(&s, &admin).await;
    assert_eq!(v["hosts_total"], 1, "{v}");
    assert_eq!(v["hosts_protected"], 1, "{v}");
    assert_eq!(v["generated_at"], rfc3339(T0), "{v}");
    assert_eq!(taken(&s), 1);

    // A second host: within MAX_AGE the last count answers, and many
    // requests at once count nothing.
    let b = s.register(&key, "b", KERNEL_B).await;
    s.clock.advance(MAX_AGE);
    let answers = summaries_at_once(&s, &admin, 16).await;
    for v in &answers {
        assert_eq!(v["hosts_total"], 1, "{v}");
    }
    let (status, builds) = s
        .call(
            Method::GET,
            "/api/v1/admin/kernels/reported",
            Some(&admin),
            None,
        )
        .await;
    assert!(status.is_success());
    assert_eq!(builds.as_array().map(Vec::len), Some(1), "{builds}");
    assert_eq!(taken(&s), 1);

    // Past MAX_AGE: the last count still answers at once, and one count
    // starts in the background (however many requests ask).
    s.clock.advance(1);
    let answers = summaries_at_once(&s, &admin, 8).await;
    assert!(
        answers.iter().any(|v| v["hosts_total"] == 1),
        "the first answer past MAX_AGE waited for a count"
    );
    let v = wait_for_hosts(&s, &admin, 2).await;
    assert_eq!(v["hosts_unsupported"], 1, "{v}");
    assert_eq!(v["generated_at"], rfc3339(T0 + MAX_AGE + 1), "{v}");
    assert_eq!(taken(&s), 2, "one background count for all those requests");

    // The pages say when the hosts were counted.
    let viewer = s.token("viewer", Role::ReadOnly).await;
    let cookie = sign_in(&s.url, &viewer).await;
    let counted = format!("Hosts counted at {}.", rfc3339(T0 + MAX_AGE + 1));
    for path in ["/ui/compliance", "/ui/kernels"] {
        let (status, html) = page(&s.url, path, &cookie).await;
        assert!(status.is_success(), "{path}: {status}");
        assert!(html.contains(&counted), "{path} lacks {counted:?}");
    }

    // Past HARD_MAX_AGE the request waits for a new count: no figure
    // older than that is ever shown.
    s.checkin(&b.token, KERNEL_B, 0).await;
    s.register(&key, "c", KERNEL_A).await;
    s.clock.advance(HARD_MAX_AGE + 1);
    let v = summary(&s, &admin).await;
    assert_eq!(v["hosts_total"], 3, "{v}");
    assert_eq!(
        v["generated_at"],
        rfc3339(T0 + MAX_AGE + 1 + HARD_MAX_AGE + 1),
        "{v}"
    );
    // Host `c` never checked in; `a` last did 77 s ago: one stale host.
    assert_eq!(v["hosts_stale"], 1, "{v}");

    // A stale threshold other than the server's is counted on request.
    let before = taken(&s);
    let (status, v) = s
        .call(
            Method::GET,
            "/api/v1/admin/reports/summary?stale_hours=1000",
            Some(&admin),
            None,
        )
        .await;
    assert!(status.is_success(), "{v}");
    assert_eq!(v["stale_hours"], 1000, "{v}");
    assert_eq!(taken(&s), before + 1);
    s.stop().await;
}

#[tokio::test]
async fn a_fleet_counted_within_the_budget_is_counted_for_every_request() {
    let s = TestServer::start_counting(
        settings(),
        FleetCounts::new(Some(Duration::from_secs(3600)), 24),
    )
    .await;
    let key = s.reg_key("stable").await;
    let admin = s.token("admin", Role::Admin).await;
    for (i, name) in ["a", "b", "c"].into_iter().enumerate() {
        s.register(&key, name, KERNEL_A).await;
        let v = summary(&s, &admin).await;
        assert_eq!(v["hosts_total"], i + 1, "{v}");
    }
    assert_eq!(taken(&s), 3);
    s.stop().await;
}
