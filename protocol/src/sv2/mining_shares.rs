//! Mining protocol share submission and its responses (sv2-spec 05 §5.3.11–§5.3.14).
//!
//! These are the hot path of a proxy: `SubmitSharesStandard` and `SubmitSharesExtended`
//! decode without heap allocation (the extranonce is an inline [`B032`]) and
//! `SubmitSharesSuccess` encodes as one fixed-size write. Field lists match the spec and
//! SRI's `mining_sv2` 12.0.0.

use super::bounded::{B032, Str0255};

sv2_struct! {
    /// `SubmitSharesStandard` (0x1a, client → server, channel message).
    pub struct SubmitSharesStandard {
        /// Channel id.
        pub channel_id: u32,
        /// Sequence number of the submit within the channel.
        pub sequence_number: u32,
        /// Job id.
        pub job_id: u32,
        /// Header nonce.
        pub nonce: u32,
        /// Header nTime.
        pub ntime: u32,
        /// Full header nVersion.
        pub version: u32,
    }
}

sv2_struct! {
    /// `SubmitSharesExtended` (0x1b, client → server, channel message).
    pub struct SubmitSharesExtended {
        /// Channel id.
        pub channel_id: u32,
        /// Sequence number of the submit within the channel.
        pub sequence_number: u32,
        /// Job id.
        pub job_id: u32,
        /// Header nonce.
        pub nonce: u32,
        /// Header nTime.
        pub ntime: u32,
        /// Full header nVersion.
        pub version: u32,
        /// Extranonce bytes after the channel's extranonce prefix.
        pub extranonce: B032,
    }
}

sv2_struct! {
    /// `SubmitShares.Success` (0x1c, server → client, channel message); may acknowledge a
    /// batch of submits.
    pub struct SubmitSharesSuccess {
        /// Channel id.
        pub channel_id: u32,
        /// Most recent sequence number with a correct result.
        pub last_sequence_number: u32,
        /// Submits acknowledged in this batch.
        pub new_submits_accepted_count: u32,
        /// Sum of the difficulties of the acknowledged shares.
        pub new_shares_sum: u64,
    }
}

sv2_struct! {
    /// `SubmitShares.Error` (0x1d, server → client, channel message).
    pub struct SubmitSharesError {
        /// Channel id.
        pub channel_id: u32,
        /// Sequence number of the rejected submit.
        pub sequence_number: u32,
        /// See [`error_code::submit_shares`](super::constants::error_code::submit_shares).
        pub error_code: Str0255,
    }
}
