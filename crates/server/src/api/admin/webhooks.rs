//! `/admin/webhooks`: the webhooks events are POSTed to (see
//! [`crate::webhooks`]), listed for any admin token, created and deleted
//! by the admin role (audited). A new webhook's secret is in the creation's
//! answer only; lists show its first characters.

use std::sync::Arc;

use axum::extract::{Path, State};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::{answer, created, Answer, Created, ADMIN_ROLE};
use crate::api::error::ApiError;
use crate::api::extract::{AdminRead, AdminWrite, Json};
use crate::api::AppState;
use crate::webhooks::{NewWebhook, Webhook};

/// `POST /admin/webhooks`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateWebhook {
    /// Where to POST events: an http:// or https:// URL.
    url: String,
    /// Which: apply-failed, rolled-back, crash-guard-skip, policy-breach,
    /// policy-breach-resolved.
    events: Vec<String>,
}

/// The webhooks.
#[derive(Debug, Serialize, ToSchema)]
pub struct WebhookList {
    /// Oldest first.
    pub webhooks: Vec<Webhook>,
}

/// `GET /admin/webhooks`.
#[utoipa::path(get, path = "/api/v1/admin/webhooks",
    summary = "Webhooks (secrets by their first characters only)",
    security(("adminToken" = [])),
    responses((status = 200, description = "the webhooks", body = WebhookList), ApiError))]
pub async fn list(State(s): State<Arc<AppState>>, _: AdminRead) -> Answer<WebhookList> {
    answer(WebhookList {
        webhooks: s.ctx.webhooks().await?,
    })
}

/// `POST /admin/webhooks`.
#[utoipa::path(post, path = "/api/v1/admin/webhooks",
    summary = "Register a webhook; its signing secret is answered this once",
    description = ADMIN_ROLE,
    security(("adminToken" = ["admin"])),
    request_body = CreateWebhook,
    responses((status = 201, description = "the webhook, with its secret", body = NewWebhook), ApiError))]
pub async fn create(
    State(s): State<Arc<AppState>>,
    AdminWrite(who): AdminWrite,
    Json(r): Json<CreateWebhook>,
) -> Created<NewWebhook> {
    created(s.ctx.create_webhook(&who.name, &r.url, &r.events).await?)
}

/// `POST /admin/webhooks/<id>/delete`.
#[utoipa::path(post, path = "/api/v1/admin/webhooks/{id}/delete",
    summary = "Delete a webhook; its deliveries not yet made are given up",
    description = ADMIN_ROLE,
    security(("adminToken" = ["admin"])),
    params(("id" = String, Path, description = "the webhook's id")),
    responses((status = 200, description = "the webhook deleted", body = Webhook), ApiError))]
pub async fn delete(
    State(s): State<Arc<AppState>>,
    AdminWrite(who): AdminWrite,
    Path(id): Path<String>,
) -> Answer<Webhook> {
    answer(s.ctx.delete_webhook(&who.name, &id).await?)
}
