//! A pool that stops reading its socket (issue 12, item 2): SV1 test miners → hashshift → a
//! primary test pool that stops reading but keeps the connection open, and a backup.
//!
//! The primary's receive buffer is small and the miners keep submitting, so the proxy's
//! writes towards it stall within moments. With `pool_write_timeout_secs = 1` the proxy must
//! then drop that connection as down, answer every share waiting for it, and move the miners
//! to the backup, long before the no-work timeout (60 s here) could. What is measured and
//! printed: from the primary's last read to the first backup job at each miner. Once for an
//! SV1 primary, once for an SV2 one.

mod support;

use std::time::{Duration, Instant};

use anyhow::{Context, Result, ensure};
use hashshift_proxy::config::Config;
use hashshift_tools::testpool::{TestPool, TestPoolConfig};
use support::failover::{
    Pace, job_pool, lock, spawn_drive, start_on_primary, subscribed_miner, wait_until,
};
use support::miner::within;
use tokio_util::sync::CancellationToken;

/// Share difficulty (pools and miners): a handful of hashes a share, so the test miners can
/// submit thousands a second and fill the socket buffers quickly.
const DIFF: f64 = 1e-9;
const WRITE_TIMEOUT: Duration = Duration::from_secs(1);
/// Far beyond the failover bound: only the write timeout can explain a quick failover.
const NO_WORK_TIMEOUT: Duration = Duration::from_secs(60);
/// From the primary's last read to the backup's work at every miner: the time the buffers
/// take to fill, the write timeout, a manager tick, with a margin for a loaded machine. SV2
/// shares are small (~80 bytes, no worker name), so filling takes thousands of them, which
/// on a busy debug build takes seconds.
const SV1_FAILOVER_BOUND: Duration = Duration::from_secs(10);
const SV2_FAILOVER_BOUND: Duration = Duration::from_secs(20);
/// `SO_RCVBUF` of the primary: its window, and so what the proxy can write before it stalls.
const PRIMARY_RCVBUF: usize = 4096;
/// MSS the primary advertises. The kernel sizes a sender's buffer from its segment size
/// (about 20 segments); over loopback's 64 KiB segments that is megabytes, which would take
/// the miners many seconds to fill.
const PRIMARY_MSS: u32 = 536;
/// Shares a miner writes at once, every `TICK`, while fewer than its cap wait for an answer.
const BURST: usize = 5;
const TICK: Duration = Duration::from_millis(10);
/// Unanswered shares per miner beyond which it waits, per upstream protocol: enough for the
/// miners together to fill the buffers towards the primary (~400 bytes an SV1 share with its
/// long worker name, ~80 bytes an SV2 one), few enough that a busy machine keeps up once
/// they are on the backup.
const SV1_MAX_PENDING: usize = 1000;
const SV2_MAX_PENDING: usize = 1500;
const MINERS: usize = 4;
/// SV1 only: worker names this long (they go up with every share in `passthrough` mode; the
/// test pool takes up to 256 bytes), so
/// that a few hundred shares fill the buffers even when the kernel has grown the proxy's
/// send buffer to hundreds of KiB. SV2 shares carry no name: there it takes thousands.
const SV1_WORKER_NAME_LEN: usize = 240;
/// Bound on a whole test.
const TEST_LIMIT: Duration = Duration::from_secs(90);

fn pool_config(name: &str, sv2: bool) -> TestPoolConfig {
    let base = if sv2 {
        TestPoolConfig::sv2()
    } else {
        TestPoolConfig::default()
    };
    TestPoolConfig {
        difficulty: DIFF,
        name: name.into(),
        job_interval: Duration::from_millis(500),
        // Less hashing per share for the proxy and the miners: the machine may be busy.
        merkle_branch_len: 0,
        // The pool must not give up on the proxy first (it stops reading, not writing).
        send_timeout: Duration::from_secs(60),
        ..base
    }
}

async fn start_pool(config: TestPoolConfig, sv2: bool) -> Result<TestPool> {
    Ok(if sv2 {
        TestPool::start_sv2(config).await?
    } else {
        TestPool::start(config).await?
    })
}

/// A listener on 127.0.0.1 whose connections have a small receive buffer and MSS (both are
/// inherited from the listening socket and must be set before `listen`).
fn small_listener() -> Result<tokio::net::TcpListener> {
    let socket = socket2::Socket::new(
        socket2::Domain::IPV4,
        socket2::Type::STREAM,
        Some(socket2::Protocol::TCP),
    )?;
    socket.set_recv_buffer_size(PRIMARY_RCVBUF)?;
    socket.set_tcp_mss(PRIMARY_MSS)?;
    socket.bind(&std::net::SocketAddr::from(([127, 0, 0, 1], 0)).into())?;
    socket.listen(128)?;
    socket.set_nonblocking(true)?;
    Ok(tokio::net::TcpListener::from_std(socket.into())?)
}

/// The primary: a pool that will stop reading, on a [`small_listener`].
async fn start_primary(config: TestPoolConfig, sv2: bool) -> Result<TestPool> {
    let listener = small_listener()?;
    Ok(if sv2 {
        TestPool::start_sv2_on(config, listener).await?
    } else {
        TestPool::start_on(config, listener).await?
    })
}

fn config(primary: &TestPool, backup: &TestPool) -> Result<Config> {
    let mut text = String::from("[[downstream]]\nprotocol = \"sv1\"\nlisten = \"127.0.0.1:0\"\n");
    for (p, priority) in [(primary, 0), (backup, 1)] {
        text += &format!(
            "[[upstream]]\nurl = \"{}\"\nuser = \"farm\"\npriority = {priority}\n",
            p.url()
        );
    }
    text += &format!(
        "[vardiff]\ninitial = {DIFF}\nmin = {DIFF}\nmax = {DIFF}\nshares_per_minute = 60.0\n"
    );
    text += &format!(
        "[failover]\nno_work_timeout_secs = {}\nfailback_after_secs = 1.0\nrebalance_every_secs = 1.0\npool_write_timeout_secs = {}\n",
        NO_WORK_TIMEOUT.as_secs_f64(),
        WRITE_TIMEOUT.as_secs_f64(),
    );
    text += "[limits]\ndrain_grace_secs = 2\n";
    Ok(Config::from_toml(&text)?)
}

async fn primary_stops_reading(sv2: bool) -> Result<()> {
    let label = if sv2 { "sv2" } else { "sv1" };
    let bound = if sv2 {
        SV2_FAILOVER_BOUND
    } else {
        SV1_FAILOVER_BOUND
    };
    let a = start_primary(pool_config(if sv2 { "p2a" } else { "p1a" }, sv2), sv2).await?;
    let b = start_pool(pool_config(if sv2 { "p2b" } else { "p1b" }, sv2), sv2).await?;
    let proxy = start_on_primary(&config(&a, &b)?).await?;

    // The primary stops reading before the miners submit: then the proxy's socket towards it
    // has carried almost nothing, and the kernel has not grown its send buffer (it sizes it
    // from the congestion window), so a few hundred shares fill it.
    let mut miners = Vec::new();
    for i in 0..MINERS {
        let mut worker = format!("rig{i}.");
        if !sv2 {
            worker.extend(std::iter::repeat_n('x', SV1_WORKER_NAME_LEN));
        }
        let (m, job) = subscribed_miner(&proxy, &worker).await?;
        ensure!(
            job_pool(&job, &[&a, &b]) == Some(0),
            "miners start on the primary"
        );
        miners.push((worker, m, job));
    }
    a.stop_reading(true);

    let stop = CancellationToken::new();
    let mut logs = Vec::new();
    let mut drivers = Vec::new();
    for (worker, m, job) in miners {
        let (log, driver) = spawn_drive(
            m,
            worker,
            job,
            vec![a.clone(), b.clone()],
            Pace {
                burst: BURST,
                every: TICK,
                max_pending: if sv2 {
                    SV2_MAX_PENDING
                } else {
                    SV1_MAX_PENDING
                },
            },
            stop.clone(),
        );
        logs.push(log);
        drivers.push(driver);
    }
    let stopped_at = Instant::now();
    wait_until("the primary to be marked down", bound, || {
        proxy.pools().first().is_some_and(|p| !p.up)
    })
    .await?;
    let marked_down = stopped_at.elapsed();
    wait_until("every miner to get the backup's work", bound, || {
        logs.iter()
            .all(|l| lock(l).first_job_from(1, stopped_at).is_some())
    })
    .await?;
    let failover: Vec<f64> = logs
        .iter()
        .filter_map(|l| lock(l).first_job_from(1, stopped_at))
        .map(|t| t.saturating_duration_since(stopped_at).as_secs_f64())
        .collect();
    eprintln!(
        "{label}: primary stopped reading; marked down after {:.3} s, backup job at the miners \
         after {failover:.3?} s (write timeout {WRITE_TIMEOUT:?}, no-work timeout {NO_WORK_TIMEOUT:?})",
        marked_down.as_secs_f64()
    );

    // The backup takes the shares.
    let before = b.stats().accepted;
    wait_until(
        "shares to reach the backup",
        Duration::from_secs(10),
        || b.stats().accepted > before + 10,
    )
    .await
    .with_context(|| format!("backup {:?}, proxy {:?}", b.stats(), proxy.pools()))?;

    stop.cancel();
    for (i, d) in drivers.into_iter().enumerate() {
        let unanswered = tokio::time::timeout(Duration::from_secs(20), d)
            .await
            .context("driver")???;
        let log = lock(&logs[i]);
        let lost = log.errors.len();
        eprintln!(
            "{label}: rig{i}: {} submitted, {} accepted, {lost} not accepted",
            log.submitted, log.accepted
        );
        ensure!(
            unanswered == 0,
            "rig{i}: {unanswered} shares never answered"
        );
        ensure!(!log.closed, "rig{i} was disconnected");
        ensure!(log.accepted > 0, "rig{i} got shares accepted");
    }

    let shutdown_started = Instant::now();
    within("proxy shutdown", proxy.shutdown(Duration::from_secs(2))).await?;
    let shutdown = shutdown_started.elapsed();
    eprintln!(
        "{label}: proxy shutdown took {:.3} s",
        shutdown.as_secs_f64()
    );
    ensure!(
        shutdown < Duration::from_secs(4),
        "shutdown took {shutdown:?}"
    );
    a.stop_reading(false);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_sv1_pool_that_stops_reading_is_dropped_within_the_write_timeout() -> Result<()> {
    tokio::time::timeout(TEST_LIMIT, primary_stops_reading(false))
        .await
        .context("test timed out")?
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_sv2_pool_that_stops_reading_is_dropped_within_the_write_timeout() -> Result<()> {
    tokio::time::timeout(TEST_LIMIT, primary_stops_reading(true))
        .await
        .context("test timed out")?
}
