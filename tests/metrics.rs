//! The Prometheus endpoint end to end, over 127.0.0.1: a test pool, the proxy with
//! `[metrics]`, test miners (and, in the second test, rigs under power control); scrapes of
//! `/metrics` checked against what the pool itself counted, and linted by `promtool check
//! metrics` when it is installed (required when `HASHSHIFT_PROMTOOL=1`, as in CI).

mod support;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use hashshift_proxy::config::Config;
use hashshift_proxy::control::admin::protocol::{Command, Target};
use hashshift_proxy::proxy::Proxy;
use support::metrics::{scrape_text, series};
use support::miner::{Miner, within};
use support::power_site::{Site, all_mining_on_firmware_figures, states};
use tokio::io::AsyncWriteExt;

const DIFF: f64 = 1e-6;

/// One scrape: the body and how long it took.
async fn scrape(addr: SocketAddr) -> Result<(String, Duration)> {
    let started = Instant::now();
    let text = scrape_text(addr).await?;
    Ok((text, started.elapsed()))
}

fn value(s: &HashMap<String, f64>, key: &str) -> Result<f64> {
    s.get(key)
        .copied()
        .with_context(|| format!("no series {key}"))
}

/// `promtool check metrics` on a scrape. Without promtool: a failure when
/// `HASHSHIFT_PROMTOOL=1`, else a skip with a message.
async fn promtool(text: &str) -> Result<()> {
    let required = std::env::var("HASHSHIFT_PROMTOOL").is_ok_and(|v| v == "1");
    let child = tokio::process::Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn();
    let mut child = match child {
        Ok(c) => c,
        Err(e) if !required => {
            eprintln!(
                "promtool not available ({e}): lint skipped (HASHSHIFT_PROMTOOL=1 requires it)"
            );
            return Ok(());
        }
        Err(e) => bail!("HASHSHIFT_PROMTOOL=1 but promtool cannot run: {e}"),
    };
    let mut stdin = child.stdin.take().context("promtool stdin")?;
    stdin.write_all(text.as_bytes()).await?;
    drop(stdin);
    let out = within("promtool", child.wait_with_output()).await??;
    if !out.status.success() {
        bail!(
            "promtool check metrics failed ({}):\n{}{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(())
}

#[tokio::test]
async fn counts_match_the_pools_verdicts_and_promtool_accepts_the_exposition() -> Result<()> {
    let pool = support::site::pool_at("a", DIFF).await?;
    let config = Config::from_toml(&format!(
        "[[downstream]]\nprotocol = \"sv1\"\nlisten = \"127.0.0.1:0\"\n\
         [[upstream]]\nurl = \"stratum+tcp://{}\"\nuser = \"farm\"\n\
         [vardiff]\ninitial = {DIFF}\nmin = {DIFF}\nmax = {DIFF}\nshares_per_minute = 600.0\n\
         [metrics]\nlisten = \"127.0.0.1:0\"\ntop_workers = 2\n",
        pool.addr()
    ))?;
    let proxy = Proxy::start(&config).await?;
    let metrics = proxy.metrics_addr().context("no metrics listener")?;
    let mut miners = Vec::new();
    for i in 0..3 {
        let mut m = Miner::connect(proxy.listen_addrs()[0]).await?;
        let worker = format!("farm.rig{i}");
        let (_, job) = m.handshake(&worker, None).await?;
        for seed in 0..=i as u64 {
            let share = m.find_share(&job, seed, None);
            assert_eq!(m.submit(&share, &worker).await?, Ok(()));
        }
        miners.push((m, worker, job));
    }
    // One refused by the proxy itself, one duplicate.
    let (m, worker, job) = &mut miners[0];
    let bad = m.bad_share(job);
    assert!(m.submit(&bad, worker).await?.is_err());
    let again = m.find_share(job, 0, None);
    assert!(m.submit(&again, worker).await?.is_err());
    // A new job fans out to every miner.
    pool.new_job(false);
    for (m, _, _) in &mut miners {
        m.next_job().await?;
    }

    let (text, took) = scrape(metrics).await?;
    let s = series(&text);
    let stats = pool.stats();
    assert_eq!(stats.accepted, 6);
    let pool_labels = format!("pool=\"0\",url=\"stratum+tcp://{}\"", pool.addr());
    assert_eq!(
        value(
            &s,
            &format!("hashshift_pool_shares_accepted_total{{{pool_labels}}}")
        )?,
        stats.accepted as f64,
        "the pool's own count"
    );
    assert_eq!(
        value(&s, &format!("hashshift_pool_up{{{pool_labels}}}"))?,
        1.0
    );
    assert_eq!(
        value(&s, &format!("hashshift_pool_miners{{{pool_labels}}}"))?,
        3.0
    );
    let submitted = value(
        &s,
        &format!("hashshift_pool_submit_latency_seconds_count{{{pool_labels}}}"),
    )?;
    assert_eq!(submitted, 6.0, "one latency per verdict");
    assert_eq!(
        value(
            &s,
            "hashshift_downstream_shares_accepted_total{protocol=\"sv1\"}"
        )?,
        6.0
    );
    assert_eq!(
        value(&s, "hashshift_downstream_connections{protocol=\"sv1\"}")?,
        3.0
    );
    assert_eq!(
        value(&s, "hashshift_downstream_connections{protocol=\"sv2\"}")?,
        0.0
    );
    assert_eq!(
        value(
            &s,
            "hashshift_downstream_shares_rejected_total{protocol=\"sv1\",reason=\"low_difficulty\"}"
        )?,
        1.0
    );
    assert_eq!(
        value(
            &s,
            "hashshift_downstream_shares_rejected_total{protocol=\"sv1\",reason=\"duplicate\"}"
        )?,
        1.0
    );
    assert_eq!(
        value(
            &s,
            "hashshift_share_round_trip_seconds_count{protocol=\"sv1\"}"
        )?,
        8.0,
        "every submit answered is timed"
    );
    assert_eq!(
        value(&s, "hashshift_job_fanout_seconds_count{protocol=\"sv1\"}")?,
        3.0
    );
    // Workers: two with their own series (the cap), all three in the aggregate.
    assert_eq!(value(&s, "hashshift_workers{group=\"ungrouped\"}")?, 3.0);
    let own = s
        .keys()
        .filter(|k| k.starts_with("hashshift_worker_shares_accepted_total{"))
        .count();
    assert_eq!(own, 2);
    assert!(
        !text.contains("hashshift_power_"),
        "no [power], no power series"
    );
    promtool(&text).await?;
    eprintln!(
        "3 miners: {} series, {} bytes, scraped in {took:?}",
        s.len(),
        text.len()
    );

    drop(miners);
    proxy.shutdown(Duration::from_secs(2)).await;
    pool.shutdown().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn power_gauges_and_drain_to_confirmed_under_power_control() -> Result<()> {
    let mut site = Site::start(3, 10.0, "[metrics]\nlisten = \"127.0.0.1:0\"\n").await?;
    let metrics = site
        .proxy()?
        .metrics_addr()
        .context("no metrics listener")?;
    site.until("three rigs mining", 30, Command::Rigs, |r| {
        all_mining_on_firmware_figures(r, 3)
    })
    .await?;
    site.ask(Command::Drain {
        target: Target::Rig("farm.rig0".into()),
        reason: Some("metrics test".into()),
    })
    .await?;
    site.until("rig0 asleep", 30, Command::Rigs, |r| {
        states(r) == ["asleep", "mining", "mining"]
    })
    .await?;
    let deadline = Instant::now() + Duration::from_secs(20);
    let (text, s) = loop {
        let (text, _) = scrape(metrics).await?;
        let s = series(&text);
        // The view is republished within ~100 ms of the confirmation.
        if s.get("hashshift_power_rigs{state=\"asleep\"}") == Some(&1.0)
            && s.get("hashshift_workers{group=\"s19\"}") == Some(&2.0)
        {
            break (text, s);
        }
        if Instant::now() > deadline {
            bail!("power gauges never showed the drain:\n{text}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(
        value(&s, "hashshift_power_drain_to_confirmed_seconds_count")?,
        1.0
    );
    assert!(value(&s, "hashshift_power_drain_to_confirmed_seconds_sum")? > 0.0);
    assert_eq!(value(&s, "hashshift_power_site_cap_watts")?, 10_000.0);
    assert_eq!(value(&s, "hashshift_power_rigs{state=\"mining\"}")?, 2.0);
    let mining = value(&s, "hashshift_power_mining_watts")?;
    assert!(mining > 0.0 && mining <= 10_000.0, "mining {mining} W");
    assert!(
        value(
            &s,
            "hashshift_group_hashrate_hashes_per_second{group=\"s19\"}"
        )? > 0.0
    );
    promtool(&text).await?;

    // With the rigs gone, the pool's accepted count and the proxy's agree exactly.
    for r in site.rigs.drain(..) {
        r.stop().await;
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (text, _) = scrape(metrics).await?;
        let s = series(&text);
        let key = format!(
            "hashshift_pool_shares_accepted_total{{pool=\"0\",url=\"stratum+tcp://{}\"}}",
            site.pool.addr()
        );
        let ours = value(&s, &key)?;
        let theirs = site.pool.stats().accepted as f64;
        if ours == theirs && theirs > 0.0 {
            break;
        }
        if Instant::now() > deadline {
            bail!("proxy counts {ours} accepted, the pool {theirs}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    site.stop().await
}
