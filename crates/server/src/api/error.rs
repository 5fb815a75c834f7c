//! How errors leave the HTTP layer: every answer with a 4xx or 5xx status
//! carries a `protocol::ErrorBody` (`{"error": "..."}`). [`ApiError`]
//! maps each library [`Error`] variant to one status; [`json_errors`]
//! rewrites the plain-text errors that axum and tower-http produce on
//! their own (unknown route, wrong method, body over the limit, timeout),
//! so clients never have to parse anything else. Server faults are logged
//! in full and answered with a generic message.

use std::collections::BTreeMap;

use axum::body::Body;
use axum::extract::Request;
use axum::http::{header, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::Json;
use protocol::ErrorBody;
use utoipa::openapi::content::ContentBuilder;
use utoipa::openapi::response::ResponseBuilder;
use utoipa::openapi::{Ref, RefOr};
use utoipa::ToSchema;

use crate::error::{Error, ErrorKind};

/// An error answer.
#[derive(Debug)]
pub struct ApiError {
    /// The status.
    pub status: StatusCode,
    /// The message for the client.
    pub message: String,
}

impl ApiError {
    /// An error with this status and message.
    pub fn new(status: StatusCode, message: impl Into<String>) -> Self {
        Self {
            status,
            message: message.into(),
        }
    }
}

impl From<Error> for ApiError {
    fn from(e: Error) -> Self {
        let status = match e.kind() {
            ErrorKind::Invalid => StatusCode::BAD_REQUEST,
            ErrorKind::NotFound => StatusCode::NOT_FOUND,
            ErrorKind::Conflict => StatusCode::CONFLICT,
            ErrorKind::Refused => StatusCode::UNPROCESSABLE_ENTITY,
            ErrorKind::Unauthorized => StatusCode::UNAUTHORIZED,
            ErrorKind::Forbidden => StatusCode::FORBIDDEN,
            ErrorKind::Internal => {
                tracing::error!("internal error: {e}");
                return Self::new(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "internal server error (details are in the server's log)",
                );
            }
        };
        Self::new(status, e.to_string())
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut r = (
            self.status,
            Json(ErrorBody {
                error: self.message,
            }),
        )
            .into_response();
        if self.status == StatusCode::UNAUTHORIZED {
            r.headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        r
    }
}

/// In the OpenAPI document: every operation that can fail this way answers
/// its refusals (4XX) and faults (5XX) with an [`ErrorBody`].
impl utoipa::IntoResponses for ApiError {
    fn responses() -> BTreeMap<String, RefOr<utoipa::openapi::Response>> {
        [
            ("4XX", "refused: the message says why (400 invalid, 401 no or bad token, 403 not allowed, 404 not found, 409 conflict, 413 too large, 422 refused by a check, 429 too many)"),
            ("5XX", "the server's fault (details in its log)"),
        ]
        .into_iter()
        .map(|(status, description)| {
            let body = ContentBuilder::new().schema(Some(Ref::from_schema_name(ErrorBody::name())));
            let r = ResponseBuilder::new()
                .description(description)
                .content("application/json", body.build());
            (status.to_string(), r.build().into())
        })
        .collect()
    }
}

/// Turns any error answer that is not JSON into an [`ErrorBody`], keeping
/// its status and, as the message, its text.
pub async fn json_errors(req: Request, next: Next) -> Response {
    let resp = next.run(req).await;
    let status = resp.status();
    if !(status.is_client_error() || status.is_server_error()) {
        return resp;
    }
    // JSON errors are ours already; HTML ones are the dashboard's pages,
    // meant for a browser.
    let keep = resp
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json") || v.starts_with("text/html"));
    if keep {
        return resp;
    }
    let (parts, body) = resp.into_parts();
    let text = axum::body::to_bytes(body, 4096).await.unwrap_or_default();
    let text = String::from_utf8_lossy(&text).trim().to_string();
    let reason = status.canonical_reason().unwrap_or("error").to_lowercase();
    let message = if text.is_empty() {
        match status {
            StatusCode::NOT_FOUND => "no such endpoint".to_string(),
            StatusCode::METHOD_NOT_ALLOWED => "method not allowed on this endpoint".to_string(),
            StatusCode::PAYLOAD_TOO_LARGE => "request body too large".to_string(),
            StatusCode::REQUEST_TIMEOUT => "request timed out".to_string(),
            _ => reason,
        }
    } else {
        text
    };
    let mut out = ApiError::new(status, message).into_response();
    // Keep headers such as Allow and Retry-After.
    for (name, value) in parts.headers.iter() {
        if name != header::CONTENT_TYPE && name != header::CONTENT_LENGTH {
            out.headers_mut().insert(name.clone(), value.clone());
        }
    }
    out
}

/// The answer when a handler panics: a bug, never the client's fault.
pub fn panic_response(_: Box<dyn std::any::Any + Send + 'static>) -> Response<Body> {
    tracing::error!("a request handler panicked");
    ApiError::new(
        StatusCode::INTERNAL_SERVER_ERROR,
        "internal server error (details are in the server's log)",
    )
    .into_response()
}
