//! `GET /admin/vex` and `/admin/hosts/<host>/vex` for any admin token: the
//! OpenVEX documents vulnerability scanners take (`trivy --vex FILE`), for
//! the fleet and for one host (see [`crate::vex`]). Nothing to state (no
//! level for the host's kernel, or for any kernel the fleet runs) is a 404
//! saying so: OpenVEX has no document without a statement.

use std::sync::Arc;

use axum::extract::{Path, Query, State};
use protocol::vex::Document;
use serde::Deserialize;

use super::{answer, Answer};
use crate::api::error::ApiError;
use crate::api::extract::AdminRead;
use crate::api::AppState;

/// No query parameters: any is refused with 400, naming it.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NoQuery {}

/// `GET /admin/vex`.
#[utoipa::path(get, path = "/api/v1/admin/vex",
    summary = "The fleet's OpenVEX document: per CVE and kernel package hosts run, `fixed` when every active host running the package has a level that fixes it, `affected` otherwise",
    security(("adminToken" = [])),
    responses((status = 200, description = "an OpenVEX v0.2.0 document", body = Document), ApiError))]
pub async fn fleet(
    State(s): State<Arc<AppState>>,
    _: AdminRead,
    Query(_): Query<NoQuery>,
) -> Answer<Document> {
    answer(s.ctx.fleet_vex().await?)
}

/// `GET /admin/hosts/<host>/vex`.
#[utoipa::path(get, path = "/api/v1/admin/hosts/{host}/vex",
    summary = "One host's OpenVEX document, as of its last check-in: each CVE a level for its kernel lists, `fixed` when its applied level has the fix, `affected` when not",
    security(("adminToken" = [])),
    params(("host" = String, Path, description = "a host id, or a hostname exactly one active host has (percent-encoded)")),
    responses((status = 200, description = "an OpenVEX v0.2.0 document", body = Document), ApiError))]
pub async fn host(
    State(s): State<Arc<AppState>>,
    _: AdminRead,
    Path(host): Path<String>,
    Query(_): Query<NoQuery>,
) -> Answer<Document> {
    answer(s.ctx.host_vex(&host).await?)
}
