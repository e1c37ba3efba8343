//! `hashshift bench`: a load generator that opens many SV1 or SV2 miners against a proxy (or,
//! with `--direct`, the embedded test pool alone) and reports throughput, latency, job
//! fan-out and the proxy's memory and CPU cost; for SV2 also the Noise handshake rate.
//!
//! Phases: start the embedded [`TestPool`] (and, in the default spawn mode, a `hashshift run`
//! child pointed at it, with an SV1 or SV2 listener); connect the miners at `--connect-rate`
//! (handshakes/s and proxy CPU per connection); idle briefly (RSS per idle connection); run
//! the load phase for `--duration` seconds with a new job every `--jobs-every` seconds (job
//! fan-out latency: the pool's send time, found by the job tag in the coinbase, to each
//! miner's read); tear down. Miners do not hash (see [`sv1`] and [`sv2`]).
//!
//! Bounded by construction: the run always ends after the connect timeout, `--duration` and
//! a teardown timeout, and only ever connects to 127.0.0.0/8.

pub mod args;
pub mod process;
pub mod report;
mod stats;
mod sv1;
mod sv2;

use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::testpool::{TestPool, TestPoolConfig};
use args::pool_difficulty;
pub use args::{BenchArgs, BenchProtocol, ChannelKind};
use hashshift_protocol::noise::AuthorityPublicKey;
use process::SpawnedProxy;
pub use report::{Percentiles, ProxyFigures, Report};
use stats::Shared;

/// Time the connected miners sit idle before the idle RSS sample.
const IDLE_SETTLE: Duration = Duration::from_secs(2);
/// How long teardown may take.
const TEARDOWN_TIMEOUT: Duration = Duration::from_secs(10);
/// Interval between progress lines.
const PROGRESS_EVERY: Duration = Duration::from_secs(5);
/// Rollable extranonce bytes of the test pool in `--direct --protocol sv2` mode (SRI's 16).
const DIRECT_SV2_EXTRANONCE: usize = 16;

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

/// Where the miners connect and what they need to know about it.
struct Endpoint {
    mode: &'static str,
    addr: SocketAddr,
    pid: Option<u32>,
    authority: Option<AuthorityPublicKey>,
}

/// Runs one bench and returns its figures.
///
/// # Errors
/// Bad arguments, a non-loopback `--proxy`, the pool or proxy failing to start.
pub async fn run(args: BenchArgs) -> Result<Report> {
    args.validate()?;
    // More miners than the default soft limit of 1024 descriptors; raising the soft limit to
    // the hard one needs no privilege. The spawned proxy raises its own (`sys`).
    if let Err(e) = rlimit::increase_nofile_limit(u64::MAX) {
        eprintln!("hashshift bench: cannot raise RLIMIT_NOFILE: {e}");
    }
    let sv2 = args.protocol == BenchProtocol::Sv2;
    let pool = match args.proxy {
        Some(_) => None,
        None => {
            let config = TestPoolConfig {
                difficulty: pool_difficulty(args.upstream_fraction),
                // Jobs come from the bench loop, so their send times fall in the load phase.
                job_interval: Duration::from_secs(86_400),
                block_interval: Duration::from_secs(86_400),
                name: "bench".to_owned(),
                ..TestPoolConfig::default()
            };
            let started = if args.direct && sv2 {
                TestPool::start_sv2(TestPoolConfig {
                    extranonce2_size: DIRECT_SV2_EXTRANONCE,
                    ..config
                })
                .await
            } else {
                TestPool::start(config).await
            };
            Some(started.context("starting the embedded test pool")?)
        }
    };
    let target = match (&pool, args.proxy) {
        (_, Some(addr)) => Target::External {
            addr,
            pid: args.proxy_pid,
        },
        (Some(_), None) if args.direct => Target::Direct,
        (Some(p), None) => Target::Spawned(Box::new(
            SpawnedProxy::start(
                p.addr(),
                args.miners,
                args.protocol,
                Duration::from_secs(20),
            )
            .await
            .context("starting the proxy (`hashshift run`)")?,
        )),
        (None, None) => bail!("no pool and no proxy"),
    };
    let endpoint = match &target {
        Target::Direct => {
            let pool = pool.as_ref().context("no pool")?;
            Endpoint {
                mode: "direct",
                addr: pool.addr(),
                pid: None,
                authority: pool.authority_public_key(),
            }
        }
        Target::Spawned(p) => Endpoint {
            mode: "spawn",
            addr: p.addr,
            pid: p.pid(),
            authority: p.authority,
        },
        Target::External { addr, pid } => Endpoint {
            mode: "proxy",
            addr: *addr,
            pid: *pid,
            authority: args.authority_pubkey,
        },
    };
    if sv2 && endpoint.authority.is_none() {
        bail!("no authority key for the SV2 listener");
    }
    let result = measure(&args, &endpoint, pool.clone()).await;
    if let Target::Spawned(p) = target {
        p.stop().await;
    }
    if let Some(pool) = pool {
        let _ = tokio::time::timeout(TEARDOWN_TIMEOUT, pool.shutdown()).await;
    }
    result
}

/// Starts miner `i`.
fn spawn_miner(
    args: &BenchArgs,
    endpoint: &Endpoint,
    i: usize,
    shared: &Arc<Shared>,
    shutdown: &CancellationToken,
    tracker: &TaskTracker,
) {
    let share_interval = Duration::from_secs_f64(1.0 / args.share_rate);
    let worker = format!("bench.{i}");
    let (shared, shutdown) = (shared.clone(), shutdown.clone());
    match (args.protocol, endpoint.authority) {
        (BenchProtocol::Sv2, Some(authority)) => {
            let config = sv2::Sv2MinerConfig {
                addr: endpoint.addr,
                worker,
                share_interval,
                authority,
                channel: args.channel,
            };
            tracker.spawn(async move { sv2::run(config, &shared, shutdown).await });
        }
        _ => {
            let config = sv1::MinerConfig {
                addr: endpoint.addr,
                worker,
                share_interval,
            };
            tracker.spawn(async move { sv1::run(config, &shared, shutdown).await });
        }
    }
}

async fn measure(args: &BenchArgs, endpoint: &Endpoint, pool: Option<TestPool>) -> Result<Report> {
    let progress = |line: String| {
        if !args.quiet {
            eprintln!("bench: {line}");
        }
    };
    let Endpoint {
        mode, addr, pid, ..
    } = *endpoint;
    let shared = Arc::new(Shared::new(pool.clone()));
    let shutdown = CancellationToken::new();
    let tracker = TaskTracker::new();
    let rss_before = pid.and_then(process::rss_kib);

    // Connect phase, paced so the listener sees no SYN storm.
    progress(format!(
        "connecting {} {} miners to {addr} ({mode})",
        args.miners,
        match args.protocol {
            BenchProtocol::Sv1 => "SV1",
            BenchProtocol::Sv2 => "SV2",
        }
    ));
    let cpu_connect_before = pid.and_then(process::cpu_micros);
    let own_cpu_before = process::cpu_micros(std::process::id());
    let connect_started = Instant::now();
    let pace = Duration::from_secs_f64(1.0 / args.connect_rate);
    let connect_deadline = connect_started
        + Duration::from_secs_f64(args.miners as f64 / args.connect_rate)
        + Duration::from_secs(30);
    let mut last_progress = Instant::now();
    for i in 0..args.miners {
        spawn_miner(args, endpoint, i, &shared, &shutdown, &tracker);
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
    let cpu_connect_after = pid.and_then(process::cpu_micros);
    let own_cpu_connect_us = own_cpu_before
        .zip(process::cpu_micros(std::process::id()))
        .map(|(a, b)| b.saturating_sub(a));
    let ready = shared.ready.load(Ordering::Relaxed);
    let handshakes = shared.handshakes.load(Ordering::Relaxed);
    let handshakes_per_sec = shared
        .last_handshake()
        .filter(|_| handshakes > 0)
        .map(|last| handshakes as f64 / (last - connect_started).as_secs_f64().max(1e-9));
    progress(format!(
        "{ready} of {} miners ready in {connect_secs:.2} s",
        args.miners
    ));

    tokio::time::sleep(IDLE_SETTLE).await;
    let rss_idle = pid.and_then(process::rss_kib);

    // Load phase.
    let cpu_before = pid.and_then(process::cpu_micros);
    let load_started = Instant::now();
    shared.start_load(load_started);
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
        let cpu_connect_us = cpu_connect_before
            .zip(cpu_connect_after)
            .map(|(a, b)| b.saturating_sub(a));
        ProxyFigures {
            pid,
            rss_before_kib: rss_before,
            rss_idle_kib: rss_idle,
            rss_load_kib: rss_load,
            kib_per_idle_miner: rss_before
                .zip(rss_idle)
                .filter(|_| ready > 0)
                .map(|(b, i)| (i as f64 - b as f64) / ready as f64),
            cpu_connect_us,
            cpu_us_per_connect: cpu_connect_us
                .filter(|_| ready > 0)
                .map(|us| us as f64 / ready as f64),
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
        protocol: args.protocol,
        channel: (args.protocol == BenchProtocol::Sv2).then_some(args.channel),
        target: addr.to_string(),
        miners: args.miners,
        miners_ready: ready,
        connect_secs,
        connect_errors: shared.connect_errors.load(Ordering::Relaxed),
        disconnects: shared.disconnects.load(Ordering::Relaxed),
        handshakes,
        handshakes_per_sec,
        handshake_us: lock(&shared.handshake),
        bench_cpu_connect_us: own_cpu_connect_us,
        load_secs,
        share_rate_per_miner: args.share_rate,
        shares_submitted: shared.submitted.load(Ordering::Relaxed),
        shares_answered: answered,
        shares_per_sec: answered as f64 / load_secs.max(1e-9),
        accepted: shared.accepted.load(Ordering::Relaxed),
        rejected: shared.rejected.load(Ordering::Relaxed),
        rejected_by_code: shared.rejected_by_code(),
        acks: shared.acks.load(Ordering::Relaxed),
        skipped_ticks: shared.skipped.load(Ordering::Relaxed),
        latency_us: lock(&shared.latency),
        jobs_sent,
        fanout_us: lock(&shared.fanout),
        proxy,
    })
}
