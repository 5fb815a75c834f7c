//! The admin endpoints under `/admin`: reads for any admin token, changes
//! for tokens with the admin role (a read-only token gets 403), each
//! audited under the token's name. Bodies are JSON except for publish,
//! whose body is the bundle file itself (`?feed=NAME`, repeatable). Query
//! strings are checked whole: an unknown parameter is a 400 naming it.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Path, Query, RawQuery, State};
use axum::http::StatusCode;
use serde::Deserialize;
use serde_json::{json, Value};

use super::error::ApiError;
use super::extract::{AdminRead, AdminWrite, Json};
use super::AppState;
use crate::admin::Coverage;
use crate::error::invalid;
use crate::validate;

type Answer = Result<axum::Json<Value>, ApiError>;

fn answer(v: impl serde::Serialize) -> Answer {
    Ok(axum::Json(json!(v)))
}

/// `?kernel=` filter of the level list.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LevelsQuery {
    kernel: Option<String>,
}

/// `?limit=` of the audit trail and reports; `?host=` of reports.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListQuery {
    limit: Option<i64>,
    host: Option<String>,
}

/// `POST /admin/feeds`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateFeed {
    name: String,
    #[serde(default)]
    delay_hours: i64,
}

/// `POST /admin/keys`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateKey {
    feed: String,
    #[serde(default)]
    note: String,
}

/// `POST /admin/promote`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Promote {
    kernel: String,
    level: u32,
    feed: String,
}

/// `POST /admin/pin`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Pin {
    feed: String,
    kernel: String,
    level: u32,
}

/// `POST /admin/hold`, `/admin/unpin`, `/admin/rollback`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FeedKernel {
    feed: String,
    kernel: String,
}

/// `GET /admin/hosts`.
pub async fn hosts(State(s): State<Arc<AppState>>, _: AdminRead) -> Answer {
    answer(json!({ "hosts": s.ctx.hosts().await? }))
}

/// `GET /admin/reports?host=ID&limit=N`.
pub async fn reports(
    State(s): State<Arc<AppState>>,
    _: AdminRead,
    Query(q): Query<ListQuery>,
) -> Answer {
    let reports = s
        .ctx
        .reports(q.host.as_deref(), q.limit.unwrap_or(100))
        .await?;
    answer(json!({ "reports": reports }))
}

/// `GET /admin/kernels`.
pub async fn kernels(State(s): State<Arc<AppState>>, _: AdminRead) -> Answer {
    answer(json!({ "kernels": s.ctx.kernels().await? }))
}

/// `GET /admin/kernels/reported?uncovered=true`: the builds active hosts
/// run, as a bare array (`noreboot-build release --kernels-from-server`
/// reads it).
pub async fn reported_kernels(
    State(s): State<Arc<AppState>>,
    _: AdminRead,
    RawQuery(query): RawQuery,
) -> Answer {
    let which = coverage_from_query(query.as_deref())?;
    answer(s.ctx.reported_builds(which).await?)
}

/// `uncovered=true|false`, at most once. Parsed by hand like publish's
/// `feed=`, so that a misspelt parameter is refused by its name instead of
/// silently listing every build.
fn coverage_from_query(query: Option<&str>) -> Result<Coverage, ApiError> {
    let mut uncovered = None;
    for pair in query.unwrap_or("").split('&').filter(|p| !p.is_empty()) {
        let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
        if name != "uncovered" {
            // Query strings are as long as the client likes; the message
            // is not.
            let name: String = name.chars().take(80).collect();
            return Err(invalid(format!(
                "unknown query parameter {name:?}: /admin/kernels/reported takes only `uncovered=true` or `uncovered=false`"
            ))
            .into());
        }
        if uncovered.is_some() {
            return Err(invalid("query parameter `uncovered` is given more than once").into());
        }
        uncovered = Some(match value {
            "true" => true,
            "false" => false,
            other => {
                let other: String = other.chars().take(40).collect();
                return Err(invalid(format!(
                    "query parameter `uncovered`: {other:?} is neither `true` nor `false`"
                ))
                .into());
            }
        });
    }
    Ok(if uncovered == Some(true) {
        Coverage::Uncovered
    } else {
        Coverage::All
    })
}

/// `GET /admin/levels?kernel=BUILD_ID`.
pub async fn levels(
    State(s): State<Arc<AppState>>,
    _: AdminRead,
    Query(q): Query<LevelsQuery>,
) -> Answer {
    answer(json!({ "levels": s.ctx.levels(q.kernel.as_deref()).await? }))
}

/// `GET /admin/feeds`.
pub async fn feeds(State(s): State<Arc<AppState>>, _: AdminRead) -> Answer {
    answer(json!({ "feeds": s.ctx.feeds().await? }))
}

/// `GET /admin/feeds/<feed>/kernels/<build-id>`: what the feed serves.
pub async fn feed_state(
    State(s): State<Arc<AppState>>,
    _: AdminRead,
    Path((feed, kernel)): Path<(String, String)>,
) -> Answer {
    answer(s.ctx.feed_state(&feed, &kernel).await?)
}

/// `GET /admin/audit?limit=N`: newest first.
pub async fn audit(
    State(s): State<Arc<AppState>>,
    _: AdminRead,
    Query(q): Query<ListQuery>,
) -> Answer {
    answer(json!({ "audit": s.ctx.audit_log(q.limit.unwrap_or(100)).await? }))
}

/// `GET /admin/keys`.
pub async fn keys(State(s): State<Arc<AppState>>, _: AdminRead) -> Answer {
    answer(json!({ "keys": s.ctx.keys().await? }))
}

/// `POST /admin/feeds` (201).
pub async fn create_feed(
    State(s): State<Arc<AppState>>,
    AdminWrite(who): AdminWrite,
    Json(r): Json<CreateFeed>,
) -> Result<(StatusCode, axum::Json<Value>), ApiError> {
    let feed = s.ctx.create_feed(&who.name, &r.name, r.delay_hours).await?;
    Ok((StatusCode::CREATED, axum::Json(json!(feed))))
}

/// `POST /admin/keys` (201): the secret is in this answer only.
pub async fn create_key(
    State(s): State<Arc<AppState>>,
    AdminWrite(who): AdminWrite,
    Json(r): Json<CreateKey>,
) -> Result<(StatusCode, axum::Json<Value>), ApiError> {
    let key = s.ctx.create_key(&who.name, &r.feed, &r.note).await?;
    Ok((StatusCode::CREATED, axum::Json(json!(key))))
}

/// `POST /admin/keys/<id>/revoke`.
pub async fn revoke_key(
    State(s): State<Arc<AppState>>,
    AdminWrite(who): AdminWrite,
    Path(id): Path<String>,
) -> Answer {
    answer(s.ctx.revoke_key(&who.name, &id).await?)
}

/// `POST /admin/publish?feed=F`: the body is the bundle file (201).
pub async fn publish(
    State(s): State<Arc<AppState>>,
    AdminWrite(who): AdminWrite,
    RawQuery(query): RawQuery,
    body: Bytes,
) -> Result<(StatusCode, axum::Json<Value>), ApiError> {
    let feeds = feeds_from_query(query.as_deref())?;
    let published = s.ctx.publish(&who.name, body.to_vec(), &feeds).await?;
    Ok((StatusCode::CREATED, axum::Json(json!(published))))
}

/// Feed names from `feed=a&feed=b`. Valid names need no percent-decoding,
/// and anything else is refused rather than decoded.
fn feeds_from_query(query: Option<&str>) -> Result<Vec<String>, ApiError> {
    let mut feeds = Vec::new();
    for pair in query.unwrap_or("").split('&').filter(|p| !p.is_empty()) {
        match pair.split_once('=') {
            Some(("feed", name)) => {
                validate::name("feed", name)?;
                feeds.push(name.to_string());
            }
            _ => {
                return Err(invalid(format!(
                    "unknown query parameter {pair:.80?}: publish takes only `feed=NAME`"
                ))
                .into())
            }
        }
    }
    Ok(feeds)
}

/// `POST /admin/promote`.
pub async fn promote(
    State(s): State<Arc<AppState>>,
    AdminWrite(who): AdminWrite,
    Json(r): Json<Promote>,
) -> Answer {
    let level = validate::level("level", r.level)?;
    answer(s.ctx.promote(&who.name, &r.kernel, level, &r.feed).await?)
}

/// `POST /admin/pin`.
pub async fn pin(
    State(s): State<Arc<AppState>>,
    AdminWrite(who): AdminWrite,
    Json(r): Json<Pin>,
) -> Answer {
    let level = validate::level("level", r.level)?;
    answer(s.ctx.pin(&who.name, &r.feed, &r.kernel, level).await?)
}

/// `POST /admin/hold`.
pub async fn hold(
    State(s): State<Arc<AppState>>,
    AdminWrite(who): AdminWrite,
    Json(r): Json<FeedKernel>,
) -> Answer {
    answer(s.ctx.hold(&who.name, &r.feed, &r.kernel).await?)
}

/// `POST /admin/unpin`.
pub async fn unpin(
    State(s): State<Arc<AppState>>,
    AdminWrite(who): AdminWrite,
    Json(r): Json<FeedKernel>,
) -> Answer {
    answer(s.ctx.unpin(&who.name, &r.feed, &r.kernel).await?)
}

/// `POST /admin/rollback`.
pub async fn rollback(
    State(s): State<Arc<AppState>>,
    AdminWrite(who): AdminWrite,
    Json(r): Json<FeedKernel>,
) -> Answer {
    answer(s.ctx.rollback(&who.name, &r.feed, &r.kernel).await?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn publish_query() {
        assert_eq!(feeds_from_query(None).unwrap(), Vec::<String>::new());
        assert_eq!(
            feeds_from_query(Some("feed=test&feed=stable")).unwrap(),
            ["test", "stable"]
        );
        assert!(feeds_from_query(Some("feed=a%2Fb")).is_err());
        assert!(feeds_from_query(Some("level=3")).is_err());
    }

    #[test]
    fn reported_kernels_query() {
        for (q, want) in [
            (None, Coverage::All),
            (Some(""), Coverage::All),
            (Some("uncovered=false"), Coverage::All),
            (Some("uncovered=true"), Coverage::Uncovered),
        ] {
            assert_eq!(coverage_from_query(q).unwrap(), want, "{q:?}");
        }
        for (q, says) in [
            ("uncoverd=true", "unknown query parameter \"uncoverd\""),
            ("uncovered=true&feed=x", "unknown query parameter \"feed\""),
            ("uncovered", "\"\" is neither"),
            ("uncovered=1", "\"1\" is neither"),
            ("uncovered=true&uncovered=false", "more than once"),
        ] {
            let e = coverage_from_query(Some(q)).unwrap_err();
            assert_eq!(e.status, StatusCode::BAD_REQUEST, "{q}");
            assert!(e.message.contains(says), "{q}: {}", e.message);
        }
        // A long name is cut short in the message.
        let long = format!("{}=1", "x".repeat(10_000));
        let e = coverage_from_query(Some(&long)).unwrap_err();
        assert!(e.message.len() < 300, "{}", e.message.len());
    }
}
