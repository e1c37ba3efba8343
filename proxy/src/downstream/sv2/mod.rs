//! Stratum V2 miners (sv2-spec 04 "Protocol Security", 05 "Mining Protocol"): SV2 firmware
//! and SV2 proxies connect to hashshift as they would to an SV2 pool.
//!
//! | module | role |
//! |---|---|
//! | [`handshake`] | Noise NX responder, authority key loading, certificate validity |
//! | `state` | one connection's state machine (sans-IO): `SetupConnection`, channels, shares, acks; frames, work, verdicts and `now` in, messages, actions and the next deadline out |
//! | `conn` | one connection's I/O task ([`serve`]): Noise, frames, the pool manager, timers |
//! | [`channel`] | one channel's state (sans-IO): extranonce, jobs, validation, vardiff, acks |
//! | [`events`] | per-channel work and manager commands merged into one event stream |
//!
//! The SV1 side (`super::sv1`) has the same `state` + `conn` split.
//!
//! What a miner sees: a Noise handshake whose certificate is signed by the configured
//! authority key; `SetupConnection` for the Mining protocol (version 2; flags
//! `REQUIRES_STANDARD_JOBS` and `REQUIRES_VERSION_ROLLING` accepted,
//! `REQUIRES_WORK_SELECTION` refused); any number of standard and extended channels up to a
//! per-connection cap, all in group channel [`GROUP_CHANNEL_ID`]; jobs and targets
//! per channel; shares validated by the proxy with the same rules as SV1 shares and, when
//! they meet the pool's target, forwarded to the pool with the answer waiting for its verdict;
//! `SubmitShares.Success` sent in batches.
//!
//! Upstream is protocol-neutral: a channel takes an extranonce slot on a pool connection
//! through the [`PoolManager`](crate::upstream::manager::PoolManager) exactly like an SV1
//! miner, and is moved with `SetExtranoncePrefix` when the manager reassigns it.

pub mod channel;
mod conn;
pub mod events;
pub mod handshake;
mod state;

use std::time::Duration;

use hashshift_protocol::noise::ResponderConfig;

pub use conn::serve;

/// The group channel every channel of a connection belongs to (reported in `Open*Success`).
/// Jobs go to it when the miner did not set `REQUIRES_STANDARD_JOBS` and all its channels are
/// on the same upstream job; otherwise each channel gets its own.
pub const GROUP_CHANNEL_ID: u32 = 1;

/// Settings every connection of one SV2 listener shares.
#[derive(Clone, Debug)]
pub struct Sv2Settings {
    /// Authority-signed static key for the Noise handshake.
    pub noise: ResponderConfig,
    /// Per-channel vardiff and starting difficulty.
    pub channel: channel::ChannelSettings,
    /// Time from accept to the first open channel (Noise handshake and `SetupConnection`
    /// included); a connection that has not got there is dropped.
    pub handshake_timeout: Duration,
    /// A connection with an open channel that sends nothing at all for this long is dropped
    /// (checked on the connection's one-second tick, so it goes within a tick or two after).
    pub idle_timeout: Duration,
    /// A write that cannot complete in this time means the miner stopped reading.
    pub write_timeout: Duration,
    /// How long shutdown waits for verdicts of shares in flight.
    pub drain_grace: Duration,
    /// Largest frame payload accepted from a miner (checked before buffering).
    pub max_frame_bytes: usize,
    /// Most channels per connection.
    pub max_channels: usize,
    /// Acknowledgements are sent at the latest this long after the first share they cover
    /// (zero: once the events ready now are handled).
    pub ack_delay: Duration,
    /// ... or as soon as this many shares of one channel are waiting.
    pub ack_batch: u32,
    /// SV2 totals and latency histograms (metrics).
    pub stats: std::sync::Arc<crate::telemetry::DownstreamStats>,
}
