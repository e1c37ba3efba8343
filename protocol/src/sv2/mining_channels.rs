//! Mining protocol channel management (sv2-spec 05 §5.3.2–§5.3.10, §5.3.21, §5.3.22):
//! opening, updating and closing channels, extranonce prefixes, targets and groups.
//!
//! Field lists match the spec and SRI's `mining_sv2` 12.0.0 exactly.

use super::bounded::{B032, Seq064K, Str0255};
use super::types::U256;

sv2_struct! {
    /// `OpenStandardMiningChannel` (0x10, client → server).
    pub struct OpenStandardMiningChannel {
        /// Client-chosen id echoed in the response.
        pub request_id: u32,
        /// Whatever the upstream needs to identify the account/worker (bytes, see [`Str0255`]).
        pub user_identity: Str0255,
        /// Expected hash rate in h/s.
        pub nominal_hash_rate: f32,
        /// Largest target the device accepts.
        pub max_target: U256,
    }
}

sv2_struct! {
    /// `OpenStandardMiningChannel.Success` (0x11, server → client).
    pub struct OpenStandardMiningChannelSuccess {
        /// Echo of the request's `request_id`.
        pub request_id: u32,
        /// The new channel's id.
        pub channel_id: u32,
        /// Initial target.
        pub target: U256,
        /// Implicit first part of the extranonce.
        pub extranonce_prefix: B032,
        /// Group channel the new channel belongs to.
        pub group_channel_id: u32,
    }
}

sv2_struct! {
    /// `OpenExtendedMiningChannel` (0x13, client → server).
    pub struct OpenExtendedMiningChannel {
        /// Client-chosen id echoed in the response.
        pub request_id: u32,
        /// Account/worker identification (bytes, see [`Str0255`]).
        pub user_identity: Str0255,
        /// Expected hash rate in h/s.
        pub nominal_hash_rate: f32,
        /// Largest target the device accepts.
        pub max_target: U256,
        /// Smallest extranonce (bytes) the client needs.
        pub min_extranonce_size: u16,
    }
}

sv2_struct! {
    /// `OpenExtendedMiningChannel.Success` (0x14, server → client).
    pub struct OpenExtendedMiningChannelSuccess {
        /// Echo of the request's `request_id`.
        pub request_id: u32,
        /// The new channel's id.
        pub channel_id: u32,
        /// Initial target.
        pub target: U256,
        /// Extranonce bytes left to the client.
        pub extranonce_size: u16,
        /// Implicit first part of the extranonce.
        pub extranonce_prefix: B032,
        /// Group channel the new channel belongs to.
        pub group_channel_id: u32,
    }
}

sv2_struct! {
    /// `OpenMiningChannel.Error` (0x12, server → client).
    pub struct OpenMiningChannelError {
        /// Echo of the request's `request_id`.
        pub request_id: u32,
        /// See [`error_code::open_mining_channel`](super::constants::error_code::open_mining_channel).
        pub error_code: Str0255,
    }
}

sv2_struct! {
    /// `UpdateChannel` (0x16, client → server, channel message).
    pub struct UpdateChannel {
        /// Channel id.
        pub channel_id: u32,
        /// New expected hash rate in h/s.
        pub nominal_hash_rate: f32,
        /// New largest target the device accepts.
        pub maximum_target: U256,
    }
}

sv2_struct! {
    /// `UpdateChannel.Error` (0x17, server → client, channel message).
    pub struct UpdateChannelError {
        /// Channel id.
        pub channel_id: u32,
        /// See [`error_code::update_channel`](super::constants::error_code::update_channel).
        pub error_code: Str0255,
    }
}

sv2_struct! {
    /// `CloseChannel` (0x18, either direction, channel message).
    pub struct CloseChannel {
        /// Channel id.
        pub channel_id: u32,
        /// Why the channel closes.
        pub reason_code: Str0255,
    }
}

sv2_struct! {
    /// `SetExtranoncePrefix` (0x19, server → client, channel message).
    pub struct SetExtranoncePrefix {
        /// Channel id.
        pub channel_id: u32,
        /// New implicit first part of the extranonce.
        pub extranonce_prefix: B032,
    }
}

sv2_struct! {
    /// `SetTarget` (0x21, server → client, channel message).
    pub struct SetTarget {
        /// Channel (or group channel) id.
        pub channel_id: u32,
        /// Largest hash the server accepts as a share from now on.
        pub maximum_target: U256,
    }
}

sv2_struct! {
    /// `SetGroupChannel` (0x25, server → client; not a channel message per spec and SRI).
    pub struct SetGroupChannel {
        /// Group channel id.
        pub group_channel_id: u32,
        /// Channels that belong to the group.
        pub channel_ids: Seq064K<u32>,
    }
}
