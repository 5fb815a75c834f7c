//! `/admin/hosts`: the hosts (active, or retired) for any admin token, and
//! the changes to one host under `/admin/hosts/<host>/` — move it to
//! another feed, replace its tags, retire it — for the admin role,
//! audited under the token's name. `<host>` is a host id, or a hostname
//! that exactly one active host has (see [`crate::admin::hosts`]);
//! percent-encode it in the path.

use std::sync::Arc;

use axum::extract::{OriginalUri, Path, Query, State};
use serde::Deserialize;
use utoipa::{IntoParams, ToSchema};

use super::{answer, page_answer, page_request, paged, Answer, HostListQuery, Linked, ADMIN_ROLE};
use crate::admin::hosts::{Moved, Retired, RetiredHost, Tagged, HOSTS_LIST, RETIRED_LIST};
use crate::api::error::ApiError;
use crate::api::extract::{AdminRead, AdminWrite, Json};
use crate::api::AppState;
use crate::model::Host;

/// `POST /admin/hosts/<host>/move`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct MoveHost {
    /// The feed to follow from now on.
    feed: String,
}

/// `POST /admin/hosts/<host>/tags`: the new tags (`[]` clears them).
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct HostTags {
    /// The host's tags from now on.
    tags: Vec<String>,
}

page_answer! {
    /// One page of active hosts, by hostname then id.
    HostPage { hosts: Host }
}

page_answer! {
    /// One page of retired hosts, most recently retired first.
    RetiredHostPage { hosts: RetiredHost }
}

/// `?limit=&cursor=` alone.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct PageQuery {
    /// Rows per page, 1 to 1000 (default 100); out of range: 400.
    limit: Option<String>,
    /// Where the page starts: the `next` or `prev` of an earlier answer
    /// (opaque; one this list did not hand out: 400). The answer's `Link`
    /// header carries the same as URLs (rel="next", rel="prev").
    cursor: Option<String>,
}

/// The `<host>` of a path, for the OpenAPI document.
const HOST: &str = "a host id, or a hostname exactly one active host has (percent-encoded)";

/// `GET /admin/hosts?limit=&cursor=&feed=&kernel=&level=&tag=&hostname=&status=&stale=`:
/// one page, by hostname then id.
#[utoipa::path(get, path = "/api/v1/admin/hosts",
    summary = "Active hosts, one page by hostname then id",
    security(("adminToken" = [])),
    params(HostListQuery),
    responses((status = 200, description = "one page of active hosts", body = HostPage, headers(("Link" = String, description = "the neighbouring pages as URLs (RFC 8288: rel=\"next\", rel=\"prev\"); absent when there are none"))), ApiError))]
pub async fn list(
    State(s): State<Arc<AppState>>,
    _: AdminRead,
    OriginalUri(uri): OriginalUri,
    Query(q): Query<HostListQuery>,
) -> Result<Linked<HostPage>, ApiError> {
    let filter = q.filter()?;
    let page = q.page(HOSTS_LIST)?;
    let hosts = s.ctx.host_page(&filter, &page, s.settings.policy).await?;
    Ok(paged(&uri, hosts))
}

/// `GET /admin/hosts/retired?limit=&cursor=`: one page, most recently
/// retired first.
#[utoipa::path(get, path = "/api/v1/admin/hosts/retired",
    summary = "Retired hosts, most recently retired first, one page",
    security(("adminToken" = [])),
    params(PageQuery),
    responses((status = 200, description = "one page of retired hosts", body = RetiredHostPage, headers(("Link" = String, description = "the neighbouring pages as URLs (RFC 8288: rel=\"next\", rel=\"prev\"); absent when there are none"))), ApiError))]
pub async fn retired(
    State(s): State<Arc<AppState>>,
    _: AdminRead,
    OriginalUri(uri): OriginalUri,
    Query(q): Query<PageQuery>,
) -> Result<Linked<RetiredHostPage>, ApiError> {
    let page = page_request(RETIRED_LIST, q.limit.as_deref(), q.cursor.as_deref())?;
    Ok(paged(&uri, s.ctx.retired_host_page(&page).await?))
}

/// `POST /admin/hosts/<host>/move`.
#[utoipa::path(post, path = "/api/v1/admin/hosts/{host}/move",
    summary = "Move a host to another feed; its next check-in gets that feed's level",
    description = ADMIN_ROLE,
    security(("adminToken" = ["admin"])),
    params(("host" = String, Path, description = HOST)),
    request_body = MoveHost,
    responses((status = 200, description = "the host moved", body = Moved), ApiError))]
pub async fn move_host(
    State(s): State<Arc<AppState>>,
    AdminWrite(who): AdminWrite,
    Path(host): Path<String>,
    Json(r): Json<MoveHost>,
) -> Answer<Moved> {
    answer(s.ctx.move_host(&who.name, &host, &r.feed).await?)
}

/// `POST /admin/hosts/<host>/tags`.
#[utoipa::path(post, path = "/api/v1/admin/hosts/{host}/tags",
    summary = "Replace a host's tags (`[]` clears them)",
    description = ADMIN_ROLE,
    security(("adminToken" = ["admin"])),
    params(("host" = String, Path, description = HOST)),
    request_body = HostTags,
    responses((status = 200, description = "the host's tags replaced", body = Tagged), ApiError))]
pub async fn set_tags(
    State(s): State<Arc<AppState>>,
    AdminWrite(who): AdminWrite,
    Path(host): Path<String>,
    Json(r): Json<HostTags>,
) -> Answer<Tagged> {
    answer(s.ctx.set_host_tags(&who.name, &host, &r.tags).await?)
}

/// `POST /admin/hosts/<host>/retire`.
#[utoipa::path(post, path = "/api/v1/admin/hosts/{host}/retire",
    summary = "Retire a decommissioned host: its token stops working, it leaves the host list and the reports, its reports are kept",
    description = ADMIN_ROLE,
    security(("adminToken" = ["admin"])),
    params(("host" = String, Path, description = HOST)),
    responses((status = 200, description = "the host retired", body = Retired), ApiError))]
pub async fn retire(
    State(s): State<Arc<AppState>>,
    AdminWrite(who): AdminWrite,
    Path(host): Path<String>,
) -> Answer<Retired> {
    answer(s.ctx.retire_host(&who.name, &host).await?)
}
