//! `hashshift demo`: a whole mining site on one machine, with nothing else installed.
//!
//! Two embedded test pools (a primary and a hot standby, each validating shares with its own
//! hashing), the real proxy between them and the rigs, and a handful of simulated rigs of
//! different firmware styles that really hash at a very low difficulty. A summary is printed
//! every few seconds: per worker (difficulty, hashrate from accepted work, accepted/rejected)
//! and per pool (state, miners, shares as the pool judged them). `--failover-at` kills the
//! primary pool mid-run to show miners moving to the standby and back.

use std::fmt::Write as _;
use std::time::{Duration, Instant};

use anyhow::Context;
use tokio_util::sync::CancellationToken;

use crate::config::Config;
use crate::proxy::Proxy;
use crate::sim::{Firmware, RigConfig, RigHandle};
use crate::testpool::{TestPool, TestPoolConfig};

/// Options of `hashshift demo`.
#[derive(Clone, Debug, clap::Args)]
pub struct DemoArgs {
    /// Stop after this many seconds (default: run until Ctrl-C).
    #[arg(long)]
    pub duration: Option<u64>,
    /// Number of simulated rigs.
    #[arg(long, default_value_t = 6)]
    pub rigs: usize,
    /// Hashrate of each rig in kH/s (the CPU does the hashing; keep the total modest).
    #[arg(long, default_value_t = 300.0)]
    pub khs: f64,
    /// Seconds between summaries.
    #[arg(long, default_value_t = 5)]
    pub every: u64,
    /// Kill the primary pool after this many seconds (and revive it 20 s later).
    #[arg(long)]
    pub failover_at: Option<u64>,
}

const FIRMWARES: [(Firmware, bool, &str); 3] = [
    (Firmware::Antminer, true, "antminer"),
    (Firmware::Whatsminer, true, "whatsminer"),
    (Firmware::Basic, false, "basic"),
];

/// Runs the demo until `--duration` or Ctrl-C.
pub async fn run(args: DemoArgs) -> anyhow::Result<()> {
    let pool = |name: &str| TestPoolConfig {
        name: name.into(),
        difficulty: 0.001,
        job_interval: Duration::from_secs(15),
        block_interval: Duration::from_secs(120),
        network_difficulty: 0.5,
        ..TestPoolConfig::default()
    };
    let primary = TestPool::start(pool("pool-a"))
        .await
        .context("starting pool-a")?;
    let standby = TestPool::start(pool("pool-b"))
        .await
        .context("starting pool-b")?;
    let config = Config::from_toml(&format!(
        r#"
[[downstream]]
protocol = "sv1"
listen = "127.0.0.1:0"

[[upstream]]
url = "stratum+tcp://{a}"
user = "demo"
priority = 0

[[upstream]]
url = "stratum+tcp://{b}"
user = "demo"
priority = 1

[vardiff]
initial = 0.0001
min = 0.00001
max = 1.0
shares_per_minute = 20.0

[failover]
no_work_timeout_secs = 60.0
failback_after_secs = 10.0
rebalance_every_secs = 10.0
"#,
        a = primary.addr(),
        b = standby.addr()
    ))
    .context("demo configuration")?;
    let proxy = Proxy::start(&config).await.context("starting the proxy")?;
    let addr = proxy
        .listen_addrs()
        .first()
        .copied()
        .context("no listener")?;
    println!(
        "hashshift demo: pools {} (primary) and {} (standby), proxy on {addr}",
        primary.addr(),
        standby.addr()
    );
    println!(
        "{} simulated rigs at ~{} kH/s each; Ctrl-C to stop\n",
        args.rigs, args.khs
    );

    let stop = CancellationToken::new();
    let rigs: Vec<(String, &str, RigHandle)> = (0..args.rigs)
        .map(|i| {
            let (firmware, extranonce_subscribe, kind) = FIRMWARES[i % FIRMWARES.len()];
            let worker = format!("demo.rack{}-{kind}{:02}", i / 3 + 1, i + 1);
            let mut rig = RigConfig::new(
                addr,
                worker.clone(),
                args.khs * 1000.0 * (0.6 + 0.2 * (i % 5) as f64),
            );
            rig.firmware = firmware;
            rig.extranonce_subscribe = extranonce_subscribe;
            (worker, kind, RigHandle::spawn(rig, stop.clone()))
        })
        .collect();

    let started = Instant::now();
    let deadline = args
        .duration
        .map(|d| tokio::time::Instant::now() + Duration::from_secs(d));
    let mut every = tokio::time::interval(Duration::from_secs(args.every.max(1)));
    every.tick().await;
    let mut killed_at: Option<Instant> = None;
    let ctrl_c = tokio::signal::ctrl_c();
    tokio::pin!(ctrl_c);
    loop {
        tokio::select! {
            _ = &mut ctrl_c => break,
            _ = async { match deadline { Some(d) => tokio::time::sleep_until(d).await, None => std::future::pending().await } } => break,
            _ = every.tick() => {}
        }
        let t = started.elapsed();
        if let (Some(at), None) = (args.failover_at, killed_at) {
            if t >= Duration::from_secs(at) {
                println!(">>> killing pool-a: miners should move to pool-b\n");
                primary.kill().await;
                killed_at = Some(Instant::now());
            }
        }
        if let Some(k) = killed_at {
            if k.elapsed() >= Duration::from_secs(20)
                && primary.stats().connections == 0
                && !primary_listening(&primary).await
            {
                println!(">>> reviving pool-a: miners should come back after the failback hold\n");
                primary.revive().await.context("reviving pool-a")?;
            }
        }
        print!("{}", summary(t, &rigs, &proxy, &[&primary, &standby]));
    }
    println!("stopping...");
    proxy.shutdown(Duration::from_secs(3)).await;
    stop.cancel();
    for (_, _, rig) in rigs {
        rig.stop().await;
    }
    let (a, b) = (primary.stats(), standby.stats());
    println!(
        "done: pool-a accepted {} shares ({} blocks), pool-b accepted {} shares; rejected at pools: {}",
        a.accepted,
        a.blocks,
        b.accepted,
        a.rejected_total() + b.rejected_total()
    );
    Ok(())
}

async fn primary_listening(pool: &TestPool) -> bool {
    tokio::net::TcpStream::connect(pool.addr()).await.is_ok()
}

fn summary(
    t: Duration,
    rigs: &[(String, &str, RigHandle)],
    proxy: &Proxy,
    pools: &[&TestPool],
) -> String {
    let secs = t.as_secs_f64().max(1.0);
    let mut out = String::new();
    let _ = writeln!(
        out,
        "── t = {:>4}s ─────────────────────────────────────────────────────────────",
        t.as_secs()
    );
    let _ = writeln!(
        out,
        "{:<26} {:<10} {:>10} {:>12} {:>9} {:>9}",
        "worker", "firmware", "difficulty", "hashrate", "accepted", "rejected"
    );
    for (worker, kind, rig) in rigs {
        let s = rig.stats();
        let hashrate = s.accepted_difficulty * 4_294_967_296.0 / secs;
        let _ = writeln!(
            out,
            "{:<26} {:<10} {:>10.6} {:>12} {:>9} {:>9}{}",
            worker,
            kind,
            s.difficulty,
            human_rate(hashrate),
            s.accepted,
            s.rejected,
            if s.connected { "" } else { "  (reconnecting)" }
        );
    }
    let _ = writeln!(
        out,
        "{:<26} {:<10} {:>6} {:>16} {:>16} {:>7}",
        "pool", "state", "miners", "accepted (pool)", "rejected (pool)", "blocks"
    );
    for (snapshot, pool) in proxy.pools().iter().zip(pools) {
        let s = pool.stats();
        let state = match (snapshot.up, snapshot.active) {
            (true, true) => "active",
            (true, false) => "standby",
            (false, _) => "DOWN",
        };
        let _ = writeln!(
            out,
            "{:<26} {:<10} {:>6} {:>16} {:>16} {:>7}",
            format!("{} {}", pool.name(), pool.addr()),
            state,
            snapshot.miners,
            s.accepted,
            s.rejected_total(),
            s.blocks
        );
    }
    out.push('\n');
    out
}

fn human_rate(hs: f64) -> String {
    if hs >= 1e9 {
        format!("{:.2} GH/s", hs / 1e9)
    } else if hs >= 1e6 {
        format!("{:.2} MH/s", hs / 1e6)
    } else {
        format!("{:.1} kH/s", hs / 1e3)
    }
}
