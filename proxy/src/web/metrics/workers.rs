//! Per-worker metrics under a cardinality guard.
//!
//! A farm has up to ~100k workers; one series each (times four families) would make every
//! scrape megabytes and every Prometheus query slow, and worker churn would leave a trail of
//! dead series. So:
//!
//! - the **top N workers by hashrate** (`[metrics] top_workers`, default 100; ties broken by
//!   name so the set is stable) get their own series: hashrate, accepted and rejected shares,
//!   last share time;
//! - **every worker** is counted in per-group aggregates: workers, idle workers (no
//!   estimate yet), summed hashrate, and the per-worker hashrate distribution as percentiles
//!   (0, 10, 50, 90, 100), where a sick rig shows up as a low 0th/10th percentile.
//!
//! Groups are the configured `[[rig_group]]`s plus `ungrouped`, so the series count is
//! `4·N + 8·(groups + 1) + 1` whatever the number of workers. Selecting the top N is O(n)
//! (`select_nth_unstable_by`), the quantiles one sort per group: a 100k-worker scrape stays
//! in the tens of milliseconds.

use std::cmp::Ordering;

/// Longest worker name used as a label value; longer names (peer-chosen) are cut.
pub const MAX_WORKER_LABEL: usize = 128;

/// Percentiles of per-worker hashrate reported per group (the fraction, the label value).
/// The label is `percentile`, not `quantile`: that name is reserved for summaries.
pub const QUANTILES: [(f64, &str); 5] = [
    (0.0, "0"),
    (0.1, "10"),
    (0.5, "50"),
    (0.9, "90"),
    (1.0, "100"),
];

/// One worker (all its connections) at scrape time.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct WorkerSample {
    /// Worker name.
    pub name: String,
    /// Index into the scrape's group names.
    pub group: usize,
    /// Estimated hashrate (H/s).
    pub hashrate: f64,
    /// Accepted shares.
    pub accepted: u64,
    /// Rejected and lost shares.
    pub rejected: u64,
    /// Unix ms of the last accepted share (0: none).
    pub last_share_unix_ms: u64,
}

/// One group's aggregate.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct GroupAggregate {
    /// Workers with their own series (the rest are summed under one label).
    pub workers: usize,
    /// Workers without a hashrate estimate.
    pub idle: usize,
    /// Summed hashrate (H/s).
    pub hashrate: f64,
    /// Per-worker hashrate at each of [`QUANTILES`] (all 0 for an empty group).
    pub quantiles: [f64; QUANTILES.len()],
}

/// What the exposition shows of the workers.
#[derive(Debug, Default)]
pub struct WorkerView {
    /// The top workers, fastest first.
    pub top: Vec<WorkerSample>,
    /// Per group, in the order of the scrape's group names.
    pub groups: Vec<GroupAggregate>,
}

/// Fastest first; equal hashrates by name.
fn by_rank(a: &WorkerSample, b: &WorkerSample) -> Ordering {
    b.hashrate
        .total_cmp(&a.hashrate)
        .then_with(|| a.name.cmp(&b.name))
}

/// Splits `workers` into the top `n` and per-group aggregates over `groups` groups (a worker
/// with an out-of-range group counts in the last one).
pub fn summarize(mut workers: Vec<WorkerSample>, n: usize, groups: usize) -> WorkerView {
    let groups = groups.max(1);
    let mut rates: Vec<Vec<f64>> = vec![Vec::new(); groups];
    let mut aggregates = vec![GroupAggregate::default(); groups];
    for w in &mut workers {
        w.group = w.group.min(groups - 1);
        let g = &mut aggregates[w.group];
        g.workers += 1;
        if w.hashrate > 0.0 {
            g.hashrate += w.hashrate;
        } else {
            g.idle += 1;
        }
        rates[w.group].push(w.hashrate.max(0.0));
    }
    for (g, mut r) in aggregates.iter_mut().zip(rates) {
        if r.is_empty() {
            continue;
        }
        r.sort_unstable_by(f64::total_cmp);
        for (slot, (q, _)) in g.quantiles.iter_mut().zip(QUANTILES) {
            // Nearest rank: the value at or below which a fraction q of the workers lie.
            let i = ((q * r.len() as f64).ceil() as usize).clamp(1, r.len()) - 1;
            *slot = r[i];
        }
    }
    if n < workers.len() {
        if n == 0 {
            workers.clear();
        } else {
            workers.select_nth_unstable_by(n - 1, by_rank);
            workers.truncate(n);
        }
    }
    workers.sort_unstable_by(by_rank);
    for w in &mut workers {
        if w.name.len() > MAX_WORKER_LABEL {
            let mut cut = MAX_WORKER_LABEL;
            while !w.name.is_char_boundary(cut) {
                cut -= 1;
            }
            w.name.truncate(cut);
        }
    }
    WorkerView {
        top: workers,
        groups: aggregates,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn worker(name: &str, group: usize, hashrate: f64) -> WorkerSample {
        WorkerSample {
            name: name.into(),
            group,
            hashrate,
            ..WorkerSample::default()
        }
    }

    #[test]
    fn the_fastest_get_series_and_everyone_counts_in_aggregates() {
        let workers = vec![
            worker("a", 0, 10.0),
            worker("b", 0, 30.0),
            worker("c", 1, 20.0),
            worker("d", 1, 0.0),
            worker("e", 7, 30.0), // unknown group: counted as the last (ungrouped)
        ];
        let v = summarize(workers, 3, 2);
        let names: Vec<&str> = v.top.iter().map(|w| w.name.as_str()).collect();
        assert_eq!(names, ["b", "e", "c"]);
        assert_eq!(v.groups[0].workers, 2);
        assert_eq!(v.groups[1].workers, 3);
        assert_eq!(v.groups[1].idle, 1);
        assert_eq!(v.groups[1].hashrate, 50.0);
        assert_eq!(v.groups[1].quantiles, [0.0, 0.0, 20.0, 30.0, 30.0]);
        assert_eq!(v.groups[0].quantiles[0], 10.0);
    }

    #[test]
    fn zero_top_workers_keeps_only_aggregates() {
        let v = summarize(vec![worker("a", 0, 1.0)], 0, 1);
        assert!(v.top.is_empty());
        assert_eq!(v.groups[0].workers, 1);
    }

    #[test]
    fn long_peer_chosen_names_are_cut_on_a_char_boundary() {
        let long = "é".repeat(200);
        let v = summarize(vec![worker(&long, 0, 1.0)], 1, 1);
        assert!(v.top[0].name.len() <= MAX_WORKER_LABEL);
        assert!(v.top[0].name.starts_with('é'));
    }
}
