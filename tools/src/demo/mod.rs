//! `hashshift demo`: a whole mining site on one machine, with nothing else installed.
//!
//! Two embedded test pools (a primary and a hot standby, each validating shares with its own
//! hashing), the real proxy between them and the rigs, and a handful of simulated rigs of
//! different firmware styles that really hash at a very low difficulty. A summary is printed
//! every few seconds: per worker (difficulty, hashrate from accepted work, accepted/rejected)
//! and per pool (state, miners, shares as the pool judged them). `--failover-at` kills the
//! primary pool mid-run to show miners moving to the standby and back.
//!
//! The workload switch: every rig also answers a fake LuxOS management API
//! (`firmware::fake`), and the proxy runs power control under a site cap a little above the
//! fleet's draw, with its admin socket in a temporary directory (printed, so `hashshift ctl`
//! can watch it from another terminal) and the NOC page on an HTTP port (printed, with a
//! fresh token for its drain and resume buttons). At `--gpu-at` a simulated GPU job asks for half the
//! site's power: rigs are put to sleep (a sleeping rig stops hashing), confirmed, and only
//! then is the budget granted; after `--gpu-for` seconds the job ends and the rigs resume,
//! staggered.

mod summary;

use std::time::{Duration, Instant};

use anyhow::Context;
use tokio_util::sync::CancellationToken;

use crate::fake_firmware::{FakeLuxos, FakeLuxosConfig, FakePhase};
use crate::sim::{Firmware, RigConfig, RigHandle, RigStats};
use crate::testpool::{TestPool, TestPoolConfig};
use hashshift_proxy::config::Config;
use hashshift_proxy::proxy::Proxy;

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
    /// A simulated GPU job asks for half the site's power after this many seconds.
    #[arg(long, default_value_t = 20)]
    pub gpu_at: u64,
    /// ... and ends after running this long.
    #[arg(long, default_value_t = 30)]
    pub gpu_for: u64,
    /// Where the Prometheus endpoint listens (`GET /metrics`; port 0: any free port, printed).
    #[arg(long, default_value = "127.0.0.1:0")]
    pub metrics: std::net::SocketAddr,
}

/// Nameplate of a demo rig (an S19): what its fake management API reports while mining.
const RIG_KW: f64 = 3.25;

/// A simulated rig: its miner (running while the rig hashes) and its management API.
pub struct DemoRig {
    worker: String,
    kind: &'static str,
    config: RigConfig,
    firmware: FakeLuxos,
    miner: Option<RigHandle>,
    /// Stats of miners that ran before (a rig that slept and woke).
    past: RigStats,
}

impl DemoRig {
    fn hashing(&self) -> bool {
        matches!(
            self.firmware.phase(),
            FakePhase::Mining | FakePhase::Stopping
        )
    }

    /// Starts or stops the miner to match what the management API says.
    async fn follow_power(&mut self, stop: &CancellationToken) {
        match (self.hashing(), self.miner.is_some()) {
            (true, false) => {
                self.miner = Some(RigHandle::spawn(self.config.clone(), stop.clone()));
            }
            (false, true) => {
                if let Some(m) = self.miner.take() {
                    let s = m.stats();
                    self.past.accepted += s.accepted;
                    self.past.rejected += s.rejected;
                    self.past.accepted_difficulty += s.accepted_difficulty;
                    m.stop().await;
                }
            }
            _ => {}
        }
    }

    fn stats(&self) -> RigStats {
        let mut s = self
            .miner
            .as_ref()
            .map(RigHandle::stats)
            .unwrap_or_default();
        s.accepted += self.past.accepted;
        s.rejected += self.past.rejected;
        s.accepted_difficulty += self.past.accepted_difficulty;
        s
    }
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
    // Each rig's management API comes first: the config says where it is.
    let dir = std::env::temp_dir().join(format!("hashshift-demo-{}", std::process::id()));
    std::fs::create_dir_all(&dir).context("demo state directory")?;
    let mut apis = Vec::new();
    let mut rigs_toml = String::new();
    for i in 0..args.rigs {
        let api = FakeLuxos::start(FakeLuxosConfig::default())
            .await
            .context("starting a rig's management API")?;
        rigs_toml += &format!(
            "\n[[rig]]\nworker = \"{}\"\nmanagement = \"{}\"\n",
            worker_name(i),
            api.addr()
        );
        apis.push(api);
    }
    // The NOC page's drains and resumes need a bearer token: a fresh one per run, printed.
    let token = format!("{:032x}", rand::random::<u128>());
    let token_file = dir.join("http.token");
    std::fs::write(&token_file, &token).context("demo HTTP token")?;
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

[admin]
socket = {socket:?}
state_dir = {state:?}

[http]
listen = "127.0.0.1:0"
token_file = {token_file:?}
[metrics]
listen = "{metrics}"

[power]
site_cap_kw = {cap}
resume_batch = 1
resume_interval_secs = 3.0
confirm_deadline_secs = 20.0
wake_deadline_secs = 30.0
hysteresis_kw = 0.1
status_poll_secs = 1.0
quiet_secs = 2.0

[[rig_group]]
name = "hall-a"
model = "S19"
rated_w = 3250.0
j_per_th = 34.2
firmware = "luxos"
workers = ["demo.*"]
{rigs_toml}"#,
        a = primary.addr(),
        b = standby.addr(),
        socket = dir.join("admin.sock").display().to_string(),
        state = dir.join("state").display().to_string(),
        token_file = token_file.display().to_string(),
        cap = RIG_KW * args.rigs as f64 + 0.5,
        metrics = args.metrics,
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
        "{} simulated rigs at ~{} kH/s each, each with a LuxOS-like management API; Ctrl-C to stop",
        args.rigs, args.khs
    );
    println!(
        "watch it: hashshift ctl --socket {} rigs   (also: power, events, drain, resume)",
        dir.join("admin.sock").display()
    );
    if let Some(web) = proxy.web_addr() {
        println!("NOC page: http://{web}/   (token for drain/resume: {token})");
    }
    if let Some(m) = proxy.metrics_addr() {
        println!("metrics: curl http://{m}/metrics");
    }
    println!();

    let stop = CancellationToken::new();
    let mut rigs: Vec<DemoRig> = apis
        .into_iter()
        .enumerate()
        .map(|(i, firmware)| {
            let (kind_fw, extranonce_subscribe, kind) = FIRMWARES[i % FIRMWARES.len()];
            let mut config = RigConfig::new(
                addr,
                worker_name(i),
                args.khs * 1000.0 * (0.6 + 0.2 * (i % 5) as f64),
            );
            config.firmware = kind_fw;
            config.extranonce_subscribe = extranonce_subscribe;
            DemoRig {
                worker: worker_name(i),
                kind,
                config,
                firmware,
                miner: None,
                past: RigStats::default(),
            }
        })
        .collect();
    let power = proxy.control().and_then(|c| c.power()).cloned();
    let gpu_kw = (RIG_KW * args.rigs as f64 / 2.0).floor();
    let mut gpu_started: Option<Instant> = None;
    let mut gpu_done = false;

    let started = Instant::now();
    let deadline = args
        .duration
        .map(|d| tokio::time::Instant::now() + Duration::from_secs(d));
    let mut every = tokio::time::interval(Duration::from_secs(args.every.max(1)));
    every.tick().await;
    let mut gate = tokio::time::interval(Duration::from_millis(250));
    let mut killed_at: Option<Instant> = None;
    let ctrl_c = tokio::signal::ctrl_c();
    tokio::pin!(ctrl_c);
    loop {
        tokio::select! {
            _ = &mut ctrl_c => break,
            _ = async { match deadline { Some(d) => tokio::time::sleep_until(d).await, None => std::future::pending().await } } => break,
            _ = gate.tick() => {
                for rig in &mut rigs {
                    rig.follow_power(&stop).await;
                }
                continue;
            }
            _ = every.tick() => {}
        }
        let t = started.elapsed();
        if let Some(p) = &power {
            if gpu_started.is_none() && t >= Duration::from_secs(args.gpu_at) {
                println!(
                    ">>> a GPU job asks for {gpu_kw:.0} kW: rigs drain first, the budget follows once they sleep\n"
                );
                p.gpu_request(gpu_kw).await.ok();
                gpu_started = Some(Instant::now());
            }
            if let (Some(at), false) = (gpu_started, gpu_done) {
                if at.elapsed() >= Duration::from_secs(args.gpu_for) {
                    println!(
                        ">>> the GPU job ends: its power goes back to mining, rigs resume one by one\n"
                    );
                    p.gpu_request(0.0).await.ok();
                    gpu_done = true;
                }
            }
        }
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
        let view = power.as_ref().map(|p| p.view());
        print!(
            "{}",
            summary::summary(t, &rigs, &proxy, &[&primary, &standby], view.as_deref())
        );
    }
    println!("stopping...");
    proxy.shutdown(Duration::from_secs(3)).await;
    stop.cancel();
    for rig in rigs {
        if let Some(m) = rig.miner {
            m.stop().await;
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
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

fn worker_name(i: usize) -> String {
    let kind = FIRMWARES[i % FIRMWARES.len()].2;
    format!("demo.rack{}-{kind}{:02}", i / 3 + 1, i + 1)
}

async fn primary_listening(pool: &TestPool) -> bool {
    tokio::net::TcpStream::connect(pool.addr()).await.is_ok()
}
