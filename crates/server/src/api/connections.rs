//! The connections themselves, before and between requests: the accept
//! loop, the cap on connections open at once, the TLS handshake, and the
//! timeouts that close a connection on which no request is in progress.
//! Requests in progress are bounded by the router's request timeout, not
//! here. HTTP/1.1 and HTTP/2 are served by hyper, the router being the
//! service.
//!
//! Why our own loop: `axum::serve` offers no timeouts, and hyper's own
//! header read timeout (HTTP/1 only, given a timer) covers neither a
//! client that sends nothing at all (hyper-util's protocol detection reads
//! the first bytes without a limit) nor HTTP/2, and restarts at the end of
//! each response, so a kept-alive connection could not wait longer for its
//! next request than a slow head may take. Before this module, a
//! connection that sent nothing or half a request head stayed open for as
//! long as the client liked (over TLS, half a head after the handshake).
//! So each connection is watched here, the same way on either protocol
//! and with or without TLS:
//!
//! - A new connection must have sent the head of its first request within
//!   `header_timeout` of being accepted (TLS handshake included).
//! - After a request, the head of the next one must be complete within
//!   `idle_timeout` of the previous response's end.
//! - A request is in progress from its head being complete to its
//!   handler's answer; requests in progress are bounded by the router's
//!   request timeout, body upload included. A response body then counts as
//!   activity while it moves: each piece of it (at most [`PIECE`]) that
//!   hyper takes restarts the idle timeout, so a client that stops reading
//!   is disconnected once nothing moved for `idle_timeout`. Hyper takes
//!   pieces as the socket drains, up to a few hundred KiB ahead; those last
//!   bytes must be taken within the idle timeout after the body's end.
//! - Anything else a client sends (HTTP/2 pings, settings, partial
//!   headers) does not count: it keeps no connection open.
//!
//! A connection that times out before its first request is dropped; one
//! that served requests is shut down gracefully (HTTP/2: GOAWAY) and
//! dropped if that has not finished within [`CLOSE_GRACE`].
//!
//! At `max_connections` open connections the loop stops accepting until
//! one closes: new clients wait in the kernel's listen queue (and, when it
//! is full, retry their SYNs) instead of being refused, so a burst of
//! agents is served late rather than failing, and a flood of slow clients
//! delays new ones (every slot frees within a timeout) instead of locking
//! them out.

use std::convert::Infallible;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::ConnectInfo;
use axum::http::Request;
use axum::Router;
use http_body::{Frame, SizeHint};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{watch, Semaphore};
use tokio::time::{sleep_until, timeout, timeout_at, Instant};
use tokio_rustls::TlsAcceptor;
use tower_service::Service as _;

/// How long a connection that timed out may take to close gracefully.
pub const CLOSE_GRACE: Duration = Duration::from_secs(1);

/// How long requests in progress may take to finish once the server is
/// told to stop.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(30);

/// Open files kept for other uses than connections: the database, bundle
/// files being read or written, logs.
const OTHER_FILES: u64 = 256;

/// Limits on the connections themselves (see the module documentation).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConnectionLimits {
    /// A new connection must have sent its first request head (after the
    /// TLS handshake, if any) within this long of being accepted.
    pub header_timeout: Duration,
    /// Between requests, the next request head must be complete within
    /// this long of the previous response's end.
    pub idle_timeout: Duration,
    /// Connections open at once; further clients wait to be accepted.
    pub max_connections: u32,
}

impl Default for ConnectionLimits {
    fn default() -> Self {
        Self {
            header_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(60),
            max_connections: 4096,
        }
    }
}

/// Serves `router` on `listener` (over TLS with `tls`) until `shutdown`
/// completes; then stops accepting, closes the idle connections and gives
/// the requests in progress up to [`SHUTDOWN_GRACE`] to finish.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    tls: Option<TlsAcceptor>,
    limits: ConnectionLimits,
    shutdown: impl Future<Output = ()>,
) -> io::Result<()> {
    let max = limits.max_connections.max(1);
    let slots = Arc::new(Semaphore::new(max as usize));
    // Dropped to tell every connection to stop.
    let (stop, stopped) = watch::channel(());
    let builder = Arc::new(auto::Builder::new(TokioExecutor::new()));
    tokio::pin!(shutdown);
    loop {
        // A slot first, then the connection: at the cap, clients wait in
        // the listen queue rather than holding a socket here.
        let slot = tokio::select! {
            biased;
            () = &mut shutdown => break,
            slot = slots.clone().acquire_owned() => slot.expect("the semaphore is never closed"),
        };
        let (tcp, peer) = tokio::select! {
            biased;
            () = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    accept_failed(e).await;
                    continue;
                }
            },
        };
        let conn = Conn {
            peer,
            accepted: Instant::now(),
            limits,
            router: router.clone(),
            builder: builder.clone(),
            stopped: stopped.clone(),
        };
        let tls = tls.clone();
        tokio::spawn(async move {
            conn.run(tcp, tls).await;
            drop(slot);
        });
    }
    // Refuse new connections at once rather than leave them queued.
    drop(listener);
    drop(stop);
    // Every slot back: every connection closed.
    if timeout(SHUTDOWN_GRACE, slots.acquire_many(max))
        .await
        .is_err()
    {
        tracing::warn!(
            "requests still in progress {}s after the shutdown began: stopping anyway",
            SHUTDOWN_GRACE.as_secs()
        );
    }
    Ok(())
}

/// An accept error: the client's (it is gone: next) or the process's (out
/// of file descriptors or memory: accepting again at once would spin).
async fn accept_failed(e: io::Error) {
    if matches!(
        e.kind(),
        io::ErrorKind::ConnectionAborted
            | io::ErrorKind::ConnectionReset
            | io::ErrorKind::ConnectionRefused
    ) {
        return;
    }
    tracing::error!(
        "cannot accept connections ({e}): retrying in 1s; \
         lower --max-connections or raise the open-file limit"
    );
    tokio::time::sleep(Duration::from_secs(1)).await;
}

/// One accepted connection.
struct Conn {
    peer: SocketAddr,
    accepted: Instant,
    limits: ConnectionLimits,
    router: Router,
    builder: Arc<auto::Builder<TokioExecutor>>,
    stopped: watch::Receiver<()>,
}

impl Conn {
    async fn run(mut self, tcp: TcpStream, tls: Option<TlsAcceptor>) {
        let Some(tls) = tls else {
            return self.serve(TokioIo::new(tcp)).await;
        };
        let deadline = self.accepted + self.limits.header_timeout;
        let handshake = tokio::select! {
            r = timeout_at(deadline, tls.accept(tcp)) => r,
            _ = self.stopped.changed() => return,
        };
        match handshake {
            Ok(Ok(stream)) => self.serve(TokioIo::new(stream)).await,
            Ok(Err(e)) => tracing::debug!(peer = %self.peer, "TLS handshake failed: {e}"),
            Err(_) => tracing::debug!(peer = %self.peer, "TLS handshake timed out"),
        }
    }

    async fn serve<I>(mut self, io: I)
    where
        I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
    {
        let activity = Arc::new(Activity::new(self.accepted));
        let service = {
            let activity = activity.clone();
            let router = self.router.clone();
            let peer = self.peer;
            hyper::service::service_fn(move |mut req: Request<Incoming>| {
                let busy = activity.begin();
                let activity = activity.clone();
                // What `into_make_service_with_connect_info` would add:
                // handlers read the client's address from it.
                req.extensions_mut().insert(ConnectInfo(peer));
                let mut router = router.clone();
                async move {
                    let response = router.call(req).await?;
                    drop(busy);
                    Ok::<_, Infallible>(response.map(|body| Tracked {
                        body,
                        rest: Bytes::new(),
                        activity,
                    }))
                }
            })
        };
        let conn = self.builder.serve_connection(io, service);
        tokio::pin!(conn);
        let grace = tokio::select! {
            done = conn.as_mut() => {
                if let Err(e) = done {
                    tracing::debug!(peer = %self.peer, "connection ended: {e}");
                }
                return;
            }
            fresh = activity.expired(self.limits) => {
                tracing::debug!(peer = %self.peer, fresh, "closing a connection with no request in progress: timed out");
                // Before its first request a client has nothing to be told,
                // and hyper's graceful shutdown would wait for the rest of
                // a half-sent head (measured: the whole grace).
                if fresh {
                    return;
                }
                CLOSE_GRACE
            }
            _ = self.stopped.changed() => SHUTDOWN_GRACE,
        };
        conn.as_mut().graceful_shutdown();
        let _ = timeout(grace, conn).await;
    }
}

/// Whether a connection has a request in progress, and since when it has
/// had none (or a response last moved).
struct Activity(watch::Sender<Idle>);

#[derive(Debug, Clone, Copy)]
struct Idle {
    /// Requests whose handler has not answered yet.
    running: usize,
    /// When a handler last answered or a response last moved (at first:
    /// when the connection was accepted).
    since: Instant,
    /// No request has begun yet.
    fresh: bool,
}

impl Idle {
    /// When the connection times out, if no request is in progress.
    fn deadline(&self, limits: ConnectionLimits) -> Option<Instant> {
        let limit = if self.fresh {
            limits.header_timeout
        } else {
            limits.idle_timeout
        };
        (self.running == 0).then(|| self.since + limit)
    }
}

impl Activity {
    fn new(accepted: Instant) -> Self {
        Self(watch::Sender::new(Idle {
            running: 0,
            since: accepted,
            fresh: true,
        }))
    }

    /// A request's head is complete; it is in progress until the [`Busy`]
    /// is dropped.
    fn begin(self: &Arc<Self>) -> Busy {
        self.0.send_modify(|s| {
            s.running += 1;
            s.fresh = false;
        });
        Busy(self.clone())
    }

    /// A response moved: the idle timeout starts again.
    fn touch(&self) {
        // Without waking `expired`: the deadline only moved later, which
        // it checks when the earlier one comes.
        self.0.send_if_modified(|s| {
            s.since = Instant::now();
            false
        });
    }

    /// Completes when the connection has had no request in progress for
    /// longer than its limit, saying whether it never had one.
    async fn expired(&self, limits: ConnectionLimits) -> bool {
        let mut changes = self.0.subscribe();
        loop {
            let deadline = changes.borrow_and_update().deadline(limits);
            match deadline {
                Some(deadline) => tokio::select! {
                    () = sleep_until(deadline) => {
                        let idle = *self.0.borrow();
                        if idle.deadline(limits).is_some_and(|d| d <= Instant::now()) {
                            return idle.fresh;
                        }
                    }
                    _ = changes.changed() => {}
                },
                // `self` holds the sender: this cannot fail.
                None => _ = changes.changed().await,
            }
        }
    }
}

/// A request whose handler has not answered yet.
struct Busy(Arc<Activity>);

impl Drop for Busy {
    fn drop(&mut self) {
        self.0 .0.send_modify(|s| {
            s.running -= 1;
            s.since = Instant::now();
        });
    }
}

/// The largest piece of a response body handed to hyper at once: hyper
/// takes the next one as the socket drains, so each is a sign of life of
/// the client.
pub const PIECE: usize = 64 << 10;

/// A response body that marks its connection active as it moves, in pieces
/// of at most [`PIECE`] bytes.
struct Tracked {
    body: Body,
    /// What is left of the last data frame.
    rest: Bytes,
    activity: Arc<Activity>,
}

impl Tracked {
    fn piece(&mut self) -> Frame<Bytes> {
        let n = self.rest.len().min(PIECE);
        Frame::data(self.rest.split_to(n))
    }
}

impl http_body::Body for Tracked {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        let this = &mut *self;
        if this.rest.is_empty() {
            match Pin::new(&mut this.body).poll_frame(cx) {
                Poll::Ready(Some(Ok(frame))) => match frame.into_data() {
                    Ok(data) => this.rest = data,
                    Err(frame) => {
                        this.activity.touch();
                        return Poll::Ready(Some(Ok(frame)));
                    }
                },
                other => {
                    if other.is_ready() {
                        this.activity.touch();
                    }
                    return other;
                }
            }
        }
        this.activity.touch();
        Poll::Ready(Some(Ok(this.piece())))
    }

    fn is_end_stream(&self) -> bool {
        self.rest.is_empty() && self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        let inner = self.body.size_hint();
        let rest = self.rest.len() as u64;
        let mut hint = SizeHint::new();
        if let Some(upper) = inner.upper() {
            hint.set_upper(upper + rest);
        }
        hint.set_lower(inner.lower() + rest);
        hint
    }
}

/// Raises this process's soft limit on open files (up to its hard limit)
/// so that `max_connections` sockets and the server's other files fit.
/// Returns the number of connections that fit when the hard limit is too
/// low for all of them.
pub fn fit_open_files(max_connections: u32) -> Option<u64> {
    use rustix::process::{getrlimit, setrlimit, Resource, Rlimit};
    let want = u64::from(max_connections) + OTHER_FILES;
    let limit = getrlimit(Resource::Nofile);
    // `None` is unlimited.
    let current = limit.current.unwrap_or(u64::MAX);
    if current >= want {
        return None;
    }
    let hard = limit.maximum.unwrap_or(u64::MAX);
    let new = want.min(hard);
    let set = setrlimit(
        Resource::Nofile,
        Rlimit {
            current: Some(new),
            maximum: limit.maximum,
        },
    );
    let have = if set.is_ok() { new } else { current };
    (have < want).then(|| have.saturating_sub(OTHER_FILES))
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body::Body as _;

    #[tokio::test]
    async fn a_response_body_moves_in_pieces_that_each_restart_the_idle_timeout() {
        let activity = Arc::new(Activity::new(Instant::now()));
        let long_ago = Instant::now() - Duration::from_secs(3600);
        activity.0.send_modify(|s| s.since = long_ago);
        let mut body = Tracked {
            body: Body::from(vec![7u8; 2 * PIECE + 10]),
            rest: Bytes::new(),
            activity: activity.clone(),
        };
        // Content-Length is still known.
        assert_eq!(body.size_hint().exact(), Some(2 * PIECE as u64 + 10));
        let mut pieces = Vec::new();
        while let Some(frame) = std::future::poll_fn(|cx| Pin::new(&mut body).poll_frame(cx)).await
        {
            let since = activity.0.borrow().since;
            assert!(since > long_ago, "a piece did not count as activity");
            activity.0.send_modify(|s| s.since = long_ago);
            pieces.push(frame.unwrap().into_data().unwrap().len());
        }
        assert_eq!(pieces, [PIECE, PIECE, 10]);
        assert!(body.is_end_stream());
    }

    #[test]
    fn a_connection_times_out_only_with_no_handler_running() {
        let limits = ConnectionLimits {
            header_timeout: Duration::from_secs(1),
            idle_timeout: Duration::from_secs(5),
            max_connections: 1,
        };
        let t = Instant::now();
        let mut idle = Idle {
            running: 0,
            since: t,
            fresh: true,
        };
        assert_eq!(idle.deadline(limits), Some(t + limits.header_timeout));
        idle.fresh = false;
        assert_eq!(idle.deadline(limits), Some(t + limits.idle_timeout));
        idle.running = 1;
        assert_eq!(idle.deadline(limits), None);
    }
}
