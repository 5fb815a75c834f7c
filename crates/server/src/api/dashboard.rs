//! The dashboard under `/ui`: server-rendered HTML pages (hosts with their
//! ids, feeds and tags, and filters; kernels and their levels, and the
//! builds hosts run that no level covers; compliance; audit trail), no
//! JavaScript, a little inline CSS. Lists are paged as the API's are
//! (`crate::page`), with previous and next links.
//!
//! Sign-in: `/ui/login` takes an admin or read-only API token in a form
//! and opens a database session (`crate::sessions`); the cookie carries
//! the session's random id, never the token, as `HttpOnly;
//! SameSite=Strict; Path=/`, plus `Secure` when browsers come over HTTPS
//! ([`super::Settings::https`]). Every page checks the session (expired, signed
//! out or of a revoked token: back to the login form); sign-out revokes it
//! on the server, so a copy of the cookie dies with it. Failed sign-ins
//! are logged with the client's address (never the token), audited, and
//! limited per address and minute (429 with Retry-After).
//!
//! Forms: [`same_origin`] refuses a POST to `/ui` that another site's page
//! made (403 with a JSON error), judged by `Sec-Fetch-Site`, `Origin`, or
//! failing that `Referer`, against the request's `Host`. A POST with
//! neither `Origin` nor `Referer` is no browser's form (browsers send
//! `Origin` with every POST); it is let through to the sign-in form only,
//! for scripts, and refused everywhere a session cookie would act.
//! `SameSite=Strict` already keeps browsers from sending the cookie
//! cross-site; the check also covers the sign-in, which has no cookie yet
//! (another site must not sign a browser in to a session of its choosing).
//!
//! Everything shown is escaped with [`esc`] — host names, tags, kernel
//! strings and audit details come from hosts and admins — and a strict
//! Content-Security-Policy forbids scripts as a second line of defence.

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::sync::Arc;

use axum::extract::{ConnectInfo, FromRequestParts, Query, Request, State};
use axum::http::request::Parts;
use axum::http::uri::Authority;
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode, Uri};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::Form;
use protocol::ErrorBody;
use serde::Deserialize;
use utoipa::{IntoParams, ToSchema};

use super::error::ApiError;
use super::AppState;
use crate::admin::audit::{AuditFilter, AUDIT_LIST};
use crate::admin::hosts::{HostFilter, Status, HOSTS_LIST};
use crate::admin::{Actor, Coverage};
use crate::clock::rfc3339;
use crate::error::Error;
use crate::model::{ReportedBuild, Role};
use crate::page::PageRequest;
use crate::secrets;

/// What a dashboard form's POST must meet, for the OpenAPI document (see
/// [`same_origin`]).
const FORM: &str =
    "A dashboard form: refused with 403 when Sec-Fetch-Site is not same-origin, or when \
     Origin (or, without it, Referer) names another origin than the request's Host \
     (https only when the server is reached over HTTPS). Without either header it is \
     refused too, except for /ui/login.";

/// The session cookie's name.
pub const COOKIE: &str = "noreboot_session";

/// HTML-escapes text for element content and quoted attributes.
pub fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

const CSS: &str = "body{font:14px/1.4 sans-serif;margin:0;color:#222}\
header{background:#234;color:#fff;padding:8px 16px;display:flex;gap:16px;align-items:center}\
header a{color:#fff}header form{margin-left:auto}main{padding:16px}\
table{border-collapse:collapse;margin:8px 0}th,td{border:1px solid #ccc;padding:3px 8px;text-align:left;vertical-align:top}\
th{background:#eee}.exposed,.breach{color:#a00;font-weight:bold}.protected{color:#070}.stale{color:#a60}\
.num{display:inline-block;margin-right:16px;padding:8px;border:1px solid #ccc}code{font-size:12px}\
figure{margin:8px 0;max-width:760px}figure svg{width:100%;height:auto;border:1px solid #ccc}figcaption{font-size:12px;color:#444}";

/// A whole page with its security headers.
fn page(status: StatusCode, title: &str, who: Option<&Actor>, body: &str) -> Response {
    let nav = match who {
        Some(a) => format!(
            "<a href=\"/ui/hosts\">Hosts</a><a href=\"/ui/kernels\">Kernels</a>\
             <a href=\"/ui/compliance\">Compliance</a><a href=\"/ui/audit\">Audit</a>\
             <form method=\"post\" action=\"/ui/logout\"><span>{} ({})</span> \
             <button type=\"submit\">Sign out</button></form>",
            esc(&a.name),
            match a.role {
                Role::Admin => "admin",
                Role::ReadOnly => "read-only",
            }
        ),
        None => String::new(),
    };
    let html = format!(
        "<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\">\
         <title>{t} · noreboot</title><style>{CSS}</style></head><body>\
         <header><strong>noreboot</strong>{nav}</header><main><h1>{t}</h1>{body}</main></body></html>",
        t = esc(title)
    );
    html_response(status, html)
}

/// An HTML document with the dashboard's security headers: its
/// Content-Security-Policy (no script, no fetch), nosniff, no caching.
fn html_response(status: StatusCode, html: String) -> Response {
    let mut r = (status, html).into_response();
    let h = r.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'none'; style-src 'unsafe-inline'; form-action 'self'; frame-ancestors 'none'",
        ),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    r
}

fn redirect(to: &'static str) -> Response {
    (StatusCode::SEE_OTHER, [(header::LOCATION, to)]).into_response()
}

/// An error as a page (server faults logged, not shown).
fn error_page(e: Error, who: Option<&Actor>) -> Response {
    let status = super::error::ApiError::from(e);
    page(
        status.status,
        "Error",
        who,
        &format!("<p class=\"exposed\">{}</p>", esc(&status.message)),
    )
}

/// The signed-in admin; anyone else is sent to the login page.
#[derive(Debug)]
pub struct Session(pub Actor);

/// Most session cookies a request may make the server look up.
const MAX_SESSION_COOKIES: usize = 4;

/// The well-formed session ids among the request's cookies. A browser may
/// send more than one `noreboot_session`: an older server set the token
/// itself as the cookie, on `Path=/ui`, and that one is sent first until
/// it expires; it is skipped here.
fn session_ids(headers: &HeaderMap) -> impl Iterator<Item = &str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|c| c.trim().split_once('='))
        .filter(|(k, v)| *k == COOKIE && secrets::is_well_formed(secrets::SESSION, v))
        .map(|(_, v)| v)
        .take(MAX_SESSION_COOKIES)
}

impl FromRequestParts<Arc<AppState>> for Session {
    type Rejection = Response;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &Arc<AppState>,
    ) -> Result<Self, Self::Rejection> {
        for id in session_ids(&parts.headers) {
            match state.ctx.session(id).await {
                Ok(a) => return Ok(Session(a)),
                Err(Error::Unauthorized(_)) => continue,
                Err(e) => return Err(error_page(e, None)),
            }
        }
        Err(redirect("/ui/login"))
    }
}

/// The session cookie: `value` for `max_age` seconds (0: remove it).
fn session_cookie(value: &str, max_age: u64, https: bool) -> HeaderValue {
    let secure = if https { "; Secure" } else { "" };
    let cookie =
        format!("{COOKIE}={value}; HttpOnly; SameSite=Strict; Path=/; Max-Age={max_age}{secure}");
    // Session ids are `nrs_` and hex: always a valid header value.
    HeaderValue::from_str(&cookie).unwrap_or_else(|_| HeaderValue::from_static(""))
}

/// Removes the cookie older servers set: the admin token itself, on
/// `/ui`. A browser keeps it until its Max-Age otherwise, and it is a
/// token, not a session.
const LEGACY_COOKIE_REMOVAL: &str =
    "noreboot_session=; HttpOnly; SameSite=Strict; Path=/ui; Max-Age=0";

fn login_form(status: StatusCode, message: &str) -> Response {
    let msg = if message.is_empty() {
        String::new()
    } else {
        format!("<p class=\"exposed\">{}</p>", esc(message))
    };
    page(
        status,
        "Sign in",
        None,
        &format!(
            "{msg}<form method=\"post\" action=\"/ui/login\">\
             <label>Admin or read-only API token <input type=\"password\" name=\"token\" size=\"70\" autocomplete=\"off\"></label> \
             <button type=\"submit\">Sign in</button></form>\
             <p>Create one with <code>noreboot-server admin token create NAME --role read-only</code>.</p>"
        ),
    )
}

/// `GET /ui`.
#[utoipa::path(get, path = "/ui",
    summary = "Dashboard: redirects to the host list",
    security(()),
    responses((status = 303, description = "to /ui/hosts")))]
pub async fn index() -> Response {
    redirect("/ui/hosts")
}

/// `GET /ui/login`.
#[utoipa::path(get, path = "/ui/login",
    summary = "Dashboard login form",
    security(()),
    responses((status = 200, description = "the page", body = String, content_type = "text/html")))]
pub async fn login_page() -> Response {
    login_form(StatusCode::OK, "")
}

/// The login form.
#[derive(Debug, Deserialize, ToSchema)]
pub struct Login {
    /// An admin or read-only API token.
    token: String,
}

/// `POST /ui/login`: a valid token opens a session, whose id becomes the
/// cookie. Failed attempts are limited per address: the attempt takes one
/// from the address's allowance and a successful one gives it back, so
/// concurrent guesses cannot all slip under the limit.
#[utoipa::path(post, path = "/ui/login",
    summary = "Dashboard login: an admin or read-only token in, a session cookie (a random session id, not the token) out",
    description = FORM,
    security(()),
    request_body(content = Login, content_type = "application/x-www-form-urlencoded"),
    responses((status = 303, description = "signed in: to /ui/hosts, with the session cookie"),
        (status = 401, body = String, content_type = "text/html", description = "the form again, saying why"),
        (status = 403, body = ErrorBody, description = "not from the dashboard's own page"),
        (status = 429, body = String, content_type = "text/html", description = "too many failed sign-ins from the address: the form again, with Retry-After"),
        ApiError))]
pub async fn login(
    State(s): State<Arc<AppState>>,
    ConnectInfo(addr): ConnectInfo<SocketAddr>,
    Form(f): Form<Login>,
) -> Response {
    let ip = addr.ip();
    let subject = ip.to_string();
    let now = s.ctx.clock.now();
    let allowed = match s.login_limiter.take(&subject, now).await {
        Ok(a) => a,
        Err(e) => return error_page(e, None),
    };
    if let Err(retry) = allowed {
        tracing::warn!(address = %ip, "dashboard sign-in refused: too many failed sign-ins from this address");
        let mut r = login_form(
            StatusCode::TOO_MANY_REQUESTS,
            &format!("Too many failed sign-ins from {ip}: try again in {retry} s."),
        );
        r.headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from(retry));
        return r;
    }
    let lifetime = s.settings.session_lifetime.as_secs();
    let seconds = i64::try_from(lifetime).unwrap_or(i64::MAX);
    match s
        .ctx
        .sign_in(f.token.trim(), &ip.to_string(), seconds)
        .await
    {
        Ok(new) => {
            s.login_limiter.refund(&subject, now).await;
            tracing::info!(admin = %new.actor.name, address = %ip, "dashboard sign-in");
            let mut r = redirect("/ui/hosts");
            let h = r.headers_mut();
            h.append(
                header::SET_COOKIE,
                session_cookie(&new.id, lifetime, s.settings.https),
            );
            h.append(
                header::SET_COOKIE,
                HeaderValue::from_static(LEGACY_COOKIE_REMOVAL),
            );
            r
        }
        Err(Error::Unauthorized(why)) => {
            tracing::warn!(address = %ip, reason = %why, "failed dashboard sign-in");
            login_form(StatusCode::UNAUTHORIZED, &why)
        }
        // The server's failure, not the client's: still counted, so that
        // a fault cannot be used to guess without limit.
        Err(e) => error_page(e, None),
    }
}

/// `POST /ui/logout`: ends the session on the server (a copy of the cookie
/// stops working too) and removes the cookie.
#[utoipa::path(post, path = "/ui/logout",
    summary = "Dashboard logout: ends the session on the server and clears the cookie",
    description = FORM,
    security(("dashboardCookie" = [])),
    responses((status = 303, description = "to /ui/login, the cookie cleared"),
        (status = 403, body = ErrorBody, description = "not from the dashboard's own page")))]
pub async fn logout(
    State(s): State<Arc<AppState>>,
    ConnectInfo(addr): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
) -> Response {
    let ip = addr.ip();
    for id in session_ids(&headers) {
        match s.ctx.sign_out(id, &ip.to_string()).await {
            Ok(Some(name)) => tracing::info!(admin = %name, address = %ip, "dashboard sign-out"),
            Ok(None) => {}
            Err(e) => return error_page(e, None),
        }
    }
    let mut r = redirect("/ui/login");
    let h = r.headers_mut();
    h.append(header::SET_COOKIE, session_cookie("", 0, s.settings.https));
    h.append(
        header::SET_COOKIE,
        HeaderValue::from_static(LEGACY_COOKIE_REMOVAL),
    );
    r
}

/// Refuses a POST (or any other unsafe method) to `/ui` that did not come
/// from one of the dashboard's own pages: 403 with a JSON error, logged.
/// Everything else passes untouched; bearer-token API requests never
/// reach `/ui`.
pub async fn same_origin(State(s): State<Arc<AppState>>, req: Request, next: Next) -> Response {
    let path = req.uri().path();
    let dashboard = path == "/ui" || path.starts_with("/ui/");
    let safe = matches!(*req.method(), Method::GET | Method::HEAD | Method::OPTIONS);
    if !dashboard || safe {
        return next.run(req).await;
    }
    let sign_in = path == "/ui/login";
    match cross_site(req.headers(), req.uri(), s.settings.https, sign_in) {
        None => next.run(req).await,
        Some(why) => {
            tracing::warn!(path, "{why}");
            ApiError::new(StatusCode::FORBIDDEN, why).into_response()
        }
    }
}

/// Why a dashboard POST is not from one of this server's pages, if it is
/// not. `https`: pages are served over HTTPS only. `no_source_ok`: a
/// request with neither `Origin` nor `Referer` passes.
fn cross_site(headers: &HeaderMap, uri: &Uri, https: bool, no_source_ok: bool) -> Option<String> {
    // Browsers set it on every request and pages cannot change it: the
    // most direct answer where it is sent.
    if let Some(site) = headers.get("sec-fetch-site") {
        let site = site.to_str().unwrap_or("");
        if !matches!(site, "same-origin" | "none") {
            return Some(format!(
                "cross-site request refused: Sec-Fetch-Site is {site:?}, not same-origin"
            ));
        }
    }
    let (name, source) = match (headers.get(header::ORIGIN), headers.get(header::REFERER)) {
        (Some(o), _) => ("Origin", o),
        (None, Some(r)) => ("Referer", r),
        (None, None) if no_source_ok => return None,
        (None, None) => {
            return Some(
                "cross-site request refused: a dashboard form must come from a dashboard page                  (the request has neither Origin nor Referer)"
                    .into(),
            )
        }
    };
    // HTTP/2 carries the host in the request's authority instead.
    let host = headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .or_else(|| uri.authority().map(|a| a.as_str()));
    let Some(host) = host else {
        return Some("cross-site request refused: the request names no Host".into());
    };
    let source = source.to_str().unwrap_or("");
    if is_same_origin(source, host, https) {
        None
    } else {
        Some(format!(
            "cross-site request refused: its {name} is not this server ({})",
            if https { "https only" } else { "http or https" }
        ))
    }
}

/// Whether `source` (an `Origin`, or a `Referer` URL) is the origin whose
/// host and port the request's `Host` names, with scheme https, or either
/// scheme unless `https`. `Origin: null` (a sandboxed or privacy-hidden
/// origin) is never the same.
fn is_same_origin(source: &str, host: &str, https: bool) -> bool {
    let Ok(uri) = source.parse::<Uri>() else {
        return false;
    };
    let (Some(scheme), Some(from)) = (uri.scheme_str(), uri.authority()) else {
        return false;
    };
    let default_port = match scheme {
        "https" => 443,
        "http" if !https => 80,
        _ => return false,
    };
    let Ok(to) = host.parse::<Authority>() else {
        return false;
    };
    // Browsers leave the scheme's default port out of both headers, but a
    // proxy may spell it out in Host.
    from.host().eq_ignore_ascii_case(to.host())
        && from.port_u16().unwrap_or(default_port) == to.port_u16().unwrap_or(default_port)
}

/// Host list filters and page; empty fields mean no filter (a GET form
/// sends them all).
#[derive(Debug, Deserialize, Default, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct HostFilterForm {
    /// Build-id prefix or release.
    kernel: Option<String>,
    /// Applied level.
    level: Option<String>,
    /// Feed.
    feed: Option<String>,
    /// Tag.
    tag: Option<String>,
    /// Hostname prefix.
    hostname: Option<String>,
    /// `protected`, `exposed` or `unsupported`.
    status: Option<String>,
    /// `1`: only stale hosts.
    stale: Option<String>,
    /// Where the page starts (the previous and next links carry it).
    cursor: Option<String>,
    /// Rows per page, 1 to 1000 (default 100).
    limit: Option<String>,
}

fn given(v: &Option<String>) -> Option<&str> {
    v.as_deref().map(str::trim).filter(|s| !s.is_empty())
}

impl HostFilterForm {
    fn filter(&self) -> Result<HostFilter, Error> {
        let f = HostFilter {
            feed: given(&self.feed).map(str::to_string),
            kernel: given(&self.kernel).map(str::to_string),
            level: given(&self.level)
                .map(|l| {
                    l.parse::<i64>()
                        .map_err(|_| crate::error::invalid("level: not a number"))
                })
                .transpose()?,
            tag: given(&self.tag).map(str::to_string),
            hostname: given(&self.hostname).map(str::to_string),
            status: given(&self.status).map(str::parse).transpose()?,
            stale: given(&self.stale).map(|_| true),
        };
        f.validate()?;
        Ok(f)
    }

    fn page(&self, list: &str) -> Result<PageRequest, Error> {
        let limit = given(&self.limit)
            .map(|l| {
                l.parse::<i64>()
                    .map_err(|_| crate::error::invalid("limit: not a number"))
            })
            .transpose()?;
        PageRequest::parse(list, limit, given(&self.cursor), crate::page::MAX_LIMIT)
    }
}

/// "Previous" and "next" links for a page, each this page's URI with
/// the neighbour's cursor.
fn pager(uri: &Uri, prev: &Option<String>, next: &Option<String>) -> String {
    let link = |c: &Option<String>, text: &str| match c {
        Some(c) => format!(
            "<a href=\"{}\">{text}</a>",
            esc(&crate::api::admin::with_cursor(uri, c))
        ),
        None => format!("<span class=\"off\">{text}</span>"),
    };
    format!(
        "<p class=\"pager\">{} · {}</p>",
        link(prev, "← previous"),
        link(next, "next →")
    )
}

/// `GET /ui/hosts?kernel=&level=&feed=&tag=&hostname=&status=&stale=1&cursor=&limit=`:
/// one page of hosts, by hostname.
#[utoipa::path(get, path = "/ui/hosts",
    summary = "Dashboard: hosts, one page by hostname, with previous and next links",
    security(("dashboardCookie" = [])),
    params(HostFilterForm),
    responses((status = 200, description = "the page", body = String, content_type = "text/html"),
        (status = 303, description = "no session: to the login page"),
        (status = "4XX", body = String, content_type = "text/html", description = "an error page"),
        (status = "5XX", body = String, content_type = "text/html", description = "an error page")))]
pub async fn hosts(
    State(s): State<Arc<AppState>>,
    Session(who): Session,
    uri: Uri,
    Query(f): Query<HostFilterForm>,
) -> Response {
    let (filter, wanted) = match f.filter().and_then(|x| Ok((x, f.page(HOSTS_LIST)?))) {
        Ok(v) => v,
        Err(e) => return error_page(e, Some(&who)),
    };
    let policy = s.settings.policy;
    let (hosts, fixes) =
        match tokio::try_join!(s.ctx.host_page(&filter, &wanted, policy), s.ctx.fixes()) {
            Ok(v) => v,
            Err(e) => return error_page(e, Some(&who)),
        };
    let now = s.ctx.clock.now();
    let mut rows = String::new();
    for h in &hosts.items {
        let (c, _) = fixes.standing(h, now, policy);
        let tags: Vec<String> = serde_json::from_str(&h.tags).unwrap_or_default();
        let _ = write!(
            rows,
            "<tr><td>{}<br><code>{}</code></td><td>{}</td><td>{}<br><code>{}</code></td><td>{}</td><td class=\"{}\">{}{}</td>\
             <td>{}</td><td class=\"{}\">{}</td></tr>",
            esc(&h.hostname),
            esc(&h.id),
            esc(&h.feed),
            esc(&h.kernel_release),
            esc(&h.build_id),
            h.level,
            c.status,
            c.status,
            if c.exposed_cves.is_empty() {
                String::new()
            } else {
                format!(": {}", esc(&c.exposed_cves.join(" ")))
            },
            esc(&tags.join(", ")),
            if c.stale { "stale" } else { "" },
            h.last_checkin.map_or_else(|| "never".to_string(), rfc3339),
        );
    }
    let v = |o: &Option<String>| esc(given(o).unwrap_or(""));
    let status = given(&f.status).unwrap_or("");
    let options: String = ["", "protected", "exposed", "unsupported"]
        .iter()
        .map(|o| {
            format!(
                "<option value=\"{o}\"{}>{}</option>",
                if *o == status { " selected" } else { "" },
                if o.is_empty() { "any status" } else { o }
            )
        })
        .collect();
    let body = format!(
        "<form method=\"get\" action=\"/ui/hosts\">\
         Host <input name=\"hostname\" value=\"{}\" size=\"10\" placeholder=\"name prefix\"> \
         Kernel <input name=\"kernel\" value=\"{}\" placeholder=\"build-id or release\"> \
         Level <input name=\"level\" value=\"{}\" size=\"4\"> Feed <input name=\"feed\" value=\"{}\" size=\"10\"> \
         Tag <input name=\"tag\" value=\"{}\" size=\"10\"> <select name=\"status\">{options}</select> \
         <label><input type=\"checkbox\" name=\"stale\" value=\"1\"{}> stale only</label> \
         <button type=\"submit\">Filter</button></form>\
         <p>{} hosts on this page</p>{}<table><tr><th>Host</th><th>Feed</th><th>Kernel</th><th>Level</th>\
         <th>Status</th><th>Tags</th><th>Last check-in</th></tr>{rows}</table>{}",
        v(&f.hostname),
        v(&f.kernel),
        v(&f.level),
        v(&f.feed),
        v(&f.tag),
        if filter.stale.is_some() { " checked" } else { "" },
        hosts.items.len(),
        pager(&uri, &hosts.prev, &hosts.next),
        pager(&uri, &hosts.prev, &hosts.next),
    );
    page(StatusCode::OK, "Hosts", Some(&who), &body)
}

/// `GET /ui/kernels`: first the builds hosts run that no level covers
/// (what the next release has to build for), then each kernel with its
/// levels.
#[utoipa::path(get, path = "/ui/kernels",
    summary = "Dashboard: kernels and their levels, and the builds hosts run that no level covers",
    security(("dashboardCookie" = [])),
    responses((status = 200, description = "the page", body = String, content_type = "text/html"),
        (status = 303, description = "no session: to the login page"),
        (status = "4XX", body = String, content_type = "text/html", description = "an error page"),
        (status = "5XX", body = String, content_type = "text/html", description = "an error page")))]
pub async fn kernels(State(s): State<Arc<AppState>>, Session(who): Session) -> Response {
    let (kernels, levels, (reported, counted_at)) = match tokio::try_join!(
        s.ctx.kernels(),
        s.ctx.levels(None),
        s.ctx.counted_builds(Coverage::All)
    ) {
        Ok(v) => v,
        Err(e) => return error_page(e, Some(&who)),
    };
    let mut body = uncovered_section(&reported, counted_at);
    for k in &kernels {
        let _ = write!(
            body,
            "<h2>{} <code>{}</code></h2><p>{} levels, first published {}</p>\
             <table><tr><th>Level</th><th>Name</th><th>Published</th><th>By</th><th>Feeds</th><th>CVEs</th></tr>",
            esc(&k.release),
            esc(&k.build_id),
            k.levels,
            rfc3339(k.first_published_at)
        );
        for l in levels.iter().filter(|l| l.build_id == k.build_id) {
            let cves: Vec<String> = l
                .cves
                .iter()
                .map(|c| {
                    format!(
                        "<span title=\"{}\">{}</span>",
                        esc(&c.description),
                        esc(&c.cve)
                    )
                })
                .collect();
            let _ = write!(
                body,
                "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
                l.level,
                esc(&l.name),
                rfc3339(l.published_at),
                esc(&l.published_by),
                esc(&l.feeds.join(", ")),
                cves.join(" ")
            );
        }
        body.push_str("</table>");
    }
    if kernels.is_empty() {
        body.push_str("<p>No kernel has published levels yet.</p>");
    }
    page(StatusCode::OK, "Kernels", Some(&who), &body)
}

/// The kernels page's "Builds hosts run without a level": a table of the
/// uncovered builds, each host count linking to those hosts, or a
/// sentence that there are none.
fn uncovered_section(reported: &[ReportedBuild], counted_at: i64) -> String {
    let mut out = format!(
        "<h2>Builds hosts run without a level</h2><p class=\"counted\">Hosts counted at {}.</p>",
        rfc3339(counted_at)
    );
    let uncovered: Vec<&ReportedBuild> = reported
        .iter()
        .filter(|b| b.newest_level.is_none())
        .collect();
    if uncovered.is_empty() {
        out.push_str(if reported.is_empty() {
            "<p>No active host is registered.</p>"
        } else {
            "<p>Every build active hosts run has a published level.</p>"
        });
        return out;
    }
    let hosts: i64 = uncovered.iter().map(|b| b.hosts).sum();
    let _ = write!(
        out,
        "<p>{} build{} run by {hosts} host{} that no published level covers.</p>\
         <table><tr><th>Release</th><th>Version</th><th>Build id</th><th>Hosts</th></tr>",
        uncovered.len(),
        if uncovered.len() == 1 { "" } else { "s" },
        if hosts == 1 { "" } else { "s" },
    );
    for b in uncovered {
        let _ = write!(
            out,
            "<tr><td>{}</td><td>{}</td><td><code>{}</code></td>\
             <td><a href=\"/ui/hosts?kernel={}\">{}</a></td></tr>",
            esc(&b.release),
            esc(&b.version),
            esc(&b.build_id),
            esc(&b.build_id),
            b.hosts
        );
    }
    out.push_str("</table>");
    out
}

/// `?policy_days=&format=&cursor=` of the compliance page.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct PolicyQuery {
    /// Policy in days.
    policy_days: Option<String>,
    /// `csv`: every exposure as CSV, streamed.
    format: Option<String>,
    /// Where the page of exposed hosts starts (the previous and next
    /// links carry it).
    cursor: Option<String>,
}

/// `GET /ui/compliance?policy_days=N`: the summary, the CVEs, and the
/// exposures of one page of exposed hosts (`cursor`); `format=csv`
/// downloads every exposure, streamed.
#[utoipa::path(get, path = "/ui/compliance",
    summary = "Dashboard: compliance (summary, CVEs, one page of exposed hosts' exposures)",
    security(("dashboardCookie" = [])),
    params(PolicyQuery),
    responses((status = 200, description = "the page, or with format=csv the CSV", content((String = "text/html"), (String = "text/csv"))),
        (status = 303, description = "no session: to the login page"),
        (status = "4XX", body = String, content_type = "text/html", description = "an error page"),
        (status = "5XX", body = String, content_type = "text/html", description = "an error page")))]
pub async fn compliance(
    State(s): State<Arc<AppState>>,
    Session(who): Session,
    uri: Uri,
    Query(q): Query<PolicyQuery>,
) -> Response {
    let days = match given(&q.policy_days).map(str::parse::<i64>) {
        None => None,
        Some(Ok(d)) => Some(d),
        Some(Err(_)) => {
            return error_page(
                crate::error::invalid("policy_days: not a number"),
                Some(&who),
            )
        }
    };
    let (policy, wanted) = match s.settings.policy.with(days, None).and_then(|p| {
        Ok((
            p,
            PageRequest::parse(HOSTS_LIST, None, given(&q.cursor), crate::page::MAX_LIMIT)?,
        ))
    }) {
        Ok(v) => v,
        Err(e) => return error_page(e, Some(&who)),
    };
    let exposed = HostFilter {
        status: Some(Status::Exposed),
        ..HostFilter::default()
    };
    // The CSV download behind the session cookie: the API's CSV needs a
    // bearer token, which a browser link cannot send.
    if given(&q.format) == Some("csv") {
        return (
            [
                (header::CONTENT_TYPE, "text/csv; charset=utf-8"),
                (
                    header::CONTENT_DISPOSITION,
                    "attachment; filename=\"compliance.csv\"",
                ),
            ],
            crate::api::admin::reports::stream_csv(s.ctx.clone(), exposed, policy, true),
        )
            .into_response();
    }
    let period = match crate::printable::Period::parse(None, None, s.ctx.clock.now()) {
        Ok(p) => p,
        Err(e) => return error_page(e, Some(&who)),
    };
    let ((report, sm, cves), hosts, fixes) = match tokio::try_join!(
        s.ctx.printable_counted(period, policy.policy_days),
        s.ctx.host_page(&exposed, &wanted, policy),
        s.ctx.fixes()
    ) {
        Ok(v) => v,
        Err(e) => return error_page(e, Some(&who)),
    };
    let now = s.ctx.clock.now();
    let mut body = format!(
        "<form method=\"get\" action=\"/ui/compliance\">Policy <input name=\"policy_days\" value=\"{}\" size=\"4\"> days \
         <button type=\"submit\">Apply</button> · <a href=\"/ui/compliance?format=csv&amp;policy_days={0}\">CSV</a></form>\
         <p><span class=\"num\">{} hosts</span><span class=\"num protected\">{} protected</span>\
         <span class=\"num exposed\">{} exposed</span><span class=\"num breach\">{} breaching</span>\
         <span class=\"num\">{} unsupported</span><span class=\"num stale\">{} stale</span></p>\
         <p class=\"counted\">Hosts counted at {}.</p>\
         <h2>The last {} days</h2>{}<p>Printable report for this period: \
         <a href=\"/ui/compliance/report?policy_days={0}\">HTML</a> · \
         <a href=\"/ui/compliance/report?format=pdf&amp;policy_days={0}\">PDF</a></p>\
         <h2>CVEs</h2><table><tr><th>CVE</th><th>Fixed</th><th>Exposed</th><th>Breaching</th><th>First fix</th><th>Description</th></tr>",
        sm.policy_days,
        sm.hosts_total,
        sm.hosts_protected,
        sm.hosts_exposed,
        sm.hosts_breaching,
        sm.hosts_unsupported,
        sm.hosts_stale,
        esc(&sm.generated_at),
        period.days(),
        crate::printable::html::charts(&report),
    );
    for cv in &cves {
        let _ = write!(
            body,
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            esc(&cv.cve),
            cv.hosts_fixed,
            cv.hosts_exposed,
            cv.hosts_breaching,
            esc(&cv.first_fix_published_at),
            esc(&cv.description)
        );
    }
    let _ = write!(
        body,
        "</table><h2>Exposures</h2>{}<table><tr><th>Host</th><th>Feed</th><th>Applied</th><th>CVE</th><th>Fixed in</th>\
         <th>Fix published</th><th>Days exposed</th></tr>",
        pager(&uri, &hosts.prev, &hosts.next)
    );
    for h in &hosts.items {
        for e in fixes.standing(h, now, policy).1 {
            let _ = write!(
                body,
                "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td class=\"{}\">{}</td></tr>",
                esc(&e.hostname),
                esc(&e.feed),
                e.applied_level,
                esc(&e.cve),
                e.fixed_in_level,
                esc(&e.fix_published_at),
                if e.breach { "breach" } else { "" },
                e.days_exposed
            );
        }
    }
    body.push_str("</table>");
    page(StatusCode::OK, "Compliance", Some(&who), &body)
}

/// `?from=&to=&policy_days=&format=` of the printable compliance report.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct PrintableQuery {
    /// The period's first day, `YYYY-MM-DD` (UTC); default: 29 days
    /// before `to`.
    pub from: Option<String>,
    /// Its last day, `YYYY-MM-DD`, at the latest today; default: today.
    pub to: Option<String>,
    /// The policy in days (0 to 3650); default: the server's.
    pub policy_days: Option<String>,
    /// `html` (default) or `pdf`.
    pub format: Option<String>,
}

/// The printable compliance report `q` asks for, judged by `policy`
/// unless it names its own: an HTML document with the dashboard's
/// security headers, or a PDF. Shared by the dashboard (session) and the
/// API (token); each maps the errors its own way.
pub async fn printable_report(
    ctx: &crate::Context,
    policy: crate::report::Policy,
    q: &PrintableQuery,
) -> Result<Response, Error> {
    let pdf = match given(&q.format) {
        None | Some("html") => false,
        Some("pdf") => true,
        Some(other) => {
            return Err(crate::error::invalid(format!(
                "format: {other:.40?}: expected `html` or `pdf`"
            )))
        }
    };
    let days = given(&q.policy_days)
        .map(|d| {
            d.parse::<i64>().map_err(|_| {
                crate::error::invalid(format!("policy_days: {d:.40?} is not an integer"))
            })
        })
        .transpose()?;
    let policy = policy.with(days, None)?;
    let period = crate::printable::Period::parse(given(&q.from), given(&q.to), ctx.clock.now())?;
    let report = ctx.printable(period, policy.policy_days).await?;
    if !pdf {
        return Ok(html_response(
            StatusCode::OK,
            crate::printable::html::document(&report),
        ));
    }
    let name = format!(
        "attachment; filename=\"compliance-{}-{}.pdf\"",
        crate::printable::charts::date(period.first),
        crate::printable::charts::date(period.last)
    );
    // Laying out and writing the PDF is CPU work: off the async workers.
    let bytes = tokio::task::spawn_blocking(move || crate::printable::pdf::render(&report))
        .await
        .map_err(|e| Error::Task(e.to_string()))??;
    let mut r = bytes.into_response();
    let h = r.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/pdf"),
    );
    if let Ok(v) = HeaderValue::from_str(&name) {
        h.insert(header::CONTENT_DISPOSITION, v);
    }
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    Ok(r)
}

/// `GET /ui/compliance/report?from=&to=&policy_days=&format=html|pdf`:
/// the printable compliance report for a period.
#[utoipa::path(get, path = "/ui/compliance/report",
    summary = "Dashboard: the printable compliance report for a period (HTML to print, or PDF)",
    security(("dashboardCookie" = [])),
    params(PrintableQuery),
    responses((status = 200, description = "the report", content((String = "text/html"), ("application/pdf"))),
        (status = 303, description = "no session: to the login page"),
        (status = "4XX", body = String, content_type = "text/html", description = "an error page"),
        (status = "5XX", body = String, content_type = "text/html", description = "an error page")))]
pub async fn compliance_report(
    State(s): State<Arc<AppState>>,
    Session(who): Session,
    Query(q): Query<PrintableQuery>,
) -> Response {
    match printable_report(&s.ctx, s.settings.policy, &q).await {
        Ok(r) => r,
        Err(e) => error_page(e, Some(&who)),
    }
}

/// `?cursor=&action=&actor=&target=` of the audit page.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct AuditForm {
    /// Where the page starts (the previous and next links carry it).
    cursor: Option<String>,
    /// Action (exact).
    action: Option<String>,
    /// Who (exact).
    actor: Option<String>,
    /// Target (exact).
    target: Option<String>,
}

/// `GET /ui/audit`: the audit trail, newest first, 100 entries a page,
/// filtered by action, actor or target.
#[utoipa::path(get, path = "/ui/audit",
    summary = "Dashboard: audit trail, newest first, 100 entries a page",
    security(("dashboardCookie" = [])),
    params(AuditForm),
    responses((status = 200, description = "the page", body = String, content_type = "text/html"),
        (status = 303, description = "no session: to the login page"),
        (status = "4XX", body = String, content_type = "text/html", description = "an error page"),
        (status = "5XX", body = String, content_type = "text/html", description = "an error page")))]
pub async fn audit(
    State(s): State<Arc<AppState>>,
    Session(who): Session,
    uri: Uri,
    Query(q): Query<AuditForm>,
) -> Response {
    let filter = AuditFilter {
        action: given(&q.action).map(str::to_string),
        actor: given(&q.actor).map(str::to_string),
        target: given(&q.target).map(str::to_string),
    };
    let entries =
        match PageRequest::parse(AUDIT_LIST, None, given(&q.cursor), crate::page::MAX_LIMIT) {
            Ok(p) => s.ctx.audit_page(&filter, &p).await,
            Err(e) => Err(e),
        };
    let entries = match entries {
        Ok(e) => e,
        Err(e) => return error_page(e, Some(&who)),
    };
    let v = |o: &Option<String>| esc(given(o).unwrap_or(""));
    let mut body = format!(
        "<form method=\"get\" action=\"/ui/audit\">Action <input name=\"action\" value=\"{}\" size=\"12\"> \
         Who <input name=\"actor\" value=\"{}\" size=\"12\"> Target <input name=\"target\" value=\"{}\" size=\"16\"> \
         <button type=\"submit\">Filter</button></form>{}\
         <table><tr><th>#</th><th>When</th><th>Who</th><th>Action</th><th>Target</th><th>Detail</th></tr>",
        v(&q.action),
        v(&q.actor),
        v(&q.target),
        pager(&uri, &entries.prev, &entries.next)
    );
    for a in &entries.items {
        let _ = write!(
            body,
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td><code>{}</code></td></tr>",
            a.id,
            rfc3339(a.at),
            esc(&a.actor),
            esc(&a.action),
            esc(&a.target),
            esc(&a.detail)
        );
    }
    body.push_str("</table>");
    page(StatusCode::OK, "Audit trail", Some(&who), &body)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_markup_and_quotes() {
        assert_eq!(
            esc("<script>alert('x\")</script>&"),
            "&lt;script&gt;alert(&#39;x&quot;)&lt;/script&gt;&amp;"
        );
    }

    #[test]
    fn same_origin_compares_host_and_port_and_scheme_when_https() {
        for (source, host, https, same) in [
            ("http://127.0.0.1:8080", "127.0.0.1:8080", false, true),
            ("https://127.0.0.1:8080", "127.0.0.1:8080", false, true),
            ("http://127.0.0.1:8080", "127.0.0.1:8080", true, false),
            ("https://Noreboot.Example", "noreboot.example", true, true),
            (
                "https://noreboot.example",
                "noreboot.example:443",
                true,
                true,
            ),
            (
                "https://noreboot.example:8443",
                "noreboot.example",
                true,
                false,
            ),
            (
                "http://noreboot.example",
                "noreboot.example:443",
                false,
                false,
            ),
            (
                "https://noreboot.example.evil",
                "noreboot.example",
                true,
                false,
            ),
            ("https://[::1]:8443/ui/hosts?x=1", "[::1]:8443", true, true),
            ("null", "noreboot.example", false, false),
            ("noreboot.example", "noreboot.example", false, false),
            ("ftp://noreboot.example", "noreboot.example", false, false),
            ("", "noreboot.example", false, false),
        ] {
            assert_eq!(
                is_same_origin(source, host, https),
                same,
                "{source} to {host}, https {https}"
            );
        }
    }

    #[test]
    fn cross_site_needs_a_source_except_where_told() {
        let headers = |pairs: &[(&'static str, &'static str)]| {
            let mut h = HeaderMap::new();
            for (k, v) in pairs {
                h.insert(*k, HeaderValue::from_static(v));
            }
            h
        };
        let uri: Uri = "/ui/logout".parse().unwrap();
        let host = ("host", "n.example");
        assert!(cross_site(&headers(&[host]), &uri, false, true).is_none());
        assert!(cross_site(&headers(&[host]), &uri, false, false).is_some());
        let own = [host, ("origin", "http://n.example")];
        assert!(cross_site(&headers(&own), &uri, false, false).is_none());
        // The Origin decides when both are sent.
        let both = [
            host,
            ("origin", "https://evil.example"),
            ("referer", "http://n.example/ui/hosts"),
        ];
        assert!(cross_site(&headers(&both), &uri, false, false).is_some());
        let fetch = [
            host,
            ("origin", "http://n.example"),
            ("sec-fetch-site", "same-site"),
        ];
        assert!(cross_site(&headers(&fetch), &uri, false, false).is_some());
        // HTTP/2: the host is the request's authority.
        let h2: Uri = "https://n.example/ui/logout".parse().unwrap();
        let origin = [("origin", "https://n.example")];
        assert!(cross_site(&headers(&origin), &h2, true, false).is_none());
        assert!(cross_site(&headers(&origin), &uri, true, false).is_some());
    }
}
