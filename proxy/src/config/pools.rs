//! `[[upstream]]`, `[failover]` and `[aggregation]`: the pools, when the proxy leaves one,
//! and how miners share the connections to them.

use serde::{Deserialize, Serialize};

use super::{ConfigError, PoolUrl, invalid};

/// A pool.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Upstream {
    /// `stratum+tcp://HOST:PORT` or `stratum2+tcp://HOST:PORT/AUTHORITY_PUBKEY` (see
    /// [`PoolUrl`]).
    pub url: PoolUrl,
    /// Pool account (and, with `worker_identity = "fixed"`, the worker every share is sent as).
    pub user: String,
    /// Pool password; most pools ignore it.
    #[serde(default = "default_password")]
    pub password: String,
    /// Failover order: the lowest value is the primary. Pools with equal priority share the
    /// work by `weight`.
    #[serde(default)]
    pub priority: u32,
    /// Share of hashrate among pools of the same priority (relative, e.g. 70 and 30).
    #[serde(default = "default_weight")]
    pub weight: u32,
}

/// The conventional password most pools ignore (never redacted).
pub(super) fn default_password() -> String {
    "x".to_owned()
}

impl Upstream {
    /// Checks pool `i` (`upstream[i]`).
    pub(super) fn validate(&self, i: usize) -> Result<(), ConfigError> {
        if self.weight == 0 {
            return Err(invalid(
                format!("upstream[{i}].weight"),
                "must be at least 1",
            ));
        }
        if self.user.is_empty() {
            return Err(invalid(format!("upstream[{i}].user"), "must not be empty"));
        }
        Ok(())
    }
}

fn default_weight() -> u32 {
    1
}

/// Pool health and failover timing. Every key is optional (defaults below).
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct Failover {
    /// A pool that sends no new job for this long is treated as down (pools normally send
    /// one every 30–60 s).
    pub no_work_timeout_secs: f64,
    /// A recovered higher-priority pool gets miners back after being healthy this long.
    pub failback_after_secs: f64,
    /// How often the weighted split may move one miner between pools of equal priority.
    pub rebalance_every_secs: f64,
    /// Connecting to a pool (TCP, and for SV2 the Noise handshake and channel setup) may take
    /// this long before the attempt counts as failed.
    pub pool_connect_timeout_secs: f64,
    /// A share sent to a pool that has not been answered within this is answered to the miner
    /// as lost (SV2 pools may batch acknowledgements; keep it well above their batch delay).
    pub pool_submit_timeout_secs: f64,
    /// A write to a pool that has not completed within this marks the pool down: its queued
    /// shares are answered at once and its miners fail over.
    pub pool_write_timeout_secs: f64,
    /// First wait before reconnecting to a pool whose session ended; it doubles with each
    /// further failure up to `pool_max_backoff_secs` (each wait is jittered ±50%, and a
    /// session that lasted 30 s starts the count again).
    pub pool_min_backoff_secs: f64,
    /// Longest wait between reconnection attempts to a pool that is down.
    pub pool_max_backoff_secs: f64,
}

impl Default for Failover {
    fn default() -> Self {
        Failover {
            no_work_timeout_secs: 120.0,
            failback_after_secs: 30.0,
            rebalance_every_secs: 10.0,
            pool_connect_timeout_secs: 10.0,
            pool_submit_timeout_secs: 30.0,
            pool_write_timeout_secs: 5.0,
            pool_min_backoff_secs: 0.5,
            pool_max_backoff_secs: 30.0,
        }
    }
}

/// How miners share upstream connections. Every key is optional.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct Aggregation {
    /// Bytes of the pool's extranonce2 the proxy keeps as a per-miner prefix; the miner rolls
    /// the rest. 2 bytes = up to 65,536 miners per connection.
    pub proxy_extranonce2_bytes: u8,
    /// Most miners on one upstream connection; another connection opens when all are full.
    pub max_miners_per_upstream: u32,
    /// Which worker name goes upstream on shares.
    pub worker_identity: WorkerIdentity,
}

impl Default for Aggregation {
    fn default() -> Self {
        Aggregation {
            proxy_extranonce2_bytes: 2,
            max_miners_per_upstream: 1024,
            worker_identity: WorkerIdentity::Passthrough,
        }
    }
}

/// Which worker name the pool sees on each share.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum WorkerIdentity {
    /// Each miner's own worker name.
    Passthrough,
    /// The upstream's `user` for every share.
    Fixed,
}

impl Aggregation {
    /// Checks the prefix size and the miners per connection it allows.
    pub(super) fn validate(&self) -> Result<(), ConfigError> {
        let a = self;
        if !(1..=4).contains(&a.proxy_extranonce2_bytes) {
            return Err(invalid(
                "aggregation.proxy_extranonce2_bytes",
                "must be 1 to 4",
            ));
        }
        let capacity = 1u64 << (8 * u32::from(a.proxy_extranonce2_bytes));
        if a.max_miners_per_upstream == 0 || u64::from(a.max_miners_per_upstream) > capacity {
            return Err(invalid(
                "aggregation.max_miners_per_upstream",
                format!("must be 1 to {capacity} (256^proxy_extranonce2_bytes)"),
            ));
        }
        Ok(())
    }
}

impl Failover {
    /// Checks every timing is a usable number of seconds.
    pub(super) fn validate(&self) -> Result<(), ConfigError> {
        let f = self;
        for (key, value) in [
            ("no_work_timeout_secs", f.no_work_timeout_secs),
            ("failback_after_secs", f.failback_after_secs),
            ("rebalance_every_secs", f.rebalance_every_secs),
            ("pool_connect_timeout_secs", f.pool_connect_timeout_secs),
            ("pool_submit_timeout_secs", f.pool_submit_timeout_secs),
            ("pool_write_timeout_secs", f.pool_write_timeout_secs),
            ("pool_min_backoff_secs", f.pool_min_backoff_secs),
            ("pool_max_backoff_secs", f.pool_max_backoff_secs),
        ] {
            if !(value.is_finite() && value > 0.0 && value < 86_400.0) {
                return Err(invalid(
                    format!("failover.{key}"),
                    "must be between 0 and 86400 seconds",
                ));
            }
        }
        if f.pool_min_backoff_secs > f.pool_max_backoff_secs {
            return Err(invalid(
                "failover.pool_min_backoff_secs",
                "must not be above pool_max_backoff_secs",
            ));
        }
        Ok(())
    }
}
