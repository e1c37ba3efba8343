//! Counters and histograms that every load miner (SV1 or SV2) feeds.
//!
//! Atomics for counts; std mutexes for the histograms and maps, each held for one update and
//! never across `.await` (miner tasks touch them a few times per share, which is far below
//! any contention that would show on 2 cores).

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Mutex, PoisonError};
use std::time::Instant;

use hdrhistogram::Histogram;
use tokio_util::sync::CancellationToken;

use crate::testpool::TestPool;

/// Highest latency the histograms hold (µs); larger values are clamped.
const MAX_LATENCY_US: u64 = 60_000_000;

/// Counters and histograms all miners feed.
#[derive(Debug)]
pub(crate) struct Shared {
    /// Miners set up (SV1: subscribed and authorized; SV2: channel open) and holding a job.
    pub ready: AtomicU64,
    /// Failed connects or handshakes.
    pub connect_errors: AtomicU64,
    /// Connections that ended before shutdown.
    pub disconnects: AtomicU64,
    /// Noise handshakes completed (SV2 only).
    pub handshakes: AtomicU64,
    /// Submits written.
    pub submitted: AtomicU64,
    /// Shares answered during the load phase.
    pub answered: AtomicU64,
    /// Shares answered as accepted (whole run).
    pub accepted: AtomicU64,
    /// Shares answered as rejected (whole run).
    pub rejected: AtomicU64,
    /// `SubmitShares.Success` messages read (SV2: one may acknowledge many shares).
    pub acks: AtomicU64,
    /// Ticks skipped because there was no job yet or too many submits were outstanding.
    pub skipped: AtomicU64,
    /// Rejections by error code (SV1: the Stratum number; SV2: the `error_code` string).
    pub rejected_by_code: Mutex<BTreeMap<String, u64>>,
    /// Submit written → its answer read, µs.
    pub latency: Mutex<Histogram<u64>>,
    /// Pool sent the job → miner read it, µs (load phase only).
    pub fanout: Mutex<Histogram<u64>>,
    /// TCP connect started → Noise handshake done, µs (SV2 only).
    pub handshake: Mutex<Histogram<u64>>,
    /// When the last Noise handshake completed.
    pub last_handshake: Mutex<Option<Instant>>,
    /// Set while the load phase runs.
    pub loading: AtomicBool,
    /// Cancelled when the load phase starts.
    pub go: CancellationToken,
    /// The embedded pool, for job send times.
    pub pool: Option<TestPool>,
    /// When the load phase started (set once).
    pub load_started: Mutex<Option<Instant>>,
}

fn histogram() -> Histogram<u64> {
    // Three significant figures over 1 µs..60 s: constant, valid bounds.
    Histogram::new_with_bounds(1, MAX_LATENCY_US, 3).expect("constant histogram bounds are valid")
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Records `micros` (clamped to the histogram's range).
pub(crate) fn record(h: &Mutex<Histogram<u64>>, micros: u64) {
    lock(h).saturating_record(micros.clamp(1, MAX_LATENCY_US));
}

/// Microseconds from `from` to `to` (0 if `to` is earlier).
pub(crate) fn micros_between(from: Instant, to: Instant) -> u64 {
    u64::try_from(to.saturating_duration_since(from).as_micros()).unwrap_or(u64::MAX)
}

impl Shared {
    pub fn new(pool: Option<TestPool>) -> Self {
        Shared {
            ready: AtomicU64::new(0),
            connect_errors: AtomicU64::new(0),
            disconnects: AtomicU64::new(0),
            handshakes: AtomicU64::new(0),
            submitted: AtomicU64::new(0),
            answered: AtomicU64::new(0),
            accepted: AtomicU64::new(0),
            rejected: AtomicU64::new(0),
            acks: AtomicU64::new(0),
            skipped: AtomicU64::new(0),
            rejected_by_code: Mutex::new(BTreeMap::new()),
            latency: Mutex::new(histogram()),
            fanout: Mutex::new(histogram()),
            handshake: Mutex::new(histogram()),
            last_handshake: Mutex::new(None),
            loading: AtomicBool::new(false),
            go: CancellationToken::new(),
            pool,
            load_started: Mutex::new(None),
        }
    }

    /// Marks the start of the load phase.
    pub fn start_load(&self, at: Instant) {
        *lock(&self.load_started) = Some(at);
        self.loading.store(true, Ordering::Relaxed);
        self.go.cancel();
    }

    /// A share's answer arrived `sent` → now.
    pub fn answered(&self, sent: Instant, now: Instant, accepted: bool) {
        record(&self.latency, micros_between(sent, now));
        if self.loading.load(Ordering::Relaxed) {
            self.answered.fetch_add(1, Ordering::Relaxed);
        }
        if accepted {
            self.accepted.fetch_add(1, Ordering::Relaxed);
        } else {
            self.rejected.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Counts a rejection under its error code.
    pub fn rejected_with(&self, code: &str) {
        *lock(&self.rejected_by_code)
            .entry(code.to_owned())
            .or_default() += 1;
    }

    /// A job was read at `received`; `tag` is the pool's job tag when the miner can see it
    /// (SV1 and extended channels: in the coinbase). Without it (standard channels only get a
    /// merkle root) the pool's current job is taken: during the load phase jobs come seconds
    /// apart and fan out in milliseconds, so that is the job being fanned out.
    pub fn job_received(&self, tag: Option<u64>, received: Instant) {
        let Some(pool) = &self.pool else { return };
        let Some(started) = *lock(&self.load_started) else {
            return;
        };
        let tag = tag.unwrap_or_else(|| pool.current_job_tag());
        if let Some(sent) = pool.job_sent_at(tag)
            && sent >= started
        {
            record(&self.fanout, micros_between(sent, received));
        }
    }

    /// A Noise handshake that began (TCP connect) at `started` just completed.
    pub fn handshake_done(&self, started: Instant) {
        let now = Instant::now();
        record(&self.handshake, micros_between(started, now));
        self.handshakes.fetch_add(1, Ordering::Relaxed);
        let mut last = lock(&self.last_handshake);
        *last = Some(last.map_or(now, |l| l.max(now)));
    }

    /// When the last handshake completed.
    pub fn last_handshake(&self) -> Option<Instant> {
        *lock(&self.last_handshake)
    }

    /// The rejections by code so far.
    pub fn rejected_by_code(&self) -> BTreeMap<String, u64> {
        lock(&self.rejected_by_code).clone()
    }
}
