//! The instruments written where things happen, per downstream protocol: connections, share
//! totals, share round trip, job fan-out. (Pool connections keep their submit latency on
//! their handle, the power controller its drain-to-confirmed time on its `PowerHandle`.)
//! One [`Instruments`] per proxy (no process-global registry: tests run several proxies in
//! one process), handed to sessions through their settings.
//!
//! Every write is a relaxed atomic add; nothing here takes a lock.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use super::ShareCounters;
use super::histogram::{FANOUT_BUCKETS, Histogram, LATENCY_BUCKETS};

/// One downstream protocol's instruments.
#[derive(Debug)]
pub struct DownstreamStats {
    /// `sv1` or `sv2` (the `protocol` label).
    pub protocol: &'static str,
    /// Connections open now.
    open: AtomicU64,
    /// Connections accepted since start.
    opened: AtomicU64,
    /// Shares as the proxy answered them, summed over every miner that ever connected
    /// (each miner's [`ShareCounters`] feeds these).
    pub shares: Arc<ShareCounters>,
    /// Miner's submit read → the answer queued on its socket (SV1: the reply line; SV2: the
    /// `SubmitShares.Success`/`.Error`, which acknowledgement batching may delay further by
    /// `ack_delay`, zero by default). Includes the pool's verdict for shares that go up.
    pub share_round_trip: Histogram,
    /// Upstream job received → its notify queued on each miner's socket (one observation per
    /// miner and job).
    pub job_fanout: Histogram,
}

impl DownstreamStats {
    /// Fresh instruments for `protocol`.
    pub fn new(protocol: &'static str) -> Self {
        DownstreamStats {
            protocol,
            open: AtomicU64::new(0),
            opened: AtomicU64::new(0),
            shares: Arc::new(ShareCounters::default()),
            share_round_trip: Histogram::new(LATENCY_BUCKETS),
            job_fanout: Histogram::new(FANOUT_BUCKETS),
        }
    }

    /// Counts a connection open until the guard drops.
    pub fn connection(self: &Arc<Self>) -> ConnectionGuard {
        self.open.fetch_add(1, Ordering::Relaxed);
        self.opened.fetch_add(1, Ordering::Relaxed);
        ConnectionGuard(self.clone())
    }

    /// Connections open now.
    pub fn open_connections(&self) -> u64 {
        self.open.load(Ordering::Relaxed)
    }

    /// Connections accepted since start.
    pub fn opened_connections(&self) -> u64 {
        self.opened.load(Ordering::Relaxed)
    }
}

/// An open connection, counted in [`DownstreamStats`] until dropped.
#[derive(Debug)]
pub struct ConnectionGuard(Arc<DownstreamStats>);

impl Drop for ConnectionGuard {
    fn drop(&mut self) {
        self.0.open.fetch_sub(1, Ordering::Relaxed);
    }
}

/// All of one proxy's instruments.
#[derive(Debug)]
pub struct Instruments {
    /// SV1 miners.
    pub sv1: Arc<DownstreamStats>,
    /// SV2 miners.
    pub sv2: Arc<DownstreamStats>,
}

impl Default for Instruments {
    fn default() -> Self {
        Instruments {
            sv1: Arc::new(DownstreamStats::new("sv1")),
            sv2: Arc::new(DownstreamStats::new("sv2")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_connection_counts_while_its_guard_lives() {
        let s = Arc::new(DownstreamStats::new("sv1"));
        let a = s.connection();
        let b = s.connection();
        drop(a);
        assert_eq!((s.open_connections(), s.opened_connections()), (1, 2));
        drop(b);
        assert_eq!(s.open_connections(), 0);
    }

    #[test]
    fn miners_feed_their_protocol_totals() {
        let s = DownstreamStats::new("sv2");
        let miner = ShareCounters::feeding(s.shares.clone());
        miner.accept(2.0);
        miner.reject(crate::telemetry::RejectReason::Duplicate);
        miner.lose_weighted(4.0);
        let t = s.shares.snapshot();
        assert_eq!((t.accepted, t.rejected, t.lost), (1, 1, 1));
        assert_eq!(t.accepted_difficulty, 2.0);
        assert_eq!(
            s.shares
                .rejected_difficulty
                .get(crate::telemetry::RejectReason::Lost),
            4.0
        );
    }
}
