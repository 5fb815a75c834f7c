//! `GET /metrics`: Prometheus text exposition (format 0.0.4).
//!
//! Open by default, like most exporters: it shows counts only — no host
//! names, ids, tokens or CVEs — and route templates, never raw paths.
//! `serve --metrics-token T` makes it require `Authorization: Bearer T`
//! (Prometheus' `authorization` scrape setting) where counts alone are
//! too much to show.
//!
//! Process counters (requests, check-ins, registration refusals) live in
//! [`Metrics`] and restart at zero with the server, as Prometheus counters
//! may; fleet figures (hosts by state, levels, builds hosts run without a
//! level, reports by result) are read from the database, so every replica
//! reports the same — at most once per [`FLEET_MAX_AGE`] seconds and never
//! two computations at a time: scrapes in between, and those that arrive
//! while one computes, share its result (the grouped scans behind them
//! take a good part of a second for a million hosts, and concurrent
//! unauthenticated scrapes of the old whole-fleet report starved admin
//! requests).
//!
//! The series the shipped alerting rules read
//! (`deploy/prometheus/noreboot-rules.yml`) are all present from the
//! first scrape, at zero where nothing happened yet: an alert on a
//! counter's `increase()` misses the step that creates its series.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use axum::extract::{MatchedPath, Request, State};
use axum::http::{header, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use sqlx::Row;

use super::error::ApiError;
use super::AppState;
use crate::admin::Coverage;
use crate::error::{DbContext, Error};

/// How old, in seconds, the fleet figures `/metrics` shows may be.
pub const FLEET_MAX_AGE: i64 = 15;

/// The fleet figures of one computation.
#[derive(Debug, Clone)]
pub struct FleetFigures {
    /// When they were computed (the server clock's seconds).
    at: i64,
    /// (state, hosts) for protected, exposed, unsupported.
    by_state: [(&'static str, i64); 3],
    total: i64,
    stale: i64,
    breaching: i64,
    levels: i64,
    /// Builds active hosts run that have no published level.
    uncovered_builds: i64,
    /// Reports per result of [`REPORT_RESULTS`], then `other`.
    reports: [(&'static str, i64); REPORT_RESULTS.len() + 1],
}

/// The results agents report (`protocol::ReportRequest::result`). Each is
/// shown from zero, before any host has sent it: Prometheus' `increase()`
/// cannot see a counter's first step when that step creates the series,
/// so the first failed apply of a fleet would never alert. Any other
/// result a host sends counts as `other`, so a host cannot add series.
pub const REPORT_RESULTS: [&str; 4] = ["applied", "failed", "refused", "rolled-back"];

/// Counters kept by the running server.
#[derive(Debug, Default)]
pub struct Metrics {
    /// The last fleet figures; the lock makes computations one at a time.
    pub fleet: tokio::sync::Mutex<Option<FleetFigures>>,
    /// Fleet computations made (for the test that they are shared).
    pub fleet_computations: AtomicU64,
    /// Successful check-ins.
    pub checkins: AtomicU64,
    /// Refused registrations by reason.
    pub refusals: Mutex<BTreeMap<&'static str, u64>>,
    /// Requests by (route template, method, status).
    pub requests: Mutex<BTreeMap<(String, String, u16), u64>>,
    /// Answers with a 5xx status, whatever the route: a counter shown
    /// from zero, unlike the per-route series, which appear with their
    /// first answer (too late for `increase()` to count it).
    pub server_errors: AtomicU64,
}

impl Metrics {
    /// Counts a refused registration.
    pub fn refused(&self, reason: &'static str) {
        // A poisoned lock only means another thread panicked mid-increment;
        // the map itself is still sound.
        let mut m = self.refusals.lock().unwrap_or_else(|p| p.into_inner());
        *m.entry(reason).or_default() += 1;
    }
}

/// Middleware counting every answer by route template, method and status.
pub async fn count_requests(State(s): State<Arc<AppState>>, req: Request, next: Next) -> Response {
    // Templates, not paths: a raw path (`/bundles/<sha>`) would make one
    // series per bundle. Unknown paths all count as `unmatched`.
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "unmatched".to_string(), |m| m.as_str().to_string());
    let method = method_label(req.method()).to_string();
    let resp = next.run(req).await;
    if resp.status().is_server_error() {
        s.metrics.server_errors.fetch_add(1, Ordering::Relaxed);
    }
    let key = (route, method, resp.status().as_u16());
    let mut m = s.metrics.requests.lock().unwrap_or_else(|p| p.into_inner());
    *m.entry(key).or_default() += 1;
    resp
}

/// The label of a request method: the standard ones by name, any other
/// as `other`. HTTP lets a client invent methods, and one series per
/// invented method grew the process and `/metrics` without bound.
fn method_label(m: &axum::http::Method) -> &'static str {
    use axum::http::Method;
    match *m {
        Method::GET => "GET",
        Method::HEAD => "HEAD",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::DELETE => "DELETE",
        Method::PATCH => "PATCH",
        Method::OPTIONS => "OPTIONS",
        Method::CONNECT => "CONNECT",
        Method::TRACE => "TRACE",
        _ => "other",
    }
}

/// Escapes a label value (backslash, quote, newline).
fn label(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// `GET /metrics`.
#[utoipa::path(get, path = "/metrics",
    summary = "Prometheus metrics (text exposition 0.0.4)",
    security((), ("metricsToken" = [])),
    responses((status = 200, description = "the metrics", body = String, content_type = "text/plain"), ApiError))]
pub async fn metrics(
    State(s): State<Arc<AppState>>,
    headers: axum::http::HeaderMap,
) -> Result<Response, ApiError> {
    if let Some(want) = &s.settings.metrics_token {
        let got = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "));
        // Compare hashes: equal-length digests, so the comparison's timing
        // says nothing about how much of a guess was right.
        let matches =
            got.is_some_and(|g| crate::secrets::hash(g.trim()) == crate::secrets::hash(want));
        if !matches {
            return Err(Error::Unauthorized("metrics need the metrics bearer token".into()).into());
        }
    }
    let mut out = String::new();
    let f = fleet_figures(&s).await?;
    out.push_str("# HELP noreboot_hosts Registered hosts by compliance state.\n# TYPE noreboot_hosts gauge\n");
    for (state, n) in f.by_state {
        let _ = writeln!(out, "noreboot_hosts{{state=\"{state}\"}} {n}");
    }
    out.push_str(
        "# HELP noreboot_hosts_total Registered hosts.\n# TYPE noreboot_hosts_total gauge\n",
    );
    let _ = writeln!(out, "noreboot_hosts_total {}", f.total);
    out.push_str("# HELP noreboot_hosts_stale Hosts without a check-in within the staleness threshold.\n# TYPE noreboot_hosts_stale gauge\n");
    let _ = writeln!(out, "noreboot_hosts_stale {}", f.stale);
    out.push_str("# HELP noreboot_hosts_breaching Hosts exposed to a fixed CVE for longer than the policy.\n# TYPE noreboot_hosts_breaching gauge\n");
    let _ = writeln!(out, "noreboot_hosts_breaching {}", f.breaching);
    out.push_str("# HELP noreboot_levels_published Patch levels published, all kernels.\n# TYPE noreboot_levels_published gauge\n");
    let _ = writeln!(out, "noreboot_levels_published {}", f.levels);
    out.push_str("# HELP noreboot_uncovered_builds Kernel builds active hosts run that have no published level (GET /api/v1/admin/kernels/reported?uncovered=true lists them).\n# TYPE noreboot_uncovered_builds gauge\n");
    let _ = writeln!(out, "noreboot_uncovered_builds {}", f.uncovered_builds);
    out.push_str("# HELP noreboot_host_reports_total Host reports received, by result (applied, failed, refused, rolled-back; any other is `other`).\n# TYPE noreboot_host_reports_total counter\n");
    for (result, n) in f.reports {
        let _ = writeln!(
            out,
            "noreboot_host_reports_total{{result=\"{result}\"}} {n}"
        );
    }

    out.push_str("# HELP noreboot_checkins_total Check-ins answered since the server started.\n# TYPE noreboot_checkins_total counter\n");
    let _ = writeln!(
        out,
        "noreboot_checkins_total {}",
        s.metrics.checkins.load(Ordering::Relaxed)
    );
    out.push_str("# HELP noreboot_checkin_batches_total Batches the check-in writer recorded (check-ins per batch: noreboot_checkins_total over this).\n# TYPE noreboot_checkin_batches_total counter\n");
    let _ = writeln!(
        out,
        "noreboot_checkin_batches_total {}",
        s.checkins.batches()
    );

    out.push_str("# HELP noreboot_registration_refusals_total Registrations refused since the server started, by reason.\n# TYPE noreboot_registration_refusals_total counter\n");
    {
        let m = s.metrics.refusals.lock().unwrap_or_else(|p| p.into_inner());
        for reason in ["rate_limited", "unauthorized", "invalid"] {
            let n = m.get(reason).copied().unwrap_or(0);
            let _ = writeln!(
                out,
                "noreboot_registration_refusals_total{{reason=\"{reason}\"}} {n}"
            );
        }
    }

    out.push_str("# HELP noreboot_http_requests_total HTTP requests answered since the server started.\n# TYPE noreboot_http_requests_total counter\n");
    {
        let m = s.metrics.requests.lock().unwrap_or_else(|p| p.into_inner());
        for ((route, method, status), n) in m.iter() {
            let _ = writeln!(
                out,
                "noreboot_http_requests_total{{route=\"{}\",method=\"{}\",status=\"{status}\"}} {n}",
                label(route),
                label(method)
            );
        }
    }
    out.push_str("# HELP noreboot_http_server_errors_total HTTP answers with a 5xx status since the server started (noreboot_http_requests_total has them by route).\n# TYPE noreboot_http_server_errors_total counter\n");
    let _ = writeln!(
        out,
        "noreboot_http_server_errors_total {}",
        s.metrics.server_errors.load(Ordering::Relaxed)
    );
    Ok((
        StatusCode::OK,
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        out,
    )
        .into_response())
}

/// The fleet figures: the last ones while they are fresh, else computed
/// now — by one scrape at a time; those waiting meanwhile take its result.
async fn fleet_figures(s: &AppState) -> Result<FleetFigures, ApiError> {
    let mut slot = s.metrics.fleet.lock().await;
    let now = s.ctx.clock.now();
    if let Some(f) = slot
        .as_ref()
        .filter(|f| now - f.at < FLEET_MAX_AGE && f.at <= now)
    {
        return Ok(f.clone());
    }
    s.metrics.fleet_computations.fetch_add(1, Ordering::Relaxed);
    let (sum, _) = s.ctx.compliance_summary(s.settings.policy).await?;
    let pool = s.ctx.db.pool();
    let row = sqlx::query("SELECT COUNT(*) FROM levels")
        .fetch_one(pool)
        .await
        .ctx("count levels")?;
    let levels: i64 = row.try_get(0).ctx("count levels")?;
    // Another grouped scan of the hosts table (measured on SQLite: 1.3 to
    // 1.8 s for a million hosts on 40 builds, before migration 0004).
    let uncovered_builds = s.ctx.reported_builds(Coverage::Uncovered).await?.len() as i64;
    let rows =
        sqlx::query("SELECT result, COUNT(*) FROM host_reports GROUP BY result ORDER BY result")
            .fetch_all(pool)
            .await
            .ctx("count reports")?;
    let mut reports = [("other", 0); REPORT_RESULTS.len() + 1];
    for (slot, result) in reports.iter_mut().zip(REPORT_RESULTS) {
        slot.0 = result;
    }
    for r in rows {
        let result = r.try_get::<String, _>(0).ctx("count reports")?;
        let n = r.try_get::<i64, _>(1).ctx("count reports")?;
        let i = REPORT_RESULTS
            .iter()
            .position(|k| *k == result)
            .unwrap_or(REPORT_RESULTS.len());
        reports[i].1 += n;
    }
    let f = FleetFigures {
        at: now,
        by_state: [
            ("protected", sum.hosts_protected as i64),
            ("exposed", sum.hosts_exposed as i64),
            ("unsupported", sum.hosts_unsupported as i64),
        ],
        total: sum.hosts_total as i64,
        stale: sum.hosts_stale as i64,
        breaching: sum.hosts_breaching as i64,
        levels,
        uncovered_builds,
        reports,
    };
    *slot = Some(f.clone());
    Ok(f)
}
