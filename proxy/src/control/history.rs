//! Power history for the NOC page's chart: a bounded ring of samples of the power picture
//! (mining, GPU granted and in use, the cap in force), taken every [`SAMPLE_EVERY`] for the
//! last [`KEEP`].
//!
//! Invariants: the ring never holds more than its capacity (the oldest sample goes first),
//! samples are in time order, and the lock is a std `Mutex` held only to push or copy (never
//! across an `.await`), so readers (HTTP requests) never wait on the sampler for long.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::Serialize;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use super::arbiter::PowerSnapshot;
use super::power::PowerView;
use crate::time::unix_ms;

/// How often the sampler records the power picture.
pub const SAMPLE_EVERY: Duration = Duration::from_secs(10);

/// How far back the history goes.
pub const KEEP: Duration = Duration::from_secs(6 * 3600);

/// One point of the power chart, in kW.
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub struct PowerSample {
    /// When (Unix milliseconds).
    pub at_unix_ms: u64,
    /// Mining power counted as drawn (every rig not confirmed asleep).
    pub mining_kw: f64,
    /// The GPU grant in force.
    pub gpu_granted_kw: f64,
    /// What the GPU side reports in use.
    pub gpu_in_use_kw: f64,
    /// The cap in force: `min(site cap, curtailment cap)`.
    pub cap_kw: f64,
    /// The configured site cap.
    pub site_cap_kw: f64,
}

impl PowerSample {
    /// The sample of a power picture taken at `at_unix_ms`.
    pub fn of(s: &PowerSnapshot, at_unix_ms: u64) -> PowerSample {
        PowerSample {
            at_unix_ms,
            mining_kw: s.mining.kw(),
            gpu_granted_kw: s.gpu_granted.kw(),
            gpu_in_use_kw: s.gpu_in_use.kw(),
            cap_kw: s.effective_cap.kw(),
            site_cap_kw: s.site_cap.kw(),
        }
    }
}

/// The bounded ring of samples.
#[derive(Debug)]
pub struct PowerHistory {
    capacity: usize,
    samples: Mutex<VecDeque<PowerSample>>,
}

impl PowerHistory {
    /// An empty history keeping at most `capacity` samples (at least one).
    pub fn new(capacity: usize) -> Arc<PowerHistory> {
        let capacity = capacity.max(1);
        Arc::new(PowerHistory {
            capacity,
            samples: Mutex::new(VecDeque::with_capacity(capacity)),
        })
    }

    /// An empty history sized for [`KEEP`] at [`SAMPLE_EVERY`] (2160 samples).
    pub fn standard() -> Arc<PowerHistory> {
        Self::new((KEEP.as_secs() / SAMPLE_EVERY.as_secs()) as usize)
    }

    /// The most samples kept.
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// Appends a sample, dropping the oldest when full. A sample older than the newest is
    /// ignored (the wall clock stepped back), so the ring stays in time order.
    pub fn record(&self, sample: PowerSample) {
        let mut samples = self.lock();
        if samples
            .back()
            .is_some_and(|last| last.at_unix_ms > sample.at_unix_ms)
        {
            return;
        }
        if samples.len() == self.capacity {
            samples.pop_front();
        }
        samples.push_back(sample);
    }

    /// Every sample, oldest first.
    pub fn samples(&self) -> Vec<PowerSample> {
        self.lock().iter().copied().collect()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, VecDeque<PowerSample>> {
        // A panic while holding the lock cannot leave the ring inconsistent (push/pop are
        // whole), so a poisoned lock is still usable.
        self.samples
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Samples the power view every `every` until `shutdown` (or until power control stops
    /// publishing), starting with one sample at once.
    pub async fn run(
        self: Arc<Self>,
        mut view: watch::Receiver<Arc<PowerView>>,
        every: Duration,
        shutdown: CancellationToken,
    ) {
        let mut tick = tokio::time::interval(every);
        // After a stall, one sample now rather than a burst of identical ones.
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tick.tick() => {}
            }
            if view.has_changed().is_err() {
                // The controller has stopped: nothing new will come.
                return;
            }
            let snapshot = view.borrow_and_update().snapshot.clone();
            self.record(PowerSample::of(&snapshot, unix_ms()));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(ms: u64, mining: f64) -> PowerSample {
        PowerSample {
            at_unix_ms: ms,
            mining_kw: mining,
            gpu_granted_kw: 0.0,
            gpu_in_use_kw: 0.0,
            cap_kw: 10.0,
            site_cap_kw: 10.0,
        }
    }

    #[test]
    fn the_ring_keeps_the_newest_samples_in_order() {
        let h = PowerHistory::new(3);
        for i in 0..5 {
            h.record(at(i * 10, i as f64));
        }
        let got: Vec<u64> = h.samples().iter().map(|s| s.at_unix_ms).collect();
        assert_eq!(got, vec![20, 30, 40]);
        assert_eq!(h.capacity(), 3);
    }

    #[test]
    fn a_sample_from_before_the_newest_is_ignored() {
        let h = PowerHistory::new(4);
        h.record(at(100, 1.0));
        h.record(at(50, 2.0));
        h.record(at(100, 3.0));
        let got: Vec<f64> = h.samples().iter().map(|s| s.mining_kw).collect();
        assert_eq!(got, vec![1.0, 3.0]);
    }

    #[test]
    fn the_standard_history_holds_six_hours_of_ten_second_samples() {
        assert_eq!(PowerHistory::standard().capacity(), 2160);
        assert_eq!(PowerHistory::new(0).capacity(), 1);
    }

    #[tokio::test]
    async fn the_sampler_records_periodically_and_stops_on_shutdown() {
        use crate::control::arbiter::{Arbiter, Settings, Watts};
        let settings = Settings {
            site_cap: Watts::from_kw(10.0),
            headroom: Watts::ZERO,
            resume_batch: 1,
            resume_interval: Duration::from_secs(1),
            confirm_deadline: Duration::from_secs(10),
            wake_deadline: Duration::from_secs(10),
            hysteresis: Watts::ZERO,
            ..Settings::new(Watts::from_kw(10.0))
        };
        let arbiter = Arbiter::new(settings, Duration::ZERO).expect("valid settings");
        let (_tx, rx) = watch::channel(Arc::new(PowerView {
            snapshot: arbiter.snapshot(),
            rigs: Default::default(),
            conn_rigs: Default::default(),
            gpu_shed: Default::default(),
            pdu_cuts: Default::default(),
        }));
        let h = PowerHistory::new(100);
        let stop = CancellationToken::new();
        let task = tokio::spawn(h.clone().run(rx, Duration::from_millis(10), stop.clone()));
        tokio::time::timeout(Duration::from_secs(10), async {
            while h.samples().len() < 3 {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        })
        .await
        .expect("three samples");
        stop.cancel();
        tokio::time::timeout(Duration::from_secs(1), task)
            .await
            .expect("the sampler stops")
            .expect("no panic");
        let samples = h.samples();
        let after = h.samples().len();
        tokio::time::sleep(Duration::from_millis(30)).await;
        assert_eq!(h.samples().len(), after, "no sample after shutdown");
        assert!(samples.iter().all(|s| s.site_cap_kw == 10.0));
    }
}
