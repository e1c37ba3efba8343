//! What the control plane and the web side read of the miners and pools, and the one thing
//! they may do to a miner ([`Fleet`]). The pool manager implements it; `control` holds an
//! `Arc<dyn Fleet>`, so power control and the admin socket reach miners without naming either
//! side.

use std::sync::Arc;

use super::miner::MinerShared;
use super::{ConnId, PoolId};
use crate::telemetry::{HistogramSnapshot, RejectReason, ShareSnapshot};

/// A connected miner as the pools' side reports it.
#[derive(Clone, Debug)]
pub struct MinerReport {
    /// Its shared record.
    pub shared: Arc<MinerShared>,
    /// The pool it is on.
    pub pool: PoolId,
    /// Estimated hashrate (H/s) from the difficulty it got accepted; 0 before its first share.
    pub hashrate: f64,
}

/// A pool as reported to operators.
#[derive(Clone, Debug)]
pub struct PoolSnapshot {
    /// Index in the config.
    pub pool: PoolId,
    /// The pool's URL as configured.
    pub url: String,
    /// Failover order: the lowest priority with a healthy connection gets the miners.
    pub priority: u32,
    /// Its share of accepted difficulty among pools of the same priority (relative).
    pub weight: u32,
    /// Healthy and in the active tier.
    pub active: bool,
    /// Any connection up.
    pub up: bool,
    /// Upstream connections open or opening.
    pub connections: usize,
    /// Miners on it.
    pub miners: usize,
    /// Shares as the pool judged them, over all its connections.
    pub shares: ShareSnapshot,
    /// Rejected and lost shares per reason, in `RejectReason::ALL` order.
    pub rejected: [u64; RejectReason::ALL.len()],
    /// Their pool difficulty per reason, same order.
    pub rejected_difficulty: [f64; RejectReason::ALL.len()],
    /// Share sent → the pool's verdict, over all its connections.
    pub submit_latency: HistogramSnapshot,
}

/// The miners and pools as the control plane sees them.
pub trait Fleet: Send + Sync {
    /// Every connected miner with its pool and estimated hashrate (read in short chunks, so
    /// sessions are never held up for long).
    fn miner_reports(&self) -> Vec<MinerReport>;
    /// Every configured pool's state, in config order.
    fn pools(&self) -> Vec<PoolSnapshot>;
    /// The configured pools' URLs, in config order.
    fn pool_urls(&self) -> Vec<String>;
    /// Closes miner `id`'s connection; `false` when no such miner is connected.
    fn kick(&self, id: ConnId) -> bool;
}
