//! Accepting miner connections: a connection cap, accept-error backoff, one task and one
//! tracing span per connection, and graceful shutdown.
//!
//! Connection storms (a whole farm rebooting, thousands of connects in a second) are normal:
//! each accepted socket costs one task and a few KiB until it subscribes. Above the cap, a
//! socket is accepted and closed at once: leaving it in the kernel backlog would only make the
//! miner time out later instead of retrying now, and would hide the overload from the logs.
//! For the same reason the listen backlog is deep ([`bind`]): with the usual 128, a storm
//! overflows the kernel's accept queue, and those miners wait for SYN-ACK retransmits (1 s,
//! 3 s, …) or, with SYN cookies, believe they are connected while the proxy never sees them.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{Instrument, info, info_span, warn};

/// Connections the kernel may hold for us before `accept` (capped by `net.core.somaxconn`).
const LISTEN_BACKLOG: u32 = 4096;

/// Binds a listener for miners with a backlog deep enough for a connection storm
/// ([`TcpListener::bind`] uses 128).
pub fn bind(addr: SocketAddr) -> std::io::Result<TcpListener> {
    let socket = if addr.is_ipv4() {
        TcpSocket::new_v4()?
    } else {
        TcpSocket::new_v6()?
    };
    // As `TcpListener::bind` does: a restarted proxy can listen again at once.
    #[cfg(unix)]
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(LISTEN_BACKLOG)
}

/// A process-wide connection id, for logs and registries.
pub type ConnId = u64;

static NEXT_CONN_ID: AtomicU64 = AtomicU64::new(1);

/// Allocates a fresh connection id.
pub fn next_conn_id() -> ConnId {
    NEXT_CONN_ID.fetch_add(1, Ordering::Relaxed)
}

/// What a connection handler receives.
pub struct Accepted {
    /// The socket (Nagle off: Stratum messages are small and latency matters).
    pub stream: TcpStream,
    /// The miner's address.
    pub peer: SocketAddr,
    /// Connection id.
    pub id: ConnId,
    /// Cancelled when the proxy shuts down.
    pub shutdown: CancellationToken,
    /// This connection's place under the connection cap, freed when the handler drops it.
    /// Held by the handler's own future rather than by a wrapper around it: a wrapping async
    /// block would store the handler's future twice (captured, then awaited), doubling the
    /// task's size for every connection.
    pub permit: OwnedSemaphorePermit,
}

/// Accepts connections until `shutdown` is cancelled, running `handler` for each in a task
/// tracked by `tracker`. At most `max_connections` run at once.
pub async fn serve<H, Fut>(
    listener: TcpListener,
    max_connections: usize,
    protocol: &'static str,
    shutdown: CancellationToken,
    tracker: TaskTracker,
    handler: H,
) where
    H: Fn(Accepted) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    let permits = Arc::new(Semaphore::new(max_connections));
    let local = listener.local_addr().ok();
    info!(?local, protocol, "listening for miners");
    let mut backoff = Duration::from_millis(5);
    let mut refused: u64 = 0;
    loop {
        let accepted = tokio::select! {
            _ = shutdown.cancelled() => break,
            r = listener.accept() => r,
        };
        let (stream, peer) = match accepted {
            Ok(pair) => {
                backoff = Duration::from_millis(5);
                pair
            }
            Err(error) => {
                // EMFILE/ENFILE and friends: wait rather than spin; the backlog holds meanwhile.
                warn!(%error, ?backoff, "accept failed");
                tokio::select! {
                    _ = shutdown.cancelled() => break,
                    _ = tokio::time::sleep(backoff) => {}
                }
                backoff = (backoff * 2).min(Duration::from_secs(1));
                continue;
            }
        };
        let Ok(permit) = permits.clone().try_acquire_owned() else {
            refused += 1;
            if refused.is_power_of_two() {
                warn!(%peer, refused, max_connections, "connection cap reached, closing new connections");
            }
            drop(stream);
            continue;
        };
        let _ = stream.set_nodelay(true);
        let id = next_conn_id();
        let span = info_span!("miner", conn = id, %peer, protocol, worker = tracing::field::Empty);
        let fut = handler(Accepted {
            stream,
            peer,
            id,
            shutdown: shutdown.clone(),
            permit,
        });
        tracker.spawn(fut.instrument(span));
    }
    info!(?local, "stopped accepting");
}
