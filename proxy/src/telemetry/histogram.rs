//! A latency histogram written on hot paths: fixed bucket bounds, one atomic add per
//! observation (plus one for the sum), no lock and no allocation.
//!
//! Readers take a [`HistogramSnapshot`] (per-bucket counts, the sum, the bounds) that can be
//! merged with others of the same bounds (a pool's connections) and handed to the
//! Prometheus encoder. The count is the sum of the buckets read, so a snapshot is always
//! self-consistent (`+Inf` bucket == count) even while observations land concurrently.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use super::AtomicF64;

/// Bucket upper bounds (seconds) for network round trips: 0.25 ms to 10 s.
pub const LATENCY_BUCKETS: &[f64] = &[
    0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
    10.0,
];

/// Bucket upper bounds (seconds) for job fan-out: 50 µs to 5 s (a farm-wide fan-out of one job
/// is a burst of writes; its tail is what matters).
pub const FANOUT_BUCKETS: &[f64] = &[
    0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5,
    1.0, 5.0,
];

/// Bucket upper bounds (seconds) for a rig going to sleep: firmware ramp-down plus the quiet
/// period, seconds to tens of minutes.
pub const DRAIN_BUCKETS: &[f64] = &[
    1.0, 2.5, 5.0, 10.0, 20.0, 30.0, 60.0, 90.0, 120.0, 180.0, 300.0, 600.0, 1800.0,
];

/// See the module docs.
#[derive(Debug)]
pub struct Histogram {
    bounds: &'static [f64],
    /// One per bound, then the `+Inf` bucket.
    buckets: Box<[AtomicU64]>,
    sum: AtomicF64,
}

impl Histogram {
    /// An empty histogram over `bounds` (ascending, finite).
    pub fn new(bounds: &'static [f64]) -> Self {
        Histogram {
            bounds,
            buckets: (0..=bounds.len()).map(|_| AtomicU64::new(0)).collect(),
            sum: AtomicF64::default(),
        }
    }

    /// Records one value (seconds, or whatever unit the bounds are in). NaN is ignored.
    pub fn observe(&self, v: f64) {
        if v.is_nan() {
            return;
        }
        // A linear scan: ~15 bounds, all in one cache line; faster than a binary search here.
        let i = self
            .bounds
            .iter()
            .position(|b| v <= *b)
            .unwrap_or(self.bounds.len());
        if let Some(bucket) = self.buckets.get(i) {
            bucket.fetch_add(1, Ordering::Relaxed);
        }
        self.sum.add(v);
    }

    /// Records a duration in seconds.
    pub fn observe_duration(&self, d: Duration) {
        self.observe(d.as_secs_f64());
    }

    /// The counts so far.
    pub fn snapshot(&self) -> HistogramSnapshot {
        HistogramSnapshot {
            bounds: self.bounds,
            buckets: self
                .buckets
                .iter()
                .map(|b| b.load(Ordering::Relaxed))
                .collect(),
            sum: self.sum.get(),
        }
    }
}

/// A histogram's counts at one moment.
#[derive(Clone, Debug, PartialEq)]
pub struct HistogramSnapshot {
    /// Upper bounds, without `+Inf`.
    pub bounds: &'static [f64],
    /// Per-bucket (not cumulative) counts; the last is `+Inf`.
    pub buckets: Vec<u64>,
    /// Sum of the observed values.
    pub sum: f64,
}

impl HistogramSnapshot {
    /// An empty snapshot over `bounds`.
    pub fn empty(bounds: &'static [f64]) -> Self {
        HistogramSnapshot {
            bounds,
            buckets: vec![0; bounds.len() + 1],
            sum: 0.0,
        }
    }

    /// Observations recorded so far.
    pub fn count(&self) -> u64 {
        self.buckets.iter().sum()
    }

    /// Adds `other`'s counts (same bounds; a snapshot of other bounds is ignored).
    pub fn merge(&mut self, other: &HistogramSnapshot) {
        if self.bounds != other.bounds || self.buckets.len() != other.buckets.len() {
            return;
        }
        for (a, b) in self.buckets.iter_mut().zip(&other.buckets) {
            *a += b;
        }
        self.sum += other.sum;
    }

    /// `(upper bound, count)` pairs as the Prometheus encoder takes them (`f64::MAX` is `+Inf`).
    pub fn encoder_buckets(&self) -> Vec<(f64, u64)> {
        self.bounds
            .iter()
            .copied()
            .chain(std::iter::once(f64::MAX))
            .zip(self.buckets.iter().copied())
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_land_in_the_first_bucket_that_holds_them() {
        let h = Histogram::new(&[1.0, 2.0]);
        for v in [0.5, 1.0, 1.5, 3.0, f64::NAN] {
            h.observe(v);
        }
        let s = h.snapshot();
        assert_eq!(s.buckets, vec![2, 1, 1]);
        assert_eq!(s.count(), 4);
        assert!((s.sum - 6.0).abs() < 1e-9);
        assert_eq!(s.encoder_buckets(), vec![(1.0, 2), (2.0, 1), (f64::MAX, 1)]);
    }

    #[test]
    fn snapshots_of_the_same_bounds_merge() {
        let a = Histogram::new(LATENCY_BUCKETS);
        let b = Histogram::new(LATENCY_BUCKETS);
        a.observe_duration(Duration::from_millis(3));
        b.observe_duration(Duration::from_secs(60));
        let mut s = HistogramSnapshot::empty(LATENCY_BUCKETS);
        s.merge(&a.snapshot());
        s.merge(&b.snapshot());
        assert_eq!(s.count(), 2);
        assert_eq!(s.buckets.last(), Some(&1));
        s.merge(&Histogram::new(DRAIN_BUCKETS).snapshot());
        assert_eq!(s.count(), 2);
    }
}
