//! Counters shared between tasks and whoever reports on them (the demo's summary, the admin
//! socket, metrics). Plain atomics: written on hot paths without locks, read as snapshots.
//!
//! [`histogram`] holds the latency histograms, [`instruments`] the process-level instruments
//! sessions and the power controller write to. The Prometheus endpoint that reads all of it
//! (and the live state of pools, miners and power) at scrape time is `web::metrics`.
//!
//! Invariant: this module is a leaf. It names no other part of the proxy, so every part can
//! count into it without an import cycle (the layer test in `layers.rs` checks this).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

pub mod histogram;
pub mod instruments;
mod reject;

pub use histogram::{Histogram, HistogramSnapshot};
pub use instruments::{DownstreamStats, Instruments};
pub use reject::{RejectCounts, RejectDifficulty, RejectReason};

/// An `f64` accumulator on an `AtomicU64` (compare-and-swap on the bit pattern). Used for
/// accepted difficulty, which is fractional when difficulties are below 1.
#[derive(Debug, Default)]
pub struct AtomicF64(AtomicU64);

impl AtomicF64 {
    /// Adds `v`.
    pub fn add(&self, v: f64) {
        let mut current = self.0.load(Ordering::Relaxed);
        loop {
            let next = (f64::from_bits(current) + v).to_bits();
            match self
                .0
                .compare_exchange_weak(current, next, Ordering::Relaxed, Ordering::Relaxed)
            {
                Ok(_) => return,
                Err(seen) => current = seen,
            }
        }
    }

    /// Stores `v`.
    pub fn set(&self, v: f64) {
        self.0.store(v.to_bits(), Ordering::Relaxed);
    }

    /// Reads the value.
    pub fn get(&self) -> f64 {
        f64::from_bits(self.0.load(Ordering::Relaxed))
    }
}

/// Share counters for one miner or one pool.
#[derive(Debug, Default)]
pub struct ShareCounters {
    /// Shares accepted.
    pub accepted: AtomicU64,
    /// Shares rejected (by us or by the pool).
    pub rejected: AtomicU64,
    /// Shares lost because the pool connection went away before it answered.
    pub lost: AtomicU64,
    /// Sum of the difficulty credited for accepted shares.
    pub accepted_difficulty: AtomicF64,
    /// Blocks found.
    pub blocks: AtomicU64,
    /// Rejected and lost shares by reason.
    pub reasons: RejectCounts,
    /// Difficulty of rejected and lost shares by reason, where the caller knows it.
    pub rejected_difficulty: RejectDifficulty,
    /// Totals every count here also goes to (a miner's counters feed its protocol's totals).
    parent: Option<Arc<ShareCounters>>,
}

impl ShareCounters {
    /// Counters whose every count also goes to `parent` (one more relaxed atomic add per
    /// share, on a counter shared by all the protocol's miners).
    pub fn feeding(parent: Arc<ShareCounters>) -> Self {
        ShareCounters {
            parent: Some(parent),
            ..ShareCounters::default()
        }
    }

    /// Counts an accepted share of `difficulty`.
    pub fn accept(&self, difficulty: f64) {
        self.accepted.fetch_add(1, Ordering::Relaxed);
        self.accepted_difficulty.add(difficulty);
        if let Some(p) = &self.parent {
            p.accept(difficulty);
        }
    }

    /// Counts a share that was a block.
    pub fn block(&self) {
        self.blocks.fetch_add(1, Ordering::Relaxed);
    }

    /// Counts a rejected share.
    pub fn reject(&self, reason: RejectReason) {
        self.rejected.fetch_add(1, Ordering::Relaxed);
        self.reasons.add(reason);
        if let Some(p) = &self.parent {
            p.reject(reason);
        }
    }

    /// Counts a rejected share of `difficulty`.
    pub fn reject_weighted(&self, reason: RejectReason, difficulty: f64) {
        self.reject(reason);
        self.rejected_difficulty.add(reason, difficulty);
        if let Some(p) = &self.parent {
            p.rejected_difficulty.add(reason, difficulty);
        }
    }

    /// Counts a share lost in flight.
    pub fn lose(&self) {
        self.lost.fetch_add(1, Ordering::Relaxed);
        self.reasons.add(RejectReason::Lost);
        if let Some(p) = &self.parent {
            p.lose();
        }
    }

    /// Counts a share of `difficulty` lost in flight.
    pub fn lose_weighted(&self, difficulty: f64) {
        self.lose();
        self.rejected_difficulty.add(RejectReason::Lost, difficulty);
        if let Some(p) = &self.parent {
            p.rejected_difficulty.add(RejectReason::Lost, difficulty);
        }
    }

    /// A plain snapshot.
    pub fn snapshot(&self) -> ShareSnapshot {
        ShareSnapshot {
            accepted: self.accepted.load(Ordering::Relaxed),
            rejected: self.rejected.load(Ordering::Relaxed),
            lost: self.lost.load(Ordering::Relaxed),
            accepted_difficulty: self.accepted_difficulty.get(),
            blocks: self.blocks.load(Ordering::Relaxed),
        }
    }
}

/// A snapshot of [`ShareCounters`].
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct ShareSnapshot {
    /// Shares accepted.
    pub accepted: u64,
    /// Shares rejected.
    pub rejected: u64,
    /// Shares lost in flight.
    pub lost: u64,
    /// Difficulty credited.
    pub accepted_difficulty: f64,
    /// Blocks found.
    pub blocks: u64,
}
