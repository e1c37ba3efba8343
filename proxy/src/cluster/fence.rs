//! Fencing: the leader may command rigs, PDUs and the GPU scheduler only while it is sure it
//! still holds its etcd lease.
//!
//! etcd expires a lease `ttl` after the last keep-alive it *received*; we record the instant
//! we *sent* each keep-alive that was answered, so `sent + ttl` is never later than etcd's own
//! expiry (a clock that runs at the same rate is all this needs, not synchronised clocks).
//! A margin is kept off that for the command itself to reach its rig. A process frozen
//! (SIGSTOP, a VM pause, a long GC-like stall) wakes past its deadline: `check` fails before
//! any command leaves, and every plan write is also a transaction etcd refuses unless the
//! leader key is still under this lease, so a deposed leader can neither act nor write.
//!
//! `Instant` is CLOCK_MONOTONIC on Linux: it keeps counting while the process is stopped.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// Why a command was not sent.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("not the power leader any more (lease not renewed in time): command not sent")]
pub struct Fenced;

/// The local view of the leader's lease, shared by everything that commands hardware.
#[derive(Clone, Debug)]
pub struct Fence {
    base: Instant,
    /// Nanoseconds after `base` until which commands may go out; 0 = never (not leader).
    valid_until_ns: Arc<AtomicU64>,
    margin: Duration,
}

impl Fence {
    /// A fence that is closed until [`Fence::renewed`] opens it. `margin` is kept off every
    /// deadline (the time a command may take to reach its rig).
    pub fn closed(margin: Duration) -> Self {
        Fence {
            base: Instant::now(),
            valid_until_ns: Arc::new(AtomicU64::new(0)),
            margin,
        }
    }

    /// A keep-alive sent at `sent` was answered with `ttl` left: commands may go out until
    /// `sent + ttl - margin`. Never moves the deadline back, except [`Fence::close`].
    pub fn renewed(&self, sent: Instant, ttl: Duration) {
        let until = sent
            .checked_add(ttl)
            .and_then(|t| t.checked_sub(self.margin))
            .map(|t| t.saturating_duration_since(self.base))
            .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX));
        self.valid_until_ns.fetch_max(until, Ordering::AcqRel);
    }

    /// Closes the fence at once (the lease is gone, or leadership ended).
    pub fn close(&self) {
        self.valid_until_ns.store(0, Ordering::Release);
    }

    /// Whether a command may go out now.
    pub fn check(&self) -> Result<(), Fenced> {
        self.check_at(Instant::now())
    }

    /// [`Fence::check`] at `now`.
    pub fn check_at(&self, now: Instant) -> Result<(), Fenced> {
        let now_ns =
            u64::try_from(now.saturating_duration_since(self.base).as_nanos()).unwrap_or(u64::MAX);
        let until = self.valid_until_ns.load(Ordering::Acquire);
        if until != 0 && now_ns < until {
            Ok(())
        } else {
            Err(Fenced)
        }
    }

    /// How long commands may still go out (zero when closed).
    pub fn remaining(&self) -> Duration {
        let now_ns = u64::try_from(self.base.elapsed().as_nanos()).unwrap_or(u64::MAX);
        Duration::from_nanos(
            self.valid_until_ns
                .load(Ordering::Acquire)
                .saturating_sub(now_ns),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn open_only_within_the_renewed_lease_minus_the_margin() {
        let f = Fence::closed(Duration::from_millis(500));
        let t0 = Instant::now();
        assert_eq!(f.check_at(t0), Err(Fenced));
        f.renewed(t0, Duration::from_secs(6));
        assert_eq!(f.check_at(t0 + Duration::from_secs(5)), Ok(()));
        assert_eq!(f.check_at(t0 + Duration::from_millis(5_500)), Err(Fenced));
        // An older answer arriving late never shortens the deadline...
        f.renewed(t0 - Duration::from_secs(3), Duration::from_secs(6));
        assert_eq!(f.check_at(t0 + Duration::from_secs(5)), Ok(()));
        // ...but losing the lease closes it at once.
        f.close();
        assert_eq!(f.check_at(t0), Err(Fenced));
        assert_eq!(f.remaining(), Duration::ZERO);
    }

    #[test]
    fn a_frozen_process_wakes_fenced() {
        let f = Fence::closed(Duration::from_millis(100));
        let t0 = Instant::now();
        f.renewed(t0, Duration::from_secs(2));
        // Resumed 30 s later (SIGSTOP): no keep-alive was answered meanwhile.
        assert_eq!(f.check_at(t0 + Duration::from_secs(30)), Err(Fenced));
    }
}
