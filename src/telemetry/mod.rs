//! Counters shared between tasks and whoever reports on them (the demo's summary, the admin
//! socket, metrics). Plain atomics: written on hot paths without locks, read as snapshots.

use std::sync::atomic::{AtomicU64, Ordering};

mod reject;

pub use reject::{RejectCounts, RejectReason};

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
}

impl ShareCounters {
    /// Counts an accepted share of `difficulty`.
    pub fn accept(&self, difficulty: f64) {
        self.accepted.fetch_add(1, Ordering::Relaxed);
        self.accepted_difficulty.add(difficulty);
    }

    /// Counts a share that was a block.
    pub fn block(&self) {
        self.blocks.fetch_add(1, Ordering::Relaxed);
    }

    /// Counts a rejected share.
    pub fn reject(&self, reason: RejectReason) {
        self.rejected.fetch_add(1, Ordering::Relaxed);
        self.reasons.add(reason);
    }

    /// Counts a share lost in flight.
    pub fn lose(&self) {
        self.lost.fetch_add(1, Ordering::Relaxed);
        self.reasons.add(RejectReason::Lost);
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
