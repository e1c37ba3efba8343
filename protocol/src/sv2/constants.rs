//! Message type numbers, `SetupConnection` flags and error-code strings (sv2-spec 03 §3.6,
//! 05 §5.3, 08 "Message Types").
//!
//! Message types and channel bits: spec 08 and SRI (`common_messages_sv2` 9.0.0,
//! `mining_sv2` 12.0.0) agree for every Common and Mining message. Error codes: the current
//! spec (§3.5) leaves the list to implementations, so the strings here are the ones SRI
//! sends, which is what a pool or a miner built on SRI will send us or expect from us.

/// Message type numbers (`msg_type`) of the Common and Mining protocols (extension 0).
pub mod msg_type {
    /// `SetupConnection`.
    pub const SETUP_CONNECTION: u8 = 0x00;
    /// `SetupConnection.Success`.
    pub const SETUP_CONNECTION_SUCCESS: u8 = 0x01;
    /// `SetupConnection.Error`.
    pub const SETUP_CONNECTION_ERROR: u8 = 0x02;
    /// `ChannelEndpointChanged`.
    pub const CHANNEL_ENDPOINT_CHANGED: u8 = 0x03;
    /// `Reconnect`.
    pub const RECONNECT: u8 = 0x04;
    /// `OpenStandardMiningChannel`.
    pub const OPEN_STANDARD_MINING_CHANNEL: u8 = 0x10;
    /// `OpenStandardMiningChannel.Success`.
    pub const OPEN_STANDARD_MINING_CHANNEL_SUCCESS: u8 = 0x11;
    /// `OpenMiningChannel.Error`.
    pub const OPEN_MINING_CHANNEL_ERROR: u8 = 0x12;
    /// `OpenExtendedMiningChannel`.
    pub const OPEN_EXTENDED_MINING_CHANNEL: u8 = 0x13;
    /// `OpenExtendedMiningChannel.Success`.
    pub const OPEN_EXTENDED_MINING_CHANNEL_SUCCESS: u8 = 0x14;
    /// `NewMiningJob`.
    pub const NEW_MINING_JOB: u8 = 0x15;
    /// `UpdateChannel`.
    pub const UPDATE_CHANNEL: u8 = 0x16;
    /// `UpdateChannel.Error`.
    pub const UPDATE_CHANNEL_ERROR: u8 = 0x17;
    /// `CloseChannel`.
    pub const CLOSE_CHANNEL: u8 = 0x18;
    /// `SetExtranoncePrefix`.
    pub const SET_EXTRANONCE_PREFIX: u8 = 0x19;
    /// `SubmitSharesStandard`.
    pub const SUBMIT_SHARES_STANDARD: u8 = 0x1a;
    /// `SubmitSharesExtended`.
    pub const SUBMIT_SHARES_EXTENDED: u8 = 0x1b;
    /// `SubmitShares.Success`.
    pub const SUBMIT_SHARES_SUCCESS: u8 = 0x1c;
    /// `SubmitShares.Error`.
    pub const SUBMIT_SHARES_ERROR: u8 = 0x1d;
    // 0x1e is reserved by the spec.
    /// `NewExtendedMiningJob`.
    pub const NEW_EXTENDED_MINING_JOB: u8 = 0x1f;
    /// `SetNewPrevHash` (Mining protocol; the Template Distribution one is 0x72).
    pub const SET_NEW_PREV_HASH: u8 = 0x20;
    /// `SetTarget`.
    pub const SET_TARGET: u8 = 0x21;
    /// `SetCustomMiningJob`.
    pub const SET_CUSTOM_MINING_JOB: u8 = 0x22;
    /// `SetCustomMiningJob.Success`.
    pub const SET_CUSTOM_MINING_JOB_SUCCESS: u8 = 0x23;
    /// `SetCustomMiningJob.Error`.
    pub const SET_CUSTOM_MINING_JOB_ERROR: u8 = 0x24;
    /// `SetGroupChannel`.
    pub const SET_GROUP_CHANNEL: u8 = 0x25;
}

/// `SetupConnection.flags` (and `SetupConnection.Error.flags`) for the Mining protocol,
/// sv2-spec 05 §5.3.1. Bit 0 is the least significant bit of the U32.
pub mod setup_flags {
    /// The downstream node requires standard jobs and cannot process extended jobs.
    pub const REQUIRES_STANDARD_JOBS: u32 = 1 << 0;
    /// The client will send `SetCustomMiningJob` on this connection.
    pub const REQUIRES_WORK_SELECTION: u32 = 1 << 1;
    /// The client requires version rolling; the server must not send jobs that forbid it.
    pub const REQUIRES_VERSION_ROLLING: u32 = 1 << 2;
}

/// `SetupConnection.Success.flags` for the Mining protocol, sv2-spec 05 §5.3.1.
pub mod setup_success_flags {
    /// The upstream node accepts no change to the version field.
    pub const REQUIRES_FIXED_VERSION: u32 = 1 << 0;
    /// The upstream node refuses standard channels.
    pub const REQUIRES_EXTENDED_CHANNELS: u32 = 1 << 1;
}

/// Error codes (`error_code` strings). Unknown codes must be logged and otherwise ignored
/// (sv2-spec 03 §3.5).
pub mod error_code {
    /// `SetupConnection.Error` codes.
    pub mod setup_connection {
        /// Some requested feature flags are not supported (they are listed in `flags`).
        pub const UNSUPPORTED_FEATURE_FLAGS: &str = "unsupported-feature-flags";
        /// The requested (sub)protocol is not served here.
        pub const UNSUPPORTED_PROTOCOL: &str = "unsupported-protocol";
        /// No common protocol version.
        pub const PROTOCOL_VERSION_MISMATCH: &str = "protocol-version-mismatch";
        /// Job Declaration: the declare-tx-data flag is required.
        pub const MISSING_DECLARE_TX_DATA_FLAG: &str = "missing-declare-tx-data-flag";
    }

    /// `OpenMiningChannel.Error` codes.
    pub mod open_mining_channel {
        /// Unknown user.
        pub const UNKNOWN_USER: &str = "unknown-user";
        /// The user identity is malformed or not authorised.
        pub const INVALID_USER_IDENTITY: &str = "invalid-user-identity";
        /// The nominal hash rate is unacceptable.
        pub const INVALID_NOMINAL_HASHRATE: &str = "invalid-nominal-hashrate";
        /// `max_target` is out of the acceptable range.
        pub const MAX_TARGET_OUT_OF_RANGE: &str = "max-target-out-of-range";
        /// The server cannot open more channels.
        pub const CHANNEL_CAPACITY_EXHAUSTED: &str = "channel-capacity-exhausted";
        /// `min_extranonce_size` is more than the server can give.
        pub const MIN_EXTRANONCE_SIZE_TOO_LARGE: &str = "min-extranonce-size-too-large";
        /// `min_extranonce_size` is not supported.
        pub const UNSUPPORTED_MIN_EXTRANONCE_SIZE: &str = "unsupported-min-extranonce-size";
        /// A standard channel was requested on a custom-work connection.
        pub const STANDARD_CHANNELS_NOT_SUPPORTED_FOR_CUSTOM_WORK: &str =
            "standard-channels-not-supported-for-custom-work";
        /// An extended channel was requested on a connection that asked for standard jobs.
        pub const EXTENDED_CHANNELS_NOT_SUPPORTED_FOR_STANDARD_JOBS: &str =
            "extended-channels-not-supported-for-standard-jobs";
    }

    /// `UpdateChannel.Error` codes.
    pub mod update_channel {
        /// `maximum_target` is out of the acceptable range.
        pub const MAX_TARGET_OUT_OF_RANGE: &str = "max-target-out-of-range";
        /// The nominal hash rate is unacceptable.
        pub const INVALID_NOMINAL_HASHRATE: &str = "invalid-nominal-hashrate";
        /// No such channel.
        pub const INVALID_CHANNEL_ID: &str = "invalid-channel-id";
    }

    /// `SubmitShares.Error` codes.
    pub mod submit_shares {
        /// No such channel.
        pub const INVALID_CHANNEL_ID: &str = "invalid-channel-id";
        /// The share does not hash correctly or is otherwise invalid.
        pub const INVALID_SHARE: &str = "invalid-share";
        /// The share is for a job that is no longer valid.
        pub const STALE_SHARE: &str = "stale-share";
        /// No such job on this channel.
        pub const INVALID_JOB_ID: &str = "invalid-job-id";
        /// The hash does not meet the channel target.
        pub const DIFFICULTY_TOO_LOW: &str = "difficulty-too-low";
        /// The share was already submitted.
        pub const DUPLICATE_SHARE: &str = "duplicate-share";
        /// The extranonce has the wrong length for the channel.
        pub const BAD_EXTRANONCE_SIZE: &str = "bad-extranonce-size";
        /// The version field was rolled though the job forbids it.
        pub const VERSION_ROLLING_NOT_ALLOWED: &str = "version-rolling-not-allowed";
        /// A version bit outside the rollable mask was changed.
        pub const INVALID_NON_ROLLABLE_VERSION_BIT: &str = "invalid-non-rollable-version-bit";
    }

    /// `SetCustomMiningJob.Error` codes.
    pub mod set_custom_mining_job {
        /// The server does not accept custom jobs.
        pub const JD_NOT_SUPPORTED: &str = "jd-not-supported";
        /// No such channel.
        pub const INVALID_CHANNEL_ID: &str = "invalid-channel-id";
        /// The mining job token is unknown or invalid.
        pub const INVALID_MINING_JOB_TOKEN: &str = "invalid-mining-job-token";
        /// The declared job has not been validated yet.
        pub const JOB_NOT_YET_VALIDATED: &str = "job-not-yet-validated";
        /// `prev_hash` is not the current chain tip.
        pub const STALE_CHAIN_TIP: &str = "stale-chain-tip";
        /// `min_ntime` is invalid.
        pub const INVALID_MIN_NTIME: &str = "invalid-min-ntime";
        /// `nbits` is invalid.
        pub const INVALID_NBITS: &str = "invalid-nbits";
        /// `version` is invalid.
        pub const INVALID_VERSION: &str = "invalid-version";
        /// The coinbase transaction is invalid.
        pub const INVALID_COINBASE_TX: &str = "invalid-coinbase-tx";
        /// The coinbase transaction version is invalid.
        pub const INVALID_COINBASE_TX_VERSION: &str = "invalid-coinbase-tx-version";
        /// The coinbase prefix is invalid.
        pub const INVALID_COINBASE_PREFIX: &str = "invalid-coinbase-prefix";
        /// The coinbase input nSequence is invalid.
        pub const INVALID_COINBASE_TX_INPUT_N_SEQUENCE: &str =
            "invalid-coinbase-tx-input-n-sequence";
        /// The coinbase outputs are invalid.
        pub const INVALID_COINBASE_TX_OUTPUTS: &str = "invalid-coinbase-tx-outputs";
        /// The coinbase locktime is invalid.
        pub const INVALID_COINBASE_TX_LOCKTIME: &str = "invalid-coinbase-tx-locktime";
        /// The merkle path is invalid.
        pub const INVALID_MERKLE_PATH: &str = "invalid-merkle-path";
    }
}
