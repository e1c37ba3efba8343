//! The exposition without a proxy: a fixed [`Sample`] through the registry and encoder.

use std::collections::HashSet;
use std::time::Instant;

use super::catalogue::{ALL, Kind};
use super::workers::WorkerSample;
use super::*;
use crate::control::arbiter::{PowerSnapshot, RigCounts, Watts};
use crate::telemetry::histogram::{DRAIN_BUCKETS, FANOUT_BUCKETS, LATENCY_BUCKETS};

struct Fixed(Sample);

impl SampleSource for Fixed {
    fn sample(&self) -> Sample {
        self.0.clone()
    }
}

fn power() -> PowerSnapshot {
    PowerSnapshot {
        at: std::time::Duration::ZERO,
        site_cap: Watts::from_kw(1000.0),
        effective_cap: Watts::from_kw(800.0),
        headroom: Watts::from_kw(20.0),
        budget: Watts::from_kw(780.0),
        mining: Watts::from_kw(500.0),
        draining: Watts::from_kw(10.0),
        asleep: Watts::from_kw(100.0),
        gpu_granted: Watts::from_kw(200.0),
        gpu_wanted: Watts::from_kw(250.0),
        gpu_in_use: Watts::from_kw(150.0),
        gpu_pending: Watts::from_kw(50.0),
        curtailment: None,
        rigs: RigCounts {
            mining: 150,
            draining: 3,
            asleep: 30,
            ..RigCounts::default()
        },
    }
}

fn sample(workers: usize) -> Sample {
    let pool = |i: usize| PoolSample {
        pool: i,
        url: format!("stratum+tcp://pool{i}.example:3333"),
        up: true,
        active: i == 0,
        connections: 2,
        miners: workers / 2,
        hashrate: 1e15,
        shares: ShareSnapshot {
            accepted: 10,
            ..ShareSnapshot::default()
        },
        rejected: [1; RejectReason::ALL.len()],
        rejected_difficulty: [2.0; RejectReason::ALL.len()],
        submit_latency: HistogramSnapshot::empty(LATENCY_BUCKETS),
    };
    let downstream = |protocol| DownstreamSample {
        protocol,
        open: 3,
        opened: 4,
        shares: ShareSnapshot::default(),
        rejected: [0; RejectReason::ALL.len()],
        round_trip: HistogramSnapshot::empty(LATENCY_BUCKETS),
        fanout: HistogramSnapshot::empty(FANOUT_BUCKETS),
    };
    Sample {
        pools: vec![pool(0), pool(1)],
        downstream: vec![downstream("sv1"), downstream("sv2")],
        groups: vec!["s19".into(), "s21".into(), "ungrouped".into()],
        workers: (0..workers)
            .map(|i| WorkerSample {
                name: format!("farm.rig{i:06}"),
                group: i % 3,
                hashrate: (i % 1000) as f64 * 1e11,
                accepted: i as u64,
                rejected: 0,
                last_share_unix_ms: 1_700_000_000_000,
            })
            .collect(),
        power: Some((power(), HistogramSnapshot::empty(DRAIN_BUCKETS))),
        identity: Some(super::IdentitySample {
            unverified: 2,
            conflicts: 3,
            refused_per_address: 16,
            ..Default::default()
        }),
        gpu_shed: GpuShedSample {
            age_secs: Some(42.0),
            outstanding_w: 4000.0,
            calls_total: 3,
            overdue_total: 1,
        },
        pdu_cuts: crate::control::power::PduCuts { done: 2, failed: 1 },
        cluster: Some(crate::control::cluster_link::ClusterGauges {
            leader: true,
            etcd_writes: 12,
            instances: 3,
            lease_remaining_secs: 4.5,
        }),
    }
}

fn samples(text: &str) -> Vec<&str> {
    text.lines().filter(|l| !l.starts_with('#')).collect()
}

#[test]
fn the_catalogue_follows_prometheus_naming() {
    let mut seen = HashSet::new();
    for s in ALL {
        assert!(s.name.starts_with("hashshift_"), "{}", s.name);
        assert_eq!(
            s.kind == Kind::Counter,
            s.name.ends_with("_total"),
            "{}",
            s.name
        );
        assert!(!s.help.is_empty());
        assert!(seen.insert(s.name), "{} twice", s.name);
    }
}

#[test]
fn the_metrics_page_lists_every_metric() {
    let page = include_str!("../../../../docs/metrics.md");
    for s in ALL {
        assert!(page.contains(s.name), "metrics.md lacks {}", s.name);
    }
}

#[test]
fn a_hundred_thousand_workers_stay_within_a_fixed_number_of_series() {
    let top = 100;
    let registry = registry(std::sync::Arc::new(Fixed(sample(100_000))), top).expect("registry");
    let started = Instant::now();
    let text = render(&registry).expect("render");
    let took = started.elapsed();
    let lines = samples(&text);
    // Fixed families + 2 pools + 2 protocols (with their histogram buckets) + 4·N worker
    // series + 8 per group: independent of the number of workers.
    let bound = 4 * top + 8 * 3 + 400;
    assert!(lines.len() <= bound, "{} series > {bound}", lines.len());
    let per_worker = lines
        .iter()
        .filter(|l| l.starts_with("hashshift_worker_hashrate_hashes_per_second{"))
        .count();
    assert_eq!(per_worker, top);
    // The fastest (hashrate 999e11, lowest names first among equals) are the ones shown.
    assert!(
        text.contains(r#"worker="farm.rig000999""#),
        "top worker missing"
    );
    assert!(text.contains(r#"hashshift_workers{group="s19"} 33334"#));
    assert!(text.contains(r#"hashshift_power_rigs{state="draining"} 3"#));
    assert!(text.contains("hashshift_rig_identity_conflicts_total 3"));
    assert!(text.contains(r#"hashshift_power_rigs_refused_total{reason="per_address"} 16"#));
    assert!(text.contains("hashshift_power_rigs_unverified 2"));
    assert!(text.contains("hashshift_power_available_watts 80000"));
    assert!(text.contains("hashshift_power_gpu_shed_in_progress 1"));
    assert!(text.contains("hashshift_power_gpu_shed_age_seconds 42"));
    assert!(text.contains("hashshift_power_gpu_shed_outstanding_watts 4000"));
    assert!(text.contains("hashshift_power_gpu_shed_overdue_total 1"));
    assert!(text.contains(r#"hashshift_power_pdu_cuts_total{result="done"} 2"#));
    assert!(text.contains(r#"hashshift_power_pdu_cuts_total{result="failed"} 1"#));
    assert!(text.contains("hashshift_cluster_leader 1\n"));
    assert!(text.contains("hashshift_cluster_etcd_writes_total 12\n"));
    assert!(text.contains("hashshift_cluster_instances 3\n"));
    assert!(text.contains("hashshift_cluster_lease_remaining_seconds 4.5\n"));
    eprintln!(
        "100k workers: {} series, {} bytes, rendered in {took:?}",
        lines.len(),
        text.len()
    );
}

#[test]
fn without_power_the_power_families_are_absent() {
    let mut s = sample(10);
    s.power = None;
    s.identity = None;
    s.cluster = None;
    let text =
        render(&registry(std::sync::Arc::new(Fixed(s)), 5).expect("registry")).expect("render");
    assert!(!text.contains("hashshift_power_"));
    assert!(
        !text.contains("hashshift_cluster_"),
        "a single instance shows no cluster"
    );
    assert!(text.contains("hashshift_pool_shares_rejected_total{pool=\"1\""));
    assert!(
        text.contains("hashshift_share_round_trip_seconds_bucket{protocol=\"sv2\",le=\"+Inf\"} 0")
    );
}
