//! `GET /admin/kernels` and `/admin/kernels/reported`, for any admin
//! token: the kernels with published levels, and the builds active hosts
//! run (all, or `?uncovered=true` those no level covers).

use std::sync::Arc;

use axum::extract::{RawQuery, State};
use serde::Serialize;
use utoipa::ToSchema;

use super::{answer, Answer};
use crate::admin::Coverage;
use crate::api::error::ApiError;
use crate::api::extract::AdminRead;
use crate::api::AppState;
use crate::error::invalid;
use crate::model::{Kernel, ReportedBuild};

/// The kernels with published levels.
#[derive(Debug, Serialize, ToSchema)]
pub struct KernelList {
    /// By release, then build-id.
    pub kernels: Vec<Kernel>,
}

/// The builds active hosts run, as a bare array: one entry per (release,
/// version, build_id) active hosts report, by release, then build_id.
#[derive(Debug, Serialize, ToSchema)]
pub struct ReportedBuilds(#[schema(inline)] pub Vec<ReportedBuild>);

/// `GET /admin/kernels`.
#[utoipa::path(get, path = "/api/v1/admin/kernels",
    summary = "Kernels with published levels",
    security(("adminToken" = [])),
    responses((status = 200, description = "the kernels", body = KernelList), ApiError))]
pub async fn list(State(s): State<Arc<AppState>>, _: AdminRead) -> Answer<KernelList> {
    answer(KernelList {
        kernels: s.ctx.kernels().await?,
    })
}

/// `GET /admin/kernels/reported?uncovered=true`: the builds active hosts
/// run, as a bare array (`noreboot-build release --kernels-from-server`
/// reads it).
#[utoipa::path(get, path = "/api/v1/admin/kernels/reported",
    summary = "Kernel builds active hosts run, as a bare array; newest_level is null for a build no published level covers",
    security(("adminToken" = [])),
    params(("uncovered" = Option<bool>, Query, description = "`true`: only builds with no published level (`false`, the default: all); any other parameter is refused with 400")),
    responses((status = 200, description = "the builds", body = ReportedBuilds), ApiError))]
pub async fn reported(
    State(s): State<Arc<AppState>>,
    _: AdminRead,
    RawQuery(query): RawQuery,
) -> Answer<ReportedBuilds> {
    let which = coverage_from_query(query.as_deref())?;
    answer(ReportedBuilds(s.ctx.reported_builds(which).await?))
}

/// `uncovered=true|false`, at most once. Parsed by hand like publish's
/// `feed=`, so that a misspelt parameter is refused by its name instead of
/// silently listing every build.
fn coverage_from_query(query: Option<&str>) -> Result<Coverage, ApiError> {
    let mut uncovered = None;
    for pair in query.unwrap_or("").split('&').filter(|p| !p.is_empty()) {
        let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
        if name != "uncovered" {
            // Query strings are as long as the client likes; the message
            // is not.
            let name: String = name.chars().take(80).collect();
            return Err(invalid(format!(
                "unknown query parameter {name:?}: /admin/kernels/reported takes only `uncovered=true` or `uncovered=false`"
            ))
            .into());
        }
        if uncovered.is_some() {
            return Err(invalid("query parameter `uncovered` is given more than once").into());
        }
        uncovered = Some(match value {
            "true" => true,
            "false" => false,
            other => {
                let other: String = other.chars().take(40).collect();
                return Err(invalid(format!(
                    "query parameter `uncovered`: {other:?} is neither `true` nor `false`"
                ))
                .into());
            }
        });
    }
    Ok(if uncovered == Some(true) {
        Coverage::Uncovered
    } else {
        Coverage::All
    })
}

#[cfg(test)]
mod tests {
    use axum::http::StatusCode;

    use super::*;

    #[test]
    fn reported_kernels_query() {
        for (q, want) in [
            (None, Coverage::All),
            (Some(""), Coverage::All),
            (Some("uncovered=false"), Coverage::All),
            (Some("uncovered=true"), Coverage::Uncovered),
        ] {
            assert_eq!(coverage_from_query(q).unwrap(), want, "{q:?}");
        }
        for (q, says) in [
            ("uncoverd=true", "unknown query parameter \"uncoverd\""),
            ("uncovered=true&feed=x", "unknown query parameter \"feed\""),
            ("uncovered", "\"\" is neither"),
            ("uncovered=1", "\"1\" is neither"),
            ("uncovered=true&uncovered=false", "more than once"),
        ] {
            let e = coverage_from_query(Some(q)).unwrap_err();
            assert_eq!(e.status, StatusCode::BAD_REQUEST, "{q}");
            assert!(e.message.contains(says), "{q}: {}", e.message);
        }
        // A long name is cut short in the message.
        let long = format!("{}=1", "x".repeat(10_000));
        let e = coverage_from_query(Some(&long)).unwrap_err();
        assert!(e.message.len() < 300, "{}", e.message.len());
    }
}
