//! Every metric the endpoint can expose: name, type, help and label names, in one table.
//! The collector describes itself from it (so the registry checks names and labels once, at
//! start), builds each scrape's families from it, and docs/metrics.md mirrors it (a
//! test checks that every name here appears there).

use prometheus::proto::{Bucket, Counter, Gauge, Histogram, LabelPair, Metric, MetricFamily};

use crate::telemetry::HistogramSnapshot;

/// A metric's type.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// Monotonic (name ends in `_total`).
    Counter,
    /// A value that goes up and down.
    Gauge,
    /// Cumulative buckets, sum and count.
    Histogram,
}

/// One metric family.
#[derive(Debug)]
pub struct Spec {
    /// Full name (`hashshift_` prefix, unit suffix, `_total` for counters).
    pub name: &'static str,
    /// Prometheus metric type (counter, gauge, histogram).
    pub kind: Kind,
    /// Label names, in the order values are given.
    pub labels: &'static [&'static str],
    /// What it measures (the `# HELP` line).
    pub help: &'static str,
}

macro_rules! specs {
    ($($id:ident: $name:literal, $kind:ident, [$($label:literal),*], $help:literal;)*) => {
        $(
            #[doc = $help]
            pub const $id: Spec = Spec {
                name: $name,
                kind: Kind::$kind,
                labels: &[$($label),*],
                help: $help,
            };
        )*
        /// Every family, in exposition order.
        pub const ALL: &[&Spec] = &[$(&$id),*];
    };
}

specs! {
    BUILD_INFO: "hashshift_build_info", Gauge, ["version"],
        "Always 1; the proxy's version as a label.";
    POOL_UP: "hashshift_pool_up", Gauge, ["pool", "url"],
        "1 when at least one connection to the pool is up.";
    POOL_ACTIVE: "hashshift_pool_active", Gauge, ["pool", "url"],
        "1 when the pool is healthy and in the active failover tier (gets miners).";
    POOL_CONNECTIONS: "hashshift_pool_connections", Gauge, ["pool", "url"],
        "Upstream connections to the pool, open or opening.";
    POOL_MINERS: "hashshift_pool_miners", Gauge, ["pool", "url"],
        "Miners (SV1 connections, SV2 channels) on the pool.";
    POOL_HASHRATE: "hashshift_pool_hashrate_hashes_per_second", Gauge, ["pool", "url"],
        "Estimated hashrate of the miners on the pool, from their accepted difficulty.";
    POOL_ACCEPTED: "hashshift_pool_shares_accepted_total", Counter, ["pool", "url"],
        "Shares the pool accepted.";
    POOL_REJECTED: "hashshift_pool_shares_rejected_total", Counter, ["pool", "url", "reason"],
        "Shares the pool rejected, by reason.";
    POOL_LOST: "hashshift_pool_shares_lost_total", Counter, ["pool", "url"],
        "Shares sent to the pool that it never answered (connection lost, timeout, queue full).";
    POOL_DIFF_ACCEPTED: "hashshift_pool_difficulty_accepted_total", Counter, ["pool", "url"],
        "Sum of the pool difficulty of accepted shares (what the pool pays for).";
    POOL_DIFF_REJECTED: "hashshift_pool_difficulty_rejected_total", Counter, ["pool", "url", "reason"],
        "Sum of the pool difficulty of rejected and lost shares, by reason.";
    POOL_BLOCKS: "hashshift_pool_blocks_found_total", Counter, ["pool", "url"],
        "Blocks found through the pool.";
    POOL_SUBMIT_LATENCY: "hashshift_pool_submit_latency_seconds", Histogram, ["pool", "url"],
        "Share sent to the pool until its verdict arrived (accepted or rejected).";
    DOWN_CONNECTIONS: "hashshift_downstream_connections", Gauge, ["protocol"],
        "Miner connections open now.";
    DOWN_ACCEPTED_CONNS: "hashshift_downstream_connections_accepted_total", Counter, ["protocol"],
        "Miner connections accepted (under the connection cap).";
    DOWN_ACCEPTED: "hashshift_downstream_shares_accepted_total", Counter, ["protocol"],
        "Shares the proxy answered as accepted.";
    DOWN_REJECTED: "hashshift_downstream_shares_rejected_total", Counter, ["protocol", "reason"],
        "Shares the proxy answered as rejected (its own verdict or the pool's), by reason.";
    DOWN_LOST: "hashshift_downstream_shares_lost_total", Counter, ["protocol"],
        "Shares answered with an error because the pool never gave a verdict.";
    DOWN_DIFF_ACCEPTED: "hashshift_downstream_difficulty_accepted_total", Counter, ["protocol"],
        "Sum of the miner difficulty of accepted shares.";
    SHARE_ROUND_TRIP: "hashshift_share_round_trip_seconds", Histogram, ["protocol"],
        "Miner's share read until the answer is queued on its socket (pool verdict included).";
    JOB_FANOUT: "hashshift_job_fanout_seconds", Histogram, ["protocol"],
        "Upstream job received until its notify is queued on a miner's socket (per miner and job).";
    WORKER_SERIES_LIMIT: "hashshift_worker_series_limit", Gauge, [],
        "How many workers get their own series ([metrics] top_workers).";
    WORKER_HASHRATE: "hashshift_worker_hashrate_hashes_per_second", Gauge, ["worker", "group"],
        "Estimated hashrate of each of the top workers by hashrate.";
    WORKER_ACCEPTED: "hashshift_worker_shares_accepted_total", Counter, ["worker", "group"],
        "Accepted shares of each top worker, over its open connections.";
    WORKER_REJECTED: "hashshift_worker_shares_rejected_total", Counter, ["worker", "group"],
        "Rejected and lost shares of each top worker, over its open connections.";
    WORKER_LAST_SHARE: "hashshift_worker_last_share_timestamp_seconds", Gauge, ["worker", "group"],
        "Unix time of each top worker's last accepted share (0: none yet).";
    WORKERS: "hashshift_workers", Gauge, ["group"],
        "Connected workers (distinct authorized worker names) per rig group.";
    WORKERS_IDLE: "hashshift_workers_idle", Gauge, ["group"],
        "Connected workers per rig group with no hashrate estimate (no accepted share yet).";
    GROUP_HASHRATE: "hashshift_group_hashrate_hashes_per_second", Gauge, ["group"],
        "Summed hashrate estimate of the group's connected workers.";
    GROUP_WORKER_HASHRATE: "hashshift_group_worker_hashrate_hashes_per_second", Gauge, ["group", "percentile"],
        "Distribution of per-worker hashrate in the group now (percentile 0 = slowest, 100 = fastest).";
    POWER_SITE_CAP: "hashshift_power_site_cap_watts", Gauge, [],
        "Configured site power cap.";
    POWER_EFFECTIVE_CAP: "hashshift_power_effective_cap_watts", Gauge, [],
        "Cap in force: the site cap, or a grid curtailment below it.";
    POWER_HEADROOM: "hashshift_power_headroom_watts", Gauge, [],
        "Headroom reserved below the cap (metering error, cooling).";
    POWER_BUDGET: "hashshift_power_budget_watts", Gauge, [],
        "Effective cap minus headroom: mining plus the GPU grant stay under it.";
    POWER_AVAILABLE: "hashshift_power_available_watts", Gauge, [],
        "Budget minus mining minus the GPU grant (negative: over budget, shedding).";
    POWER_MINING: "hashshift_power_mining_watts", Gauge, [],
        "Mining power counted as drawn (every rig not confirmed asleep).";
    POWER_DRAINING: "hashshift_power_draining_watts", Gauge, [],
        "Part of mining power in rigs told to sleep, not confirmed yet.";
    POWER_ASLEEP: "hashshift_power_asleep_watts", Gauge, [],
        "Power of rigs confirmed asleep.";
    POWER_GPU_GRANTED: "hashshift_power_gpu_granted_watts", Gauge, [],
        "GPU power grant in force.";
    POWER_GPU_WANTED: "hashshift_power_gpu_wanted_watts", Gauge, [],
        "Power the GPU side asks for.";
    POWER_GPU_IN_USE: "hashshift_power_gpu_in_use_watts", Gauge, [],
        "Power the GPU side reports in use.";
    POWER_GPU_PENDING: "hashshift_power_gpu_pending_watts", Gauge, [],
        "GPU power to be granted once draining rigs confirm asleep.";
    POWER_CURTAILED: "hashshift_power_curtailment_active", Gauge, [],
        "1 while a grid curtailment is in force.";
    POWER_RIGS: "hashshift_power_rigs", Gauge, ["state"],
        "Rigs by power state (mining, draining, asleep, waking, fault, unknown).";
    POWER_RIGS_PINNED: "hashshift_power_rigs_pinned", Gauge, [],
        "Rigs drained by an operator (pinned), in any state.";
    POWER_RIGS_ESCALATED: "hashshift_power_rigs_escalated", Gauge, [],
        "Rigs whose last command went unconfirmed past its deadline.";
    POWER_RIGS_UNVERIFIED: "hashshift_power_rigs_unverified", Gauge, [],
        "Rigs counted at their live estimate until their management API answers (not in [[rig]]).";
    RIG_IDENTITY_CONFLICTS: "hashshift_rig_identity_conflicts_total", Counter, [],
        "Connections that used a known rig's worker name from another address.";
    POWER_RIGS_REFUSED: "hashshift_power_rigs_refused_total", Counter, ["reason"],
        "Workers not made rigs of their own: per_address (counted in the address's overflow rig) or max_rigs (not counted).";
    POWER_RIGS_FORGOTTEN: "hashshift_power_rigs_forgotten_total", Counter, ["reason"],
        "Rigs removed from the inventory: unverified (gone for forget_unverified_secs) or operator (ctl forget).";
    POWER_GPU_SHED_ACTIVE: "hashshift_power_gpu_shed_in_progress", Gauge, [],
        "1 while a GPU shed is being carried through (the GPU side uses more than its grant).";
    POWER_GPU_SHED_AGE: "hashshift_power_gpu_shed_age_seconds", Gauge, [],
        "Age of the GPU shed in progress (0: none); past shed_deadline_secs it is escalated.";
    POWER_GPU_SHED_OUTSTANDING: "hashshift_power_gpu_shed_outstanding_watts", Gauge, [],
        "GPU power still to shed: in use minus the grant, while a shed is in progress.";
    POWER_GPU_SHED_CALLS: "hashshift_power_gpu_shed_calls_total", Counter, [],
        "Shed requests sent to the GPU scheduler, retries included.";
    POWER_GPU_SHED_OVERDUE: "hashshift_power_gpu_shed_overdue_total", Counter, [],
        "GPU sheds escalated for running past shed_deadline_secs.";
    POWER_PDU_CUTS: "hashshift_power_pdu_cuts_total", Counter, ["result"],
        "PDU outlet cuts of rigs that did not confirm a sleep: done (outlet confirmed off) or failed.";
    CLUSTER_LEADER: "hashshift_cluster_leader", Gauge, [],
        "1 while this instance is the site's power leader (its lease fence open), else 0 ([cluster] only).";
    CLUSTER_ETCD_WRITES: "hashshift_cluster_etcd_writes_total", Counter, [],
        "etcd writes this instance sent: puts, deletes, transactions and lease grants ([cluster] only).";
    CLUSTER_INSTANCES: "hashshift_cluster_instances", Gauge, [],
        "Instances of the site present in etcd, as last read (every few seconds) ([cluster] only).";
    CLUSTER_LEASE_REMAINING: "hashshift_cluster_lease_remaining_seconds", Gauge, [],
        "How long this instance's etcd lease is surely alive (its fence: a leader commands hardware only while it is open); 0 when lost.";
    DRAIN_TO_CONFIRMED: "hashshift_power_drain_to_confirmed_seconds", Histogram, [],
        "Sleep commanded until the rig is confirmed asleep (firmware state, then no shares).";
}

/// A family being filled for one scrape.
pub struct Family {
    spec: &'static Spec,
    metrics: Vec<Metric>,
}

impl Family {
    /// An empty family of `spec`.
    pub fn new(spec: &'static Spec) -> Self {
        Family {
            spec,
            metrics: Vec::new(),
        }
    }

    fn labelled(&self, values: &[&str]) -> Metric {
        let pairs = self
            .spec
            .labels
            .iter()
            .zip(values)
            .map(|(name, value)| {
                let mut p = LabelPair::default();
                p.set_name((*name).to_owned());
                p.set_value((*value).to_owned());
                p
            })
            .collect();
        Metric::from_label(pairs)
    }

    /// Adds a sample (a gauge's value or a counter's total) with label values in the spec's
    /// order.
    pub fn add(&mut self, values: &[&str], v: f64) {
        let mut m = self.labelled(values);
        match self.spec.kind {
            Kind::Counter => {
                let mut c = Counter::default();
                c.set_value(v);
                m.set_counter(c);
            }
            Kind::Gauge | Kind::Histogram => {
                let mut g = Gauge::default();
                g.set_value(v);
                m.set_gauge(g);
            }
        }
        self.metrics.push(m);
    }

    /// Adds a histogram sample.
    pub fn add_histogram(&mut self, values: &[&str], s: &HistogramSnapshot) {
        let mut m = self.labelled(values);
        let mut h = Histogram::default();
        let mut cumulative = 0;
        let buckets = s
            .bounds
            .iter()
            .zip(&s.buckets)
            .map(|(bound, n)| {
                cumulative += n;
                let mut b = Bucket::default();
                b.set_upper_bound(*bound);
                b.set_cumulative_count(cumulative);
                b
            })
            .collect();
        h.set_bucket(buckets);
        h.set_sample_count(s.count());
        h.set_sample_sum(s.sum);
        m.set_histogram(h);
        self.metrics.push(m);
    }

    /// The finished family.
    pub fn finish(self) -> MetricFamily {
        let mut mf = MetricFamily::default();
        mf.set_name(self.spec.name.to_owned());
        mf.set_help(self.spec.help.to_owned());
        mf.set_field_type(match self.spec.kind {
            Kind::Counter => prometheus::proto::MetricType::COUNTER,
            Kind::Gauge => prometheus::proto::MetricType::GAUGE,
            Kind::Histogram => prometheus::proto::MetricType::HISTOGRAM,
        });
        mf.set_metric(self.metrics);
        mf
    }
}
