//! Variable difficulty: steer each miner toward a configured share rate.
//!
//! A sans-IO controller: [`Vardiff::on_share`] records accepted work, [`Vardiff::poll`] is
//! called periodically (and after shares) with `now` and answers with a new difficulty when
//! one is due. The session that owns it sends `set_difficulty` (or SV2 `SetTarget`) and then a
//! job carrying that difficulty, in that order, from its own task, so the two never reorder.
//!
//! The estimate is the miner's hashrate over the current window: accepted difficulty × 2^32
//! per second. The controller retargets when a window has enough evidence and the ideal
//! difficulty is outside a dead band around the current one, so a miner at the right
//! difficulty is left alone; it reacts early to a miner flooding shares (a new, fast rig at a
//! low starting difficulty) and halves the difficulty of one that has gone quiet.

use std::time::{Duration, Instant};

/// Settings for one miner's controller, already validated (`0 < min <= initial <= max`).
#[derive(Clone, Copy, Debug)]
pub struct VardiffSettings {
    /// Lowest difficulty.
    pub min: f64,
    /// Highest difficulty.
    pub max: f64,
    /// Share rate to steer toward.
    pub shares_per_minute: f64,
}

/// Shortest window over which a retarget is considered.
const MIN_WINDOW: Duration = Duration::from_secs(15);
/// Window length after which the estimate is used whatever the share count.
const FULL_WINDOW: Duration = Duration::from_secs(120);
/// Shares that make a window trustworthy before `FULL_WINDOW`.
const EVIDENCE_SHARES: u32 = 12;
/// Retarget only if the ideal difficulty is outside [current / BAND, current * BAND].
const BAND: f64 = 1.5;
/// A miner sending this many times the wanted rate is retargeted at once (after 2 s).
const FLOOD_FACTOR: f64 = 4.0;

/// One miner's vardiff state.
#[derive(Clone, Debug)]
pub struct Vardiff {
    settings: VardiffSettings,
    current: f64,
    /// Floor requested by the miner (`minimum-difficulty`), clamped to the settings.
    floor: f64,
    window_start: Instant,
    window_difficulty: f64,
    window_shares: u32,
}

impl Vardiff {
    /// Starts a controller at `initial` (clamped to the settings).
    pub fn new(settings: VardiffSettings, initial: f64, now: Instant) -> Self {
        Vardiff {
            settings,
            current: initial.clamp(settings.min, settings.max),
            floor: settings.min,
            window_start: now,
            window_difficulty: 0.0,
            window_shares: 0,
        }
    }

    /// The difficulty currently assigned.
    pub fn difficulty(&self) -> f64 {
        self.current
    }

    /// Applies a miner's `minimum-difficulty` (BIP310) within the configured bounds; returns the
    /// new difficulty if the current one had to rise.
    pub fn set_floor(&mut self, floor: f64, now: Instant) -> Option<f64> {
        if !(floor.is_finite() && floor > 0.0) {
            return None;
        }
        self.floor = floor.clamp(self.settings.min, self.settings.max);
        (self.current < self.floor).then(|| self.jump(self.floor, now))
    }

    /// Applies `mining.suggest_difficulty`: the miner's preferred difficulty, honoured within
    /// the bounds (and above the floor). Returns the new difficulty if it changed.
    pub fn suggest(&mut self, difficulty: f64, now: Instant) -> Option<f64> {
        if !(difficulty.is_finite() && difficulty > 0.0) {
            return None;
        }
        let target = difficulty.clamp(self.floor, self.settings.max);
        (target != self.current).then(|| self.jump(target, now))
    }

    /// Records an accepted share credited at `difficulty`.
    pub fn on_share(&mut self, difficulty: f64) {
        self.window_difficulty += difficulty;
        self.window_shares = self.window_shares.saturating_add(1);
    }

    /// Returns a new difficulty when one is due.
    pub fn poll(&mut self, now: Instant) -> Option<f64> {
        let elapsed = now.saturating_duration_since(self.window_start);
        let secs = elapsed.as_secs_f64();
        if secs <= 0.0 {
            return None;
        }
        let wanted_per_sec = self.settings.shares_per_minute / 60.0;
        let flooding = elapsed >= Duration::from_secs(2)
            && f64::from(self.window_shares) / secs > FLOOD_FACTOR * wanted_per_sec
            && self.window_shares >= 8;
        let enough = elapsed >= MIN_WINDOW
            && (self.window_shares >= EVIDENCE_SHARES || elapsed >= FULL_WINDOW);
        if !flooding && !enough {
            return None;
        }
        let ideal = if self.window_shares == 0 {
            // Silence over a full window: the miner is far slower than assumed.
            self.current / 2.0
        } else {
            (self.window_difficulty / secs) / wanted_per_sec
        };
        let ideal = ideal.clamp(self.floor, self.settings.max);
        if ideal > self.current / BAND && ideal < self.current * BAND {
            // Close enough: keep the difficulty, start a fresh window so old history fades.
            self.restart(now);
            return None;
        }
        (ideal != self.current).then(|| self.jump(ideal, now))
    }

    fn jump(&mut self, difficulty: f64, now: Instant) -> f64 {
        self.current = difficulty;
        self.restart(now);
        difficulty
    }

    fn restart(&mut self, now: Instant) {
        self.window_start = now;
        self.window_difficulty = 0.0;
        self.window_shares = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: VardiffSettings = VardiffSettings {
        min: 0.001,
        max: 1e9,
        shares_per_minute: 20.0,
    };

    /// Simulates a miner of `hashrate` H/s for `secs`, with shares arriving at the exact
    /// expected rate, and returns the difficulty reached.
    fn run(v: &mut Vardiff, hashrate: f64, secs: u64, start: Instant) -> f64 {
        let mut owed = 0.0;
        for s in 0..secs {
            let now = start + Duration::from_secs(s);
            owed += hashrate / (v.difficulty() * 4_294_967_296.0);
            while owed >= 1.0 {
                owed -= 1.0;
                v.on_share(v.difficulty());
            }
            v.poll(now);
        }
        v.difficulty()
    }

    #[test]
    fn converges_up_and_down_to_the_share_rate() {
        let t0 = Instant::now();
        // 100 TH/s at 20 shares/min: ideal difficulty = 1e14 * 3 / 2^32 ≈ 69,849.
        let mut v = Vardiff::new(S, 1.0, t0);
        let d = run(&mut v, 1e14, 600, t0);
        assert!((d / 69_849.0 - 1.0).abs() < 0.5, "went to {d}");
        // The same controller, now facing a 100x slower miner, comes down.
        let d = run(&mut v, 1e12, 1800, t0 + Duration::from_secs(600));
        assert!((d / 698.5 - 1.0).abs() < 0.5, "went to {d}");
    }

    #[test]
    fn respects_bounds_floor_and_suggestions() {
        let t0 = Instant::now();
        let mut v = Vardiff::new(
            VardiffSettings {
                min: 0.5,
                max: 100.0,
                shares_per_minute: 20.0,
            },
            1000.0,
            t0,
        );
        assert_eq!(v.difficulty(), 100.0);
        assert_eq!(v.suggest(0.01, t0), Some(0.5));
        assert_eq!(v.set_floor(8.0, t0), Some(8.0));
        assert_eq!(
            v.suggest(2.0, t0),
            None,
            "a suggestion below the floor is raised to it"
        );
        assert_eq!(v.suggest(f64::NAN, t0), None);
        // A tiny miner cannot drag the difficulty under the floor.
        let d = run(&mut v, 1.0, 1200, t0);
        assert_eq!(d, 8.0);
    }

    #[test]
    fn floods_are_caught_within_seconds() {
        let t0 = Instant::now();
        let mut v = Vardiff::new(S, 0.001, t0);
        for _ in 0..50 {
            v.on_share(0.001);
        }
        let d = v.poll(t0 + Duration::from_secs(3)).expect("flood retarget");
        assert!(d > 0.01, "{d}");
    }

    #[test]
    fn steady_miner_is_left_alone() {
        let t0 = Instant::now();
        let mut v = Vardiff::new(S, 698.5, t0);
        let mut changes = 0;
        for s in 0..900u64 {
            if s % 3 == 0 {
                v.on_share(698.5);
            }
            if v.poll(t0 + Duration::from_secs(s)).is_some() {
                changes += 1;
            }
        }
        assert_eq!(changes, 0);
    }
}
