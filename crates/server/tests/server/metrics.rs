//! `GET /metrics`: parsed as Prometheus text exposition (every sample's
//! family declared by `# TYPE` first, names and labels well formed), and
//! its figures checked against what the test did; the optional token.

use std::collections::BTreeMap;

use reqwest::{Method, StatusCode};
use serde_json::json;
use server::api::Settings;

use crate::common::*;
use crate::reports::fleet;

/// Samples by `name{labels}` as written (labels sorted by the parser).
fn parse(text: &str) -> BTreeMap<String, f64> {
    let mut types: BTreeMap<String, String> = BTreeMap::new();
    let mut samples = BTreeMap::new();
    let is_name = |n: &str| {
        !n.is_empty()
            && n.chars().enumerate().all(|(i, c)| {
                c.is_ascii_alphabetic() || c == '_' || c == ':' || (i > 0 && c.is_ascii_digit())
            })
    };
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, kind) = rest.split_once(' ').unwrap();
            assert!(is_name(name), "{line}");
            assert!(["counter", "gauge"].contains(&kind), "{line}");
            assert!(
                types.insert(name.into(), kind.into()).is_none(),
                "dup {line}"
            );
            continue;
        }
        if line.starts_with("# HELP ") {
            continue;
        }
        assert!(
            !line.starts_with('#') && !line.is_empty(),
            "stray line {line:?}"
        );
        let (series, value) = line.rsplit_once(' ').unwrap();
        let value: f64 = value.parse().unwrap_or_else(|_| panic!("value in {line}"));
        let (name, labels) = match series.split_once('{') {
            None => (series, String::new()),
            Some((n, l)) => {
                let l = l.strip_suffix('}').unwrap_or_else(|| panic!("{line}"));
                let mut pairs = Vec::new();
                let mut rest = l;
                while !rest.is_empty() {
                    let (k, v) = rest.split_once("=\"").unwrap_or_else(|| panic!("{line}"));
                    assert!(is_name(k), "{line}");
                    // The value runs to the first unescaped quote.
                    let mut end = None;
                    let mut esc = false;
                    for (i, c) in v.char_indices() {
                        match (esc, c) {
                            (true, _) => esc = false,
                            (false, '\\') => esc = true,
                            (false, '"') => {
                                end = Some(i);
                                break;
                            }
                            _ => {}
                        }
                    }
                    let end = end.unwrap_or_else(|| panic!("{line}"));
                    pairs.push(format!("{k}=\"{}\"", &v[..end]));
                    rest = v[end + 1..].strip_prefix(',').unwrap_or(&v[end + 1..]);
                }
                pairs.sort();
                (n, pairs.join(","))
            }
        };
        assert!(types.contains_key(name), "sample before its # TYPE: {line}");
        let key = if labels.is_empty() {
            name.to_string()
        } else {
            format!("{name}{{{labels}}}")
        };
        assert!(samples.insert(key, value).is_none(), "duplicate {line}");
    }
    samples
}

#[tokio::test]
async fn metrics_count_hosts_levels_checkins_reports_refusals_and_requests() {
    let (s, _) = fleet().await;
    // A refused registration and a report.
    let (st, _) = s
        .call(
            Method::POST,
            "/api/v1/register",
            None,
            Some(Body::Json(
                serde_json::to_value(register_request("nrk_bogus", "x", KERNEL_A)).unwrap(),
            )),
        )
        .await;
    assert_eq!(st, StatusCode::UNAUTHORIZED);
    let key = s.reg_key("stable").await;
    let h = s.register(&key, "reporter", KERNEL_A).await;
    let (st, _) = s
        .call(
            Method::POST,
            "/api/v1/report",
            Some(&h.token),
            Some(Body::Json(json!({
                "action": "update", "level": 2, "result": "failed", "reason": "stalled",
                "duration_ms": 5, "active_level": 0
            }))),
        )
        .await;
    assert_eq!(st, StatusCode::NO_CONTENT);
    // A result no agent sends: counted, without a series of its own.
    let (st, _) = s
        .call(
            Method::POST,
            "/api/v1/report",
            Some(&h.token),
            Some(Body::Json(json!({
                "action": "update", "level": 2, "result": "exploded",
                "duration_ms": 5, "active_level": 0
            }))),
        )
        .await;
    assert_eq!(st, StatusCode::NO_CONTENT);
    s.call(Method::GET, "/no/such/path", None, None).await;

    let r = s
        .http
        .get(format!("{}/metrics", s.url))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert!(r.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/plain; version=0.0.4"));
    let m = parse(&r.text().await.unwrap());
    let get = |k: &str| *m.get(k).unwrap_or_else(|| panic!("no {k} in {m:#?}"));
    assert_eq!(get("noreboot_hosts{state=\"protected\"}"), 1.0);
    // `reporter` (level 0, on KERNEL_A) is exposed too.
    assert_eq!(get("noreboot_hosts{state=\"exposed\"}"), 3.0);
    assert_eq!(get("noreboot_hosts{state=\"unsupported\"}"), 1.0);
    assert_eq!(get("noreboot_hosts_total"), 5.0);
    assert_eq!(get("noreboot_levels_published"), 2.0);
    // KERNEL_B, which `EVIL` runs, has no level.
    assert_eq!(get("noreboot_uncovered_builds"), 1.0);
    assert_eq!(get("noreboot_checkins_total"), 3.0);
    assert_eq!(get("noreboot_host_reports_total{result=\"failed\"}"), 1.0);
    assert_eq!(get("noreboot_host_reports_total{result=\"other\"}"), 1.0);
    // Results nobody reported yet are shown at zero.
    assert_eq!(
        get("noreboot_host_reports_total{result=\"rolled-back\"}"),
        0.0
    );
    assert!(!m.keys().any(|k| k.contains("exploded")), "{m:#?}");
    assert_eq!(get("noreboot_http_server_errors_total"), 0.0);
    assert_eq!(
        get("noreboot_registration_refusals_total{reason=\"unauthorized\"}"),
        1.0
    );
    assert_eq!(
        get("noreboot_registration_refusals_total{reason=\"rate_limited\"}"),
        0.0
    );
    assert_eq!(
        get("noreboot_http_requests_total{method=\"POST\",route=\"/api/v1/checkin\",status=\"200\"}"),
        3.0
    );
    assert_eq!(
        get("noreboot_http_requests_total{method=\"POST\",route=\"/api/v1/register\",status=\"401\"}"),
        1.0
    );
    assert_eq!(
        get("noreboot_http_requests_total{method=\"GET\",route=\"unmatched\",status=\"404\"}"),
        1.0
    );
}

#[tokio::test]
async fn metrics_token_when_configured() {
    let s = TestServer::start_with(Settings {
        metrics_token: Some("scrape-secret".into()),
        ..Settings::default()
    })
    .await;
    let url = format!("{}/metrics", s.url);
    let r = s.http.get(&url).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    let r = s.http.get(&url).bearer_auth("wrong").send().await.unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    let r = s
        .http
        .get(&url)
        .bearer_auth("scrape-secret")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    parse(&r.text().await.unwrap());
}

/// Issue 16, point 7: invented HTTP methods all count as `other`, so a
/// client cannot grow the series (and the process) without bound.
#[tokio::test]
async fn invented_methods_share_one_series() {
    let s = TestServer::start().await;
    for i in 0..100 {
        let m = Method::from_bytes(format!("INVENTED{i}").as_bytes()).unwrap();
        let r = s
            .http
            .request(m, format!("{}/api/v1/checkin", s.url))
            .send()
            .await
            .unwrap();
        assert!(r.status().is_client_error(), "{}", r.status());
    }
    let text = s
        .http
        .get(format!("{}/metrics", s.url))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(!text.contains("INVENTED"), "{text}");
    let samples = parse(&text);
    let other: f64 = samples
        .iter()
        .filter(|(k, _)| k.starts_with("noreboot_http_requests_total{method=\"other\""))
        .map(|(_, v)| v)
        .sum();
    assert_eq!(other, 100.0, "{text}");
}

/// Issue 16, point 8: the fleet figures are computed once for any number
/// of concurrent scrapes and reused for FLEET_MAX_AGE seconds, so scrapes
/// cannot starve the database; a newer computation then shows changes.
#[tokio::test]
async fn concurrent_scrapes_share_one_fleet_computation() {
    let s = TestServer::start().await;
    s.publish(KERNEL_A, 1, &["stable"]).await;
    let key = s.reg_key("stable").await;
    s.register(&key, "web1", KERNEL_A).await;
    let url = format!("{}/metrics", s.url);
    let scrapes = (0..32).map(|_| {
        let (http, url) = (s.http.clone(), url.clone());
        tokio::spawn(async move { http.get(url).send().await.unwrap().text().await.unwrap() })
    });
    let mut totals = Vec::new();
    for t in scrapes {
        totals.push(parse(&t.await.unwrap())["noreboot_hosts_total"]);
    }
    assert!(totals.iter().all(|t| *t == 1.0), "{totals:?}");
    let computed = || {
        s.state
            .metrics
            .fleet_computations
            .load(std::sync::atomic::Ordering::Relaxed)
    };
    assert_eq!(computed(), 1);
    // A host registers: within the age, the figures are the shared ones...
    s.register(&key, "web2", KERNEL_A).await;
    let text = s.http.get(&url).send().await.unwrap().text().await.unwrap();
    assert_eq!(parse(&text)["noreboot_hosts_total"], 1.0);
    assert_eq!(computed(), 1);
    // ...and once they are older, computed again.
    s.clock.advance(server::api::metrics::FLEET_MAX_AGE);
    let text = s.http.get(&url).send().await.unwrap().text().await.unwrap();
    assert_eq!(parse(&text)["noreboot_hosts_total"], 2.0);
    assert_eq!(computed(), 2);
}
