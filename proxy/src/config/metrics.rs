//! `[metrics]`: the Prometheus endpoint.

use std::net::SocketAddr;

use serde::{Deserialize, Serialize};

/// Most per-worker series allowed (each worker has four); past this a scrape is no longer
/// cheap for Prometheus, and aggregates per group say more anyway.
pub const MAX_TOP_WORKERS: usize = 10_000;

/// The Prometheus endpoint (`GET /metrics` on its own listener, no authentication: keep it
/// on a management network).
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Metrics {
    /// Address to listen on.
    pub listen: SocketAddr,
    /// How many workers (the fastest by hashrate) get their own series; every worker is
    /// counted in the per-group aggregates. 0 to 10000.
    #[serde(default = "default_top_workers")]
    pub top_workers: usize,
}

fn default_top_workers() -> usize {
    100
}

impl Metrics {
    pub(super) fn validate(&self) -> Result<(), super::ConfigError> {
        if self.top_workers > MAX_TOP_WORKERS {
            return Err(super::invalid(
                "metrics.top_workers",
                format!("must be at most {MAX_TOP_WORKERS}"),
            ));
        }
        Ok(())
    }
}
