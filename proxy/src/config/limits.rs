//! `[limits]`: defensive limits on peers, and the proxy's own timings towards miners and
//! HTTP clients.

use serde::{Deserialize, Serialize};

use super::{ConfigError, invalid};

/// Defensive limits on peers, and the proxy's own timings towards miners. Every key is
/// optional (defaults below).
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct Limits {
    /// Longest SV1 line accepted from a miner, in bytes.
    pub max_line_bytes: usize,
    /// Messages that may wait for one miner (counted as 2 KiB each: its send buffer is capped
    /// at `send_queue × 2 KiB`, and never below what one job of the current pool needs); a
    /// miner that lets more pile up is not reading and is dropped.
    pub send_queue: usize,
    /// Most simultaneous miner connections.
    pub max_connections: usize,
    /// Most simultaneous miner connections from one address. Generous by default: a site's
    /// NAT can put hundreds of rigs behind one address.
    pub max_connections_per_address: usize,
    /// Seconds a new connection may take to subscribe and authorize.
    pub handshake_timeout_secs: u64,
    /// Seconds an authorized miner may send nothing at all before it is disconnected.
    pub idle_timeout_secs: u64,
    /// Seconds a write to a miner may take before the miner counts as not reading and is
    /// dropped (it must never hold up the others).
    pub write_timeout_secs: u64,
    /// Seconds a closing miner session still waits for the pool's verdicts on shares it
    /// already sent upstream, to relay them.
    pub drain_grace_secs: u64,
    /// Seconds a graceful stop (SIGTERM) lets sessions drain before they are aborted.
    pub shutdown_grace_secs: u64,
    /// SV2 miners: most shares acknowledged by one `SubmitShares.Success`.
    pub sv2_ack_batch: u32,
    /// SV2 miners: milliseconds an acknowledgement may wait for more shares to cover (0 to
    /// 10000). 0: acknowledged as soon as the session has nothing else ready; a real channel
    /// sends a share every few seconds, so waiting mostly adds latency, and shares that
    /// arrive together are still acknowledged together.
    pub sv2_ack_delay_ms: u64,
    /// HTTP API and metrics servers: most simultaneous connections (each server); further
    /// connections wait in the kernel's backlog.
    pub http_max_connections: usize,
    /// HTTP API and metrics servers: seconds a client may take to send a request's headers.
    pub http_header_timeout_secs: u64,
    /// HTTP API and metrics servers: seconds a connection may move no byte in either
    /// direction in the middle of a request (a stalled body, a client that stops reading).
    /// A kept-alive connection waiting for its next request is closed after the shorter of
    /// this and `http_header_timeout_secs`.
    pub http_idle_timeout_secs: u64,
    /// HTTP API: largest request body accepted, in bytes.
    pub http_max_body_bytes: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_line_bytes: 16 * 1024,
            send_queue: 64,
            max_connections: 100_000,
            max_connections_per_address: 512,
            handshake_timeout_secs: 30,
            idle_timeout_secs: 600,
            write_timeout_secs: 10,
            drain_grace_secs: 5,
            shutdown_grace_secs: 10,
            sv2_ack_batch: 32,
            sv2_ack_delay_ms: 0,
            http_max_connections: 128,
            http_header_timeout_secs: 10,
            http_idle_timeout_secs: 60,
            http_max_body_bytes: 16 * 1024,
        }
    }
}

impl Limits {
    /// Checks every size and timing is within what the proxy can turn into buffers and
    /// deadlines.
    pub(super) fn validate(&self) -> Result<(), ConfigError> {
        let l = self;
        if !(512..=(1 << 24)).contains(&l.max_line_bytes) {
            return Err(invalid("limits.max_line_bytes", "must be 512 to 16777216"));
        }
        for (key, value, max) in [
            ("send_queue", l.send_queue, 1 << 20),
            ("max_connections", l.max_connections, 10_000_000),
            (
                "max_connections_per_address",
                l.max_connections_per_address,
                10_000_000,
            ),
            ("http_max_connections", l.http_max_connections, 65_536),
            ("http_max_body_bytes", l.http_max_body_bytes, 1 << 24),
        ] {
            if !(1..=max).contains(&value) {
                return Err(invalid(
                    format!("limits.{key}"),
                    format!("must be 1 to {max}"),
                ));
            }
        }
        if !(1..=65_536).contains(&l.sv2_ack_batch) {
            return Err(invalid("limits.sv2_ack_batch", "must be 1 to 65536"));
        }
        if l.sv2_ack_delay_ms > 10_000 {
            return Err(invalid("limits.sv2_ack_delay_ms", "must be 0 to 10000"));
        }
        for (key, value) in [
            ("handshake_timeout_secs", l.handshake_timeout_secs),
            ("idle_timeout_secs", l.idle_timeout_secs),
            ("write_timeout_secs", l.write_timeout_secs),
            ("drain_grace_secs", l.drain_grace_secs),
            ("shutdown_grace_secs", l.shutdown_grace_secs),
            ("http_header_timeout_secs", l.http_header_timeout_secs),
            ("http_idle_timeout_secs", l.http_idle_timeout_secs),
        ] {
            // Bounded: each becomes `Instant + Duration` per connection.
            if !(1..=86_400).contains(&value) {
                return Err(invalid(
                    format!("limits.{key}"),
                    "must be 1 to 86400 seconds",
                ));
            }
        }
        Ok(())
    }
}
