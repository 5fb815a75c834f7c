//! `GET /admin/reports` for any admin token: the hosts' own reports
//! (`?host=ID&result=R`, paged), and under
//! `/admin/reports/{compliance,hosts,cves,summary}` the compliance report
//! (see `report`), as JSON (default) or CSV (`?format=csv`).
//! `?policy_days=N&stale_hours=H` override the server's defaults (`serve
//! --policy-days`, `--stale-hours`) for one request.
//!
//! The summary and the CVE view are counted from a grouped scan (see
//! [`crate::Context::compliance_summary`]). The two views with a row per
//! host or per exposure take the host list's filters; as JSON they are
//! paged like the host list (`limit` counts hosts; the exposures view
//! lists only exposed hosts), as CSV they are the whole report, streamed:
//! written chunk by chunk as the database is read, so the server holds
//! one chunk per download whatever the fleet's size.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context as TaskContext, Poll};

use axum::body::{Body, Bytes};
use axum::extract::{OriginalUri, Query, State};
use axum::http::header;
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use serde_json::json;
use tokio::sync::mpsc;
use utoipa::{IntoParams, ToSchema};

use super::{int_param, page_answer, page_request, paged, text_param, HostListQuery, Linked};
use crate::admin::hosts::{HostFilter, Status, HOSTS_LIST};
use crate::admin::reports::REPORTS_LIST;
use crate::api::error::ApiError;
use crate::api::extract::AdminRead;
use crate::api::AppState;
use crate::context::Context;
use crate::error::{invalid, Error};
use crate::model::Report;
use crate::page::{Cursor, Direction, Page, PageRequest};
use crate::report::{
    csv_line, CveCompliance, Exposure, HostCompliance, Policy, Summary, EXPOSURE_COLUMNS,
    HOST_COLUMNS,
};

/// Hosts read per query while streaming a CSV report: large enough that
/// the queries cost little beside the rows, small enough to keep the
/// memory of a download flat.
pub const CSV_CHUNK: i64 = 2000;

/// The query every report takes; the per-host views also take the host
/// list's page and filters.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct ReportQuery {
    /// `json` (default; per host: one page, as the host list) or `csv`
    /// (the whole report; per host: streamed, no limit or cursor).
    format: Option<String>,
    /// Policy in days (default: the server's, 30).
    policy_days: Option<String>,
    /// Hours without check-in after which a host is stale.
    stale_hours: Option<String>,
    /// Per host: hosts per page, 1 to 1000 (default 100); JSON only.
    limit: Option<String>,
    /// Per host: where the page starts: the `next` or `prev` of an earlier
    /// answer (opaque; one this list did not hand out: 400). The answer's
    /// `Link` header carries the same as URLs (rel="next", rel="prev").
    cursor: Option<String>,
    /// Per host: only hosts following this feed.
    feed: Option<String>,
    /// Per host: only hosts whose kernel build-id starts with this, or
    /// whose release (`uname -r`) is exactly this.
    kernel: Option<String>,
    /// Per host: only hosts at this applied level.
    level: Option<String>,
    /// Per host: only hosts with this tag (exact).
    tag: Option<String>,
    /// Per host: only hosts whose hostname starts with this (case
    /// matters).
    hostname: Option<String>,
    /// Per host: `protected`, `exposed` or `unsupported` (see Compliance).
    status: Option<String>,
    /// Per host: `true`: only hosts without a check-in within the
    /// staleness threshold; `false`: only the others.
    stale: Option<String>,
}

/// The counted reports' query: the per-host views' parameters are refused
/// there. For the OpenAPI document; [`ReportQuery`] parses both.
#[derive(Debug, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct CountedReportQuery {
    /// `json` (default) or `csv`.
    pub format: Option<String>,
    /// Policy in days (default: the server's, 30).
    pub policy_days: Option<String>,
    /// Hours without check-in after which a host is stale.
    pub stale_hours: Option<String>,
}

impl ReportQuery {
    /// The host list's part of the query.
    fn hosts(&self) -> HostListQuery {
        HostListQuery {
            limit: self.limit.clone(),
            cursor: self.cursor.clone(),
            feed: self.feed.clone(),
            kernel: self.kernel.clone(),
            level: self.level.clone(),
            tag: self.tag.clone(),
            hostname: self.hostname.clone(),
            status: self.status.clone(),
            stale: self.stale.clone(),
        }
    }
}

/// Which view of the report.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum View {
    Compliance,
    Hosts,
    Cves,
    Summary,
}

/// The parsed query: CSV or not, and the policy.
fn parse(s: &AppState, q: &ReportQuery, view: View) -> Result<(bool, Policy), Error> {
    let csv = match q.format.as_deref() {
        None | Some("json") => false,
        Some("csv") => true,
        Some(other) => {
            return Err(invalid(format!(
                "format: {other:.40?}: expected `json` or `csv`"
            )))
        }
    };
    let policy = s.settings.policy.with(
        int_param("policy_days", q.policy_days.as_deref())?,
        int_param("stale_hours", q.stale_hours.as_deref())?,
    )?;
    let h = &q.hosts();
    let per_host = matches!(view, View::Hosts | View::Compliance);
    // The counted views have no pages or filters: refuse them rather than
    // ignore them.
    if !per_host {
        for (name, v) in [
            ("limit", &h.limit),
            ("cursor", &h.cursor),
            ("feed", &h.feed),
            ("kernel", &h.kernel),
            ("level", &h.level),
            ("tag", &h.tag),
            ("hostname", &h.hostname),
            ("status", &h.status),
            ("stale", &h.stale),
        ] {
            if v.is_some() {
                return Err(invalid(format!(
                    "{name}: this report is not a list of hosts and takes no {name}"
                )));
            }
        }
    } else if csv && (h.cursor.is_some() || h.limit.is_some()) {
        return Err(invalid(
            "limit, cursor: a CSV report is the whole report, streamed; page the JSON one",
        ));
    }
    Ok((csv, policy))
}

/// A report as JSON (`T`) or as CSV (`?format=csv`).
#[derive(Debug)]
pub enum OrCsv<T> {
    /// The JSON answer.
    Json(T),
    /// The CSV text, `text/csv`.
    Csv(Body),
}

impl<T: IntoResponse> IntoResponse for OrCsv<T> {
    fn into_response(self) -> Response {
        match self {
            OrCsv::Json(j) => j.into_response(),
            OrCsv::Csv(body) => {
                ([(header::CONTENT_TYPE, "text/csv; charset=utf-8")], body).into_response()
            }
        }
    }
}

/// The CVE view: each CVE across the fleet, with the totals.
#[derive(Debug, Serialize, ToSchema)]
pub struct CveReport {
    /// The fleet in numbers.
    pub summary: Summary,
    /// Per CVE, by id.
    pub cves: Vec<CveCompliance>,
}

page_answer! {
    /// One page of the hosts' compliance standing, by hostname then id.
    HostCompliancePage { hosts: HostCompliance }
}

page_answer! {
    /// The exposures of one page of exposed hosts, by hostname, host id
    /// and CVE.
    ExposurePage { exposures: Exposure }
}

page_answer! {
    /// One page of the hosts' reports, newest first.
    ReportPage { reports: Report }
}

/// The summary and the CVE view, counted: JSON, or the CSV of `table`.
async fn counted<T>(
    s: &AppState,
    q: &ReportQuery,
    view: View,
    json: impl FnOnce(Summary, Vec<CveCompliance>) -> T,
) -> Result<OrCsv<axum::Json<T>>, ApiError> {
    let (csv, policy) = parse(s, q, view)?;
    let (summary, cves) = s.ctx.compliance_summary(policy).await?;
    if !csv {
        return Ok(OrCsv::Json(axum::Json(json(summary, cves))));
    }
    let table = if view == View::Summary {
        crate::report::Compliance {
            summary,
            hosts: Vec::new(),
            cves: Vec::new(),
            exposures: Vec::new(),
        }
        .summary_table()
    } else {
        crate::report::Compliance {
            summary,
            hosts: Vec::new(),
            cves,
            exposures: Vec::new(),
        }
        .cves_table()
    };
    Ok(OrCsv::Csv(table.to_csv().into()))
}

/// The views with a row per host or per exposure: one page as JSON, the
/// host standings and exposures of its hosts in `json`, or the whole
/// report as streamed CSV.
async fn per_host<T, P: From<Page<T>>>(
    s: Arc<AppState>,
    uri: &axum::http::Uri,
    q: ReportQuery,
    view: View,
    json: impl FnOnce(Vec<HostCompliance>, Vec<Exposure>) -> Vec<T>,
) -> Result<OrCsv<Linked<P>>, ApiError> {
    let (csv, policy) = parse(&s, &q, view)?;
    let mut filter = q.hosts().filter()?;
    if view == View::Compliance {
        filter = exposed_only(filter)?;
    }
    if csv {
        return Ok(OrCsv::Csv(stream_csv(
            s.ctx.clone(),
            filter,
            policy,
            view == View::Compliance,
        )));
    }
    let page = q.hosts().page(HOSTS_LIST)?;
    let hosts = s.ctx.host_page(&filter, &page, policy).await?;
    let fixes = s.ctx.fixes().await?;
    let now = s.ctx.clock.now();
    let mut rows = Vec::new();
    let mut exposures = Vec::new();
    for h in &hosts.items {
        let (standing, mut exposed) = fixes.standing(h, now, policy);
        rows.push(standing);
        exposures.append(&mut exposed);
    }
    let page = Page {
        items: json(rows, exposures),
        next: hosts.next,
        prev: hosts.prev,
    };
    Ok(OrCsv::Json(paged(uri, page)))
}

/// The exposures view lists exposed hosts: `filter` with that status, or
/// a refusal if it asked for another one.
fn exposed_only(mut f: HostFilter) -> Result<HostFilter, Error> {
    match f.status {
        None | Some(Status::Exposed) => {
            f.status = Some(Status::Exposed);
            Ok(f)
        }
        Some(_) => Err(invalid(
            "status: the exposures report lists exposed hosts only",
        )),
    }
}

/// A response body fed by a channel: what [`stream_csv`]'s task writes.
struct ChannelBody(mpsc::Receiver<Result<Bytes, std::io::Error>>);

impl http_body::Body for ChannelBody {
    type Data = Bytes;
    type Error = std::io::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut TaskContext<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Bytes>, std::io::Error>>> {
        self.0
            .poll_recv(cx)
            .map(|o| o.map(|r| r.map(http_body::Frame::data)))
    }
}

/// The whole per-host (or per-exposure) CSV report of the hosts `filter`
/// passes, as a body written while it is sent: a task reads the hosts
/// [`CSV_CHUNK`] at a time by the host list's keyset and hands each chunk's
/// CSV to the body through a channel of two, so a slow client slows the
/// reads instead of growing the server's memory, and a client that goes
/// away stops them. Chunks rather than one cursor over the whole table: a
/// cursor held for a whole download would pin a pooled connection and,
/// on SQLite, a read snapshot the WAL cannot be checkpointed past, for as
/// long as the slowest client takes; the keyset returns every host that
/// exists for the whole download exactly once. A database error midway
/// aborts the body, so the client sees a broken transfer, never a short
/// report that looks whole.
pub fn stream_csv(ctx: Context, filter: HostFilter, policy: Policy, exposures: bool) -> Body {
    let (tx, rx) = mpsc::channel(2);
    tokio::spawn(async move {
        let now = ctx.clock.now();
        let header = if exposures {
            csv_line(&EXPOSURE_COLUMNS)
        } else {
            csv_line(&HOST_COLUMNS)
        };
        if tx.send(Ok(Bytes::from(header))).await.is_err() {
            return;
        }
        let fixes = match ctx.fixes().await {
            Ok(f) => f,
            Err(e) => return abort(&tx, e).await,
        };
        let mut page = PageRequest::first(CSV_CHUNK);
        loop {
            let hosts = match ctx.host_page(&filter, &page, policy).await {
                Ok(p) => p,
                Err(e) => return abort(&tx, e).await,
            };
            let mut out = String::with_capacity(hosts.items.len() * 200);
            for h in &hosts.items {
                let (standing, exposed) = fixes.standing(h, now, policy);
                if exposures {
                    for e in &exposed {
                        out.push_str(&csv_line(&e.cells()));
                    }
                } else {
                    out.push_str(&csv_line(&standing.cells()));
                }
            }
            if tx.send(Ok(Bytes::from(out))).await.is_err() {
                return; // the client went away
            }
            let (Some(_), Some(last)) = (hosts.next, hosts.items.last()) else {
                return;
            };
            page = PageRequest {
                limit: CSV_CHUNK,
                cursor: Some(Cursor {
                    list: HOSTS_LIST.to_string(),
                    direction: Direction::After,
                    key: vec![json!(last.hostname), json!(last.id)],
                }),
            };
        }
    });
    Body::new(ChannelBody(rx))
}

async fn abort(tx: &mpsc::Sender<Result<Bytes, std::io::Error>>, e: Error) {
    tracing::error!("streaming a CSV report failed: {e}");
    let _ = tx.send(Err(std::io::Error::other(e.to_string()))).await;
}

/// `GET /admin/reports?host=ID&result=R&limit=N&cursor=C`: newest first.
#[utoipa::path(get, path = "/api/v1/admin/reports",
    summary = "Host reports, newest first, one page",
    security(("adminToken" = [])),
    params(ListQuery),
    responses((status = 200, description = "one page of reports", body = ReportPage, headers(("Link" = String, description = "the neighbouring pages as URLs (RFC 8288: rel=\"next\", rel=\"prev\"); absent when there are none"))), ApiError))]
pub async fn list(
    State(s): State<Arc<AppState>>,
    _: AdminRead,
    OriginalUri(uri): OriginalUri,
    Query(q): Query<ListQuery>,
) -> Result<Linked<ReportPage>, ApiError> {
    let page = page_request(REPORTS_LIST, q.limit.as_deref(), q.cursor.as_deref())?;
    let reports = s
        .ctx
        .report_page(
            text_param(&q.host).as_deref(),
            text_param(&q.result).as_deref(),
            &page,
        )
        .await?;
    Ok(paged(&uri, reports))
}

/// `GET /admin/reports/compliance`: host × CVE exposures, by hostname,
/// host id and CVE.
#[utoipa::path(get, path = "/api/v1/admin/reports/compliance",
    summary = "Every host x CVE exposure with days exposed and policy breach, by hostname, host id and CVE; as JSON one page of exposed hosts' exposures",
    security(("adminToken" = [])),
    params(ReportQuery),
    responses((status = 200, description = "the report: JSON (one page) or CSV", headers(("Link" = String, description = "the neighbouring pages as URLs (RFC 8288: rel=\"next\", rel=\"prev\"); absent when there are none")),
        content((ExposurePage = "application/json"), (String = "text/csv"))), ApiError))]
pub async fn compliance(
    State(s): State<Arc<AppState>>,
    _: AdminRead,
    OriginalUri(uri): OriginalUri,
    Query(q): Query<ReportQuery>,
) -> Result<OrCsv<Linked<ExposurePage>>, ApiError> {
    per_host(s, &uri, q, View::Compliance, |_, exposures| exposures).await
}

/// `GET /admin/reports/hosts`: each host's standing, by hostname and id.
#[utoipa::path(get, path = "/api/v1/admin/reports/hosts",
    summary = "Each host's compliance standing, by hostname then id; as JSON one page",
    security(("adminToken" = [])),
    params(ReportQuery),
    responses((status = 200, description = "the report: JSON (one page) or CSV", headers(("Link" = String, description = "the neighbouring pages as URLs (RFC 8288: rel=\"next\", rel=\"prev\"); absent when there are none")),
        content((HostCompliancePage = "application/json"), (String = "text/csv"))), ApiError))]
pub async fn hosts(
    State(s): State<Arc<AppState>>,
    _: AdminRead,
    OriginalUri(uri): OriginalUri,
    Query(q): Query<ReportQuery>,
) -> Result<OrCsv<Linked<HostCompliancePage>>, ApiError> {
    per_host(s, &uri, q, View::Hosts, |rows, _| rows).await
}

/// `GET /admin/reports/cves`: each CVE across the fleet.
#[utoipa::path(get, path = "/api/v1/admin/reports/cves",
    summary = "Each CVE across the fleet",
    security(("adminToken" = [])),
    params(CountedReportQuery),
    responses((status = 200, description = "the report: JSON or CSV", content((CveReport = "application/json"), (String = "text/csv"))), ApiError))]
pub async fn cves(
    State(s): State<Arc<AppState>>,
    _: AdminRead,
    Query(q): Query<ReportQuery>,
) -> Result<OrCsv<axum::Json<CveReport>>, ApiError> {
    counted(&s, &q, View::Cves, |summary, cves| CveReport {
        summary,
        cves,
    })
    .await
}

/// `GET /admin/reports/summary`: the fleet in numbers.
#[utoipa::path(get, path = "/api/v1/admin/reports/summary",
    summary = "Fleet compliance summary",
    security(("adminToken" = [])),
    params(CountedReportQuery),
    responses((status = 200, description = "the report: JSON or CSV", content((Summary = "application/json"), (String = "text/csv"))), ApiError))]
pub async fn summary(
    State(s): State<Arc<AppState>>,
    _: AdminRead,
    Query(q): Query<ReportQuery>,
) -> Result<OrCsv<axum::Json<Summary>>, ApiError> {
    counted(&s, &q, View::Summary, |summary, _| summary).await
}

/// `GET /admin/reports/printable`: the printable compliance report for a
/// period, as the dashboard serves it (`/ui/compliance/report`).
#[utoipa::path(get, path = "/api/v1/admin/reports/printable",
    summary = "The printable compliance report for a period: HTML to print, or PDF",
    description = "Figures per day from the server's daily history (days it did not record are shown as missing), charts of hosts by standing and of the exposure distribution against the policy, each CVE's timeline, and the audit trail of publications, releases, pins, holds and rollbacks in the period.",
    security(("adminToken" = [])),
    params(crate::api::dashboard::PrintableQuery),
    responses((status = 200, description = "the report", content((String = "text/html"), ("application/pdf"))), ApiError))]
pub async fn printable(
    State(s): State<Arc<AppState>>,
    _: AdminRead,
    Query(q): Query<crate::api::dashboard::PrintableQuery>,
) -> Result<Response, ApiError> {
    Ok(crate::api::dashboard::printable_report(&s.ctx, s.settings.policy, &q).await?)
}

/// `?limit=&cursor=&host=&result=` of the host reports.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct ListQuery {
    /// Rows per page, 1 to 1000 (default 100); out of range: 400.
    limit: Option<String>,
    /// Where the page starts: the `next` or `prev` of an earlier answer
    /// (opaque; one this list did not hand out: 400).
    cursor: Option<String>,
    /// Only this host's reports (its id).
    host: Option<String>,
    /// Only reports with this result (`applied`, `failed`, …).
    result: Option<String>,
}
