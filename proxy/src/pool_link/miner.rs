//! What a miner session shares with the rest of the proxy: identity, counters, current
//! difficulty and pool. Written by the session, read by the pool manager and by reports.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use super::ConnId;
use crate::telemetry::{AtomicF64, ShareCounters};

/// One miner's shared state.
#[derive(Debug)]
pub struct MinerShared {
    /// Connection id.
    pub id: ConnId,
    /// The miner's address (IP and port) as the listener accepted it.
    pub peer: SocketAddr,
    /// When it connected.
    pub connected_at: Instant,
    /// Shares as the proxy answered them.
    pub counters: ShareCounters,
    /// Current difficulty.
    pub difficulty: AtomicF64,
    worker: Mutex<Option<String>>,
    pool: AtomicUsize,
    movable: AtomicBool,
    last_share_unix_ms: AtomicU64,
}

impl MinerShared {
    /// A fresh record.
    pub fn new(id: ConnId, peer: SocketAddr) -> Self {
        MinerShared {
            id,
            peer,
            connected_at: Instant::now(),
            counters: ShareCounters::default(),
            difficulty: AtomicF64::default(),
            worker: Mutex::new(None),
            pool: AtomicUsize::new(usize::MAX),
            movable: AtomicBool::new(false),
            last_share_unix_ms: AtomicU64::new(0),
        }
    }

    /// Makes every share count also go to `totals` (the protocol's totals, for metrics).
    pub fn with_totals(mut self, totals: &Arc<ShareCounters>) -> Self {
        self.counters = ShareCounters::feeding(totals.clone());
        self
    }

    /// Worker name, once authorized.
    pub fn worker(&self) -> Option<String> {
        self.worker.lock().ok().and_then(|w| w.clone())
    }

    /// Records the worker name.
    pub fn set_worker(&self, worker: &str) {
        if let Ok(mut w) = self.worker.lock() {
            *w = Some(worker.to_owned());
        }
    }

    /// Pool the miner is on (`None` before assignment).
    pub fn pool(&self) -> Option<usize> {
        Some(self.pool.load(Ordering::Relaxed)).filter(|&p| p != usize::MAX)
    }

    /// Records the pool.
    pub fn set_pool(&self, pool: usize) {
        self.pool.store(pool, Ordering::Relaxed);
    }

    /// Whether it can be moved between connections without a disconnect.
    pub fn is_movable(&self) -> bool {
        self.movable.load(Ordering::Relaxed)
    }

    /// Records whether it subscribed to extranonce changes.
    pub fn set_movable(&self, movable: bool) {
        self.movable.store(movable, Ordering::Relaxed);
    }

    /// Marks a share now.
    pub fn touch(&self) {
        let ms = crate::time::unix_ms();
        self.last_share_unix_ms.store(ms, Ordering::Relaxed);
    }

    /// Sets the time of the last accepted share: the record of a miner another instance holds
    /// (`cluster::inventory`), whose shares this process never sees.
    pub fn set_last_share_unix_ms(&self, ms: u64) {
        self.last_share_unix_ms.store(ms, Ordering::Relaxed);
    }

    /// Unix time in ms of the last accepted share, 0 if none.
    pub fn last_share_unix_ms(&self) -> u64 {
        self.last_share_unix_ms.load(Ordering::Relaxed)
    }
}
