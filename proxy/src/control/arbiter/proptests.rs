//! Property tests: random sequences of every kind of input, checking invariants 1, 2 and 5 of
//! the module doc after every step, against sums recomputed here from the rig views (with
//! rigs late to confirm a sleep counted as a load that needs a replacement).

use std::collections::HashMap;
use std::time::Duration;

use proptest::prelude::*;

use super::*;

#[derive(Debug, Clone)]
enum Op {
    AddRig {
        idx: u8,
        power: u16,
        eff: Option<u8>,
        prio: i8,
        observed: u8,
    },
    RemoveRig {
        idx: u8,
    },
    /// Answer the rig's pending command: 0 = as asked, 1 = failed, 2 = the opposite.
    Answer {
        idx: u8,
        how: u8,
    },
    Demand {
        wanted: u16,
        in_use: u16,
    },
    Curtail {
        cap: u16,
        secs: Option<u16>,
    },
    Clear,
    DrainRig {
        idx: u8,
    },
    DrainPower {
        power: u16,
    },
    ResumeRig {
        idx: u8,
    },
    ResumeGroup {
        group: u8,
    },
    Advance {
        secs: u16,
    },
    Cap {
        cap: u16,
        headroom: u16,
    },
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        3 => (0u8..16, 500u16..5000, proptest::option::of(10u8..40), 0i8..3, 0u8..3).prop_map(
            |(idx, power, eff, prio, observed)| Op::AddRig { idx, power, eff, prio, observed }
        ),
        1 => (0u8..16).prop_map(|idx| Op::RemoveRig { idx }),
        6 => (0u8..16, prop_oneof![8 => Just(0u8), 1 => Just(1u8), 1 => Just(2u8)])
            .prop_map(|(idx, how)| Op::Answer { idx, how }),
        3 => (0u16..40_000, 0u16..40_000).prop_map(|(wanted, in_use)| Op::Demand { wanted, in_use }),
        1 => (0u16..40_000, proptest::option::of(1u16..900))
            .prop_map(|(cap, secs)| Op::Curtail { cap, secs }),
        1 => Just(Op::Clear),
        1 => (0u8..16).prop_map(|idx| Op::DrainRig { idx }),
        1 => (0u16..10_000).prop_map(|power| Op::DrainPower { power }),
        1 => (0u8..16).prop_map(|idx| Op::ResumeRig { idx }),
        1 => (0u8..3).prop_map(|group| Op::ResumeGroup { group }),
        3 => (1u16..200).prop_map(|secs| Op::Advance { secs }),
        1 => (20_000u16..60_000, 0u16..3000).prop_map(|(cap, headroom)| Op::Cap { cap, headroom }),
    ]
}

/// `confirm_deadline` and `replace_after` of [`settings`].
const CONFIRM: Duration = Duration::from_secs(60);
const REPLACE: Duration = Duration::from_secs(25);

fn settings(cap: u16, headroom: u16) -> Settings {
    Settings {
        site_cap: Watts(u64::from(cap)),
        headroom: Watts(u64::from(headroom)),
        resume_batch: 3,
        resume_interval: Duration::from_secs(20),
        confirm_deadline: CONFIRM,
        wake_deadline: Duration::from_secs(200),
        hysteresis: Watts(300),
        drain_margin: 0.1,
        replace_after: REPLACE,
    }
}

fn rig_id(idx: u8) -> RigId {
    RigId(format!("r{idx}"))
}

/// Recomputed sums: (drawing, sheddable, fixed). Fixed includes draining rigs past
/// `replace_after` (late: the plan must have drained replacements for them).
fn sums(a: &Arbiter, now: Duration) -> (Watts, Watts, Watts) {
    let (mut drawing, mut sheddable, mut fixed) = (Watts::ZERO, Watts::ZERO, Watts::ZERO);
    for r in a.rigs() {
        let p = r.info.power;
        if r.state != RigState::Asleep {
            drawing = drawing + p;
        }
        match r.state {
            RigState::Mining | RigState::Waking => sheddable = sheddable + p,
            RigState::Fault | RigState::Unknown => fixed = fixed + p,
            RigState::Draining if r.escalated => fixed = fixed + p,
            // Sent at `deadline - CONFIRM`; late from `REPLACE` after that.
            RigState::Draining if r.deadline.is_some_and(|d| d - CONFIRM + REPLACE <= now) => {
                fixed = fixed + p
            }
            _ => {}
        }
    }
    (drawing, sheddable, fixed)
}

fn apply(a: &mut Arbiter, now: &mut Duration, op: &Op) {
    let by = Operator {
        who: "prop".into(),
        why: "test".into(),
    };
    match *op {
        Op::AddRig {
            idx,
            power,
            eff,
            prio,
            observed,
        } => {
            let info = RigInfo {
                id: rig_id(idx),
                group: GroupId(format!("g{}", idx % 3)),
                priority: i32::from(prio),
                power: Watts(u64::from(power)),
                efficiency: eff.map(f64::from),
                path: Default::default(),
            };
            let observed =
                [Observed::Mining, Observed::Asleep, Observed::Unknown][observed as usize];
            a.handle_rig(*now, info, observed).unwrap();
        }
        Op::RemoveRig { idx } => {
            let _ = a.handle_rig_removed(*now, &rig_id(idx));
        }
        Op::Answer { idx, how } => {
            let Some(view) = a.rig(&rig_id(idx)) else {
                return;
            };
            let asked_asleep = match view.state {
                RigState::Draining => true,
                RigState::Waking => false,
                RigState::Unknown | RigState::Fault => idx % 2 == 0,
                _ => return,
            };
            let c = match (how, asked_asleep) {
                (1, _) => Confirmation::CommandFailed,
                (0, true) | (2, false) => Confirmation::Asleep,
                _ => Confirmation::Awake,
            };
            a.handle_confirmation(*now, &rig_id(idx), c).unwrap();
        }
        Op::Demand { wanted, in_use } => a.handle_gpu_demand(
            *now,
            GpuDemand {
                wanted: Watts(u64::from(wanted)),
                in_use: Watts(u64::from(in_use)),
            },
        ),
        Op::Curtail { cap, secs } => {
            let until = secs.map(|s| *now + Duration::from_secs(u64::from(s)));
            let c = Curtailment {
                cap: Watts(u64::from(cap)),
                until,
                source: "prop".into(),
            };
            a.handle_curtailment(*now, c);
        }
        Op::Clear => a.handle_curtailment_cleared(*now),
        Op::DrainRig { idx } => {
            let _ = a.handle_operator(*now, by, OperatorCommand::DrainRig { rig: rig_id(idx) });
        }
        Op::DrainPower { power } => {
            let amount = Watts(u64::from(power));
            let _ = a.handle_operator(*now, by, OperatorCommand::DrainPower { amount });
        }
        Op::ResumeRig { idx } => {
            let _ = a.handle_operator(*now, by, OperatorCommand::ResumeRig { rig: rig_id(idx) });
        }
        Op::ResumeGroup { group } => {
            let group = GroupId(format!("g{group}"));
            let _ = a.handle_operator(*now, by, OperatorCommand::ResumeGroup { group });
        }
        Op::Advance { secs } => {
            *now += Duration::from_secs(u64::from(secs));
            a.handle_timeout(*now);
        }
        Op::Cap { cap, headroom } => a.handle_settings(*now, settings(cap, headroom)).unwrap(),
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn invariants_hold_after_every_step(ops in proptest::collection::vec(op(), 1..80)) {
        let mut now = Duration::from_secs(1_000);
        let mut a = Arbiter::new(settings(30_000, 1_000), now).unwrap();
        // Escalations since each rig's last command, to check "once per command".
        let mut escalations: HashMap<RigId, u32> = HashMap::new();
        for op in &ops {
            // An advance visits every timeout on the way, as the integrator's timer would,
            // each one a step of its own.
            if let Op::Advance { secs } = *op {
                let end = now + Duration::from_secs(u64::from(secs));
                while let Some(next) = a.poll_timeout().filter(|&t| t > now && t < end) {
                    let before = snapshot_rigs(&a);
                    let grant_before = a.gpu_granted();
                    a.handle_timeout(next);
                    now = next;
                    check(&mut a, &before, grant_before, now, op, &mut escalations)?;
                }
                let rest = end - now;
                let step = Op::Advance { secs: u16::try_from(rest.as_secs()).unwrap_or(u16::MAX) };
                let before = snapshot_rigs(&a);
                let grant_before = a.gpu_granted();
                apply(&mut a, &mut now, &step);
                check(&mut a, &before, grant_before, now, op, &mut escalations)?;
                continue;
            }
            let before = snapshot_rigs(&a);
            let grant_before = a.gpu_granted();
            apply(&mut a, &mut now, op);
            check(&mut a, &before, grant_before, now, op, &mut escalations)?;
        }
    }
}

fn snapshot_rigs(a: &Arbiter) -> HashMap<RigId, RigView> {
    a.rigs().map(|r| (r.info.id.clone(), r)).collect()
}

/// Checks the invariants after one arbiter input.
fn check(
    a: &mut Arbiter,
    before: &HashMap<RigId, RigView>,
    grant_before: Watts,
    now: Duration,
    op: &Op,
    escalations: &mut HashMap<RigId, u32>,
) -> Result<(), TestCaseError> {
    let out: Vec<Action> = std::iter::from_fn(|| a.poll_action()).collect();
    while a.poll_event().is_some() {}

    let snap = a.snapshot();
    let (drawing, sheddable, fixed) = sums(a, now);
    prop_assert_eq!(snap.mining, drawing, "every state but asleep counts");
    let grant = a.gpu_granted();
    let budget = snap.budget;

    // Invariants 1 + 2: what the arbiter itself adds (a wake, a bigger grant) always
    // fits under the budget with every unconfirmed rig counted as drawing.
    let woke = out.iter().any(|x| matches!(x, Action::Wake { .. }));
    if woke || grant > grant_before {
        prop_assert!(
            drawing + grant <= budget,
            "arbiter raised the load over budget: {op:?} {out:?} {snap:?}"
        );
    }
    // The grant shrinks at once and enough rigs are draining: what is expected to keep
    // drawing plus the grant fits, unless nothing more can be shed at all.
    prop_assert!(
        sheddable + fixed + grant <= budget || (grant == Watts::ZERO && sheddable == Watts::ZERO),
        "not shedding enough: {op:?} {snap:?}"
    );
    // Mining is shed before the GPU is asked.
    if out.iter().any(|x| matches!(x, Action::AskGpuShed { .. })) {
        prop_assert_eq!(sheddable, Watts::ZERO, "GPU asked while mining could shed");
    }
    for action in &out {
        match action {
            Action::Wake { rig, .. } => {
                let prev = &before[rig];
                // Asleep, or confirmed asleep by this very step; never a rig we believed
                // mining (found asleep on its own: pinned).
                prop_assert!(prev.state != RigState::Mining);
                // Pinned now (the step may be the operator's resume that unpinned it).
                let pinned = a.rig(rig).is_some_and(|r| r.pinned.is_some());
                prop_assert!(!pinned, "woke a pinned rig");
                escalations.remove(rig);
            }
            Action::Sleep { rig, .. } => {
                escalations.remove(rig);
            }
            Action::Escalate { rig, .. } => {
                let n = escalations.entry(rig.clone()).or_default();
                *n += 1;
                prop_assert!(*n <= 1, "escalated twice for one command: {rig}");
            }
            _ => {}
        }
    }
    // Invariant 5: past its deadline, an unconfirmed rig has been escalated.
    for r in a.rigs() {
        if r.state != RigState::Asleep && r.state != RigState::Mining {
            if let Some(d) = r.deadline {
                prop_assert!(d > now || r.escalated, "{:?} overdue, not escalated", r);
            }
        }
        if matches!(r.state, RigState::Mining | RigState::Asleep) {
            escalations.remove(&r.info.id);
        }
    }
    escalations.retain(|id, _| a.rig(id).is_some());
    Ok(())
}
