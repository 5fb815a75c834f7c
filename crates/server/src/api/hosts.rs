//! The host management endpoints under `/admin/hosts/<host>/`: move a
//! host to another feed, replace its tags, retire it (admin role only,
//! audited under the token's name), and the list of retired hosts (any
//! admin token). `<host>` is a host id, or a hostname that exactly one
//! active host has (see `hosts`); percent-encode it in the path.

use std::sync::Arc;

use axum::extract::{Path, State};
use serde::Deserialize;
use serde_json::{json, Value};

use super::error::ApiError;
use super::extract::{AdminRead, AdminWrite, Json};
use super::AppState;

type Answer = Result<axum::Json<Value>, ApiError>;

/// `POST /admin/hosts/<host>/move`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MoveHost {
    feed: String,
}

/// `POST /admin/hosts/<host>/tags`: the new tags (`[]` clears them).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HostTags {
    tags: Vec<String>,
}

/// `POST /admin/hosts/<host>/move`.
pub async fn move_host(
    State(s): State<Arc<AppState>>,
    AdminWrite(who): AdminWrite,
    Path(host): Path<String>,
    Json(r): Json<MoveHost>,
) -> Answer {
    Ok(axum::Json(json!(
        s.ctx.move_host(&who.name, &host, &r.feed).await?
    )))
}

/// `POST /admin/hosts/<host>/tags`.
pub async fn set_tags(
    State(s): State<Arc<AppState>>,
    AdminWrite(who): AdminWrite,
    Path(host): Path<String>,
    Json(r): Json<HostTags>,
) -> Answer {
    Ok(axum::Json(json!(
        s.ctx.set_host_tags(&who.name, &host, &r.tags).await?
    )))
}

/// `POST /admin/hosts/<host>/retire`.
pub async fn retire(
    State(s): State<Arc<AppState>>,
    AdminWrite(who): AdminWrite,
    Path(host): Path<String>,
) -> Answer {
    Ok(axum::Json(json!(
        s.ctx.retire_host(&who.name, &host).await?
    )))
}

/// `GET /admin/hosts/retired`.
pub async fn retired(State(s): State<Arc<AppState>>, _: AdminRead) -> Answer {
    Ok(axum::Json(json!({ "hosts": s.ctx.retired_hosts().await? })))
}
