//! Wall-clock time as Unix seconds and milliseconds: the one place the proxy turns the system
//! clock into numbers.
//!
//! Intervals and timeouts use monotonic time (`Instant`, tokio's clock); this module is only
//! for values that leave the process or must survive a restart: audit and history stamps,
//! persisted power deadlines, SV2 certificate windows, a miner's last-share time.
//!
//! Nothing here panics or wraps: a clock set before 1970 reads as zero, and a value past the
//! range of the result type reads as that type's maximum.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Time since the Unix epoch now; zero if the system clock is set before 1970.
pub fn since_epoch() -> Duration {
    since_epoch_at(SystemTime::now())
}

/// `at` as time since the Unix epoch; zero if it is before 1970.
pub fn since_epoch_at(at: SystemTime) -> Duration {
    at.duration_since(UNIX_EPOCH).unwrap_or_default()
}

/// Unix seconds now.
pub fn unix_secs() -> u64 {
    since_epoch().as_secs()
}

/// Unix seconds now as the 32-bit field SV2 certificates carry; saturates in 2106.
pub fn unix_secs_u32() -> u32 {
    u32::try_from(unix_secs()).unwrap_or(u32::MAX)
}

/// Unix milliseconds now.
pub fn unix_ms() -> u64 {
    millis(since_epoch())
}

/// Whole milliseconds in `d`, saturating at `u64::MAX` (some 584 million years).
fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn before_1970_reads_as_zero() {
        let early = UNIX_EPOCH - Duration::from_secs(5);
        assert_eq!(since_epoch_at(early), Duration::ZERO);
        assert_eq!(since_epoch_at(UNIX_EPOCH), Duration::ZERO);
    }

    #[test]
    fn known_instants_convert() {
        let t = UNIX_EPOCH + Duration::from_millis(1_795_309_323_456);
        assert_eq!(since_epoch_at(t).as_secs(), 1_795_309_323);
        assert_eq!(millis(since_epoch_at(t)), 1_795_309_323_456);
    }

    #[test]
    fn millis_saturate() {
        assert_eq!(millis(Duration::MAX), u64::MAX);
        assert_eq!(millis(Duration::from_millis(7)), 7);
    }

    #[test]
    fn now_is_after_the_code_was_written() {
        // 2026-01-01: a clock reading earlier than this is broken or the conversion is.
        assert!(unix_secs() > 1_767_225_600);
        assert!(unix_ms() / 1000 >= unix_secs().saturating_sub(1));
        assert!(u64::from(unix_secs_u32()) >= 1_767_225_600);
    }
}
