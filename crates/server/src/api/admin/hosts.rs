//! `/admin/hosts`: the hosts (active, or retired) for any admin token, and
//! the changes to one host under `/admin/hosts/<host>/` — move it to
//! another feed, replace its tags, retire it — for the admin role,
//! audited under the token's name. `<host>` is a host id, or a hostname
//! that exactly one active host has (see [`crate::admin::hosts`]);
//! percent-encode it in the path.

use std::sync::Arc;

use axum::extract::{Path, State};
use serde::Deserialize;
use serde_json::json;

use super::{answer, Answer};
use crate::api::extract::{AdminRead, AdminWrite, Json};
use crate::api::AppState;

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

/// `GET /admin/hosts`.
pub async fn list(State(s): State<Arc<AppState>>, _: AdminRead) -> Answer {
    answer(json!({ "hosts": s.ctx.hosts().await? }))
}

/// `GET /admin/hosts/retired`.
pub async fn retired(State(s): State<Arc<AppState>>, _: AdminRead) -> Answer {
    answer(json!({ "hosts": s.ctx.retired_hosts().await? }))
}

/// `POST /admin/hosts/<host>/move`.
pub async fn move_host(
    State(s): State<Arc<AppState>>,
    AdminWrite(who): AdminWrite,
    Path(host): Path<String>,
    Json(r): Json<MoveHost>,
) -> Answer {
    answer(s.ctx.move_host(&who.name, &host, &r.feed).await?)
}

/// `POST /admin/hosts/<host>/tags`.
pub async fn set_tags(
    State(s): State<Arc<AppState>>,
    AdminWrite(who): AdminWrite,
    Path(host): Path<String>,
    Json(r): Json<HostTags>,
) -> Answer {
    answer(s.ctx.set_host_tags(&who.name, &host, &r.tags).await?)
}

/// `POST /admin/hosts/<host>/retire`.
pub async fn retire(
    State(s): State<Arc<AppState>>,
    AdminWrite(who): AdminWrite,
    Path(host): Path<String>,
) -> Answer {
    answer(s.ctx.retire_host(&who.name, &host).await?)
}
