//! The dashboard: sign-in by form and HttpOnly cookie, filters, escaping
//! of what hosts send (a host named `<script>…`), checked over HTTP and
//! rendered by Debian's headless Chromium, whose screenshots are kept
//! under the target directory's `tmp/dashboard/` as test artifacts.

use std::path::PathBuf;
use std::process::Command;

use reqwest::StatusCode;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::reports::{fleet, EVIL};

fn no_redirects() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
}

/// Signs in with `token` through the form; answers the cookie pair.
pub(crate) async fn sign_in(url: &str, token: &str) -> String {
    let r = no_redirects()
        .post(format!("{url}/ui/login"))
        .form(&[("token", token)])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    assert_eq!(r.headers()["location"], "/ui/hosts");
    let cookie = r.headers()["set-cookie"].to_str().unwrap().to_string();
    assert!(cookie.contains("HttpOnly"), "{cookie}");
    assert!(cookie.contains("SameSite=Strict"), "{cookie}");
    cookie.split(';').next().unwrap().to_string()
}

pub(crate) async fn page(url: &str, path: &str, cookie: &str) -> (StatusCode, String) {
    let r = no_redirects()
        .get(format!("{url}{path}"))
        .header("cookie", cookie)
        .send()
        .await
        .unwrap();
    (r.status(), r.text().await.unwrap())
}

#[tokio::test]
async fn sign_in_filters_and_escaping_over_http() {
    let (s, viewer) = fleet().await;
    // Not signed in: to the login page.
    let r = no_redirects()
        .get(format!("{}/ui/hosts", s.url))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    assert_eq!(r.headers()["location"], "/ui/login");
    let (st, _) = page(&s.url, "/ui/hosts", "noreboot_session=nra_wrong").await;
    assert_eq!(st, StatusCode::SEE_OTHER);
    // Wrong tokens are refused with the form again.
    for bad in ["nra_wrong", "", "a;b", &"x".repeat(5000)] {
        let r = no_redirects()
            .post(format!("{}/ui/login", s.url))
            .form(&[("token", bad)])
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::UNAUTHORIZED, "{bad:.20}");
        assert!(r.headers().get("set-cookie").is_none());
    }

    let cookie = sign_in(&s.url, &viewer).await;
    let (st, html) = page(&s.url, "/ui/hosts", &cookie).await;
    assert_eq!(st, StatusCode::OK);
    assert!(html.contains("4 hosts on this page"), "{html}");
    assert!(html.contains("&lt;script&gt;alert(1)&lt;/script&gt;"));
    assert!(!html.contains(EVIL));
    for (q, n) in [
        ("?feed=stable", 4),
        ("?feed=test", 0),
        ("?level=1", 1),
        (&format!("?kernel={}", &crate::common::KERNEL_B[..12]), 1),
        ("?kernel=6.1.0-47-cloud-amd64", 4),
        ("?tag=web", 4),
        ("?tag=db", 0),
        ("?stale=1", 1),
        ("?kernel=&level=&feed=&tag=", 4),
    ] {
        let (st, html) = page(&s.url, &format!("/ui/hosts{q}"), &cookie).await;
        assert_eq!(st, StatusCode::OK, "{q}");
        assert!(
            html.contains(&format!("{n} hosts on this page")),
            "{q}: {html}"
        );
    }
    let (st, html) = page(&s.url, "/ui/hosts?level=x", &cookie).await;
    assert_eq!(st, StatusCode::BAD_REQUEST);
    assert!(html.contains("not a number"));
    let (st, html) = page(&s.url, "/ui/compliance?policy_days=-5", &cookie).await;
    assert_eq!(st, StatusCode::BAD_REQUEST, "{html}");
    let (st, html) = page(&s.url, "/ui/compliance", &cookie).await;
    assert_eq!(st, StatusCode::OK);
    assert!(html.contains("1 breaching") && html.contains("CVE-2024-0001"));
    let (st, csv) = page(&s.url, "/ui/compliance?format=csv&policy_days=5", &cookie).await;
    assert_eq!(st, StatusCode::OK);
    assert!(csv.starts_with("hostname,host_id,"), "{csv}");
    assert_eq!(csv.matches(",true\r\n").count(), 3, "{csv}");
    let (_, html) = page(&s.url, "/ui/kernels", &cookie).await;
    assert!(html.contains("CVE-2024-0002") && html.contains(crate::common::KERNEL_A));
    let (_, html) = page(&s.url, "/ui/audit", &cookie).await;
    assert!(html.contains("publish") && html.contains("token-create"));
    // Revoking the token ends the session.
    s.ctx.revoke_token("test", "viewer").await.unwrap();
    let (st, _) = page(&s.url, "/ui/hosts", &cookie).await;
    assert_eq!(st, StatusCode::SEE_OTHER);
}

/// Forwards browser connections to the server, adding the session cookie
/// to each request head: headless Chromium's `--screenshot` cannot fill a
/// form, and the server under test stays exactly as deployed.
pub(crate) async fn cookie_proxy(target: String, cookie: String) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((mut client, _)) = listener.accept().await else {
                return;
            };
            let target = target.clone();
            let cookie = cookie.clone();
            tokio::spawn(async move {
                let mut head = Vec::new();
                let mut buf = [0u8; 4096];
                while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                    match client.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => head.extend_from_slice(&buf[..n]),
                    }
                }
                let text = String::from_utf8_lossy(&head).to_string();
                let (first, rest) = text.split_once("\r\n").unwrap();
                // One request per connection keeps the injection simple.
                let rest: String = rest
                    .split("\r\n")
                    .filter(|l| !l.to_ascii_lowercase().starts_with("connection:"))
                    .collect::<Vec<_>>()
                    .join("\r\n");
                let req = format!("{first}\r\nCookie: {cookie}\r\nConnection: close\r\n{rest}");
                let Ok(mut server) = tokio::net::TcpStream::connect(&target).await else {
                    return;
                };
                if server.write_all(req.as_bytes()).await.is_err() {
                    return;
                }
                let _ = tokio::io::copy(&mut server, &mut client).await;
            });
        }
    });
    format!("http://{addr}")
}

pub(crate) fn chromium() -> Option<PathBuf> {
    ["/usr/bin/chromium", "/usr/bin/chromium-browser"]
        .iter()
        .map(PathBuf::from)
        .find(|p| p.exists())
}

fn artifacts() -> PathBuf {
    let d = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("dashboard");
    std::fs::create_dir_all(&d).unwrap();
    d
}

pub(crate) fn run_chromium(bin: &PathBuf, profile: &std::path::Path, args: &[&str]) -> String {
    let out = Command::new(bin)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--hide-scrollbars",
        ])
        .arg(format!("--user-data-dir={}", profile.display()))
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "chromium {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn headless_chromium_renders_every_page_with_hostile_names_escaped() {
    let Some(bin) = chromium() else {
        // scripts/setup installs it; say so loudly rather than pass quietly.
        panic!("chromium not found: run scripts/setup (apt-get install chromium)");
    };
    let (s, viewer) = fleet().await;
    let cookie = sign_in(&s.url, &viewer).await;
    let target = s.url.trim_start_matches("http://").to_string();
    let proxy = cookie_proxy(target, cookie).await;
    let dir = artifacts();
    let profile = tempfile::tempdir().unwrap();
    let login_url = format!("{}/ui/login", s.url);
    for (name, url) in [
        ("login", login_url),
        ("hosts", format!("{proxy}/ui/hosts")),
        ("hosts-stale", format!("{proxy}/ui/hosts?stale=1")),
        ("kernels", format!("{proxy}/ui/kernels")),
        ("compliance", format!("{proxy}/ui/compliance")),
        ("audit", format!("{proxy}/ui/audit")),
    ] {
        let (bin2, p) = (bin.clone(), profile.path().to_path_buf());
        let u = url.clone();
        let dom = tokio::task::spawn_blocking(move || run_chromium(&bin2, &p, &["--dump-dom", &u]))
            .await
            .unwrap();
        assert!(dom.contains("noreboot"), "{name}: {dom}");
        if name == "login" {
            assert!(dom.contains("name=\"token\""), "{dom}");
        } else {
            // Signed in: the page, not the login form.
            assert!(!dom.contains("name=\"token\""), "{name}: {dom}");
        }
        if name == "hosts" || name == "hosts-stale" {
            // The browser parsed the name as text: no script element at all,
            // and the text shown is the literal name.
            assert!(!dom.contains("<script"), "{name}: {dom}");
            assert!(
                dom.contains("&lt;script&gt;alert(1)&lt;/script&gt;"),
                "{name}: {dom}"
            );
        }
        let shot = dir.join(format!("{name}.png"));
        let _ = std::fs::remove_file(&shot);
        let (bin2, p) = (bin.clone(), profile.path().to_path_buf());
        let arg = format!("--screenshot={}", shot.display());
        tokio::task::spawn_blocking(move || {
            run_chromium(&bin2, &p, &[&arg, "--window-size=1280,900", &url])
        })
        .await
        .unwrap();
        let png = std::fs::read(&shot).unwrap();
        assert!(
            png.starts_with(b"\x89PNG") && png.len() > 5000,
            "{name}: {} bytes",
            png.len()
        );
    }
}
