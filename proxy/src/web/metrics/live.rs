//! A running proxy as a [`SampleSource`]: pools and miners from the pool manager, power from
//! the controller's published view, the rest from the [`Instruments`].
//!
//! Everything is read from what already exists for operators: one short pass under the pool
//! manager's lock (`pools()`, `miner_reports()`), the power view's `watch` (no round trip
//! to the controller), relaxed atomic loads.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Arc;

use super::workers::WorkerSample;
use super::{DownstreamSample, PoolSample, Sample, SampleSource};
use crate::config::{Config, RigGroup};
use crate::control::cluster_link::ClusterLink;
use crate::control::power::PowerSlot;
use crate::control::power::rigs::UNGROUPED;
use crate::telemetry::{DownstreamStats, Instruments, RejectReason, ShareCounters};
use crate::upstream::manager::PoolManager;

/// See the module docs.
pub struct LiveSource {
    manager: Arc<PoolManager>,
    power: PowerSlot,
    instruments: Arc<Instruments>,
    groups: Vec<RigGroup>,
    /// Worker name → group index, from `[[rig]] group` overrides.
    overrides: HashMap<String, usize>,
    names: Vec<String>,
    cluster: Option<Arc<dyn ClusterLink>>,
}

impl LiveSource {
    /// A source over a running proxy's parts; rig groups come from `config`.
    pub fn new(
        config: &Config,
        manager: Arc<PoolManager>,
        power: PowerSlot,
        instruments: Arc<Instruments>,
    ) -> Self {
        let groups = config.rig_group.clone();
        let overrides = config
            .rig
            .iter()
            .filter_map(|r| {
                let g = r.group.as_ref()?;
                Some((r.worker.clone(), groups.iter().position(|x| &x.name == g)?))
            })
            .collect();
        let mut names: Vec<String> = groups.iter().map(|g| g.name.clone()).collect();
        names.push(UNGROUPED.to_owned());
        LiveSource {
            manager,
            power,
            instruments,
            groups,
            overrides,
            names,
            cluster: None,
        }
    }

    /// Shows the cluster's figures too (`[cluster]`).
    pub fn with_cluster(mut self, cluster: Option<Arc<dyn ClusterLink>>) -> Self {
        self.cluster = cluster;
        self
    }

    /// The group index of a worker (the last index: ungrouped), as the power controller's
    /// registry decides it: an override first, then the first group that matches.
    fn group_of(&self, worker: &str, ip: IpAddr) -> usize {
        if let Some(g) = self.overrides.get(worker) {
            return *g;
        }
        self.groups
            .iter()
            .position(|g| g.matches(Some(worker), ip))
            .unwrap_or(self.groups.len())
    }
}

fn by_reason(c: &ShareCounters) -> [u64; RejectReason::ALL.len()] {
    RejectReason::ALL.map(|r| c.reasons.get(r))
}

fn downstream(s: &DownstreamStats) -> DownstreamSample {
    DownstreamSample {
        protocol: s.protocol,
        open: s.open_connections(),
        opened: s.opened_connections(),
        shares: s.shares.snapshot(),
        rejected: by_reason(&s.shares),
        round_trip: s.share_round_trip.snapshot(),
        fanout: s.job_fanout.snapshot(),
    }
}

impl SampleSource for LiveSource {
    fn sample(&self) -> Sample {
        let miners = self.manager.miner_reports();
        let mut pool_hashrate: HashMap<usize, f64> = HashMap::new();
        let mut workers: HashMap<String, WorkerSample> = HashMap::new();
        for m in &miners {
            *pool_hashrate.entry(m.pool).or_default() += m.hashrate;
            // Miners that have not authorized have no name yet: they count in the pools and
            // connections, not as workers.
            let Some(name) = m.shared.worker() else {
                continue;
            };
            let s = m.shared.counters.snapshot();
            let w = workers.entry(name).or_insert_with_key(|name| WorkerSample {
                name: name.clone(),
                group: self.group_of(name, m.shared.peer.ip()),
                ..WorkerSample::default()
            });
            w.hashrate += m.hashrate;
            w.accepted += s.accepted;
            w.rejected += s.rejected + s.lost;
            w.last_share_unix_ms = w.last_share_unix_ms.max(m.shared.last_share_unix_ms());
        }
        let pools = self
            .manager
            .pools()
            .into_iter()
            .map(|p| PoolSample {
                hashrate: pool_hashrate.get(&p.pool).copied().unwrap_or(0.0),
                pool: p.pool,
                url: p.url,
                up: p.up,
                active: p.active,
                connections: p.connections,
                miners: p.miners,
                shares: p.shares,
                rejected: p.rejected,
                rejected_difficulty: p.rejected_difficulty,
                submit_latency: p.submit_latency,
            })
            .collect();
        let handle = self.power.get();
        let view = handle.as_ref().map(|h| h.view());
        let power = handle
            .as_ref()
            .zip(view.as_ref())
            .map(|(h, v)| (v.snapshot.clone(), h.drain_to_confirmed()));
        let identity = handle.as_ref().zip(view.as_ref()).map(|(h, v)| {
            let f = h.identity();
            let unverified = v
                .rigs
                .values()
                .filter(|r| r.identity == Some(crate::control::power::rigs::Identity::Unverified))
                .count() as u64;
            super::IdentitySample {
                unverified,
                conflicts: f.identity_conflicts,
                refused_per_address: f.refused_per_address,
                refused_max_rigs: f.refused_max_rigs,
                forgotten_unverified: f.forgotten_unverified,
                forgotten_operator: f.forgotten_operator,
            }
        });
        let pdu_cuts = view.as_ref().map(|v| v.pdu_cuts).unwrap_or_default();
        let gpu_shed = view
            .map(|v| {
                let s = &v.gpu_shed;
                super::GpuShedSample {
                    age_secs: s.current.map(|(since, _)| since.elapsed().as_secs_f64()),
                    outstanding_w: s.current.map_or(0.0, |(_, w)| w.0 as f64),
                    calls_total: s.calls_total,
                    overdue_total: s.overdue_total,
                }
            })
            .unwrap_or_default();
        Sample {
            pools,
            downstream: vec![
                downstream(&self.instruments.sv1),
                downstream(&self.instruments.sv2),
            ],
            groups: self.names.clone(),
            workers: workers.into_values().collect(),
            power,
            identity,
            gpu_shed,
            pdu_cuts,
            cluster: self.cluster.as_ref().map(|c| c.gauges()),
        }
    }
}
