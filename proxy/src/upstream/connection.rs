//! What the pool manager sees of a pool connection, whatever protocol it speaks: a
//! [`ConnectionHandle`] with the current work (`watch`), a bounded queue of shares going up
//! (each answered through its own oneshot), the connection's status for failover, its
//! counters and its miners' hashrate.
//!
//! Each protocol (`sv1`, `sv2`) implements one session behind [`spawn`], and both run it in
//! the same reconnect loop (`upstream::reconnect`). Miner sessions see only the work and the
//! share queue, as a [`PoolConn`](crate::pool_link::PoolConn) in their assignment; the work and
//! share types are in [`crate::pool_link`].
//!
//! Writes towards a pool go through [`bounded_write`]: each one may take at most
//! `write_timeout` and gives way to shutdown at once. A pool that stops reading fills the
//! socket buffers and would otherwise park its task in a write, where it neither answers
//! shares nor notices shutdown; with the bound its session ends like a disconnect (status
//! `Down`, so the manager fails miners over, and every share waiting for it answered as lost).

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::config::{PoolUrl, UpstreamProtocol, WorkerIdentity};
use crate::pool_link::PoolId;
use crate::pool_link::submit::UpstreamSubmit;
use crate::pool_link::work::WorkState;
use crate::telemetry::{Histogram, ShareCounters};

/// Version-rolling mask the proxy asks pools for: the BIP320 general-purpose bits.
pub const REQUESTED_VERSION_MASK: u32 = hashshift_protocol::share::BIP320_VERSION_BITS;

/// The header version a pool rebuilds from a share: the job's version with the rolled
/// `bits` inside `mask` (BIP310), or the job's own without them.
pub fn rolled_version(job_version: u32, bits: Option<u32>, mask: u32) -> u32 {
    bits.map_or(job_version, |bits| (job_version & !mask) | (bits & mask))
}

/// Shares queued for one pool connection; beyond it a miner's share is answered as lost.
pub(super) const SUBMIT_QUEUE: usize = 4096;

/// Settings of one pool connection.
#[derive(Clone, Debug)]
pub struct ConnectionParams {
    /// Pool index in the config.
    pub pool: PoolId,
    /// Pool name for logs (its URL).
    pub url: PoolUrl,
    /// Account (worker name) the proxy authorizes with at this pool.
    pub user: String,
    /// Password sent with the account (often ignored by pools).
    pub password: String,
    /// Which worker names shares go up under. SV2 has no per-share worker name: SV2 pools
    /// always get shares under `user`, whatever this says.
    pub identity: WorkerIdentity,
    /// Longest line accepted from the pool.
    pub max_line_bytes: usize,
    /// Time allowed to connect and subscribe.
    pub connect_timeout: Duration,
    /// First wait before reconnecting (doubles per failure, see `upstream::reconnect`).
    pub min_backoff: Duration,
    /// Longest wait between reconnect attempts.
    pub max_backoff: Duration,
    /// Time the pool has to answer a share.
    pub submit_timeout: Duration,
    /// Time one write to the pool may take; past it the pool counts as not reading.
    pub write_timeout: Duration,
    /// Bytes of the pool's extranonce2 the proxy keeps per miner (`[aggregation]
    /// proxy_extranonce2_bytes`): a pool session leaving miners less than
    /// [`MIN_MINER_EXTRANONCE2`](crate::pool_link::extranonce::MIN_MINER_EXTRANONCE2) after it is refused.
    pub prefix_bytes: usize,
}

/// Connection state for the pool manager.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ConnStatus {
    /// Connecting or subscribing.
    Connecting,
    /// Subscribed, with work.
    Up,
    /// Down; reconnecting after a backoff.
    Down,
}

/// What the pool manager holds of a connection (miners get its work and submit queue as a
/// [`PoolConn`](crate::pool_link::PoolConn)).
#[derive(Clone, Debug)]
pub struct ConnectionHandle {
    /// The pool.
    pub pool: PoolId,
    /// Current work.
    pub work: watch::Receiver<Arc<WorkState>>,
    /// Shares to the pool.
    pub submit: mpsc::Sender<UpstreamSubmit>,
    /// Connection state.
    pub status: watch::Receiver<ConnStatus>,
    /// Shares as the pool judged them.
    pub counters: Arc<ShareCounters>,
    /// Estimated hashrate of the miners on this connection, kept by the pool manager; SV2
    /// connections announce it to the pool (`nominal_hash_rate`).
    pub hashrate: Arc<Hashrate>,
    /// Share sent → the pool's verdict (accepted or rejected; lost shares are not timed).
    pub submit_latency: Arc<Histogram>,
}

/// A hashrate estimate (H/s) shared between the pool manager, which writes it, and the
/// connection task, which reads it.
#[derive(Debug, Default)]
pub struct Hashrate(AtomicU64);

impl Hashrate {
    /// The estimate; 0 when no miner on the connection has an estimate yet.
    pub fn get(&self) -> f64 {
        f64::from_bits(self.0.load(Ordering::Relaxed))
    }

    /// Replaces the estimate.
    pub fn set(&self, hashes_per_second: f64) {
        self.0
            .store(hashes_per_second.max(0.0).to_bits(), Ordering::Relaxed);
    }
}

/// Starts the connection task for `params.url`'s protocol; it runs until `shutdown`.
pub fn spawn(
    params: ConnectionParams,
    shutdown: CancellationToken,
    tracker: &TaskTracker,
) -> ConnectionHandle {
    match params.url.protocol {
        UpstreamProtocol::Sv1 => super::sv1::spawn(params, shutdown, tracker),
        UpstreamProtocol::Sv2 { .. } => super::sv2::spawn(params, shutdown, tracker),
    }
}

/// Why a write towards the pool did not complete.
#[derive(Debug)]
pub(super) enum WriteFailure<E> {
    /// The write itself failed.
    Failed(E),
    /// The write took longer than `write_timeout`: the pool is not reading.
    TimedOut,
    /// Shutdown began while the write was waiting.
    Shutdown,
}

/// A failed or stalled write is the pool's: the session ends and the connection task
/// reconnects after a backoff. Shutdown is ours, and final.
impl<E> crate::error::Classify for WriteFailure<E> {
    fn side(&self) -> crate::error::Side {
        match self {
            WriteFailure::Failed(_) | WriteFailure::TimedOut => crate::error::Side::Pool,
            WriteFailure::Shutdown => crate::error::Side::Internal,
        }
    }

    fn retry(&self) -> crate::error::Retry {
        match self {
            WriteFailure::Failed(_) | WriteFailure::TimedOut => crate::error::Retry::Yes,
            WriteFailure::Shutdown => crate::error::Retry::No,
        }
    }
}

/// Runs one write (a `send`, `feed` or `flush` on the pool's sink) for at most `timeout`, or
/// until `shutdown`.
///
/// Cancel safety: when the timeout or shutdown wins, the write is dropped half done (part of a
/// line or frame may be on the wire or in the sink's buffer). That is fine only because the
/// caller then ends the session and drops the connection: nothing is ever written after a
/// write that did not complete. Callers must keep it that way.
///
/// The bound costs a timer entry per write, not a syscall: batching and flushes stay as they
/// were.
pub(super) async fn bounded_write<T, E>(
    write: impl Future<Output = Result<T, E>>,
    timeout: Duration,
    shutdown: &CancellationToken,
) -> Result<T, WriteFailure<E>> {
    tokio::select! {
        // Shutdown first: a proxy stopping never waits on a pool that does not read.
        biased;
        _ = shutdown.cancelled() => Err(WriteFailure::Shutdown),
        r = tokio::time::timeout(timeout, write) => match r {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(e)) => Err(WriteFailure::Failed(e)),
            Err(_) => Err(WriteFailure::TimedOut),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncWriteExt;
    use tokio::net::{TcpListener, TcpStream};

    /// A peer that never reads: a bounded write gives up after the timeout instead of
    /// waiting forever, and shutdown ends it at once.
    #[tokio::test]
    async fn a_write_to_a_peer_that_does_not_read_times_out_or_yields_to_shutdown() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let mut client = TcpStream::connect(listener.local_addr().unwrap())
            .await
            .unwrap();
        let (_server, _) = listener.accept().await.unwrap(); // never reads
        let chunk = vec![0u8; 1 << 20];
        let shutdown = CancellationToken::new();
        let started = std::time::Instant::now();
        let mut timed_out = false;
        // The kernel buffers are finite: some write must stall.
        for _ in 0..256 {
            match bounded_write(
                client.write_all(&chunk),
                Duration::from_millis(200),
                &shutdown,
            )
            .await
            {
                Ok(()) => {}
                Err(WriteFailure::TimedOut) => {
                    timed_out = true;
                    break;
                }
                Err(e) => panic!("unexpected {e:?}"),
            }
        }
        assert!(timed_out, "a peer that never reads must stall a write");
        assert!(started.elapsed() < Duration::from_secs(10));

        shutdown.cancel();
        let r = bounded_write(client.write_all(&chunk), Duration::from_secs(60), &shutdown).await;
        assert!(matches!(r, Err(WriteFailure::Shutdown)));
    }

    #[test]
    fn a_write_failure_is_the_pools_and_retried_unless_we_shut_down() {
        use crate::error::{Classify, Retry, Side};
        let failed = WriteFailure::Failed(std::io::Error::from(std::io::ErrorKind::BrokenPipe));
        assert_eq!((failed.side(), failed.retry()), (Side::Pool, Retry::Yes));
        let stalled = WriteFailure::<std::io::Error>::TimedOut;
        assert_eq!((stalled.side(), stalled.retry()), (Side::Pool, Retry::Yes));
        let stopping = WriteFailure::<std::io::Error>::Shutdown;
        assert_eq!(
            (stopping.side(), stopping.retry()),
            (Side::Internal, Retry::No)
        );
    }
}
