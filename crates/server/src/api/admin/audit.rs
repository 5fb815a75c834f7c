//! `GET /admin/audit`: the audit trail, newest first, one page at a time,
//! for any admin token.

use std::sync::Arc;

use axum::extract::{OriginalUri, Query, State};
use axum::response::Response;
use serde::Deserialize;

use super::{page_request, paged, text_param};
use crate::admin::audit::{AuditFilter, AUDIT_LIST};
use crate::api::error::ApiError;
use crate::api::extract::AdminRead;
use crate::api::AppState;

/// `?limit=&cursor=&action=&actor=&target=`; `host` is accepted and
/// ignored, as it always was.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuditQuery {
    limit: Option<String>,
    cursor: Option<String>,
    action: Option<String>,
    actor: Option<String>,
    target: Option<String>,
    #[allow(dead_code)]
    host: Option<String>,
}

/// `GET /admin/audit?limit=N&cursor=C&action=A&actor=W&target=T`: newest
/// first.
pub async fn list(
    State(s): State<Arc<AppState>>,
    _: AdminRead,
    OriginalUri(uri): OriginalUri,
    Query(q): Query<AuditQuery>,
) -> Result<Response, ApiError> {
    let page = page_request(AUDIT_LIST, q.limit.as_deref(), q.cursor.as_deref())?;
    let filter = AuditFilter {
        action: text_param(&q.action),
        actor: text_param(&q.actor),
        target: text_param(&q.target),
    };
    Ok(paged(
        &uri,
        "audit",
        s.ctx.audit_page(&filter, &page).await?,
    ))
}
