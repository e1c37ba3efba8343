//! The [`Message`] enum: every Common and Mining message, and its mapping to and from
//! [`Frame`]s (sv2-spec 03 §3.2 "Framing", 08 "Message Types").
//!
//! Encoding sets `extension_type` 0, the message's `msg_type` and its `channel_msg` bit. The
//! bits follow SRI (`mining_sv2` 12.0.0 / `common_messages_sv2` 9.0.0 `CHANNEL_BIT_*`), which
//! agree with spec 08 for every message; note `SetGroupChannel` and the `Open*` messages are
//! *not* channel messages although they carry channel ids.
//!
//! Decoding ignores the received `channel_msg` bit: the message type alone fixes the layout,
//! and SRI releases before `mining_sv2` 12 sent `SetCustomMiningJob*` without it, so
//! checking it would only break interop. Decoding rejects trailing bytes, reports unknown
//! message types of extension 0 as [`Sv2Error::UnknownMessage`] and frames of any other
//! extension as [`Sv2Error::UnsupportedExtension`]; both are [`Sv2Error::is_ignorable`].

use bytes::{BufMut, BytesMut};

use super::common::{
    ChannelEndpointChanged, Reconnect, SetupConnection, SetupConnectionError,
    SetupConnectionSuccess,
};
use super::constants::msg_type as mt;
use super::error::Sv2Error;
use super::frame::{Frame, HEADER_LEN, Header};
use super::mining_channels::{
    CloseChannel, OpenExtendedMiningChannel, OpenExtendedMiningChannelSuccess,
    OpenMiningChannelError, OpenStandardMiningChannel, OpenStandardMiningChannelSuccess,
    SetExtranoncePrefix, SetGroupChannel, SetTarget, UpdateChannel, UpdateChannelError,
};
use super::mining_jobs::{
    NewExtendedMiningJob, NewMiningJob, SetCustomMiningJob, SetCustomMiningJobError,
    SetCustomMiningJobSuccess, SetNewPrevHash,
};
use super::mining_shares::{
    SubmitSharesError, SubmitSharesExtended, SubmitSharesStandard, SubmitSharesSuccess,
};
use super::types::{Reader, Sv2Decode, Sv2Encode};

/// Builds the frame header for a core-protocol payload. Payloads of Common and Mining
/// messages are bounded well below 2^24 bytes (the largest, a full `SetGroupChannel`, is
/// 262,146), so the length always fits the U24 field.
fn core_header(msg_type: u8, channel_msg: bool, payload_len: usize) -> Header {
    Header {
        extension_type: 0,
        channel_msg,
        msg_type,
        msg_length: payload_len as u32,
    }
}

/// A message type of the Common or Mining protocol, with its framing facts.
pub trait Sv2Message: Sv2Encode + Sv2Decode {
    /// The `msg_type` byte.
    const MSG_TYPE: u8;
    /// Whether frames of this message have the `channel_msg` bit set.
    const CHANNEL_MSG: bool;
    /// The spec's name, e.g. `"SubmitShares.Success"`.
    const NAME: &'static str;

    /// The channel id for channel messages (`CHANNEL_MSG`), `None` otherwise.
    fn channel_id(&self) -> Option<u32>;

    /// Frames this message without going through [`Message`] (one exactly-sized buffer).
    fn to_frame(&self) -> Frame {
        let mut payload = BytesMut::with_capacity(self.encoded_len());
        self.encode(&mut payload);
        Frame {
            header: core_header(Self::MSG_TYPE, Self::CHANNEL_MSG, payload.len()),
            payload: payload.freeze(),
        }
    }

    /// Decodes a whole payload as this message, rejecting trailing bytes.
    fn from_payload(payload: &[u8]) -> Result<Self, Sv2Error> {
        let mut r = Reader::new(payload);
        let m = Self::decode(&mut r)?;
        r.finish()?;
        Ok(m)
    }
}

macro_rules! channel_id_of {
    (true, $m:expr) => {
        Some($m.channel_id)
    };
    (false, $m:expr) => {
        None
    };
}

macro_rules! messages {
    ($( $(#[$vmeta:meta])* $variant:ident = $mt:path, channel: $ch:tt, name: $name:literal; )*) => {
        $(
            impl Sv2Message for $variant {
                const MSG_TYPE: u8 = $mt;
                const CHANNEL_MSG: bool = $ch;
                const NAME: &'static str = $name;
                fn channel_id(&self) -> Option<u32> {
                    channel_id_of!($ch, self)
                }
            }

            impl From<$variant> for Message {
                fn from(m: $variant) -> Message {
                    Message::$variant(m)
                }
            }
        )*

        /// Every Common and Mining protocol message (extension 0), decoded into owned values.
        #[derive(Clone, Debug, PartialEq)]
        pub enum Message {
            $( $(#[$vmeta])* $variant($variant), )*
        }

        impl Message {
            /// The `msg_type` byte.
            pub fn msg_type(&self) -> u8 {
                match self { $( Message::$variant(_) => $mt, )* }
            }

            /// Whether the frame carries the `channel_msg` bit.
            pub fn channel_msg(&self) -> bool {
                match self { $( Message::$variant(_) => $ch, )* }
            }

            /// The spec's name of the message, for logs.
            pub fn name(&self) -> &'static str {
                match self { $( Message::$variant(_) => $name, )* }
            }

            /// The channel id of a channel message (those with the `channel_msg` bit);
            /// `None` for the others, including `Open*Success` and `SetGroupChannel`.
            pub fn channel_id(&self) -> Option<u32> {
                match self { $( Message::$variant(m) => m.channel_id(), )* }
            }

            /// Length of the encoded payload (header excluded).
            pub fn payload_len(&self) -> usize {
                match self { $( Message::$variant(m) => m.encoded_len(), )* }
            }

            /// Appends the payload (header excluded) to `dst`.
            pub fn encode_payload<B: BufMut>(&self, dst: &mut B) {
                match self { $( Message::$variant(m) => m.encode(dst), )* }
            }

            /// Decodes the payload of an extension-0 message of type `msg_type`.
            pub fn decode(msg_type: u8, payload: &[u8]) -> Result<Message, Sv2Error> {
                match msg_type {
                    $( $mt => Ok(Message::$variant($variant::from_payload(payload)?)), )*
                    _ => Err(Sv2Error::UnknownMessage { msg_type }),
                }
            }
        }
    };
}

messages! {
    /// `SetupConnection` (0x00).
    SetupConnection = mt::SETUP_CONNECTION, channel: false, name: "SetupConnection";
    /// `SetupConnection.Success` (0x01).
    SetupConnectionSuccess = mt::SETUP_CONNECTION_SUCCESS, channel: false,
        name: "SetupConnection.Success";
    /// `SetupConnection.Error` (0x02).
    SetupConnectionError = mt::SETUP_CONNECTION_ERROR, channel: false,
        name: "SetupConnection.Error";
    /// `ChannelEndpointChanged` (0x03).
    ChannelEndpointChanged = mt::CHANNEL_ENDPOINT_CHANGED, channel: true,
        name: "ChannelEndpointChanged";
    /// `Reconnect` (0x04).
    Reconnect = mt::RECONNECT, channel: false, name: "Reconnect";
    /// `OpenStandardMiningChannel` (0x10).
    OpenStandardMiningChannel = mt::OPEN_STANDARD_MINING_CHANNEL, channel: false,
        name: "OpenStandardMiningChannel";
    /// `OpenStandardMiningChannel.Success` (0x11).
    OpenStandardMiningChannelSuccess = mt::OPEN_STANDARD_MINING_CHANNEL_SUCCESS, channel: false,
        name: "OpenStandardMiningChannel.Success";
    /// `OpenMiningChannel.Error` (0x12).
    OpenMiningChannelError = mt::OPEN_MINING_CHANNEL_ERROR, channel: false,
        name: "OpenMiningChannel.Error";
    /// `OpenExtendedMiningChannel` (0x13).
    OpenExtendedMiningChannel = mt::OPEN_EXTENDED_MINING_CHANNEL, channel: false,
        name: "OpenExtendedMiningChannel";
    /// `OpenExtendedMiningChannel.Success` (0x14).
    OpenExtendedMiningChannelSuccess = mt::OPEN_EXTENDED_MINING_CHANNEL_SUCCESS, channel: false,
        name: "OpenExtendedMiningChannel.Success";
    /// `NewMiningJob` (0x15).
    NewMiningJob = mt::NEW_MINING_JOB, channel: true, name: "NewMiningJob";
    /// `UpdateChannel` (0x16).
    UpdateChannel = mt::UPDATE_CHANNEL, channel: true, name: "UpdateChannel";
    /// `UpdateChannel.Error` (0x17).
    UpdateChannelError = mt::UPDATE_CHANNEL_ERROR, channel: true, name: "UpdateChannel.Error";
    /// `CloseChannel` (0x18).
    CloseChannel = mt::CLOSE_CHANNEL, channel: true, name: "CloseChannel";
    /// `SetExtranoncePrefix` (0x19).
    SetExtranoncePrefix = mt::SET_EXTRANONCE_PREFIX, channel: true,
        name: "SetExtranoncePrefix";
    /// `SubmitSharesStandard` (0x1a).
    SubmitSharesStandard = mt::SUBMIT_SHARES_STANDARD, channel: true,
        name: "SubmitSharesStandard";
    /// `SubmitSharesExtended` (0x1b).
    SubmitSharesExtended = mt::SUBMIT_SHARES_EXTENDED, channel: true,
        name: "SubmitSharesExtended";
    /// `SubmitShares.Success` (0x1c).
    SubmitSharesSuccess = mt::SUBMIT_SHARES_SUCCESS, channel: true,
        name: "SubmitShares.Success";
    /// `SubmitShares.Error` (0x1d).
    SubmitSharesError = mt::SUBMIT_SHARES_ERROR, channel: true, name: "SubmitShares.Error";
    /// `NewExtendedMiningJob` (0x1f).
    NewExtendedMiningJob = mt::NEW_EXTENDED_MINING_JOB, channel: true,
        name: "NewExtendedMiningJob";
    /// `SetNewPrevHash` (0x20).
    SetNewPrevHash = mt::SET_NEW_PREV_HASH, channel: true, name: "SetNewPrevHash";
    /// `SetTarget` (0x21).
    SetTarget = mt::SET_TARGET, channel: true, name: "SetTarget";
    /// `SetCustomMiningJob` (0x22).
    SetCustomMiningJob = mt::SET_CUSTOM_MINING_JOB, channel: true, name: "SetCustomMiningJob";
    /// `SetCustomMiningJob.Success` (0x23).
    SetCustomMiningJobSuccess = mt::SET_CUSTOM_MINING_JOB_SUCCESS, channel: true,
        name: "SetCustomMiningJob.Success";
    /// `SetCustomMiningJob.Error` (0x24).
    SetCustomMiningJobError = mt::SET_CUSTOM_MINING_JOB_ERROR, channel: true,
        name: "SetCustomMiningJob.Error";
    /// `SetGroupChannel` (0x25).
    SetGroupChannel = mt::SET_GROUP_CHANNEL, channel: false, name: "SetGroupChannel";
}

impl Message {
    /// Frames the message: extension 0, its `msg_type` and `channel_msg` bit, and the payload
    /// in one exactly-sized buffer.
    pub fn to_frame(&self) -> Frame {
        let mut payload = BytesMut::with_capacity(self.payload_len());
        self.encode_payload(&mut payload);
        Frame {
            header: core_header(self.msg_type(), self.channel_msg(), payload.len()),
            payload: payload.freeze(),
        }
    }

    /// Appends header and payload to `dst` without an intermediate buffer (what the
    /// plaintext codec's `Encoder<&Message>` does).
    pub fn encode_frame<B: BufMut>(&self, dst: &mut B) {
        let len = self.payload_len();
        core_header(self.msg_type(), self.channel_msg(), len).encode_to(dst);
        self.encode_payload(dst);
    }

    /// Size of the whole frame (header and payload).
    pub fn frame_len(&self) -> usize {
        HEADER_LEN + self.payload_len()
    }

    /// Decodes a frame. The payload is authoritative (`header.msg_length` is not consulted);
    /// the `channel_msg` bit is ignored (see the module docs).
    ///
    /// # Errors
    /// [`Sv2Error::UnsupportedExtension`] for a non-zero extension type,
    /// [`Sv2Error::UnknownMessage`] for an unknown `msg_type`, and the payload errors
    /// (truncated, trailing bytes, over-long `B0_32`, bad OPTION) for malformed messages.
    pub fn from_frame(frame: &Frame) -> Result<Message, Sv2Error> {
        if frame.header.extension_type != 0 {
            return Err(Sv2Error::UnsupportedExtension {
                extension_type: frame.header.extension_type,
                msg_type: frame.header.msg_type,
            });
        }
        Message::decode(frame.header.msg_type, &frame.payload)
    }
}

#[cfg(test)]
#[path = "message_tests.rs"]
mod tests;
