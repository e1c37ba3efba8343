//! The simulated rig behind every fake firmware: a sans-IO power state machine, time passed in.
//!
//! Mining → (sleep) → Stopping for `sleep_delay` (still hashing and drawing full power, as a
//! real rig finishing its current work and powering boards down) → Sleeping (control board
//! only). Sleeping → (wake) → Waking for `wake_delay` (boards re-initialising like a reboot:
//! drawing power, no hashrate) → Mining. A sleep during Waking goes to Stopping; a wake during
//! Stopping cancels the sleep (back to Mining at once: the boards never went down).

use std::time::Duration;

use tokio::time::Instant;

/// What a simulated rig draws and produces, and how fast it changes state.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct RigProfile {
    /// Wall power while mining (S19 95 TH: 3,250 W).
    pub mining_power_w: f64,
    /// Wall power asleep (control board and fans idle).
    pub sleep_power_w: f64,
    /// Power while waking, before hashing starts.
    pub waking_power_w: f64,
    /// Hashrate while mining.
    pub hashrate_ths: f64,
    /// From an accepted sleep command until power actually drops.
    pub sleep_delay: Duration,
    /// From an accepted wake command until the rig hashes again.
    pub wake_delay: Duration,
}

impl Default for RigProfile {
    /// An S19 (95 TH, 3,250 W, 20 W asleep) that takes 1 s to fall asleep and 5 s to wake:
    /// real rigs take seconds and minutes, scaled down so demos and tests see every phase.
    fn default() -> Self {
        RigProfile {
            mining_power_w: 3250.0,
            sleep_power_w: 20.0,
            waking_power_w: 1200.0,
            hashrate_ths: 95.0,
            sleep_delay: Duration::from_secs(1),
            wake_delay: Duration::from_secs(5),
        }
    }
}

/// The phase a simulated rig is in.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum FakePhase {
    /// Hashing at full power.
    Mining,
    /// Sleep accepted, power not dropped yet.
    Stopping,
    /// Asleep at control-board power.
    Sleeping,
    /// Wake accepted, not hashing yet.
    Waking,
}

/// What a simulated rig reports at an instant.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct RigSnapshot {
    /// Its phase.
    pub phase: FakePhase,
    /// Wall power, watts.
    pub power_w: f64,
    /// Hashrate, TH/s.
    pub hashrate_ths: f64,
}

#[derive(Clone, Copy, Debug)]
enum Phase {
    Mining,
    Stopping { until: Instant },
    Sleeping,
    Waking { until: Instant },
}

/// The state machine. `sleep`/`wake` return false when the rig is already headed there (the
/// firmware then answers "already ...").
#[derive(Clone, Debug)]
pub struct RigModel {
    profile: RigProfile,
    phase: Phase,
}

impl RigModel {
    /// A mining rig with this profile.
    pub fn new(profile: RigProfile) -> Self {
        RigModel {
            profile,
            phase: Phase::Mining,
        }
    }

    /// The profile.
    pub fn profile(&self) -> &RigProfile {
        &self.profile
    }

    fn advance(&mut self, now: Instant) {
        match self.phase {
            Phase::Stopping { until } if now >= until => self.phase = Phase::Sleeping,
            Phase::Waking { until } if now >= until => self.phase = Phase::Mining,
            _ => {}
        }
    }

    /// Command sleep. False if already stopping or asleep.
    pub fn sleep(&mut self, now: Instant) -> bool {
        self.advance(now);
        match self.phase {
            Phase::Stopping { .. } | Phase::Sleeping => false,
            Phase::Mining | Phase::Waking { .. } => {
                self.phase = Phase::Stopping {
                    until: now + self.profile.sleep_delay,
                };
                self.advance(now);
                true
            }
        }
    }

    /// Command wake. False if already mining or waking.
    pub fn wake(&mut self, now: Instant) -> bool {
        self.advance(now);
        match self.phase {
            Phase::Mining | Phase::Waking { .. } => false,
            // The boards never went down: back to mining at once.
            Phase::Stopping { .. } => {
                self.phase = Phase::Mining;
                true
            }
            Phase::Sleeping => {
                self.phase = Phase::Waking {
                    until: now + self.profile.wake_delay,
                };
                self.advance(now);
                true
            }
        }
    }

    /// What the rig reports at `now`.
    pub fn snapshot(&mut self, now: Instant) -> RigSnapshot {
        self.advance(now);
        let p = &self.profile;
        let (phase, power_w, hashrate_ths) = match self.phase {
            Phase::Mining => (FakePhase::Mining, p.mining_power_w, p.hashrate_ths),
            Phase::Stopping { .. } => (FakePhase::Stopping, p.mining_power_w, p.hashrate_ths),
            Phase::Sleeping => (FakePhase::Sleeping, p.sleep_power_w, 0.0),
            Phase::Waking { .. } => (FakePhase::Waking, p.waking_power_w, 0.0),
        };
        RigSnapshot {
            phase,
            power_w,
            hashrate_ths,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn profile() -> RigProfile {
        RigProfile {
            sleep_delay: Duration::from_secs(2),
            wake_delay: Duration::from_secs(60),
            ..RigProfile::default()
        }
    }

    #[test]
    fn sleep_then_wake_with_delays() {
        let t0 = Instant::now();
        let mut rig = RigModel::new(profile());
        assert_eq!(rig.snapshot(t0).phase, FakePhase::Mining);
        assert!(rig.sleep(t0));
        assert!(!rig.sleep(t0 + Duration::from_secs(1)));
        let s = rig.snapshot(t0 + Duration::from_secs(1));
        assert_eq!((s.phase, s.power_w), (FakePhase::Stopping, 3250.0));
        let s = rig.snapshot(t0 + Duration::from_secs(2));
        assert_eq!(
            (s.phase, s.power_w, s.hashrate_ths),
            (FakePhase::Sleeping, 20.0, 0.0)
        );
        assert!(!rig.sleep(t0 + Duration::from_secs(3)));
        assert!(rig.wake(t0 + Duration::from_secs(10)));
        assert!(!rig.wake(t0 + Duration::from_secs(11)));
        let s = rig.snapshot(t0 + Duration::from_secs(69));
        assert_eq!((s.phase, s.hashrate_ths), (FakePhase::Waking, 0.0));
        assert_eq!(
            rig.snapshot(t0 + Duration::from_secs(70)).phase,
            FakePhase::Mining
        );
    }

    #[test]
    fn wake_while_stopping_cancels_and_zero_delays_are_immediate() {
        let t0 = Instant::now();
        let mut rig = RigModel::new(profile());
        assert!(rig.sleep(t0));
        assert!(rig.wake(t0 + Duration::from_secs(1)));
        assert_eq!(
            rig.snapshot(t0 + Duration::from_secs(5)).phase,
            FakePhase::Mining
        );
        let mut rig = RigModel::new(RigProfile {
            sleep_delay: Duration::ZERO,
            wake_delay: Duration::ZERO,
            ..profile()
        });
        assert!(rig.sleep(t0));
        assert_eq!(rig.snapshot(t0).phase, FakePhase::Sleeping);
        assert!(rig.wake(t0));
        assert_eq!(rig.snapshot(t0).phase, FakePhase::Mining);
    }
}
