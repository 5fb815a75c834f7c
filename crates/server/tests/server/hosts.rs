//! Host management: moving a host to another feed (seen at its next real
//! check-in), replacing its tags (seen by the dashboard filter), retiring
//! it (its token refused at once, gone from the lists and the compliance
//! reports, its reports kept), naming hosts by id or unique hostname, the
//! admin role and the audit trail — through the API and the admin CLI.

use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use server::blobs::sha256_hex;
use server::model::{AuditEntry, Role};

use crate::cli::admin as cli;
use crate::common::*;

/// `POST path` with a JSON body (none: no body) as `token`.
async fn post(s: &TestServer, path: &str, token: &str, body: Option<Value>) -> (StatusCode, Value) {
    s.call(Method::POST, path, Some(token), body.map(Body::Json))
        .await
}

async fn get(s: &TestServer, path: &str, token: &str) -> Value {
    let (status, body) = s.call(Method::GET, path, Some(token), None).await;
    assert_eq!(status, StatusCode::OK, "GET {path}: {body}");
    body
}

/// The audit entries of `action`, oldest first.
async fn audited(s: &TestServer, action: &str) -> Vec<AuditEntry> {
    let mut a: Vec<AuditEntry> = s
        .ctx
        .audit_log(10_000)
        .await
        .unwrap()
        .into_iter()
        .filter(|e| e.action == action)
        .collect();
    a.reverse();
    a
}

fn detail(e: &AuditEntry) -> Value {
    serde_json::from_str(&e.detail).unwrap()
}

fn error(body: &Value) -> &str {
    body["error"]
        .as_str()
        .unwrap_or_else(|| panic!("no error: {body}"))
}

/// The host's feed and tags as the host list shows them.
async fn listed(s: &TestServer, id: &str) -> Option<(String, Value)> {
    s.ctx
        .hosts()
        .await
        .unwrap()
        .into_iter()
        .find(|h| h.id == id)
        .map(|h| (h.feed, serde_json::from_str(&h.tags).unwrap()))
}

#[tokio::test]
async fn a_moved_host_gets_its_new_feeds_level_at_the_next_checkin() {
    let s = TestServer::start().await;
    s.publish(KERNEL_A, 1, &["test", "stable"]).await;
    s.publish(KERNEL_A, 2, &["test"]).await;
    let admin = s.token("ops", Role::Admin).await;
    let key = s.reg_key("stable").await;
    let h = s.register(&key, "web-1", KERNEL_A).await;
    let c = s.checkin(&h.token, KERNEL_A, 0).await;
    assert_eq!(c.target.unwrap().level, 1);

    let (st, body) = post(
        &s,
        "/api/v1/admin/hosts/web-1/move",
        &admin,
        Some(json!({"feed": "test"})),
    )
    .await;
    assert_eq!(st, StatusCode::OK, "{body}");
    assert_eq!(body["id"], h.host_id.as_str());
    assert_eq!(body["from"], "stable");
    assert_eq!(body["to"], "test");
    assert_eq!(body["serving"], 2);
    // The next check-in is told the test feed's level, and the host token
    // opens its bundle.
    let target = s.checkin(&h.token, KERNEL_A, 1).await.target.unwrap();
    assert_eq!(target.level, 2);
    let (st, _) = s
        .call(Method::GET, &target.bundle_url, Some(&h.token), None)
        .await;
    assert_eq!(st, StatusCode::OK);
    assert_eq!(listed(&s, &h.host_id).await.unwrap().0, "test");
    // The registration key still registers hosts on its own feed.
    assert_eq!(s.register(&key, "web-2", KERNEL_A).await.feed, "stable");

    // Refused moves change nothing and leave no audit entry.
    for (feed, want) in [
        ("nosuch", StatusCode::NOT_FOUND),
        ("Bad Feed", StatusCode::BAD_REQUEST),
    ] {
        let (st, body) = post(
            &s,
            "/api/v1/admin/hosts/web-1/move",
            &admin,
            Some(json!({ "feed": feed })),
        )
        .await;
        assert_eq!(st, want, "{feed}: {body}");
        assert!(error(&body).contains(feed), "{body}");
    }
    for bad in [json!({}), json!({"feed": "test", "extra": 1})] {
        let (st, body) = post(&s, "/api/v1/admin/hosts/web-1/move", &admin, Some(bad)).await;
        assert_eq!(st, StatusCode::BAD_REQUEST, "{body}");
    }
    assert_eq!(listed(&s, &h.host_id).await.unwrap().0, "test");

    let moves = audited(&s, "host-move").await;
    assert_eq!(moves.len(), 1, "{moves:?}");
    assert_eq!(moves[0].actor, "ops");
    assert_eq!(moves[0].target, h.host_id);
    assert_eq!(
        detail(&moves[0]),
        json!({"hostname": "web-1", "from": "stable", "to": "test", "serving": 2})
    );

    // Back to stable: the host is told level 1 again (the agent goes back).
    let (st, body) = post(
        &s,
        &format!("/api/v1/admin/hosts/{}/move", h.host_id),
        &admin,
        Some(json!({"feed": "stable"})),
    )
    .await;
    assert_eq!(st, StatusCode::OK, "{body}");
    let c = s.checkin(&h.token, KERNEL_A, 2).await;
    assert_eq!(c.target.unwrap().level, 1);
}

/// Signs in to the dashboard; answers the session cookie.
async fn dashboard_cookie(s: &TestServer, token: &str) -> String {
    let r = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
        .post(format!("{}/ui/login", s.url))
        .form(&[("token", token)])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    let cookie = r.headers()["set-cookie"].to_str().unwrap();
    cookie.split(';').next().unwrap().to_string()
}

async fn dashboard(s: &TestServer, cookie: &str, path: &str) -> String {
    let r = s
        .http
        .get(format!("{}{path}", s.url))
        .header("cookie", cookie)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK, "{path}");
    r.text().await.unwrap()
}

#[tokio::test]
async fn tags_are_replaced_and_the_dashboard_filters_by_them() {
    let s = TestServer::start().await;
    let admin = s.token("ops", Role::Admin).await;
    let key = s.reg_key("stable").await;
    let h = s.register(&key, "db-1", KERNEL_A).await;
    let other = s.register(&key, "web-9", KERNEL_A).await;
    let path = format!("/api/v1/admin/hosts/{}/tags", h.host_id);

    let (st, body) = post(
        &s,
        &path,
        &admin,
        Some(json!({"tags": ["db", "eu west", "db"]})),
    )
    .await;
    assert_eq!(st, StatusCode::OK, "{body}");
    assert_eq!(body["from"], json!(["web"]));
    assert_eq!(body["to"], json!(["db", "eu west"]));
    // A check-in does not bring the registration's tags back.
    s.checkin(&h.token, KERNEL_A, 0).await;
    assert_eq!(
        listed(&s, &h.host_id).await.unwrap().1,
        json!(["db", "eu west"])
    );
    assert_eq!(listed(&s, &other.host_id).await.unwrap().1, json!(["web"]));

    let viewer = s.token("viewer", Role::ReadOnly).await;
    let cookie = dashboard_cookie(&s, &viewer).await;
    for (q, n) in [
        ("?tag=db", 1),
        ("?tag=eu+west", 1),
        ("?tag=web", 1),
        ("?tag=eu", 0),
        ("", 2),
    ] {
        let html = dashboard(&s, &cookie, &format!("/ui/hosts{q}")).await;
        assert!(
            html.contains(&format!("{n} hosts on this page")),
            "{q}: {html}"
        );
    }
    let html = dashboard(&s, &cookie, "/ui/hosts?tag=db").await;
    assert!(
        html.contains(&h.host_id) && html.contains("db, eu west"),
        "{html}"
    );

    // Refused: nothing changes.
    let too_many: Vec<String> = (0..65).map(|i| format!("t{i}")).collect();
    for bad in [
        json!({"tags": [""]}),
        json!({"tags": ["a\nb"]}),
        json!({"tags": ["x".repeat(65)]}),
        json!({ "tags": too_many }),
        json!({"tags": "db"}),
        json!({}),
    ] {
        let (st, body) = post(&s, &path, &admin, Some(bad.clone())).await;
        assert_eq!(st, StatusCode::BAD_REQUEST, "{bad}: {body}");
    }
    assert_eq!(
        listed(&s, &h.host_id).await.unwrap().1,
        json!(["db", "eu west"])
    );

    // An empty list clears them.
    let (st, body) = post(&s, &path, &admin, Some(json!({"tags": []}))).await;
    assert_eq!(st, StatusCode::OK, "{body}");
    assert_eq!(listed(&s, &h.host_id).await.unwrap().1, json!([]));
    let html = dashboard(&s, &cookie, "/ui/hosts?tag=db").await;
    assert!(html.contains("0 hosts on this page"), "{html}");

    let tagged = audited(&s, "host-tags").await;
    assert_eq!(tagged.len(), 2, "{tagged:?}");
    assert_eq!(
        detail(&tagged[0]),
        json!({"hostname": "db-1", "from": ["web"], "to": ["db", "eu west"]})
    );
    assert_eq!(
        detail(&tagged[1]),
        json!({"hostname": "db-1", "from": ["db", "eu west"], "to": []})
    );
    assert!(tagged.iter().all(|e| e.actor == "ops"));
}

#[tokio::test]
async fn a_retired_host_is_locked_out_and_leaves_the_reports_but_its_record_stays() {
    let s = TestServer::start().await;
    let bundle = s.bundle(KERNEL_A, 1, &["CVE-2024-0001"]);
    s.ctx
        .publish(ACTOR, bundle.clone(), &["stable".into()])
        .await
        .unwrap();
    let admin = s.token("ops", Role::Admin).await;
    let key = s.reg_key("stable").await;
    let old = s.register(&key, "old-box", KERNEL_A).await;
    let new = s.register(&key, "new-box", KERNEL_A).await;
    s.checkin(&old.token, KERNEL_A, 0).await;
    s.checkin(&new.token, KERNEL_A, 1).await;
    let failed = json!({"action": "update", "level": 1, "result": "failed",
                        "reason": "disk on fire", "duration_ms": 5, "active_level": 0});
    let (st, body) = post(&s, "/api/v1/report", &old.token, Some(failed.clone())).await;
    assert_eq!(st, StatusCode::NO_CONTENT, "{body}");
    let summary = get(&s, "/api/v1/admin/reports/summary", &admin).await;
    assert_eq!(
        (
            summary["hosts_total"].as_u64(),
            summary["hosts_exposed"].as_u64()
        ),
        (Some(2), Some(1)),
        "{summary}"
    );

    let (st, body) = post(&s, "/api/v1/admin/hosts/old-box/retire", &admin, None).await;
    assert_eq!(st, StatusCode::OK, "{body}");
    assert_eq!(body["id"], old.host_id.as_str());
    assert_eq!(body["reports"], 1);

    // Its token is refused at once, everywhere, and says why.
    let agent_calls = [
        (
            Method::POST,
            "/api/v1/checkin".to_string(),
            Some(json!(checkin_request(KERNEL_A, 0))),
        ),
        (
            Method::GET,
            format!("/api/v1/bundles/{}", sha256_hex(&bundle)),
            None,
        ),
        (Method::POST, "/api/v1/report".to_string(), Some(failed)),
    ];
    for (method, path, body) in agent_calls {
        let (st, resp) = s
            .call(
                method.clone(),
                &path,
                Some(&old.token),
                body.map(Body::Json),
            )
            .await;
        assert_eq!(st, StatusCode::UNAUTHORIZED, "{method} {path}: {resp}");
        assert!(error(&resp).contains("retired"), "{resp}");
    }
    // The other host is untouched.
    s.checkin(&new.token, KERNEL_A, 1).await;

    // Gone from the host list, the compliance reports and the metrics.
    let hosts = get(&s, "/api/v1/admin/hosts", &admin).await;
    let ids: Vec<&str> = hosts["hosts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| h["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, [new.host_id.as_str()]);
    let summary = get(&s, "/api/v1/admin/reports/summary", &admin).await;
    assert_eq!(summary["hosts_total"], 1, "{summary}");
    assert_eq!(summary["hosts_exposed"], 0, "{summary}");
    assert_eq!(summary["hosts_protected"], 1, "{summary}");
    let compliance = get(&s, "/api/v1/admin/reports/compliance", &admin).await;
    assert_eq!(compliance["exposures"], json!([]), "{compliance}");
    let per_host = get(&s, "/api/v1/admin/reports/hosts", &admin).await;
    assert!(!per_host.to_string().contains(&old.host_id), "{per_host}");
    let cves = get(&s, "/api/v1/admin/reports/cves", &admin).await;
    assert_eq!(cves["cves"][0]["hosts_exposed"], 0, "{cves}");
    let metrics = s
        .http
        .get(format!("{}/metrics", s.url))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(metrics.contains("noreboot_hosts_total 1\n"), "{metrics}");

    // What it reported is kept, and the retired list shows its last state.
    let reports = get(
        &s,
        &format!("/api/v1/admin/reports?host={}", old.host_id),
        &admin,
    )
    .await;
    assert_eq!(reports["reports"].as_array().unwrap().len(), 1, "{reports}");
    assert_eq!(reports["reports"][0]["reason"], "disk on fire");
    let retired = get(&s, "/api/v1/admin/hosts/retired", &admin).await;
    let r = &retired["hosts"][0];
    assert_eq!(r["id"], old.host_id.as_str(), "{retired}");
    assert_eq!(r["hostname"], "old-box");
    assert_eq!(r["retired_by"], "ops");
    assert_eq!(r["retired_at"], "2025-06-15T15:06:40Z");
    assert_eq!(retired["hosts"].as_array().unwrap().len(), 1);

    let entries = audited(&s, "host-retire").await;
    assert_eq!(entries.len(), 1);
    assert_eq!(
        (entries[0].actor.as_str(), entries[0].target.as_str()),
        ("ops", old.host_id.as_str())
    );
    let d = detail(&entries[0]);
    assert_eq!(
        (&d["hostname"], &d["feed"], &d["reports"]),
        (&json!("old-box"), &json!("stable"), &json!(1))
    );

    // Retirement is final: no second retirement, no changes; by hostname
    // the retired host is not found, and the message names it.
    let by_id = format!("/api/v1/admin/hosts/{}", old.host_id);
    for (path, body) in [
        (format!("{by_id}/retire"), None),
        (format!("{by_id}/move"), Some(json!({"feed": "test"}))),
        (format!("{by_id}/tags"), Some(json!({"tags": ["x"]}))),
    ] {
        let (st, resp) = post(&s, &path, &admin, body).await;
        assert_eq!(st, StatusCode::CONFLICT, "{path}: {resp}");
        assert!(error(&resp).contains("was retired"), "{resp}");
    }
    let (st, resp) = post(&s, "/api/v1/admin/hosts/old-box/retire", &admin, None).await;
    assert_eq!(st, StatusCode::NOT_FOUND, "{resp}");
    assert!(error(&resp).contains(&old.host_id), "{resp}");
    assert_eq!(audited(&s, "host-retire").await.len(), 1);

    // The machine comes back: it registers as a new host, and its hostname
    // names the new one.
    let again = s.register(&key, "old-box", KERNEL_A).await;
    assert_ne!(again.host_id, old.host_id);
    let (st, body) = post(
        &s,
        "/api/v1/admin/hosts/old-box/move",
        &admin,
        Some(json!({"feed": "test"})),
    )
    .await;
    assert_eq!(st, StatusCode::OK, "{body}");
    assert_eq!(body["id"], again.host_id.as_str());
}

#[tokio::test]
async fn hosts_are_named_by_id_or_by_a_hostname_only_one_active_host_has() {
    let s = TestServer::start().await;
    let admin = s.token("ops", Role::Admin).await;
    let key = s.reg_key("stable").await;
    let x = s.register(&key, "web", KERNEL_A).await;
    let y = s.register(&key, "web", KERNEL_A).await;
    let slashed = s.register(&key, "rack 4/a", KERNEL_A).await;
    // A host may call itself anything, another host's id too; an id always
    // means that host.
    let impostor = s.register(&key, &x.host_id, KERNEL_A).await;
    let to_test = Some(json!({"feed": "test"}));

    let (st, body) = post(&s, "/api/v1/admin/hosts/web/move", &admin, to_test.clone()).await;
    assert_eq!(st, StatusCode::CONFLICT, "{body}");
    let msg = error(&body);
    assert!(
        msg.contains("ambiguous") && msg.contains(&x.host_id) && msg.contains(&y.host_id),
        "{msg}"
    );
    assert!(msg.contains("by its id"), "{msg}");

    let (st, body) = post(
        &s,
        &format!("/api/v1/admin/hosts/{}/move", x.host_id),
        &admin,
        to_test.clone(),
    )
    .await;
    assert_eq!(st, StatusCode::OK, "{body}");
    assert_eq!(body["id"], x.host_id.as_str());
    assert_eq!(listed(&s, &impostor.host_id).await.unwrap().0, "stable");
    assert_eq!(listed(&s, &y.host_id).await.unwrap().0, "stable");

    // A hostname with a space and a slash, percent-encoded in the path.
    let (st, body) = post(
        &s,
        "/api/v1/admin/hosts/rack%204%2Fa/move",
        &admin,
        to_test.clone(),
    )
    .await;
    assert_eq!(st, StatusCode::OK, "{body}");
    assert_eq!(body["id"], slashed.host_id.as_str());

    let (st, body) = post(
        &s,
        "/api/v1/admin/hosts/nosuch/move",
        &admin,
        to_test.clone(),
    )
    .await;
    assert_eq!(st, StatusCode::NOT_FOUND, "{body}");
    assert!(
        error(&body).contains("no host with the id or hostname \"nosuch\""),
        "{body}"
    );
    let long = "h".repeat(300);
    let (st, body) = post(
        &s,
        &format!("/api/v1/admin/hosts/{long}/move"),
        &admin,
        to_test.clone(),
    )
    .await;
    assert_eq!(st, StatusCode::BAD_REQUEST, "{body}");

    // Once one of the two is retired, the name is unambiguous.
    let (st, body) = post(
        &s,
        &format!("/api/v1/admin/hosts/{}/retire", y.host_id),
        &admin,
        None,
    )
    .await;
    assert_eq!(st, StatusCode::OK, "{body}");
    let (st, body) = post(
        &s,
        "/api/v1/admin/hosts/web/tags",
        &admin,
        Some(json!({"tags": ["front"]})),
    )
    .await;
    assert_eq!(st, StatusCode::OK, "{body}");
    assert_eq!(body["id"], x.host_id.as_str());
    // Only the successful actions are in the audit trail.
    assert_eq!(audited(&s, "host-move").await.len(), 2);
    assert_eq!(audited(&s, "host-tags").await.len(), 1);
}

#[tokio::test]
async fn read_only_tokens_list_retired_hosts_but_change_nothing() {
    let s = TestServer::start().await;
    let viewer = s.token("viewer", Role::ReadOnly).await;
    let key = s.reg_key("stable").await;
    let h = s.register(&key, "web-1", KERNEL_A).await;
    let before = s.ctx.audit_log(1000).await.unwrap().len();
    let base = format!("/api/v1/admin/hosts/{}", h.host_id);
    for (path, body) in [
        (format!("{base}/move"), Some(json!({"feed": "test"}))),
        (format!("{base}/tags"), Some(json!({"tags": ["x"]}))),
        (format!("{base}/retire"), None),
    ] {
        let (st, resp) = post(&s, &path, &viewer, body).await;
        assert_eq!(st, StatusCode::FORBIDDEN, "{path}: {resp}");
        assert!(error(&resp).contains("read-only"), "{resp}");
    }
    assert_eq!(s.ctx.audit_log(1000).await.unwrap().len(), before);
    assert_eq!(
        listed(&s, &h.host_id).await.unwrap(),
        ("stable".to_string(), json!(["web"]))
    );
    s.checkin(&h.token, KERNEL_A, 0).await;
    let retired = get(&s, "/api/v1/admin/hosts/retired", &viewer).await;
    assert_eq!(retired, json!({"hosts": [], "next": null, "prev": null}));
}

#[tokio::test]
async fn the_admin_cli_moves_tags_and_retires_hosts() {
    let s = TestServer::start().await;
    s.publish(KERNEL_A, 1, &["test"]).await;
    let key = s.reg_key("stable").await;
    let h = s.register(&key, "cli-host", KERNEL_A).await;
    assert!(s.checkin(&h.token, KERNEL_A, 0).await.target.is_none());
    let out = ok(cli(
        &s.storage,
        &["host", "move", "cli-host", "--feed", "test"],
    ));
    assert!(
        out.contains("moved host cli-host") && out.contains("gets level 1"),
        "{out}"
    );
    // The running server sees the move at the host's next check-in.
    let c = s.checkin(&h.token, KERNEL_A, 0).await;
    assert_eq!(c.target.unwrap().level, 1);

    let out = ok(cli(
        &s.storage,
        &["--json", "host", "tags", "cli-host", "db", "eu"],
    ));
    let t: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(t["to"], json!(["db", "eu"]), "{out}");
    // Clearing takes --clear, so a forgotten argument does not wipe tags.
    let out = cli(&s.storage, &["host", "tags", "cli-host"]);
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    assert_eq!(listed(&s, &h.host_id).await.unwrap().1, json!(["db", "eu"]));
    let out = cli(&s.storage, &["host", "tags", "cli-host", "db", "--clear"]);
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    ok(cli(&s.storage, &["host", "tags", "cli-host", "--clear"]));
    assert_eq!(listed(&s, &h.host_id).await.unwrap().1, json!([]));

    // Exit statuses: 4 ambiguous, 3 unknown.
    let twin = s.register(&key, "cli-host", KERNEL_A).await;
    let out = cli(&s.storage, &["host", "retire", "cli-host"]);
    assert_eq!(out.status.code(), Some(4), "{out:?}");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("ambiguous") && err.contains(&h.host_id) && err.contains(&twin.host_id),
        "{err}"
    );
    let out = cli(&s.storage, &["host", "move", "nosuch", "--feed", "test"]);
    assert_eq!(out.status.code(), Some(3), "{out:?}");

    let out = ok(cli(&s.storage, &["host", "retire", &h.host_id]));
    assert!(out.contains("retired host cli-host"), "{out}");
    let (st, body) = s
        .call(
            Method::POST,
            "/api/v1/checkin",
            Some(&h.token),
            Some(Body::Json(json!(checkin_request(KERNEL_A, 1)))),
        )
        .await;
    assert_eq!(st, StatusCode::UNAUTHORIZED, "{body}");
    let active: Value = serde_json::from_str(&ok(cli(&s.storage, &["--json", "hosts"]))).unwrap();
    assert_eq!(active.as_array().unwrap().len(), 1, "{active}");
    assert_eq!(active[0]["id"], twin.host_id.as_str());
    let retired: Value =
        serde_json::from_str(&ok(cli(&s.storage, &["--json", "hosts", "--retired"]))).unwrap();
    assert_eq!(retired[0]["id"], h.host_id.as_str(), "{retired}");
    assert_eq!(retired[0]["retired_by"], "cli-test");
    let text = ok(cli(&s.storage, &["hosts", "--retired"]));
    assert!(
        text.contains(&h.host_id) && text.contains("by cli-test"),
        "{text}"
    );

    for action in ["host-move", "host-tags", "host-retire"] {
        let entries = audited(&s, action).await;
        assert!(!entries.is_empty(), "no {action} entry");
        assert!(
            entries
                .iter()
                .all(|e| e.actor == "cli-test" && e.target == h.host_id),
            "{entries:?}"
        );
    }
    assert_eq!(audited(&s, "host-tags").await.len(), 2);
}
