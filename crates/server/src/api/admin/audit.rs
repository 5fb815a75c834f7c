//! `GET /admin/audit`: the audit trail, newest first, one page at a time,
//! for any admin token.

use std::sync::Arc;

use axum::extract::{OriginalUri, Query, State};
use serde::Deserialize;
use utoipa::IntoParams;

use super::{page_answer, page_request, paged, text_param, Linked};
use crate::admin::audit::{AuditFilter, AUDIT_LIST};
use crate::api::error::ApiError;
use crate::api::extract::AdminRead;
use crate::api::AppState;
use crate::model::AuditEntry;

/// `?limit=&cursor=&action=&actor=&target=`; `host` is accepted and
/// ignored, as it always was.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct AuditQuery {
    /// Rows per page, 1 to 1000 (default 100); out of range: 400.
    limit: Option<String>,
    /// Where the page starts: the `next` or `prev` of an earlier answer
    /// (opaque; one this list did not hand out: 400). The answer's `Link`
    /// header carries the same as URLs (rel="next", rel="prev").
    cursor: Option<String>,
    /// Only entries of this action (exact).
    action: Option<String>,
    /// Only entries by this actor (exact).
    actor: Option<String>,
    /// Only entries on this target (exact).
    target: Option<String>,
    #[allow(dead_code)]
    #[param(ignore)]
    host: Option<String>,
}

page_answer! {
    /// One page of the audit trail, newest first.
    AuditPage { audit: AuditEntry }
}

/// `GET /admin/audit?limit=N&cursor=C&action=A&actor=W&target=T`: newest
/// first.
#[utoipa::path(get, path = "/api/v1/admin/audit",
    summary = "The audit trail, newest first, one page",
    security(("adminToken" = [])),
    params(AuditQuery),
    responses((status = 200, description = "one page of the audit trail", body = AuditPage, headers(("Link" = String, description = "the neighbouring pages as URLs (RFC 8288: rel=\"next\", rel=\"prev\"); absent when there are none"))), ApiError))]
pub async fn list(
    State(s): State<Arc<AppState>>,
    _: AdminRead,
    OriginalUri(uri): OriginalUri,
    Query(q): Query<AuditQuery>,
) -> Result<Linked<AuditPage>, ApiError> {
    let page = page_request(AUDIT_LIST, q.limit.as_deref(), q.cursor.as_deref())?;
    let filter = AuditFilter {
        action: text_param(&q.action),
        actor: text_param(&q.actor),
        target: text_param(&q.target),
    };
    Ok(paged(&uri, s.ctx.audit_page(&filter, &page).await?))
}
