//! `/admin/hosts`: the hosts (active, or retired) for any admin token, and
//! the changes to one host under `/admin/hosts/<host>/` — move it to
//! another feed, replace its tags, retire it — for the admin role,
//! audited under the token's name. `<host>` is a host id, or a hostname
//! that exactly one active host has (see [`crate::admin::hosts`]);
//! percent-encode it in the path.

use std::sync::Arc;

use axum::extract::{OriginalUri, Path, Query, State};
use axum::response::Response;
use serde::Deserialize;

use super::{answer, page_request, paged, Answer, HostListQuery};
use crate::admin::hosts::{HOSTS_LIST, RETIRED_LIST};
use crate::api::error::ApiError;
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

/// `GET /admin/hosts?limit=&cursor=&feed=&kernel=&level=&tag=&hostname=&status=&stale=`:
/// one page, by hostname then id.
pub async fn list(
    State(s): State<Arc<AppState>>,
    _: AdminRead,
    OriginalUri(uri): OriginalUri,
    Query(q): Query<HostListQuery>,
) -> Result<Response, ApiError> {
    let filter = q.filter()?;
    let page = q.page(HOSTS_LIST)?;
    let hosts = s.ctx.host_page(&filter, &page, s.settings.policy).await?;
    Ok(paged(&uri, "hosts", hosts))
}

/// `GET /admin/hosts/retired?limit=&cursor=`: one page, most recently
/// retired first.
pub async fn retired(
    State(s): State<Arc<AppState>>,
    _: AdminRead,
    OriginalUri(uri): OriginalUri,
    Query(q): Query<PageQuery>,
) -> Result<Response, ApiError> {
    let page = page_request(RETIRED_LIST, q.limit.as_deref(), q.cursor.as_deref())?;
    Ok(paged(&uri, "hosts", s.ctx.retired_host_page(&page).await?))
}

/// `?limit=&cursor=` alone.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PageQuery {
    limit: Option<String>,
    cursor: Option<String>,
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
