//! Lists at fleet scale (issue 16): keyset pages of hosts, retired hosts,
//! the audit trail and the per-host reports — every row exactly once
//! across pages while hosts register in between, `next`/`prev` cursors
//! and `Link` headers, filters, and 400s naming a bad `cursor`, `limit` or
//! filter; the CSV reports streamed whole (more hosts than one streamed
//! chunk); and the summary, counted from a grouped scan, agreeing with the
//! report computed host by host as hosts check in, move and retire.

use std::collections::BTreeSet;

use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use server::model::Role;
use server::report::Policy;

use crate::common::*;

async fn get(s: &TestServer, path: &str, token: &str) -> (Value, Option<String>) {
    let r = s
        .http
        .get(format!("{}{path}", s.url))
        .bearer_auth(token)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK, "GET {path}");
    let link = r
        .headers()
        .get("link")
        .map(|v| v.to_str().unwrap().to_string());
    (r.json().await.unwrap(), link)
}

/// Every page of `path` (which has no query yet but `?` and its own
/// parameters), following `next`; answers the rows' `field` values, in
/// order, and checks that `Link` says what `next` and `prev` say.
async fn walk(s: &TestServer, path: &str, key: &str, field: &str, token: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut url = path.to_string();
    for _ in 0..1000 {
        let (body, link) = get(s, &url, token).await;
        for row in body[key].as_array().unwrap() {
            out.push(
                row[field]
                    .as_str()
                    .map_or_else(|| row[field].to_string(), str::to_string),
            );
        }
        let link = link.unwrap_or_default();
        for rel in ["next", "prev"] {
            match body[rel].as_str() {
                Some(c) => assert!(
                    link.contains(&format!("cursor={c}>; rel=\"{rel}\"")),
                    "{rel}: {link}"
                ),
                None => assert!(!link.contains(&format!("rel=\"{rel}\"")), "{link}"),
            }
        }
        match body["next"].as_str() {
            Some(c) => url = format!("{path}&cursor={c}"),
            None => return out,
        }
    }
    panic!("more than 1000 pages of {path}");
}

#[tokio::test]
async fn host_pages_hold_every_host_exactly_once_while_hosts_register() {
    let s = TestServer::start().await;
    let viewer = s.token("viewer", Role::ReadOnly).await;
    let key = s.reg_key("stable").await;
    let mut before = BTreeSet::new();
    // Names out of order, and the same name twice (pages break ties by id).
    for i in 0..23 {
        let name = format!("h-{:02}", (i * 7) % 20);
        before.insert(s.register(&key, &name, KERNEL_A).await.host_id);
    }
    let mut seen = Vec::new();
    let mut later = BTreeSet::new();
    let mut url = "/api/v1/admin/hosts?limit=5".to_string();
    let mut pages = Vec::new();
    loop {
        let (body, _) = get(&s, &url, &viewer).await;
        let rows = body["hosts"].as_array().unwrap();
        assert!(rows.len() <= 5);
        pages.push(body.clone());
        seen.extend(rows.iter().map(|h| h["id"].as_str().unwrap().to_string()));
        // New hosts between pages: one sorting before everything shown,
        // one after.
        later.insert(s.register(&key, "a-early", KERNEL_A).await.host_id);
        later.insert(s.register(&key, "z-late", KERNEL_A).await.host_id);
        match body["next"].as_str() {
            Some(c) => url = format!("/api/v1/admin/hosts?limit=5&cursor={c}"),
            None => break,
        }
    }
    let unique: BTreeSet<String> = seen.iter().cloned().collect();
    assert_eq!(unique.len(), seen.len(), "a host shown twice: {seen:?}");
    assert!(unique.is_superset(&before), "a host missing");
    assert!(unique
        .iter()
        .all(|id| before.contains(id) || later.contains(id)));
    // Hosts registered behind the cursor wait for the next walk; the ones
    // ahead of it were picked up.
    assert!(seen.iter().any(|id| later.contains(id)));
    assert!(pages[0]["prev"].is_null());
    // Back from the last page with `prev` (nothing registers now): the
    // pages of a forward walk, in reverse.
    let ids = |v: &Value| -> Vec<String> {
        v.as_array()
            .unwrap()
            .iter()
            .map(|h| h["id"].as_str().unwrap().to_string())
            .collect()
    };
    let mut forward = Vec::new();
    let mut url = "/api/v1/admin/hosts?limit=4".to_string();
    loop {
        let (body, _) = get(&s, &url, &viewer).await;
        forward.push(ids(&body["hosts"]));
        match body["next"].as_str() {
            Some(c) => url = format!("/api/v1/admin/hosts?limit=4&cursor={c}"),
            None => {
                url = format!(
                    "/api/v1/admin/hosts?limit=4&cursor={}",
                    body["prev"].as_str().unwrap()
                );
                break;
            }
        }
    }
    let mut backward = vec![forward.last().unwrap().clone()];
    loop {
        let (body, _) = get(&s, &url, &viewer).await;
        backward.push(ids(&body["hosts"]));
        match body["prev"].as_str() {
            Some(c) => url = format!("/api/v1/admin/hosts?limit=4&cursor={c}"),
            None => break,
        }
    }
    backward.reverse();
    assert_eq!(backward, forward);
    // A full walk now shows every active host once, in order.
    let names = walk(
        &s,
        "/api/v1/admin/hosts?limit=7",
        "hosts",
        "hostname",
        &viewer,
    )
    .await;
    assert_eq!(names.len(), before.len() + later.len());
    assert!(names.windows(2).all(|w| w[0] <= w[1]), "{names:?}");
}

#[tokio::test]
async fn host_filters_and_bad_parameters() {
    let s = TestServer::start().await;
    let admin = s.token("ops", Role::Admin).await;
    s.clock.set(T0 - 10 * 86_400);
    s.publish_fixing(KERNEL_A, 1, &["CVE-2024-0001"], &["stable"])
        .await;
    s.clock.set(T0);
    let stable = s.reg_key("stable").await;
    let test = s.reg_key("test").await;
    let a1 = s.register(&stable, "web-1", KERNEL_A).await;
    let a2 = s.register(&stable, "web-2", KERNEL_A).await;
    let b1 = s.register(&test, "db-1", KERNEL_B).await;
    s.checkin(&a1.token, KERNEL_A, 1).await;
    s.checkin(&a2.token, KERNEL_A, 0).await;
    s.checkin(&b1.token, KERNEL_B, 0).await;
    s.register(&stable, "web-3", KERNEL_A).await; // never checked in: stale
    s.ctx
        .set_host_tags(ACTOR, &b1.host_id, &["db".into(), "eu \"west\"".into()])
        .await
        .unwrap();
    for (q, want) in [
        ("feed=test", vec!["db-1"]),
        ("feed=stable", vec!["web-1", "web-2", "web-3"]),
        (
            "kernel=6.1.0-47-cloud-amd64",
            vec!["db-1", "web-1", "web-2", "web-3"],
        ),
        (&format!("kernel={}", &KERNEL_B[..8]), vec!["db-1"]),
        (
            &format!("kernel={KERNEL_A}"),
            vec!["web-1", "web-2", "web-3"],
        ),
        ("level=1", vec!["web-1"]),
        ("tag=db", vec!["db-1"]),
        ("tag=eu%20%22west%22", vec!["db-1"]),
        ("tag=DB", vec![]),
        ("tag=web", vec!["web-1", "web-2", "web-3"]),
        ("hostname=web-", vec!["web-1", "web-2", "web-3"]),
        ("hostname=WEB", vec![]),
        ("status=protected", vec!["web-1"]),
        ("status=exposed", vec!["web-2", "web-3"]),
        ("status=unsupported", vec!["db-1"]),
        ("stale=true", vec!["web-3"]),
        ("stale=false", vec!["db-1", "web-1", "web-2"]),
        ("feed=stable&status=exposed&stale=0", vec!["web-2"]),
        ("feed=&kernel=", vec!["db-1", "web-1", "web-2", "web-3"]),
    ] {
        let names = walk(
            &s,
            &format!("/api/v1/admin/hosts?limit=2&{q}"),
            "hosts",
            "hostname",
            &admin,
        )
        .await;
        assert_eq!(names, want, "{q}");
    }
    // The per-host report takes the same filters.
    let names = walk(
        &s,
        "/api/v1/admin/reports/hosts?status=exposed&limit=1",
        "hosts",
        "hostname",
        &admin,
    )
    .await;
    assert_eq!(names, ["web-2", "web-3"]);

    let (_, audit) = get(&s, "/api/v1/admin/audit?limit=1", &admin).await;
    let audit_cursor = audit.unwrap();
    let audit_cursor = audit_cursor
        .split("cursor=")
        .nth(1)
        .and_then(|c| c.split('>').next())
        .unwrap()
        .to_string();
    for (q, names) in [
        ("cursor=zz".to_string(), "cursor"),
        (
            format!(
                "cursor={}",
                hex_of("{\"l\":\"hosts\",\"d\":\"n\",\"k\":[1]}")
            ),
            "cursor",
        ),
        (format!("cursor={audit_cursor}"), "cursor"),
        ("limit=0".into(), "limit"),
        ("limit=1001".into(), "limit"),
        ("limit=ten".into(), "limit"),
        ("level=x".into(), "level"),
        ("status=broken".into(), "status"),
        ("stale=maybe".into(), "stale"),
        ("bogus=1".into(), "bogus"),
    ] {
        let (st, body) = s
            .call(
                Method::GET,
                &format!("/api/v1/admin/hosts?{q}"),
                Some(&admin),
                None,
            )
            .await;
        assert_eq!(st, StatusCode::BAD_REQUEST, "{q}: {body}");
        let e = body["error"]
            .as_str()
            .unwrap_or_else(|| panic!("{q}: {body}"));
        assert!(e.contains(names), "{q}: {e}");
    }
    for q in [
        "limit=5&format=csv",
        "status=protected",
        "feed=x&format=csv&cursor=zz",
    ] {
        let (st, body) = s
            .call(
                Method::GET,
                &format!("/api/v1/admin/reports/compliance?{q}"),
                Some(&admin),
                None,
            )
            .await;
        assert_eq!(st, StatusCode::BAD_REQUEST, "{q}: {body}");
    }
    let (st, body) = s
        .call(
            Method::GET,
            "/api/v1/admin/reports/summary?limit=5",
            Some(&admin),
            None,
        )
        .await;
    assert_eq!(st, StatusCode::BAD_REQUEST, "{body}");
    assert!(body["error"].as_str().unwrap().contains("limit"));
}

fn hex_of(s: &str) -> String {
    s.bytes().map(|b| format!("{b:02x}")).collect()
}

/// `n` hosts written straight into the database in one transaction (the
/// API would take a commit each), on KERNEL_A at `level`, named
/// `bulk-NNNNN`, half of them in feed `test`.
async fn bulk_hosts(s: &TestServer, n: usize, level: i64) {
    let stable = s.ctx.create_key(ACTOR, "stable", "bulk").await.unwrap();
    let test = s.ctx.create_key(ACTOR, "test", "bulk").await.unwrap();
    let mut tx = s.ctx.db.pool().begin().await.unwrap();
    for i in 0..n {
        let (feed, key) = if i % 2 == 0 {
            ("stable", &stable.id)
        } else {
            ("test", &test.id)
        };
        sqlx::query(
            "INSERT INTO hosts (id, hostname, feed, kernel_release, kernel_version, build_id, level, \
             effective_version, skipped, agent_version, tags, token_hash, registration_key, \
             registered_at, last_checkin) \
             VALUES ($1, $2, $3, '6.1.0-47-cloud-amd64', '#1', $4, $5, '', '[]', '0.1.0', '[\"bulk\"]', $6, $7, $8, $8)",
        )
        .bind(format!("{i:032x}"))
        .bind(format!("bulk-{i:05}"))
        .bind(feed)
        .bind(KERNEL_A)
        .bind(level)
        .bind(format!("bulk-token-{i}"))
        .bind(key)
        .bind(T0)
        .execute(&mut *tx)
        .await
        .unwrap();
    }
    tx.commit().await.unwrap();
}

#[tokio::test]
async fn csv_reports_stream_every_host_across_chunks() {
    let s = TestServer::start().await;
    let viewer = s.token("viewer", Role::ReadOnly).await;
    s.publish_fixing(
        KERNEL_A,
        1,
        &["CVE-2024-0001", "CVE-2024-0002"],
        &["stable"],
    )
    .await;
    let n = server::api::admin::reports::CSV_CHUNK as usize * 2 + 345;
    bulk_hosts(&s, n, 0).await;
    let csv = |path: String| {
        let s = &s;
        let viewer = &viewer;
        async move {
            let r = s
                .http
                .get(format!("{}{path}", s.url))
                .bearer_auth(viewer)
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), StatusCode::OK, "{path}");
            assert_eq!(r.headers()["content-type"], "text/csv; charset=utf-8");
            r.text().await.unwrap()
        }
    };
    let hosts = csv("/api/v1/admin/reports/hosts?format=csv".into()).await;
    let lines: Vec<&str> = hosts.split_terminator("\r\n").collect();
    assert_eq!(lines.len(), n + 1, "header and one line per host");
    assert!(lines[0].starts_with("hostname,host_id,"));
    let names: BTreeSet<&str> = lines[1..]
        .iter()
        .map(|l| l.split(',').next().unwrap())
        .collect();
    assert_eq!(names.len(), n, "every host once");
    assert!(lines[1..].windows(2).all(|w| w[0] < w[1]), "by hostname");
    // Every exposure: two CVEs per host.
    let exposures = csv("/api/v1/admin/reports/compliance?format=csv".into()).await;
    assert_eq!(exposures.split_terminator("\r\n").count(), 2 * n + 1);
    // Filters apply to the stream.
    let test_only = csv("/api/v1/admin/reports/hosts?format=csv&feed=test".into()).await;
    assert_eq!(test_only.split_terminator("\r\n").count(), n / 2 + 1);
    // The JSON pages hold the same hosts.
    let paged = walk(
        &s,
        "/api/v1/admin/reports/hosts?limit=1000",
        "hosts",
        "host_id",
        &viewer,
    )
    .await;
    assert_eq!(paged.len(), n);
    let (sum, _) = get(&s, "/api/v1/admin/reports/summary", &viewer).await;
    assert_eq!(sum["hosts_total"], n);
    assert_eq!(sum["exposures"], 2 * n);
}

#[tokio::test]
async fn summary_counted_by_group_agrees_as_hosts_check_in_move_and_retire() {
    let s = TestServer::start().await;
    let viewer = s.token("viewer", Role::ReadOnly).await;
    let policy = Policy::default();
    let check = |what: &'static str| {
        let s = &s;
        let viewer = &viewer;
        async move {
            // The gauges reuse the summary, cached FLEET_MAX_AGE seconds:
            // move past that first.
            s.clock.advance(server::api::metrics::FLEET_MAX_AGE + 1);
            let oracle = s.ctx.compliance(policy).await.unwrap();
            let (mut sum, _) = get(s, "/api/v1/admin/reports/summary", viewer).await;
            let mut want = json!(oracle.summary);
            sum["generated_at"] = Value::Null;
            want["generated_at"] = Value::Null;
            assert_eq!(sum, want, "{what}");
            // And with the standing of each host, paged.
            let statuses = walk(
                s,
                "/api/v1/admin/reports/hosts?limit=2",
                "hosts",
                "status",
                viewer,
            )
            .await;
            for status in ["protected", "exposed", "unsupported"] {
                let n = statuses.iter().filter(|s| *s == status).count();
                assert_eq!(sum[format!("hosts_{status}")], n, "{what}: {status}");
            }
            let (cves, _) = get(s, "/api/v1/admin/reports/cves", viewer).await;
            assert_eq!(cves["cves"], json!(oracle.cves), "{what}");
            let metrics = s
                .http
                .get(format!("{}/metrics", s.url))
                .send()
                .await
                .unwrap()
                .text()
                .await
                .unwrap();
            for (gauge, n) in [
                ("noreboot_hosts_total", oracle.summary.hosts_total),
                ("noreboot_hosts_stale", oracle.summary.hosts_stale),
                ("noreboot_hosts_breaching", oracle.summary.hosts_breaching),
                (
                    "noreboot_hosts{state=\"exposed\"}",
                    oracle.summary.hosts_exposed,
                ),
            ] {
                let line = format!("\n{gauge} {n}\n");
                assert!(metrics.contains(&line), "{what}: {line}");
            }
        }
    };
    s.clock.set(T0 - 40 * 86_400);
    s.publish_fixing(KERNEL_A, 1, &["CVE-2024-0001"], &["stable"])
        .await;
    s.clock.set(T0 - 5 * 86_400);
    s.publish_fixing(KERNEL_A, 2, &["CVE-2024-0001", "CVE-2024-0002"], &["test"])
        .await;
    s.clock.set(T0);
    check("no hosts").await;
    let stable = s.reg_key("stable").await;
    let hosts: Vec<_> = {
        let mut v = Vec::new();
        for (i, build) in [KERNEL_A, KERNEL_A, KERNEL_A, KERNEL_B, KERNEL_A]
            .iter()
            .enumerate()
        {
            v.push(s.register(&stable, &format!("h{i}"), build).await);
        }
        v
    };
    check("registered").await;
    s.checkin(&hosts[0].token, KERNEL_A, 1).await;
    s.checkin(&hosts[1].token, KERNEL_A, 2).await;
    s.checkin(&hosts[3].token, KERNEL_B, 0).await;
    check("checked in").await;
    s.ctx
        .move_host(ACTOR, &hosts[0].host_id, "test")
        .await
        .unwrap();
    s.checkin(&hosts[0].token, KERNEL_A, 2).await;
    check("moved and updated").await;
    // A host reboots into another kernel.
    s.checkin(&hosts[2].token, KERNEL_B, 0).await;
    check("new kernel").await;
    s.ctx.retire_host(ACTOR, &hosts[1].host_id).await.unwrap();
    check("retired").await;
    s.clock.advance(2 * 86_400);
    check("stale").await;
    s.publish_fixing(KERNEL_B, 1, &["CVE-2024-0003"], &["stable"])
        .await;
    check("a level for B").await;
}

#[tokio::test]
async fn audit_retired_and_report_lists_page() {
    let s = TestServer::start().await;
    let admin = s.token("ops", Role::Admin).await;
    for i in 0..12 {
        s.ctx.create_feed(ACTOR, &format!("f{i}"), 0).await.unwrap();
    }
    let all = s.ctx.audit_log(1000).await.unwrap();
    let ids = walk(&s, "/api/v1/admin/audit?limit=5", "audit", "id", &admin).await;
    let want: Vec<String> = all.iter().map(|a| a.id.to_string()).collect();
    assert_eq!(ids, want, "newest first, each once");
    let feeds = walk(
        &s,
        "/api/v1/admin/audit?limit=5&action=feed-create",
        "audit",
        "target",
        &admin,
    )
    .await;
    assert_eq!(feeds.len(), 12);
    assert_eq!(feeds[0], "f11");

    let key = s.reg_key("stable").await;
    let mut retired = Vec::new();
    for i in 0..7 {
        let h = s.register(&key, &format!("r{i}"), KERNEL_A).await;
        s.clock.advance(if i % 3 == 0 { 0 } else { 60 });
        s.ctx.retire_host(ACTOR, &h.host_id).await.unwrap();
        retired.push(h.host_id);
    }
    let listed = walk(
        &s,
        "/api/v1/admin/hosts/retired?limit=3",
        "hosts",
        "id",
        &admin,
    )
    .await;
    let got: BTreeSet<&String> = listed.iter().collect();
    assert_eq!(listed.len(), 7);
    assert_eq!(got, retired.iter().collect());

    let (body, link) = get(&s, "/api/v1/admin/reports?limit=2", &admin).await;
    assert_eq!(body["reports"], json!([]));
    assert!(body["next"].is_null() && link.is_none());
}
