//! `/admin/keys`: registration keys without their secrets (any admin
//! token), creating one — its secret is in that answer only — and
//! revoking one (admin role).

use std::sync::Arc;

use axum::extract::{Path, State};
use serde::Deserialize;
use serde_json::json;

use super::{answer, created, Answer, Created};
use crate::api::extract::{AdminRead, AdminWrite, Json};
use crate::api::AppState;

/// `POST /admin/keys`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateKey {
    feed: String,
    #[serde(default)]
    note: String,
}

/// `GET /admin/keys`.
pub async fn list(State(s): State<Arc<AppState>>, _: AdminRead) -> Answer {
    answer(json!({ "keys": s.ctx.keys().await? }))
}

/// `POST /admin/keys` (201): the secret is in this answer only.
pub async fn create(
    State(s): State<Arc<AppState>>,
    AdminWrite(who): AdminWrite,
    Json(r): Json<CreateKey>,
) -> Created {
    created(s.ctx.create_key(&who.name, &r.feed, &r.note).await?)
}

/// `POST /admin/keys/<id>/revoke`.
pub async fn revoke(
    State(s): State<Arc<AppState>>,
    AdminWrite(who): AdminWrite,
    Path(id): Path<String>,
) -> Answer {
    answer(s.ctx.revoke_key(&who.name, &id).await?)
}
