//! Why a share was refused, and how each protocol says so.
//!
//! Every [`Rejection`] is answered with an error reply to the miner; none of them by itself
//! warrants dropping the connection (a proxy may count them and drop a miner that sends
//! mostly garbage, but that policy lives above this crate).
//!
//! SV1 codes follow the de-facto stratum table (20 other, 21 job not found / stale,
//! 22 duplicate, 23 low difficulty). SV2 codes are the `SubmitShares.Error.error_code`
//! strings of sv2-spec 05 ("invalid-job-id", "stale-share", "difficulty-too-low", …) and,
//! for the cases the spec leaves open, the constants the reference implementation uses
//! (`mining_sv2` 12: "duplicate-share", "bad-extranonce-size",
//! "invalid-non-rollable-version-bit", "version-rolling-not-allowed", "invalid-share").

/// SV1 error code: other / unknown.
pub const SV1_OTHER: i32 = 20;
/// SV1 error code: job not found (= stale).
pub const SV1_JOB_NOT_FOUND: i32 = 21;
/// SV1 error code: duplicate share.
pub const SV1_DUPLICATE: i32 = 22;
/// SV1 error code: low difficulty share.
pub const SV1_LOW_DIFFICULTY: i32 = 23;

/// A share the validator refused. The miner gets an error reply; the connection stays.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum Rejection {
    /// The job id was never seen (or retired so long ago it was forgotten). Error reply.
    #[error("unknown job {job_id}")]
    UnknownJob {
        /// The submitted job id.
        job_id: u32,
    },
    /// The job was known but has been superseded (a clean job or a full job window).
    /// Error reply.
    #[error("stale share for job {job_id}")]
    StaleJob {
        /// The submitted job id.
        job_id: u32,
    },
    /// The same header was already accepted for this job. Error reply.
    #[error("duplicate share")]
    Duplicate,
    /// The header hash does not meet the target in force when the job was sent.
    /// Error reply.
    #[error("low difficulty share: {achieved} < {required}")]
    LowDifficulty {
        /// Difficulty the hash achieved.
        achieved: f64,
        /// Difficulty the job required.
        required: f64,
    },
    /// ntime is outside `[job ntime, job ntime + window]`. Error reply.
    #[error("ntime {ntime} outside [{min}, {max}]")]
    NtimeOutOfRange {
        /// Submitted ntime.
        ntime: u32,
        /// Earliest allowed (the job's ntime).
        min: u32,
        /// Latest allowed.
        max: u32,
    },
    /// The version changes bits outside the negotiated rolling mask (BIP310/BIP320).
    /// Error reply.
    #[error("version bits {version:#010x} outside mask {mask:#010x}")]
    VersionBitsOutsideMask {
        /// The submitted version (SV2) or version bits (SV1).
        version: u32,
        /// The mask in force.
        mask: u32,
    },
    /// The extranonce (SV1 extranonce2) has the wrong length. Error reply.
    #[error("extranonce is {got} bytes, expected {expected}")]
    WrongExtranonceSize {
        /// Negotiated size.
        expected: usize,
        /// Submitted size.
        got: usize,
    },
    /// The job already holds the configured maximum of accepted shares, so duplicates could
    /// no longer be detected within the memory bound. Error reply; a miner that hits this
    /// needs a higher difficulty.
    #[error("too many shares for one job")]
    TooManyShares,
}

impl Rejection {
    /// The SV1 `mining.submit` error code.
    pub fn sv1_code(&self) -> i32 {
        match self {
            Rejection::UnknownJob { .. } | Rejection::StaleJob { .. } => SV1_JOB_NOT_FOUND,
            Rejection::Duplicate => SV1_DUPLICATE,
            Rejection::LowDifficulty { .. } => SV1_LOW_DIFFICULTY,
            Rejection::NtimeOutOfRange { .. }
            | Rejection::VersionBitsOutsideMask { .. }
            | Rejection::WrongExtranonceSize { .. }
            | Rejection::TooManyShares => SV1_OTHER,
        }
    }

    /// The SV1 error message conventionally paired with [`Self::sv1_code`].
    pub fn sv1_message(&self) -> &'static str {
        match self {
            Rejection::UnknownJob { .. } | Rejection::StaleJob { .. } => "Job not found",
            Rejection::Duplicate => "Duplicate share",
            Rejection::LowDifficulty { .. } => "Low difficulty share",
            Rejection::NtimeOutOfRange { .. } => "ntime out of range",
            Rejection::VersionBitsOutsideMask { .. } => "Invalid version bits",
            Rejection::WrongExtranonceSize { .. } => "Incorrect size of extranonce2",
            Rejection::TooManyShares => "Too many shares for job",
        }
    }

    /// The SV2 `SubmitShares.Error.error_code` string.
    pub fn sv2_error_code(&self) -> &'static str {
        match self {
            Rejection::UnknownJob { .. } => "invalid-job-id",
            Rejection::StaleJob { .. } => "stale-share",
            Rejection::Duplicate => "duplicate-share",
            Rejection::LowDifficulty { .. } => "difficulty-too-low",
            Rejection::VersionBitsOutsideMask { mask: 0, .. } => "version-rolling-not-allowed",
            Rejection::VersionBitsOutsideMask { .. } => "invalid-non-rollable-version-bit",
            Rejection::WrongExtranonceSize { .. } => "bad-extranonce-size",
            Rejection::NtimeOutOfRange { .. } | Rejection::TooManyShares => "invalid-share",
        }
    }
}

/// SV2 error code for a share on a channel id the server does not know (sv2-spec 05). The
/// validator is per channel and never produces it; the channel router does.
pub const SV2_INVALID_CHANNEL_ID: &str = "invalid-channel-id";

#[cfg(test)]
mod tests {
    use super::*;

    fn all() -> Vec<Rejection> {
        vec![
            Rejection::UnknownJob { job_id: 1 },
            Rejection::StaleJob { job_id: 1 },
            Rejection::Duplicate,
            Rejection::LowDifficulty {
                achieved: 1.0,
                required: 2.0,
            },
            Rejection::NtimeOutOfRange {
                ntime: 1,
                min: 2,
                max: 3,
            },
            Rejection::VersionBitsOutsideMask {
                version: 1,
                mask: 0x1fffe000,
            },
            Rejection::VersionBitsOutsideMask {
                version: 1,
                mask: 0,
            },
            Rejection::WrongExtranonceSize {
                expected: 4,
                got: 3,
            },
            Rejection::TooManyShares,
        ]
    }

    #[test]
    fn sv1_codes() {
        let codes: Vec<i32> = all().iter().map(Rejection::sv1_code).collect();
        assert_eq!(codes, vec![21, 21, 22, 23, 20, 20, 20, 20, 20]);
        assert!(all().iter().all(|r| !r.sv1_message().is_empty()));
    }

    /// The strings must be the ones SRI (the reference implementation) sends and expects.
    #[test]
    fn sv2_codes_match_the_reference_implementation() {
        use mining_sv2 as sri;
        let codes: Vec<&str> = all().iter().map(Rejection::sv2_error_code).collect();
        assert_eq!(
            codes,
            vec![
                sri::ERROR_CODE_SUBMIT_SHARES_INVALID_JOB_ID,
                sri::ERROR_CODE_SUBMIT_SHARES_STALE_SHARE,
                sri::ERROR_CODE_SUBMIT_SHARES_DUPLICATE_SHARE,
                sri::ERROR_CODE_SUBMIT_SHARES_DIFFICULTY_TOO_LOW,
                sri::ERROR_CODE_SUBMIT_SHARES_INVALID_SHARE,
                sri::ERROR_CODE_SUBMIT_SHARES_INVALID_NON_ROLLABLE_VERSION_BIT,
                sri::ERROR_CODE_VERSION_ROLLING_NOT_ALLOWED,
                sri::ERROR_CODE_SUBMIT_SHARES_BAD_EXTRANONCE_SIZE,
                sri::ERROR_CODE_SUBMIT_SHARES_INVALID_SHARE,
            ]
        );
        assert_eq!(
            SV2_INVALID_CHANNEL_ID,
            sri::ERROR_CODE_SUBMIT_SHARES_INVALID_CHANNEL_ID
        );
    }
}
