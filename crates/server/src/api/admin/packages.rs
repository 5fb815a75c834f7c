//! `/admin/agent-packages`: the agent packages the APT repository serves
//! (any admin token), uploading one — the body is the `.deb` itself — and
//! removing a version (admin role).

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Path, State};
use serde::Serialize;
use utoipa::ToSchema;

use super::{answer, created, Answer, Created, ADMIN_ROLE};
use crate::admin::packages::AgentPackage;
use crate::api::error::ApiError;
use crate::api::extract::{AdminRead, AdminWrite};
use crate::api::AppState;

/// The agent packages in the repository.
#[derive(Debug, Serialize, ToSchema)]
pub struct PackageList {
    /// Oldest upload first.
    pub packages: Vec<AgentPackage>,
}

/// `GET /admin/agent-packages`.
#[utoipa::path(get, path = "/api/v1/admin/agent-packages",
    summary = "Agent packages in the APT repository",
    security(("adminToken" = [])),
    responses((status = 200, description = "the packages", body = PackageList), ApiError))]
pub async fn list(State(s): State<Arc<AppState>>, _: AdminRead) -> Answer<PackageList> {
    answer(PackageList {
        packages: s.ctx.agent_packages().await?,
    })
}

/// `POST /admin/agent-packages` (201): the body is the `.deb`.
#[utoipa::path(post, path = "/api/v1/admin/agent-packages",
    summary = "Add an agent package (the body is the .deb) to the APT repository",
    description = ADMIN_ROLE,
    security(("adminToken" = ["admin"])),
    request_body(content(("application/vnd.debian.binary-package")), description = "the noreboot .deb (scripts/package-agent)"),
    responses((status = 201, description = "the package added", body = AgentPackage), ApiError))]
pub async fn upload(
    State(s): State<Arc<AppState>>,
    AdminWrite(who): AdminWrite,
    body: Bytes,
) -> Created<AgentPackage> {
    created(s.ctx.upload_agent_package(&who.name, body.to_vec()).await?)
}

/// The versions a removal took out.
#[derive(Debug, Serialize, ToSchema)]
pub struct Removed {
    /// Every architecture of the version.
    pub removed: Vec<AgentPackage>,
}

/// `POST /admin/agent-packages/{version}/remove`.
#[utoipa::path(post, path = "/api/v1/admin/agent-packages/{version}/remove",
    summary = "Take a version of the agent package out of the APT repository",
    description = ADMIN_ROLE,
    security(("adminToken" = ["admin"])),
    params(("version" = String, Path, description = "the package version")),
    responses((status = 200, description = "the packages removed", body = Removed), ApiError))]
pub async fn remove(
    State(s): State<Arc<AppState>>,
    AdminWrite(who): AdminWrite,
    Path(version): Path<String>,
) -> Answer<Removed> {
    answer(Removed {
        removed: s.ctx.remove_agent_package(&who.name, &version).await?,
    })
}
