//! Stratum V1: JSON-RPC 1.0-style messages over newline-delimited JSON.
//!
//! Stratum V1 has no formal specification; this module follows the de facto protocol as
//! the original slush pool documentation, cgminer/bmminer, ckpool and BIP310 (for
//! `mining.configure`, `mining.set_version_mask` and submit's `version_bits`) define it, and
//! as real miners and pools speak it (see `protocol/tests/data/sv1/`).
//!
//! | file | holds |
//! |---|---|
//! | [`client`] | miner → pool requests ([`ClientRequest`]) |
//! | [`server`] | pool → miner notifications ([`ServerNotification`]) |
//! | [`response`] | [`Response`], [`StratumError`], subscribe/configure result interpreters |
//! | [`message`] | [`ClientMessage`] / [`ServerMessage`] and the [`Sv1Message`] trait |
//! | [`codec`] | [`Sv1Codec`] ([`ServerCodec`], [`ClientCodec`]): line framing with a length limit |
//! | [`id`] | [`Id`]: number, string or null, echoed exactly |
//! | [`error`] | [`Sv1Error`] (per line) and [`FieldError`] (per field) |
//!
//! # Byte and number conventions
//! These are fixed; the share module and the proxy rely on them.
//! - `version`, `nbits`, `ntime` in `mining.notify`; `ntime`, `nonce`, `version_bits` in
//!   `mining.submit`; the masks of `mining.set_version_mask` and `mining.configure`: exactly
//!   8 hex characters spelling a **big-endian** `u32`, stored as `u32` (`"20000000"` is
//!   `0x2000_0000`). The 80-byte header stores them little-endian; converting is the share
//!   module's business.
//! - `prevhash` in `mining.notify`: Stratum sends the 32 header bytes with each 4-byte word
//!   byte-reversed. [`Notify::prev_hash`] holds them in **header byte order** (the bytes
//!   exactly as they appear in the block header, i.e. the reverse of the hash as block
//!   explorers display it); parsing and encoding convert. See [`prev_hash_from_stratum`].
//! - `coinb1`, `coinb2`, `extranonce1`, `extranonce2` and merkle branch entries: raw bytes in
//!   the order the hex spells them.
//! - Difficulties: `f64`; JSON integers and floats are accepted, values below 1 are valid,
//!   zero, negative and non-finite values are rejected (`minimum-difficulty.value` may be 0).
//!
//! Hex is accepted in either case and written in lowercase; fixed-width fields must have
//! their exact width, variable ones an even length within a bound (extranonces at most
//! [`MAX_EXTRANONCE_LEN`] bytes, at most [`MAX_MERKLE_BRANCH`] merkle entries).
//!
//! # Leniency
//! Strict where a misread would cost shares (hex widths, JSON types of known fields, each
//! error naming the field); lenient about shape: absent or `null` params, extra params,
//! absent ids, extra members (`"jsonrpc":"2.0"`), string ids, ports sent as strings, error
//! members in any common form, subscribe results without subscriptions. Unknown methods in
//! either direction are values ([`ClientRequest::Unknown`], [`ServerNotification::Unknown`]),
//! not errors.
//!
//! # Encoding
//! Compact JSON, one message per line ending in `\n`, members in the order real pools and
//! miners write them: `{"id":..,"method":..,"params":[..]}` and
//! `{"id":..,"result":..,"error":..}`; errors as `[code,"message",null]`.

pub mod client;
pub mod codec;
pub mod error;
mod fields;
pub mod id;
pub mod message;
pub mod response;
pub mod server;

pub use client::{Authorize, ClientRequest, Configure, Submit, Subscribe};
pub use codec::{ClientCodec, DEFAULT_MAX_LINE_LEN, ServerCodec, Sv1Codec};
pub use error::{FieldError, Sv1Error};
pub use fields::{
    MAX_EXTRANONCE_LEN, MAX_MERKLE_BRANCH, prev_hash_from_stratum, prev_hash_to_stratum,
};
pub use id::Id;
pub use message::{ClientMessage, ServerMessage, Sv1Message};
pub use response::{
    ConfigureResult, ErrorCode, ExtensionResult, Response, StratumError, SubscribeResult,
};
pub use server::{MAX_COINBASE_PART, Notify, Reconnect, ServerNotification, SetExtranonce};

/// Method names.
pub mod method {
    /// `mining.subscribe` (client → server).
    pub const SUBSCRIBE: &str = "mining.subscribe";
    /// `mining.authorize` (client → server).
    pub const AUTHORIZE: &str = "mining.authorize";
    /// `mining.configure` (client → server, BIP310).
    pub const CONFIGURE: &str = "mining.configure";
    /// `mining.submit` (client → server).
    pub const SUBMIT: &str = "mining.submit";
    /// `mining.suggest_difficulty` (client → server).
    pub const SUGGEST_DIFFICULTY: &str = "mining.suggest_difficulty";
    /// `mining.extranonce.subscribe` (client → server).
    pub const EXTRANONCE_SUBSCRIBE: &str = "mining.extranonce.subscribe";
    /// `mining.notify` (server → client).
    pub const NOTIFY: &str = "mining.notify";
    /// `mining.set_difficulty` (server → client).
    pub const SET_DIFFICULTY: &str = "mining.set_difficulty";
    /// `mining.set_extranonce` (server → client).
    pub const SET_EXTRANONCE: &str = "mining.set_extranonce";
    /// `mining.set_version_mask` (server → client, BIP310).
    pub const SET_VERSION_MASK: &str = "mining.set_version_mask";
    /// `client.reconnect` (server → client).
    pub const RECONNECT: &str = "client.reconnect";
    /// `client.show_message` (server → client).
    pub const SHOW_MESSAGE: &str = "client.show_message";
    /// `client.get_version` (server → client request).
    pub const GET_VERSION: &str = "client.get_version";
}

/// BIP310 extension codes.
pub mod extension {
    /// `version-rolling`.
    pub const VERSION_ROLLING: &str = "version-rolling";
    /// `minimum-difficulty`.
    pub const MINIMUM_DIFFICULTY: &str = "minimum-difficulty";
    /// `subscribe-extranonce`.
    pub const SUBSCRIBE_EXTRANONCE: &str = "subscribe-extranonce";
}
