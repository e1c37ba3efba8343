//! Common protocol messages (sv2-spec 03 §3.6), shared by every SV2 subprotocol.
//!
//! Field lists match the spec and SRI's `common_messages_sv2` 9.0.0 exactly.

use bytes::BufMut;

use super::bounded::Str0255;
use super::constants::setup_flags;
use super::error::Sv2Error;
use super::types::{Reader, Sv2Decode, Sv2Encode};

/// The `protocol` field of `SetupConnection`.
///
/// Unknown values decode to [`Protocol::Unknown`] rather than failing, so a server can answer
/// with `SetupConnection.Error` / `unsupported-protocol` instead of dropping the peer. (SRI's
/// decoder rejects them outright; both agree on the three known values.)
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Protocol {
    /// 0: Mining protocol.
    Mining,
    /// 1: Job Declaration protocol.
    JobDeclaration,
    /// 2: Template Distribution protocol.
    TemplateDistribution,
    /// Any other value, kept as received.
    Unknown(u8),
}

impl From<u8> for Protocol {
    fn from(v: u8) -> Self {
        match v {
            0 => Protocol::Mining,
            1 => Protocol::JobDeclaration,
            2 => Protocol::TemplateDistribution,
            other => Protocol::Unknown(other),
        }
    }
}

impl From<Protocol> for u8 {
    fn from(p: Protocol) -> u8 {
        match p {
            Protocol::Mining => 0,
            Protocol::JobDeclaration => 1,
            Protocol::TemplateDistribution => 2,
            Protocol::Unknown(v) => v,
        }
    }
}

impl Sv2Encode for Protocol {
    fn encoded_len(&self) -> usize {
        1
    }
    fn encode<B: BufMut>(&self, dst: &mut B) {
        dst.put_u8(u8::from(*self));
    }
}

impl Sv2Decode for Protocol {
    const MIN_ENCODED_LEN: usize = 1;
    fn decode(r: &mut Reader<'_>) -> Result<Self, Sv2Error> {
        Ok(Protocol::from(u8::decode(r)?))
    }
}

sv2_struct! {
    /// `SetupConnection` (0x00, client → server): the first message on a connection.
    pub struct SetupConnection {
        /// Which subprotocol the client wants.
        pub protocol: Protocol,
        /// Lowest protocol version the client supports (currently 2).
        pub min_version: u16,
        /// Highest protocol version the client supports (currently 2).
        pub max_version: u16,
        /// Feature flags; for the Mining protocol see [`setup_flags`].
        pub flags: u32,
        /// Host name or IP address the client connected to.
        pub endpoint_host: Str0255,
        /// Port the client connected to.
        pub endpoint_port: u16,
        /// Device vendor, e.g. "Bitmain".
        pub vendor: Str0255,
        /// Hardware version, e.g. "S9i 13.5".
        pub hardware_version: Str0255,
        /// Firmware identification.
        pub firmware: Str0255,
        /// Vendor-defined device identifier (may be empty).
        pub device_id: Str0255,
    }
}

impl SetupConnection {
    /// Whether `flags` has `bit` (one of [`setup_flags`]) set.
    pub fn has_flag(&self, bit: u32) -> bool {
        self.flags & bit != 0
    }

    /// Whether the client asked for standard jobs only.
    pub fn requires_standard_jobs(&self) -> bool {
        self.has_flag(setup_flags::REQUIRES_STANDARD_JOBS)
    }

    /// Whether the client announced `SetCustomMiningJob` (work selection).
    pub fn requires_work_selection(&self) -> bool {
        self.has_flag(setup_flags::REQUIRES_WORK_SELECTION)
    }

    /// Whether the client requires version rolling.
    pub fn requires_version_rolling(&self) -> bool {
        self.has_flag(setup_flags::REQUIRES_VERSION_ROLLING)
    }
}

sv2_struct! {
    /// `SetupConnection.Success` (0x01, server → client).
    pub struct SetupConnectionSuccess {
        /// The version chosen for the rest of the connection.
        pub used_version: u16,
        /// Features the server supports; for Mining see
        /// [`setup_success_flags`](super::constants::setup_success_flags).
        pub flags: u32,
    }
}

sv2_struct! {
    /// `SetupConnection.Error` (0x02, server → client), sent before closing.
    pub struct SetupConnectionError {
        /// The full set of requested flags the server does not support (0: other reason).
        pub flags: u32,
        /// See [`error_code::setup_connection`](super::constants::error_code::setup_connection).
        pub error_code: Str0255,
    }
}

sv2_struct! {
    /// `ChannelEndpointChanged` (0x03, server → client, channel message).
    pub struct ChannelEndpointChanged {
        /// The channel whose endpoint changed.
        pub channel_id: u32,
    }
}

sv2_struct! {
    /// `Reconnect` (0x04, server → client): redirect to another host of the same pool.
    pub struct Reconnect {
        /// New host; empty means the current one.
        pub new_host: Str0255,
        /// New port; 0 means the current one.
        pub new_port: u16,
    }
}
