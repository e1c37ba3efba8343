//! Stratum V1 miners: one task per connection.
//!
//! | module | role |
//! |---|---|
//! | `state` | the session state machine (sans-IO): lines, work, verdicts and `now` in; output bytes, actions and the next deadline out |
//! | `conn` | the I/O task ([`serve`]): reads lines, calls the state machine with the time, performs its actions, writes, sleeps until its deadline |
//! | `reader` | line reading without a buffer held while the miner is idle |
//!
//! The SV2 side (`super::sv2`) has the same split and names.

mod conn;
mod reader;
mod state;

use std::sync::Arc;
use std::time::Duration;

use super::vardiff::VardiffSettings;
use crate::telemetry::DownstreamStats;

pub use conn::serve;

/// Settings every SV1 session shares.
#[derive(Clone, Debug)]
pub struct SessionSettings {
    /// Vardiff bounds and rate.
    pub vardiff: VardiffSettings,
    /// Starting difficulty.
    pub initial_difficulty: f64,
    /// Longest line accepted.
    pub max_line_bytes: usize,
    /// Most bytes waiting for one miner before it is dropped as not reading.
    pub max_outbox_bytes: usize,
    /// Time to subscribe and authorize.
    pub handshake_timeout: Duration,
    /// An authorized miner that sends nothing at all for this long is dropped.
    pub idle_timeout: Duration,
    /// Output waiting this long without any of it being written means the miner stopped
    /// reading.
    pub write_timeout: Duration,
    /// How long shutdown waits for shares in flight.
    pub drain_grace: Duration,
    /// SV1 totals and latency histograms (metrics).
    pub stats: Arc<DownstreamStats>,
}
