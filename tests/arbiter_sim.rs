//! 24 hours of a site at accelerated time: the power arbiter driving 300 rigs of mixed models
//! (FIELD-NOTES typical rigs) against random GPU demand, random grid curtailments and firmware
//! that confirms after random delays, sometimes fails and sometimes never answers.
//!
//! A discrete-event simulation (no sockets, no sleeping): the clock jumps from one event to
//! the next, so a simulated day takes well under a second of real time. After every input to
//! the arbiter the invariants are checked (cap never raised over by the arbiter, break before
//! make, mining shed before the GPU, staggered resume, escalation of every overdue rig), and
//! the figures are printed (`cargo test --release --test arbiter_sim -- --nocapture`).
//!
//! Two scenarios. `random faults`: every command has a 2% chance of never being answered and
//! 1% of failing, with confirmations spread over 2-60 s. `silent 2%`: exactly 2% of the rigs
//! never answer any command (dead management API), the others confirm a sleep as the
//! integrator does (firmware command, then `quiet_secs` without a share: mostly 11-20 s, a
//! tail out to ~75 s when another tool holds the LuxOS session), 1% of commands fail. For
//! each curtailment the *shed time* is the time from the cap cut until at least 95% of the
//! kW it asked for is shed (mining not confirmed asleep + GPU grant within 5% of the needed
//! amount over the budget); the silent scenario runs with the arbiter's shed aids on (the
//! `Settings` defaults) and, in release builds, off as a baseline (no drain margin, no early
//! replacement: the behaviour before issue 11). The target (p95 within 60 s, for 95% and
//! for all of the needed kW) is asserted on simulated time.

#[path = "arbiter_sim/events.rs"]
mod events;

use std::cmp::Reverse;
use std::collections::{BinaryHeap, VecDeque};
use std::time::{Duration, Instant};

use hashshift_proxy::control::arbiter::{
    Action, Arbiter, Confirmation, Curtailment, GpuDemand, GroupId, Observed, RigId, RigInfo,
    RigState, Settings, Watts,
};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

const DAY: Duration = Duration::from_secs(24 * 3600);
/// A command reversed within this counts as a reversal (`Figures::reversals`).
const FLAP_WINDOW: Duration = Duration::from_secs(300);
const RIGS: usize = 300;
/// 40 DGX H100 nodes at 10.2 kW.
const GPU_NODE_W: u64 = 10_200;
const GPU_NODES: u64 = 40;

/// (model, watts, J/TH, group, priority, share of the fleet in %).
const MODELS: [(&str, u64, f64, &str, i32, usize); 4] = [
    ("S19", 3250, 34.0, "legacy", 0, 30),
    ("S19XP", 3010, 21.5, "main", 1, 30),
    ("S21", 3500, 17.5, "main", 1, 27),
    ("S21XP", 3645, 13.5, "flagship", 2, 13),
];

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
enum Ev {
    /// The firmware answers command `seq` of rig `rig`.
    Firmware {
        rig: usize,
        seq: u64,
        confirmation: ConfirmationKey,
    },
    /// GPU demand changes.
    GpuChange,
    /// The GPU scheduler reports its demand (jobs started/stopped after a budget change).
    GpuReport,
    /// A grid curtailment starts.
    GridEvent,
    /// An operator clears the curtailment early.
    GridClear { id: u64 },
}

/// `Confirmation` is not `Ord`; the heap needs it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum ConfirmationKey {
    Asleep,
    Awake,
    Failed,
}

impl From<ConfirmationKey> for Confirmation {
    fn from(k: ConfirmationKey) -> Confirmation {
        match k {
            ConfirmationKey::Asleep => Confirmation::Asleep,
            ConfirmationKey::Awake => Confirmation::Awake,
            ConfirmationKey::Failed => Confirmation::CommandFailed,
        }
    }
}

/// How the simulated firmware behaves.
#[derive(Debug, Clone, Copy)]
struct Scenario {
    name: &'static str,
    /// Share of the rigs that never answer any command.
    silent_rigs: f64,
    /// Chance that any one command is never answered.
    silent_commands: f64,
    /// Chance that a command fails (answered with an error after 1-10 s).
    failed_commands: f64,
    /// Sleep confirmations as the integrator sees them (command + quiet period), rather than
    /// uniform over 2-60 s.
    field_delays: bool,
    /// Drain margin and early replacement on (`Settings` defaults) or off (margin 0,
    /// replacement only at the confirmation deadline, as before issue 11).
    shed_aids: bool,
}

const RANDOM_FAULTS: Scenario = Scenario {
    name: "random faults",
    silent_rigs: 0.0,
    silent_commands: 0.02,
    failed_commands: 0.01,
    field_delays: false,
    shed_aids: true,
};

const SILENT_2PCT: Scenario = Scenario {
    name: "silent 2%",
    silent_rigs: 0.02,
    silent_commands: 0.0,
    failed_commands: 0.01,
    field_delays: true,
    shed_aids: true,
};

#[derive(Default, Debug)]
struct Figures {
    inputs: u64,
    sleeps: u64,
    wakes: u64,
    escalations: u64,
    gpu_budget_changes: u64,
    gpu_shed_requests: u64,
    curtailments: u64,
    never_confirmed: u64,
    /// Arbiter-caused: a wake or a bigger grant with drawing + grant over the budget.
    cap_violations: u64,
    /// A grant grown while not covered by confirmed-asleep power.
    bbm_violations: u64,
    /// GPU asked to shed while mining could still shed.
    shed_order_violations: u64,
    /// More wakes than the batch in one interval.
    stagger_violations: u64,
    /// A rig past its deadline, not escalated.
    escalation_violations: u64,
    /// Over the budget because of an outside event (curtailment): how long until back under.
    shed_latencies: Vec<Duration>,
    /// Per curtailment that needed a shed: from the cut to >= 95% of the needed kW shed.
    shed95: Vec<Duration>,
    /// The same to 100% (back under the budget).
    shed100: Vec<Duration>,
    /// A rig woken within `FLAP_WINDOW` of its sleep command (e.g. the drain margin given
    /// back): churn, not a safety problem.
    rewakes: u64,
    /// A rig told to sleep within `FLAP_WINDOW` of its wake command: flapping, which the
    /// resume hysteresis is there to prevent.
    redrains: u64,
    /// Curtailments replaced or cleared before 95% was shed (not in `shed95`).
    shed95_unfinished: u64,
    /// From a GPU demand rise to the grant reaching the target.
    grant_latencies: Vec<Duration>,
    /// max (drawing + grant) / budget while not shedding.
    max_utilisation: f64,
    /// Time-weighted mean of (drawing + grant) / budget.
    utilisation_area: f64,
    max_gpu_granted: Watts,
}

struct Sim {
    /// The site's workload: GPU demand and grid events (the same whatever the arbiter does,
    /// so runs with different settings see the same day).
    rng: StdRng,
    /// Firmware and scheduler answers.
    fw: StdRng,
    now: Duration,
    arbiter: Arbiter,
    ids: Vec<RigId>,
    /// Per rig: the sequence number of its latest command (stale answers are dropped, as the
    /// integrator correlates answers with commands).
    seq: Vec<u64>,
    /// Per rig: whether its latest command was a sleep.
    last_was_sleep: Vec<bool>,
    /// Per rig: when its latest command was sent.
    last_command_at: Vec<Option<Duration>>,
    heap: BinaryHeap<Reverse<(Duration, u64, Ev)>>,
    tiebreak: u64,
    gpu_wanted: Watts,
    gpu_want_since: Option<Duration>,
    curtail_id: u64,
    wake_times: VecDeque<Duration>,
    over_since: Option<Duration>,
    last_sample: Duration,
    figures: Figures,
    settings: Settings,
    scenario: Scenario,
    /// Per rig: never answers any command.
    silent: Vec<bool>,
    /// The curtailment being shed: (cut at, kW needed, budget).
    shedding: Option<(Duration, Watts, Watts)>,
    /// The same until fully shed: (cut at, budget).
    shedding_full: Option<(Duration, Watts)>,
}

impl Sim {
    fn new(seed: u64, scenario: Scenario) -> Sim {
        let mut settings = Settings {
            site_cap: Watts::from_kw(1100.0),
            headroom: Watts::from_kw(20.0),
            resume_batch: 10,
            resume_interval: Duration::from_secs(30),
            confirm_deadline: Duration::from_secs(90),
            wake_deadline: Duration::from_secs(420),
            hysteresis: Watts::from_kw(2.0),
            ..Settings::new(Watts::from_kw(1100.0))
        };
        if !scenario.shed_aids {
            shed_aids_off(&mut settings);
        }
        let mut rng = StdRng::seed_from_u64(seed);
        let mut arbiter = Arbiter::new(settings.clone(), Duration::ZERO).expect("settings");
        let mut ids = Vec::new();
        for i in 0..RIGS {
            let pick = i * 100 / RIGS;
            let mut acc = 0;
            let model = MODELS
                .iter()
                .find(|m| {
                    acc += m.5;
                    pick < acc
                })
                .unwrap_or(&MODELS[0]);
            // Power figures vary ±5% around nameplate; 5% of rigs have no known efficiency.
            let power = Watts((model.1 as f64 * rng.random_range(0.95..1.05)) as u64);
            let efficiency = (!rng.random_bool(0.05)).then_some(model.2);
            let id = RigId(format!("{}-{i:03}", model.0));
            let info = RigInfo {
                id: id.clone(),
                group: GroupId(model.3.to_owned()),
                priority: model.4,
                power,
                efficiency,
                path: Default::default(),
            };
            arbiter
                .handle_rig(Duration::ZERO, info, Observed::Mining)
                .expect("rig");
            ids.push(id);
        }
        // Exactly this share of the rigs, picked at random.
        let mut silent = vec![false; ids.len()];
        let silent_count = (ids.len() as f64 * scenario.silent_rigs).round() as usize;
        while silent.iter().filter(|s| **s).count() < silent_count {
            let i = rng.random_range(0..ids.len());
            silent[i] = true;
        }
        let mut sim = Sim {
            rng,
            fw: StdRng::seed_from_u64(seed ^ 0x5eed_f1a3),
            now: Duration::ZERO,
            arbiter,
            seq: vec![0; ids.len()],
            last_was_sleep: vec![false; ids.len()],
            last_command_at: vec![None; ids.len()],
            ids,
            heap: BinaryHeap::new(),
            tiebreak: 0,
            gpu_wanted: Watts::ZERO,
            gpu_want_since: None,
            curtail_id: 0,
            wake_times: VecDeque::new(),
            over_since: None,
            last_sample: Duration::ZERO,
            figures: Figures::default(),
            settings,
            scenario,
            silent,
            shedding: None,
            shedding_full: None,
        };
        sim.drain_outputs(Watts::ZERO);
        sim.at(Duration::from_secs(60), Ev::GpuChange);
        let first_grid = sim.exp(Duration::from_secs(2 * 3600));
        sim.at(first_grid, Ev::GridEvent);
        sim
    }

    fn at(&mut self, delay: Duration, ev: Ev) {
        self.tiebreak += 1;
        self.heap
            .push(Reverse((self.now + delay, self.tiebreak, ev)));
    }

    /// An exponentially distributed delay with this mean.
    fn exp(&mut self, mean: Duration) -> Duration {
        let u: f64 = self.rng.random_range(f64::EPSILON..1.0);
        mean.mul_f64(-u.ln())
    }

    fn secs(&mut self, lo: u64, hi: u64) -> Duration {
        Duration::from_millis(self.rng.random_range(lo * 1000..hi * 1000))
    }

    /// The same from the firmware/scheduler stream.
    fn fw_secs(&mut self, lo: u64, hi: u64) -> Duration {
        Duration::from_millis(self.fw.random_range(lo * 1000..hi * 1000))
    }

    fn run(mut self) -> Figures {
        loop {
            let next_ev = self.heap.peek().map(|Reverse((t, _, _))| *t);
            let next_timeout = self.arbiter.poll_timeout();
            let next = match (next_ev, next_timeout) {
                (Some(a), Some(b)) => a.min(b),
                (a, b) => a.or(b).expect("the GPU and grid processes never stop"),
            };
            if next > DAY {
                break;
            }
            self.sample(next);
            self.now = next;
            let grant_before = self.arbiter.gpu_granted();
            if next_timeout == Some(next) {
                self.arbiter.handle_timeout(next);
                self.drain_outputs(grant_before);
                continue;
            }
            let Some(Reverse((_, _, ev))) = self.heap.pop() else {
                break;
            };
            self.dispatch(ev);
            self.drain_outputs(grant_before);
        }
        self.figures
    }

    /// Accumulates the time-weighted utilisation up to `next`.
    fn sample(&mut self, next: Duration) {
        let snap = self.arbiter.snapshot();
        let used = (snap.mining + snap.gpu_granted).0 as f64;
        let dt = next.saturating_sub(self.last_sample).as_secs_f64();
        self.figures.utilisation_area += used / snap.budget.0.max(1) as f64 * dt;
        self.last_sample = next;
    }
}

/// The arbiter's shed aids off: no drain margin, replacement only at the confirmation
/// deadline (escalation), as before issue 11.
fn shed_aids_off(settings: &mut Settings) {
    settings.drain_margin = 0.0;
    settings.replace_after = settings.confirm_deadline;
}

/// p50/p95/max of shed times, in seconds.
fn percentiles(v: &mut [Duration]) -> (f64, f64, f64) {
    if v.is_empty() {
        return (0.0, 0.0, 0.0);
    }
    v.sort();
    let at = |q: usize| v[(v.len() * q / 100).min(v.len() - 1)].as_secs_f64();
    (at(50), at(95), v[v.len() - 1].as_secs_f64())
}

fn stats(v: &mut [Duration]) -> String {
    if v.is_empty() {
        return "n/a".into();
    }
    v.sort();
    let mean = v.iter().sum::<Duration>() / v.len() as u32;
    let p95 = v[(v.len() * 95 / 100).min(v.len() - 1)];
    let max = v[v.len() - 1];
    format!(
        "n={} mean={:.1}s p95={:.1}s max={:.1}s",
        v.len(),
        mean.as_secs_f64(),
        p95.as_secs_f64(),
        max.as_secs_f64()
    )
}

/// Runs one simulated day, prints its figures and asserts the invariants held.
fn day(seed: u64, scenario: Scenario) -> Figures {
    let started = Instant::now();
    let mut f = Sim::new(seed, scenario).run();
    let real = started.elapsed();
    let aids = if scenario.shed_aids { "on" } else { "off" };
    println!(
        "--- arbiter 24 h simulation, {} (shed aids {aids}), seed {seed}, {RIGS} rigs, real time {real:.2?}",
        scenario.name
    );
    println!(
        "inputs {} sleeps {} wakes {} (within {}s of the opposite command: wakes {} sleeps {}) \
         escalations {} (never-answered commands {}) gpu budget changes {} gpu shed requests {} \
         curtailments {}",
        f.inputs,
        f.sleeps,
        f.wakes,
        FLAP_WINDOW.as_secs(),
        f.rewakes,
        f.redrains,
        f.escalations,
        f.never_confirmed,
        f.gpu_budget_changes,
        f.gpu_shed_requests,
        f.curtailments
    );
    println!(
        "max utilisation of budget (outside shed transients) {:.3}, mean {:.3}, max GPU grant {}",
        f.max_utilisation,
        f.utilisation_area / DAY.as_secs_f64(),
        f.max_gpu_granted
    );
    println!(
        "shed latency (over budget by an outside event -> back under): {}",
        stats(&mut f.shed_latencies)
    );
    let mut shed95 = f.shed95.clone();
    println!(
        "curtailment shed time (cut -> 95% of the needed kW shed): {}",
        stats(&mut shed95)
    );
    let mut shed100 = f.shed100.clone();
    println!(
        "curtailment full shed time (cut -> back under the budget): {}",
        stats(&mut shed100)
    );
    println!(
        "GPU grant latency (demand rise -> fully granted): {}",
        stats(&mut f.grant_latencies)
    );
    println!(
        "violations: cap {} break-before-make {} shed order {} stagger {} escalation {}",
        f.cap_violations,
        f.bbm_violations,
        f.shed_order_violations,
        f.stagger_violations,
        f.escalation_violations
    );
    assert_eq!(f.cap_violations, 0);
    assert_eq!(f.bbm_violations, 0);
    assert_eq!(f.shed_order_violations, 0);
    assert_eq!(f.stagger_violations, 0);
    assert_eq!(f.escalation_violations, 0);
    // The day was eventful: the invariants were tested, not vacuous.
    assert!(f.sleeps > 100 && f.wakes > 100, "{f:?}");
    assert!(f.escalations > 0 && f.curtailments > 0 && f.gpu_budget_changes > 10);
    assert!(f.max_utilisation <= 1.0);
    f
}

#[test]
fn a_simulated_day_never_exceeds_the_cap_nor_breaks_before_make() {
    for seed in [1u64, 2] {
        day(seed, RANDOM_FAULTS);
    }
}

/// Issue 11: with 2% of the rigs never answering, >= 95% of a curtailment's kW is shed
/// within 60 s (p95 over the curtailments of several simulated days).
#[test]
fn silent_rigs_do_not_delay_a_curtailment() {
    const SEEDS: u64 = 8;
    let mut summary = Vec::new();
    // The baseline (shed aids off) is for the figures: only in release builds, where the
    // 16 simulated days take ~4 s (a debug build takes ~10 s for the 8 days with aids on).
    let modes: &[bool] = if cfg!(debug_assertions) {
        &[true]
    } else {
        &[false, true]
    };
    for &aids in modes {
        let scenario = Scenario {
            shed_aids: aids,
            ..SILENT_2PCT
        };
        let (mut shed95, mut shed100, mut unfinished, mut sleeps, mut wakes, mut curtailments) =
            (Vec::new(), Vec::new(), 0, 0, 0, 0);
        let (mut rewakes, mut redrains) = (0, 0);
        for seed in 1..=SEEDS {
            let f = day(seed, scenario);
            shed95.extend_from_slice(&f.shed95);
            shed100.extend_from_slice(&f.shed100);
            unfinished += f.shed95_unfinished;
            sleeps += f.sleeps;
            wakes += f.wakes;
            rewakes += f.rewakes;
            redrains += f.redrains;
            curtailments += f.curtailments;
        }
        let n = shed95.len();
        let (p50, p95, max) = percentiles(&mut shed95);
        let within = shed95
            .iter()
            .filter(|d| **d <= Duration::from_secs(60))
            .count();
        let full = percentiles(&mut shed100);
        summary.push((
            aids,
            n,
            p50,
            p95,
            max,
            within,
            full,
            unfinished,
            (sleeps, wakes, rewakes, redrains),
            curtailments,
        ));
    }
    println!("=== silent 2%: curtailment shed time (cut -> 95% of the needed kW), {SEEDS} days");
    for (
        aids,
        n,
        p50,
        p95,
        max,
        within,
        full,
        unfinished,
        (sleeps, wakes, rewakes, redrains),
        curtailments,
    ) in &summary
    {
        let aids = if *aids { "on " } else { "off" };
        println!(
            "shed aids {aids}: curtailments shed {n} (of {curtailments}; {unfinished} cleared or \
             replaced first) 95%: p50 {p50:.1}s p95 {p95:.1}s max {max:.1}s, within 60 s \
             {within}; 100%: p50 {:.1}s p95 {:.1}s max {:.1}s; sleeps {sleeps} wakes {wakes} \
             (within {}s of the opposite command: wakes {rewakes} sleeps {redrains})",
            full.0,
            full.1,
            full.2,
            FLAP_WINDOW.as_secs()
        );
    }
    let (_, n, _, p95, _, _, full, _, _, _) = *summary
        .iter()
        .find(|s| s.0)
        .expect("the aids-on run is in every build");
    assert!(n >= 40, "too few curtailments to judge: {n}");
    assert!(p95 <= 60.0, "p95 shed time {p95:.1}s over 60 s");
    // And fully shed within 60 s too: silent rigs are replaced before their 90 s deadline
    // (before issue 11 the full shed took 105 s at p95 here).
    assert!(
        full.1 <= 60.0,
        "p95 full shed time {:.1}s over 60 s",
        full.1
    );
}
