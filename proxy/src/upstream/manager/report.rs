//! What the pool manager tells operators and metrics: pools with their share counts, and
//! every miner with its estimated hashrate, copied a chunk at a time under the lock.

use std::ops::Bound;

use super::{PoolManager, REPORT_CHUNK};
use crate::pool_link::ConnId;
use crate::pool_link::report::{Fleet, MinerReport, PoolSnapshot};
use crate::telemetry::histogram::LATENCY_BUCKETS;
use crate::telemetry::{HistogramSnapshot, RejectReason};
use crate::upstream::connection::ConnStatus;

impl PoolManager {
    /// Pools as operators see them.
    pub fn pools(&self) -> Vec<PoolSnapshot> {
        let inner = self.lock();
        // One pass over the miners, not one per pool.
        let mut miners = vec![0usize; inner.pools.len()];
        for m in inner.miners.values() {
            if let Some(n) = miners.get_mut(m.pool) {
                *n = n.saturating_add(1);
            }
        }
        inner
            .pools
            .iter()
            .enumerate()
            .map(|(i, p)| {
                let mut shares = crate::telemetry::ShareSnapshot::default();
                let mut rejected = [0; RejectReason::ALL.len()];
                let mut rejected_difficulty = [0.0; RejectReason::ALL.len()];
                let mut submit_latency = HistogramSnapshot::empty(LATENCY_BUCKETS);
                for c in &p.conns {
                    let s = c.handle.counters.snapshot();
                    shares.accepted += s.accepted;
                    shares.rejected += s.rejected;
                    shares.lost += s.lost;
                    shares.accepted_difficulty += s.accepted_difficulty;
                    shares.blocks += s.blocks;
                    for (i, r) in RejectReason::ALL.iter().enumerate() {
                        rejected[i] += c.handle.counters.reasons.get(*r);
                        rejected_difficulty[i] += c.handle.counters.rejected_difficulty.get(*r);
                    }
                    submit_latency.merge(&c.handle.submit_latency.snapshot());
                }
                PoolSnapshot {
                    pool: i,
                    url: p.params.url.to_string(),
                    priority: p.priority,
                    weight: p.weight,
                    active: inner.router.is_active(i),
                    up: p
                        .conns
                        .iter()
                        .any(|c| *c.handle.status.borrow() == ConnStatus::Up),
                    connections: p.conns.len(),
                    miners: miners.get(i).copied().unwrap_or(0),
                    shares,
                    rejected,
                    rejected_difficulty,
                    submit_latency,
                }
            })
            .collect()
    }

    /// Pool URLs, in config order (what the rig inventory needs of the pools).
    pub fn pool_urls(&self) -> Vec<String> {
        self.lock()
            .pools
            .iter()
            .map(|p| p.params.url.to_string())
            .collect()
    }

    /// Every miner with the manager's view of it, for the control plane and metrics.
    ///
    /// Copied [`REPORT_CHUNK`] miners per hold of the lock, so a fleet of 10 000 never holds
    /// up connects or the health tick for the whole copy. Not one atomic snapshot: a miner
    /// that connects or leaves meanwhile may or may not be in it; each one in it is whole.
    pub fn miner_reports(&self) -> Vec<MinerReport> {
        let mut out = Vec::new();
        let mut after = None;
        while let Some(last) = self.report_chunk(after, &mut out) {
            after = Some(last);
        }
        out
    }

    /// Appends up to [`REPORT_CHUNK`] miners with ids above `after` (all of them from the
    /// first when `None`) under one hold of the lock; returns the last id when there may be
    /// more.
    pub(super) fn report_chunk(
        &self,
        after: Option<ConnId>,
        out: &mut Vec<MinerReport>,
    ) -> Option<ConnId> {
        // Room first: growing the vector under the lock would copy every report so far.
        out.reserve(REPORT_CHUNK);
        let from = after.map_or(Bound::Unbounded, Bound::Excluded);
        let inner = self.lock();
        let mut copied = 0;
        let mut last = None;
        for (&id, m) in inner
            .miners
            .range((from, Bound::Unbounded))
            .take(REPORT_CHUNK)
        {
            out.push(MinerReport {
                shared: m.shared.clone(),
                pool: m.pool,
                hashrate: m.hashrate,
            });
            copied += 1;
            last = Some(id);
        }
        if copied < REPORT_CHUNK { None } else { last }
    }
}

/// The control plane's view: the same reports, and a kick.
impl Fleet for PoolManager {
    fn miner_reports(&self) -> Vec<MinerReport> {
        PoolManager::miner_reports(self)
    }

    fn pools(&self) -> Vec<PoolSnapshot> {
        PoolManager::pools(self)
    }

    fn pool_urls(&self) -> Vec<String> {
        PoolManager::pool_urls(self)
    }

    fn kick(&self, id: ConnId) -> bool {
        PoolManager::kick(self, id)
    }
}
