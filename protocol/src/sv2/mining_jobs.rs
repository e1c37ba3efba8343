//! Mining protocol jobs (sv2-spec 05 §5.3.15–§5.3.20): standard and extended jobs, new
//! previous hashes and custom (work-selection) jobs.
//!
//! Field lists match the spec and SRI's `mining_sv2` 12.0.0. Spec/SRI naming difference:
//! the spec calls `SetCustomMiningJob`'s token `mining_job_token` and its input sequence
//! `coinbase_tx_input_nSequence`; SRI names them `token` and `coinbase_tx_input_n_sequence`.
//! The wire layout is identical; we use the spec's names in snake case.

use super::bounded::{B064K, B0255, Seq0255, Str0255};
use super::types::U256;

sv2_struct! {
    /// `NewMiningJob` (0x15, server → client, channel message): a job for a standard channel.
    ///
    /// Fixed layout apart from the OPTION: encoding it is one exactly-sized write.
    pub struct NewMiningJob {
        /// Standard channel id.
        pub channel_id: u32,
        /// Job id.
        pub job_id: u32,
        /// `None`: a future job, activated by a later `SetNewPrevHash`.
        pub min_ntime: Option<u32>,
        /// Block header version.
        pub version: u32,
        /// Merkle root for the block header.
        pub merkle_root: U256,
    }
}

sv2_struct! {
    /// `NewExtendedMiningJob` (0x1f, server → client, channel message).
    pub struct NewExtendedMiningJob {
        /// Extended or group channel id.
        pub channel_id: u32,
        /// Job id.
        pub job_id: u32,
        /// `None`: a future job, activated by a later `SetNewPrevHash`.
        pub min_ntime: Option<u32>,
        /// Block header version.
        pub version: u32,
        /// Whether the BIP320 general-purpose version bits may be rolled.
        pub version_rolling_allowed: bool,
        /// Merkle path hashes, deepest first.
        pub merkle_path: Seq0255<U256>,
        /// Coinbase bytes before the extranonce (BIP141 data stripped).
        pub coinbase_tx_prefix: B064K,
        /// Coinbase bytes after the extranonce (BIP141 data stripped).
        pub coinbase_tx_suffix: B064K,
    }
}

sv2_struct! {
    /// `SetNewPrevHash` (0x20, server → client, channel message).
    pub struct SetNewPrevHash {
        /// Channel or group channel id.
        pub channel_id: u32,
        /// The (future) job to mine on top of this prevhash.
        pub job_id: u32,
        /// Previous block hash as in the block header.
        pub prev_hash: U256,
        /// Smallest allowed nTime.
        pub min_ntime: u32,
        /// Block header nBits.
        pub nbits: u32,
    }
}

sv2_struct! {
    /// `SetCustomMiningJob` (0x22, client → server, channel message).
    pub struct SetCustomMiningJob {
        /// Extended channel id.
        pub channel_id: u32,
        /// Client-chosen id echoed in the response.
        pub request_id: u32,
        /// Token from the Job Declarator (SRI: `token`).
        pub mining_job_token: B0255,
        /// Block header version.
        pub version: u32,
        /// Previous block hash.
        pub prev_hash: U256,
        /// Smallest allowed nTime.
        pub min_ntime: u32,
        /// Block header nBits.
        pub nbits: u32,
        /// Coinbase transaction version.
        pub coinbase_tx_version: u32,
        /// Start of the coinbase input script.
        pub coinbase_prefix: B0255,
        /// Coinbase input nSequence (spec: `coinbase_tx_input_nSequence`).
        pub coinbase_tx_input_n_sequence: u32,
        /// Coinbase outputs (CompactSize-prefixed).
        pub coinbase_tx_outputs: B064K,
        /// Coinbase locktime.
        pub coinbase_tx_locktime: u32,
        /// Merkle path hashes, deepest first.
        pub merkle_path: Seq0255<U256>,
    }
}

sv2_struct! {
    /// `SetCustomMiningJob.Success` (0x23, server → client, channel message).
    pub struct SetCustomMiningJobSuccess {
        /// Extended channel id.
        pub channel_id: u32,
        /// Echo of the request's `request_id`.
        pub request_id: u32,
        /// Job id the server assigned.
        pub job_id: u32,
    }
}

sv2_struct! {
    /// `SetCustomMiningJob.Error` (0x24, server → client, channel message).
    pub struct SetCustomMiningJobError {
        /// Extended channel id.
        pub channel_id: u32,
        /// Echo of the request's `request_id`.
        pub request_id: u32,
        /// See [`error_code::set_custom_mining_job`](super::constants::error_code::set_custom_mining_job).
        pub error_code: Str0255,
    }
}
