//! Why shares were rejected, counted per reason.
//!
//! A fixed set of reasons (an array of atomics, no map and no allocation on the hot path):
//! the proxy's own verdicts map from [`Rejection`], a pool's from its Stratum error code (or
//! SV2 error string), so an operator sees the same vocabulary for both.

use std::sync::atomic::{AtomicU64, Ordering};

use hashshift_protocol::share::Rejection;

/// A reason a share was refused or not credited.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum RejectReason {
    /// Hash above the target.
    LowDifficulty,
    /// Same share already accepted.
    Duplicate,
    /// Job superseded (clean job or too old).
    StaleJob,
    /// Job id never issued.
    UnknownJob,
    /// ntime outside the allowed window.
    Ntime,
    /// Version bits outside the negotiated mask.
    VersionBits,
    /// extranonce2 of the wrong size.
    ExtranonceSize,
    /// Worker not authorized on this connection.
    Unauthorized,
    /// Submit before subscribe / open channel.
    NotSubscribed,
    /// Anything else (including "too many shares" and unparseable submits).
    Other,
    /// Never answered by the pool: connection lost, timeout, queue full.
    Lost,
}

impl RejectReason {
    /// Every reason, in the order of [`RejectCounts`].
    pub const ALL: [RejectReason; 11] = [
        RejectReason::LowDifficulty,
        RejectReason::Duplicate,
        RejectReason::StaleJob,
        RejectReason::UnknownJob,
        RejectReason::Ntime,
        RejectReason::VersionBits,
        RejectReason::ExtranonceSize,
        RejectReason::Unauthorized,
        RejectReason::NotSubscribed,
        RejectReason::Other,
        RejectReason::Lost,
    ];

    /// A stable snake_case name (logs, metrics labels, admin output).
    pub fn as_str(self) -> &'static str {
        match self {
            RejectReason::LowDifficulty => "low_difficulty",
            RejectReason::Duplicate => "duplicate",
            RejectReason::StaleJob => "stale_job",
            RejectReason::UnknownJob => "unknown_job",
            RejectReason::Ntime => "ntime",
            RejectReason::VersionBits => "version_bits",
            RejectReason::ExtranonceSize => "extranonce_size",
            RejectReason::Unauthorized => "unauthorized",
            RejectReason::NotSubscribed => "not_subscribed",
            RejectReason::Other => "other",
            RejectReason::Lost => "lost",
        }
    }

    /// The reason for a pool's SV1 error code. Code 21 ("job not found") is how pools
    /// report stale shares.
    pub fn from_sv1_code(code: i64) -> RejectReason {
        match code {
            21 => RejectReason::StaleJob,
            22 => RejectReason::Duplicate,
            23 => RejectReason::LowDifficulty,
            24 => RejectReason::Unauthorized,
            25 => RejectReason::NotSubscribed,
            _ => RejectReason::Other,
        }
    }

    /// The reason for an SV2 `SubmitShares.Error` code string.
    pub fn from_sv2_code(code: &str) -> RejectReason {
        match code {
            "difficulty-too-low" => RejectReason::LowDifficulty,
            "duplicate-share" => RejectReason::Duplicate,
            "stale-share" => RejectReason::StaleJob,
            "invalid-job-id" => RejectReason::UnknownJob,
            "version-rolling-not-allowed" | "invalid-non-rollable-version-bit" => {
                RejectReason::VersionBits
            }
            "bad-extranonce-size" => RejectReason::ExtranonceSize,
            "invalid-channel-id" => RejectReason::NotSubscribed,
            _ => RejectReason::Other,
        }
    }

    fn index(self) -> usize {
        RejectReason::ALL
            .iter()
            .position(|r| *r == self)
            .unwrap_or(RejectReason::ALL.len() - 1)
    }
}

impl From<&Rejection> for RejectReason {
    fn from(r: &Rejection) -> Self {
        match r {
            Rejection::UnknownJob { .. } => RejectReason::UnknownJob,
            Rejection::StaleJob { .. } => RejectReason::StaleJob,
            Rejection::Duplicate => RejectReason::Duplicate,
            Rejection::LowDifficulty { .. } => RejectReason::LowDifficulty,
            Rejection::NtimeOutOfRange { .. } => RejectReason::Ntime,
            Rejection::VersionBitsOutsideMask { .. } => RejectReason::VersionBits,
            Rejection::WrongExtranonceSize { .. } => RejectReason::ExtranonceSize,
            _ => RejectReason::Other,
        }
    }
}

impl std::fmt::Display for RejectReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One counter per [`RejectReason`].
#[derive(Debug, Default)]
pub struct RejectCounts([AtomicU64; RejectReason::ALL.len()]);

impl RejectCounts {
    /// Counts one share refused for `reason`.
    pub fn add(&self, reason: RejectReason) {
        self.0[reason.index()].fetch_add(1, Ordering::Relaxed);
    }

    /// The count for `reason`.
    pub fn get(&self, reason: RejectReason) -> u64 {
        self.0[reason.index()].load(Ordering::Relaxed)
    }

    /// Non-zero counts, by reason.
    pub fn non_zero(&self) -> Vec<(RejectReason, u64)> {
        RejectReason::ALL
            .iter()
            .map(|r| (*r, self.get(*r)))
            .filter(|(_, n)| *n > 0)
            .collect()
    }
}

/// The difficulty of refused shares, per [`RejectReason`] (where the difficulty is known: a
/// pool connection's verdicts).
#[derive(Debug, Default)]
pub struct RejectDifficulty([super::AtomicF64; RejectReason::ALL.len()]);

impl RejectDifficulty {
    /// Adds `difficulty` refused for `reason`.
    pub fn add(&self, reason: RejectReason, difficulty: f64) {
        self.0[reason.index()].add(difficulty);
    }

    /// The difficulty refused for `reason`.
    pub fn get(&self, reason: RejectReason) -> f64 {
        self.0[reason.index()].get()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_reason_has_its_own_counter() {
        let counts = RejectCounts::default();
        for (i, r) in RejectReason::ALL.iter().enumerate() {
            for _ in 0..=i {
                counts.add(*r);
            }
        }
        for (i, r) in RejectReason::ALL.iter().enumerate() {
            assert_eq!(counts.get(*r), i as u64 + 1, "{r}");
        }
        assert_eq!(counts.non_zero().len(), RejectReason::ALL.len());
    }

    #[test]
    fn pool_codes_map_to_reasons() {
        assert_eq!(RejectReason::from_sv1_code(23), RejectReason::LowDifficulty);
        assert_eq!(RejectReason::from_sv1_code(21), RejectReason::StaleJob);
        assert_eq!(RejectReason::from_sv1_code(-1), RejectReason::Other);
        assert_eq!(
            RejectReason::from_sv2_code("difficulty-too-low"),
            RejectReason::LowDifficulty
        );
        assert_eq!(RejectReason::from_sv2_code("whatever"), RejectReason::Other);
    }
}
