//! The agent's side of the server protocol (`protocol` crate): register
//! with a registration key, check in with the running kernel and level,
//! download the target level's bundle, report what happened. Requests are
//! retried with exponential backoff when the server cannot be reached; a
//! failure never touches the active level. The host's token is kept in
//! `<state_dir>/server.json`, readable by root only.
//!
//! HTTPS trusts the public web PKI roots, or only the CA certificates in
//! `server.ca` (an on-premises server with its own CA); an `https://` URL
//! may name the server by IP address if its certificate lists that
//! address. A TLS failure (an untrusted or mismatched certificate, a plain
//! HTTP server) is not retried: waiting does not fix it, and the message
//! says what does.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use protocol::{
    CheckinRequest, CheckinResponse, ErrorBody, RegisterRequest, RegisterResponse, ReportRequest,
    API_PREFIX,
};
use serde::{Deserialize, Serialize};

use crate::config::Server as ServerConfig;
use crate::state::write_atomic;

/// Largest JSON answer accepted.
const MAX_JSON: u64 = 1 << 20;

/// Why talking to the server failed.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    /// Not reachable (after the retries).
    #[error("server {url} unreachable after {attempts} attempt(s) over {waited}: {last}")]
    Unreachable {
        /// What was asked.
        url: String,
        /// How many tries.
        attempts: u32,
        /// How long in all.
        waited: String,
        /// The last error.
        last: String,
    },
    /// The server answered with an error.
    #[error("server {url} answered {status}: {message}")]
    Status {
        /// What was asked.
        url: String,
        /// HTTP status.
        status: u16,
        /// The server's message.
        message: String,
    },
    /// An answer that is not what the protocol says.
    #[error("server {url}: {message}")]
    Protocol {
        /// What was asked.
        url: String,
        /// What is wrong.
        message: String,
    },
    /// The TLS connection failed: retrying would not help.
    #[error("server {url}: TLS failed: {message}")]
    Tls {
        /// What was asked.
        url: String,
        /// What went wrong, and what to do about it.
        message: String,
    },
    /// Local trouble (registration file, CA file).
    #[error("{0}")]
    Local(String),
}

/// Why one attempt failed.
enum Failure {
    /// Worth another try (connection refused, reset, timed out).
    Transient(String),
    /// TLS: the same again would fail the same way.
    Tls(String),
}

/// What registration left on disk.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Registration {
    /// The server's base URL.
    pub url: String,
    /// Host id on the server.
    pub host_id: String,
    /// The host's secret.
    pub token: String,
    /// The feed the host is on.
    pub feed: String,
}

impl Registration {
    /// `<state_dir>/server.json`.
    pub fn path(state_dir: &Path) -> PathBuf {
        state_dir.join("server.json")
    }

    /// The stored registration, if the host registered.
    pub fn load(state_dir: &Path) -> Result<Option<Registration>, ServerError> {
        let p = Self::path(state_dir);
        match std::fs::read(&p) {
            Ok(b) => serde_json::from_slice(&b)
                .map(Some)
                .map_err(|e| ServerError::Local(format!("{}: {e}", p.display()))),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(ServerError::Local(format!("{}: {e}", p.display()))),
        }
    }

    /// Stores it (mode 0600: the token is a secret).
    pub fn save(&self, state_dir: &Path) -> Result<(), ServerError> {
        let data =
            serde_json::to_vec_pretty(self).map_err(|e| ServerError::Local(e.to_string()))?;
        write_atomic(&Self::path(state_dir), &data, 0o600)
            .map_err(|e| ServerError::Local(e.to_string()))
    }
}

/// The certificates of `server.ca`, each checked as a trust anchor: a file
/// with none, or with one that cannot anchor a chain, is refused here
/// rather than failing every handshake later as "unknown issuer".
fn load_ca(path: &Path) -> Result<Vec<ureq::tls::Certificate<'static>>, ServerError> {
    let bad = |what: String| ServerError::Local(format!("server.ca {}: {what}", path.display()));
    let pem = std::fs::read(path).map_err(|e| bad(e.to_string()))?;
    let mut certs = Vec::new();
    for item in ureq::tls::parse_pem(&pem) {
        match item {
            Ok(ureq::tls::PemItem::Certificate(c)) => certs.push(c),
            // A bundle may carry other blocks (a key beside its
            // certificate); only certificates are trusted.
            Ok(_) => {}
            Err(e) => return Err(bad(format!("not a valid PEM file: {e}"))),
        }
    }
    if certs.is_empty() {
        return Err(bad(
            "no PEM certificate (-----BEGIN CERTIFICATE-----) in it".into(),
        ));
    }
    let mut roots = rustls::RootCertStore::empty();
    for (i, c) in certs.iter().enumerate() {
        roots
            .add(rustls::pki_types::CertificateDer::from(c.der()))
            .map_err(|e| {
                bad(format!(
                    "certificate {} cannot be trusted as a CA: {e}",
                    i + 1
                ))
            })?;
    }
    Ok(certs)
}

/// What a TLS failure means for the operator.
fn tls_message(e: &rustls::Error, ca: Option<&Path>) -> String {
    use rustls::CertificateError as C;
    let hint = match e {
        rustls::Error::InvalidCertificate(c) => match c {
            C::UnknownIssuer | C::BadSignature => Some(match ca {
                Some(ca) => format!(
                    "the server's certificate is not signed by a CA in server.ca ({})",
                    ca.display()
                ),
                None => "the server's certificate is not signed by a public CA; if the server \
                         has its own CA, set `ca` in the [server] section of the agent's \
                         configuration to that CA's PEM certificate"
                    .to_string(),
            }),
            C::NotValidForName | C::NotValidForNameContext { .. } => Some(
                "the host in the server URL (name or IP address) is not among the \
                 certificate's subject alternative names"
                    .to_string(),
            ),
            C::Expired
            | C::ExpiredContext { .. }
            | C::NotValidYet
            | C::NotValidYetContext { .. } => Some(
                "the certificate is outside its validity period (or this host's clock is wrong)"
                    .to_string(),
            ),
            _ => None,
        },
        rustls::Error::InvalidMessage(_) => {
            Some("is the server serving HTTPS on this port?".to_string())
        }
        _ => None,
    };
    match hint {
        Some(h) => format!("{e}: {h}"),
        None => e.to_string(),
    }
}

/// A client for one server.
pub struct Client {
    base: String,
    token: Option<String>,
    http: ureq::Agent,
    retry: ServerConfig,
}

impl Client {
    /// A client for `base` (e.g. `https://patches.example.com`).
    pub fn new(
        base: &str,
        token: Option<String>,
        cfg: &ServerConfig,
    ) -> Result<Client, ServerError> {
        let mut b = ureq::Agent::config_builder()
            .timeout_global(Some(cfg.timeout))
            .http_status_as_error(false)
            .user_agent(format!("noreboot/{}", env!("CARGO_PKG_VERSION")));
        if let Some(ca) = &cfg.ca {
            let certs = load_ca(ca)?;
            b = b.tls_config(
                ureq::tls::TlsConfig::builder()
                    .root_certs(ureq::tls::RootCerts::new_with_certs(&certs))
                    .build(),
            );
        }
        Ok(Client {
            base: base.trim_end_matches('/').to_string(),
            token,
            http: b.build().into(),
            retry: cfg.clone(),
        })
    }

    fn url(&self, path: &str) -> String {
        if path.starts_with("http://") || path.starts_with("https://") {
            path.to_string()
        } else if path.starts_with(API_PREFIX) {
            format!("{}{path}", self.base)
        } else {
            format!("{}{API_PREFIX}{path}", self.base)
        }
    }

    /// One request with retries on transport errors and 5xx/429 answers;
    /// returns (status, body) of the first definitive answer.
    fn request(
        &self,
        method: &str,
        path: &str,
        body: Option<&[u8]>,
        limit: u64,
    ) -> Result<(u16, Vec<u8>), ServerError> {
        let url = self.url(path);
        let start = Instant::now();
        let mut delay = self.retry.backoff;
        let mut attempts = 0;
        loop {
            attempts += 1;
            let result = match self.once(method, &url, body, limit) {
                Ok(answer) => Ok(answer),
                Err(Failure::Transient(e)) => Err(e),
                Err(Failure::Tls(message)) => return Err(ServerError::Tls { url, message }),
            };
            let retryable = match &result {
                Ok((s, _)) => *s == 429 || *s >= 500,
                Err(_) => true,
            };
            if !retryable || attempts >= self.retry.attempts {
                return match result {
                    Ok(ok) => Ok(ok),
                    Err(last) => Err(ServerError::Unreachable {
                        url,
                        attempts,
                        waited: humantime::format_duration(Duration::from_secs(
                            start.elapsed().as_secs(),
                        ))
                        .to_string(),
                        last,
                    }),
                };
            }
            eprintln!(
                "noreboot: {url}: {}; retrying in {}",
                match &result {
                    Ok((s, _)) => format!("answer {s}"),
                    Err(e) => e.clone(),
                },
                humantime::format_duration(delay)
            );
            std::thread::sleep(delay);
            delay = (delay * 2).min(self.retry.max_backoff);
        }
    }

    fn once(
        &self,
        method: &str,
        url: &str,
        body: Option<&[u8]>,
        limit: u64,
    ) -> Result<(u16, Vec<u8>), Failure> {
        let auth = self.token.as_ref().map(|t| format!("Bearer {t}"));
        let resp = match method {
            "GET" => {
                let mut r = self.http.get(url);
                if let Some(a) = &auth {
                    r = r.header("Authorization", a);
                }
                r.call()
            }
            _ => {
                let mut r = self.http.post(url).content_type("application/json");
                if let Some(a) = &auth {
                    r = r.header("Authorization", a);
                }
                r.send(body.unwrap_or_default())
            }
        };
        let mut resp = resp.map_err(|e| self.failure(&e))?;
        let status = resp.status().as_u16();
        let body = resp
            .body_mut()
            .with_config()
            .limit(limit)
            .read_to_vec()
            .map_err(|e| Failure::Transient(format!("reading the answer: {e}")))?;
        Ok((status, body))
    }

    /// Sorts a request's error: TLS failures apart, with what to do.
    fn failure(&self, e: &ureq::Error) -> Failure {
        let tls = match e {
            ureq::Error::Rustls(r) => Some(r),
            // The handshake's errors reach ureq wrapped in an io::Error.
            ureq::Error::Io(io) => io.get_ref().and_then(|i| i.downcast_ref::<rustls::Error>()),
            ureq::Error::Tls(m) => return Failure::Tls((*m).to_string()),
            _ => None,
        };
        match tls {
            Some(r) => Failure::Tls(tls_message(r, self.retry.ca.as_deref())),
            None => Failure::Transient(e.to_string()),
        }
    }

    fn json<Req: Serialize, Resp: serde::de::DeserializeOwned>(
        &self,
        path: &str,
        req: &Req,
        ok: u16,
    ) -> Result<Resp, ServerError> {
        let body = serde_json::to_vec(req).map_err(|e| ServerError::Local(e.to_string()))?;
        let (status, answer) = self.request("POST", path, Some(&body), MAX_JSON)?;
        self.check(path, status, &answer, ok)?;
        serde_json::from_slice(&answer).map_err(|e| ServerError::Protocol {
            url: self.url(path),
            message: format!("answer is not the documented JSON: {e}"),
        })
    }

    fn check(&self, path: &str, status: u16, answer: &[u8], ok: u16) -> Result<(), ServerError> {
        if status == ok || (ok == 200 && status == 204) {
            return Ok(());
        }
        let message = serde_json::from_slice::<ErrorBody>(answer)
            .map(|e| e.error)
            .unwrap_or_else(|_| {
                String::from_utf8_lossy(&answer[..answer.len().min(200)]).into_owned()
            });
        Err(ServerError::Status {
            url: self.url(path),
            status,
            message,
        })
    }

    /// `POST /register`.
    pub fn register(&self, req: &RegisterRequest) -> Result<RegisterResponse, ServerError> {
        self.json("/register", req, 201)
    }

    /// `POST /checkin`.
    pub fn checkin(&self, req: &CheckinRequest) -> Result<CheckinResponse, ServerError> {
        self.json("/checkin", req, 200)
    }

    /// `POST /report`.
    pub fn report(&self, req: &ReportRequest) -> Result<(), ServerError> {
        let body = serde_json::to_vec(req).map_err(|e| ServerError::Local(e.to_string()))?;
        let (status, answer) = self.request("POST", "/report", Some(&body), MAX_JSON)?;
        self.check("/report", status, &answer, 204)
    }

    /// Downloads a bundle and checks its size and sha256 against what the
    /// check-in promised.
    pub fn bundle(&self, url: &str, size: u64, sha256: &str) -> Result<Vec<u8>, ServerError> {
        use sha2::Digest;
        let (status, bytes) = self.request("GET", url, None, size.saturating_add(1))?;
        self.check(url, status, &bytes, 200)?;
        let got = hex::encode(sha2::Sha256::digest(&bytes));
        if bytes.len() as u64 != size || got != sha256 {
            return Err(ServerError::Protocol {
                url: self.url(url),
                message: format!(
                    "bundle is {} bytes with sha256 {got}, the check-in promised {size} bytes with sha256 {sha256}",
                    bytes.len()
                ),
            });
        }
        Ok(bytes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ca_file(text: &str) -> tempfile::NamedTempFile {
        let f = tempfile::NamedTempFile::new().unwrap();
        std::fs::write(f.path(), text).unwrap();
        f
    }

    #[test]
    fn unusable_ca_files_are_refused_with_the_reason() {
        let not_pem = ca_file("just text\n");
        let e = load_ca(not_pem.path()).unwrap_err().to_string();
        assert!(e.contains("no PEM certificate"), "{e}");
        // A certificate block whose contents are no certificate.
        let garbage = ca_file("-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n");
        let e = load_ca(garbage.path()).unwrap_err().to_string();
        assert!(e.contains("certificate 1 cannot be trusted as a CA"), "{e}");
        assert!(e.contains(&garbage.path().display().to_string()), "{e}");
    }

    #[test]
    fn tls_messages_say_what_to_change() {
        use rustls::CertificateError as C;
        let name = tls_message(&C::NotValidForName.into(), None);
        assert!(name.contains("subject alternative names"), "{name}");
        let expired = tls_message(&C::Expired.into(), None);
        assert!(expired.contains("validity period"), "{expired}");
        let ca = Path::new("/etc/noreboot/ca.pem");
        let issuer = tls_message(&C::UnknownIssuer.into(), Some(ca));
        assert!(
            issuer.contains("not signed by a CA in server.ca (/etc/noreboot/ca.pem)"),
            "{issuer}"
        );
        let other = tls_message(&rustls::Error::HandshakeNotComplete, None);
        assert_eq!(other, rustls::Error::HandshakeNotComplete.to_string());
    }
}
