//! Failover end to end when the active pool stops sending work or dies, and failback when it
//! is healthy again: test miners → hashshift → two embedded test pools (primary and standby),
//! with the timings of `[failover]` in the configuration.
//!
//! What is measured and printed: the time from the moment the proxy may call the primary dead
//! (the last job's send time + `no_work_timeout_secs` for a stall, the kill for a dead pool)
//! to the first standby job at each miner, and the time from the primary's recovery to the
//! first primary job again. Asserted against the "within a second" with a margin for
//! a loaded machine; every share submitted around a switch must get an answer.

mod support;

use std::collections::HashSet;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use hashshift_protocol::sv1::{ClientRequest, Id, ServerMessage, ServerNotification, Submit};
use hashshift_proxy::config::Config;
use hashshift_tools::testpool::{TestPool, TestPoolConfig};
use support::failover::{
    Pace, job_pool, lock, spawn_drive, start_on_primary, subscribed_miner, wait_until,
};
use support::miner::within;
use tokio_util::sync::CancellationToken;

/// Share difficulty (pool and miners): ~430 hashes a share, a few ms for the test miner.
const DIFF: f64 = 1e-7;
const NO_WORK_TIMEOUT: Duration = Duration::from_secs(2);
const FAILBACK_AFTER: Duration = Duration::from_secs(2);
/// What the issue promises on top of the timeout: standby jobs within a second.
const PROMISED: Duration = Duration::from_secs(1);
/// Slack for a loaded CI machine (tests run in parallel on 2 cores), so the test is not flaky.
const LOAD_MARGIN: Duration = Duration::from_secs(3);

async fn pool(name: &str) -> Result<TestPool> {
    Ok(TestPool::start(TestPoolConfig {
        difficulty: DIFF,
        name: name.into(),
        // Well inside the no-work timeout, so a pool that is working is never taken for stalled.
        job_interval: Duration::from_millis(400),
        ..TestPoolConfig::default()
    })
    .await?)
}

fn config(primary: &TestPool, standby: &TestPool) -> Result<Config> {
    let mut text = String::from("[[downstream]]\nprotocol = \"sv1\"\nlisten = \"127.0.0.1:0\"\n");
    for (p, priority) in [(primary, 0), (standby, 1)] {
        text += &format!(
            "[[upstream]]\nurl = \"stratum+tcp://{}\"\nuser = \"farm\"\npriority = {priority}\n",
            p.addr()
        );
    }
    text += &format!(
        "[vardiff]\ninitial = {DIFF}\nmin = {DIFF}\nmax = {DIFF}\nshares_per_minute = 60.0\n"
    );
    text += &format!(
        "[failover]\nno_work_timeout_secs = {}\nfailback_after_secs = {}\nrebalance_every_secs = 1.0\n",
        NO_WORK_TIMEOUT.as_secs_f64(),
        FAILBACK_AFTER.as_secs_f64()
    );
    Ok(Config::from_toml(&text)?)
}

/// Longest wait for miners to move.
const WAIT: Duration = Duration::from_secs(20);

/// Bound on a whole test.
const TEST_LIMIT: Duration = Duration::from_secs(120);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_primary_fails_over_after_the_no_work_timeout_and_back_after_it_resumes()
-> Result<()> {
    tokio::time::timeout(TEST_LIMIT, stall_and_resume())
        .await
        .context("test timed out")?
}

async fn stall_and_resume() -> Result<()> {
    let a = pool("sa").await?;
    let b = pool("sb").await?;
    let proxy = start_on_primary(&config(&a, &b)?).await?;

    let stop = CancellationToken::new();
    let mut logs = Vec::new();
    let mut drivers = Vec::new();
    for i in 0..4 {
        let worker = format!("rig{i}");
        let (m, job) = subscribed_miner(&proxy, &worker).await?;
        ensure!(
            job_pool(&job, &[&a, &b]) == Some(0),
            "miners start on the primary"
        );
        let (log, driver) = spawn_drive(
            m,
            worker,
            job,
            vec![a.clone(), b.clone()],
            Pace::every(Duration::from_millis(200)),
            stop.clone(),
        );
        logs.push(log);
        drivers.push(driver);
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    ensure!(a.stats().accepted > 0, "shares reach the primary");

    // The primary stays connected but sends nothing more.
    a.stall(true);
    let stalled_at = Instant::now();
    let last_job = a
        .job_sent_at(a.current_job_tag())
        .context("the last job's send time")?;
    let deadline = last_job + NO_WORK_TIMEOUT;
    wait_until("every miner to get the standby's work", WAIT, || {
        logs.iter()
            .all(|l| lock(l).first_job_from(1, stalled_at).is_some())
    })
    .await?;
    let failover: Vec<f64> = logs
        .iter()
        .filter_map(|l| lock(l).first_job_from(1, stalled_at))
        .map(|t| t.saturating_duration_since(deadline).as_secs_f64())
        .collect();
    let early = logs
        .iter()
        .filter_map(|l| lock(l).first_job_from(1, stalled_at))
        .any(|t| t < deadline);
    eprintln!(
        "stall: first standby job at the miners {failover:.3?} s after the no-work deadline \
         (timeout {NO_WORK_TIMEOUT:?}, stall began {:.3} s before the deadline)",
        deadline.saturating_duration_since(stalled_at).as_secs_f64()
    );
    ensure!(!early, "failover before the no-work timeout had passed");
    let worst = failover.iter().copied().fold(0.0, f64::max);
    ensure!(
        worst <= (PROMISED + LOAD_MARGIN).as_secs_f64(),
        "standby work reached a miner {worst:.3} s after the no-work deadline"
    );

    // Shares keep flowing to the standby, then the primary resumes.
    tokio::time::sleep(Duration::from_secs(1)).await;
    ensure!(b.stats().accepted > 0, "shares reach the standby");
    a.stall(false);
    let resumed_at = Instant::now();
    wait_until("every miner to return to the primary", WAIT, || {
        logs.iter()
            .all(|l| lock(l).first_job_from(0, resumed_at).is_some())
    })
    .await?;
    let failback: Vec<f64> = logs
        .iter()
        .filter_map(|l| lock(l).first_job_from(0, resumed_at))
        .map(|t| t.saturating_duration_since(resumed_at).as_secs_f64())
        .collect();
    eprintln!(
        "stall: first primary job again {failback:.3?} s after it resumed (failback_after {FAILBACK_AFTER:?})"
    );
    for &t in &failback {
        ensure!(
            t >= FAILBACK_AFTER.as_secs_f64() - 0.05,
            "back on the primary after {t:.3} s, before failback_after"
        );
        ensure!(
            t <= (FAILBACK_AFTER + PROMISED + LOAD_MARGIN).as_secs_f64(),
            "back on the primary only after {t:.3} s"
        );
    }
    tokio::time::sleep(Duration::from_millis(500)).await;

    stop.cancel();
    for (i, d) in drivers.into_iter().enumerate() {
        let unanswered = within("driver", d).await???;
        let log = lock(&logs[i]);
        eprintln!(
            "stall: rig{i}: {} submitted, {} accepted, errors {:?}, {} set_extranonce",
            log.submitted, log.accepted, log.errors, log.set_extranonce
        );
        ensure!(
            unanswered == 0,
            "rig{i}: {unanswered} shares never answered"
        );
        ensure!(
            !log.closed && log.reconnects == 0,
            "rig{i} was disconnected"
        );
        ensure!(
            log.set_extranonce >= 2,
            "rig{i} moved in place there and back"
        );
        ensure!(log.accepted > 0, "rig{i} got shares accepted");
    }
    proxy.shutdown(Duration::from_secs(2)).await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shares_in_flight_when_the_primary_dies_are_answered_and_work_moves_at_once() -> Result<()>
{
    tokio::time::timeout(TEST_LIMIT, kill_and_revive())
        .await
        .context("test timed out")?
}

async fn kill_and_revive() -> Result<()> {
    let a = pool("ka").await?;
    let b = pool("kb").await?;
    let proxy = start_on_primary(&config(&a, &b)?).await?;
    let (mut m, job) = subscribed_miner(&proxy, "rig").await?;
    ensure!(
        job_pool(&job, &[&a, &b]) == Some(0),
        "the miner starts on the primary"
    );

    // A burst of valid shares written at once, and the pool killed right behind it: some are
    // answered by the pool, some are in flight when its connection closes.
    const BURST: usize = 200;
    let shares: Vec<_> = (0..BURST as u64)
        .map(|seed| {
            let share = m.find_share(&job, seed, None);
            ClientRequest::Submit(Submit {
                worker: "rig".into(),
                job_id: share.job_id,
                extranonce2: share.extranonce2,
                ntime: share.ntime,
                nonce: share.nonce,
                version_bits: None,
            })
        })
        .collect();
    let mut ids: HashSet<Id> = m.send_all(shares).await?.into_iter().collect();
    let killed_at = Instant::now();
    a.kill().await;

    let (mut accepted, mut errors) = (0, Vec::new());
    let mut standby_job_at = None;
    let give_up = Instant::now() + Duration::from_secs(20);
    while !ids.is_empty() || standby_job_at.is_none() {
        ensure!(
            Instant::now() < give_up,
            "{} shares unanswered, standby job seen: {}",
            ids.len(),
            standby_job_at.is_some()
        );
        match within("answers and standby work", m.recv())
            .await??
            .context("proxy closed")?
        {
            ServerMessage::Response(r) => {
                ensure!(ids.remove(&r.id), "unexpected answer {r:?}");
                match r.error {
                    Some(e) => errors.push(e.code),
                    None if r.as_bool()? => accepted += 1,
                    None => errors.push(0),
                }
            }
            ServerMessage::Notification { notification, .. } => match notification {
                ServerNotification::Notify(n) if job_pool(&n, &[&a, &b]) == Some(1) => {
                    standby_job_at.get_or_insert_with(Instant::now);
                }
                ServerNotification::Reconnect(_) => bail!("a subscribed miner was disconnected"),
                _ => {}
            },
        }
    }
    let failover = standby_job_at
        .map(|t| t.saturating_duration_since(killed_at))
        .unwrap_or_default();
    let lost_upstream = proxy.pools()[0].shares.lost;
    eprintln!(
        "kill: {BURST} shares in a burst: {accepted} accepted, {} answered with an error \
         ({lost_upstream} of them lost with the pool connection); first standby job {:.3} s after the kill",
        errors.len(),
        failover.as_secs_f64()
    );
    ensure!(
        accepted + errors.len() == BURST,
        "every share answered exactly once"
    );
    ensure!(
        errors.iter().all(|&c| c != 0),
        "errors carry a Stratum error code"
    );
    ensure!(
        failover <= PROMISED + LOAD_MARGIN,
        "standby work {failover:?} after the kill"
    );

    a.revive().await?;
    let revived_at = Instant::now();
    let back = within("failback after revive", async {
        loop {
            if let ServerNotification::Notify(n) = m.next_note().await? {
                if job_pool(&n, &[&a, &b]) == Some(0) {
                    return Ok::<_, anyhow::Error>(revived_at.elapsed());
                }
            }
        }
    })
    .await??;
    eprintln!(
        "kill: back on the revived primary {:.3} s after revive (failback_after {FAILBACK_AFTER:?})",
        back.as_secs_f64()
    );
    ensure!(back >= FAILBACK_AFTER, "failback before failback_after");
    proxy.shutdown(Duration::from_secs(2)).await;
    Ok(())
}
