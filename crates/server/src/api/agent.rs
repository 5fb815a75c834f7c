//! The agent endpoints (`protocol`'s table): register, check-in, bundle
//! download and report. Each authenticated one acts on the token's host.

use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use axum::body::{Body, Bytes};
use axum::extract::{ConnectInfo, Path, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use http_body::{Frame, SizeHint};
use protocol::{CheckinRequest, CheckinResponse, RegisterRequest, RegisterResponse, ReportRequest};

use super::error::ApiError;
use super::extract::{Host, HostToken, Json};
use super::ratelimit::Refusal;
use super::AppState;
use crate::blobs::{BlobError, BlobReader};

/// `POST /register`: a registration key → a host token (201).
#[utoipa::path(post, path = "/api/v1/register",
    summary = "Register a host with a registration key; answers its token (rate limited per address)",
    security(()),
    request_body = RegisterRequest,
    responses((status = 201, description = "registered: the host's token", body = RegisterResponse), ApiError))]
pub async fn register(
    State(state): State<Arc<AppState>>,
    ConnectInfo(addr): ConnectInfo<SocketAddr>,
    Json(req): Json<RegisterRequest>,
) -> Result<(StatusCode, axum::Json<RegisterResponse>), Response> {
    let too_many = |what: &str, retry: u64| {
        state.metrics.refused("rate_limited");
        let mut r = ApiError::new(
            StatusCode::TOO_MANY_REQUESTS,
            format!("too many {what} from {}: try again in {retry} s", addr.ip()),
        )
        .into_response();
        r.headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from(retry));
        r
    };
    let refused = |r: Refusal| match r {
        Refusal::Failures(retry) => too_many("failed registrations", retry),
        Refusal::Successes(retry) => too_many("registrations", retry),
    };
    let attempt = state
        .register_limiter
        .start(addr.ip(), &req.registration_key, state.ctx.clock.now())
        .await
        .map_err(|e| ApiError::from(e).into_response())?
        .map_err(refused)?;
    let resp = match state.ctx.register(&req).await {
        Ok(r) => {
            state.register_limiter.succeeded(attempt).await;
            r
        }
        Err(e) => {
            state.register_limiter.failed(attempt).await;
            match &e {
                crate::Error::Unauthorized(_) => state.metrics.refused("unauthorized"),
                crate::Error::Invalid(_) => state.metrics.refused("invalid"),
                _ => {}
            }
            return Err(ApiError::from(e).into_response());
        }
    };
    Ok((StatusCode::CREATED, axum::Json(resp)))
}

/// `POST /register/check`: a registration key presented without
/// registering.
#[derive(Debug, serde::Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct KeyCheck {
    /// The registration key.
    pub registration_key: String,
}

/// The answer to a key check: hosts registering with it would join this feed.
#[derive(Debug, serde::Serialize, utoipa::ToSchema)]
pub struct KeyChecked {
    /// The key's feed.
    pub feed: String,
}

/// `POST /register/check`: whether a registration key would register a
/// host now (200 with its feed, 401 otherwise), rate limited as
/// registrations are. `install.sh` asks before it changes the host, so a
/// wrong key leaves the host as it was.
#[utoipa::path(post, path = "/api/v1/register/check",
    summary = "Check a registration key without registering (rate limited as registrations are)",
    security(()),
    request_body = KeyCheck,
    responses((status = 200, description = "the key registers hosts to this feed", body = KeyChecked), ApiError))]
pub async fn register_check(
    State(state): State<Arc<AppState>>,
    ConnectInfo(addr): ConnectInfo<SocketAddr>,
    Json(req): Json<KeyCheck>,
) -> Result<axum::Json<KeyChecked>, Response> {
    let attempt = state
        .register_limiter
        .start(addr.ip(), &req.registration_key, state.ctx.clock.now())
        .await
        .map_err(|e| ApiError::from(e).into_response())?
        .map_err(|r| {
            let retry = match r {
                Refusal::Failures(retry) | Refusal::Successes(retry) => retry,
            };
            state.metrics.refused("rate_limited");
            let mut r = ApiError::new(
                StatusCode::TOO_MANY_REQUESTS,
                format!(
                    "too many registration attempts from {}: try again in {retry} s",
                    addr.ip()
                ),
            )
            .into_response();
            r.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(retry));
            r
        })?;
    match state.ctx.registration_key(&req.registration_key).await {
        Ok((_, feed)) => {
            state.register_limiter.succeeded(attempt).await;
            Ok(axum::Json(KeyChecked { feed }))
        }
        Err(e) => {
            state.register_limiter.failed(attempt).await;
            if let crate::Error::Unauthorized(_) = e {
                state.metrics.refused("unauthorized");
            }
            Err(ApiError::from(e).into_response())
        }
    }
}

/// `POST /checkin`: the host's state in, its target level out.
#[utoipa::path(post, path = "/api/v1/checkin",
    summary = "Record the host's state; answers its target level",
    security(("hostToken" = [])),
    request_body = CheckinRequest,
    responses((status = 200, description = "recorded: the host's target", body = CheckinResponse), ApiError))]
pub async fn checkin(
    State(state): State<Arc<AppState>>,
    HostToken(token): HostToken,
    Json(req): Json<CheckinRequest>,
) -> Result<axum::Json<CheckinResponse>, ApiError> {
    let resp = state.checkins.checkin(&token, req).await?;
    state
        .metrics
        .checkins
        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    Ok(axum::Json(resp))
}

/// `GET /bundles/<sha256>`: a bundle of the host's kernel.
#[utoipa::path(get, path = "/api/v1/bundles/{sha256}",
    summary = "Download a bundle of the host's kernel",
    security(("hostToken" = [])),
    params(("sha256" = String, Path, description = "the bundle file's sha256, lowercase hex")),
    responses((status = 200, content(("application/octet-stream")),
        description = "the bundle file; cut off short of its Content-Length if the store fails midway"), ApiError))]
pub async fn bundle(
    State(state): State<Arc<AppState>>,
    Host(host): Host,
    Path(sha256): Path<String>,
) -> Result<Response, ApiError> {
    let reader = state.ctx.host_bundle(&host, &sha256).await?;
    Ok((
        [
            (header::CONTENT_TYPE, "application/octet-stream"),
            // Content-addressed: a URL's bytes never change.
            (
                header::CACHE_CONTROL,
                "private, max-age=31536000, immutable",
            ),
        ],
        Body::new(Pieces(reader)),
    )
        .into_response())
}

/// A bundle's bytes as a response body, a piece at a time as the store
/// reads them: a download holds a piece or two in memory, not the bundle.
/// Its exact size is known, so the answer has a Content-Length, and a read
/// that fails part-way ends the response short of it (the client sees a
/// cut-off download, never a complete-looking one).
pub(crate) struct Pieces(pub(crate) BlobReader);

impl http_body::Body for Pieces {
    type Data = Bytes;
    type Error = BlobError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BlobError>>> {
        self.0
            .pieces
            .poll_recv(cx)
            .map(|piece| piece.map(|r| r.map(|bytes| Frame::data(Bytes::from(bytes)))))
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::with_exact(self.0.size)
    }
}

/// `POST /report`: what happened on the host (204).
#[utoipa::path(post, path = "/api/v1/report",
    summary = "Report what the host did with a level",
    security(("hostToken" = [])),
    request_body = ReportRequest,
    responses((status = 204, description = "recorded"), ApiError))]
pub async fn report(
    State(state): State<Arc<AppState>>,
    Host(host): Host,
    Json(req): Json<ReportRequest>,
) -> Result<StatusCode, ApiError> {
    state.ctx.report(&host, &req).await?;
    Ok(StatusCode::NO_CONTENT)
}
