//! The rig inventory: every connected miner as a rig, with what the NOC needs to decide on
//! it. Built on demand from the pool manager's view of the miners; identities are worker
//! names (what pool dashboards show), made unique with the connection id when two
//! connections share one.

use std::collections::HashMap;
use std::net::SocketAddr;

use serde::{Deserialize, Serialize};

use crate::downstream::listener::ConnId;
use crate::upstream::manager::{MinerReport, PoolSnapshot};

/// One rig as `ctl rigs` shows it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RigView {
    /// Rig id: the worker name (or `conn-N` before it authorizes).
    pub id: String,
    /// Stratum connection id.
    pub conn: ConnId,
    /// Worker name.
    pub worker: Option<String>,
    /// Address it connects from.
    pub address: SocketAddr,
    /// Pool it mines on (URL).
    pub pool: Option<String>,
    /// Live hashrate from the difficulty it got accepted (TH/s).
    pub hashrate_ths: f64,
    /// Current share difficulty.
    pub difficulty: f64,
    /// Shares accepted.
    pub accepted: u64,
    /// Shares rejected.
    pub rejected: u64,
    /// Seconds since its last accepted share (`None`: none yet).
    pub last_share_age_secs: Option<f64>,
    /// Seconds connected.
    pub connected_secs: f64,
}

/// Rigs from the manager's miners, with unique ids, sorted by id.
pub fn rigs(miners: &[MinerReport], pools: &[PoolSnapshot], now_unix_ms: u64) -> Vec<RigView> {
    let mut per_name: HashMap<String, usize> = HashMap::new();
    for m in miners {
        if let Some(w) = m.shared.worker() {
            *per_name.entry(w).or_default() += 1;
        }
    }
    let mut out: Vec<RigView> = miners
        .iter()
        .map(|m| {
            let s = &m.shared;
            let worker = s.worker();
            let id = match &worker {
                Some(w) if per_name.get(w) == Some(&1) => w.clone(),
                Some(w) => format!("{w}#{}", s.id),
                None => format!("conn-{}", s.id),
            };
            let counters = s.counters.snapshot();
            let last = s.last_share_unix_ms();
            RigView {
                id,
                conn: s.id,
                worker,
                address: s.peer,
                pool: pools.get(m.pool).map(|p| p.url.clone()),
                hashrate_ths: m.hashrate / 1e12,
                difficulty: s.difficulty.get(),
                accepted: counters.accepted,
                rejected: counters.rejected,
                last_share_age_secs: (last > 0)
                    .then(|| now_unix_ms.saturating_sub(last) as f64 / 1000.0),
                connected_secs: s.connected_at.elapsed().as_secs_f64(),
            }
        })
        .collect();
    out.sort_by(|a, b| a.id.cmp(&b.id));
    out
}
