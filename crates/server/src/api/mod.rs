//! The HTTP API: all routes in [`router`], the agent endpoints exactly as
//! `protocol` documents them (`agent`), the admin endpoints behind bearer
//! tokens with roles (`admin`, one module per resource), and the limits
//! every request meets: body sizes (64 KiB of JSON, a bundle's maximum for
//! publishing), a request timeout, registrations and failed dashboard
//! sign-ins per address and minute, the dashboard's same-origin check on
//! its forms (`dashboard`), and JSON error bodies for every failure
//! (`error`). Connections are accepted, capped and timed out between
//! requests in `connections`. Each handler carries its OpenAPI
//! description (`#[utoipa::path]`), from which `openapi` makes the
//! document.

pub mod admin;
pub mod agent;
pub mod apt;
pub mod connections;
pub mod dashboard;
pub mod error;
pub mod extract;
pub mod metrics;
pub mod openapi;
pub mod ratelimit;

use std::sync::Arc;
use std::time::Duration;

use axum::extract::DefaultBodyLimit;
use axum::http::StatusCode;
use axum::routing::{get, post};
use axum::Router;
use tokio::net::TcpListener;
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::limit::RequestBodyLimitLayer;
use tower_http::timeout::TimeoutLayer;
use tower_http::trace::TraceLayer;

use crate::context::Context;
use ratelimit::{Limit, RegisterLimits};

/// Largest JSON request body.
pub const MAX_JSON: usize = 64 << 10;

/// Tunables of the HTTP server.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Failed registrations per source address and key presented, and
    /// minute (0: unlimited); failures with any key per address may be 4
    /// times that, successful registrations per address 20 times.
    pub register_per_minute: u32,
    /// The check-in interval suggested to agents, in seconds.
    pub checkin_interval: Option<u64>,
    /// How long one request may take, body included.
    pub request_timeout: Duration,
    /// Timeouts and the cap on the connections themselves.
    pub connections: connections::ConnectionLimits,
    /// The compliance reports' default policy.
    pub policy: crate::report::Policy,
    /// Bearer token `/metrics` requires (`None`: open).
    pub metrics_token: Option<String>,
    /// When a check-in is acknowledged.
    pub checkin_durability: crate::checkin::Durability,
    /// Failed dashboard sign-ins per client address and minute (0:
    /// unlimited); further attempts in that minute are refused with 429,
    /// even with a valid token.
    pub login_failures_per_minute: u32,
    /// How long a dashboard session lasts after its sign-in.
    pub session_lifetime: Duration,
    /// Browsers reach the server over HTTPS: here (`serve --tls-cert`) or
    /// at a TLS-terminating proxy (`serve --behind-tls-proxy`). The
    /// session cookie is then marked `Secure`, and dashboard forms must
    /// come from an `https://` page. `serve` sets it; the server cannot
    /// see a proxy's TLS for itself.
    pub https: bool,
    /// The URL hosts reach this server at, for `/install.sh` (`serve
    /// --public-url`); `None`: the request's Host header.
    pub public_url: Option<String>,
    /// How webhook deliveries are made (and how often the compliance
    /// policy is swept for hosts crossing it).
    pub webhooks: crate::webhooks::DeliverySettings,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            register_per_minute: 30,
            checkin_interval: Some(4 * 3600),
            request_timeout: Duration::from_secs(120),
            connections: connections::ConnectionLimits::default(),
            policy: crate::report::Policy::default(),
            metrics_token: None,
            checkin_durability: crate::checkin::Durability::default(),
            login_failures_per_minute: 10,
            session_lifetime: Duration::from_secs(12 * 3600),
            https: false,
            public_url: None,
            webhooks: crate::webhooks::DeliverySettings::default(),
        }
    }
}

/// What handlers share.
#[derive(Debug)]
pub struct AppState {
    /// Operations and storage.
    pub ctx: Context,
    /// Tunables.
    pub settings: Settings,
    /// Registrations per address.
    pub register_limiter: RegisterLimits,
    /// Failed dashboard sign-ins per address.
    pub login_limiter: Limit,
    /// Counters for `/metrics`.
    pub metrics: metrics::Metrics,
    /// The check-in writer.
    pub checkins: crate::checkin::Checkins,
    /// The APT repository's key and index files.
    pub repo: crate::apt::Repository,
}

impl AppState {
    /// State for a server with these settings; starts the check-in
    /// writer and the webhook deliveries, so it must be called inside a
    /// tokio runtime.
    pub fn new(ctx: Context, settings: Settings) -> Arc<Self> {
        // On PostgreSQL several processes may serve the database behind a
        // load balancer: their limits must be one allowance, not one each.
        let shared = (ctx.db.backend() == crate::db::Backend::Postgres).then(|| ctx.db.clone());
        crate::webhooks::start(ctx.clone(), settings.webhooks, settings.policy);
        Arc::new(Self {
            register_limiter: RegisterLimits::new(settings.register_per_minute, shared.clone()),
            login_limiter: Limit::new(
                "dashboard-sign-in-failures",
                settings.login_failures_per_minute,
                shared,
            ),
            metrics: metrics::Metrics::default(),
            checkins: crate::checkin::Checkins::start(
                ctx.clone(),
                settings.checkin_interval,
                settings.checkin_durability,
            ),
            repo: crate::apt::Repository::default(),
            ctx,
            settings,
        })
    }
}

/// `GET /healthz`: the process is live (the database is not probed: every
/// process shares it).
#[utoipa::path(get, path = "/healthz", tag = "health",
    summary = "Liveness",
    security(()),
    responses((status = 200, description = "live", body = String, content_type = "text/plain", example = "ok\n")))]
pub async fn healthz() -> &'static str {
    "ok\n"
}

/// Every route, with its limits.
pub fn router(state: Arc<AppState>) -> Router {
    let timeout = state.settings.request_timeout;
    let publish_limit = bundle::MAX_BUNDLE as usize;
    let api = Router::new()
        .route("/register", post(agent::register))
        .route("/register/check", post(agent::register_check))
        .route("/checkin", post(agent::checkin))
        .route("/bundles/{sha256}", get(agent::bundle))
        .route("/report", post(agent::report))
        .route("/admin/hosts", get(admin::hosts::list))
        .route("/admin/hosts/retired", get(admin::hosts::retired))
        .route("/admin/hosts/{host}/move", post(admin::hosts::move_host))
        .route("/admin/hosts/{host}/tags", post(admin::hosts::set_tags))
        .route("/admin/hosts/{host}/retire", post(admin::hosts::retire))
        .route("/admin/hosts/{host}/vex", get(admin::vex::host))
        .route("/admin/vex", get(admin::vex::fleet))
        .route(
            "/admin/webhooks",
            get(admin::webhooks::list).post(admin::webhooks::create),
        )
        .route("/admin/webhooks/{id}/delete", post(admin::webhooks::delete))
        .route("/admin/reports", get(admin::reports::list))
        .route("/admin/reports/compliance", get(admin::reports::compliance))
        .route("/admin/reports/hosts", get(admin::reports::hosts))
        .route("/admin/reports/cves", get(admin::reports::cves))
        .route("/admin/reports/summary", get(admin::reports::summary))
        .route("/admin/reports/printable", get(admin::reports::printable))
        .route("/admin/kernels", get(admin::kernels::list))
        .route("/admin/kernels/reported", get(admin::kernels::reported))
        .route("/admin/levels", get(admin::levels::list))
        .route(
            "/admin/feeds",
            get(admin::feeds::list).post(admin::feeds::create),
        )
        .route(
            "/admin/feeds/{feed}/kernels/{kernel}",
            get(admin::feeds::state),
        )
        .route("/admin/audit", get(admin::audit::list))
        .route(
            "/admin/keys",
            get(admin::keys::list).post(admin::keys::create),
        )
        .route("/admin/keys/{id}/revoke", post(admin::keys::revoke))
        .route(
            "/admin/publish",
            post(admin::publish::publish).layer(DefaultBodyLimit::max(publish_limit)),
        )
        .route(
            "/admin/agent-packages",
            get(admin::packages::list)
                .post(admin::packages::upload)
                .layer(DefaultBodyLimit::max(publish_limit)),
        )
        .route(
            "/admin/agent-packages/{version}/remove",
            post(admin::packages::remove),
        )
        .route("/admin/promote", post(admin::releases::promote))
        .route("/admin/pin", post(admin::releases::pin))
        .route("/admin/hold", post(admin::releases::hold))
        .route("/admin/unpin", post(admin::releases::unpin))
        .route("/admin/rollback", post(admin::releases::rollback))
        .route("/openapi.json", get(openapi::openapi));
    Router::new()
        .nest(protocol::API_PREFIX, api)
        .route("/healthz", get(healthz))
        .route("/install.sh", get(apt::install_sh))
        .route("/bundle-keys", get(apt::bundle_keys))
        .route("/apt/key.asc", get(apt::key_asc))
        .route("/apt/key.gpg", get(apt::key_gpg))
        .route("/apt/dists/stable/InRelease", get(apt::in_release))
        .route("/apt/dists/stable/Release", get(apt::release))
        .route("/apt/dists/stable/Release.gpg", get(apt::release_gpg))
        .route(
            "/apt/dists/stable/main/binary-amd64/Packages",
            get(apt::packages),
        )
        .route(
            "/apt/dists/stable/main/binary-amd64/Packages.gz",
            get(apt::packages_gz),
        )
        .route("/apt/pool/main/n/noreboot/{file}", get(apt::pool))
        .route("/metrics", get(metrics::metrics))
        .route("/ui", get(dashboard::index))
        .route(
            "/ui/login",
            get(dashboard::login_page).post(dashboard::login),
        )
        .route("/ui/logout", post(dashboard::logout))
        .route("/ui/hosts", get(dashboard::hosts))
        .route("/ui/kernels", get(dashboard::kernels))
        .route("/ui/compliance", get(dashboard::compliance))
        .route("/ui/compliance/report", get(dashboard::compliance_report))
        .route("/ui/audit", get(dashboard::audit))
        .layer(DefaultBodyLimit::max(MAX_JSON))
        .with_state(state.clone())
        // Over every route rather than the dashboard's alone, so a form
        // added to `/ui` later cannot miss it; it passes everything but
        // the dashboard's POSTs.
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            dashboard::same_origin,
        ))
        // Each `.layer` wraps the ones before it. From the inside out:
        // panics turned into 500s, the timeout, a hard ceiling on any body
        // (checked against Content-Length before reading), then JSON
        // error bodies for all of their answers (the ceiling's 413 and the
        // timeout's 408 were plain text while this sat innermost).
        .layer(CatchPanicLayer::custom(error::panic_response))
        .layer(TimeoutLayer::with_status_code(
            StatusCode::REQUEST_TIMEOUT,
            timeout,
        ))
        .layer(RequestBodyLimitLayer::new(publish_limit + MAX_JSON))
        .layer(axum::middleware::from_fn(error::json_errors))
        .layer(TraceLayer::new_for_http())
        // Outermost, so every answer is counted with its final status;
        // `Router::layer` runs it per route, where `MatchedPath` is known.
        .layer(axum::middleware::from_fn_with_state(
            state,
            metrics::count_requests,
        ))
}

/// Serves the API over TLS on `listener` until `shutdown` completes (see
/// [`connections::serve`]).
pub async fn serve_tls(
    listener: TcpListener,
    state: Arc<AppState>,
    tls: Arc<rustls::ServerConfig>,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let limits = state.settings.connections;
    let tls = tokio_rustls::TlsAcceptor::from(tls);
    connections::serve(listener, router(state), Some(tls), limits, shutdown).await
}

/// Serves the API on `listener` until `shutdown` completes (see
/// [`connections::serve`]).
pub async fn serve(
    listener: TcpListener,
    state: Arc<AppState>,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let limits = state.settings.connections;
    connections::serve(listener, router(state), None, limits, shutdown).await
}
