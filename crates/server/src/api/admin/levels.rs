//! `GET /admin/levels` for any admin token: the published levels, with
//! the CVEs each fixes and the feeds it is released to.

use std::sync::Arc;

use axum::extract::{Query, State};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::{answer, Answer};
use crate::api::error::ApiError;
use crate::api::extract::AdminRead;
use crate::api::AppState;
use crate::model::Level;

/// `?kernel=` filter of the level list.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct LevelsQuery {
    /// Only this build-id.
    kernel: Option<String>,
}

/// The published levels.
#[derive(Debug, Serialize, ToSchema)]
pub struct LevelList {
    /// By build-id, then level.
    pub levels: Vec<Level>,
}

/// `GET /admin/levels?kernel=BUILD_ID`.
#[utoipa::path(get, path = "/api/v1/admin/levels",
    summary = "Published levels with CVEs and feeds",
    security(("adminToken" = [])),
    params(LevelsQuery),
    responses((status = 200, description = "the levels", body = LevelList), ApiError))]
pub async fn list(
    State(s): State<Arc<AppState>>,
    _: AdminRead,
    Query(q): Query<LevelsQuery>,
) -> Answer<LevelList> {
    answer(LevelList {
        levels: s.ctx.levels(q.kernel.as_deref()).await?,
    })
}
