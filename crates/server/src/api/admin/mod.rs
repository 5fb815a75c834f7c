//! The admin endpoints under `/admin`, one module per resource as in
//! [`crate::admin`]: reads for any admin token, changes for tokens with
//! the admin role (a read-only token gets 403), each audited under the
//! token's name. Bodies are JSON except for publish, whose body is the
//! bundle file itself (`?feed=NAME`, repeatable). Query strings are
//! checked whole: an unknown parameter is a 400 naming it. Lists are paged
//! (`?limit=&cursor=`, see [`crate::page`]): each answer carries `next`
//! and `prev` cursors and a `Link` header to those pages.

pub mod audit;
pub mod feeds;
pub mod hosts;
pub mod kernels;
pub mod keys;
pub mod publish;
pub mod releases;
pub mod reports;

use axum::http::{header, HeaderValue, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::{json, Value};

use super::error::ApiError;
use crate::admin::hosts::HostFilter;
use crate::error::{invalid, Error};
use crate::page::{Page, PageRequest, MAX_LIMIT};

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

/// A query parameter that must be an integer, refused naming it.
fn int_param(name: &str, v: Option<&str>) -> Result<Option<i64>, Error> {
    match v.map(str::trim).filter(|v| !v.is_empty()) {
        None => Ok(None),
        Some(v) => v
            .parse()
            .map(Some)
            .map_err(|_| invalid(format!("{name}: {v:.40?} is not an integer"))),
    }
}

/// A query parameter that must be `true` or `false` (`1`, `0`).
fn bool_param(name: &str, v: Option<&str>) -> Result<Option<bool>, Error> {
    match v.map(str::trim).filter(|v| !v.is_empty()) {
        None => Ok(None),
        Some("true" | "1") => Ok(Some(true)),
        Some("false" | "0") => Ok(Some(false)),
        Some(v) => Err(invalid(format!("{name}: {v:.40?} is not true or false"))),
    }
}

/// A text query parameter; empty means not given.
fn text_param(v: &Option<String>) -> Option<String> {
    v.as_deref()
        .map(str::trim)
        .filter(|v| !v.is_empty())
        .map(str::to_string)
}

/// `?limit=&cursor=` of a list as a [`PageRequest`].
fn page_request(
    list: &str,
    limit: Option<&str>,
    cursor: Option<&str>,
) -> Result<PageRequest, Error> {
    PageRequest::parse(list, int_param("limit", limit)?, cursor, MAX_LIMIT)
}

/// The query parameters of the active-host lists and of the per-host
/// reports: page and filters.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HostListQuery {
    pub(crate) limit: Option<String>,
    pub(crate) cursor: Option<String>,
    pub(crate) feed: Option<String>,
    pub(crate) kernel: Option<String>,
    pub(crate) level: Option<String>,
    pub(crate) tag: Option<String>,
    pub(crate) hostname: Option<String>,
    pub(crate) status: Option<String>,
    pub(crate) stale: Option<String>,
}

impl HostListQuery {
    /// The filter, validated.
    fn filter(&self) -> Result<HostFilter, Error> {
        let f = HostFilter {
            feed: text_param(&self.feed),
            kernel: text_param(&self.kernel),
            level: int_param("level", self.level.as_deref())?,
            tag: text_param(&self.tag),
            hostname: text_param(&self.hostname),
            status: text_param(&self.status).map(|s| s.parse()).transpose()?,
            stale: bool_param("stale", self.stale.as_deref())?,
        };
        f.validate()?;
        Ok(f)
    }

    /// The page asked for, of the list `list`.
    fn page(&self, list: &str) -> Result<PageRequest, Error> {
        page_request(list, self.limit.as_deref(), self.cursor.as_deref())
    }
}

/// A page as JSON — the rows under `key`, `next` and `prev` (cursors or
/// null) — with a `Link` header (RFC 8288) to the neighbouring pages:
/// this request's URI with `cursor` replaced.
fn paged<T: serde::Serialize>(uri: &Uri, key: &str, page: Page<T>) -> Response {
    let links: Vec<String> = [("next", &page.next), ("prev", &page.prev)]
        .into_iter()
        .filter_map(|(rel, c)| {
            c.as_ref()
                .map(|c| format!("<{}>; rel=\"{rel}\"", with_cursor(uri, c)))
        })
        .collect();
    let body = json!({ key: page.items, "next": page.next, "prev": page.prev });
    let mut r = axum::Json(body).into_response();
    if let Ok(v) = HeaderValue::from_str(&links.join(", ")) {
        if !links.is_empty() {
            r.headers_mut().insert(header::LINK, v);
        }
    }
    r
}

/// `uri` with its `cursor` parameter set to `cursor` (hex: nothing to
/// escape).
pub(crate) fn with_cursor(uri: &Uri, cursor: &str) -> String {
    let mut params: Vec<&str> = uri
        .query()
        .unwrap_or("")
        .split('&')
        .filter(|p| !p.is_empty() && !p.starts_with("cursor="))
        .collect();
    let c = format!("cursor={cursor}");
    params.push(&c);
    format!("{}?{}", uri.path(), params.join("&"))
}

/// `?limit=&cursor=&host=&result=` of the host reports.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListQuery {
    limit: Option<String>,
    cursor: Option<String>,
    host: Option<String>,
    result: Option<String>,
}
