//! Unit tests, one or more per rule of the module doc.

use std::time::Duration;

use super::*;
use crate::config::ranges::{DEFAULT_DRAIN_MARGIN, DEFAULT_REPLACE_AFTER};

fn t(secs: u64) -> Duration {
    Duration::from_secs(secs)
}

fn kw(kw: f64) -> Watts {
    Watts::from_kw(kw)
}

fn info(id: &str, group: &str, priority: i32, power_kw: f64, eff: Option<f64>) -> RigInfo {
    RigInfo {
        id: id.into(),
        group: group.into(),
        priority,
        power: kw(power_kw),
        efficiency: eff,
    }
}

fn settings(cap_kw: f64) -> Settings {
    Settings {
        site_cap: kw(cap_kw),
        headroom: Watts::ZERO,
        resume_batch: 2,
        resume_interval: t(30),
        confirm_deadline: t(60),
        wake_deadline: t(300),
        hysteresis: Watts::ZERO,
        drain_margin: 0.0,
        replace_after: t(60),
    }
}

fn actions(a: &mut Arbiter) -> Vec<Action> {
    std::iter::from_fn(|| a.poll_action()).collect()
}

fn sleeps(actions: &[Action]) -> Vec<String> {
    actions
        .iter()
        .filter_map(|a| match a {
            Action::Sleep { rig, .. } => Some(rig.0.clone()),
            _ => None,
        })
        .collect()
}

fn wakes(actions: &[Action]) -> Vec<String> {
    actions
        .iter()
        .filter_map(|a| match a {
            Action::Wake { rig, .. } => Some(rig.0.clone()),
            _ => None,
        })
        .collect()
}

fn budgets(actions: &[Action]) -> Vec<Watts> {
    actions
        .iter()
        .filter_map(|a| match a {
            Action::SetGpuBudget { budget, .. } => Some(*budget),
            _ => None,
        })
        .collect()
}

fn demand(wanted_kw: f64) -> GpuDemand {
    GpuDemand {
        wanted: kw(wanted_kw),
        in_use: Watts::ZERO,
    }
}

/// Four 3 kW rigs of different efficiencies in one group, cap exactly their sum.
fn fleet() -> Arbiter {
    let mut a = Arbiter::new(settings(12.0), t(0)).unwrap();
    for (id, eff) in [("a", 17.5), ("b", 34.0), ("c", 21.5), ("d", 13.5)] {
        a.handle_rig(t(0), info(id, "g", 0, 3.0, Some(eff)), Observed::Mining)
            .unwrap();
    }
    assert!(actions(&mut a).is_empty());
    a
}

fn confirm(a: &mut Arbiter, now: u64, ids: &[String], c: Confirmation) {
    for id in ids {
        a.handle_confirmation(t(now), &RigId(id.clone()), c)
            .unwrap();
    }
}

#[test]
fn gpu_demand_drains_least_efficient_first_and_grants_only_after_confirmation() {
    let mut a = fleet();
    a.handle_gpu_demand(t(1), demand(5.0));
    let out = actions(&mut a);
    // 5 kW needs two 3 kW rigs: the worst two (b 34, c 21.5), no more.
    assert_eq!(sleeps(&out), ["b", "c"]);
    assert!(
        budgets(&out).is_empty(),
        "break before make: nothing granted yet: {out:?}"
    );
    assert_eq!(a.snapshot().gpu_pending, kw(5.0));
    confirm(&mut a, 2, &["b".into()], Confirmation::Asleep);
    // 3 kW is free by a confirmed-asleep rig: grant it, not more.
    assert_eq!(budgets(&actions(&mut a)), [kw(3.0)]);
    confirm(&mut a, 3, &["c".into()], Confirmation::Asleep);
    assert_eq!(budgets(&actions(&mut a)), [kw(5.0)]);
    let snap = a.snapshot();
    assert_eq!(
        (snap.mining, snap.gpu_granted, snap.gpu_pending),
        (kw(6.0), kw(5.0), Watts::ZERO)
    );
}

#[test]
fn free_budget_is_granted_at_once_without_draining() {
    let mut a = Arbiter::new(settings(20.0), t(0)).unwrap();
    a.handle_rig(t(0), info("a", "g", 0, 3.0, Some(20.0)), Observed::Mining)
        .unwrap();
    a.handle_gpu_demand(t(1), demand(10.0));
    let out = actions(&mut a);
    assert_eq!(budgets(&out), [kw(10.0)]);
    assert!(sleeps(&out).is_empty());
}

#[test]
fn group_priority_comes_before_efficiency() {
    let mut a = Arbiter::new(settings(9.0), t(0)).unwrap();
    a.handle_rig(
        t(0),
        info("old-vip", "vip", 5, 3.0, Some(40.0)),
        Observed::Mining,
    )
    .unwrap();
    a.handle_rig(
        t(0),
        info("new", "bulk", 0, 3.0, Some(13.5)),
        Observed::Mining,
    )
    .unwrap();
    a.handle_rig(
        t(0),
        info("mid", "bulk", 0, 3.0, Some(21.5)),
        Observed::Mining,
    )
    .unwrap();
    a.handle_gpu_demand(t(1), demand(5.0));
    // Low priority group first (worst J/TH within it), the important group untouched.
    assert_eq!(sleeps(&actions(&mut a)), ["mid", "new"]);
}

#[test]
fn unknown_efficiency_ranks_as_the_fleet_average() {
    let mut a = Arbiter::new(settings(9.0), t(0)).unwrap();
    a.handle_rig(
        t(0),
        info("worst", "g", 0, 3.0, Some(34.0)),
        Observed::Mining,
    )
    .unwrap();
    a.handle_rig(
        t(0),
        info("best", "g", 0, 3.0, Some(13.5)),
        Observed::Mining,
    )
    .unwrap();
    a.handle_rig(t(0), info("unknown", "g", 0, 3.0, None), Observed::Mining)
        .unwrap();
    a.handle_gpu_demand(t(1), demand(5.0));
    assert_eq!(sleeps(&actions(&mut a)), ["worst", "unknown"]);
}

#[test]
fn curtailment_sheds_mining_first_and_keeps_the_gpu_grant_when_mining_covers_it() {
    let mut a = Arbiter::new(settings(15.0), t(0)).unwrap();
    a.handle_gpu_demand(t(0), demand(3.0));
    assert_eq!(budgets(&actions(&mut a)), [kw(3.0)]);
    for id in ["a", "b", "c", "d"] {
        a.handle_rig(t(0), info(id, "g", 0, 3.0, Some(20.0)), Observed::Mining)
            .unwrap();
    }
    let until = Some(t(600));
    a.handle_curtailment(
        t(1),
        Curtailment {
            cap: kw(10.0),
            until,
            source: "grid".into(),
        },
    );
    let out = actions(&mut a);
    // 12 + 3 > 10: two rigs (6 kW) cover the 5 kW; the GPU keeps its 3 kW.
    assert_eq!(sleeps(&out).len(), 2);
    assert!(out.iter().all(|x| matches!(
        x,
        Action::Sleep {
            reason: Reason::Curtailment,
            ..
        }
    )));
    assert_eq!(a.gpu_granted(), kw(3.0));
}

#[test]
fn curtailment_below_what_mining_can_cover_cuts_the_gpu_for_the_remainder_only() {
    let mut a = Arbiter::new(settings(15.0), t(0)).unwrap();
    a.handle_rig(t(0), info("a", "g", 0, 3.0, Some(20.0)), Observed::Mining)
        .unwrap();
    a.handle_rig(t(0), info("u", "g", 0, 2.0, Some(20.0)), Observed::Unknown)
        .unwrap();
    a.handle_gpu_demand(t(0), demand(8.0));
    assert_eq!(budgets(&actions(&mut a)), [kw(8.0)]);
    a.handle_curtailment(
        t(1),
        Curtailment {
            cap: kw(6.0),
            until: None,
            source: "grid".into(),
        },
    );
    let out = actions(&mut a);
    // The unknown rig (2 kW) cannot be shed by a Sleep: the grant is cut to 4 kW at once, the
    // GPU asked to shed 4 kW, and the mining rig drained.
    assert_eq!(sleeps(&out), ["a"]);
    assert_eq!(budgets(&out), [kw(4.0)]);
    assert!(out.contains(&Action::AskGpuShed {
        amount: kw(4.0),
        reason: Reason::Curtailment
    }));
    let shed_at = out
        .iter()
        .position(|x| matches!(x, Action::AskGpuShed { .. }))
        .unwrap();
    let set_at = out
        .iter()
        .position(|x| matches!(x, Action::SetGpuBudget { .. }))
        .unwrap();
    assert!(set_at < shed_at, "budget cut before the shed request");
}

#[test]
fn curtailment_ends_on_time_and_rigs_resume_staggered() {
    let mut a = fleet();
    a.handle_curtailment(
        t(0),
        Curtailment {
            cap: kw(1.0),
            until: Some(t(100)),
            source: "x".into(),
        },
    );
    let out = actions(&mut a);
    assert_eq!(sleeps(&out).len(), 4);
    confirm(&mut a, 10, &sleeps(&out), Confirmation::Asleep);
    assert!(actions(&mut a).is_empty());
    assert_eq!(a.poll_timeout(), Some(t(100)));
    a.handle_timeout(t(100));
    // Batch 2 per 30 s, most efficient first.
    assert_eq!(wakes(&actions(&mut a)), ["d", "a"]);
    assert_eq!(a.poll_timeout(), Some(t(130)));
    a.handle_timeout(t(129));
    assert!(wakes(&actions(&mut a)).is_empty());
    a.handle_timeout(t(130));
    assert_eq!(wakes(&actions(&mut a)), ["c", "b"]);
    assert!(a.snapshot().curtailment.is_none());
}

#[test]
fn curtailment_cleared_early_frees_power() {
    let mut a = fleet();
    a.handle_curtailment(
        t(0),
        Curtailment {
            cap: kw(6.0),
            until: None,
            source: "x".into(),
        },
    );
    let s = sleeps(&actions(&mut a));
    confirm(&mut a, 1, &s, Confirmation::Asleep);
    a.handle_curtailment_cleared(t(2));
    assert_eq!(wakes(&actions(&mut a)).len(), 2);
}

#[test]
fn falling_demand_shrinks_the_grant_at_once_then_mining_resumes() {
    let mut a = fleet();
    a.handle_gpu_demand(t(0), demand(6.0));
    let s = sleeps(&actions(&mut a));
    confirm(&mut a, 1, &s, Confirmation::Asleep);
    assert_eq!(budgets(&actions(&mut a)), [kw(3.0), kw(6.0)]);
    a.handle_gpu_demand(t(2), demand(0.0));
    let out = actions(&mut a);
    assert_eq!(budgets(&out), [Watts::ZERO]);
    assert_eq!(wakes(&out), ["c", "b"], "most efficient first");
    assert!(matches!(
        out[0],
        Action::SetGpuBudget {
            reason: Reason::GpuDemandFell,
            ..
        }
    ));
}

#[test]
fn grant_never_shrinks_below_what_the_gpu_uses_when_demand_falls() {
    let mut a = Arbiter::new(settings(20.0), t(0)).unwrap();
    a.handle_gpu_demand(t(0), demand(10.0));
    actions(&mut a);
    a.handle_gpu_demand(
        t(1),
        GpuDemand {
            wanted: kw(2.0),
            in_use: kw(7.0),
        },
    );
    assert_eq!(budgets(&actions(&mut a)), [kw(7.0)]);
}

#[test]
fn wake_only_when_the_rig_fits_under_the_cap_and_the_owed_gpu_power() {
    let mut a = fleet();
    a.handle_gpu_demand(t(0), demand(6.0));
    let s = sleeps(&actions(&mut a));
    confirm(&mut a, 1, &s, Confirmation::Asleep);
    actions(&mut a);
    // 2.9 kW freed: one 3 kW rig does not fit.
    a.handle_gpu_demand(t(2), demand(3.1));
    let out = actions(&mut a);
    assert_eq!(budgets(&out), [kw(3.1)]);
    assert!(wakes(&out).is_empty());
    // 3.5 kW freed: fits with the hysteresis.
    a.handle_gpu_demand(t(3), demand(2.5));
    assert_eq!(wakes(&actions(&mut a)), ["c"]);
}

#[test]
fn hysteresis_keeps_a_small_demand_rise_from_draining_a_just_woken_rig() {
    let mut a = fleet();
    a.handle_settings(
        t(0),
        Settings {
            hysteresis: kw(0.5),
            ..settings(12.0)
        },
    )
    .unwrap();
    a.handle_gpu_demand(t(0), demand(6.0));
    let s = sleeps(&actions(&mut a));
    confirm(&mut a, 1, &s, Confirmation::Asleep);
    // 3.1 kW free would fit a 3 kW rig, but not with 0.5 kW hysteresis.
    a.handle_gpu_demand(t(2), demand(2.9));
    assert!(wakes(&actions(&mut a)).is_empty());
    a.handle_gpu_demand(t(2), demand(2.4));
    assert_eq!(wakes(&actions(&mut a)), ["c"]);
    confirm(&mut a, 3, &["c".into()], Confirmation::Awake);
    a.handle_gpu_demand(t(4), demand(2.8));
    let out = actions(&mut a);
    assert!(sleeps(&out).is_empty(), "{out:?}");
    assert_eq!(budgets(&out), [kw(2.8)]);
}

#[test]
fn an_unconfirmed_rig_counts_as_drawing_forever_and_is_escalated_once() {
    let mut a = fleet();
    a.handle_gpu_demand(t(0), demand(3.0));
    assert_eq!(sleeps(&actions(&mut a)), ["b"]);
    assert_eq!(a.poll_timeout(), Some(t(60)));
    a.handle_timeout(t(59));
    assert!(actions(&mut a).is_empty());
    a.handle_timeout(t(60));
    let out = actions(&mut a);
    assert!(out.contains(&Action::Escalate {
        rig: "b".into(),
        state: RigState::Draining,
        reason: Reason::NoConfirmation
    }));
    // It is no longer counted on: the next worst rig is drained instead.
    assert_eq!(sleeps(&out), ["c"]);
    a.handle_timeout(t(1000));
    let later = actions(&mut a);
    assert_eq!(
        later
            .iter()
            .filter(|x| matches!(x, Action::Escalate { rig, .. } if rig.0 == "b"))
            .count(),
        0,
        "escalated once"
    );
    assert_eq!(a.snapshot().mining, kw(12.0), "draining rigs still count");
    assert_eq!(a.gpu_granted(), Watts::ZERO);
    confirm(&mut a, 1001, &["c".into()], Confirmation::Asleep);
    assert_eq!(budgets(&actions(&mut a)), [kw(3.0)]);
    // The late confirmation of b frees its power: the rig drained in its place resumes.
    confirm(&mut a, 1002, &["b".into()], Confirmation::Asleep);
    assert_eq!(wakes(&actions(&mut a)), ["c"]);
}

#[test]
fn a_failed_command_escalates_at_once_and_the_rig_counts_as_drawing() {
    let mut a = fleet();
    a.handle_gpu_demand(t(0), demand(3.0));
    actions(&mut a);
    confirm(&mut a, 1, &["b".into()], Confirmation::CommandFailed);
    let out = actions(&mut a);
    assert!(matches!(
        &out[0],
        Action::Escalate {
            reason: Reason::CommandFailed,
            ..
        }
    ));
    assert_eq!(sleeps(&out), ["c"]);
    assert_eq!(a.rig(&"b".into()).unwrap().state, RigState::Fault);
    assert_eq!(a.snapshot().mining, kw(12.0));
}

#[test]
fn operator_drain_pins_and_pinned_rigs_are_never_resumed_automatically() {
    let mut a = fleet();
    let op = Operator {
        who: "noc".into(),
        why: "fan noise".into(),
    };
    let pinned = a
        .handle_operator(t(0), op, OperatorCommand::DrainRig { rig: "d".into() })
        .unwrap();
    assert_eq!(pinned, [RigId::from("d")]);
    let out = actions(&mut a);
    assert!(matches!(
        &out[..],
        [Action::Sleep {
            reason: Reason::Operator { .. },
            ..
        }]
    ));
    confirm(&mut a, 1, &["d".into()], Confirmation::Asleep);
    a.handle_timeout(t(1000));
    assert!(
        actions(&mut a).is_empty(),
        "pinned: no wake although power is free"
    );
    // GPU may use the power freed by the pinned rig.
    a.handle_gpu_demand(t(1001), demand(3.0));
    assert_eq!(budgets(&actions(&mut a)), [kw(3.0)]);
    a.handle_gpu_demand(t(1002), demand(0.0));
    let op = Operator {
        who: "noc".into(),
        why: "fixed".into(),
    };
    a.handle_operator(t(1003), op, OperatorCommand::ResumeRig { rig: "d".into() })
        .unwrap();
    assert_eq!(wakes(&actions(&mut a)), ["d"]);
}

#[test]
fn operator_drain_group_and_power() {
    let mut a = fleet();
    let op = Operator {
        who: "noc".into(),
        why: "test".into(),
    };
    a.handle_operator(
        t(0),
        op.clone(),
        OperatorCommand::DrainPower { amount: kw(4.0) },
    )
    .unwrap();
    assert_eq!(sleeps(&actions(&mut a)), ["b", "c"]);
    let drained = a.handle_operator(
        t(0),
        op.clone(),
        OperatorCommand::DrainGroup { group: "g".into() },
    );
    // Only the newly pinned rigs are listed.
    assert_eq!(drained.unwrap().len(), 2);
    assert_eq!(sleeps(&actions(&mut a)), ["a", "d"]);
    let err = a.handle_operator(
        t(0),
        op,
        OperatorCommand::DrainGroup {
            group: "nope".into(),
        },
    );
    assert_eq!(err, Err(ArbiterError::UnknownGroup("nope".into())));
    assert_eq!(a.snapshot().rigs.pinned, 4);
}

#[test]
fn a_rig_found_asleep_without_our_command_is_pinned() {
    let mut a = fleet();
    confirm(&mut a, 1, &["a".into()], Confirmation::Asleep);
    a.handle_rig(t(1), info("e", "g", 0, 3.0, Some(20.0)), Observed::Asleep)
        .unwrap();
    a.handle_timeout(t(1000));
    assert!(wakes(&actions(&mut a)).is_empty());
    assert!(a.rig(&"a".into()).unwrap().pinned.is_some());
    assert!(a.rig(&"e".into()).unwrap().pinned.is_some());
}

#[test]
fn an_unknown_rig_counts_as_drawing_and_is_escalated_after_the_deadline() {
    let mut a = Arbiter::new(settings(10.0), t(0)).unwrap();
    a.handle_rig(t(0), info("u", "g", 0, 3.0, None), Observed::Unknown)
        .unwrap();
    a.handle_gpu_demand(t(0), demand(10.0));
    assert_eq!(budgets(&actions(&mut a)), [kw(7.0)]);
    a.handle_timeout(t(60));
    let out = actions(&mut a);
    assert!(matches!(
        &out[..],
        [Action::Escalate {
            state: RigState::Unknown,
            ..
        }]
    ));
}

#[test]
fn restart_keeps_the_plan_and_wakes_nothing_on_its_own() {
    let mut a = fleet();
    a.handle_gpu_demand(t(0), demand(5.0));
    let s = sleeps(&actions(&mut a));
    confirm(&mut a, 1, &s[..1], Confirmation::Asleep); // b asleep, c still draining
    let op = Operator {
        who: "noc".into(),
        why: "x".into(),
    };
    a.handle_operator(t(1), op, OperatorCommand::DrainRig { rig: "d".into() })
        .unwrap();
    confirm(&mut a, 2, &["d".into()], Confirmation::Asleep);
    actions(&mut a);
    let json = serde_json::to_string(&a.persist()).unwrap();

    let state: PersistedState = serde_json::from_str(&json).unwrap();
    let mut b = Arbiter::restore(settings(12.0), state, t(100)).unwrap();
    assert!(actions(&mut b).is_empty(), "nothing at startup");
    assert_eq!(b.rig(&"c".into()).unwrap().state, RigState::Unknown);
    assert_eq!(b.rig(&"b".into()).unwrap().state, RigState::Asleep);
    assert!(b.rig(&"d".into()).unwrap().pinned.is_some());
    assert_eq!(b.gpu_granted(), a.gpu_granted());
    // GPU demand ends: the plan calls for resuming b (not the pinned d), after one interval.
    b.handle_gpu_demand(t(101), demand(0.0));
    let out = actions(&mut b);
    assert_eq!(budgets(&out), [Watts::ZERO]);
    assert!(wakes(&out).is_empty());
    // The scheduler applies the cut (until then the restored grant counts as held).
    b.handle_gpu_budget_applied(t(102), Watts::ZERO);
    b.handle_timeout(t(130));
    assert_eq!(wakes(&actions(&mut b)), ["b"]);
    b.handle_timeout(t(10_000));
    let out = actions(&mut b);
    assert!(wakes(&out).is_empty() && out.iter().any(|x| matches!(x, Action::Escalate { .. })));
}

#[test]
fn inputs_are_validated() {
    assert!(
        Arbiter::new(
            Settings {
                resume_batch: 0,
                ..settings(1.0)
            },
            t(0)
        )
        .is_err()
    );
    assert!(
        Arbiter::new(
            Settings {
                headroom: kw(2.0),
                ..settings(1.0)
            },
            t(0)
        )
        .is_err()
    );
    let mut a = fleet();
    let err = a.handle_confirmation(t(0), &"zz".into(), Confirmation::Asleep);
    assert_eq!(err, Err(ArbiterError::UnknownRig("zz".into())));
    assert!(
        a.handle_settings(
            t(0),
            Settings {
                confirm_deadline: t(0),
                ..settings(1.0)
            }
        )
        .is_err()
    );
    assert_eq!(Watts::from_kw(f64::NAN), Watts::ZERO);
    assert_eq!(Watts::from_kw(-3.0), Watts::ZERO);
}

#[test]
fn lowering_the_cap_by_settings_and_headroom_sheds() {
    let mut a = fleet();
    a.handle_settings(
        t(0),
        Settings {
            headroom: kw(2.0),
            ..settings(12.0)
        },
    )
    .unwrap();
    let out = actions(&mut a);
    assert!(matches!(
        &out[..],
        [Action::Sleep {
            reason: Reason::OverCap,
            ..
        }]
    ));
}

#[test]
fn every_action_is_in_the_audit_stream_with_its_time() {
    let mut a = fleet();
    while a.poll_event().is_some() {}
    a.handle_gpu_demand(t(5), demand(3.0));
    let out = actions(&mut a);
    let events: Vec<AuditEvent> = std::iter::from_fn(|| a.poll_event()).collect();
    assert!(matches!(events[0].event, Event::GpuDemand { .. }));
    let logged: Vec<Action> = events
        .iter()
        .filter_map(|e| match &e.event {
            Event::Action { action } => Some(action.clone()),
            _ => None,
        })
        .collect();
    assert_eq!(logged, out);
    assert!(events.iter().all(|e| e.at == t(5)));
    // The stream serializes (the integrator logs it as JSON lines).
    assert!(
        serde_json::to_string(&events)
            .unwrap()
            .contains("\"action\":\"sleep\"")
    );
}

#[test]
fn time_going_backwards_is_clamped() {
    let mut a = fleet();
    a.handle_gpu_demand(t(100), demand(3.0));
    actions(&mut a);
    a.handle_timeout(t(50));
    assert_eq!(a.snapshot().at, t(100));
}

/// Ten 3 kW rigs `r0`..`r9` (`r0` least efficient: drained first) under a 30 kW cap, with a
/// 10% drain margin and replacement after 20 s (deadline 60 s).
fn shed_fleet() -> Arbiter {
    let settings = Settings {
        drain_margin: 0.1,
        replace_after: t(20),
        ..settings(30.0)
    };
    let mut a = Arbiter::new(settings, t(0)).unwrap();
    for i in 0..10 {
        let eff = 40.0 - f64::from(i);
        a.handle_rig(
            t(0),
            info(&format!("r{i}"), "g", 0, 3.0, Some(eff)),
            Observed::Mining,
        )
        .unwrap();
    }
    assert!(actions(&mut a).is_empty());
    a
}

fn curtail(a: &mut Arbiter, now: u64, cap_kw: f64) {
    let c = Curtailment {
        cap: kw(cap_kw),
        until: None,
        source: "grid".into(),
    };
    a.handle_curtailment(t(now), c);
}

#[test]
fn a_cap_cut_drains_a_margin_on_top_of_the_shortfall() {
    let mut a = shed_fleet();
    // 9 kW over: three rigs would do; with 10% margin (9.9 kW) a fourth is told too.
    curtail(&mut a, 0, 21.0);
    assert_eq!(sleeps(&actions(&mut a)), ["r0", "r1", "r2", "r3"]);
    // One of them never answers: the other three cover the cut on their own.
    confirm(
        &mut a,
        5,
        &["r0".into(), "r1".into(), "r2".into()],
        Confirmation::Asleep,
    );
    let snap = a.snapshot();
    assert_eq!(snap.mining, kw(21.0), "the silent rig still counts");
    assert!(snap.mining + snap.gpu_granted <= snap.budget);
}

#[test]
fn a_gpu_demand_rise_drains_no_margin() {
    let mut a = shed_fleet();
    // Not over the budget: the GPU side waits for its power anyway, so no surplus is slept.
    a.handle_gpu_demand(t(0), demand(9.0));
    assert_eq!(sleeps(&actions(&mut a)), ["r0", "r1", "r2"]);
}

#[test]
fn the_margin_is_given_back_by_the_resume_and_not_drained_again() {
    let mut a = shed_fleet();
    curtail(&mut a, 0, 21.0);
    let drained = sleeps(&actions(&mut a));
    assert_eq!(drained.len(), 4);
    confirm(&mut a, 5, &drained, Confirmation::Asleep);
    // 12 kW asleep for a 9 kW cut: the surplus rig (the most efficient of them) wakes.
    assert_eq!(wakes(&actions(&mut a)), ["r3"]);
    // No flapping: nothing is drained again, not when it confirms, not later.
    confirm(&mut a, 200, &["r3".into()], Confirmation::Awake);
    a.handle_timeout(t(1000));
    let out = actions(&mut a);
    assert!(sleeps(&out).is_empty() && wakes(&out).is_empty(), "{out:?}");
    let snap = a.snapshot();
    assert_eq!(snap.mining, kw(21.0));
    assert_eq!(snap.rigs.asleep, 3);
}

#[test]
fn a_rig_late_to_confirm_is_replaced_before_the_deadline_and_still_counts() {
    let settings = Settings {
        drain_margin: 0.0,
        ..shed_fleet().settings().clone()
    };
    let mut a = shed_fleet();
    a.handle_settings(t(0), settings).unwrap();
    actions(&mut a);
    curtail(&mut a, 0, 21.0);
    assert_eq!(sleeps(&actions(&mut a)), ["r0", "r1", "r2"]);
    confirm(&mut a, 5, &["r0".into(), "r1".into()], Confirmation::Asleep);
    assert!(actions(&mut a).is_empty());
    // The arbiter wakes up when r2 turns late (not only at its 60 s deadline).
    assert_eq!(a.poll_timeout(), Some(t(20)));
    a.handle_timeout(t(19));
    assert!(actions(&mut a).is_empty());
    a.handle_timeout(t(20));
    let out = actions(&mut a);
    assert_eq!(sleeps(&out), ["r3"], "a replacement, at once");
    assert!(
        !out.iter().any(|x| matches!(x, Action::Escalate { .. })),
        "escalated only at the deadline: {out:?}"
    );
    assert_eq!(late_events(&mut a), ["r2"], "audited once");
    // Never assumed asleep: r2 still counts as drawing.
    assert_eq!(a.snapshot().mining, kw(24.0));
    assert_eq!(a.rig(&"r2".into()).unwrap().state, RigState::Draining);
    // The late rig is not waited on again; the next timeout is r3's replace point.
    assert_eq!(a.poll_timeout(), Some(t(40)));
    confirm(&mut a, 30, &["r3".into()], Confirmation::Asleep);
    assert!(actions(&mut a).is_empty());
    assert_eq!(a.poll_timeout(), Some(t(60)));
    a.handle_timeout(t(60));
    let out = actions(&mut a);
    assert_eq!(
        out,
        [Action::Escalate {
            rig: "r2".into(),
            state: RigState::Draining,
            reason: Reason::NoConfirmation
        }],
        "escalated once at the deadline, nothing more drained"
    );
    // It confirms after all: the rig drained in its place is surplus and wakes again.
    confirm(&mut a, 70, &["r2".into()], Confirmation::Asleep);
    assert_eq!(wakes(&actions(&mut a)), ["r3"]);
    assert!(late_events(&mut a).is_empty(), "late once per command");
}

/// The rigs of the `ConfirmationLate` events polled so far.
fn late_events(a: &mut Arbiter) -> Vec<String> {
    std::iter::from_fn(|| a.poll_event())
        .filter_map(|e| match e.event {
            Event::ConfirmationLate { rig, .. } => Some(rig.0),
            _ => None,
        })
        .collect()
}

#[test]
fn a_late_rig_the_mining_side_cannot_replace_cuts_the_gpu_before_the_deadline() {
    let mut a = shed_fleet();
    a.handle_gpu_demand(t(0), demand(6.0));
    let drained = sleeps(&actions(&mut a));
    confirm(&mut a, 5, &drained, Confirmation::Asleep);
    assert_eq!(a.gpu_granted(), kw(6.0));
    actions(&mut a);
    // A deep cut: every rig must sleep and the GPU must give up 3 kW as well.
    curtail(&mut a, 10, 3.0);
    let out = actions(&mut a);
    assert_eq!(sleeps(&out).len(), 8);
    assert_eq!(a.gpu_granted(), kw(3.0));
    let others: Vec<String> = sleeps(&out).into_iter().filter(|r| r != "r9").collect();
    confirm(&mut a, 15, &others, Confirmation::Asleep);
    actions(&mut a);
    // r9 never answers: at its replace point, with nothing left to drain, the GPU is cut
    // for it (not 60 s later at its deadline).
    a.handle_timeout(t(30));
    let out = actions(&mut a);
    assert!(
        out.contains(&Action::AskGpuShed {
            amount: kw(3.0),
            reason: Reason::Curtailment
        }),
        "{out:?}"
    );
    assert_eq!(a.gpu_granted(), Watts::ZERO);
}

#[test]
fn drain_margin_and_replace_after_are_range_checked() {
    for bad in [-0.1, 1.5, f64::NAN, f64::INFINITY] {
        let s = Settings {
            drain_margin: bad,
            ..Settings::new(kw(10.0))
        };
        assert!(s.validate().is_err(), "{bad}");
    }
    let s = Settings {
        replace_after: Duration::ZERO,
        ..Settings::new(kw(10.0))
    };
    assert!(s.validate().is_err());
    assert!(Settings::new(kw(10.0)).validate().is_ok());
}

#[test]
fn settings_saved_before_the_shed_aids_still_load_with_defaults() {
    // An audit line or saved settings from before `drain_margin`/`replace_after` existed.
    let mut json = serde_json::to_value(Settings::new(kw(10.0))).unwrap();
    let obj = json.as_object_mut().unwrap();
    obj.remove("drain_margin");
    obj.remove("replace_after");
    let s: Settings = serde_json::from_value(json).unwrap();
    assert_eq!(s.drain_margin, DEFAULT_DRAIN_MARGIN);
    assert_eq!(s.replace_after, DEFAULT_REPLACE_AFTER);
}

/// Break before make, the GPU way: a grant cut frees power for mining only once the scheduler
/// has applied it; a budget call that failed counts at the higher of the two.
#[test]
fn a_cut_grant_frees_power_for_wakes_only_once_applied() {
    let mut a = Arbiter::new(settings(6.0), t(0)).unwrap();
    a.handle_rig(t(0), info("r1", "g", 0, 3.0, None), Observed::Mining)
        .unwrap();
    a.handle_rig(t(0), info("r2", "g", 0, 3.0, None), Observed::Mining)
        .unwrap();
    // The GPU side wants 3 kW: one rig sleeps, then the grant follows.
    a.handle_gpu_demand(t(1), demand(3.0));
    let slept = sleeps(&actions(&mut a));
    assert_eq!(slept.len(), 1);
    a.handle_confirmation(t(2), &RigId(slept[0].clone()), Confirmation::Asleep)
        .unwrap();
    assert_eq!(budgets(&actions(&mut a)), vec![kw(3.0)]);
    a.handle_gpu_budget_applied(t(3), kw(3.0));
    assert!(actions(&mut a).is_empty());
    // The job ends: the grant is cut at once, but the scheduler has not applied the cut.
    a.handle_gpu_demand(t(40), demand(0.0));
    let acts = actions(&mut a);
    assert_eq!(budgets(&acts), vec![Watts::ZERO]);
    assert!(
        wakes(&acts).is_empty(),
        "woken into power the GPU side holds: {acts:?}"
    );
    // Its budget call failed: it may still hold 3 kW.
    a.handle_gpu_budget_applied(t(41), kw(3.0));
    assert!(wakes(&actions(&mut a)).is_empty());
    // Applied: the rig wakes.
    a.handle_gpu_budget_applied(t(42), Watts::ZERO);
    assert_eq!(wakes(&actions(&mut a)), slept);
}
