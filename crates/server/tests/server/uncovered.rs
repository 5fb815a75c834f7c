//! Issue 15, point 4: the kernel builds hosts run that no published level
//! covers are visible — `GET /api/v1/admin/kernels/reported`
//! (`?uncovered=true`), `admin kernels --reported|--uncovered`, the
//! dashboard's kernels page and the `noreboot_uncovered_builds` gauge —
//! counted from active hosts as of their last check-in, retired hosts left
//! out.

use protocol::RegisterResponse;
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use server::model::Role;

use crate::cli::admin;
use crate::common::*;
use crate::dashboard::{page, sign_in};

/// A build only a retired host runs.
const KERNEL_C: &str = "00112233445566778899aabbccddeeff00112233";
/// KERNEL_B's release, as its hosts report it.
const RELEASE_B: &str = "6.12.38+deb13-amd64";
/// KERNEL_B's `uname -v`: hosts choose what they report, and the dashboard
/// must show it as text.
const VERSION_B: &str = "#1 SMP <script>alert(1)</script> Debian 6.12.38-1";
/// What `register_request` reports for KERNEL_A.
const RELEASE_A: &str = "6.1.0-47-cloud-amd64";
const VERSION_A: &str = "#1 SMP PREEMPT_DYNAMIC Debian 6.1.170-3";

fn kernel_b() -> protocol::Kernel {
    protocol::Kernel {
        release: RELEASE_B.into(),
        version: VERSION_B.into(),
        build_id: KERNEL_B.into(),
    }
}

/// Registers `hostname` running `kernel`.
async fn register_on(
    s: &TestServer,
    key: &str,
    hostname: &str,
    kernel: protocol::Kernel,
) -> RegisterResponse {
    let mut req = register_request(key, hostname, &kernel.build_id);
    req.kernel = kernel;
    let (st, body) = s
        .call(
            Method::POST,
            "/api/v1/register",
            None,
            Some(Body::Json(serde_json::to_value(req).unwrap())),
        )
        .await;
    assert_eq!(st, StatusCode::CREATED, "{body}");
    serde_json::from_value(body).unwrap()
}

/// The reported builds over HTTP with `query`: status and body.
async fn reported(s: &TestServer, token: &str, query: &str) -> (StatusCode, Value) {
    s.call(
        Method::GET,
        &format!("/api/v1/admin/kernels/reported{query}"),
        Some(token),
        None,
    )
    .await
}

/// The gauge, computed afresh (the fleet figures are cached for
/// FLEET_MAX_AGE seconds).
async fn uncovered_gauge(s: &TestServer) -> String {
    s.clock.advance(server::api::metrics::FLEET_MAX_AGE);
    let text = s
        .http
        .get(format!("{}/metrics", s.url))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    text.lines()
        .find(|l| l.starts_with("noreboot_uncovered_builds "))
        .unwrap_or_else(|| panic!("no noreboot_uncovered_builds in {text}"))
        .to_string()
}

/// The dashboard's uncovered section: from its heading to the next one.
fn section(html: &str) -> &str {
    let start = html
        .find("<h2>Builds hosts run without a level</h2>")
        .unwrap_or_else(|| panic!("no uncovered section: {html}"));
    let rest = &html[start + 4..];
    &html[start..start + 4 + rest.find("<h2>").unwrap_or(rest.len())]
}

/// The CLI's stdout for `admin ARGS` on the test server's database.
fn cli(s: &TestServer, args: &[&str]) -> String {
    ok(admin(&s.storage, args))
}

#[tokio::test]
async fn builds_hosts_run_without_a_level_over_http_cli_dashboard_and_metrics() {
    let s = TestServer::start().await;
    let ops = s.token("ops", Role::Admin).await;
    let viewer = s.token("viewer", Role::ReadOnly).await;
    let cookie = sign_in(&s.url, &viewer).await;

    // No hosts: nothing reported, and the page says so.
    let (st, body) = reported(&s, &viewer, "").await;
    assert_eq!((st, body), (StatusCode::OK, json!([])));
    let (_, html) = page(&s.url, "/ui/kernels", &cookie).await;
    assert!(
        section(&html).contains("No active host is registered."),
        "{html}"
    );

    // KERNEL_A has levels 1 and 2; KERNEL_B none. Two hosts on A; on B
    // two that registered there and one that moved there at a check-in.
    // Retired hosts count nowhere: one on B, and the only one on C.
    s.publish(KERNEL_A, 1, &["stable"]).await;
    s.publish(KERNEL_A, 2, &["stable"]).await;
    let key = s.reg_key("stable").await;
    for name in ["a1", "a2"] {
        s.register(&key, name, KERNEL_A).await;
    }
    for name in ["b1", "b2"] {
        register_on(&s, &key, name, kernel_b()).await;
    }
    let mover = s.register(&key, "mover", KERNEL_A).await;
    let mut moved = checkin_request(KERNEL_B, 0);
    moved.kernel = kernel_b();
    let (st, body) = s
        .call(
            Method::POST,
            "/api/v1/checkin",
            Some(&mover.token),
            Some(Body::Json(serde_json::to_value(moved).unwrap())),
        )
        .await;
    assert_eq!(st, StatusCode::OK, "{body}");
    let retired_b = register_on(&s, &key, "gone-b", kernel_b()).await;
    let retired_c = s.register(&key, "gone-c", KERNEL_C).await;
    for h in [&retired_b, &retired_c] {
        s.ctx.retire_host(ACTOR, &h.host_id).await.unwrap();
    }

    let entry_a = json!({"release": RELEASE_A, "version": VERSION_A, "build_id": KERNEL_A,
                         "hosts": 2, "newest_level": 2});
    let entry_b = json!({"release": RELEASE_B, "version": VERSION_B, "build_id": KERNEL_B,
                         "hosts": 3, "newest_level": null});
    // Any admin token reads it; by release, then build-id.
    for token in [&viewer, &ops] {
        let (st, body) = reported(&s, token, "").await;
        assert_eq!(st, StatusCode::OK, "{body}");
        assert_eq!(body, json!([entry_a, entry_b]));
    }
    let (_, body) = reported(&s, &viewer, "?uncovered=false").await;
    assert_eq!(body, json!([entry_a, entry_b]));
    let (st, uncovered) = reported(&s, &viewer, "?uncovered=true").await;
    assert_eq!(st, StatusCode::OK, "{uncovered}");
    assert_eq!(uncovered, json!([entry_b]));

    // The field names are what the OpenAPI document promises, exactly.
    let (_, doc) = s
        .call(Method::GET, "/api/v1/openapi.json", None, None)
        .await;
    let op = &doc["paths"]["/api/v1/admin/kernels/reported"]["get"];
    assert_eq!(
        op["responses"]["200"]["content"]["application/json"]["schema"]["$ref"],
        "#/components/schemas/ReportedBuilds"
    );
    let item = &doc["components"]["schemas"]["ReportedBuilds"]["items"];
    let mut required: Vec<&str> = item["required"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f.as_str().unwrap())
        .collect();
    let mut fields: Vec<&str> = entry_b
        .as_object()
        .unwrap()
        .keys()
        .map(|k| k.as_str())
        .collect();
    required.sort();
    fields.sort();
    assert_eq!(required, fields);
    assert!(op["parameters"]
        .as_array()
        .unwrap()
        .iter()
        .any(|p| p["name"] == "uncovered" && p["in"] == "query"));

    // Unknown parameters and values are refused by name, not ignored.
    for (query, says) in [
        ("?uncoverd=true", "unknown query parameter \"uncoverd\""),
        (
            "?uncovered=true&feed=stable",
            "unknown query parameter \"feed\"",
        ),
        ("?uncovered=yes", "\"yes\" is neither `true` nor `false`"),
        ("?uncovered=true&uncovered=true", "more than once"),
    ] {
        let (st, body) = reported(&s, &viewer, query).await;
        assert_eq!(st, StatusCode::BAD_REQUEST, "{query}: {body}");
        let msg = body["error"].as_str().unwrap_or("");
        assert!(msg.contains(says), "{query}: {body}");
    }

    // The CLI: the same list as JSON; tables; plain `kernels` unchanged.
    let json_out: Value =
        serde_json::from_str(&cli(&s, &["--json", "kernels", "--uncovered"])).unwrap();
    assert_eq!(json_out, uncovered);
    let json_out: Value =
        serde_json::from_str(&cli(&s, &["--json", "kernels", "--reported"])).unwrap();
    assert_eq!(json_out, json!([entry_a, entry_b]));
    let out = cli(&s, &["kernels", "--uncovered"]);
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 2, "{out}");
    let header: Vec<&str> = lines[0]
        .split("  ")
        .map(str::trim)
        .filter(|c| !c.is_empty())
        .collect();
    assert_eq!(header, ["RELEASE", "VERSION", "BUILD ID", "HOSTS"], "{out}");
    assert!(
        lines[1].starts_with(RELEASE_B) && lines[1].contains(VERSION_B),
        "{out}"
    );
    assert_eq!(row_after(lines[1], KERNEL_B), ["3"], "{out}");
    let out = cli(&s, &["kernels", "--reported"]);
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 3, "{out}");
    assert!(
        lines[0].trim_end().ends_with("HOSTS  NEWEST LEVEL"),
        "{out}"
    );
    assert!(lines[1].starts_with(RELEASE_A), "{out}");
    assert_eq!(row_after(lines[1], KERNEL_A), ["2", "2"], "{out}");
    assert!(lines[2].starts_with(RELEASE_B), "{out}");
    assert_eq!(row_after(lines[2], KERNEL_B), ["3", "none"], "{out}");
    let out = cli(&s, &["kernels"]);
    assert_eq!(out.lines().count(), 1, "{out}");
    assert!(
        out.contains(KERNEL_A) && out.contains("2 levels, newest 2"),
        "{out}"
    );
    let conflict = admin(&s.storage, &["kernels", "--uncovered", "--reported"]);
    assert_eq!(conflict.status.code(), Some(2));

    // The dashboard: B with its host count, linking to its hosts; the
    // version escaped.
    let (st, html) = page(&s.url, "/ui/kernels", &cookie).await;
    assert_eq!(st, StatusCode::OK);
    let sec = section(&html);
    assert!(
        sec.contains("1 build run by 3 hosts that no published level covers"),
        "{sec}"
    );
    assert!(sec.contains(KERNEL_B) && !sec.contains(KERNEL_A), "{sec}");
    assert!(
        sec.contains(&format!("<a href=\"/ui/hosts?kernel={KERNEL_B}\">3</a>")),
        "{sec}"
    );
    assert!(
        sec.contains("#1 SMP &lt;script&gt;alert(1)&lt;/script&gt; Debian"),
        "{sec}"
    );
    assert!(!html.contains("<script>"), "{html}");
    let (_, hosts) = page(&s.url, &format!("/ui/hosts?kernel={KERNEL_B}"), &cookie).await;
    assert!(hosts.contains("3 hosts on this page"), "{hosts}");

    assert_eq!(uncovered_gauge(&s).await, "noreboot_uncovered_builds 1");

    // A level for B covers it: nothing left uncovered anywhere.
    s.publish(KERNEL_B, 1, &["stable"]).await;
    let (_, body) = reported(&s, &viewer, "?uncovered=true").await;
    assert_eq!(body, json!([]));
    let (_, body) = reported(&s, &viewer, "").await;
    assert_eq!(body[1]["build_id"], KERNEL_B);
    assert_eq!(body[1]["newest_level"], 1);
    assert_eq!(
        cli(&s, &["kernels", "--uncovered"]),
        "every kernel build active hosts run has a published level\n"
    );
    let (_, html) = page(&s.url, "/ui/kernels", &cookie).await;
    assert!(
        section(&html).contains("Every build active hosts run has a published level."),
        "{html}"
    );
    assert_eq!(uncovered_gauge(&s).await, "noreboot_uncovered_builds 0");
}

/// The cells of a table row after `build_id` (the release and version
/// before it may hold spaces).
fn row_after<'a>(line: &'a str, build_id: &str) -> Vec<&'a str> {
    let (_, rest) = line
        .split_once(build_id)
        .unwrap_or_else(|| panic!("{build_id} not in {line:?}"));
    rest.split_whitespace().collect()
}
