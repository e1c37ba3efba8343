//! Stratum V2 binary protocol (sv2-spec 03 "Protocol overview", 05 "Mining protocol",
//! 08 "Message types"): data types, frames, Common and Mining messages, plaintext codec.
//!
//! Layers, bottom up:
//! - [`types`] and [`bounded`]: the SV2 data types and the [`Sv2Encode`]/[`Sv2Decode`]
//!   traits. Bounded types can only be built through checked constructors, so encoding is
//!   infallible; decoding checks every length against the remaining input before allocating.
//! - [`common`], [`mining_channels`], [`mining_jobs`], [`mining_shares`]: one owned struct per
//!   message, fields in wire order.
//! - [`message`]: the [`Message`] enum, `to_frame` / `from_frame`.
//! - [`frame`]: the 6-byte header and [`Frame`], shared with the Noise codec.
//! - [`codec`]: the plaintext [`Sv2Codec`].
//!
//! Where the spec and SRI (the reference implementation) disagree, we follow SRI and say so
//! where it matters: the `channel_msg` bit is `0x8000` ([`frame`]); F32 is IEEE-754 LE
//! although the spec's type table omits it ([`types`]); `STR0_255` is not validated as UTF-8
//! ([`bounded::Str0255`]); error-code strings come from SRI ([`constants`]).

#[macro_use]
mod macros;

pub mod bounded;
pub mod codec;
pub mod common;
pub mod constants;
pub mod error;
pub mod frame;
pub mod message;
pub mod mining_channels;
pub mod mining_jobs;
pub mod mining_shares;
pub mod types;

pub use bounded::{B016M, B032, B064K, B0255, Seq064K, Seq0255, Str0255};
pub use codec::{DEFAULT_MAX_PAYLOAD_LEN, Sv2Codec};
pub use common::{
    ChannelEndpointChanged, Protocol, Reconnect, SetupConnection, SetupConnectionError,
    SetupConnectionSuccess,
};
pub use error::{Sv2CodecError, Sv2Error};
pub use frame::{Frame, Header};
pub use message::{Message, Sv2Message};
pub use mining_channels::{
    CloseChannel, OpenExtendedMiningChannel, OpenExtendedMiningChannelSuccess,
    OpenMiningChannelError, OpenStandardMiningChannel, OpenStandardMiningChannelSuccess,
    SetExtranoncePrefix, SetGroupChannel, SetTarget, UpdateChannel, UpdateChannelError,
};
pub use mining_jobs::{
    NewExtendedMiningJob, NewMiningJob, SetCustomMiningJob, SetCustomMiningJobError,
    SetCustomMiningJobSuccess, SetNewPrevHash,
};
pub use mining_shares::{
    SubmitSharesError, SubmitSharesExtended, SubmitSharesStandard, SubmitSharesSuccess,
};
pub use types::{Reader, Sv2Decode, Sv2Encode, U24, U256};
