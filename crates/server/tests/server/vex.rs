//! OpenVEX documents for scanners (`vex`): per host and for the fleet,
//! over HTTP and from the admin CLI, each checked against the OpenVEX
//! v0.2.0 JSON schema by a real validator (`test_support::openvex`) and
//! statement by statement against the fleet the test made.

use std::process::Command;

use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

use crate::common::*;
use crate::reports::{fleet, EVIL};

/// The package hosts on KERNEL_A (and KERNEL_B) run: release and version
/// of `common::register_request`.
const PACKAGE_A: &str = "pkg:deb/debian/linux-image-6.1.0-47-cloud-amd64@6.1.170-3?arch=amd64";
/// A third build, another package: every host on it has its fix.
const KERNEL_C: &str = "c0ffee0000c0ffee0000c0ffee0000c0ffee0000";
const PACKAGE_C: &str = "pkg:deb/debian/linux-image-6.1.0-48-cloud-amd64@6.1.172-1?arch=amd64";

/// A host on KERNEL_C, at `level`: registered and checked in with that
/// build's release and `uname -v`, whose Debian version names the package
/// (its level's manifest names none). Answers its token.
async fn host_on_c(s: &TestServer, key: &str, name: &str, level: u32) -> String {
    let mut reg = serde_json::to_value(register_request(key, name, KERNEL_C)).unwrap();
    reg["kernel"] = kernel_c();
    let (st, body) = s
        .call(
            Method::POST,
            "/api/v1/register",
            None,
            Some(Body::Json(reg)),
        )
        .await;
    assert_eq!(st, StatusCode::CREATED, "{body}");
    let token = body["token"].as_str().unwrap().to_string();
    checkin_c(s, &token, level).await;
    token
}

fn kernel_c() -> Value {
    json!({"release": "6.1.0-48-cloud-amd64",
        "version": "#1 SMP PREEMPT_DYNAMIC Debian 6.1.172-1 (2025-09-01)", "build_id": KERNEL_C})
}

async fn checkin_c(s: &TestServer, token: &str, level: u32) {
    let mut ci = serde_json::to_value(checkin_request(KERNEL_C, level)).unwrap();
    ci["kernel"] = kernel_c();
    let (st, body) = s
        .call(
            Method::POST,
            "/api/v1/checkin",
            Some(token),
            Some(Body::Json(ci)),
        )
        .await;
    assert_eq!(st, StatusCode::OK, "{body}");
}

/// The document at `path`, kept in `seen` for the schema check.
async fn vex(s: &TestServer, path: &str, token: &str, seen: &mut Vec<String>) -> Value {
    let (st, doc) = s.call(Method::GET, path, Some(token), None).await;
    assert_eq!(st, StatusCode::OK, "{path}: {doc}");
    seen.push(doc.to_string());
    doc
}

/// (CVE, product, status, level named in the notes) of each statement.
fn statements(doc: &Value) -> Vec<(String, String, String)> {
    doc["statements"]
        .as_array()
        .unwrap()
        .iter()
        .map(|st| {
            let products = st["products"].as_array().unwrap();
            assert_eq!(products.len(), 1, "{st}");
            assert_eq!(products[0]["@id"], products[0]["identifiers"]["purl"]);
            (
                st["vulnerability"]["name"].as_str().unwrap().to_string(),
                products[0]["@id"].as_str().unwrap().to_string(),
                st["status"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

fn statement<'a>(doc: &'a Value, cve: &str, product: &str) -> &'a Value {
    doc["statements"]
        .as_array()
        .unwrap()
        .iter()
        .find(|st| st["vulnerability"]["name"] == cve && st["products"][0]["@id"] == product)
        .unwrap_or_else(|| panic!("no statement on {cve} in {product}: {doc:#}"))
}

fn triple(cve: &str, product: &str, status: &str) -> (String, String, String) {
    (cve.into(), product.into(), status.into())
}

#[tokio::test]
async fn host_and_fleet_documents_state_what_each_host_runs_and_validate() {
    // KERNEL_A: level 1 fixes CVE-2024-0001, level 2 CVE-2024-0002; hosts
    // old (0), mid (1), new (2), and EVIL on KERNEL_B, which has no level
    // but is the same package.
    let (s, viewer) = fleet().await;
    let mut seen = Vec::new();
    let mut m = manifest(KERNEL_C, 1, &["CVE-2024-0001"]);
    m.kernel.release = "6.1.0-48-cloud-amd64".into();
    m.kernel.version = None;
    let bytes = bundle::Bundle::create(m, b"\x7fELF test module", &s.key, "test")
        .unwrap()
        .into_bytes();
    s.ctx
        .publish(ACTOR, bytes, &["stable".into()])
        .await
        .unwrap();
    let key = s.reg_key("stable").await;
    host_on_c(&s, &key, "c-1", 1).await;
    let c2 = host_on_c(&s, &key, "c-2", 0).await;

    let new = vex(&s, "/api/v1/admin/hosts/new/vex", &viewer, &mut seen).await;
    assert_eq!(new["@context"], "https://openvex.dev/ns/v0.2.0");
    assert_eq!(new["author"], "noreboot-server");
    assert_eq!(new["version"], 1);
    assert_eq!(
        statements(&new),
        [
            triple("CVE-2024-0001", PACKAGE_A, "fixed"),
            triple("CVE-2024-0002", PACKAGE_A, "fixed"),
        ]
    );
    let note = statement(&new, "CVE-2024-0001", PACKAGE_A)["status_notes"]
        .as_str()
        .unwrap();
    assert!(
        note.contains("level 2") && note.contains(KERNEL_A),
        "{note}"
    );

    let mid = vex(&s, "/api/v1/admin/hosts/mid/vex", &viewer, &mut seen).await;
    assert_eq!(
        statements(&mid),
        [
            triple("CVE-2024-0001", PACKAGE_A, "fixed"),
            triple("CVE-2024-0002", PACKAGE_A, "affected"),
        ]
    );
    let action = statement(&mid, "CVE-2024-0002", PACKAGE_A)["action_statement"]
        .as_str()
        .unwrap();
    assert!(action.contains("apply level 2"), "{action}");

    // Unpatched: nothing fixed, everything a level fixes is affected.
    let old = vex(&s, "/api/v1/admin/hosts/old/vex", &viewer, &mut seen).await;
    assert!(
        statements(&old).iter().all(|(_, _, st)| st == "affected"),
        "{old:#}"
    );
    assert_eq!(statements(&old).len(), 2);

    // The package version from `uname -v`, the level naming none.
    let c1 = vex(&s, "/api/v1/admin/hosts/c-1/vex", &viewer, &mut seen).await;
    assert_eq!(
        statements(&c1),
        [triple("CVE-2024-0001", PACKAGE_C, "fixed")]
    );

    // A kernel without levels: nothing to state, said so.
    let (st, body) = s
        .call(
            Method::GET,
            &format!("/api/v1/admin/hosts/{}/vex", urlencode(EVIL)),
            Some(&viewer),
            None,
        )
        .await;
    assert_eq!(st, StatusCode::NOT_FOUND, "{body}");
    assert!(
        body["error"]
            .as_str()
            .unwrap()
            .contains("no level is published"),
        "{body}"
    );
    let (st, _) = s
        .call(
            Method::GET,
            "/api/v1/admin/hosts/nobody/vex",
            Some(&viewer),
            None,
        )
        .await;
    assert_eq!(st, StatusCode::NOT_FOUND);
    let (st, _) = s.call(Method::GET, "/api/v1/admin/vex", None, None).await;
    assert_eq!(st, StatusCode::UNAUTHORIZED);
    let (st, body) = s
        .call(
            Method::GET,
            "/api/v1/admin/vex?host=new",
            Some(&viewer),
            None,
        )
        .await;
    assert_eq!(st, StatusCode::BAD_REQUEST, "{body}");

    // The fleet: a package's CVE is fixed only when every host running
    // the package has the fix (EVIL, on another build of PACKAGE_A
    // without levels, never does; c-2 lags until it applies level 1).
    let fleet = vex(&s, "/api/v1/admin/vex", &viewer, &mut seen).await;
    assert_eq!(
        statements(&fleet),
        [
            triple("CVE-2024-0001", PACKAGE_A, "affected"),
            triple("CVE-2024-0001", PACKAGE_C, "affected"),
            triple("CVE-2024-0002", PACKAGE_A, "affected"),
        ]
    );
    let lag = statement(&fleet, "CVE-2024-0001", PACKAGE_A);
    assert!(
        lag["status_notes"].as_str().unwrap().contains("2 of 4"),
        "{lag}"
    );
    let c2_doc = vex(&s, "/api/v1/admin/hosts/c-2/vex", &viewer, &mut seen).await;
    assert_eq!(
        statements(&c2_doc),
        [triple("CVE-2024-0001", PACKAGE_C, "affected")]
    );

    // Ids follow the facts: the same facts later, the same id; a host
    // that applies a level, another id, and its statement turns fixed,
    // in its document and (the last host of its package) the fleet's.
    s.clock.advance(3600);
    let again = vex(&s, "/api/v1/admin/hosts/c-2/vex", &viewer, &mut seen).await;
    assert_eq!(again["@id"], c2_doc["@id"]);
    assert_ne!(again["timestamp"], c2_doc["timestamp"]);
    checkin_c(&s, &c2, 1).await;
    let later = vex(&s, "/api/v1/admin/hosts/c-2/vex", &viewer, &mut seen).await;
    assert_ne!(later["@id"], c2_doc["@id"]);
    assert_eq!(
        statements(&later),
        [triple("CVE-2024-0001", PACKAGE_C, "fixed")]
    );
    let fleet = vex(&s, "/api/v1/admin/vex", &viewer, &mut seen).await;
    let all = statement(&fleet, "CVE-2024-0001", PACKAGE_C);
    assert_eq!(all["status"], "fixed");
    assert!(
        all["status_notes"].as_str().unwrap().contains("all 2"),
        "{all}"
    );

    // The admin CLI prints the same documents.
    for args in [vec!["vex"], vec!["vex", "--host", "new"]] {
        let out = ok(Command::new(env!("CARGO_BIN_EXE_noreboot-server"))
            .arg("admin")
            .args(s.storage.args())
            .args(&args)
            .output()
            .unwrap());
        seen.push(out.clone());
        let doc: Value = serde_json::from_str(&out).unwrap();
        let want = if args.len() == 1 { &fleet } else { &new };
        assert_eq!(statements(&doc), statements(want), "{args:?}");
    }

    // Every document the test got, by the OpenVEX schema (one run of the
    // validator).
    let docs: Vec<&str> = seen.iter().map(String::as_str).collect();
    if let Err(e) = test_support::openvex::validate_all(&docs) {
        panic!("not valid OpenVEX: {e}\n{}", docs.join("\n"));
    }
    assert_eq!(docs.len(), 11);
}

fn urlencode(s: &str) -> String {
    s.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b == b'-' {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}
