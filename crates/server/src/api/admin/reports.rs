//! `GET /admin/reports` for any admin token: the hosts' own reports
//! (`?host=ID&limit=N`), and under `/admin/reports/{compliance,hosts,cves,summary}`
//! the compliance report (see `report`), as JSON (default) or CSV
//! (`?format=csv`). `?policy_days=N&stale_hours=H` override the server's
//! defaults (`serve --policy-days`, `--stale-hours`) for one request.

use std::sync::Arc;

use axum::extract::{Query, State};
use axum::http::header;
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::json;

use super::{answer, Answer, ListQuery};
use crate::api::error::ApiError;
use crate::api::extract::AdminRead;
use crate::api::AppState;
use crate::error::invalid;
use crate::report::{Compliance, Table};

/// The query every report takes.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReportQuery {
    format: Option<String>,
    policy_days: Option<i64>,
    stale_hours: Option<i64>,
}

/// Which view of the report.
#[derive(Debug, Clone, Copy)]
enum View {
    Compliance,
    Hosts,
    Cves,
    Summary,
}

async fn report(s: &AppState, q: ReportQuery, view: View) -> Result<Response, ApiError> {
    let csv = match q.format.as_deref() {
        None | Some("json") => false,
        Some("csv") => true,
        Some(other) => {
            return Err(invalid(format!("format {other:.40?}: expected `json` or `csv`")).into())
        }
    };
    let policy = s.settings.policy.with(q.policy_days, q.stale_hours)?;
    let c = s.ctx.compliance(policy).await?;
    if csv {
        let table: Table = match view {
            View::Compliance => c.exposures_table(),
            View::Hosts => c.hosts_table(),
            View::Cves => c.cves_table(),
            View::Summary => c.summary_table(),
        };
        return Ok((
            [(header::CONTENT_TYPE, "text/csv; charset=utf-8")],
            table.to_csv(),
        )
            .into_response());
    }
    let Compliance {
        summary,
        hosts,
        cves,
        exposures,
    } = c;
    let body = match view {
        View::Compliance => json!({ "summary": summary, "exposures": exposures }),
        View::Hosts => json!({ "summary": summary, "hosts": hosts }),
        View::Cves => json!({ "summary": summary, "cves": cves }),
        View::Summary => json!(summary),
    };
    Ok(axum::Json(body).into_response())
}

/// `GET /admin/reports?host=ID&limit=N`: newest first.
pub async fn list(
    State(s): State<Arc<AppState>>,
    _: AdminRead,
    Query(q): Query<ListQuery>,
) -> Answer {
    let reports = s
        .ctx
        .reports(q.host.as_deref(), q.limit.unwrap_or(100))
        .await?;
    answer(json!({ "reports": reports }))
}

/// `GET /admin/reports/compliance`: every host × CVE exposure.
pub async fn compliance(
    State(s): State<Arc<AppState>>,
    _: AdminRead,
    Query(q): Query<ReportQuery>,
) -> Result<Response, ApiError> {
    report(&s, q, View::Compliance).await
}

/// `GET /admin/reports/hosts`: each host's standing.
pub async fn hosts(
    State(s): State<Arc<AppState>>,
    _: AdminRead,
    Query(q): Query<ReportQuery>,
) -> Result<Response, ApiError> {
    report(&s, q, View::Hosts).await
}

/// `GET /admin/reports/cves`: each CVE across the fleet.
pub async fn cves(
    State(s): State<Arc<AppState>>,
    _: AdminRead,
    Query(q): Query<ReportQuery>,
) -> Result<Response, ApiError> {
    report(&s, q, View::Cves).await
}

/// `GET /admin/reports/summary`: the fleet in numbers.
pub async fn summary(
    State(s): State<Arc<AppState>>,
    _: AdminRead,
    Query(q): Query<ReportQuery>,
) -> Result<Response, ApiError> {
    report(&s, q, View::Summary).await
}
