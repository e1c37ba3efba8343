//! `hashshift demo`: a whole mining site on one machine, with nothing else installed.
//!
//! Two embedded test pools (a primary and a hot standby, each validating shares with its own
//! hashing), the real proxy between them and the rigs, and a handful of simulated rigs of
//! different firmware styles that really hash at a very low difficulty. A summary is printed
//! every few seconds: per worker (difficulty, hashrate from accepted work, accepted/rejected)
//! and per pool (state, miners, shares as the pool judged them). `--failover-at` kills the
//! primary pool mid-run to show miners moving to the standby and back.
//!
//! The workload switch: every control path hashshift has, one rig each, cycling with
//! `--rigs`: a LuxOS management API ([`FakeLuxos`]), a stock Antminer web API
//! ([`FakeAntminer`]), a Whatsminer API ([`FakeWhatsminer`]), a rig with no management API on
//! an outlet of a switched PDU that speaks SNMP ([`FakePdu`]), a VNish web API ([`FakeVnish`]),
//! and a LuxOS rig whose firmware takes the sleep command and keeps hashing, on a PDU outlet
//! too: hashshift cuts that outlet after `confirm_deadline_secs` (12 s here). A rig hashes
//! while its outlet (if any) is on and its firmware (if any) says it mines. The proxy runs
//! power control under a site cap a little above the fleet's draw, with its admin socket in a
//! temporary directory (printed, so `hashshift ctl` can watch it from another terminal) and
//! the NOC page on an HTTP port (printed, with a fresh token for its drain and resume
//! buttons). At `--gpu-at` a simulated GPU job asks for half the site's power: rigs are put
//! to sleep (a sleeping rig stops hashing), confirmed, and only then is the budget granted.
//! Halfway through the job an operator drains the PDU-only rig (hashshift drains such a rig
//! by itself only as the last resort); after `--gpu-for` seconds the job ends, that rig is
//! resumed and the rigs wake, staggered. The rigs' password and the PDU's community are fresh
//! per run, in the environment variables [`PASSWORD_ENV`] and [`COMMUNITY_ENV`] (`main` sets
//! them, see [`secrets`]), which the proxy reads as it would on a real site.

mod summary;

use std::time::{Duration, Instant};

use anyhow::Context;
use tokio_util::sync::CancellationToken;

use std::sync::Arc;

use crate::fake_firmware::{
    FakeAntminer, FakeAntminerConfig, FakeLuxos, FakeLuxosConfig, FakePhase, FakeVnish,
    FakeVnishConfig, FakeWhatsminer, FakeWhatsminerConfig, RigProfile,
};
use crate::fake_pdu::FakePdu;
use crate::sim::{Firmware, RigConfig, RigHandle, RigStats};
use crate::testpool::{TestPool, TestPoolConfig};
use hashshift_proxy::config::Config;
use hashshift_proxy::control::arbiter::{Operator, OperatorCommand, RigId};
use hashshift_proxy::firmware::Credentials;
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
/// The line voltage of the demo's PDU: what an outlet feeding a mining rig draws is
/// `RIG_KW` over it.
const LINE_V: f64 = 230.0;

/// The environment variable the demo's rig groups read their management API password from
/// (`password_env`); set by `main` before the runtime starts (see [`secrets`]).
pub const PASSWORD_ENV: &str = "HASHSHIFT_DEMO_RIG_PASSWORD";
/// The environment variable its `[[pdu]]` reads the SNMP community from (`community_env`).
pub const COMMUNITY_ENV: &str = "HASHSHIFT_DEMO_PDU_COMMUNITY";

/// Fresh secrets for one demo run, as (environment variable, value): the fake rigs and the
/// fake PDU are started with them, and the in-process proxy reads them from the environment
/// like a real one. The caller sets them before any thread exists (`std::env::set_var`).
pub fn secrets() -> [(&'static str, String); 2] {
    [
        (PASSWORD_ENV, format!("{:016x}", rand::random::<u64>())),
        (
            COMMUNITY_ENV,
            format!("demo-{:016x}", rand::random::<u64>()),
        ),
    ]
}

/// What a demo rig speaks, chosen by its index: every control path hashshift has, cycling.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    /// LuxOS management API (cgminer-style TCP, sessions).
    Luxos,
    /// Stock Antminer web API (Digest auth, config write).
    Antminer,
    /// Whatsminer btminer API (tokens, encrypted commands).
    Whatsminer,
    /// No management API: a switched PDU outlet only.
    Pdu,
    /// VNish web API (bearer token).
    Vnish,
    /// LuxOS whose firmware ignores sleep, on a PDU outlet: escalated to a cut.
    StuckLuxos,
}

const KINDS: [Kind; 6] = [
    Kind::Luxos,
    Kind::Antminer,
    Kind::Whatsminer,
    Kind::Pdu,
    Kind::Vnish,
    Kind::StuckLuxos,
];

impl Kind {
    fn of(i: usize) -> Kind {
        KINDS[i % KINDS.len()]
    }

    /// In worker names.
    fn label(self) -> &'static str {
        match self {
            Kind::Luxos | Kind::StuckLuxos => "luxos",
            Kind::Antminer => "antminer",
            Kind::Whatsminer => "whatsminer",
            Kind::Pdu => "pdu",
            Kind::Vnish => "vnish",
        }
    }

    /// What the summary says it speaks.
    fn api(self) -> &'static str {
        match self {
            Kind::Luxos => "LuxOS",
            Kind::StuckLuxos => "LuxOS*",
            Kind::Antminer => "Antminer",
            Kind::Whatsminer => "Whatsminer",
            Kind::Pdu => "PDU only",
            Kind::Vnish => "VNish",
        }
    }

    /// Its `[[rig_group]]` (one per control path). J/TH sets the drain order: the stuck
    /// LuxOS rig goes first (so its escalation shows), then the Whatsminer and the stock
    /// Antminer; VNish and LuxOS are the replacements. The stock Antminer reports no power,
    /// so its figure is hashrate × J/TH: 34.2 keeps it at the S19's 3.25 kW.
    fn group(self) -> (&'static str, &'static str, f64, &'static str) {
        match self {
            Kind::Luxos => ("luxos", "S19 LuxOS", 29.5, "luxos"),
            Kind::StuckLuxos => ("luxos-old", "S19 LuxOS (old)", 38.0, "luxos"),
            Kind::Antminer => ("stock", "S19 stock", 34.2, "antminer"),
            Kind::Whatsminer => ("whatsminer", "M30S", 36.0, "whatsminer"),
            Kind::Pdu => ("pdu-only", "S19 (no API)", 34.2, "pdu"),
            Kind::Vnish => ("vnish", "S19 VNish", 30.0, "vnish"),
        }
    }

    /// The simulated miner's Stratum style.
    fn stratum(self) -> (Firmware, bool) {
        match self {
            Kind::Whatsminer => (Firmware::Whatsminer, true),
            Kind::Pdu => (Firmware::Basic, false),
            _ => (Firmware::Antminer, true),
        }
    }

    fn outlet(self) -> bool {
        matches!(self, Kind::Pdu | Kind::StuckLuxos)
    }
}

/// A demo rig's management API: one of the protocol-faithful fakes, or none.
enum Api {
    Luxos(FakeLuxos),
    Antminer(FakeAntminer),
    Whatsminer(FakeWhatsminer),
    Vnish(FakeVnish),
    None,
}

impl Api {
    async fn start(kind: Kind, password: &str) -> anyhow::Result<Api> {
        let profile = RigProfile::default();
        Ok(match kind {
            Kind::Luxos | Kind::StuckLuxos => {
                let api = FakeLuxos::start(FakeLuxosConfig::default()).await?;
                // Its firmware takes the sleep command and keeps hashing.
                api.set_stuck(kind == Kind::StuckLuxos);
                Api::Luxos(api)
            }
            Kind::Antminer => Api::Antminer(
                FakeAntminer::start(FakeAntminerConfig {
                    credentials: Credentials::new("root", password),
                    ..FakeAntminerConfig::default()
                })
                .await?,
            ),
            Kind::Whatsminer => Api::Whatsminer(
                FakeWhatsminer::start(FakeWhatsminerConfig {
                    password: password.to_owned(),
                    ..FakeWhatsminerConfig::default()
                })
                .await?,
            ),
            Kind::Vnish => Api::Vnish(
                FakeVnish::start(FakeVnishConfig {
                    profile,
                    credentials: Credentials::new("", password),
                })
                .await?,
            ),
            Kind::Pdu => Api::None,
        })
    }

    fn addr(&self) -> Option<std::net::SocketAddr> {
        match self {
            Api::Luxos(a) => Some(a.addr()),
            Api::Antminer(a) => Some(a.addr()),
            Api::Whatsminer(a) => Some(a.addr()),
            Api::Vnish(a) => Some(a.addr()),
            Api::None => None,
        }
    }

    /// Whether the firmware hashes (`None`: no firmware, power alone decides).
    fn hashing(&self) -> Option<bool> {
        let phase = match self {
            Api::Luxos(a) => a.phase(),
            Api::Antminer(a) => a.phase(),
            Api::Whatsminer(a) => a.phase(),
            Api::Vnish(a) => a.phase(),
            Api::None => return None,
        };
        Some(matches!(phase, FakePhase::Mining | FakePhase::Stopping))
    }
}

/// A simulated rig: its miner (running while the rig hashes), its management API and its
/// PDU outlet, if any.
pub struct DemoRig {
    worker: String,
    kind: &'static str,
    config: RigConfig,
    api: Api,
    outlet: Option<(Arc<FakePdu>, u16)>,
    miner: Option<RigHandle>,
    /// Stats of miners that ran before (a rig that slept and woke).
    past: RigStats,
}

impl DemoRig {
    /// It hashes while its outlet (if any) is on and its firmware (if any) says so.
    fn hashing(&self) -> bool {
        let powered = self
            .outlet
            .as_ref()
            .is_none_or(|(pdu, n)| pdu.is_on(*n).unwrap_or(true));
        powered && self.api.hashing().unwrap_or(true)
    }

    /// Starts or stops the miner to match its power and its management API.
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
    // The proxy reads these from the environment, as it would on a real site; `main` set
    // them before its runtime started.
    let secret = |var: &str| {
        std::env::var(var)
            .ok()
            .filter(|v| !v.is_empty())
            .with_context(|| format!("{var} is not set (`hashshift demo` sets it)"))
    };
    let password = secret(PASSWORD_ENV)?;
    let community = secret(COMMUNITY_ENV)?;
    let outlets = (0..args.rigs).filter(|&i| Kind::of(i).outlet()).count();
    let pdu = if outlets > 0 {
        let outlets = u16::try_from(outlets).context("too many PDU outlets")?;
        Some(Arc::new(
            FakePdu::start(outlets, &community)
                .await
                .context("starting the PDU")?,
        ))
    } else {
        None
    };
    let mut apis = Vec::new();
    let mut rigs_toml = String::new();
    let mut next_outlet = 0u16;
    for i in 0..args.rigs {
        let kind = Kind::of(i);
        let api = Api::start(kind, &password)
            .await
            .context("starting a rig's management API")?;
        let (group, ..) = kind.group();
        rigs_toml += &format!(
            "\n[[rig]]\nworker = \"{}\"\ngroup = \"{group}\"\n",
            worker_name(i)
        );
        if let Some(addr) = api.addr() {
            rigs_toml += &format!("management = \"{addr}\"\n");
        }
        let mut outlet = None;
        if let (true, Some(pdu)) = (kind.outlet(), &pdu) {
            next_outlet += 1;
            // A mining S19 draws its 3.25 kW at the line voltage while the outlet is on.
            pdu.set_current(next_outlet, RIG_KW * 1000.0 / LINE_V);
            rigs_toml += &format!("pdu = \"pdu-a\"\noutlet = {next_outlet}\n");
            outlet = Some((pdu.clone(), next_outlet));
        }
        apis.push((api, outlet));
    }
    let mut groups_toml = String::new();
    for kind in KINDS {
        let (name, model, j_per_th, firmware) = kind.group();
        groups_toml += &format!(
            "\n[[rig_group]]\nname = \"{name}\"\nmodel = \"{model}\"\nrated_w = {rated}\n\
             j_per_th = {j_per_th}\nfirmware = \"{firmware}\"\n",
            rated = RIG_KW * 1000.0
        );
        if matches!(kind, Kind::Antminer | Kind::Whatsminer | Kind::Vnish) {
            groups_toml += &format!("password_env = \"{PASSWORD_ENV}\"\n");
        }
    }
    if let Some(pdu) = &pdu {
        groups_toml += "\n";
        groups_toml += &pdu.config_toml("pdu-a", COMMUNITY_ENV);
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
resume_interval_secs = 2.0
confirm_deadline_secs = 12.0
replace_after_secs = 8.0
wake_deadline_secs = 30.0
hysteresis_kw = 0.1
status_poll_secs = 1.0
quiet_secs = 2.0
{groups_toml}{rigs_toml}"#,
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
        "{} simulated rigs at ~{} kH/s each; how hashshift puts each to sleep; Ctrl-C to stop",
        args.rigs, args.khs
    );
    for (i, (api, outlet)) in apis.iter().enumerate() {
        let kind = Kind::of(i);
        let how = match kind {
            Kind::Luxos => "LuxOS API (cgminer-style TCP, logon session): sleep = curtail",
            Kind::Antminer => "stock Antminer web API (HTTP Digest): sleep = work mode 1 (sleep)",
            Kind::Whatsminer => "Whatsminer btminer API v2 (token, AES): sleep = power_off",
            Kind::Vnish => "VNish web API (bearer token): sleep = /api/v1/mining/stop",
            Kind::Pdu => "no management API: sleep = its PDU outlet switched off (SNMP)",
            Kind::StuckLuxos => {
                "LuxOS API, firmware ignores sleep (*): its PDU outlet is cut after confirm_deadline_secs"
            }
        };
        let at = match (api.addr(), outlet) {
            (Some(a), Some((pdu, n))) => format!("{a} + PDU {} outlet {n}", pdu.addr()),
            (Some(a), None) => a.to_string(),
            (None, Some((pdu, n))) => format!("PDU {} outlet {n}", pdu.addr()),
            (None, None) => "-".to_owned(),
        };
        println!("  {:<26} {how}  [{at}]", worker_name(i));
    }
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
        .map(|(i, (api, outlet))| {
            let kind = Kind::of(i);
            let (stratum, extranonce_subscribe) = kind.stratum();
            let mut config = RigConfig::new(
                addr,
                worker_name(i),
                args.khs * 1000.0 * (0.6 + 0.2 * (i % 5) as f64),
            );
            config.firmware = stratum;
            config.extranonce_subscribe = extranonce_subscribe;
            DemoRig {
                worker: worker_name(i),
                kind: kind.api(),
                config,
                api,
                outlet,
                miner: None,
                past: RigStats::default(),
            }
        })
        .collect();
    let power = proxy.control().and_then(|c| c.power());
    let gpu_kw = (RIG_KW * args.rigs as f64 / 2.0).floor();
    let mut gpu_started: Option<Instant> = None;
    let mut gpu_done = false;
    // Halfway through the GPU job an operator drains the rig that only a PDU controls (it is
    // drained automatically only as the last resort), and resumes it when the job ends.
    let pdu_rig = (0..args.rigs)
        .find(|&i| Kind::of(i) == Kind::Pdu)
        .map(worker_name);
    let mut pdu_drained = false;

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
                    if let (Some(rig), true) = (&pdu_rig, pdu_drained) {
                        p.operator(
                            OperatorCommand::ResumeRig {
                                rig: RigId(rig.clone()),
                            },
                            demo_operator(),
                        )
                        .await
                        .ok();
                    }
                }
            }
            if let (Some(at), Some(rig), false, false) =
                (gpu_started, &pdu_rig, pdu_drained, gpu_done)
            {
                if at.elapsed() >= Duration::from_secs(args.gpu_for / 2) {
                    println!(
                        ">>> an operator drains {rig} (no management API): hashshift switches its PDU outlet off\n"
                    );
                    p.operator(
                        OperatorCommand::DrainRig {
                            rig: RigId(rig.clone()),
                        },
                        demo_operator(),
                    )
                    .await
                    .ok();
                    pdu_drained = true;
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
    let kind = Kind::of(i).label();
    format!("demo.rack{}-{kind}{:02}", i / 3 + 1, i + 1)
}

fn demo_operator() -> Operator {
    Operator {
        who: "demo".into(),
        why: "maintenance on a rig without a management API".into(),
    }
}

async fn primary_listening(pool: &TestPool) -> bool {
    tokio::net::TcpStream::connect(pool.addr()).await.is_ok()
}
