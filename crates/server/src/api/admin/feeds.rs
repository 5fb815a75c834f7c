//! `/admin/feeds`: the feeds (any admin token), creating one (admin role),
//! and what a feed serves for one kernel now, with its pin or hold.

use std::sync::Arc;

use axum::extract::{Path, State};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::{answer, created, Answer, Created, ADMIN_ROLE};
use crate::admin::feeds::FeedState;
use crate::api::error::ApiError;
use crate::api::extract::{AdminRead, AdminWrite, Json};
use crate::api::AppState;
use crate::model::Feed;

/// `POST /admin/feeds`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateFeed {
    /// Its name.
    name: String,
    /// Hours after publication before a level is served (default 0: at
    /// once).
    #[serde(default)]
    delay_hours: i64,
}

/// The feeds.
#[derive(Debug, Serialize, ToSchema)]
pub struct FeedList {
    /// By name.
    pub feeds: Vec<Feed>,
}

/// `GET /admin/feeds`.
#[utoipa::path(get, path = "/api/v1/admin/feeds",
    summary = "Feeds",
    security(("adminToken" = [])),
    responses((status = 200, description = "the feeds", body = FeedList), ApiError))]
pub async fn list(State(s): State<Arc<AppState>>, _: AdminRead) -> Answer<FeedList> {
    answer(FeedList {
        feeds: s.ctx.feeds().await?,
    })
}

/// `POST /admin/feeds` (201).
#[utoipa::path(post, path = "/api/v1/admin/feeds",
    summary = "Create a feed",
    description = ADMIN_ROLE,
    security(("adminToken" = ["admin"])),
    request_body = CreateFeed,
    responses((status = 201, description = "the feed created", body = Feed), ApiError))]
pub async fn create(
    State(s): State<Arc<AppState>>,
    AdminWrite(who): AdminWrite,
    Json(r): Json<CreateFeed>,
) -> Created<Feed> {
    created(s.ctx.create_feed(&who.name, &r.name, r.delay_hours).await?)
}

/// `GET /admin/feeds/<feed>/kernels/<build-id>`: what the feed serves.
#[utoipa::path(get, path = "/api/v1/admin/feeds/{feed}/kernels/{kernel}",
    summary = "What a feed serves for one kernel, with its pin or hold",
    security(("adminToken" = [])),
    params(("feed" = String, Path, description = "the feed"),
        ("kernel" = String, Path, description = "the kernel's build-id")),
    responses((status = 200, description = "what the feed serves for the kernel now", body = FeedState), ApiError))]
pub async fn state(
    State(s): State<Arc<AppState>>,
    _: AdminRead,
    Path((feed, kernel)): Path<(String, String)>,
) -> Answer<FeedState> {
    answer(s.ctx.feed_state(&feed, &kernel).await?)
}
