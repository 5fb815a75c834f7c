//! `POST /admin/publish?feed=F` (admin role): the body is the bundle file
//! itself, not JSON, so the feeds to release it to are query parameters.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{RawQuery, State};

use super::{created, Created, ADMIN_ROLE};
use crate::admin::publish::Published;
use crate::api::error::ApiError;
use crate::api::extract::AdminWrite;
use crate::api::AppState;
use crate::error::invalid;
use crate::validate;

/// `POST /admin/publish?feed=F`: the body is the bundle file (201).
#[utoipa::path(post, path = "/api/v1/admin/publish",
    summary = "Publish a signed bundle (the body is the .nrb file)",
    description = ADMIN_ROLE,
    security(("adminToken" = ["admin"])),
    params(("feed" = Option<Vec<String>>, Query, description = "release to this feed (repeatable)")),
    request_body(content(("application/octet-stream")), description = "the bundle file (.nrb)"),
    responses((status = 201, description = "the level published", body = Published), ApiError))]
pub async fn publish(
    State(s): State<Arc<AppState>>,
    AdminWrite(who): AdminWrite,
    RawQuery(query): RawQuery,
    body: Bytes,
) -> Created<Published> {
    let feeds = feeds_from_query(query.as_deref())?;
    created(s.ctx.publish(&who.name, body.to_vec(), &feeds).await?)
}

/// Feed names from `feed=a&feed=b`. Valid names need no percent-decoding,
/// and anything else is refused rather than decoded.
fn feeds_from_query(query: Option<&str>) -> Result<Vec<String>, ApiError> {
    let mut feeds = Vec::new();
    for pair in query.unwrap_or("").split('&').filter(|p| !p.is_empty()) {
        match pair.split_once('=') {
            Some(("feed", name)) => {
                validate::name("feed", name)?;
                feeds.push(name.to_string());
            }
            _ => {
                return Err(invalid(format!(
                    "unknown query parameter {pair:.80?}: publish takes only `feed=NAME`"
                ))
                .into())
            }
        }
    }
    Ok(feeds)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn publish_query() {
        assert_eq!(feeds_from_query(None).unwrap(), Vec::<String>::new());
        assert_eq!(
            feeds_from_query(Some("feed=test&feed=stable")).unwrap(),
            ["test", "stable"]
        );
        assert!(feeds_from_query(Some("feed=a%2Fb")).is_err());
        assert!(feeds_from_query(Some("level=3")).is_err());
    }
}
