//! The release command's client of noreboot-server's admin API: the
//! levels already published for a kernel build, publishing a bundle to
//! feeds, and the builds hosts report. A blocking client (the release
//! jobs are threads); an admin token authenticates every request, and an
//! own CA may anchor the server's certificate.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, Context};
use serde::Deserialize;

/// Where and how to publish.
#[derive(Debug, Clone)]
pub struct Target {
    /// The server's base URL, e.g. `https://patches.example.com`.
    pub url: String,
    /// An admin token with write permission.
    pub token: String,
    /// Feeds the levels are released to (none: publish only, promote later).
    pub feeds: Vec<String>,
    /// PEM CA certificates the server's certificate must chain to.
    pub ca: Option<PathBuf>,
}

/// One published level, as `GET /admin/levels` lists it.
#[derive(Debug, Clone, Deserialize)]
pub struct Level {
    /// Its level number.
    pub level: u32,
    /// The bundle's sha256.
    pub sha256: String,
}

/// A build the fleet reports (`GET /admin/kernels/reported`).
#[derive(Debug, Clone, Deserialize)]
pub struct Reported {
    /// The kernel release.
    pub release: String,
    /// Its Debian version.
    pub version: String,
    /// How many hosts run it.
    pub hosts: u64,
    /// Its newest published level.
    pub newest_level: Option<u32>,
}

/// Largest JSON answer read.
const MAX_JSON: u64 = 16 << 20;

/// A client of one server.
pub struct Client {
    base: String,
    token: String,
    http: ureq::Agent,
}

impl Client {
    /// A client for `url` with `token`, trusting `ca` when given.
    pub fn new(url: &str, token: &str, ca: Option<&Path>) -> anyhow::Result<Client> {
        if !(url.starts_with("http://") || url.starts_with("https://")) {
            bail!("server URL {url:?}: give http://HOST[:PORT] or https://HOST[:PORT]");
        }
        let mut b = ureq::Agent::config_builder()
            .timeout_global(Some(Duration::from_secs(120)))
            .http_status_as_error(false)
            .user_agent(format!("noreboot-build/{}", env!("CARGO_PKG_VERSION")));
        if let Some(ca) = ca {
            let pem = std::fs::read(ca).with_context(|| format!("reading {}", ca.display()))?;
            let certs: Vec<_> = ureq::tls::parse_pem(&pem)
                .filter_map(|i| match i {
                    Ok(ureq::tls::PemItem::Certificate(c)) => Some(c),
                    _ => None,
                })
                .collect();
            if certs.is_empty() {
                bail!(
                    "{}: no PEM certificate (-----BEGIN CERTIFICATE-----) in it",
                    ca.display()
                );
            }
            b = b.tls_config(
                ureq::tls::TlsConfig::builder()
                    .root_certs(ureq::tls::RootCerts::new_with_certs(&certs))
                    .build(),
            );
        }
        Ok(Client {
            base: url.trim_end_matches('/').to_string(),
            token: token.to_string(),
            http: b.build().into(),
        })
    }

    fn url(&self, path: &str) -> String {
        format!("{}{}{path}", self.base, protocol::API_PREFIX)
    }

    /// One request; (status, body). Transport errors name the URL.
    fn call(&self, path: &str, body: Option<&[u8]>) -> anyhow::Result<(u16, Vec<u8>)> {
        let url = self.url(path);
        let auth = format!("Bearer {}", self.token);
        let resp = match body {
            None => self.http.get(&url).header("Authorization", &auth).call(),
            Some(b) => self
                .http
                .post(&url)
                .header("Authorization", &auth)
                .content_type("application/octet-stream")
                .send(b),
        };
        let mut resp = resp.with_context(|| format!("{url}: no answer"))?;
        let status = resp.status().as_u16();
        let body = resp
            .body_mut()
            .with_config()
            .limit(MAX_JSON)
            .read_to_vec()
            .with_context(|| format!("{url}: reading the answer"))?;
        Ok((status, body))
    }

    /// The answer's JSON when `status` is `ok`, else the server's error.
    fn expect<T: serde::de::DeserializeOwned>(
        &self,
        path: &str,
        (status, body): (u16, Vec<u8>),
        ok: u16,
    ) -> anyhow::Result<T> {
        if status != ok {
            #[derive(Deserialize)]
            struct ErrorBody {
                error: String,
            }
            let message = serde_json::from_slice::<ErrorBody>(&body)
                .map(|e| e.error)
                .unwrap_or_else(|_| String::from_utf8_lossy(&body[..body.len().min(300)]).into());
            bail!("{}: answer {status}: {message}", self.url(path));
        }
        serde_json::from_slice(&body)
            .with_context(|| format!("{}: the answer is not the documented JSON", self.url(path)))
    }

    /// The levels published for the kernel build `build_id`.
    pub fn levels(&self, build_id: &str) -> anyhow::Result<Vec<Level>> {
        #[derive(Deserialize)]
        struct Answer {
            levels: Vec<Level>,
        }
        let path = format!("/admin/levels?kernel={build_id}");
        let a: Answer = self.expect(&path, self.call(&path, None)?, 200)?;
        Ok(a.levels)
    }

    /// Publishes `bundle` to `feeds`; the level it got.
    pub fn publish(&self, bundle: &[u8], feeds: &[String]) -> anyhow::Result<u32> {
        #[derive(Deserialize)]
        struct Answer {
            level: u32,
        }
        let query: Vec<String> = feeds.iter().map(|f| format!("feed={f}")).collect();
        let path = format!("/admin/publish?{}", query.join("&"));
        let a: Answer = self.expect(&path, self.call(&path, Some(bundle))?, 201)?;
        Ok(a.level)
    }

    /// The builds the server's hosts run.
    pub fn reported(&self) -> anyhow::Result<Vec<Reported>> {
        let path = "/admin/kernels/reported";
        self.expect(path, self.call(path, None)?, 200)
    }
}
