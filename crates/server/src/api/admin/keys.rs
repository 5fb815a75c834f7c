//! `/admin/keys`: registration keys without their secrets (any admin
//! token), creating one — its secret is in that answer only — and
//! revoking one (admin role).

use std::sync::Arc;

use axum::extract::{Path, State};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::{answer, created, Answer, Created, ADMIN_ROLE};
use crate::admin::keys::NewKey;
use crate::api::error::ApiError;
use crate::api::extract::{AdminRead, AdminWrite, Json};
use crate::api::AppState;
use crate::model::RegistrationKey;

/// `POST /admin/keys`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateKey {
    /// The feed hosts registering with it join.
    feed: String,
    /// What it is for.
    #[serde(default)]
    note: String,
}

/// The registration keys, without their secrets.
#[derive(Debug, Serialize, ToSchema)]
pub struct KeyList {
    /// Oldest first.
    pub keys: Vec<RegistrationKey>,
}

/// `GET /admin/keys`.
#[utoipa::path(get, path = "/api/v1/admin/keys",
    summary = "Registration keys (without secrets)",
    security(("adminToken" = [])),
    responses((status = 200, description = "the keys", body = KeyList), ApiError))]
pub async fn list(State(s): State<Arc<AppState>>, _: AdminRead) -> Answer<KeyList> {
    answer(KeyList {
        keys: s.ctx.keys().await?,
    })
}

/// `POST /admin/keys` (201): the secret is in this answer only.
#[utoipa::path(post, path = "/api/v1/admin/keys",
    summary = "Create a registration key (the secret is in this answer only)",
    description = ADMIN_ROLE,
    security(("adminToken" = ["admin"])),
    request_body = CreateKey,
    responses((status = 201, description = "the key created, with its secret", body = NewKey), ApiError))]
pub async fn create(
    State(s): State<Arc<AppState>>,
    AdminWrite(who): AdminWrite,
    Json(r): Json<CreateKey>,
) -> Created<NewKey> {
    created(s.ctx.create_key(&who.name, &r.feed, &r.note).await?)
}

/// `POST /admin/keys/<id>/revoke`.
#[utoipa::path(post, path = "/api/v1/admin/keys/{id}/revoke",
    summary = "Revoke a registration key",
    description = ADMIN_ROLE,
    security(("adminToken" = ["admin"])),
    params(("id" = String, Path, description = "the key's id")),
    responses((status = 200, description = "the key revoked", body = RegistrationKey), ApiError))]
pub async fn revoke(
    State(s): State<Arc<AppState>>,
    AdminWrite(who): AdminWrite,
    Path(id): Path<String>,
) -> Answer<RegistrationKey> {
    answer(s.ctx.revoke_key(&who.name, &id).await?)
}
