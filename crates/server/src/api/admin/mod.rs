//! The admin endpoints under `/admin`, one module per resource as in
//! [`crate::admin`]: reads for any admin token, changes for tokens with
//! the admin role (a read-only token gets 403), each audited under the
//! token's name. Bodies are JSON except for publish, whose body is the
//! bundle file itself (`?feed=NAME`, repeatable). Query strings are
//! checked whole: an unknown parameter is a 400 naming it.

pub mod audit;
pub mod feeds;
pub mod hosts;
pub mod kernels;
pub mod keys;
pub mod publish;
pub mod releases;
pub mod reports;

use axum::http::StatusCode;
use serde::Deserialize;
use serde_json::{json, Value};

use super::error::ApiError;

/// A JSON answer with 200.
type Answer = Result<axum::Json<Value>, ApiError>;

/// A JSON answer with 201: what a creation made.
type Created = Result<(StatusCode, axum::Json<Value>), ApiError>;

fn answer(v: impl serde::Serialize) -> Answer {
    Ok(axum::Json(json!(v)))
}

fn created(v: impl serde::Serialize) -> Created {
    Ok((StatusCode::CREATED, axum::Json(json!(v))))
}

/// `?limit=` of the audit trail and reports; `?host=` of reports. One
/// query for both, so the audit trail accepts (and ignores) `host` as it
/// always has.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListQuery {
    limit: Option<i64>,
    host: Option<String>,
}
