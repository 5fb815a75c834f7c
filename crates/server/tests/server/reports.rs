//! Compliance reports (`report`): who is exposed to which CVE and for how
//! long against the policy, over HTTP as JSON and CSV and from the admin
//! CLI; with the clock moved rather than waited for.

use std::process::Command;

use reqwest::{Method, StatusCode};
use serde_json::Value;
use server::model::Role;

use crate::common::*;

const DAY: i64 = 86_400;
/// The host name a hostile host might pick.
pub const EVIL: &str = "<script>alert(1)</script>";

/// A fleet: KERNEL_A has level 1 (CVE-2024-0001, published 40 days ago)
/// and level 2 (CVE-2024-0002, 10 days ago); KERNEL_B has no levels.
/// Hosts: `old` at level 0 (exposed to both, past a 30-day policy),
/// `mid` at 1 (exposed to 0002 only), `new` at 2 (protected), and
/// `EVIL` on KERNEL_B (unsupported, never checked in: stale).
pub async fn fleet() -> (TestServer, String) {
    let s = TestServer::start().await;
    s.clock.set(T0 - 40 * DAY);
    s.publish_fixing(KERNEL_A, 1, &["CVE-2024-0001"], &["stable"])
        .await;
    s.clock.set(T0 - 10 * DAY);
    s.publish_fixing(KERNEL_A, 2, &["CVE-2024-0002"], &["stable"])
        .await;
    s.clock.set(T0);
    let key = s.reg_key("stable").await;
    for (name, level) in [("old", 0), ("mid", 1), ("new", 2)] {
        let h = s.register(&key, name, KERNEL_A).await;
        s.checkin(&h.token, KERNEL_A, level).await;
    }
    s.register(&key, EVIL, KERNEL_B).await;
    let viewer = s.token("viewer", Role::ReadOnly).await;
    (s, viewer)
}

async fn get_text(s: &TestServer, path: &str, token: &str) -> (StatusCode, String, String) {
    let r = s
        .http
        .get(format!("{}{path}", s.url))
        .bearer_auth(token)
        .send()
        .await
        .unwrap();
    let status = r.status();
    let ct = r
        .headers()
        .get("content-type")
        .map(|v| v.to_str().unwrap().to_string())
        .unwrap_or_default();
    (status, ct, r.text().await.unwrap())
}

fn host<'a>(hosts: &'a Value, name: &str) -> &'a Value {
    hosts
        .as_array()
        .unwrap()
        .iter()
        .find(|h| h["hostname"] == name)
        .unwrap()
}

#[tokio::test]
async fn exposure_days_and_policy_breaches_per_host_cve_and_fleet() {
    let (s, viewer) = fleet().await;
    let (st, sum) = s
        .call(
            Method::GET,
            "/api/v1/admin/reports/summary",
            Some(&viewer),
            None,
        )
        .await;
    assert_eq!(st, StatusCode::OK, "{sum}");
    assert_eq!(sum["hosts_total"], 4);
    assert_eq!(sum["hosts_protected"], 1);
    assert_eq!(sum["hosts_exposed"], 2);
    assert_eq!(sum["hosts_unsupported"], 1);
    assert_eq!(sum["hosts_breaching"], 1);
    assert_eq!(sum["hosts_stale"], 1);
    assert_eq!(sum["exposures"], 3);
    assert_eq!(sum["cves_open"], 2);
    assert_eq!(sum["policy_days"], 30);

    let (_, h) = s
        .call(
            Method::GET,
            "/api/v1/admin/reports/hosts",
            Some(&viewer),
            None,
        )
        .await;
    let hosts = &h["hosts"];
    let old = host(hosts, "old");
    assert_eq!(old["status"], "exposed");
    assert_eq!(
        old["exposed_cves"],
        serde_json::json!(["CVE-2024-0001", "CVE-2024-0002"])
    );
    assert_eq!(old["max_days_exposed"], 40);
    assert_eq!(old["breach"], true);
    let mid = host(hosts, "mid");
    assert_eq!(mid["exposed_cves"], serde_json::json!(["CVE-2024-0002"]));
    assert_eq!(mid["max_days_exposed"], 10);
    assert_eq!(mid["breach"], false);
    assert_eq!(host(hosts, "new")["status"], "protected");
    assert_eq!(host(hosts, EVIL)["status"], "unsupported");
    assert_eq!(host(hosts, EVIL)["stale"], true);
    assert_eq!(host(hosts, "new")["stale"], false);

    let (_, c) = s
        .call(
            Method::GET,
            "/api/v1/admin/reports/compliance",
            Some(&viewer),
            None,
        )
        .await;
    let e = &c["exposures"];
    assert_eq!(e.as_array().unwrap().len(), 3);
    // By hostname, then CVE: mid's one, then old's two.
    assert_eq!(e[0]["hostname"], "mid");
    let e = &c["exposures"][1];
    assert_eq!(e["hostname"], "old");
    assert_eq!(e["cve"], "CVE-2024-0001");
    assert_eq!(e["fixed_in_level"], 1);
    assert_eq!(e["days_exposed"], 40);
    assert_eq!(e["fix_published_at"], "2025-05-06T15:06:40Z");
    assert_eq!(e["breach"], true);

    let (_, cv) = s
        .call(
            Method::GET,
            "/api/v1/admin/reports/cves",
            Some(&viewer),
            None,
        )
        .await;
    let c1 = &cv["cves"][0];
    assert_eq!(c1["cve"], "CVE-2024-0001");
    assert_eq!(c1["hosts_fixed"], 2);
    assert_eq!(c1["hosts_exposed"], 1);
    assert_eq!(c1["hosts_breaching"], 1);
    assert_eq!(cv["cves"][1]["hosts_exposed"], 2);

    // A stricter policy per request; time passing makes `mid` breach too.
    let (_, sum) = s
        .call(
            Method::GET,
            "/api/v1/admin/reports/summary?policy_days=5",
            Some(&viewer),
            None,
        )
        .await;
    assert_eq!(sum["hosts_breaching"], 2);
    s.clock.advance(21 * DAY);
    let (_, sum) = s
        .call(
            Method::GET,
            "/api/v1/admin/reports/summary",
            Some(&viewer),
            None,
        )
        .await;
    assert_eq!(sum["hosts_breaching"], 2);
    // Nobody checked in for 21 days.
    assert_eq!(sum["hosts_stale"], 4);
}

#[tokio::test]
async fn csv_reports_and_bad_queries() {
    let (s, viewer) = fleet().await;
    let (st, ct, body) = get_text(&s, "/api/v1/admin/reports/hosts?format=csv", &viewer).await;
    assert_eq!(st, StatusCode::OK);
    assert_eq!(ct, "text/csv; charset=utf-8");
    let lines: Vec<&str> = body.split("\r\n").filter(|l| !l.is_empty()).collect();
    assert_eq!(lines.len(), 5, "{body}");
    assert!(lines[0].starts_with("hostname,host_id,feed,"));
    assert!(lines
        .iter()
        .any(|l| l.starts_with("old,")
            && l.contains(",exposed,CVE-2024-0001 CVE-2024-0002,40,true,")));
    for path in ["compliance", "cves", "summary"] {
        let (st, ct, body) = get_text(
            &s,
            &format!("/api/v1/admin/reports/{path}?format=csv"),
            &viewer,
        )
        .await;
        assert_eq!(st, StatusCode::OK, "{path}");
        assert!(ct.starts_with("text/csv"));
        assert!(body.lines().count() >= 2, "{path}: {body}");
    }
    let (st, ct, _) = get_text(&s, "/api/v1/admin/reports/summary?format=json", &viewer).await;
    assert_eq!(st, StatusCode::OK);
    assert!(ct.starts_with("application/json"));

    for bad in [
        "format=xml",
        "policy_days=-1",
        "policy_days=99999999999999999999",
        "stale_hours=0",
        "limit=0",
        "cursor=zz",
        "status=nope",
        "bogus=3",
    ] {
        let (st, body) = s
            .call(
                Method::GET,
                &format!("/api/v1/admin/reports/hosts?{bad}"),
                Some(&viewer),
                None,
            )
            .await;
        assert_eq!(st, StatusCode::BAD_REQUEST, "{bad}: {body}");
        assert!(body["error"].is_string(), "{bad}: {body}");
    }
    let (st, _) = s
        .call(Method::GET, "/api/v1/admin/reports/summary", None, None)
        .await;
    assert_eq!(st, StatusCode::UNAUTHORIZED);
    let (st, _) = s
        .call(
            Method::GET,
            "/api/v1/admin/reports/summary",
            Some("nra_wrong"),
            None,
        )
        .await;
    assert_eq!(st, StatusCode::UNAUTHORIZED);
}

/// The stdout of `noreboot-server admin report ARGS` on `s`'s database.
fn report_cli(s: &TestServer, args: &[&str]) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_noreboot-server"))
        .arg("admin")
        .args(s.storage.args())
        .args(["report"])
        .args(args)
        .env("NOREBOOT_LOG", "warn")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

#[tokio::test]
async fn admin_cli_prints_reports_as_table_csv_and_json() {
    let (s, _) = fleet().await;
    let run = |args: &[&str]| report_cli(&s, args);
    // The binary's clock is the real one: everything published "in 2025"
    // has been exposed for longer than any policy by now.
    let table = run(&["hosts"]);
    assert!(table.starts_with("HOSTNAME"), "{table}");
    assert!(
        table.contains(
            "4 hosts: 1 protected, 2 exposed, 1 unsupported, 2 breaching the 30-day policy"
        ),
        "{table}"
    );
    let csv = run(&["cves", "--csv"]);
    assert!(csv.starts_with("cve,kernels,hosts_fixed,"), "{csv}");
    assert!(csv.contains("CVE-2024-0002,1,1,2,2,"), "{csv}");
    let json: Value =
        serde_json::from_str(&run(&["summary", "--json", "--policy-days", "3650"])).unwrap();
    assert_eq!(json["hosts_breaching"], 0);
    assert_eq!(json["hosts_exposed"], 2);
    let exposures = run(&["compliance"]);
    assert_eq!(
        exposures.lines().filter(|l| l.starts_with("old ")).count(),
        2,
        "{exposures}"
    );
    let summary = run(&["summary"]);
    assert!(summary.contains("hosts_total"), "{summary}");
}

/// Issue 18, point 9: a report with no rows is its summary line alone,
/// not a table header over nothing (the demo's last step printed one);
/// CSV keeps its header, which names the columns of an empty file.
#[tokio::test]
async fn admin_cli_prints_no_table_header_over_no_rows() {
    let s = TestServer::start().await;
    s.publish(KERNEL_A, 1, &["stable"]).await;
    let key = s.reg_key("stable").await;
    let h = s.register(&key, "web1", KERNEL_A).await;
    s.checkin(&h.token, KERNEL_A, 1).await;
    let out = report_cli(&s, &["compliance"]);
    assert_eq!(out.lines().count(), 1, "{out}");
    assert!(out.starts_with("1 hosts: 1 protected, 0 exposed"), "{out}");
    let csv = report_cli(&s, &["compliance", "--csv"]);
    assert!(
        csv.starts_with("hostname,") && csv.lines().count() == 1,
        "{csv}"
    );
}
