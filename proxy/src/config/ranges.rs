//! The ranges a configuration value and a firmware power reading must fall in, and the power
//! arbiter's defaults the config falls back on. Plain numbers and checks with no other part
//! behind them: the config validates with them, and the control plane (`control::limits`,
//! which checks operators' requests), the power controller and the arbiter use the same ones.
//!
//! Nothing here panics, whatever the input.

use std::time::Duration;

/// Default drain margin of the power arbiter (`[power] drain_margin`): 5% on top of a shed
/// (the silent share of a fleet is usually a few percent).
pub const DEFAULT_DRAIN_MARGIN: f64 = 0.05;
/// Default time before the arbiter replaces an unconfirmed sleep (`[power]
/// replace_after_secs`): a sleep confirms in 11-20 s (firmware command, then 10 s without a
/// share); 30 s leaves time for a replacement to confirm within 60 s.
pub const DEFAULT_REPLACE_AFTER: Duration = Duration::from_secs(30);

/// Highest power one rig can draw (W); a firmware reading above is garbage (the largest
/// hydro rigs draw ~12 kW).
pub const MAX_RIG_POWER_W: f64 = 20_000.0;
/// Largest config deadline or interval (s): 7 days.
pub const MAX_DEADLINE_SECS: f64 = 7.0 * 24.0 * 3600.0;
/// Largest config poll period or quiet time (s): 1 day.
pub const MAX_POLL_SECS: f64 = 24.0 * 3600.0;

/// A firmware power reading (W) the arbiter can use: finite, > 0 and at most
/// [`MAX_RIG_POWER_W`]; otherwise why not.
pub fn rig_power_w(w: f64) -> Result<f64, String> {
    if w.is_finite() && w > 0.0 && w <= MAX_RIG_POWER_W {
        Ok(w)
    } else {
        Err(format!(
            "firmware reported {w} W, outside (0, {MAX_RIG_POWER_W}] W for one rig"
        ))
    }
}

/// Checks a config duration in seconds: finite, > 0 (≥ 0 when `zero_ok`), at most `max`.
/// The message is the reason; the caller names the key.
pub fn check_secs(v: f64, zero_ok: bool, max: f64) -> Result<(), String> {
    let low_ok = if zero_ok { v >= 0.0 } else { v > 0.0 };
    if v.is_finite() && low_ok && v <= max {
        Ok(())
    } else {
        let low = if zero_ok { ">= 0" } else { "> 0" };
        Err(format!("must be {low} and at most {max} seconds, got {v}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_seconds_are_bounded_and_never_panic() {
        assert!(check_secs(30.0, false, MAX_POLL_SECS).is_ok());
        assert!(check_secs(0.0, true, MAX_POLL_SECS).is_ok());
        for bad in [0.0, -1.0, f64::NAN, f64::INFINITY, 1e20] {
            assert!(check_secs(bad, false, MAX_DEADLINE_SECS).is_err(), "{bad}");
        }
    }
}
