//! `hashshift bench`: a load generator that opens many SV1 miners against a proxy (or, with
//! `--direct`, the embedded test pool alone) and reports throughput, latency, job fan-out and
//! the proxy's memory and CPU cost.
//!
//! Phases: start the embedded [`TestPool`] (and, in the default spawn mode, a `hashshift run`
//! child pointed at it); connect the miners at `--connect-rate`; idle briefly (RSS per idle
//! connection); run the load phase for `--duration` seconds with a new job every
//! `--jobs-every` seconds (job fan-out latency: the pool's send time, found by the job tag in
//! coinb1, to each miner's read); tear down. Miners do not hash (see [`miner`]).
//!
//! Bounded by construction: the run always ends after the connect timeout, `--duration` and
//! a teardown timeout, and only ever connects to 127.0.0.0/8.

mod miner;
pub mod process;
pub mod report;

use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::testpool::{TestPool, TestPoolConfig};
use miner::{MinerConfig, Shared};
use process::SpawnedProxy;
pub use report::{Percentiles, ProxyFigures, Report};

/// Difficulty that clamps the share target to its maximum: every random share passes.
const TINY_DIFFICULTY: f64 = 1e-12;
/// Time the connected miners sit idle before the idle RSS sample.
const IDLE_SETTLE: Duration = Duration::from_secs(2);
/// How long teardown may take.
const TEARDOWN_TIMEOUT: Duration = Duration::from_secs(10);
/// Interval between progress lines.
const PROGRESS_EVERY: Duration = Duration::from_secs(5);

/// Options of `hashshift bench`.
#[derive(Clone, Debug, clap::Parser)]
#[command(name = "bench")]
pub struct BenchArgs {
    /// Start an embedded test pool and a `hashshift run` child between it and the miners
    /// (the default).
    #[arg(long, conflicts_with_all = ["direct", "proxy"])]
    pub spawn: bool,
    /// Connect the miners straight to the embedded test pool: the baseline.
    #[arg(long, conflicts_with = "proxy")]
    pub direct: bool,
    /// Target an already running proxy at this loopback address.
    #[arg(long, value_name = "ADDR")]
    pub proxy: Option<SocketAddr>,
    /// Pid of the proxy given with `--proxy`, for memory and CPU figures.
    #[arg(long, value_name = "PID", requires = "proxy")]
    pub proxy_pid: Option<u32>,
    /// Number of miners.
    #[arg(long, default_value_t = 1000)]
    pub miners: usize,
    /// Length of the load phase in seconds.
    #[arg(long, default_value_t = 30.0)]
    pub duration: f64,
    /// Shares per second each miner submits.
    #[arg(long, default_value_t = 1.0)]
    pub share_rate: f64,
    /// New connections per second.
    #[arg(long, default_value_t = 500.0)]
    pub connect_rate: f64,
    /// Seconds between new jobs from the embedded pool (0: none during the run).
    #[arg(long, default_value_t = 5.0)]
    pub jobs_every: f64,
    /// Fraction of shares that also meet the pool's target and go upstream (spawn mode; the
    /// pool difficulty is set so random shares meet it with this probability). 1: every
    /// share is forwarded, the worst case; a real farm forwards roughly 1 in N for N miners
    /// per upstream connection.
    #[arg(long, default_value_t = 1.0)]
    pub upstream_fraction: f64,
    /// Print the report as one JSON line.
    #[arg(long)]
    pub json: bool,
    /// No progress lines.
    #[arg(long)]
    pub quiet: bool,
}

impl BenchArgs {
    fn validate(&self) -> Result<()> {
        if self.miners == 0 {
            bail!("--miners must be at least 1");
        }
        for (name, v) in [
            ("--duration", self.duration),
            ("--share-rate", self.share_rate),
            ("--connect-rate", self.connect_rate),
        ] {
            if !(v.is_finite() && v > 0.0) {
                bail!("{name} must be a positive number");
            }
        }
        if !(self.upstream_fraction > 0.0 && self.upstream_fraction <= 1.0) {
            bail!("--upstream-fraction must be in (0, 1]");
        }
        if self.upstream_fraction < 1.0 && (self.direct || self.proxy.is_some()) {
            bail!("--upstream-fraction applies to the default spawn mode only");
        }
        if !(self.jobs_every.is_finite() && self.jobs_every >= 0.0) {
            bail!("--jobs-every must be zero or positive");
        }
        if let Some(addr) = self.proxy
            && !addr.ip().is_loopback()
        {
            bail!(
                "--proxy {addr}: the bench only connects to loopback addresses (127.0.0.0/8, ::1); \
                 run it on the proxy's host"
            );
        }
        Ok(())
    }
}

/// The pool difficulty that a uniformly random hash meets with probability `fraction`:
/// P(hash ≤ diff1 / d) = 0xffff·2^208 / (d·2^256), so d = 0xffff / (2^48 · fraction).
fn pool_difficulty(fraction: f64) -> f64 {
    if fraction >= 1.0 {
        TINY_DIFFICULTY
    } else {
        65_535.0 / (2f64.powi(48) * fraction)
    }
}

/// Entry point for the binary: runs the bench on its own runtime, prints the report.
pub fn main(args: BenchArgs) -> ExitCode {
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("hashshift bench: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(args.clone())) {
        Ok(report) => {
            if args.json {
                match serde_json::to_string(&report) {
                    Ok(line) => println!("{line}"),
                    Err(e) => eprintln!("hashshift bench: {e}"),
                }
            } else {
                print!("{report}");
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("hashshift bench: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// The proxy or pool the miners talk to.
enum Target {
    Direct,
    Spawned(Box<SpawnedProxy>),
    External { addr: SocketAddr, pid: Option<u32> },
}

/// Runs one bench and returns its figures.
///
/// # Errors
/// Bad arguments, a non-loopback `--proxy`, the pool or proxy failing to start.
pub async fn run(args: BenchArgs) -> Result<Report> {
    args.validate()?;
    // More miners than the default soft limit of 1024 descriptors; raising the soft limit to
    // the hard one needs no privilege.
    if let Err(e) = rlimit::increase_nofile_limit(u64::MAX) {
        eprintln!("hashshift bench: cannot raise RLIMIT_NOFILE: {e}");
    }
    let pool = match args.proxy {
        Some(_) => None,
        None => Some(
            TestPool::start(TestPoolConfig {
                difficulty: pool_difficulty(args.upstream_fraction),
                // Jobs come from the bench loop, so their send times fall in the load phase.
                job_interval: Duration::from_secs(86_400),
                block_interval: Duration::from_secs(86_400),
                name: "bench".to_owned(),
                ..TestPoolConfig::default()
            })
            .await
            .context("starting the embedded test pool")?,
        ),
    };
    let target = match (&pool, args.proxy) {
        (_, Some(addr)) => Target::External {
            addr,
            pid: args.proxy_pid,
        },
        (Some(_), None) if args.direct => Target::Direct,
        (Some(p), None) => Target::Spawned(Box::new(
            SpawnedProxy::start(p.addr(), args.miners, Duration::from_secs(20))
                .await
                .context("starting the proxy (`hashshift run`)")?,
        )),
        (None, None) => bail!("no pool and no proxy"),
    };
    let (mode, addr, pid) = match &target {
        Target::Direct => (
            "direct",
            pool.as_ref().map(TestPool::addr).context("no pool")?,
            None,
        ),
        Target::Spawned(p) => ("spawn", p.addr, p.pid()),
        Target::External { addr, pid } => ("proxy", *addr, *pid),
    };
    let result = measure(&args, mode, addr, pid, pool.clone()).await;
    if let Target::Spawned(p) = target {
        p.stop().await;
    }
    if let Some(pool) = pool {
        let _ = tokio::time::timeout(TEARDOWN_TIMEOUT, pool.shutdown()).await;
    }
    result
}

async fn measure(
    args: &BenchArgs,
    mode: &str,
    addr: SocketAddr,
    pid: Option<u32>,
    pool: Option<TestPool>,
) -> Result<Report> {
    let progress = |line: String| {
        if !args.quiet {
            eprintln!("bench: {line}");
        }
    };
    let shared = Arc::new(Shared::new(pool.clone()));
    let shutdown = CancellationToken::new();
    let tracker = TaskTracker::new();
    let rss_before = pid.and_then(process::rss_kib);

    // Connect phase, paced so the listener sees no SYN storm.
    progress(format!(
        "connecting {} miners to {addr} ({mode})",
        args.miners
    ));
    let share_interval = Duration::from_secs_f64(1.0 / args.share_rate);
    let connect_started = Instant::now();
    let pace = Duration::from_secs_f64(1.0 / args.connect_rate);
    let connect_deadline = connect_started
        + Duration::from_secs_f64(args.miners as f64 / args.connect_rate)
        + Duration::from_secs(30);
    let mut last_progress = Instant::now();
    for i in 0..args.miners {
        let config = MinerConfig {
            addr,
            worker: format!("bench.{i}"),
            share_interval,
        };
        let (miner_shared, miner_shutdown) = (shared.clone(), shutdown.clone());
        tracker.spawn(async move { miner::run(config, &miner_shared, miner_shutdown).await });
        let due = connect_started + pace.mul_f64((i + 1) as f64);
        tokio::time::sleep_until(due.into()).await;
        if last_progress.elapsed() >= PROGRESS_EVERY {
            last_progress = Instant::now();
            progress(format!(
                "{} started, {} ready",
                i + 1,
                shared.ready.load(Ordering::Relaxed)
            ));
        }
    }
    loop {
        let settled =
            shared.ready.load(Ordering::Relaxed) + shared.connect_errors.load(Ordering::Relaxed);
        if settled >= args.miners as u64 || Instant::now() > connect_deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let connect_secs = connect_started.elapsed().as_secs_f64();
    let ready = shared.ready.load(Ordering::Relaxed);
    progress(format!(
        "{ready} of {} miners ready in {connect_secs:.2} s",
        args.miners
    ));

    tokio::time::sleep(IDLE_SETTLE).await;
    let rss_idle = pid.and_then(process::rss_kib);

    // Load phase.
    let cpu_before = pid.and_then(process::cpu_micros);
    let load_started = Instant::now();
    *shared
        .load_started
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(load_started);
    shared.loading.store(true, Ordering::Relaxed);
    shared.go.cancel();
    let load_for = Duration::from_secs_f64(args.duration);
    let jobs_every = (args.jobs_every > 0.0).then(|| Duration::from_secs_f64(args.jobs_every));
    let mut next_job = jobs_every.map(|d| load_started + d);
    let mut next_progress = load_started + PROGRESS_EVERY;
    let mut rss_load = None::<u64>;
    let mut jobs_sent = 0u64;
    while load_started.elapsed() < load_for {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let now = Instant::now();
        // No job in the last second: its notifies would be cut off by the teardown.
        if let (Some(at), Some(every), Some(pool)) = (next_job, jobs_every, &pool)
            && now >= at
            && load_started + load_for > now + Duration::from_secs(1)
        {
            pool.new_job(false);
            jobs_sent += 1;
            next_job = Some(at + every);
        }
        if now >= next_progress {
            next_progress += PROGRESS_EVERY;
            if let Some(rss) = pid.and_then(process::rss_kib) {
                rss_load = Some(rss_load.map_or(rss, |r| r.max(rss)));
            }
            let answered = shared.answered.load(Ordering::Relaxed);
            progress(format!(
                "{:.0} s: {answered} shares answered ({:.0}/s), {} rejected, {} disconnects",
                load_started.elapsed().as_secs_f64(),
                answered as f64 / load_started.elapsed().as_secs_f64(),
                shared.rejected.load(Ordering::Relaxed),
                shared.disconnects.load(Ordering::Relaxed),
            ));
        }
    }
    shared.loading.store(false, Ordering::Relaxed);
    let load_secs = load_started.elapsed().as_secs_f64();
    let cpu_after = pid.and_then(process::cpu_micros);
    if let Some(rss) = pid.and_then(process::rss_kib) {
        rss_load = Some(rss_load.map_or(rss, |r| r.max(rss)));
    }
    let answered = shared.answered.load(Ordering::Relaxed);

    // Teardown.
    shutdown.cancel();
    tracker.close();
    if tokio::time::timeout(TEARDOWN_TIMEOUT, tracker.wait())
        .await
        .is_err()
    {
        progress("some miners did not stop in time".to_owned());
    }

    let proxy = pid.map(|pid| {
        let cpu_load_us = cpu_before.zip(cpu_after).map(|(a, b)| b.saturating_sub(a));
        ProxyFigures {
            pid,
            rss_before_kib: rss_before,
            rss_idle_kib: rss_idle,
            rss_load_kib: rss_load,
            kib_per_idle_miner: rss_before
                .zip(rss_idle)
                .filter(|_| ready > 0)
                .map(|(b, i)| (i as f64 - b as f64) / ready as f64),
            cpu_load_us,
            cpu_us_per_share: cpu_load_us
                .filter(|_| answered > 0)
                .map(|us| us as f64 / answered as f64),
        }
    });
    let lock = |h: &std::sync::Mutex<hdrhistogram::Histogram<u64>>| {
        Percentiles::of(&h.lock().unwrap_or_else(std::sync::PoisonError::into_inner))
    };
    Ok(Report {
        mode: mode.to_owned(),
        target: addr.to_string(),
        miners: args.miners,
        miners_ready: ready,
        connect_secs,
        connect_errors: shared.connect_errors.load(Ordering::Relaxed),
        disconnects: shared.disconnects.load(Ordering::Relaxed),
        load_secs,
        share_rate_per_miner: args.share_rate,
        shares_submitted: shared.submitted.load(Ordering::Relaxed),
        shares_answered: answered,
        shares_per_sec: answered as f64 / load_secs.max(1e-9),
        accepted: shared.accepted.load(Ordering::Relaxed),
        rejected: shared.rejected.load(Ordering::Relaxed),
        rejected_by_code: shared
            .rejected_by_code
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone(),
        skipped_ticks: shared.skipped.load(Ordering::Relaxed),
        latency_us: lock(&shared.latency),
        jobs_sent,
        fanout_us: lock(&shared.fanout),
        proxy,
    })
}
