//! What feeds serve (admin role): `POST /admin/promote`, `/admin/pin`,
//! `/admin/hold`, `/admin/unpin` and `/admin/rollback`, each answering
//! the feed's state for the kernel afterwards (or the promotion or
//! rollback done).

use std::sync::Arc;

use axum::extract::State;
use serde::Deserialize;

use super::{answer, Answer};
use crate::api::extract::{AdminWrite, Json};
use crate::api::AppState;
use crate::validate;

/// `POST /admin/promote`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Promote {
    kernel: String,
    level: u32,
    feed: String,
}

/// `POST /admin/pin`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Pin {
    feed: String,
    kernel: String,
    level: u32,
}

/// `POST /admin/hold`, `/admin/unpin`, `/admin/rollback`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FeedKernel {
    feed: String,
    kernel: String,
}

/// `POST /admin/promote`.
pub async fn promote(
    State(s): State<Arc<AppState>>,
    AdminWrite(who): AdminWrite,
    Json(r): Json<Promote>,
) -> Answer {
    let level = validate::level("level", r.level)?;
    answer(s.ctx.promote(&who.name, &r.kernel, level, &r.feed).await?)
}

/// `POST /admin/pin`.
pub async fn pin(
    State(s): State<Arc<AppState>>,
    AdminWrite(who): AdminWrite,
    Json(r): Json<Pin>,
) -> Answer {
    let level = validate::level("level", r.level)?;
    answer(s.ctx.pin(&who.name, &r.feed, &r.kernel, level).await?)
}

/// `POST /admin/hold`.
pub async fn hold(
    State(s): State<Arc<AppState>>,
    AdminWrite(who): AdminWrite,
    Json(r): Json<FeedKernel>,
) -> Answer {
    answer(s.ctx.hold(&who.name, &r.feed, &r.kernel).await?)
}

/// `POST /admin/unpin`.
pub async fn unpin(
    State(s): State<Arc<AppState>>,
    AdminWrite(who): AdminWrite,
    Json(r): Json<FeedKernel>,
) -> Answer {
    answer(s.ctx.unpin(&who.name, &r.feed, &r.kernel).await?)
}

/// `POST /admin/rollback`.
pub async fn rollback(
    State(s): State<Arc<AppState>>,
    AdminWrite(who): AdminWrite,
    Json(r): Json<FeedKernel>,
) -> Answer {
    answer(s.ctx.rollback(&who.name, &r.feed, &r.kernel).await?)
}
