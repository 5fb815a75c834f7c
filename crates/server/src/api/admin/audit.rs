//! `GET /admin/audit`: the audit trail, newest first, for any admin token.

use std::sync::Arc;

use axum::extract::{Query, State};
use serde_json::json;

use super::{answer, Answer, ListQuery};
use crate::api::extract::AdminRead;
use crate::api::AppState;

/// `GET /admin/audit?limit=N`: newest first.
pub async fn list(
    State(s): State<Arc<AppState>>,
    _: AdminRead,
    Query(q): Query<ListQuery>,
) -> Answer {
    answer(json!({ "audit": s.ctx.audit_log(q.limit.unwrap_or(100)).await? }))
}
