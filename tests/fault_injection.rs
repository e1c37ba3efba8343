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

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

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

    async fn apply(&mut self, it: u64, op: &Op) -> Result<()> {
        let name = format!("{op:?}");
        let kind = name.split('(').next().unwrap_or("?").to_owned();
        *self.tally.ops.entry(kind).or_default() += 1;
        let rig = |i: &usize| Target::Rig(format!("farm.rig{i}"));
        let command = match op {
            Op::Drain(i) => Command::Drain {
                target: rig(i),
                reason: Some("fault suite".into()),
            },
            Op::Resume(i) => Command::Resume {
                target: rig(i),
                reason: None,
            },
            Op::ResumeAll => Command::Resume {
                target: Target::All,
                reason: None,
            },
            Op::Gpu(kw) => {
                self.gpu_wanted = *kw;
                Command::GpuRequest {
                    kw: *kw,
                    reason: Some("fault suite job".into()),
                }
            }
            Op::Curtail(kw) => Command::Curtail {
                kw: *kw,
                until_unix: unix_now() + 600,
                reason: Some("fault suite grid event".into()),
            },
            Op::CurtailClear => Command::CurtailClear { reason: None },
        };
        self.last_op_at = Instant::now();
        match ask(&self.socket, command).await {
            // A refusal of an ordinary request (resume of a rig not drained, ...) is fine.
            Ok(_) => {}
            Err(e) => self
                .tally
                .notes
                .push(format!("#{it}: {op:?} got no answer: {e:#}")),
        }
        Ok(())
    }

    /// One sample of every invariant.
    async fn check(&mut self, it: u64) -> Result<()> {
        self.tally.samples += 1;
        let now = Instant::now();
        // B: the truth, from the fakes and the hook's applied budget.
        let up = self
            .rigs
            .iter()
            .filter(|r| r.phase() != FakePhase::Sleeping)
            .count();
        let applied = std::fs::read_to_string(self.dir.join("gpu_applied"))
            .ok()
            .and_then(|s| s.trim().parse::<f64>().ok())
            .unwrap_or(0.0);
        let budget = self.budget_now().await;
        if let Some(budget) = budget {
            let truth = up as f64 * RIG_KW + applied;
            let over = truth > budget + TOL_KW;
            let raised = self.watch.true_up.is_some_and(|u| up > u)
                || self.watch.applied_kw.is_some_and(|a| applied > a + TOL_KW);
            if over && raised {
                self.tally.violation(
                    it,
                    format!(
                        "[B truth] raised over budget by own action: {up} rigs up ({:.2} kW) + GPU applied {applied:.2} kW > budget {budget:.2} kW",
                        up as f64 * RIG_KW
                    ),
                );
            }
            match (over, self.watch.true_over_since) {
                (true, None) => self.watch.true_over_since = Some(now),
                (true, Some(t)) if now - t > SHED_LIMIT => {
                    self.tally.violation(
                        it,
                        format!(
                            "[B truth] over budget for more than {} s: {up} rigs up + GPU applied {applied:.2} kW > {budget:.2} kW",
                            SHED_LIMIT.as_secs()
                        ),
                    );
                    self.watch.true_over_since = Some(now);
                }
                (false, _) => self.watch.true_over_since = None,
                _ => {}
            }
        }
        self.watch.true_up = Some(up);
        self.watch.applied_kw = Some(applied);

        // A: what the proxy says.
        let power = match ask(&self.socket, Command::Power).await {
            Ok(r) if r.ok => r.result.unwrap_or_default(),
            Ok(r) => {
                self.tally
                    .violation(it, format!("[item 3/4] `power` refused: {:?}", r.error));
                return self.recover(it, "power control refused `power`").await;
            }
            Err(e) => {
                // The process is down (a kill in progress is handled by the caller).
                self.tally.notes.push(format!("#{it}: power: {e:#}"));
                return Ok(());
            }
        };
        let f = |k: &str| power[k].as_f64().unwrap_or(f64::NAN);
        let (mining, grant, budget_kw) = (f("mining_kw"), f("gpu_granted_kw"), f("budget_kw"));
        let counts = &power["rigs"];
        let total: u64 = ["mining", "draining", "asleep", "waking", "fault", "unknown"]
            .iter()
            .map(|k| counts[k].as_u64().unwrap_or(0))
            .sum();
        let not_asleep = total.saturating_sub(counts["asleep"].as_u64().unwrap_or(0));
        // NaN (a missing figure) counts as over.
        let over = (mining + grant)
            .partial_cmp(&(budget_kw + TOL_KW))
            .is_none_or(|o| o.is_gt());
        let steady = self
            .watch
            .budget_kw
            .is_some_and(|b| budget_kw + TOL_KW >= b)
            && self.watch.total == Some(total);
        let grant_raised = self.watch.grant_kw.is_some_and(|g| grant > g + TOL_KW)
            && self
                .watch
                .mining_kw
                .is_none_or(|m| m + grant > budget_kw + TOL_KW);
        let raised =
            grant_raised || (steady && self.watch.not_asleep.is_some_and(|n| not_asleep > n));
        if over && raised {
            self.tally.violation(
                it,
                format!(
                    "[A ctl power] raised over budget by own action: mining {mining:.3} + grant {grant:.3} > budget {budget_kw:.3} (rigs {counts})"
                ),
            );
        }
        match (over, self.watch.over_since) {
            (true, None) => self.watch.over_since = Some(now),
            (true, Some(t)) if now - t > SHED_LIMIT => {
                self.tally.violation(
                    it,
                    format!(
                        "[A ctl power] over budget for more than {} s: mining {mining:.3} + grant {grant:.3} > budget {budget_kw:.3}",
                        SHED_LIMIT.as_secs()
                    ),
                );
                self.watch.over_since = Some(now);
            }
            (false, _) => self.watch.over_since = None,
            _ => {}
        }
        self.watch.grant_kw = Some(grant);
        self.watch.not_asleep = Some(not_asleep);
        self.watch.budget_kw = Some(budget_kw);
        self.watch.total = Some(total);
        self.watch.mining_kw = Some(mining);

        // C: per rig, against the fakes.
        let Ok(rigs) = ask_ok(&self.socket, Command::Rigs).await else {
            return Ok(());
        };
        for view in rigs.as_array().into_iter().flatten() {
            let id = view["id"].as_str().unwrap_or("?").to_owned();
            // A connection that has not authorized yet (a rig reconnecting) is listed as
            // `conn-N` with no power state: not a rig, nothing to check.
            if id.starts_with("conn-") && view["state"].is_null() {
                continue;
            }
            let Some(rig) = self.rigs.iter().find(|r| r.worker == id) else {
                self.tally
                    .violation(it, format!("[C] unknown rig {id:?} in `ctl rigs`"));
                continue;
            };
            let phase = rig.phase();
            let accepted = rig.accepted.load(Ordering::Relaxed);
            if view["state"] == "asleep" {
                if phase != FakePhase::Sleeping {
                    self.tally.violation(
                        it,
                        format!("[C truth] {id} counted asleep (0 kW) but its boards are {phase:?} (really drawing)"),
                    );
                }
                if let Some(before) = self.watch.asleep_accepted.get(&id) {
                    if accepted > *before {
                        self.tally.violation(
                            it,
                            format!(
                                "[C shares] {id} got {} share(s) accepted while counted asleep",
                                accepted - before
                            ),
                        );
                    }
                }
                self.watch.asleep_accepted.insert(id, accepted);
            } else {
                self.watch.asleep_accepted.remove(&id);
                let w = view["power_w"].as_f64().unwrap_or(f64::NAN);
                let undercounted = w
                    .partial_cmp(&(RIG_KW * 1000.0 * 0.5))
                    .is_none_or(|o| o.is_lt());
                if phase == FakePhase::Mining && undercounted {
                    self.tally.violation(
                        it,
                        format!(
                            "[C truth] {id} really mines at {:.0} W but is counted at {w} W",
                            RIG_KW * 1000.0
                        ),
                    );
                }
            }
        }
        Ok(())
    }

    /// `budget_kw` now, from `ctl power` (None while the proxy is down).
    async fn budget_now(&self) -> Option<f64> {
        match ask(&self.socket, Command::Power).await {
            Ok(r) if r.ok => r.result?["budget_kw"].as_f64(),
            _ => None,
        }
    }

    /// Samples for `d`, killing the proxy `kill_at` into it if asked.
    async fn observe(&mut self, it: u64, d: Duration, kill_at: Option<Duration>) -> Result<()> {
        let t0 = Instant::now();
        let mut kill_at = kill_at;
        while t0.elapsed() < d {
            if kill_at.is_some_and(|k| t0.elapsed() >= k) {
                kill_at = None;
                self.kill_and_restart(it).await?;
            }
            self.check(it).await?;
            tokio::time::sleep(SAMPLE_EVERY).await;
        }
        Ok(())
    }

    async fn kill_and_restart(&mut self, it: u64) -> Result<()> {
        // What the plan says before the kill: pins and curtailment as the proxy shows them.
        let before = self.plan_view().await;
        let op_age = self.last_op_at.elapsed();
        let proc = self.proc.take().context("no proxy to kill")?;
        let signal = proc.kill9()?;
        if signal == Some(9) {
            *self.tally.verified.entry("Kill9".into()).or_default() += 1;
        } else {
            self.tally.violation(
                it,
                format!("[item 4] proxy was already dead before kill -9 ({signal:?})"),
            );
        }
        // Down for a random moment, as a supervisor's restart delay.
        let down = Duration::from_millis(self.rng.random_range(100..1500));
        let t0 = Instant::now();
        while t0.elapsed() < down {
            self.check_truth_only(it);
            tokio::time::sleep(SAMPLE_EVERY).await;
        }
        self.watch = Watch::default();
        self.launch().await?;
        let after = self.plan_view().await;
        // The plan is persisted within 200 ms of a change; an op newer than 1 s may be lost.
        if let (Some(b), Some(a)) = (before, after) {
            if b != a && op_age > Duration::from_secs(1) {
                self.tally.violation(
                    it,
                    format!("[item 4/5] plan not resumed after kill -9: before {b:?}, after {a:?}"),
                );
            }
        }
        Ok(())
    }

    /// While the proxy is down only the truth can be checked: nothing may wake.
    fn check_truth_only(&mut self, it: u64) {
        let up = self
            .rigs
            .iter()
            .filter(|r| r.phase() != FakePhase::Sleeping)
            .count();
        if self.watch.true_up.is_some_and(|u| up > u) {
            self.tally.violation(
                it,
                format!("[B truth] a rig woke while the proxy was down ({up} up)"),
            );
        }
        self.watch.true_up = Some(up);
    }

    /// Operator pins and the curtailment, as the proxy shows them.
    async fn plan_view(&self) -> Option<(Vec<String>, Value)> {
        let rigs = ask_ok(&self.socket, Command::Rigs).await.ok()?;
        let power = ask_ok(&self.socket, Command::Power).await.ok()?;
        let mut pinned: Vec<String> = rigs
            .as_array()?
            .iter()
            .filter(|r| r["pinned"].is_string())
            .filter_map(|r| r["id"].as_str().map(str::to_owned))
            .collect();
        pinned.sort();
        let c = &power["curtailment"];
        Some((pinned, serde_json::json!([c["cap_kw"], c["until_unix"]])))
    }

    /// After a violation that leaves power control dead: kill, move the plan aside, restart
    /// (what `hashshift run --reset-power-state` will do once item 5 is in).
    async fn recover(&mut self, it: u64, why: &str) -> Result<()> {
        self.tally.recoveries += 1;
        self.tally.recovered_in = Some(it);
        self.tally
            .recovered_at
            .push(humantime::format_rfc3339_millis(SystemTime::now()).to_string());
        self.tally.notes.push(format!(
            "#{it}: recovered (kill, plan moved aside, restart): {why}"
        ));
        if let Some(p) = self.proc.take() {
            let _ = p.kill9();
        }
        let plan = self.dir.join("state/power.json");
        let _ = std::fs::rename(&plan, self.dir.join(format!("state/power.json.bad{it}")));
        self.watch = Watch::default();
        self.launch().await?;
        // A fresh plan knows no rig that does not connect: an operator walks the floor and
        // wakes the sleeping ones by hand, so the run goes on with a whole site.
        let asleep: Vec<_> = self
            .rigs
            .iter()
            .filter(|r| r.phase() == FakePhase::Sleeping)
            .map(|r| (r.worker.clone(), r.firmware.addr()))
            .collect();
        for (worker, addr) in asleep {
            if let Err(e) = wake_by_hand(addr).await {
                self.tally
                    .notes
                    .push(format!("#{it}: could not wake {worker} by hand: {e:#}"));
            }
        }
        Ok(())
    }

    /// Runs one iteration with `fault`.
    async fn iteration(&mut self, it: u64, fault: Fault) -> Result<()> {
        self.tally.iterations += 1;
        *self.tally.injected.entry(format!("{fault:?}")).or_default() += 1;
        let window = Duration::from_millis(self.rng.random_range(2500..4000));
        // Firmware faults on a rig that is up, when there is one (its status polls hit them).
        let mut up: Vec<usize> = (0..RIGS)
            .filter(|i| self.rigs[*i].phase() == FakePhase::Mining)
            .collect();
        if up.is_empty() {
            up = (0..RIGS)
                .filter(|i| self.rigs[*i].phase() != FakePhase::Sleeping)
                .collect();
        }
        let victim = if up.is_empty() {
            self.rng.random_range(0..RIGS)
        } else {
            up[self.rng.random_range(0..up.len())]
        };
        let fw = self.rigs[victim].firmware.clone();
        let hits0 = fw.fault_hits();
        let calls0 = hook_calls(&self.dir);
        let warns0 = count_in(&self.log, "cannot persist the power plan");
        let mut op = self.pick_op();
        let mut kill_at = None;
        match fault {
            Fault::Kill9 => kill_at = Some(Duration::from_millis(self.rng.random_range(0..2000))),
            Fault::FirmwareStall => fw.set_silent(true),
            Fault::FirmwareReset => fw.set_reset(true),
            Fault::FirmwareGarbage => fw.set_malformed(true),
            Fault::FirmwareLiesAsleep => {
                // The rig acknowledges sleep, keeps hashing, and its status says asleep: only
                // its shares tell the truth (quiet_secs).
                fw.set_lie_asleep(true);
                fw.set_stuck(true);
                op = Op::Drain(victim);
            }
            Fault::FirmwareReports1W => {
                fw.set_lie_watts(Some(1));
                // Ask for GPU power: a rig counted at 1 W makes room that is not there.
                op = Op::Gpu(self.rng.random_range(6..=10) as f64);
            }
            Fault::SlurmHookHangs | Fault::SlurmHookFails => {
                let mode = if fault == Fault::SlurmHookHangs {
                    "hang"
                } else {
                    "fail"
                };
                std::fs::write(self.dir.join("gpu_mode"), mode)?;
                // A budget change, so the hook runs.
                let kw = if self.gpu_wanted > 0.0 { 0.0 } else { 4.0 };
                op = Op::Gpu(kw);
            }
            Fault::StateUnwritable => {
                // Root ignores permissions: a directory where the temp file goes makes every
                // atomic write of the plan fail (File::create on a directory).
                std::fs::create_dir_all(self.dir.join("state/power.json.tmp"))?;
                op = Op::Drain(victim);
                // Undo a previous drain of it so the plan surely changes.
                self.apply(it, &Op::Resume(victim)).await?;
                tokio::time::sleep(Duration::from_millis(300)).await;
            }
            Fault::AbsurdInput => {}
        }
        if fault == Fault::AbsurdInput {
            self.absurd(it).await?;
        } else {
            self.apply(it, &op).await?;
        }
        self.observe(it, window, kill_at).await?;

        // Clear the fault and prove it happened.
        let verified = match fault {
            Fault::Kill9 => false, // counted in kill_and_restart
            Fault::FirmwareStall
            | Fault::FirmwareReset
            | Fault::FirmwareGarbage
            | Fault::FirmwareLiesAsleep
            | Fault::FirmwareReports1W => {
                fw.set_silent(false);
                fw.set_reset(false);
                fw.set_malformed(false);
                fw.set_lie_asleep(false);
                fw.set_stuck(false);
                fw.set_lie_watts(None);
                fw.fault_hits() > hits0
            }
            Fault::SlurmHookHangs | Fault::SlurmHookFails => {
                let _ = std::fs::remove_file(self.dir.join("gpu_mode"));
                let mode = if fault == Fault::SlurmHookHangs {
                    "mode=hang"
                } else {
                    "mode=fail"
                };
                hook_calls(&self.dir)
                    .iter()
                    .skip(calls0.len())
                    .any(|l| l.ends_with(mode))
            }
            Fault::StateUnwritable => {
                let hit = count_in(&self.log, "cannot persist the power plan") > warns0;
                std::fs::remove_dir(self.dir.join("state/power.json.tmp"))?;
                hit
            }
            Fault::AbsurdInput => true,
        };
        if fault != Fault::Kill9 {
            if verified {
                *self.tally.verified.entry(format!("{fault:?}")).or_default() += 1;
            } else {
                self.tally.notes.push(format!(
                    "#{it}: {fault:?} on rig{victim} did not visibly happen (op {op:?})"
                ));
            }
        }
        if fault == Fault::StateUnwritable {
            // Writable again: the plan that failed to save must reach the disk.
            let file = self.dir.join("state/power.json");
            let t0 = Instant::now();
            let mut saved = false;
            while t0.elapsed() < Duration::from_secs(3) {
                let text = std::fs::read_to_string(&file).unwrap_or_default();
                if text.contains(&format!("farm.rig{victim}")) && text.contains("fault suite") {
                    saved = true;
                    break;
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            if !saved {
                self.tally.notes.push(format!(
                    "#{it}: after the state dir was writable again, power.json does not show the drain of rig{victim}"
                ));
            }
        }
        // The process must still be up.
        if let Some(status) = self.proc.as_mut().and_then(Proc::exited) {
            self.tally
                .violation(it, format!("[item 4] hashshift exited: {status}"));
            self.proc = None;
            self.recover(it, "process exited").await?;
        }
        self.observe(it, Duration::from_millis(800), None).await
    }

    /// One absurd request on the admin socket; it must be refused with an error, and power
    /// control must keep answering.
    async fn absurd(&mut self, it: u64) -> Result<()> {
        let huge = "x".repeat(60_000);
        let far = unix_now() + 30 * 86_400;
        let cases: Vec<(&str, String)> = vec![
            (
                "curtail until u64::MAX",
                r#"{"cmd":"curtail","kw":5,"until_unix":18446744073709551615}"#.into(),
            ),
            (
                "curtail 30 days ahead",
                format!(r#"{{"cmd":"curtail","kw":5,"until_unix":{far}}}"#),
            ),
            (
                "curtail negative kW",
                format!(
                    r#"{{"cmd":"curtail","kw":-1,"until_unix":{}}}"#,
                    unix_now() + 60
                ),
            ),
            (
                "curtail 1e308 kW",
                format!(
                    r#"{{"cmd":"curtail","kw":1e308,"until_unix":{}}}"#,
                    unix_now() + 60
                ),
            ),
            ("gpu 1e300 kW", r#"{"cmd":"gpu_request","kw":1e300}"#.into()),
            ("gpu -5 kW", r#"{"cmd":"gpu_request","kw":-5}"#.into()),
            ("gpu NaN kW", r#"{"cmd":"gpu_request","kw":NaN}"#.into()),
            (
                "drain 1e308 kW",
                r#"{"cmd":"drain","target":{"kw":1e308}}"#.into(),
            ),
            (
                "drain -3 kW",
                r#"{"cmd":"drain","target":{"kw":-3}}"#.into(),
            ),
            (
                "60 KB rig name",
                format!(r#"{{"cmd":"drain","target":{{"rig":"{huge}"}}}}"#),
            ),
            (
                "60 KB reason",
                format!(r#"{{"cmd":"gpu_request","kw":0,"reason":"{huge}"}}"#),
            ),
        ];
        let mut cases = cases;
        cases.shuffle(&mut self.rng);
        for (what, line) in cases {
            *self.tally.absurd.entry(what.to_owned()).or_default() += 1;
            self.absurd_one(it, what, &line).await?;
        }
        Ok(())
    }

    async fn absurd_one(&mut self, it: u64, what: &str, line: &str) -> Result<()> {
        self.last_op_at = Instant::now();
        *self.tally.ops.entry(format!("absurd: {what}")).or_default() += 1;
        let answer = raw(&self.socket, line).await;
        let accepted = answer.as_ref().is_ok_and(|a| a.contains("\"ok\":true"));
        // A 60 KB reason may be accepted if it is cut to length (item 3: "length-capped").
        let reason_ok = what == "60 KB reason" && {
            let events = ask_ok(&self.socket, Command::Events { limit: Some(20) })
                .await
                .unwrap_or_default();
            events
                .as_array()
                .into_iter()
                .flatten()
                .all(|e| e.to_string().len() < 8_192)
        };
        if accepted && !reason_ok {
            self.tally.violation(
                it,
                format!(
                    "[item 3] absurd input accepted: {what}: {}",
                    clip(answer.as_deref().unwrap_or(""))
                ),
            );
        }
        // Past the controller's next 1 s tick, where a bad deadline would blow up.
        tokio::time::sleep(Duration::from_millis(1200)).await;
        match ask(&self.socket, Command::Power).await {
            Ok(r) if r.ok => {}
            other => {
                self.tally.violation(
                    it,
                    format!(
                        "[item 3/4] after absurd input ({what}) power control is down: {other:?}"
                    ),
                );
                self.recover(it, &format!("absurd input {what}")).await?;
            }
        }
        if accepted {
            // Undo whatever it did, so the next iterations start sane.
            let _ = ask(&self.socket, Command::CurtailClear { reason: None }).await;
            let _ = ask(
                &self.socket,
                Command::GpuRequest {
                    kw: self.gpu_wanted,
                    reason: None,
                },
            )
            .await;
        }
        Ok(())
    }

    /// D: replays the audit log; every wake and GPU budget increase must have fit.
    fn replay_audit(&mut self) -> Result<u64> {
        let text = std::fs::read_to_string(self.dir.join("state/audit.jsonl"))?;
        let headroom = HEADROOM_KW * 1000.0;
        let mut drawing: BTreeMap<String, (f64, bool)> = BTreeMap::new();
        let mut grant = 0.0f64;
        let mut curtail: Option<f64> = None;
        let mut checked = 0u64;
        let mut recoveries = self.tally.recovered_at.clone().into_iter().peekable();
        for line in text.lines() {
            let Ok(e) = serde_json::from_str::<Value>(line) else {
                continue;
            };
            // The suite moved the plan aside here: no curtailment, no grant, and every rig
            // up (the suite wakes them by hand).
            let time = e["time"].as_str().unwrap_or("").to_owned();
            while recoveries.next_if(|r| *r <= time).is_some() {
                curtail = None;
                grant = 0.0;
                for r in drawing.values_mut() {
                    r.1 = true;
                }
            }
            if e["who"] != "arbiter" {
                continue;
            }
            let detail: Value = e["detail"]
                .as_str()
                .and_then(|d| serde_json::from_str(d).ok())
                .unwrap_or_default();
            let budget = curtail
                .unwrap_or(SITE_CAP_KW * 1000.0)
                .min(SITE_CAP_KW * 1000.0)
                - headroom;
            let load = |drawing: &BTreeMap<String, (f64, bool)>, grant: f64| {
                drawing
                    .values()
                    .filter(|(_, d)| *d)
                    .map(|(w, _)| w)
                    .sum::<f64>()
                    + grant
            };
            match e["what"].as_str().unwrap_or("") {
                "rig-added" => {
                    let id = detail["info"]["id"].as_str().unwrap_or("?").to_owned();
                    let w = detail["info"]["power"].as_f64().unwrap_or(RIG_KW * 1000.0);
                    drawing.insert(id, (w, detail["state"] != "asleep"));
                }
                "rig-removed" => {
                    drawing.remove(detail["rig"].as_str().unwrap_or(""));
                }
                "confirmed" => {
                    let id = detail["rig"].as_str().unwrap_or("?");
                    if let Some(r) = drawing.get_mut(id) {
                        r.1 = detail["to"] != "asleep";
                    }
                }
                "curtailment-set" => curtail = detail["curtailment"]["cap"].as_f64(),
                "curtailment-ended" => curtail = None,
                "restored" => grant = detail["granted"].as_f64().unwrap_or(grant),
                "action" => {
                    // Internally tagged: {"action":"wake","rig":..} / {"action":"set_gpu_budget","budget":..}.
                    let a = &detail["action"];
                    if a["action"] == "wake" {
                        let id = a["rig"].as_str().unwrap_or("?");
                        if let Some(r) = drawing.get_mut(id) {
                            r.1 = true;
                        }
                        checked += 1;
                        let l = load(&drawing, grant);
                        if l > budget + 10.0 {
                            self.tally.violation(
                                0,
                                format!("[D audit] wake of {id} at {} made the load {:.2} kW > budget {:.2} kW", e["time"], l / 1000.0, budget / 1000.0),
                            );
                        }
                    }
                    if a["action"] == "set_gpu_budget" {
                        let new = a["budget"].as_f64().unwrap_or(0.0);
                        let grew = new > grant;
                        grant = new;
                        if grew {
                            checked += 1;
                            let l = load(&drawing, grant);
                            if l > budget + 10.0 {
                                self.tally.violation(
                                    0,
                                    format!("[D audit] GPU budget raised to {:.2} kW at {} with load {:.2} kW > budget {:.2} kW", new / 1000.0, e["time"], l / 1000.0, budget / 1000.0),
                                );
                            }
                        }
                    }
                }
                _ => {}
            }
        }
        Ok(checked)
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

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
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
