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
//!
//! One address may hold at most `per_address` connections ([`ConnectionLimits`]), so that one
//! host cannot take every slot; beyond it a socket is closed at once as above. The count per
//! address lives in a map touched only at accept and when a connection ends (never on the
//! share path), and an address leaves the map with its last connection, so the map never
//! holds more entries than there are connections. IPv4-mapped IPv6 peers (`::ffff:a.b.c.d`,
//! from a dual-stack listener) count as their IPv4 address.

use std::collections::HashMap;
use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{Instrument, info, info_span, warn};

use crate::pool_link::ConnId;

/// Connections the kernel may hold for us before `accept` (capped by `net.core.somaxconn`).
const LISTEN_BACKLOG: u32 = 4096;

/// First and longest wait after a failed `accept` (EMFILE and friends). Not configurable: it
/// only paces retries while the process is out of descriptors, the kernel's backlog holds the
/// miners meanwhile, and any value from milliseconds to a second serves equally well.
const ACCEPT_BACKOFF: (Duration, Duration) = (Duration::from_millis(5), Duration::from_secs(1));

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
    /// Cancelled when the proxy stops its miner sessions (after it stopped accepting): the
    /// session then drains.
    pub shutdown: CancellationToken,
    /// This connection's place under the connection caps, freed when the handler drops it.
    /// Held by the handler's own future rather than by a wrapper around it: a wrapping async
    /// block would store the handler's future twice (captured, then awaited), doubling the
    /// task's size for every connection.
    pub permit: Slot,
}

/// The caps [`serve`] enforces, each listener on its own (as `[limits] max_connections`
/// always was).
#[derive(Clone, Copy, Debug)]
pub struct ConnectionLimits {
    /// Most connections at once.
    pub total: usize,
    /// Most connections at once from one address.
    pub per_address: usize,
}

/// A connection's place under [`ConnectionLimits`]; dropping it frees both.
#[derive(Debug)]
pub struct Slot {
    _total: OwnedSemaphorePermit,
    _address: AddressSlot,
}

/// Live connections per address. A `std` mutex: it is held for one map operation at accept
/// or at a connection's end, never across an `.await`.
#[derive(Debug, Default)]
struct PerAddress(Mutex<HashMap<IpAddr, usize>>);

impl PerAddress {
    fn counts(&self) -> std::sync::MutexGuard<'_, HashMap<IpAddr, usize>> {
        // The map holds plain counts; a panic elsewhere cannot leave one half-written.
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A place for one more connection from `ip`, unless it already has `cap`.
    fn take(self: &Arc<Self>, ip: IpAddr, cap: usize) -> Option<AddressSlot> {
        let mut counts = self.counts();
        let count = counts.get(&ip).copied().unwrap_or(0);
        if count >= cap {
            return None;
        }
        counts.insert(ip, count.saturating_add(1));
        Some(AddressSlot {
            map: self.clone(),
            ip,
        })
    }
}

/// One connection counted against its address; uncounted on drop.
#[derive(Debug)]
struct AddressSlot {
    map: Arc<PerAddress>,
    ip: IpAddr,
}

impl Drop for AddressSlot {
    fn drop(&mut self) {
        let mut counts = self.map.counts();
        if let Some(count) = counts.get_mut(&self.ip) {
            *count = count.saturating_sub(1);
            if *count == 0 {
                counts.remove(&self.ip);
            }
        }
    }
}

/// The address a peer counts as: IPv4-mapped IPv6 as its IPv4 address.
fn address_of(peer: SocketAddr) -> IpAddr {
    peer.ip().to_canonical()
}

/// Accepts connections until `shutdown` is cancelled, running `handler` for each in a task
/// tracked by `tracker`, within `limits`. Each connection gets `sessions` as its
/// [`Accepted::shutdown`]: a separate token, so that shutdown can stop accepting first and
/// drain the sessions after.
pub async fn serve<H, Fut>(
    listener: TcpListener,
    limits: ConnectionLimits,
    protocol: &'static str,
    shutdown: CancellationToken,
    sessions: CancellationToken,
    tracker: TaskTracker,
    handler: H,
) where
    H: Fn(Accepted) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    let max_connections = limits.total;
    let permits = Arc::new(Semaphore::new(max_connections));
    let per_address = Arc::new(PerAddress::default());
    let local = listener.local_addr().ok();
    info!(?local, protocol, "listening for miners");
    let (first_backoff, max_backoff) = ACCEPT_BACKOFF;
    let mut backoff = first_backoff;
    let mut refused: u64 = 0;
    let mut refused_per_address: u64 = 0;
    loop {
        let accepted = tokio::select! {
            _ = shutdown.cancelled() => break,
            r = listener.accept() => r,
        };
        let (stream, peer) = match accepted {
            Ok(pair) => {
                backoff = first_backoff;
                pair
            }
            Err(error) => {
                // EMFILE/ENFILE and friends: wait rather than spin; the backlog holds meanwhile.
                warn!(%error, ?backoff, "accept failed");
                tokio::select! {
                    _ = shutdown.cancelled() => break,
                    _ = tokio::time::sleep(backoff) => {}
                }
                backoff = (backoff * 2).min(max_backoff);
                continue;
            }
        };
        let Ok(total) = permits.clone().try_acquire_owned() else {
            refused = refused.saturating_add(1);
            if refused.is_power_of_two() {
                warn!(%peer, refused, max_connections, "connection cap reached, closing new connections");
            }
            drop(stream);
            continue;
        };
        let Some(address) = per_address.take(address_of(peer), limits.per_address) else {
            // Logged at powers of two, like the global cap: a host retrying in a loop must
            // not flood the log.
            refused_per_address = refused_per_address.saturating_add(1);
            if refused_per_address.is_power_of_two() {
                warn!(%peer, refused = refused_per_address, max_per_address = limits.per_address, "per-address connection cap reached, closing new connections from it");
            }
            drop(stream);
            continue;
        };
        let permit = Slot {
            _total: total,
            _address: address,
        };
        let _ = stream.set_nodelay(true);
        let id = next_conn_id();
        let span = info_span!("miner", conn = id, %peer, protocol, worker = tracing::field::Empty);
        let fut = handler(Accepted {
            stream,
            peer,
            id,
            shutdown: sessions.clone(),
            permit,
        });
        tracker.spawn(fut.instrument(span));
    }
    info!(?local, "stopped accepting");
}

/// Serves `handler` on a fresh `127.0.0.1:0` listener (16 connections) until the returned token
/// is cancelled: the session I/O tasks' component tests start their proxy side with it.
#[cfg(test)]
pub(crate) async fn serve_for_test<H, Fut>(
    protocol: &'static str,
    handler: H,
) -> (SocketAddr, CancellationToken)
where
    H: Fn(Accepted) -> Fut + Send + 'static,
    Fut: Future<Output = ()> + Send + 'static,
{
    let socket = TcpListener::bind("127.0.0.1:0")
        .await
        .expect("a loopback port");
    let addr = socket.local_addr().expect("the listener's address");
    let stop = CancellationToken::new();
    let limits = ConnectionLimits {
        total: 16,
        per_address: 16,
    };
    let (accept_stop, sessions) = (stop.clone(), stop.clone());
    tokio::spawn(async move {
        serve(
            socket,
            limits,
            protocol,
            accept_stop,
            sessions,
            TaskTracker::new(),
            handler,
        )
        .await;
    });
    (addr, stop)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_address_is_capped_and_leaves_the_map_with_its_last_connection() {
        let map = Arc::new(PerAddress::default());
        let a: IpAddr = "10.0.0.1".parse().unwrap();
        let b: IpAddr = "10.0.0.2".parse().unwrap();
        let first = map.take(a, 2).unwrap();
        let second = map.take(a, 2).unwrap();
        assert!(map.take(a, 2).is_none(), "a third from one address");
        let other = map.take(b, 2).unwrap();
        drop(first);
        let third = map.take(a, 2).unwrap();
        drop((second, third, other));
        assert!(map.counts().is_empty(), "no entry outlives its connections");
    }

    #[test]
    fn ipv4_mapped_peers_count_as_their_ipv4_address() {
        let mapped: SocketAddr = "[::ffff:192.0.2.7]:3333".parse().unwrap();
        let plain: SocketAddr = "192.0.2.7:4444".parse().unwrap();
        assert_eq!(address_of(mapped), address_of(plain));
        let v6: SocketAddr = "[2001:db8::7]:3333".parse().unwrap();
        assert_eq!(address_of(v6), v6.ip());
    }
}
