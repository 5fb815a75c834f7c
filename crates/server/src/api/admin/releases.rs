//! What feeds serve (admin role): `POST /admin/promote`, `/admin/pin`,
//! `/admin/hold`, `/admin/unpin` and `/admin/rollback`, each answering
//! the feed's state for the kernel afterwards (or the promotion or
//! rollback done).

use std::sync::Arc;

use axum::extract::State;
use serde::Deserialize;
use utoipa::ToSchema;

use super::{answer, Answer, ADMIN_ROLE};
use crate::admin::feeds::FeedState;
use crate::admin::releases::{Promoted, Rollback};
use crate::api::error::ApiError;
use crate::api::extract::{AdminWrite, Json};
use crate::api::AppState;
use crate::validate;

/// `POST /admin/promote`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Promote {
    /// The kernel's build-id.
    kernel: String,
    /// The published level.
    level: u32,
    /// The feed to release it to.
    feed: String,
}

/// `POST /admin/pin`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Pin {
    /// The feed.
    feed: String,
    /// The kernel's build-id.
    kernel: String,
    /// The level to serve.
    level: u32,
}

/// `POST /admin/hold`, `/admin/unpin`, `/admin/rollback`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct FeedKernel {
    /// The feed.
    feed: String,
    /// The kernel's build-id.
    kernel: String,
}

/// `POST /admin/promote`.
#[utoipa::path(post, path = "/api/v1/admin/promote",
    summary = "Release a level to a feed",
    description = ADMIN_ROLE,
    security(("adminToken" = ["admin"])),
    request_body = Promote,
    responses((status = 200, description = "the level released", body = Promoted), ApiError))]
pub async fn promote(
    State(s): State<Arc<AppState>>,
    AdminWrite(who): AdminWrite,
    Json(r): Json<Promote>,
) -> Answer<Promoted> {
    let level = validate::level("level", r.level)?;
    answer(s.ctx.promote(&who.name, &r.kernel, level, &r.feed).await?)
}

/// `POST /admin/pin`.
#[utoipa::path(post, path = "/api/v1/admin/pin",
    summary = "Serve exactly this level on a feed for one kernel",
    description = ADMIN_ROLE,
    security(("adminToken" = ["admin"])),
    request_body = Pin,
    responses((status = 200, description = "what the feed serves for the kernel now", body = FeedState), ApiError))]
pub async fn pin(
    State(s): State<Arc<AppState>>,
    AdminWrite(who): AdminWrite,
    Json(r): Json<Pin>,
) -> Answer<FeedState> {
    let level = validate::level("level", r.level)?;
    answer(s.ctx.pin(&who.name, &r.feed, &r.kernel, level).await?)
}

/// `POST /admin/hold`.
#[utoipa::path(post, path = "/api/v1/admin/hold",
    summary = "Keep a feed at its current level for one kernel",
    description = ADMIN_ROLE,
    security(("adminToken" = ["admin"])),
    request_body = FeedKernel,
    responses((status = 200, description = "what the feed serves for the kernel now", body = FeedState), ApiError))]
pub async fn hold(
    State(s): State<Arc<AppState>>,
    AdminWrite(who): AdminWrite,
    Json(r): Json<FeedKernel>,
) -> Answer<FeedState> {
    answer(s.ctx.hold(&who.name, &r.feed, &r.kernel).await?)
}

/// `POST /admin/unpin`.
#[utoipa::path(post, path = "/api/v1/admin/unpin",
    summary = "Remove a pin or hold",
    description = ADMIN_ROLE,
    security(("adminToken" = ["admin"])),
    request_body = FeedKernel,
    responses((status = 200, description = "what the feed serves for the kernel now", body = FeedState), ApiError))]
pub async fn unpin(
    State(s): State<Arc<AppState>>,
    AdminWrite(who): AdminWrite,
    Json(r): Json<FeedKernel>,
) -> Answer<FeedState> {
    answer(s.ctx.unpin(&who.name, &r.feed, &r.kernel).await?)
}

/// `POST /admin/rollback`.
#[utoipa::path(post, path = "/api/v1/admin/rollback",
    summary = "Withdraw the level a feed serves for one kernel",
    description = ADMIN_ROLE,
    security(("adminToken" = ["admin"])),
    request_body = FeedKernel,
    responses((status = 200, description = "the level withdrawn", body = Rollback), ApiError))]
pub async fn rollback(
    State(s): State<Arc<AppState>>,
    AdminWrite(who): AdminWrite,
    Json(r): Json<FeedKernel>,
) -> Answer<Rollback> {
    answer(s.ctx.rollback(&who.name, &r.feed, &r.kernel).await?)
}
