//! The Prometheus endpoint (`[metrics] listen`, `GET /metrics`).
//!
//! Nothing is kept twice: a scrape reads the live state where it already exists (the pool
//! manager's pools and miners, the power controller's view) and the hot-path instruments
//! ([`crate::telemetry::Instruments`], the pool connections' submit-latency histograms),
//! turns them into metric families ([`catalogue`]) and hands them to the `prometheus`
//! crate's registry and text encoder. Per-worker series are capped ([`workers`]).
//!
//! The collection is split in two so that it can be tested without a proxy: a
//! [`SampleSource`] produces a plain [`Sample`] ([`live::LiveSource`] from a running proxy),
//! and [`families`] turns a sample into families.
//!
//! Why the `prometheus` crate rather than `prometheus-client`: the latter only writes the
//! OpenMetrics text format, whose counter `# TYPE` lines omit `_total`; `promtool check
//! metrics` (which CI runs) parses the classic text format and rejects that. `prometheus`
//! writes the classic format; its registries are plain values (the global default registry
//! is never used), and with default features off it pulls no protobuf.

pub mod catalogue;
pub mod live;
pub mod server;
pub mod workers;

use std::sync::Arc;

use prometheus::core::{Collector, Desc};
use prometheus::proto::MetricFamily;
use prometheus::{Encoder, Registry, TextEncoder};

use self::catalogue::Family;
use self::workers::{QUANTILES, WorkerSample};
use crate::control::arbiter::PowerSnapshot;
use crate::telemetry::{HistogramSnapshot, RejectReason, ShareSnapshot};

/// The content type of the exposition (the classic text format, 0.0.4).
pub const CONTENT_TYPE: &str = prometheus::TEXT_FORMAT;

/// A pool at scrape time.
#[derive(Clone, Debug)]
pub struct PoolSample {
    /// Index in the config (the `pool` label).
    pub pool: usize,
    /// URL (the `url` label).
    pub url: String,
    /// Any connection up.
    pub up: bool,
    /// In the active tier.
    pub active: bool,
    /// Upstream connections open or opening.
    pub connections: usize,
    /// Miners on it.
    pub miners: usize,
    /// Summed hashrate estimate of its miners (H/s).
    pub hashrate: f64,
    /// Shares as the pool judged them.
    pub shares: ShareSnapshot,
    /// Rejected (and lost) shares per reason, in [`RejectReason::ALL`] order.
    pub rejected: [u64; RejectReason::ALL.len()],
    /// Their difficulty per reason, same order.
    pub rejected_difficulty: [f64; RejectReason::ALL.len()],
    /// Share sent → verdict.
    pub submit_latency: HistogramSnapshot,
}

/// A downstream protocol at scrape time.
#[derive(Clone, Debug)]
pub struct DownstreamSample {
    /// `sv1` or `sv2`.
    pub protocol: &'static str,
    /// Open connections.
    pub open: u64,
    /// Accepted since start.
    pub opened: u64,
    /// Share totals.
    pub shares: ShareSnapshot,
    /// Rejected (and lost) shares per reason, in [`RejectReason::ALL`] order.
    pub rejected: [u64; RejectReason::ALL.len()],
    /// Share round trip.
    pub round_trip: HistogramSnapshot,
    /// Job fan-out.
    pub fanout: HistogramSnapshot,
}

/// Everything one scrape shows.
#[derive(Clone, Debug, Default)]
pub struct Sample {
    /// Pools in config order.
    pub pools: Vec<PoolSample>,
    /// Downstream protocols.
    pub downstream: Vec<DownstreamSample>,
    /// Group names; the last is `ungrouped`. Workers refer to them by index.
    pub groups: Vec<String>,
    /// Every connected, authorized worker (connections of one name summed).
    pub workers: Vec<WorkerSample>,
    /// The power picture and the drain-to-confirmed histogram, when `[power]` is on.
    pub power: Option<(PowerSnapshot, HistogramSnapshot)>,
    /// The rig registry's identity figures, when `[power]` is on.
    pub identity: Option<IdentitySample>,
    /// The GPU shed follow-up (shown with the power families).
    pub gpu_shed: GpuShedSample,
    /// PDU cuts so far (shown with the power families).
    pub pdu_cuts: crate::control::power::PduCuts,
    /// The cluster's figures, when `[cluster]` is on.
    pub cluster: Option<crate::control::cluster_link::ClusterGauges>,
}

/// The rig registry's identity figures.
#[derive(Clone, Copy, Debug, Default)]
pub struct IdentitySample {
    /// Rigs not (yet) known to be machines.
    pub unverified: u64,
    /// Identity conflicts so far.
    pub conflicts: u64,
    /// Workers put in an overflow rig (`max_rigs_per_address`).
    pub refused_per_address: u64,
    /// Workers not counted (`MAX_RIGS`).
    pub refused_max_rigs: u64,
    /// Unverified rigs forgotten.
    pub forgotten_unverified: u64,
    /// Rigs forgotten by operators.
    pub forgotten_operator: u64,
}

/// The GPU shed follow-up, for the `hashshift_power_gpu_shed_*` families.
#[derive(Clone, Debug, Default)]
pub struct GpuShedSample {
    /// Age of the shed in progress; `None` when there is none.
    pub age_secs: Option<f64>,
    /// GPU power still to shed (W).
    pub outstanding_w: f64,
    /// Shed calls since start.
    pub calls_total: u64,
    /// Sheds escalated since start.
    pub overdue_total: u64,
}

/// Produces a [`Sample`] at each scrape.
pub trait SampleSource: Send + Sync + 'static {
    /// The state now.
    fn sample(&self) -> Sample;
}

/// The families of one sample, with at most `top_workers` per-worker series each.
pub fn families(sample: Sample, top_workers: usize) -> Vec<MetricFamily> {
    use catalogue::*;
    let mut out = Vec::new();
    let mut info = Family::new(&BUILD_INFO);
    info.add(&[env!("CARGO_PKG_VERSION")], 1.0);
    out.push(info);

    let mut pool_families: Vec<Family> = [
        &POOL_UP,
        &POOL_ACTIVE,
        &POOL_CONNECTIONS,
        &POOL_MINERS,
        &POOL_HASHRATE,
        &POOL_ACCEPTED,
        &POOL_LOST,
        &POOL_DIFF_ACCEPTED,
        &POOL_BLOCKS,
    ]
    .into_iter()
    .map(Family::new)
    .collect();
    let mut pool_rejected = Family::new(&POOL_REJECTED);
    let mut pool_diff_rejected = Family::new(&POOL_DIFF_REJECTED);
    let mut pool_latency = Family::new(&POOL_SUBMIT_LATENCY);
    for p in &sample.pools {
        let id = p.pool.to_string();
        let labels = [id.as_str(), p.url.as_str()];
        let values = [
            f64::from(u8::from(p.up)),
            f64::from(u8::from(p.active)),
            p.connections as f64,
            p.miners as f64,
            p.hashrate,
            p.shares.accepted as f64,
            p.shares.lost as f64,
            p.shares.accepted_difficulty,
            p.shares.blocks as f64,
        ];
        for (f, v) in pool_families.iter_mut().zip(values) {
            f.add(&labels, v);
        }
        for (i, reason) in RejectReason::ALL.iter().enumerate() {
            let l = [id.as_str(), p.url.as_str(), reason.as_str()];
            if *reason != RejectReason::Lost {
                pool_rejected.add(&l, p.rejected[i] as f64);
            }
            pool_diff_rejected.add(&l, p.rejected_difficulty[i]);
        }
        pool_latency.add_histogram(&labels, &p.submit_latency);
    }
    out.extend(pool_families);
    out.extend([pool_rejected, pool_diff_rejected, pool_latency]);

    let mut down: Vec<Family> = [
        &DOWN_CONNECTIONS,
        &DOWN_ACCEPTED_CONNS,
        &DOWN_ACCEPTED,
        &DOWN_LOST,
        &DOWN_DIFF_ACCEPTED,
    ]
    .into_iter()
    .map(Family::new)
    .collect();
    let mut down_rejected = Family::new(&DOWN_REJECTED);
    let mut round_trip = Family::new(&SHARE_ROUND_TRIP);
    let mut fanout = Family::new(&JOB_FANOUT);
    for d in &sample.downstream {
        let labels = [d.protocol];
        let values = [
            d.open as f64,
            d.opened as f64,
            d.shares.accepted as f64,
            d.shares.lost as f64,
            d.shares.accepted_difficulty,
        ];
        for (f, v) in down.iter_mut().zip(values) {
            f.add(&labels, v);
        }
        for (i, reason) in RejectReason::ALL.iter().enumerate() {
            if *reason != RejectReason::Lost {
                down_rejected.add(&[d.protocol, reason.as_str()], d.rejected[i] as f64);
            }
        }
        round_trip.add_histogram(&labels, &d.round_trip);
        fanout.add_histogram(&labels, &d.fanout);
    }
    out.extend(down);
    out.extend([down_rejected, round_trip, fanout]);

    out.extend(worker_families(&sample, top_workers));
    if let Some((power, drain)) = &sample.power {
        out.extend(power_families(power, drain));
        out.extend(gpu_shed_families(&sample.gpu_shed));
        let mut cuts = Family::new(&catalogue::POWER_PDU_CUTS);
        cuts.add(&["done"], sample.pdu_cuts.done as f64);
        cuts.add(&["failed"], sample.pdu_cuts.failed as f64);
        out.push(cuts);
    }
    if let Some(i) = &sample.identity {
        out.extend(identity_families(i));
    }
    if let Some(c) = &sample.cluster {
        let gauges = [
            (&catalogue::CLUSTER_LEADER, if c.leader { 1.0 } else { 0.0 }),
            (&catalogue::CLUSTER_ETCD_WRITES, c.etcd_writes as f64),
            (&catalogue::CLUSTER_INSTANCES, c.instances as f64),
            (&catalogue::CLUSTER_LEASE_REMAINING, c.lease_remaining_secs),
        ];
        for (spec, v) in gauges {
            let mut f = Family::new(spec);
            f.add(&[], v);
            out.push(f);
        }
    }
    out.into_iter().map(Family::finish).collect()
}

fn worker_families(sample: &Sample, top_workers: usize) -> Vec<Family> {
    use catalogue::*;
    let groups = sample.groups.len().max(1);
    let name = |i: usize| sample.groups.get(i).map_or("ungrouped", String::as_str);
    let view = workers::summarize(sample.workers.clone(), top_workers, groups);
    let mut limit = Family::new(&WORKER_SERIES_LIMIT);
    limit.add(&[], top_workers as f64);
    let mut per: Vec<Family> = [
        &WORKER_HASHRATE,
        &WORKER_ACCEPTED,
        &WORKER_REJECTED,
        &WORKER_LAST_SHARE,
    ]
    .into_iter()
    .map(Family::new)
    .collect();
    for w in &view.top {
        let labels = [w.name.as_str(), name(w.group)];
        let values = [
            w.hashrate,
            w.accepted as f64,
            w.rejected as f64,
            w.last_share_unix_ms as f64 / 1000.0,
        ];
        for (f, v) in per.iter_mut().zip(values) {
            f.add(&labels, v);
        }
    }
    let mut agg: Vec<Family> = [&WORKERS, &WORKERS_IDLE, &GROUP_HASHRATE]
        .into_iter()
        .map(Family::new)
        .collect();
    let mut quantiles = Family::new(&GROUP_WORKER_HASHRATE);
    for (i, g) in view.groups.iter().enumerate() {
        let labels = [name(i)];
        for (f, v) in agg
            .iter_mut()
            .zip([g.workers as f64, g.idle as f64, g.hashrate])
        {
            f.add(&labels, v);
        }
        for ((_, q), v) in QUANTILES.iter().zip(g.quantiles) {
            quantiles.add(&[name(i), q], v);
        }
    }
    let mut out = vec![limit];
    out.extend(per);
    out.extend(agg);
    out.push(quantiles);
    out
}

fn power_families(p: &PowerSnapshot, drain: &HistogramSnapshot) -> Vec<Family> {
    use catalogue::*;
    let w = |x: crate::control::arbiter::Watts| x.0 as f64;
    let available = w(p.budget) - w(p.mining) - w(p.gpu_granted);
    let scalars: [(&'static Spec, f64); 15] = [
        (&POWER_SITE_CAP, w(p.site_cap)),
        (&POWER_EFFECTIVE_CAP, w(p.effective_cap)),
        (&POWER_HEADROOM, w(p.headroom)),
        (&POWER_BUDGET, w(p.budget)),
        (&POWER_AVAILABLE, available),
        (&POWER_MINING, w(p.mining)),
        (&POWER_DRAINING, w(p.draining)),
        (&POWER_ASLEEP, w(p.asleep)),
        (&POWER_GPU_GRANTED, w(p.gpu_granted)),
        (&POWER_GPU_WANTED, w(p.gpu_wanted)),
        (&POWER_GPU_IN_USE, w(p.gpu_in_use)),
        (&POWER_GPU_PENDING, w(p.gpu_pending)),
        (
            &POWER_CURTAILED,
            f64::from(u8::from(p.curtailment.is_some())),
        ),
        (&POWER_RIGS_PINNED, p.rigs.pinned as f64),
        (&POWER_RIGS_ESCALATED, p.rigs.escalated as f64),
    ];
    let mut out: Vec<Family> = scalars
        .into_iter()
        .map(|(spec, v)| {
            let mut f = Family::new(spec);
            f.add(&[], v);
            f
        })
        .collect();
    let mut rigs = Family::new(&POWER_RIGS);
    let c = &p.rigs;
    for (state, n) in [
        ("mining", c.mining),
        ("draining", c.draining),
        ("asleep", c.asleep),
        ("waking", c.waking),
        ("fault", c.fault),
        ("unknown", c.unknown),
    ] {
        rigs.add(&[state], n as f64);
    }
    out.push(rigs);
    let mut d = Family::new(&DRAIN_TO_CONFIRMED);
    d.add_histogram(&[], drain);
    out.push(d);
    out
}

fn identity_families(i: &IdentitySample) -> Vec<Family> {
    use catalogue::*;
    let mut unverified = Family::new(&POWER_RIGS_UNVERIFIED);
    unverified.add(&[], i.unverified as f64);
    let mut conflicts = Family::new(&RIG_IDENTITY_CONFLICTS);
    conflicts.add(&[], i.conflicts as f64);
    let mut refused = Family::new(&POWER_RIGS_REFUSED);
    refused.add(&["per_address"], i.refused_per_address as f64);
    refused.add(&["max_rigs"], i.refused_max_rigs as f64);
    let mut forgotten = Family::new(&POWER_RIGS_FORGOTTEN);
    forgotten.add(&["unverified"], i.forgotten_unverified as f64);
    forgotten.add(&["operator"], i.forgotten_operator as f64);
    vec![unverified, conflicts, refused, forgotten]
}

fn gpu_shed_families(s: &GpuShedSample) -> Vec<Family> {
    use catalogue::*;
    [
        (
            &POWER_GPU_SHED_ACTIVE,
            f64::from(u8::from(s.age_secs.is_some())),
        ),
        (&POWER_GPU_SHED_AGE, s.age_secs.unwrap_or(0.0)),
        (&POWER_GPU_SHED_OUTSTANDING, s.outstanding_w),
        (&POWER_GPU_SHED_CALLS, s.calls_total as f64),
        (&POWER_GPU_SHED_OVERDUE, s.overdue_total as f64),
    ]
    .into_iter()
    .map(|(spec, v)| {
        let mut f = Family::new(spec);
        f.add(&[], v);
        f
    })
    .collect()
}

/// The collector a registry calls at each scrape.
pub struct ProxyCollector {
    source: Arc<dyn SampleSource>,
    top_workers: usize,
    descs: Vec<Desc>,
}

impl ProxyCollector {
    /// A collector over `source` with at most `top_workers` per-worker series per family.
    pub fn new(source: Arc<dyn SampleSource>, top_workers: usize) -> prometheus::Result<Self> {
        let descs = catalogue::ALL
            .iter()
            .map(|s| {
                let labels = s.labels.iter().map(|l| (*l).to_owned()).collect();
                Desc::new(
                    s.name.to_owned(),
                    s.help.to_owned(),
                    labels,
                    Default::default(),
                )
            })
            .collect::<prometheus::Result<Vec<_>>>()?;
        Ok(ProxyCollector {
            source,
            top_workers,
            descs,
        })
    }
}

impl Collector for ProxyCollector {
    fn desc(&self) -> Vec<&Desc> {
        self.descs.iter().collect()
    }

    fn collect(&self) -> Vec<MetricFamily> {
        families(self.source.sample(), self.top_workers)
    }
}

/// A registry holding one [`ProxyCollector`] (registration checks every name and label).
pub fn registry(source: Arc<dyn SampleSource>, top_workers: usize) -> prometheus::Result<Registry> {
    let registry = Registry::new();
    registry.register(Box::new(ProxyCollector::new(source, top_workers)?))?;
    Ok(registry)
}

/// One scrape of `registry` in the text format.
pub fn render(registry: &Registry) -> Result<String, prometheus::Error> {
    let mut buf = Vec::new();
    TextEncoder::new().encode(&registry.gather(), &mut buf)?;
    String::from_utf8(buf).map_err(|e| prometheus::Error::Msg(e.to_string()))
}

#[cfg(test)]
mod tests;
