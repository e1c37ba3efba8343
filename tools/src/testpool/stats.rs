//! What the test pool counts: shares accepted and rejected (by reason), blocks, connections,
//! and per-worker credit. Connection tasks record into [`StatsRecorder`] under a short-lived
//! std mutex (never held across `.await`); [`super::TestPool::stats`] takes a snapshot.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::Instant;

/// Distinct worker names tracked; beyond this, shares are credited to [`OTHER_WORKERS`] so a
/// client inventing names cannot grow the map without bound.
pub const MAX_TRACKED_WORKERS: usize = 100_000;
/// The worker entry that collects shares of workers beyond [`MAX_TRACKED_WORKERS`].
pub const OTHER_WORKERS: &str = "(other)";

/// Reject reasons, as the keys of [`PoolStats::rejected`].
pub mod reason {
    /// The job id was never sent on this connection (or not parseable).
    pub const UNKNOWN_JOB: &str = "unknown-job";
    /// The job was superseded (clean job or full job window).
    pub const STALE: &str = "stale";
    /// The same share was already accepted.
    pub const DUPLICATE: &str = "duplicate";
    /// The hash does not meet the share target.
    pub const LOW_DIFFICULTY: &str = "low-difficulty";
    /// ntime outside the job's window.
    pub const NTIME: &str = "ntime-out-of-range";
    /// Version bits outside the negotiated mask.
    pub const VERSION_BITS: &str = "version-bits-outside-mask";
    /// extranonce2 of the wrong length.
    pub const EXTRANONCE_SIZE: &str = "bad-extranonce-size";
    /// Too many shares on one job for duplicate detection.
    pub const TOO_MANY_SHARES: &str = "too-many-shares";
    /// Submit for a worker name not authorized on this connection.
    pub const UNAUTHORIZED: &str = "unauthorized-worker";
    /// Submit before `mining.subscribe`.
    pub const NOT_SUBSCRIBED: &str = "not-subscribed";
    /// A submit whose params did not parse.
    pub const MALFORMED: &str = "malformed";
    /// A rejection reason this pool does not know by name.
    pub const OTHER: &str = "other";
}

/// A snapshot of the pool's counters.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct PoolStats {
    /// Shares accepted.
    pub accepted: u64,
    /// Sum of the difficulty credited to accepted shares (the difficulty each job was sent
    /// at, not the difficulty the hash achieved).
    pub accepted_difficulty: f64,
    /// Shares rejected, by reason (see [`reason`]).
    pub rejected: BTreeMap<String, u64>,
    /// Accepted shares that met the network target.
    pub blocks: u64,
    /// Connections open now.
    pub connections: usize,
    /// Connections accepted since start (across kill/revive).
    pub connects_total: u64,
    /// Per worker name as given in `mining.submit`.
    pub workers: BTreeMap<String, WorkerStats>,
    /// SV2 mode: the hash rate (h/s) last announced by a client, in
    /// `OpenExtendedMiningChannel` or `UpdateChannel`,
    pub announced_hashrate: f32,
    /// SV2 mode: `UpdateChannel` messages received.
    pub channel_updates: u64,
}

impl PoolStats {
    /// Total rejected shares.
    pub fn rejected_total(&self) -> u64 {
        self.rejected.values().sum()
    }

    /// Rejected shares for one reason.
    pub fn rejected_for(&self, reason: &str) -> u64 {
        self.rejected.get(reason).copied().unwrap_or(0)
    }
}

/// Counters for one worker name.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct WorkerStats {
    /// Shares accepted.
    pub accepted: u64,
    /// Sum of credited difficulty.
    pub accepted_difficulty: f64,
    /// Shares rejected (any reason).
    pub rejected: u64,
    /// When the last share (accepted or not) arrived.
    pub last_share: Option<Instant>,
}

/// The shared, mutable counters.
#[derive(Debug, Default)]
pub(crate) struct StatsRecorder {
    inner: Mutex<PoolStats>,
}

impl StatsRecorder {
    fn with<R>(&self, f: impl FnOnce(&mut PoolStats) -> R) -> R {
        // A panic while holding this lock cannot leave the counters inconsistent in a way
        // that matters for a test pool, so a poisoned lock is simply reused.
        let mut guard = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        f(&mut guard)
    }

    pub fn snapshot(&self) -> PoolStats {
        self.with(|s| s.clone())
    }

    pub fn connected(&self) {
        self.with(|s| {
            s.connections += 1;
            s.connects_total += 1;
        });
    }

    pub fn disconnected(&self) {
        self.with(|s| s.connections = s.connections.saturating_sub(1));
    }

    pub fn accepted(&self, worker: &str, difficulty: f64, block: bool, now: Instant) {
        self.with(|s| {
            s.accepted += 1;
            s.accepted_difficulty += difficulty;
            s.blocks += u64::from(block);
            let w = worker_entry(s, worker);
            w.accepted += 1;
            w.accepted_difficulty += difficulty;
            w.last_share = Some(now);
        });
    }

    pub fn announced(&self, hashrate: f32, update: bool) {
        self.with(|s| {
            s.announced_hashrate = hashrate;
            s.channel_updates += u64::from(update);
        });
    }

    pub fn rejected(&self, worker: Option<&str>, why: &'static str, now: Instant) {
        self.with(|s| {
            *s.rejected.entry(why.to_owned()).or_default() += 1;
            if let Some(worker) = worker {
                let w = worker_entry(s, worker);
                w.rejected += 1;
                w.last_share = Some(now);
            }
        });
    }
}

fn worker_entry<'a>(s: &'a mut PoolStats, worker: &str) -> &'a mut WorkerStats {
    let key = if s.workers.contains_key(worker) || s.workers.len() < MAX_TRACKED_WORKERS {
        worker
    } else {
        OTHER_WORKERS
    };
    s.workers.entry(key.to_owned()).or_default()
}
