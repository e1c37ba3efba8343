//! Fault injection against the real binary (issue 11 item 7): the `hashshift` executable runs
//! as a child process with power control, 4 simulated S19s (3.25 kW each) mine through it and
//! answer fake LuxOS APIs, a command hook stands in for Slurm, and the suite drains, resumes,
//! asks for GPU power and curtails over the admin socket while injecting one fault per
//! iteration. After each step it checks, from independent sources:
//!
//! - **A, `ctl power`**: `mining_kw + gpu_granted_kw <= budget_kw` (cap minus headroom). Right
//!   after a cap cut the site may be over until rigs confirm asleep; what is never allowed is
//!   to be over *and* have raised it ourselves since the last sample (the grant grew, or a rig
//!   left `asleep`), or to stay over longer than [`SHED_LIMIT`].
//! - **B, the truth** (the fakes know): every rig whose simulated boards are up (anything but
//!   `Sleeping`, counted at 3.25 kW) plus the budget the GPU hook last applied, same rules.
//! - **C, per rig**: a rig `ctl rigs` shows `asleep` must really sleep and get no share
//!   accepted while so counted; a rig that really mines must not be counted at a fraction of
//!   its draw.
//! - **D, the audit log** (`state/audit.jsonl`), replayed at the end: every `wake` and every
//!   GPU budget increase happened when it fit.
//! - **No share lost**: every share a rig submitted got an answer or its connection closed
//!   (a miner that timed out waiting for an answer is a lost share), and the proxy never said
//!   "accepted" for more shares than the pool accepted.
//!
//! Every fault is verified to have happened (fake fault hits, hook calls in the mode, log
//! lines, the kill's signal). A short run (one iteration per fault kind, about a minute) is in
//! the default test run; `HASHSHIFT_FAULTS_LONG=1` runs for `HASHSHIFT_FAULTS_SECS` (default
//! 600) seconds. `HASHSHIFT_FAULT_SEED` replays a run (the seed is printed);
//! `HASHSHIFT_FAULTS_KEEP=1` keeps the temp dir (config, proxy log, state/audit.jsonl).
//!
//! Violations are tagged with the issue-11 item whose fix they depend on, e.g. `[item 3]`.

#[path = "support/fault_site.rs"]
mod fault_site;
mod support;

#[path = "fault_injection/checks.rs"]
mod checks;
#[path = "fault_injection/faults.rs"]
mod faults;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant, SystemTime};

use anyhow::{Context, Result};
use fault_site::{Proc, RIG_KW, ask, ask_ok, fault_rig, free_port, raw, write_hook};
use hashshift_proxy::control::admin::protocol::{Command, Target};
use hashshift_tools::fake_firmware::FakePhase;
use hashshift_tools::testpool::{TestPool, TestPoolConfig};
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use serde_json::Value;
use support::rig::SimRig;

const RIGS: usize = 4;
const SITE_CAP_KW: f64 = 14.0;
const HEADROOM_KW: f64 = 0.5;
/// Rounding slack for kW comparisons.
const TOL_KW: f64 = 0.02;
/// Longest the site may stay over its budget after a cap cut (confirm deadline 5 s, status
/// polls, resume steps, the hook's own timeout and retry).
const SHED_LIMIT: Duration = Duration::from_secs(12);
const SAMPLE_EVERY: Duration = Duration::from_millis(250);
/// `[power] quiet_secs`. The controller reads a rig's last share from a copy refreshed once
/// per 1 s tick, so at 1.0 a rig submitting every 100 ms can pass as quiet (reported to the
/// lead); 2.0 keeps the ratio of a real site (default 10 s against minutes between shares
/// stopping and the tick) and tests the lie itself.
const QUIET_SECS: f64 = 2.0;

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Fault {
    Kill9,
    FirmwareStall,
    FirmwareReset,
    FirmwareGarbage,
    FirmwareLiesAsleep,
    FirmwareReports1W,
    SlurmHookHangs,
    SlurmHookFails,
    StateUnwritable,
    AbsurdInput,
}

const KINDS: [Fault; 10] = [
    Fault::Kill9,
    Fault::FirmwareStall,
    Fault::FirmwareReset,
    Fault::FirmwareGarbage,
    Fault::FirmwareLiesAsleep,
    Fault::FirmwareReports1W,
    Fault::SlurmHookHangs,
    Fault::SlurmHookFails,
    Fault::StateUnwritable,
    Fault::AbsurdInput,
];

#[derive(Clone, Debug)]
enum Op {
    Drain(usize),
    Resume(usize),
    ResumeAll,
    Gpu(f64),
    Curtail(f64),
    CurtailClear,
}

/// What the suite saw over the run.
#[derive(Default)]
struct Tally {
    iterations: u64,
    injected: BTreeMap<String, u64>,
    verified: BTreeMap<String, u64>,
    ops: BTreeMap<String, u64>,
    samples: u64,
    violations: Vec<String>,
    repeats: BTreeMap<String, u64>,
    notes: Vec<String>,
    recoveries: u64,
    /// The iteration of the last recovery.
    recovered_in: Option<u64>,
    /// When each recovery moved the plan aside (RFC 3339, as the audit log stamps events).
    recovered_at: Vec<String>,
    /// Absurd admin inputs sent, by case.
    absurd: BTreeMap<String, u64>,
}

impl Tally {
    /// Records a violation; the same one in the same iteration is counted, not repeated (a
    /// stuck condition repeats every sample).
    fn violation(&mut self, iteration: u64, what: String) {
        // Right after the suite moved a dead plan aside, rigs the fresh plan does not know yet
        // are not counted: what item 5 ("every rig unknown, never assumed asleep") fixes.
        let after_reset = self
            .recovered_in
            .is_some_and(|r| iteration > 0 && (iteration == r || iteration == r + 1));
        let what = if after_reset {
            format!("[after plan reset, item 5] {what}")
        } else {
            what
        };
        let key = format!("#{iteration}: {what}");
        if let Some(n) = self.repeats.get_mut(&key) {
            *n += 1;
            return;
        }
        eprintln!("VIOLATION {key}");
        self.repeats.insert(key.clone(), 1);
        self.violations.push(key);
    }

    /// The violations, each with how many samples saw it.
    fn report(&self) -> Vec<String> {
        self.violations
            .iter()
            .map(|v| match self.repeats.get(v) {
                Some(n) if *n > 1 => format!("{v} (x{n})"),
                _ => v.clone(),
            })
            .collect()
    }
}

/// The previous sample, for "did we raise it ourselves" and "how long over".
#[derive(Default)]
struct Watch {
    grant_kw: Option<f64>,
    not_asleep: Option<u64>,
    /// The budget and the rig count at the last sample: a rig counted as drawing again
    /// while the budget fell or rigs were added in the same interval is not our raise (the
    /// audit replay, D, checks every wake and grant increase exactly).
    budget_kw: Option<f64>,
    total: Option<u64>,
    /// Mining at the last sample: a grant that grew is our raise only if it does not fit
    /// beside the mining already seen (mining that rose since is an outside event, which the
    /// shed limit and the audit replay cover).
    mining_kw: Option<f64>,
    over_since: Option<Instant>,
    true_up: Option<usize>,
    applied_kw: Option<f64>,
    true_over_since: Option<Instant>,
    /// Per rig: accepted shares when last seen counted asleep.
    asleep_accepted: BTreeMap<String, u64>,
}

struct Suite {
    dir: PathBuf,
    socket: PathBuf,
    config: PathBuf,
    log: PathBuf,
    pool: TestPool,
    rigs: Vec<SimRig>,
    proc: Option<Proc>,
    rng: StdRng,
    tally: Tally,
    watch: Watch,
    /// The GPU demand last asked for, kW.
    gpu_wanted: f64,
    last_op_at: Instant,
}

impl Suite {
    async fn start(seed: u64) -> Result<Suite> {
        let dir = std::env::temp_dir().join(format!("hashshift-faults-{}", rand::random::<u64>()));
        std::fs::create_dir_all(dir.join("state"))?;
        let pool = TestPool::start(TestPoolConfig {
            difficulty: support::power_site::DIFF,
            name: "a".into(),
            ..TestPoolConfig::default()
        })
        .await?;
        let mut rigs = Vec::new();
        for i in 0..RIGS {
            rigs.push(fault_rig(&format!("farm.rig{i}")).await?);
        }
        let hook = write_hook(&dir)?;
        let port = free_port()?;
        let mut text = format!(
            "[[downstream]]\nprotocol = \"sv1\"\nlisten = \"127.0.0.1:{port}\"\n\
             [[upstream]]\nurl = \"stratum+tcp://{}\"\nuser = \"farm\"\n\
             [vardiff]\ninitial = {}\nmin = {}\nmax = 1.0\nshares_per_minute = 600.0\n\
             [admin]\nsocket = {:?}\nstate_dir = {:?}\n\
             [power]\nsite_cap_kw = {SITE_CAP_KW}\nheadroom_kw = {HEADROOM_KW}\nresume_batch = 1\n\
             resume_interval_secs = 0.5\nconfirm_deadline_secs = 5.0\nwake_deadline_secs = 5.0\n\
             hysteresis_kw = 0.1\nstatus_poll_secs = 0.5\nquiet_secs = {QUIET_SECS}\n\
             [gpu_scheduler]\nkind = \"command\"\nprogram = {:?}\ntimeout_ms = 1500\n\
             [[rig_group]]\nname = \"s19\"\nmodel = \"S19\"\nrated_w = 3250.0\nj_per_th = 34.2\n\
             firmware = \"luxos\"\nworkers = [\"farm.rig*\"]\naddresses = [\"127.0.0.0/8\"]\n",
            pool.addr(),
            support::power_site::DIFF,
            // Never below the pool's difficulty: every share a miner is told is accepted must
            // go to the pool, so "told accepted <= pool accepted" is exact. (A slow machine
            // made vardiff lower miners below it, and shares accepted locally, as they should
            // be, failed that check.)
            support::power_site::DIFF,
            dir.join("admin.sock").display().to_string(),
            dir.join("state").display().to_string(),
            hook.display().to_string(),
        );
        for r in &rigs {
            text += &format!(
                "[[rig]]\nworker = \"{}\"\nmanagement = \"{}\"\n",
                r.worker,
                r.firmware.addr()
            );
        }
        let config = dir.join("hashshift.toml");
        std::fs::write(&config, text)?;
        let mut suite = Suite {
            socket: dir.join("admin.sock"),
            log: dir.join("hashshift.log"),
            config,
            dir,
            pool,
            rigs,
            proc: None,
            rng: StdRng::seed_from_u64(seed),
            tally: Tally::default(),
            watch: Watch::default(),
            gpu_wanted: 0.0,
            last_op_at: Instant::now(),
        };
        suite.launch().await?;
        let addr = format!("127.0.0.1:{port}").parse()?;
        for r in &mut suite.rigs {
            r.mine(addr);
        }
        // Every rig mining with firmware figures before the first fault.
        let t0 = Instant::now();
        loop {
            let rigs = ask_ok(&suite.socket, Command::Rigs).await?;
            let a = rigs.as_array().cloned().unwrap_or_default();
            if a.len() == RIGS
                && a.iter()
                    .all(|r| r["state"] == "mining" && r["power_source"] == "firmware")
            {
                break;
            }
            anyhow::ensure!(
                t0.elapsed() < Duration::from_secs(40),
                "site never came up: {rigs:#}\n{}",
                tail(&suite.log)
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        Ok(suite)
    }

    /// Starts the binary and waits until its admin socket answers `power`.
    async fn launch(&mut self) -> Result<()> {
        let _ = std::fs::remove_file(&self.socket);
        self.proc = Some(Proc::start(&self.config, &self.log)?);
        let t0 = Instant::now();
        loop {
            if let Ok(r) = ask(&self.socket, Command::Power).await {
                if r.ok {
                    return Ok(());
                }
            }
            if let Some(p) = self.proc.as_mut() {
                if let Some(status) = p.exited() {
                    anyhow::bail!("hashshift exited at start: {status}\n{}", tail(&self.log));
                }
            }
            anyhow::ensure!(
                t0.elapsed() < Duration::from_secs(20),
                "hashshift did not answer on its admin socket\n{}",
                tail(&self.log)
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    fn pick_op(&mut self) -> Op {
        let i = self.rng.random_range(0..RIGS);
        match self.rng.random_range(0..10) {
            0 | 1 => Op::Drain(i),
            2 => Op::Resume(i),
            3 => Op::ResumeAll,
            4..=6 => Op::Gpu((self.rng.random_range(0..=20) as f64) * 0.5),
            7 | 8 => Op::Curtail(self.rng.random_range(7..=26) as f64 * 0.5),
            _ => Op::CurtailClear,
        }
    }

    async fn finish(mut self) -> Result<Tally> {
        // Shares: stop every miner and read why each one ended.
        let mut lost = 0u64;
        let mut miner_accepted = 0u64;
        let mut ends: BTreeMap<String, u64> = BTreeMap::new();
        let rigs = std::mem::take(&mut self.rigs);
        let mut errors = Vec::new();
        for r in rigs {
            let accepted = r.accepted.clone();
            let errs = r.errors.clone();
            r.stop().await;
            miner_accepted += accepted.load(Ordering::Relaxed);
            errors.extend(std::mem::take(
                &mut *errs.lock().unwrap_or_else(|e| e.into_inner()),
            ));
        }
        for e in &errors {
            let kind = if e.contains("timed out") {
                lost += 1;
                "timed out waiting for an answer (lost)"
            } else if e.contains("rejected") {
                "share rejected (answered)"
            } else {
                "connection closed"
            };
            *ends.entry(kind.into()).or_default() += 1;
            if !e.contains("closed") && !e.contains("reset") && !e.contains("EOF") {
                self.tally.notes.push(format!("miner ended: {}", clip(e)));
            }
        }
        let pool = self.pool.stats();
        if lost > 0 {
            self.tally.violation(
                0,
                format!("[shares] {lost} share(s) never answered on a live connection"),
            );
        }
        if miner_accepted > pool.accepted {
            self.tally.violation(
                0,
                format!(
                    "[shares] miners were told {miner_accepted} accepted, the pool accepted {}",
                    pool.accepted
                ),
            );
        }
        let checked = self.replay_audit()?;
        eprintln!(
            "shares: pool accepted {}, rejected {:?}; miners told accepted {miner_accepted}; \
             answered to the pool but cut off by kills: {}; miner endings {ends:?}; audit decisions replayed {checked}",
            pool.accepted,
            pool.rejected,
            pool.accepted.saturating_sub(miner_accepted),
        );
        if let Some(p) = self.proc.take() {
            let _ = p.kill9();
        }
        if std::env::var_os("HASHSHIFT_FAULTS_KEEP").is_none() {
            let _ = std::fs::remove_dir_all(&self.dir);
        } else {
            eprintln!("kept {}", self.dir.display());
        }
        self.pool.shutdown().await;
        Ok(self.tally)
    }
}

/// Wakes a fake LuxOS rig over its own API (logon, `curtail wakeup`, logoff), as an operator's
/// tool would.
async fn wake_by_hand(addr: std::net::SocketAddr) -> Result<()> {
    async fn one(addr: std::net::SocketAddr, command: &str, parameter: &str) -> Result<Value> {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut s = tokio::net::TcpStream::connect(addr).await?;
        let req = serde_json::json!({"command": command, "parameter": parameter});
        s.write_all(req.to_string().as_bytes()).await?;
        let mut buf = Vec::new();
        tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut buf)).await??;
        let text = String::from_utf8_lossy(&buf);
        Ok(serde_json::from_str(text.trim_end_matches('\0'))?)
    }
    let logon = one(addr, "logon", "").await?;
    let sid = logon["SESSION"][0]["SessionID"]
        .as_str()
        .context("no session")?
        .to_owned();
    one(addr, "curtail", &format!("{sid},wakeup")).await?;
    one(addr, "logoff", &sid).await?;
    Ok(())
}

fn hook_calls(dir: &Path) -> Vec<String> {
    std::fs::read_to_string(dir.join("gpu_calls"))
        .unwrap_or_default()
        .lines()
        .map(str::to_owned)
        .collect()
}

fn count_in(file: &Path, needle: &str) -> usize {
    std::fs::read_to_string(file)
        .unwrap_or_default()
        .matches(needle)
        .count()
}

fn tail(file: &Path) -> String {
    let text = std::fs::read_to_string(file).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(30)..].join("\n")
}

fn clip(s: &str) -> String {
    s.chars().take(300).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_site_holds_its_cap_and_loses_no_share_under_injected_faults() -> Result<()> {
    let long = std::env::var("HASHSHIFT_FAULTS_LONG").is_ok_and(|v| v == "1");
    let seed = std::env::var("HASHSHIFT_FAULT_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(rand::random::<u64>);
    let limit = if long {
        let secs = std::env::var("HASHSHIFT_FAULTS_SECS")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(600);
        Duration::from_secs(secs)
    } else {
        Duration::from_secs(90)
    };
    eprintln!(
        "fault injection: seed {seed} (replay with HASHSHIFT_FAULT_SEED={seed}), {} run",
        if long { "long" } else { "short" }
    );
    let started = Instant::now();
    let mut suite = Suite::start(seed).await?;
    // Every kind once per round, in a seeded order; the short run is one round.
    let mut it = 0u64;
    'run: loop {
        let mut round = KINDS;
        round.shuffle(&mut suite.rng);
        for fault in round {
            if started.elapsed() >= limit {
                break 'run;
            }
            it += 1;
            eprintln!("iteration {it}: {fault:?}");
            suite.iteration(it, fault).await?;
        }
        if !long {
            break;
        }
    }
    let tally = suite.finish().await?;
    let wall = started.elapsed();
    eprintln!("\n| fault | injected | verified |\n|---|---:|---:|");
    for k in KINDS {
        let k = format!("{k:?}");
        eprintln!(
            "| {k} | {} | {} |",
            tally.injected.get(&k).copied().unwrap_or(0),
            tally.verified.get(&k).copied().unwrap_or(0)
        );
    }
    eprintln!(
        "iterations {}, invariant samples {}, operations {:?}, recoveries {}, wall {:.0} s, violations {}",
        tally.iterations,
        tally.samples,
        tally.ops,
        tally.recoveries,
        wall.as_secs_f64(),
        tally.violations.len()
    );
    eprintln!("absurd inputs sent: {:?}", tally.absurd);
    for n in &tally.notes {
        eprintln!("note: {n}");
    }
    let mut violations = tally.report();
    for v in &violations {
        eprintln!("violation: {v}");
    }
    // The sample-based "raised over budget by our own action" checks (A, B) compare two
    // samples 250 ms apart and cannot tell our wake or grant from an outside event in the same
    // interval (a wake already in flight finishing during a cut, a stalled firmware that never
    // took its sleep). They fail the long run, which is read by a person; in the default run
    // they are reported, and the exact checks fail it: the audit replay (every wake and grant
    // increase fitted when made), rigs counted asleep while mining, over budget longer than
    // the shed limit, lost shares, refused or crashed power control.
    if !long {
        violations.retain(|v| {
            let heuristic = v.contains("raised over budget by own action");
            if heuristic {
                eprintln!("flag (sample heuristic, reported, not failing the default run): {v}");
            }
            !heuristic
        });
    }
    // Every kind injected must have been seen to happen.
    for (k, n) in &tally.injected {
        let v = tally.verified.get(k).copied().unwrap_or(0);
        assert!(
            v > 0,
            "{k}: injected {n} times, never seen to happen (seed {seed})"
        );
    }
    assert!(
        violations.is_empty(),
        "{} violation(s) (seed {seed}):\n{}",
        violations.len(),
        violations.join("\n")
    );
    Ok(())
}
