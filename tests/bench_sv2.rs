//! The load generator's SV2 mode, small and bounded: SV2 bench miners (Noise handshake,
//! `SetupConnection`, a standard or extended channel, shares acknowledged in batches) against
//! the proxy's SV2 listener in this process, against the test pool's SV2 mode (`--direct`),
//! and through the real binary in its default spawn mode (`hashshift run` child with a fresh
//! authority key). No timing assertions: only that every miner got through the handshake and
//! every share was answered and accepted.

mod support;

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, Result};
use hashshift_proxy::config::Config;
use hashshift_proxy::proxy::Proxy;
use hashshift_tools::bench::{BenchProtocol, ChannelKind, Report};
use hashshift_tools::testpool::{TestPool, TestPoolConfig};
use support::bench::bench;
use tokio::time::timeout;

/// An authority key file in the temp dir, removed on drop.
struct KeyFile(PathBuf);

impl Drop for KeyFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// What every SV2 run must show: all miners through the Noise handshake and ready, shares
/// answered (acknowledged in batches) and none rejected.
fn check_sv2(report: &Report, miners: u64) {
    assert_eq!(report.protocol, BenchProtocol::Sv2);
    assert_eq!(report.miners_ready, miners, "{report:?}");
    assert_eq!(report.handshakes, miners, "{report:?}");
    assert_eq!(report.connect_errors, 0, "{report:?}");
    assert_eq!(report.disconnects, 0, "{report:?}");
    assert!(report.handshakes_per_sec.is_some_and(|r| r > 0.0));
    assert_eq!(report.handshake_us.count, miners);
    assert!(report.shares_answered > 0, "{report:?}");
    assert_eq!(report.rejected, 0, "tiny difficulty: {report:?}");
    assert!(report.accepted >= report.shares_answered, "{report:?}");
    assert!(
        report.acks > 0 && report.acks <= report.accepted,
        "{report:?}"
    );
    let l = &report.latency_us;
    assert!(l.count > 0 && l.p50 <= l.p99 && l.p99 <= l.max, "{l:?}");
}

/// An SV1 test pool and the proxy with an SV2 listener in this process; the bench targets it
/// with `--proxy` and our own pid for the process figures.
async fn bench_through_in_process_proxy(channel: &str) -> Result<Report> {
    let pool = TestPool::start(TestPoolConfig {
        difficulty: 1e-12,
        ..TestPoolConfig::default()
    })
    .await?;
    let key = KeyFile(std::env::temp_dir().join(format!(
        "hashshift-bench-sv2-test-{}-{}.key",
        std::process::id(),
        rand::random::<u64>()
    )));
    let public = hashshift_proxy::keyfile::generate(&key.0)?;
    let config = Config::from_toml(&format!(
        "[[downstream]]\nprotocol = \"sv2\"\nlisten = \"127.0.0.1:0\"\nauthority_key_file = {:?}\n\
         [[upstream]]\nurl = \"stratum+tcp://{}\"\nuser = \"bench\"\n\
         [vardiff]\ninitial = {d:e}\nmin = {d:e}\nmax = {d:e}\nshares_per_minute = 20.0\n",
        key.0.display().to_string(),
        pool.addr(),
        d = hashshift_tools::bench::process::miner_difficulty(),
    ))?;
    let proxy = Proxy::start(&config).await?;
    let addr = proxy.listen_addrs()[0].to_string();
    let pid = std::process::id().to_string();
    let public = public.to_string();
    let report = bench(&[
        "bench",
        "--protocol",
        "sv2",
        "--channel",
        channel,
        "--proxy",
        &addr,
        "--proxy-pid",
        &pid,
        "--authority-pubkey",
        &public,
        "--miners",
        "20",
        "--duration",
        "2",
        "--share-rate",
        "10",
        "--quiet",
    ])
    .await;
    proxy.shutdown(Duration::from_secs(2)).await;
    pool.shutdown().await;
    report
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn standard_channels_through_the_proxy() -> Result<()> {
    let report = bench_through_in_process_proxy("standard").await?;
    check_sv2(&report, 20);
    assert_eq!(report.channel, Some(ChannelKind::Standard));
    let proxy = report.proxy.context("figures for the given pid")?;
    assert!(proxy.kib_per_idle_miner.is_some() && proxy.cpu_us_per_connect.is_some());
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn extended_channels_through_the_proxy() -> Result<()> {
    let report = bench_through_in_process_proxy("extended").await?;
    check_sv2(&report, 20);
    assert_eq!(report.channel, Some(ChannelKind::Extended));
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn direct_to_the_sv2_test_pool_with_job_fan_out() -> Result<()> {
    let report = bench(&[
        "bench",
        "--direct",
        "--protocol",
        "sv2",
        "--channel",
        "extended",
        "--miners",
        "20",
        "--duration",
        "3",
        "--share-rate",
        "5",
        "--jobs-every",
        "0.5",
        "--quiet",
    ])
    .await?;
    check_sv2(&report, 20);
    assert_eq!(report.mode, "direct");
    assert!(report.jobs_sent >= 2);
    assert!(
        report.fanout_us.count >= 20,
        "every miner saw the jobs: {:?}",
        report.fanout_us
    );
    Ok(())
}

/// The real binary in its default spawn mode: a test pool, a `hashshift run` child with an SV2
/// listener and a generated authority key, 20 SV2 miners; the JSON report on stdout.
#[tokio::test]
async fn spawn_mode_runs_the_proxy_binary_with_an_sv2_listener() -> Result<()> {
    let child = tokio::process::Command::new(env!("CARGO_BIN_EXE_hashshift"))
        .args([
            "bench",
            "--protocol",
            "sv2",
            "--miners",
            "20",
            "--duration",
            "2",
            "--share-rate",
            "5",
            "--jobs-every",
            "0.5",
            "--json",
            "--quiet",
        ])
        .stdout(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()?;
    let out = timeout(Duration::from_secs(90), child.wait_with_output())
        .await
        .context("bench did not finish")??;
    assert!(out.status.success(), "{out:?}");
    let json: serde_json::Value = serde_json::from_slice(&out.stdout)?;
    assert_eq!(json["mode"], "spawn");
    assert_eq!(json["protocol"], "sv2");
    assert_eq!(json["channel"], "standard");
    assert_eq!(json["miners_ready"], 20, "{json}");
    assert_eq!(json["handshakes"], 20, "{json}");
    assert_eq!(json["rejected"], 0, "{json}");
    assert!(
        json["shares_answered"].as_u64().is_some_and(|n| n > 0),
        "{json}"
    );
    assert!(
        json["fanout_us"]["count"].as_u64().is_some_and(|n| n >= 20),
        "{json}"
    );
    assert!(json["proxy"]["cpu_us_per_connect"].is_f64(), "{json}");
    Ok(())
}
