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
pub mod levels;
pub mod packages;
pub mod publish;
pub mod releases;
pub mod reports;

use axum::http::{header, HeaderValue, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};

use utoipa::IntoParams;

use super::error::ApiError;
use crate::admin::hosts::HostFilter;
use crate::error::{invalid, Error};
use crate::page::{Page, PageRequest, MAX_LIMIT};

/// A JSON answer with 200.
type Answer<T> = Result<axum::Json<T>, ApiError>;

/// A JSON answer with 201: what a creation made.
type Created<T> = Result<(StatusCode, axum::Json<T>), ApiError>;

fn answer<T>(v: T) -> Answer<T> {
    Ok(axum::Json(v))
}

fn created<T>(v: T) -> Created<T> {
    Ok((StatusCode::CREATED, axum::Json(v)))
}

/// What every admin change needs, for the OpenAPI document.
pub const ADMIN_ROLE: &str = "Needs a token with the admin role; read-only tokens get 403.";

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
#[derive(Debug, Default, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct HostListQuery {
    /// Rows per page, 1 to 1000 (default 100); out of range: 400.
    pub(crate) limit: Option<String>,
    /// Where the page starts: the `next` or `prev` of an earlier answer
    /// (opaque; one this list did not hand out: 400). The answer's `Link`
    /// header carries the same as URLs (rel="next", rel="prev").
    pub(crate) cursor: Option<String>,
    /// Only hosts following this feed.
    pub(crate) feed: Option<String>,
    /// Only hosts whose kernel build-id starts with this, or whose release
    /// (`uname -r`) is exactly this.
    pub(crate) kernel: Option<String>,
    /// Only hosts at this applied level.
    pub(crate) level: Option<String>,
    /// Only hosts with this tag (exact).
    pub(crate) tag: Option<String>,
    /// Only hosts whose hostname starts with this (case matters).
    pub(crate) hostname: Option<String>,
    /// `protected`, `exposed` or `unsupported` (see Compliance).
    pub(crate) status: Option<String>,
    /// `true`: only hosts without a check-in within the staleness
    /// threshold; `false`: only the others.
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

/// One page of a list as JSON (a `*Page` type: the rows under the list's
/// key, `next` and `prev` cursors or null) with a `Link` header (RFC 8288)
/// to the neighbouring pages: this request's URI with `cursor` replaced.
#[derive(Debug)]
pub struct Linked<T> {
    body: T,
    link: Option<HeaderValue>,
}

impl<T: Serialize> IntoResponse for Linked<T> {
    fn into_response(self) -> Response {
        let mut r = axum::Json(self.body).into_response();
        if let Some(v) = self.link {
            r.headers_mut().insert(header::LINK, v);
        }
        r
    }
}

/// `page` as the answer `P`, linked to its neighbours.
fn paged<T, P: From<Page<T>>>(uri: &Uri, page: Page<T>) -> Linked<P> {
    let links: Vec<String> = [("next", &page.next), ("prev", &page.prev)]
        .into_iter()
        .filter_map(|(rel, c)| {
            c.as_ref()
                .map(|c| format!("<{}>; rel=\"{rel}\"", with_cursor(uri, c)))
        })
        .collect();
    let link = (!links.is_empty())
        .then(|| HeaderValue::from_str(&links.join(", ")).ok())
        .flatten();
    Linked {
        body: P::from(page),
        link,
    }
}

/// A page of a list as its answer type `$name`: the rows under `$key`,
/// then the cursors (the fields in the order the answers always had).
macro_rules! page_answer {
    ($(#[$doc:meta])* $name:ident { $key:ident: $item:ty }) => {
        $(#[$doc])*
        #[derive(Debug, serde::Serialize, utoipa::ToSchema)]
        pub struct $name {
            /// The page's rows.
            pub $key: Vec<$item>,
            /// The next page's cursor (null: this is the last page).
            pub next: Option<String>,
            /// The previous page's cursor (null: this is the first page).
            pub prev: Option<String>,
        }

        impl From<crate::page::Page<$item>> for $name {
            fn from(p: crate::page::Page<$item>) -> Self {
                Self {
                    $key: p.items,
                    next: p.next,
                    prev: p.prev,
                }
            }
        }
    };
}
pub(crate) use page_answer;

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
