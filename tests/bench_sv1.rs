//! The load generator's SV1 mode, small and bounded: `--direct` against the embedded test
//! pool, `--proxy` against a given address (a test pool in this process, with our pid for the
//! process figures), and its refusal of an address outside 127.0.0.0/8.

mod support;

use anyhow::{Context, Result};
use hashshift_tools::testpool::{TestPool, TestPoolConfig};
use support::bench::bench;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bench_direct_mode_reports_shares_and_sane_percentiles() -> Result<()> {
    let report = bench(&[
        "bench",
        "--direct",
        "--miners",
        "50",
        "--duration",
        "3",
        "--share-rate",
        "5",
        "--jobs-every",
        "0.5",
        "--quiet",
    ])
    .await?;
    assert_eq!(report.mode, "direct");
    assert_eq!(report.miners_ready, 50, "{report:?}");
    assert_eq!(report.connect_errors, 0);
    assert!(report.shares_answered > 0 && report.shares_per_sec > 0.0);
    assert_eq!(
        report.rejected, 0,
        "random shares at a tiny difficulty all pass"
    );
    assert!(report.accepted >= report.shares_answered);
    let l = &report.latency_us;
    assert!(l.count > 0);
    assert!(l.p50 <= l.p90 && l.p90 <= l.p99 && l.p99 <= l.p999 && l.p999 <= l.max);
    assert!(report.jobs_sent >= 2);
    let f = &report.fanout_us;
    assert!(f.count >= 50, "every miner saw the jobs: {f:?}");
    assert!(f.p50 <= f.p99 && f.p99 <= f.max);
    assert!(report.proxy.is_none());
    let json = serde_json::to_value(&report)?;
    assert!(json["latency_us"]["p999"].is_u64());
    Ok(())
}

#[tokio::test]
async fn bench_refuses_non_loopback_proxies() -> Result<()> {
    let err = bench(&[
        "bench",
        "--proxy",
        "192.0.2.1:3333",
        "--miners",
        "1",
        "--duration",
        "1",
    ])
    .await
    .expect_err("must refuse");
    assert!(err.to_string().contains("loopback"), "{err}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bench_against_a_given_address_reports_process_figures() -> Result<()> {
    // The "proxy" is a test pool in this process; its pid is ours, so the RSS and CPU
    // probes have something real to read.
    let pool = TestPool::start(TestPoolConfig {
        difficulty: 1e-12,
        ..TestPoolConfig::default()
    })
    .await?;
    let pid = std::process::id().to_string();
    let addr = pool.addr().to_string();
    let report = bench(&[
        "bench",
        "--proxy",
        &addr,
        "--proxy-pid",
        &pid,
        "--miners",
        "20",
        "--duration",
        "2",
        "--share-rate",
        "10",
        "--quiet",
    ])
    .await;
    pool.shutdown().await;
    let report = report?;
    assert_eq!(report.mode, "proxy");
    assert_eq!(report.miners_ready, 20);
    assert!(report.shares_answered > 0);
    assert_eq!(report.fanout_us.count, 0, "no embedded pool, no fan-out");
    let proxy = report.proxy.context("figures for the given pid")?;
    assert!(proxy.rss_before_kib.is_some_and(|k| k > 0));
    assert!(proxy.rss_idle_kib.is_some() && proxy.rss_load_kib.is_some());
    assert!(proxy.kib_per_idle_miner.is_some());
    assert!(proxy.cpu_us_per_share.is_some());
    Ok(())
}
