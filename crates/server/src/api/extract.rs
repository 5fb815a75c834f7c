//! Request extractors: JSON bodies whose rejections become [`ApiError`]s
//! with the parser's message, and the bearer-token identities — a host
//! ([`Host`]; [`HostToken`] only checks the form, for check-ins, which are
//! authenticated in their batch), any admin token ([`AdminRead`]), an admin token with the
//! admin role ([`AdminWrite`]). Authentication runs before the body is
//! read, so an unauthenticated upload is refused without being buffered.

use std::sync::Arc;

use axum::extract::rejection::JsonRejection;
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
use axum::http::{header, StatusCode};
use serde::de::DeserializeOwned;

use super::error::ApiError;
use super::AppState;
use crate::admin::Actor;
use crate::error::Error;
use crate::fleet::HostAuth;
use crate::model::Role;

/// Longest bearer token looked at; ours are 68 characters.
const MAX_TOKEN: usize = 256;

/// A JSON body.
#[derive(Debug)]
pub struct Json<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for Json<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        match axum::Json::<T>::from_request(req, state).await {
            Ok(axum::Json(v)) => Ok(Json(v)),
            Err(rejection) => Err(json_rejection(rejection)),
        }
    }
}

fn json_rejection(r: JsonRejection) -> ApiError {
    let status = r.status();
    let message = match status {
        StatusCode::PAYLOAD_TOO_LARGE => "request body too large".to_string(),
        _ => r.body_text(),
    };
    // axum answers 422 for JSON of the wrong shape; the request is
    // malformed either way, and one status is simpler for clients.
    let status = if status == StatusCode::UNPROCESSABLE_ENTITY {
        StatusCode::BAD_REQUEST
    } else {
        status
    };
    ApiError::new(status, message)
}

fn bearer(parts: &Parts) -> Result<&str, ApiError> {
    let unauthorized = |m: &str| ApiError::from(Error::Unauthorized(m.to_string()));
    let value = parts
        .headers
        .get(header::AUTHORIZATION)
        .ok_or_else(|| unauthorized("missing `Authorization: Bearer <token>` header"))?;
    let value = value
        .to_str()
        .map_err(|_| unauthorized("the Authorization header is not ASCII"))?;
    let token = value
        .strip_prefix("Bearer ")
        .map(str::trim)
        .ok_or_else(|| unauthorized("the Authorization header is not `Bearer <token>`"))?;
    if token.is_empty() || token.len() > MAX_TOKEN {
        return Err(unauthorized("malformed bearer token"));
    }
    Ok(token)
}

/// The host a host token belongs to.
#[derive(Debug)]
pub struct Host(pub HostAuth);

impl FromRequestParts<Arc<AppState>> for Host {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &Arc<AppState>,
    ) -> Result<Self, Self::Rejection> {
        let token = bearer(parts)?;
        Ok(Host(state.ctx.authenticate_host(token).await?))
    }
}

/// A well-formed host token, not yet checked against the hosts: the
/// check-in writer authenticates a whole batch in its one statement.
#[derive(Debug)]
pub struct HostToken(pub String);

impl<S: Send + Sync> FromRequestParts<S> for HostToken {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        Ok(HostToken(bearer(parts)?.to_string()))
    }
}

/// Any valid admin token (read-only or admin).
#[derive(Debug)]
pub struct AdminRead(pub Actor);

impl FromRequestParts<Arc<AppState>> for AdminRead {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &Arc<AppState>,
    ) -> Result<Self, Self::Rejection> {
        let token = bearer(parts)?;
        Ok(AdminRead(state.ctx.authenticate_admin(token).await?))
    }
}

/// An admin token with the admin role.
#[derive(Debug)]
pub struct AdminWrite(pub Actor);

impl FromRequestParts<Arc<AppState>> for AdminWrite {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &Arc<AppState>,
    ) -> Result<Self, Self::Rejection> {
        let AdminRead(actor) = AdminRead::from_request_parts(parts, state).await?;
        if actor.role != Role::Admin {
            return Err(Error::Forbidden(format!(
                "token {:?} is read-only: it cannot change anything",
                actor.name
            ))
            .into());
        }
        Ok(AdminWrite(actor))
    }
}
