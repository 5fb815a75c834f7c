//! Dashboard sessions (issue 16, point 10): the cookie is a random session
//! id kept (hashed) in the database, not the API token; sign-out revokes
//! it on the server; it expires; it is `Secure` when browsers come over
//! HTTPS (TLS here, or `--behind-tls-proxy`); forms from other sites are
//! refused; failed sign-ins are throttled per address, logged and audited.

use std::net::IpAddr;
use std::sync::{Arc, Mutex};

use reqwest::header::HeaderMap;
use reqwest::{Client, StatusCode};
use server::model::Role;

use crate::cli::{admin, last_line, serve_with};
use crate::common::*;

fn client() -> Client {
    Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
}

/// Sends the sign-in form with `token` and the extra `headers`.
async fn post_login(
    http: &Client,
    url: &str,
    token: &str,
    headers: &[(&str, &str)],
) -> reqwest::Response {
    let mut req = http
        .post(format!("{url}/ui/login"))
        .form(&[("token", token)]);
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    req.send().await.unwrap()
}

/// The session cookie a sign-in set: (the `name=value` pair, the whole
/// `Set-Cookie` line).
fn session_cookie(headers: &HeaderMap) -> (String, String) {
    let line = headers
        .get_all("set-cookie")
        .iter()
        .map(|v| v.to_str().unwrap().to_string())
        .find(|c| c.starts_with("noreboot_session=") && !c.starts_with("noreboot_session=;"))
        .unwrap_or_else(|| panic!("no session cookie in {headers:?}"));
    (line.split(';').next().unwrap().to_string(), line)
}

/// Signs in from the server's own origin; answers the cookie pair.
pub(crate) async fn sign_in(url: &str, token: &str) -> String {
    let r = post_login(&client(), url, token, &[("origin", url)]).await;
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    session_cookie(r.headers()).0
}

/// The status of a dashboard page with `cookie`: 200, or 303 to the login.
pub(crate) async fn page_status(url: &str, cookie: &str) -> StatusCode {
    let r = client()
        .get(format!("{url}/ui/hosts"))
        .header("cookie", cookie)
        .send()
        .await
        .unwrap();
    if r.status() == StatusCode::SEE_OTHER {
        assert_eq!(r.headers()["location"], "/ui/login");
    }
    r.status()
}

pub(crate) async fn logout(url: &str, cookie: &str, headers: &[(&str, &str)]) -> reqwest::Response {
    let mut req = client()
        .post(format!("{url}/ui/logout"))
        .header("cookie", cookie);
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    req.send().await.unwrap()
}

#[tokio::test]
async fn the_dashboard_cookie_is_a_session_id_not_the_token() {
    let s = TestServer::start().await;
    let token = s.token("viewer", Role::ReadOnly).await;
    let r = post_login(&client(), &s.url, &token, &[]).await;
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    let (cookie, line) = session_cookie(r.headers());
    let id = cookie.strip_prefix("noreboot_session=").unwrap();
    assert!(!line.contains(&token), "{line}");
    assert!(!line.contains(&token["nra_".len()..]), "{line}");
    assert!(id.starts_with("nrs_") && id.len() == 68, "{id}");
    for attr in ["HttpOnly", "SameSite=Strict", "Path=/;", "Max-Age=43200"] {
        assert!(line.contains(attr), "{attr}: {line}");
    }
    assert!(!line.contains("Secure"), "plain HTTP: {line}");
    assert_eq!(page_status(&s.url, &cookie).await, StatusCode::OK);
    // The token is no cookie: presented as one (as the old dashboard set
    // it), it opens nothing.
    let as_cookie = format!("noreboot_session={token}");
    assert_eq!(page_status(&s.url, &as_cookie).await, StatusCode::SEE_OTHER);
    // A browser still holding the old token cookie (Path=/ui, sent first)
    // beside the session's gets in by the session.
    let both = format!("{as_cookie}; {cookie}");
    assert_eq!(page_status(&s.url, &both).await, StatusCode::OK);
    // Each sign-in is a session of its own.
    assert_ne!(sign_in(&s.url, &token).await, cookie);
    // The database keeps a hash of the id, never the id or the token.
    let stored: Vec<String> = sqlx::query_scalar("SELECT id_hash FROM dashboard_sessions")
        .fetch_all(s.ctx.db.pool())
        .await
        .unwrap();
    assert_eq!(stored.len(), 2);
    assert!(stored.contains(&server::secrets::hash(id)), "{stored:?}");
    assert!(!stored.iter().any(|h| h == id || h.contains(&token)));
}

#[tokio::test]
async fn sign_out_revokes_the_session_on_the_server() {
    let s = TestServer::start().await;
    let token = s.token("ops", Role::Admin).await;
    let cookie = sign_in(&s.url, &token).await;
    let other = sign_in(&s.url, &token).await;
    assert_eq!(page_status(&s.url, &cookie).await, StatusCode::OK);

    let r = logout(&s.url, &cookie, &[("origin", &s.url)]).await;
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    assert_eq!(r.headers()["location"], "/ui/login");
    // A copy of the cookie no longer works.
    assert_eq!(page_status(&s.url, &cookie).await, StatusCode::SEE_OTHER);
    // The same token's other session is not touched.
    assert_eq!(page_status(&s.url, &other).await, StatusCode::OK);
    // And the browser is told to forget the cookie.
    let cleared: Vec<&str> = r
        .headers()
        .get_all("set-cookie")
        .iter()
        .map(|v| v.to_str().unwrap())
        .collect();
    assert!(
        cleared
            .iter()
            .any(|c| c.starts_with("noreboot_session=;") && c.contains("Path=/;")),
        "{cleared:?}"
    );
    // Signing out again is harmless.
    let r = logout(&s.url, &cookie, &[("origin", &s.url)]).await;
    assert_eq!(r.status(), StatusCode::SEE_OTHER);

    let audit = s.ctx.audit_log(10).await.unwrap();
    let actions: Vec<(&str, &str)> = audit
        .iter()
        .map(|a| (a.action.as_str(), a.actor.as_str()))
        .collect();
    assert_eq!(
        actions[..3],
        [
            ("dashboard-sign-out", "ops"),
            ("dashboard-sign-in", "ops"),
            ("dashboard-sign-in", "ops")
        ],
        "{audit:?}"
    );
    assert_eq!(audit[0].target, "127.0.0.1");
}

#[tokio::test]
async fn an_expired_session_is_refused() {
    let s = TestServer::start().await;
    let token = s.token("viewer", Role::ReadOnly).await;
    let cookie = sign_in(&s.url, &token).await;
    // 12 hours by default, counted by the server, not the browser.
    s.clock.advance(12 * 3600 - 1);
    assert_eq!(page_status(&s.url, &cookie).await, StatusCode::OK);
    s.clock.advance(1);
    assert_eq!(page_status(&s.url, &cookie).await, StatusCode::SEE_OTHER);
    // Signing in again opens a new one.
    let cookie = sign_in(&s.url, &token).await;
    assert_eq!(page_status(&s.url, &cookie).await, StatusCode::OK);
}

#[tokio::test]
async fn the_session_lifetime_is_a_setting() {
    let s = TestServer::start_with(server::api::Settings {
        session_lifetime: std::time::Duration::from_secs(600),
        ..server::api::Settings::default()
    })
    .await;
    let token = s.token("viewer", Role::ReadOnly).await;
    let r = post_login(&client(), &s.url, &token, &[]).await;
    let (cookie, line) = session_cookie(r.headers());
    assert!(line.contains("Max-Age=600"), "{line}");
    s.clock.advance(599);
    assert_eq!(page_status(&s.url, &cookie).await, StatusCode::OK);
    s.clock.advance(1);
    assert_eq!(page_status(&s.url, &cookie).await, StatusCode::SEE_OTHER);
}

#[tokio::test]
async fn sessions_are_shared_by_every_server_on_the_database() {
    let s = TestServer::start().await;
    let token = s.token("viewer", Role::ReadOnly).await;
    let cookie = sign_in(&s.url, &token).await;
    let id = cookie.strip_prefix("noreboot_session=").unwrap();
    // Another server process's view of the same database.
    let other = server::Context::open(
        &server::Options {
            db_url: s.storage.db_url.clone(),
            data_dir: s.storage.data.clone(),
            trusted_keys: Some(s.trusted_dir()),
        },
        s.clock.clone(),
    )
    .await
    .unwrap();
    assert_eq!(other.session(id).await.unwrap().name, "viewer");
    assert_eq!(
        other.sign_out(id, "192.0.2.7").await.unwrap().as_deref(),
        Some("viewer")
    );
    assert_eq!(page_status(&s.url, &cookie).await, StatusCode::SEE_OTHER);
    other.db.close().await;
}

/// Signs in to the `noreboot-server` at `url` with `http`; answers the
/// `Set-Cookie` line of the session.
async fn cookie_line(http: &Client, url: &str, token: &str) -> String {
    let r = post_login(http, url, token, &[]).await;
    assert_eq!(r.status(), StatusCode::SEE_OTHER, "{url}");
    session_cookie(r.headers()).1
}

#[tokio::test]
async fn the_cookie_is_secure_with_tls_or_behind_a_tls_proxy_only() {
    let dir = tempfile::tempdir().unwrap();
    let storage = Storage::new(&dir.path().join("data"));
    let token = last_line(&ok(admin(
        &storage,
        &["token", "create", "viewer", "--role", "read-only"],
    )));
    let http = client();

    // Plain HTTP: no Secure (a browser would not send the cookie back).
    let (server, url) = serve_with(&storage, &[]);
    let line = cookie_line(&http, &url, &token).await;
    assert!(!line.contains("Secure"), "{line}");
    drop(server);

    // Plain HTTP behind a TLS-terminating proxy, as the switch says.
    let (server, url) = serve_with(&storage, &["--behind-tls-proxy"]);
    let line = cookie_line(&http, &url, &token).await;
    assert!(line.contains("; Secure"), "{line}");
    for attr in ["HttpOnly", "SameSite=Strict", "Path=/;"] {
        assert!(line.contains(attr), "{attr}: {line}");
    }
    // Forms must then come from https pages: the browser's page is the
    // proxy's, whose scheme is https.
    let host = url.strip_prefix("http://").unwrap();
    let r = post_login(
        &http,
        &url,
        &token,
        &[("origin", &format!("https://{host}"))],
    )
    .await;
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    let r = post_login(&http, &url, &token, &[("origin", &url)]).await;
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
    drop(server);

    // TLS here.
    let rcgen::CertifiedKey { cert, key_pair } =
        rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).unwrap();
    let cert_path = dir.path().join("cert.pem");
    let key_path = dir.path().join("key.pem");
    std::fs::write(&cert_path, cert.pem()).unwrap();
    std::fs::write(&key_path, key_pair.serialize_pem()).unwrap();
    let (_server, url) = serve_with(
        &storage,
        &[
            "--tls-cert",
            cert_path.to_str().unwrap(),
            "--tls-key",
            key_path.to_str().unwrap(),
        ],
    );
    let addr: std::net::SocketAddr = url.strip_prefix("https://").unwrap().parse().unwrap();
    let https = Client::builder()
        .use_rustls_tls()
        .add_root_certificate(reqwest::Certificate::from_pem(cert.pem().as_bytes()).unwrap())
        .resolve("localhost", addr)
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let base = format!("https://localhost:{}", addr.port());
    let line = cookie_line(&https, &base, &token).await;
    assert!(line.contains("; Secure"), "{line}");
    // And the session works over it.
    let r = https
        .get(format!("{base}/ui/hosts"))
        .header("cookie", line.split(';').next().unwrap())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
}

/// Asserts a 403 with the server's JSON error body.
async fn assert_refused(what: &str, r: reqwest::Response) {
    assert_eq!(r.status(), StatusCode::FORBIDDEN, "{what}");
    assert!(r.headers().get("set-cookie").is_none(), "{what}");
    let body: serde_json::Value = r.json().await.unwrap();
    let msg = body["error"].as_str().unwrap_or("");
    assert!(msg.contains("cross-site"), "{what}: {body}");
}

#[tokio::test]
async fn cross_site_dashboard_posts_are_refused() {
    let s = TestServer::start().await;
    let token = s.token("ops", Role::Admin).await;
    let http = client();
    let url = s.url.as_str();
    let port = url.rsplit(':').next().unwrap();
    let evil = "https://evil.example";

    // Sign-in forms from other sites: another host, another port, an
    // opaque origin, a page elsewhere (Referer), the browser's own verdict.
    let other_port = format!("http://127.0.0.1:{}", port.parse::<u16>().unwrap() ^ 1);
    let evil_page = format!("{evil}/page");
    let localhost = format!("http://localhost:{port}");
    for (what, headers) in [
        ("Origin of another site", vec![("origin", evil)]),
        ("Origin of another port", vec![("origin", &other_port)]),
        ("Origin of another host name", vec![("origin", &localhost)]),
        ("opaque Origin", vec![("origin", "null")]),
        ("Referer of another site", vec![("referer", &evil_page)]),
        (
            "Sec-Fetch-Site cross-site",
            vec![("origin", url), ("sec-fetch-site", "cross-site")],
        ),
        (
            "Sec-Fetch-Site same-site",
            vec![("origin", url), ("sec-fetch-site", "same-site")],
        ),
    ] {
        assert_refused(what, post_login(&http, url, &token, &headers).await).await;
    }
    // From the dashboard's own page: by Origin, by Referer, with the
    // browser's Sec-Fetch-Site; and without either header (a script).
    let own_page = format!("{url}/ui/login");
    for headers in [
        vec![("origin", url)],
        vec![("referer", own_page.as_str())],
        vec![("origin", url), ("sec-fetch-site", "same-origin")],
        vec![],
    ] {
        let r = post_login(&http, url, &token, &headers).await;
        assert_eq!(r.status(), StatusCode::SEE_OTHER, "{headers:?}");
    }

    // Sign-out acts with the cookie: another site's, or a request naming
    // no page at all, is refused and the session lives on.
    let cookie = sign_in(url, &token).await;
    assert_refused(
        "sign-out from another site",
        logout(url, &cookie, &[("origin", evil)]).await,
    )
    .await;
    assert_refused(
        "sign-out without Origin or Referer",
        logout(url, &cookie, &[]).await,
    )
    .await;
    assert_eq!(page_status(url, &cookie).await, StatusCode::OK);
    let r = logout(url, &cookie, &[("referer", &format!("{url}/ui/hosts"))]).await;
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    assert_eq!(page_status(url, &cookie).await, StatusCode::SEE_OTHER);

    // The API takes bearer tokens, not cookies: an Origin changes nothing.
    let r = http
        .post(format!("{url}/api/v1/admin/feeds"))
        .bearer_auth(&token)
        .header("origin", evil)
        .header("sec-fetch-site", "cross-site")
        .json(&serde_json::json!({"name": "canary"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::CREATED);
}

/// What the tracing subscriber writes, kept for the test to read.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for Captured {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(b);
        Ok(b.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for Captured {
    type Writer = Captured;

    fn make_writer(&'a self) -> Self::Writer {
        self.clone()
    }
}

// One thread (tokio's test default): the server's tasks run on it, so the
// subscriber set for this thread sees the server's log events.
#[tokio::test]
async fn failed_sign_ins_are_throttled_per_address_logged_and_audited() {
    let log = Captured::default();
    let subscriber = tracing_subscriber::fmt()
        .with_writer(log.clone())
        .with_ansi(false)
        .with_max_level(tracing::Level::INFO)
        .finish();
    let _guard = tracing::subscriber::set_default(subscriber);

    let s = TestServer::start().await;
    let token = s.token("ops", Role::Admin).await;
    let http = client();
    let wrong = "nra_guessedsecret0123";
    // 10 failures a minute per address (the default), each a 401 ...
    for i in 0..10 {
        let r = post_login(&http, &s.url, wrong, &[]).await;
        assert_eq!(r.status(), StatusCode::UNAUTHORIZED, "attempt {i}");
    }
    // ... then the address is refused, even with the right token.
    let r = post_login(&http, &s.url, &token, &[]).await;
    assert_eq!(r.status(), StatusCode::TOO_MANY_REQUESTS);
    let retry: u64 = r.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=60).contains(&retry), "{retry}");
    assert!(r.headers().get("set-cookie").is_none());
    assert!(r.text().await.unwrap().contains("Too many failed sign-ins"));
    // Another address is not.
    let elsewhere = Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .local_address("127.0.0.2".parse::<IpAddr>().unwrap())
        .build()
        .unwrap();
    let r = post_login(&elsewhere, &s.url, &token, &[]).await;
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    // The next minute, the first address may try again.
    s.clock.advance(60);
    let r = post_login(&http, &s.url, &token, &[]).await;
    assert_eq!(r.status(), StatusCode::SEE_OTHER);

    // Each failure is audited, with the address and without the token.
    let audit = s.ctx.audit_log(100).await.unwrap();
    let failed: Vec<_> = audit
        .iter()
        .filter(|a| a.action == "dashboard-sign-in-failed")
        .collect();
    assert_eq!(failed.len(), 10, "{audit:?}");
    for a in &failed {
        assert_eq!(a.target, "127.0.0.1");
        assert!(a.detail.contains("unknown admin token"), "{}", a.detail);
    }
    assert!(!format!("{audit:?}").contains("guessedsecret"));
    // And logged, one line each, with the address and without the token.
    let log = String::from_utf8(log.0.lock().unwrap().clone()).unwrap();
    let lines: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("failed dashboard sign-in"))
        .collect();
    assert_eq!(lines.len(), 10, "{log}");
    assert!(
        lines.iter().all(|l| l.contains("address=127.0.0.1")),
        "{log}"
    );
    assert!(log.contains("too many failed sign-ins"), "{log}");
    assert!(!log.contains("guessedsecret"), "{log}");
}
