//! The APT repository over HTTP (`/apt/`, see [`crate::apt`]), the
//! repository's public key, and `/install.sh`, the script that joins a
//! Debian host to the fleet (`install.sh` beside this file, rendered with
//! the server's URL, the repository key and the bundle signing keys).
//! Everything here is public: the packages, keys and script hold no
//! secret, and hosts fetch them before they have any credential.

use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, HeaderValue};
use axum::response::{IntoResponse, Response};

use super::error::ApiError;
use super::AppState;
use crate::apt::Index;
use crate::error::not_found;

/// Index files change with uploads: clients and caches ask again after a
/// minute (APT sends If-Modified-Since; the answer's Last-Modified is the
/// Release file's Date).
const INDEX_CACHE: &str = "public, max-age=60";
/// A pool file's name carries its version; a version is uploaded once.
const POOL_CACHE: &str = "public, max-age=86400";

fn file(
    content_type: &'static str,
    cache: &'static str,
    last_modified: Option<&str>,
    body: impl Into<Body>,
) -> Response {
    let mut r = (
        [
            (header::CONTENT_TYPE, content_type),
            (header::CACHE_CONTROL, cache),
        ],
        body.into(),
    )
        .into_response();
    if let Some(v) = last_modified.and_then(|v| HeaderValue::from_str(v).ok()) {
        r.headers_mut().insert(header::LAST_MODIFIED, v);
    }
    r
}

async fn index(s: &AppState) -> Result<Arc<Index>, ApiError> {
    Ok(s.repo.index(&s.ctx).await?)
}

/// `GET /apt/dists/stable/InRelease`.
#[utoipa::path(get, path = "/apt/dists/stable/InRelease", tag = "apt",
    summary = "The repository's Release file, cleartext-signed",
    security(()),
    responses((status = 200, description = "InRelease", body = String, content_type = "text/plain"), ApiError))]
pub async fn in_release(State(s): State<Arc<AppState>>) -> Result<Response, ApiError> {
    let i = index(&s).await?;
    Ok(file(
        "text/plain; charset=utf-8",
        INDEX_CACHE,
        Some(&i.date),
        i.in_release.clone(),
    ))
}

/// `GET /apt/dists/stable/Release`.
#[utoipa::path(get, path = "/apt/dists/stable/Release", tag = "apt",
    summary = "The repository's Release file (signature in Release.gpg)",
    security(()),
    responses((status = 200, description = "Release", body = String, content_type = "text/plain"), ApiError))]
pub async fn release(State(s): State<Arc<AppState>>) -> Result<Response, ApiError> {
    let i = index(&s).await?;
    Ok(file(
        "text/plain; charset=utf-8",
        INDEX_CACHE,
        Some(&i.date),
        i.release.clone(),
    ))
}

/// `GET /apt/dists/stable/Release.gpg`.
#[utoipa::path(get, path = "/apt/dists/stable/Release.gpg", tag = "apt",
    summary = "The detached signature of Release",
    security(()),
    responses((status = 200, description = "Release.gpg (armored)", body = String, content_type = "application/pgp-signature"), ApiError))]
pub async fn release_gpg(State(s): State<Arc<AppState>>) -> Result<Response, ApiError> {
    let i = index(&s).await?;
    Ok(file(
        "application/pgp-signature",
        INDEX_CACHE,
        Some(&i.date),
        i.release_gpg.clone(),
    ))
}

/// `GET /apt/dists/stable/main/binary-amd64/Packages`.
#[utoipa::path(get, path = "/apt/dists/stable/main/binary-amd64/Packages", tag = "apt",
    summary = "The package index",
    security(()),
    responses((status = 200, description = "Packages", body = String, content_type = "text/plain"), ApiError))]
pub async fn packages(State(s): State<Arc<AppState>>) -> Result<Response, ApiError> {
    let i = index(&s).await?;
    Ok(file(
        "text/plain; charset=utf-8",
        INDEX_CACHE,
        Some(&i.date),
        i.packages.clone(),
    ))
}

/// `GET /apt/dists/stable/main/binary-amd64/Packages.gz`.
#[utoipa::path(get, path = "/apt/dists/stable/main/binary-amd64/Packages.gz", tag = "apt",
    summary = "The package index, gzip-compressed",
    security(()),
    responses((status = 200, description = "Packages.gz", content(("application/gzip"))), ApiError))]
pub async fn packages_gz(State(s): State<Arc<AppState>>) -> Result<Response, ApiError> {
    let i = index(&s).await?;
    Ok(file(
        "application/gzip",
        INDEX_CACHE,
        Some(&i.date),
        i.packages_gz.clone(),
    ))
}

/// `GET /apt/pool/main/n/noreboot/<file>`.
#[utoipa::path(get, path = "/apt/pool/main/n/noreboot/{file}", tag = "apt",
    summary = "An agent package (.deb) the index lists",
    security(()),
    params(("file" = String, Path, description = "noreboot_<version>_<arch>.deb")),
    responses((status = 200, description = "the package", content(("application/vnd.debian.binary-package"))), ApiError))]
pub async fn pool(
    State(s): State<Arc<AppState>>,
    Path(name): Path<String>,
) -> Result<Response, ApiError> {
    let i = index(&s).await?;
    let path = format!("pool/main/n/noreboot/{name}");
    let f = i
        .pool
        .get(&path)
        .ok_or_else(|| not_found(format!("no {path} in the repository")))?;
    let reader = s
        .ctx
        .blobs
        .read(&f.sha256)
        .await
        .map_err(crate::Error::from)?
        .ok_or_else(|| crate::Error::Blob(crate::blobs::BlobError::Missing(f.sha256.clone())))?;
    Ok(file(
        "application/vnd.debian.binary-package",
        POOL_CACHE,
        None,
        Body::new(super::agent::Pieces(reader)),
    ))
}

/// `GET /apt/key.asc`.
#[utoipa::path(get, path = "/apt/key.asc", tag = "apt",
    summary = "The repository's OpenPGP public key, armored (for signed-by)",
    security(()),
    responses((status = 200, description = "the key", body = String, content_type = "application/pgp-keys"), ApiError))]
pub async fn key_asc(State(s): State<Arc<AppState>>) -> Result<Response, ApiError> {
    let k = s.repo.key(&s.ctx).await?;
    Ok(file(
        "application/pgp-keys",
        INDEX_CACHE,
        None,
        k.public_armored.clone(),
    ))
}

/// `GET /apt/key.gpg`.
#[utoipa::path(get, path = "/apt/key.gpg", tag = "apt",
    summary = "The repository's OpenPGP public key, binary (for signed-by)",
    security(()),
    responses((status = 200, description = "the key", content(("application/pgp-keys"))), ApiError))]
pub async fn key_gpg(State(s): State<Arc<AppState>>) -> Result<Response, ApiError> {
    let k = s.repo.key(&s.ctx).await?;
    Ok(file(
        "application/pgp-keys",
        INDEX_CACHE,
        None,
        k.public_binary.clone(),
    ))
}

/// The script's template: POSIX sh, placeholders `@@NAME@@`.
const INSTALL_SH: &str = include_str!("install.sh");

/// `GET /install.sh`.
#[utoipa::path(get, path = "/install.sh", tag = "apt",
    summary = "The script that joins a Debian host to the fleet: curl -fsSL URL/install.sh | sudo sh -s -- --key KEY",
    security(()),
    responses((status = 200, description = "the script", body = String, content_type = "text/x-shellscript"), ApiError))]
pub async fn install_sh(
    State(s): State<Arc<AppState>>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let url = public_url(&s, &headers)?;
    let key = s.repo.key(&s.ctx).await?;
    let mut bundle_keys = String::new();
    for k in s.ctx.trusted.iter() {
        bundle_keys.push_str(&format!(
            "write_bundle_key {id} <<'NOREBOOT_KEY'\n{text}NOREBOOT_KEY\n",
            id = k.key_id(),
            text = k.to_minisign_string()
        ));
    }
    let script = render_install(
        INSTALL_SH,
        &url,
        &key.fingerprint,
        &key.public_armored,
        &bundle_keys,
    );
    Ok(file(
        "text/x-shellscript; charset=utf-8",
        INDEX_CACHE,
        None,
        script,
    ))
}

/// The template with its placeholders filled. Each value is in a quoted
/// here-document or a single-quoted word, and is checked to be free of
/// what would end either.
fn render_install(tpl: &str, url: &str, fingerprint: &str, key: &str, bundle_keys: &str) -> String {
    tpl.replace("@@SERVER_URL@@", url)
        .replace("@@REPO_FINGERPRINT@@", fingerprint)
        .replace("@@REPO_KEY@@\n", key)
        .replace("@@BUNDLE_KEYS@@\n", bundle_keys)
}

/// The URL hosts reach this server at: `serve --public-url`, or else this
/// request's Host header with the scheme the server serves (a client that
/// fetched the script at some address can reach the server there).
fn public_url(s: &AppState, headers: &HeaderMap) -> Result<String, ApiError> {
    if let Some(u) = &s.settings.public_url {
        return Ok(u.clone());
    }
    let host = headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .filter(|h| {
            !h.is_empty()
                && h.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"-.:[]".contains(&b))
        })
        .ok_or_else(|| {
            crate::error::invalid(
                "no usable Host header, and the server has no --public-url to put in the script",
            )
        })?;
    let scheme = if s.settings.https { "https" } else { "http" };
    Ok(format!("{scheme}://{host}"))
}

/// Whether `url` may be the server's public URL: http(s), and only
/// characters that are inert in the script's single-quoted words.
pub fn valid_public_url(url: &str) -> bool {
    (url.starts_with("https://") || url.starts_with("http://"))
        && url.len() < 512
        && url
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-._~:/[]%@".contains(&b))
}
