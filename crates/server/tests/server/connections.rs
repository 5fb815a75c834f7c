//! Slow clients (issue 16, point 9): connections that send nothing, half a
//! request head, an HTTP/2 preface and then nothing, or nothing after a
//! request, are closed after the header or idle timeout; at the connection
//! cap further clients wait and are served when a connection closes; the
//! TLS listener of the real binary does the same, handshake included.
//! Every test is bounded: a few dozen connections, timeouts of 1 s, and at
//! most [`BOUND`] for any connection to be closed.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use reqwest::StatusCode;
use server::api::connections::ConnectionLimits;
use server::api::Settings;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::task::JoinSet;
use tokio::time::{sleep, timeout, Instant};

use crate::cli::serve_with;
use crate::common::*;

/// The timeouts the tests configure.
const SHORT: Duration = Duration::from_secs(1);
/// Longer than any test runs.
const LONG: Duration = Duration::from_secs(30);
/// The longest any timed-out connection may stay open: the timeout, the
/// graceful close and a busy machine's scheduling.
const BOUND: Duration = Duration::from_secs(5);
/// Not closed before its timeout (timers may fire a little early relative
/// to the test's clock, never 100 ms).
const EARLIEST: Duration = Duration::from_millis(900);

fn settings(header_timeout: Duration, idle_timeout: Duration, max_connections: u32) -> Settings {
    Settings {
        register_per_minute: 1000,
        connections: ConnectionLimits {
            header_timeout,
            idle_timeout,
            max_connections,
        },
        ..Settings::default()
    }
}

fn addr(url: &str) -> SocketAddr {
    url.split_once("://").unwrap().1.parse().unwrap()
}

/// How long after `since` the server closed `conn` (EOF or reset; what it
/// sent before is ignored), or `None` if it was still open `within` after
/// `since`.
async fn closed<S: tokio::io::AsyncRead + Unpin>(
    mut conn: S,
    since: Instant,
    within: Duration,
) -> Option<Duration> {
    let mut buf = [0u8; 4096];
    let read_to_end = async {
        loop {
            match conn.read(&mut buf).await {
                Ok(0) | Err(_) => return since.elapsed(),
                Ok(_) => {}
            }
        }
    };
    timeout(within.saturating_sub(since.elapsed()), read_to_end)
        .await
        .ok()
}

/// Waits for every connection in `set` to close; panics naming the ones
/// still open at [`BOUND`] or closed before [`EARLIEST`].
async fn all_closed_in_time(mut set: JoinSet<(String, Option<Duration>)>) {
    let mut wrong = Vec::new();
    let mut n = 0;
    while let Some(r) = set.join_next().await {
        let (what, after) = r.unwrap();
        n += 1;
        match after {
            Some(t) if t >= EARLIEST => {}
            Some(t) => wrong.push(format!("{what}: closed already after {t:?}")),
            None => wrong.push(format!("{what}: still open after {BOUND:?}")),
        }
    }
    assert!(
        wrong.is_empty(),
        "of {n} connections:\n{}",
        wrong.join("\n")
    );
}

/// An HTTP/2 frame.
fn h2_frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
    let mut f = (payload.len() as u32).to_be_bytes()[1..].to_vec();
    f.extend([kind, flags]);
    f.extend(stream.to_be_bytes());
    f.extend(payload);
    f
}

/// The client preface and an empty SETTINGS frame.
fn h2_preface() -> Vec<u8> {
    let mut p = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec();
    p.extend(h2_frame(4, 0, 0, &[]));
    p
}

/// `GET /healthz` on stream 1: HEADERS with END_STREAM and END_HEADERS,
/// the block in HPACK by hand (indexed :method GET and :scheme http,
/// literal :path and :authority).
fn h2_get_healthz() -> Vec<u8> {
    let mut block = vec![0x82, 0x86, 0x04, 8];
    block.extend(b"/healthz");
    block.extend([0x01, 9]);
    block.extend(b"localhost");
    h2_frame(1, 0x1 | 0x4, 1, &block)
}

/// Reads frames until stream 1 ends (a frame on it with END_STREAM).
async fn h2_read_response(conn: &mut (impl tokio::io::AsyncRead + Unpin)) {
    loop {
        let mut head = [0u8; 9];
        conn.read_exact(&mut head).await.unwrap();
        let len = u32::from_be_bytes([0, head[0], head[1], head[2]]) as usize;
        let mut payload = vec![0u8; len];
        conn.read_exact(&mut payload).await.unwrap();
        let stream = u32::from_be_bytes([head[5], head[6], head[7], head[8]]) & 0x7fff_ffff;
        assert_ne!(head[3], 7, "GOAWAY before the answer: {payload:?}");
        if stream == 1 && head[4] & 0x1 != 0 {
            return;
        }
    }
}

/// Reads one HTTP/1.1 answer to `GET /healthz` (its body is `ok\n`).
async fn h1_read_healthz(conn: &mut TcpStream) -> String {
    let mut answer = Vec::new();
    let mut buf = [0u8; 1024];
    while !answer.ends_with(b"\r\n\r\nok\n") {
        let n = conn.read(&mut buf).await.unwrap();
        assert!(
            n > 0,
            "closed mid-answer: {:?}",
            String::from_utf8_lossy(&answer)
        );
        answer.extend(&buf[..n]);
    }
    String::from_utf8(answer).unwrap()
}

const GET_HEALTHZ: &[u8] = b"GET /healthz HTTP/1.1\r\nHost: localhost\r\n\r\n";

#[tokio::test]
async fn slowloris_connections_are_closed_after_the_header_timeout() {
    let s = TestServer::start_with(settings(SHORT, LONG, 4096)).await;
    let addr = addr(&s.url);
    let mut set = JoinSet::new();
    for i in 0..48 {
        let since = Instant::now();
        let mut conn = TcpStream::connect(addr).await.unwrap();
        let what = match i % 4 {
            0 => "nothing",
            1 => {
                conn.write_all(b"GET /healthz HTTP/1.1\r\nHost: localhost\r\nX-Slow: ")
                    .await
                    .unwrap();
                "half an HTTP/1.1 head"
            }
            2 => {
                conn.write_all(b"PRI * HTTP/2").await.unwrap();
                "half the HTTP/2 preface"
            }
            _ => {
                conn.write_all(&h2_preface()).await.unwrap();
                "the HTTP/2 preface and no request"
            }
        };
        set.spawn(async move {
            (
                format!("#{i} sending {what}"),
                closed(conn, since, BOUND).await,
            )
        });
    }
    // Served meanwhile.
    let r = s
        .http
        .get(format!("{}/healthz", s.url))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    all_closed_in_time(set).await;
    // And after.
    let r = s
        .http
        .get(format!("{}/healthz", s.url))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
}

#[tokio::test]
async fn an_idle_kept_alive_connection_is_closed_after_the_idle_timeout() {
    // The header timeout is long: it is the idle timeout that closes them.
    let s = TestServer::start_with(settings(LONG, SHORT, 4096)).await;
    let addr = addr(&s.url);

    // HTTP/1.1: kept alive for a second request within the idle timeout,
    // closed once idle after it.
    let mut h1 = TcpStream::connect(addr).await.unwrap();
    h1.write_all(GET_HEALTHZ).await.unwrap();
    let answer = h1_read_healthz(&mut h1).await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(!answer.to_ascii_lowercase().contains("connection: close"));
    sleep(SHORT / 2).await;
    h1.write_all(GET_HEALTHZ).await.unwrap();
    h1_read_healthz(&mut h1).await;
    let h1_idle = Instant::now();

    // HTTP/2 (prior knowledge): a request, then pings, which keep nothing
    // open.
    let mut h2 = TcpStream::connect(addr).await.unwrap();
    h2.write_all(&h2_preface()).await.unwrap();
    h2.write_all(&h2_get_healthz()).await.unwrap();
    h2_read_response(&mut h2).await;
    let h2_idle = Instant::now();
    let (h2_read, mut h2_write) = h2.into_split();
    let pinger = tokio::spawn(async move {
        for i in 0u64.. {
            let ping = h2_frame(6, 0, 0, &i.to_be_bytes());
            if h2_write.write_all(&ping).await.is_err() {
                return;
            }
            sleep(Duration::from_millis(200)).await;
        }
    });

    let mut set = JoinSet::new();
    set.spawn(async move {
        (
            "HTTP/1.1 after two requests".to_string(),
            closed(h1, h1_idle, BOUND).await,
        )
    });
    set.spawn(async move {
        (
            "HTTP/2 after a request, pinging".to_string(),
            closed(h2_read, h2_idle, BOUND).await,
        )
    });
    all_closed_in_time(set).await;
    pinger.abort();
}

#[tokio::test]
async fn beyond_the_connection_cap_clients_wait_until_a_connection_closes() {
    let s = TestServer::start_with(settings(LONG, LONG, 5)).await;
    let addr = addr(&s.url);
    let mut held = Vec::new();
    for _ in 0..5 {
        held.push(TcpStream::connect(addr).await.unwrap());
    }
    // Let the server accept them.
    sleep(Duration::from_millis(200)).await;

    // The kernel completes the sixth connection, the server does not take
    // it: its request waits.
    let mut sixth = TcpStream::connect(addr).await.unwrap();
    sixth.write_all(GET_HEALTHZ).await.unwrap();
    let mut buf = [0u8; 1024];
    let early = timeout(SHORT, sixth.read(&mut buf)).await;
    assert!(
        early.is_err(),
        "the sixth connection was served beyond the cap of 5: {early:?}"
    );

    // One closes: the sixth is served.
    drop(held.pop());
    let answer = timeout(BOUND, h1_read_healthz(&mut sixth))
        .await
        .expect("the sixth connection is served once one of the five closed");
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");

    // All closed: service as usual.
    drop(held);
    drop(sixth);
    for _ in 0..10 {
        let r = s
            .http
            .get(format!("{}/healthz", s.url))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::OK);
    }
}

#[tokio::test]
async fn the_tls_listener_times_out_handshakes_and_heads_and_stops_on_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    let storage = Storage::new(&dir.path().join("data"));
    let rcgen::CertifiedKey { cert, key_pair } =
        rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).unwrap();
    let cert_path = dir.path().join("cert.pem");
    let key_path = dir.path().join("key.pem");
    std::fs::write(&cert_path, cert.pem()).unwrap();
    std::fs::write(&key_path, key_pair.serialize_pem()).unwrap();
    let (mut server, url) = serve_with(
        &storage,
        &[
            "--tls-cert",
            cert_path.to_str().unwrap(),
            "--tls-key",
            key_path.to_str().unwrap(),
            "--header-timeout",
            "1",
            "--idle-timeout",
            "1",
        ],
    );
    let addr = addr(&url);

    let mut roots = rustls::RootCertStore::empty();
    roots.add(cert.der().clone()).unwrap();
    let client = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    let connector = tokio_rustls::TlsConnector::from(Arc::new(client));

    let mut set = JoinSet::new();
    for i in 0..24 {
        let since = Instant::now();
        let mut conn = TcpStream::connect(addr).await.unwrap();
        match i % 3 {
            0 => set.spawn(async move {
                (
                    format!("#{i} sending no ClientHello"),
                    closed(conn, since, BOUND).await,
                )
            }),
            1 => {
                // A TLS record header announcing a ClientHello that never
                // comes.
                conn.write_all(&[0x16, 0x03, 0x01, 0x00, 0xc8])
                    .await
                    .unwrap();
                set.spawn(async move {
                    (
                        format!("#{i} sending half a ClientHello"),
                        closed(conn, since, BOUND).await,
                    )
                })
            }
            _ => {
                let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
                let mut tls = connector.connect(name, conn).await.unwrap();
                tls.write_all(b"GET /healthz HTTP/1.1\r\nHost: localhost\r\nX-Slow: ")
                    .await
                    .unwrap();
                tls.flush().await.unwrap();
                set.spawn(async move {
                    (
                        format!("#{i} sending half a head over TLS"),
                        closed(tls, since, BOUND).await,
                    )
                })
            }
        };
    }
    // A new connection for each request: a kept-alive one would race the
    // server's idle timeout of 1 s.
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(0)
        .use_rustls_tls()
        .add_root_certificate(reqwest::Certificate::from_pem(cert.pem().as_bytes()).unwrap())
        .resolve("localhost", addr)
        .build()
        .unwrap();
    let healthz = format!("https://localhost:{}/healthz", addr.port());
    // Served meanwhile.
    let r = http.get(&healthz).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    all_closed_in_time(set).await;
    let r = http.get(&healthz).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);

    // SIGTERM with slow clients connected: the server stops promptly and
    // cleanly.
    let _slow = TcpStream::connect(addr).await.unwrap();
    let mut half = TcpStream::connect(addr).await.unwrap();
    half.write_all(&[0x16, 0x03, 0x01]).await.unwrap();
    sleep(Duration::from_millis(100)).await;
    let pid = rustix::process::Pid::from_raw(server.0.id() as i32).unwrap();
    rustix::process::kill_process(pid, rustix::process::Signal::TERM).unwrap();
    let stopped = Instant::now();
    let status = loop {
        if let Some(status) = server.0.try_wait().unwrap() {
            break status;
        }
        assert!(
            stopped.elapsed() < BOUND,
            "still running {BOUND:?} after SIGTERM"
        );
        sleep(Duration::from_millis(50)).await;
    };
    assert!(status.success(), "{status}");
}
