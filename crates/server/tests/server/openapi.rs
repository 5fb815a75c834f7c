//! The OpenAPI document against the router, both ways: every route that
//! `api::router` declares (read from its source, so a new route cannot be
//! forgotten) is documented with its methods, and every documented
//! operation reaches a handler — not the router's "no such endpoint" 404
//! nor a 405. Every body is described by a named schema that resolves,
//! and every answer the walk gets has a documented status, its JSON
//! matching that status's schema.

use std::collections::BTreeSet;

use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
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
    let bytes = s.bundle(KERNEL_A, 1, &["CVE-2024-0001"]);
    s.ctx
        .publish(ACTOR, bytes.clone(), &["stable".into()])
        .await
        .unwrap();
    let admin = s.token("ops", Role::Admin).await;
    // Rows in every list, so that their items are checked too: an exposed
    // host with a report, a retired one, a host on a kernel no level
    // covers.
    let key = s.reg_key("stable").await;
    let host = s.register(&key, "web-1", KERNEL_A).await;
    s.checkin(&host.token, KERNEL_A, 0).await;
    let report = json!({"action": "apply", "level": 1, "result": "failed", "reason": "test",
        "stalled_tasks": ["kworker (pid 1) in [stack]"], "duration_ms": 5, "active_level": 0});
    let (st, _) = s
        .call(
            Method::POST,
            "/api/v1/report",
            Some(&host.token),
            Some(Body::Json(report)),
        )
        .await;
    assert_eq!(st, StatusCode::NO_CONTENT);
    let old = s.register(&key, "old-1", KERNEL_A).await;
    s.ctx.retire_host(ACTOR, &old.host_id).await.unwrap();
    s.register(&key, "db-1", &"f".repeat(40)).await;

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
            // Bodies are named types: JSON and forms by a `$ref` (or an
            // array of them), everything else bytes or a string.
            let mut bodies = vec![("request".to_string(), &op["requestBody"])];
            for (status, r) in op["responses"].as_object().unwrap() {
                bodies.push((status.clone(), r));
            }
            for (which, body) in bodies {
                // OpenAPI requires it of every response.
                assert!(
                    which == "request"
                        || body["description"].as_str().is_some_and(|d| !d.is_empty()),
                    "{method} {path} {which}: no description"
                );
                let Some(content) = body["content"].as_object() else {
                    continue;
                };
                for (media, c) in content {
                    let schema = &c["schema"];
                    let named = schema.get("$ref").or(schema["items"].get("$ref"));
                    if media == "application/json" || media.ends_with("x-www-form-urlencoded") {
                        let r = named.and_then(Value::as_str);
                        let target = r.and_then(|r| resolve(&doc, r));
                        assert!(
                            target.is_some(),
                            "{method} {path} {which} {media}: not a named schema: {schema}"
                        );
                        // Field by field, not "some object" (but this
                        // document's own schema is the OpenAPI standard's).
                        let target = target.unwrap();
                        assert!(
                            path == "/api/v1/openapi.json"
                                || ["properties", "items", "allOf"]
                                    .iter()
                                    .any(|k| target.get(k).is_some()),
                            "{method} {path} {which} {media}: {r:?} has no fields: {target}"
                        );
                    } else {
                        // Bytes (no schema: OpenAPI 3.1's binary), or text.
                        assert!(
                            schema.is_null() || schema["type"] == "string",
                            "{method} {path} {which} {media}: {schema}"
                        );
                    }
                }
            }
            // Who may call it: named schemes that exist.
            for requirement in op["security"].as_array().expect("security") {
                for scheme in requirement.as_object().unwrap().keys() {
                    assert!(
                        doc["components"]["securitySchemes"][scheme].is_object(),
                        "{method} {path}: {scheme}"
                    );
                }
            }
            documented.insert((method.clone(), path.clone()));
        }
    }
    // Every reference anywhere resolves.
    let mut refs = Vec::new();
    collect_refs(&doc, &mut refs);
    assert!(refs.len() > 40, "{refs:?}");
    for r in &refs {
        assert!(resolve(&doc, r).is_some(), "{r} does not resolve");
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
    let mut checked = 0;
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
        let ct = resp
            .headers()
            .get("content-type")
            .map(|v| v.to_str().unwrap().to_string())
            .unwrap_or_default();
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
        // The answer is documented, and its JSON is what the document says.
        let responses = &doc["paths"][path][method]["responses"];
        let range = format!("{}XX", status.as_u16() / 100);
        let documented = [status.as_str(), range.as_str()]
            .into_iter()
            .find_map(|k| responses.get(k))
            .unwrap_or_else(|| panic!("{method} {path}: {status} is not documented"));
        if ct.starts_with("application/json") {
            let schema = &documented["content"]["application/json"]["schema"];
            assert!(
                schema.is_object(),
                "{method} {path}: {status} has no JSON schema"
            );
            let value: Value = serde_json::from_str(&body).unwrap();
            if let Err(e) = conforms(&doc, &value, schema, "$") {
                panic!("{method} {path}: {status}: {e}\n{body}");
            }
            checked += 1;
        }
    }
    assert!(checked > 20, "only {checked} JSON answers checked");
}

/// The `#/...` pointer `r` in `doc`.
fn resolve<'a>(doc: &'a Value, r: &str) -> Option<&'a Value> {
    doc.pointer(r.strip_prefix('#')?).filter(|v| v.is_object())
}

fn collect_refs(v: &Value, out: &mut Vec<String>) {
    match v {
        Value::Object(m) => {
            for (k, v) in m {
                match (k.as_str(), v) {
                    ("$ref", Value::String(r)) => out.push(r.clone()),
                    _ => collect_refs(v, out),
                }
            }
        }
        Value::Array(a) => a.iter().for_each(|v| collect_refs(v, out)),
        _ => {}
    }
}

/// Whether `v` (at `at`) is an instance of `schema`, for the keywords the
/// document uses: `$ref`, `oneOf`, `allOf`, `type`, `properties` and
/// `required` (with no properties beyond those named), `items`.
fn conforms(doc: &Value, v: &Value, schema: &Value, at: &str) -> Result<(), String> {
    conforms_in(doc, v, schema, at, false)
}

/// [`conforms`]; `part`: `schema` is one part of an `allOf`, which names
/// only some of the properties.
fn conforms_in(doc: &Value, v: &Value, schema: &Value, at: &str, part: bool) -> Result<(), String> {
    if let Some(r) = schema["$ref"].as_str() {
        let target = resolve(doc, r).ok_or(format!("{at}: {r} does not resolve"))?;
        return conforms_in(doc, v, target, at, part);
    }
    if let Some(any) = schema["oneOf"].as_array() {
        if !any.iter().any(|s| conforms(doc, v, s, at).is_ok()) {
            return Err(format!("{at}: {v} matches none of {schema}"));
        }
    }
    let all = schema["allOf"].as_array();
    for s in all.into_iter().flatten() {
        conforms_in(doc, v, s, at, true)?;
    }
    let types: Vec<&str> = match &schema["type"] {
        Value::String(t) => vec![t.as_str()],
        Value::Array(ts) => ts.iter().filter_map(Value::as_str).collect(),
        _ => Vec::new(),
    };
    let is = |t: &str| match t {
        "null" => v.is_null(),
        "boolean" => v.is_boolean(),
        "integer" => v.is_i64() || v.is_u64(),
        "number" => v.is_number(),
        "string" => v.is_string(),
        "array" => v.is_array(),
        "object" => v.is_object(),
        _ => false,
    };
    if !types.is_empty() && !types.iter().any(|t| is(t)) {
        return Err(format!("{at}: {v} is not {types:?}"));
    }
    if let (Some(props), Some(obj)) = (schema["properties"].as_object(), v.as_object()) {
        for name in schema["required"].as_array().into_iter().flatten() {
            let name = name.as_str().unwrap();
            if !obj.contains_key(name) {
                return Err(format!("{at}: no {name}"));
            }
        }
        for (k, field) in obj {
            match props.get(k) {
                Some(s) => conforms(doc, field, s, &format!("{at}.{k}"))?,
                // Fields of another part of an `allOf` are checked there.
                None if all.is_none() && !part => {
                    return Err(format!("{at}: {k} is not documented"))
                }
                None => {}
            }
        }
    }
    if let (Some(items), Some(arr)) = (schema.get("items"), v.as_array()) {
        for (i, item) in arr.iter().enumerate() {
            conforms(doc, item, items, &format!("{at}[{i}]"))?;
        }
    }
    Ok(())
}
