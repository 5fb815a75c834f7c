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
use serde::Deserialize;
use serde_json::json;
use tokio::sync::mpsc;

use super::{int_param, page_request, paged, text_param, HostListQuery, ListQuery};
use crate::admin::hosts::{HostFilter, Status, HOSTS_LIST};
use crate::admin::reports::REPORTS_LIST;
use crate::api::error::ApiError;
use crate::api::extract::AdminRead;
use crate::api::AppState;
use crate::context::Context;
use crate::error::{invalid, Error};
use crate::page::{Cursor, Direction, PageRequest};
use crate::report::{csv_line, Policy, EXPOSURE_COLUMNS, HOST_COLUMNS};

/// Hosts read per query while streaming a CSV report: large enough that
/// the queries cost little beside the rows, small enough to keep the
/// memory of a download flat.
pub const CSV_CHUNK: i64 = 2000;

/// The query every report takes; the per-host views also take the host
/// list's page and filters.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReportQuery {
    format: Option<String>,
    policy_days: Option<String>,
    stale_hours: Option<String>,
    limit: Option<String>,
    cursor: Option<String>,
    feed: Option<String>,
    kernel: Option<String>,
    level: Option<String>,
    tag: Option<String>,
    hostname: Option<String>,
    status: Option<String>,
    stale: Option<String>,
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

async fn report(
    s: Arc<AppState>,
    uri: &axum::http::Uri,
    q: ReportQuery,
    view: View,
) -> Result<Response, ApiError> {
    let (csv, policy) = parse(&s, &q, view)?;
    match view {
        View::Summary | View::Cves => {
            let (summary, cves) = s.ctx.compliance_summary(policy).await?;
            if csv {
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
                return Ok(csv_answer(table.to_csv().into()));
            }
            Ok(axum::Json(if view == View::Summary {
                json!(summary)
            } else {
                json!({ "summary": summary, "cves": cves })
            })
            .into_response())
        }
        View::Hosts | View::Compliance => {
            let mut filter = q.hosts().filter()?;
            if view == View::Compliance {
                filter = exposed_only(filter)?;
            }
            if csv {
                return Ok(csv_answer(stream_csv(
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
            Ok(if view == View::Hosts {
                paged(
                    uri,
                    "hosts",
                    crate::page::Page {
                        items: rows,
                        next: hosts.next,
                        prev: hosts.prev,
                    },
                )
            } else {
                paged(
                    uri,
                    "exposures",
                    crate::page::Page {
                        items: exposures,
                        next: hosts.next,
                        prev: hosts.prev,
                    },
                )
            })
        }
    }
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

fn csv_answer(body: Body) -> Response {
    ([(header::CONTENT_TYPE, "text/csv; charset=utf-8")], body).into_response()
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
pub async fn list(
    State(s): State<Arc<AppState>>,
    _: AdminRead,
    OriginalUri(uri): OriginalUri,
    Query(q): Query<ListQuery>,
) -> Result<Response, ApiError> {
    let page = page_request(REPORTS_LIST, q.limit.as_deref(), q.cursor.as_deref())?;
    let reports = s
        .ctx
        .report_page(
            text_param(&q.host).as_deref(),
            text_param(&q.result).as_deref(),
            &page,
        )
        .await?;
    Ok(paged(&uri, "reports", reports))
}

/// `GET /admin/reports/compliance`: host × CVE exposures, by hostname,
/// host id and CVE.
pub async fn compliance(
    State(s): State<Arc<AppState>>,
    _: AdminRead,
    OriginalUri(uri): OriginalUri,
    Query(q): Query<ReportQuery>,
) -> Result<Response, ApiError> {
    report(s, &uri, q, View::Compliance).await
}

/// `GET /admin/reports/hosts`: each host's standing, by hostname and id.
pub async fn hosts(
    State(s): State<Arc<AppState>>,
    _: AdminRead,
    OriginalUri(uri): OriginalUri,
    Query(q): Query<ReportQuery>,
) -> Result<Response, ApiError> {
    report(s, &uri, q, View::Hosts).await
}

/// `GET /admin/reports/cves`: each CVE across the fleet.
pub async fn cves(
    State(s): State<Arc<AppState>>,
    _: AdminRead,
    OriginalUri(uri): OriginalUri,
    Query(q): Query<ReportQuery>,
) -> Result<Response, ApiError> {
    report(s, &uri, q, View::Cves).await
}

/// `GET /admin/reports/summary`: the fleet in numbers.
pub async fn summary(
    State(s): State<Arc<AppState>>,
    _: AdminRead,
    OriginalUri(uri): OriginalUri,
    Query(q): Query<ReportQuery>,
) -> Result<Response, ApiError> {
    report(s, &uri, q, View::Summary).await
}
