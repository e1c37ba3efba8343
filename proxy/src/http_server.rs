//! The one HTTP/1.1 server loop, shared by the HTTP API ([`crate::web`]) and the metrics
//! endpoint ([`crate::web::metrics::server`]): an axum [`Router`] served over hyper's
//! connection API with limits `axum::serve` does not offer.
//!
//! Invariants (each server on its own):
//! - At most [`HttpLimits::max_connections`] connections are served at once. The cap is taken
//!   *before* `accept`: further clients wait in the kernel's backlog (their connect succeeds,
//!   their request is answered once a connection closes) instead of being refused. These are
//!   management clients (Prometheus, the NOC page, a grid signal) that retry slowly; a
//!   refusal would lose a curtailment signal that a short wait would have delivered.
//! - A request's headers must be complete [`HttpLimits::header_timeout`] after the server is
//!   ready for them (after accept, or after the previous response on a kept-alive
//!   connection); hyper then closes the connection. Sending a byte now and then does not
//!   extend it (slowloris). So a kept-alive connection with no new request is closed after
//!   this time too, or after the idle timeout if that is shorter.
//! - A connection on which no byte moves either way for [`HttpLimits::idle_timeout`] is
//!   closed, at any stage: a request body that stalls, a client that stops reading the
//!   response.
//! - Request bodies are capped by each router (`DefaultBodyLimit`), not here.
//! - On shutdown the server stops accepting, lets requests in progress finish (idle kept-alive
//!   connections close at once), and returns when every connection has ended; the idle
//!   timeout bounds how long that can take.
//!
//! Handlers see the peer's address as `ConnectInfo<SocketAddr>`, as with
//! `into_make_service_with_connect_info`.

use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::Router;
use axum::extract::ConnectInfo;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{Instrument, debug, info_span, warn};

/// What one server enforces.
#[derive(Clone, Copy, Debug)]
pub struct HttpLimits {
    /// Most connections served at once; more wait in the backlog.
    pub max_connections: usize,
    /// Time to send a request's headers.
    pub header_timeout: Duration,
    /// Time a connection may move no byte either way.
    pub idle_timeout: Duration,
}

impl HttpLimits {
    /// The `[limits]` the configuration asks for.
    pub fn from_config(limits: &crate::config::Limits) -> Self {
        HttpLimits {
            max_connections: limits.http_max_connections,
            header_timeout: Duration::from_secs(limits.http_header_timeout_secs),
            idle_timeout: Duration::from_secs(limits.http_idle_timeout_secs),
        }
    }
}

/// Serves `router` on `listener` within `limits` until `shutdown`, then waits for the
/// connections in progress to end. `name` labels the logs (`http`, `metrics`).
pub async fn serve(
    listener: TcpListener,
    router: Router,
    limits: HttpLimits,
    name: &'static str,
    shutdown: CancellationToken,
) {
    let permits = Arc::new(Semaphore::new(limits.max_connections));
    let connections = TaskTracker::new();
    let mut http = http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(limits.header_timeout);
    let mut backoff = Duration::from_millis(5);
    loop {
        let permit = tokio::select! {
            _ = shutdown.cancelled() => break,
            p = permits.clone().acquire_owned() => match p {
                Ok(p) => p,
                Err(_) => break, // never closed
            },
        };
        let (stream, peer) = tokio::select! {
            _ = shutdown.cancelled() => break,
            r = listener.accept() => match r {
                Ok(pair) => {
                    backoff = Duration::from_millis(5);
                    pair
                }
                Err(error) => {
                    // EMFILE and friends: wait rather than spin; the backlog holds meanwhile.
                    warn!(server = name, %error, ?backoff, "accept failed");
                    tokio::select! {
                        _ = shutdown.cancelled() => break,
                        _ = tokio::time::sleep(backoff) => {}
                    }
                    backoff = (backoff * 2).min(Duration::from_secs(1));
                    continue;
                }
            },
        };
        let span = info_span!("http", server = name, %peer);
        let connection = serve_connection(
            stream,
            peer,
            router.clone(),
            http.clone(),
            limits.idle_timeout,
            shutdown.clone(),
        );
        connections.spawn(
            async move {
                connection.await;
                drop(permit);
            }
            .instrument(span),
        );
    }
    connections.close();
    connections.wait().await;
}

/// One connection to its end: hyper's, the idle timeout's, or shutdown's.
async fn serve_connection(
    stream: TcpStream,
    peer: SocketAddr,
    router: Router,
    http: http1::Builder,
    idle_timeout: Duration,
    shutdown: CancellationToken,
) {
    let started = Instant::now();
    let activity = Arc::new(AtomicU64::new(0));
    let io = TokioIo::new(Watched {
        inner: stream,
        started,
        activity: activity.clone(),
    });
    let tower = TowerToHyperService::new(router);
    let service = hyper::service::service_fn(move |mut request: hyper::Request<Incoming>| {
        request.extensions_mut().insert(ConnectInfo(peer));
        hyper::service::Service::call(&tower, request)
    });
    let connection = http.serve_connection(io, service);
    tokio::pin!(connection);
    let mut draining = false;
    loop {
        let seen = activity.load(Ordering::Relaxed);
        let idle_at = started + Duration::from_millis(seen) + idle_timeout;
        tokio::select! {
            r = connection.as_mut() => {
                if let Err(error) = r {
                    // Header timeouts, malformed requests, resets: the client's doing.
                    debug!(%error, "connection ended");
                }
                return;
            }
            _ = tokio::time::sleep_until(idle_at) => {
                if activity.load(Ordering::Relaxed) == seen {
                    debug!(?idle_timeout, "idle connection closed");
                    return;
                }
            }
            _ = shutdown.cancelled(), if !draining => {
                draining = true;
                connection.as_mut().graceful_shutdown();
            }
        }
    }
}

/// A socket that notes when a byte last moved (milliseconds after `started`), for the idle
/// timeout. A clock read per read or write is nothing next to an HTTP request's work.
struct Watched {
    inner: TcpStream,
    started: Instant,
    activity: Arc<AtomicU64>,
}

impl Watched {
    fn touch(&self) {
        let ms = u64::try_from(self.started.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.activity.store(ms, Ordering::Relaxed);
    }
}

impl AsyncRead for Watched {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let r = Pin::new(&mut self.inner).poll_read(cx, buf);
        if matches!(r, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            self.touch();
        }
        r
    }
}

impl AsyncWrite for Watched {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let r = Pin::new(&mut self.inner).poll_write(cx, buf);
        if matches!(r, Poll::Ready(Ok(n)) if n > 0) {
            self.touch();
        }
        r
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        let r = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        if matches!(r, Poll::Ready(Ok(n)) if n > 0) {
            self.touch();
        }
        r
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}
