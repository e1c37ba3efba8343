//! The rig inventory: every connected miner as a rig, with what the NOC needs to decide on
//! it. Built on demand from the pool manager's view of the miners. With power control, each
//! connection shows as the rig the power registry counts it as (its worker name, or
//! `WORKER@ADDRESS` for a claim on a known rig's name from another address, or
//! `overflow@ADDRESS`); otherwise ids are worker names (what pool dashboards show). Ids are
//! made unique with the connection id when two connections share one.

use std::collections::HashMap;
use std::net::SocketAddr;

use serde::Serialize;

use crate::control::arbiter::RigId;
use crate::control::power::{PowerView, RigPower};
use crate::pool_link::ConnId;
use crate::pool_link::report::MinerReport;

/// One rig as `ctl rigs` shows it.
#[derive(Clone, Debug, Serialize)]
pub struct RigView {
    /// Rig id: the worker name (or `conn-N` before it authorizes).
    pub id: String,
    /// Stratum connection id (`None`: not connected, e.g. asleep).
    pub conn: Option<ConnId>,
    /// Worker name.
    pub worker: Option<String>,
    /// Address it connects from.
    pub address: Option<SocketAddr>,
    /// Power state (`mining`, `draining`, `asleep`, `waking`, `fault`, `unknown`); `None`
    /// without power control.
    pub state: Option<String>,
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
    /// The power side (group, model, power figure and its source and age, pin).
    #[serde(flatten)]
    pub power: Option<RigPower>,
}

/// Rigs from the manager's miners (`pool_urls` by pool index), with unique ids, and (with
/// power control) the rigs the arbiter knows that are not connected (asleep ones), sorted by
/// id. Runs on copies, holding no lock.
pub fn rigs(
    miners: &[MinerReport],
    pool_urls: &[String],
    power: Option<&PowerView>,
    now_unix_ms: u64,
) -> Vec<RigView> {
    // The rig a connection counts as: the power registry's word, else its worker name.
    let rig_of = |m: &MinerReport| -> Option<String> {
        match power.and_then(|v| v.conn_rigs.get(&m.shared.id)) {
            Some(rig) => Some(rig.0.clone()),
            None => m.shared.worker(),
        }
    };
    let mut per_name: HashMap<String, usize> = HashMap::new();
    for m in miners {
        if let Some(r) = rig_of(m) {
            *per_name.entry(r).or_default() += 1;
        }
    }
    let power_of = |rig: &Option<String>| {
        let p = power?.rigs.get(&RigId(rig.clone()?))?;
        Some(p.clone())
    };
    let mut out: Vec<RigView> = miners
        .iter()
        .map(|m| {
            let s = &m.shared;
            let worker = s.worker();
            let rig = rig_of(m);
            let id = match &rig {
                Some(r) if per_name.get(r) == Some(&1) => r.clone(),
                Some(r) => format!("{r}#{}", s.id),
                None => format!("conn-{}", s.id),
            };
            let counters = s.counters.snapshot();
            let last = s.last_share_unix_ms();
            let power = power_of(&rig);
            RigView {
                id,
                conn: Some(s.id),
                address: Some(s.peer),
                state: power.as_ref().map(state_name),
                pool: pool_urls.get(m.pool).cloned(),
                hashrate_ths: m.hashrate / 1e12,
                difficulty: s.difficulty.get(),
                accepted: counters.accepted,
                rejected: counters.rejected,
                last_share_age_secs: (last > 0)
                    .then(|| now_unix_ms.saturating_sub(last) as f64 / 1000.0),
                connected_secs: s.connected_at.elapsed().as_secs_f64(),
                worker,
                power,
            }
        })
        .collect();
    if let Some(view) = power {
        for (id, p) in &view.rigs {
            if per_name.contains_key(&id.0) {
                continue;
            }
            out.push(RigView {
                id: id.0.clone(),
                conn: None,
                worker: Some(id.0.clone()),
                address: None,
                state: Some(state_name(p)),
                pool: None,
                hashrate_ths: 0.0,
                difficulty: 0.0,
                accepted: 0,
                rejected: 0,
                last_share_age_secs: None,
                connected_secs: 0.0,
                power: Some(p.clone()),
            });
        }
    }
    out.sort_by(|a, b| a.id.cmp(&b.id));
    out
}

fn state_name(p: &RigPower) -> String {
    serde_json::to_value(p.state)
        .ok()
        .and_then(|v| v.as_str().map(str::to_owned))
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::{Duration, Instant};

    use super::*;
    use crate::pool_link::miner::MinerShared;

    /// Not a timed assertion: prints how long building the inventory of 10 000 miners takes
    /// once the pool manager's reports are copied (`cargo test --release --lib
    /// inventory_of_10k -- --nocapture`); the lock holds of that copy are timed in the pool
    /// manager's tests. Every miner is a rig, once.
    #[test]
    fn inventory_of_10k_miners_outside_the_lock() {
        let reports: Vec<MinerReport> = (0..10_000u64)
            .map(|id| {
                let peer = SocketAddr::from(([10, 0, (id >> 8) as u8, id as u8], 4028));
                let shared = Arc::new(MinerShared::new(id, peer));
                shared.set_worker(&format!("rig{id}"));
                MinerReport {
                    shared,
                    pool: usize::try_from(id % 2).unwrap_or(0),
                    hashrate: 1e12,
                }
            })
            .collect();
        let urls = vec!["stratum+tcp://127.0.0.1:9".to_owned(); 2];
        let mut times: Vec<Duration> = Vec::new();
        for _ in 0..20 {
            let t = Instant::now();
            let rigs = rigs(&reports, &urls, None, 0);
            times.push(t.elapsed());
            assert_eq!(rigs.len(), 10_000);
        }
        times.sort();
        println!(
            "inventory, outside the lock: median {:?}, max {:?}",
            times[times.len() / 2],
            times[times.len() - 1]
        );
    }
}
