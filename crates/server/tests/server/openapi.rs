//! The OpenAPI document against the router, both ways: every route that
//! `api::router` declares (read from its source, so a new route cannot be
//! forgotten) is documented with its methods, and every documented
//! operation reaches a handler — not the router's "no such endpoint" 404
//! nor a 405.

use std::collections::BTreeSet;

use reqwest::{Method, StatusCode};
use serde_json::json;
use server::blobs::sha256_hex;
use server::model::Role;

use crate::common::*;

/// (method, path) pairs declared in `src/api/mod.rs`'s `router()`.
fn routes_in_source() -> BTreeSet<(String, String)> {
    let src =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/src/api/mod.rs")).unwrap();
    let body = &src[src.find("pub fn router(").unwrap()..];
    let body = &body[..body.find("\n}\n").unwrap()];
    // Routes before `.nest(protocol::API_PREFIX, api)` are the nested ones.
    let nest_at = body.find(".nest(protocol::API_PREFIX").unwrap();
    let mut out = BTreeSet::new();
    let mut at = 0;
    while let Some(i) = body[at..].find(".route(") {
        let start = at + i;
        let rest = &body[start + ".route(".len()..];
        let rest = rest.trim_start();
        let path_end = rest[1..].find('"').unwrap() + 1;
        let path = &rest[1..path_end];
        // The route's method routers run to the next `.route(` or the nest.
        let end = rest.find(".route(").unwrap_or(rest.len());
        let end = end.min(rest.find(".nest(").unwrap_or(rest.len()));
        let methods = &rest[path_end..end];
        let prefix = if start < nest_at {
            protocol::API_PREFIX
        } else {
            ""
        };
        for m in ["get", "post", "put", "delete", "patch"] {
            let pat = format!("{m}(");
            let found = methods.match_indices(&pat).any(|(j, _)| {
                j == 0
                    || !methods.as_bytes()[j - 1].is_ascii_alphanumeric()
                        && methods.as_bytes()[j - 1] != b'_'
            });
            if found {
                out.insert((m.to_string(), format!("{prefix}{path}")));
            }
        }
        at = start + 1;
    }
    assert!(out.len() > 20, "parsed too few routes: {out:?}");
    out
}

#[tokio::test]
async fn every_route_is_documented_and_every_documented_route_is_served() {
    let s = TestServer::start().await;
    let bytes = s.bundle(KERNEL_A, 1, &[]);
    s.ctx
        .publish(ACTOR, bytes.clone(), &["stable".into()])
        .await
        .unwrap();
    let admin = s.token("ops", Role::Admin).await;

    let (st, doc) = s
        .call(Method::GET, "/api/v1/openapi.json", None, None)
        .await;
    assert_eq!(st, StatusCode::OK);
    assert_eq!(doc["openapi"], "3.1.0");
    let mut documented = BTreeSet::new();
    for (path, item) in doc["paths"].as_object().unwrap() {
        for (method, op) in item.as_object().unwrap() {
            assert!(
                op["summary"].as_str().is_some_and(|s| !s.is_empty()),
                "{method} {path}"
            );
            assert!(
                op["responses"].as_object().is_some_and(|r| !r.is_empty()),
                "{method} {path}"
            );
            // Every {param} of the path is declared.
            for seg in path.split('/').filter(|s| s.starts_with('{')) {
                let name = seg.trim_matches(|c| c == '{' || c == '}');
                assert!(
                    op["parameters"]
                        .as_array()
                        .unwrap()
                        .iter()
                        .any(|p| p["name"] == name && p["in"] == "path"),
                    "{method} {path}: {name}"
                );
            }
            // Schema references resolve.
            let text = op.to_string();
            for r in text.split("\"#/components/schemas/").skip(1) {
                let name = &r[..r.find('"').unwrap()];
                assert!(
                    doc["components"]["schemas"][name].is_object(),
                    "{method} {path}: {name}"
                );
            }
            documented.insert((method.clone(), path.clone()));
        }
    }
    let served = routes_in_source();
    let undocumented: Vec<_> = served.difference(&documented).collect();
    assert!(
        undocumented.is_empty(),
        "served but not documented: {undocumented:?}"
    );
    let unserved: Vec<_> = documented.difference(&served).collect();
    assert!(
        unserved.is_empty(),
        "documented but not in the router: {unserved:?}"
    );

    // Each documented operation reaches its handler over HTTP.
    let sha = sha256_hex(&bytes);
    let no_redirects = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    for (method, path) in &documented {
        let url = path
            .replace("{sha256}", &sha)
            .replace("{feed}", "stable")
            .replace("{kernel}", KERNEL_A)
            .replace("{id}", "0000");
        let m = Method::from_bytes(method.to_uppercase().as_bytes()).unwrap();
        let mut req = no_redirects
            .request(m.clone(), format!("{}{url}", s.url))
            .bearer_auth(&admin);
        if m == Method::POST {
            req = req.json(&json!({}));
        }
        let resp = req.send().await.unwrap();
        let status = resp.status();
        let body = resp.text().await.unwrap();
        assert_ne!(
            status,
            StatusCode::METHOD_NOT_ALLOWED,
            "{method} {path}: {body}"
        );
        assert!(
            !(status == StatusCode::NOT_FOUND && body.contains("no such endpoint")),
            "{method} {path}: {body}"
        );
        assert!(
            !status.is_server_error(),
            "{method} {path}: {status} {body}"
        );
    }
}
