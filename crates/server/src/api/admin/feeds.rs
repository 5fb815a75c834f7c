//! `/admin/feeds`: the feeds (any admin token), creating one (admin role),
//! and what a feed serves for one kernel now, with its pin or hold.

use std::sync::Arc;

use axum::extract::{Path, State};
use serde::Deserialize;
use serde_json::json;

use super::{answer, created, Answer, Created};
use crate::api::extract::{AdminRead, AdminWrite, Json};
use crate::api::AppState;

/// `POST /admin/feeds`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateFeed {
    name: String,
    #[serde(default)]
    delay_hours: i64,
}

/// `GET /admin/feeds`.
pub async fn list(State(s): State<Arc<AppState>>, _: AdminRead) -> Answer {
    answer(json!({ "feeds": s.ctx.feeds().await? }))
}

/// `POST /admin/feeds` (201).
pub async fn create(
    State(s): State<Arc<AppState>>,
    AdminWrite(who): AdminWrite,
    Json(r): Json<CreateFeed>,
) -> Created {
    created(s.ctx.create_feed(&who.name, &r.name, r.delay_hours).await?)
}

/// `GET /admin/feeds/<feed>/kernels/<build-id>`: what the feed serves.
pub async fn state(
    State(s): State<Arc<AppState>>,
    _: AdminRead,
    Path((feed, kernel)): Path<(String, String)>,
) -> Answer {
    answer(s.ctx.feed_state(&feed, &kernel).await?)
}
