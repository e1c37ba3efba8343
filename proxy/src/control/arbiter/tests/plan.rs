//! Drain order, the GPU grant and when rigs wake again (rules 1 to 4).

use super::*;

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

/// Issue 14 item 5: rigs a firmware sleeps are drained before rigs only a PDU cut stops (the
/// last resort), whatever their priority or efficiency; rigs nothing controls come last; a
/// mapped outlet as escalation does not change a firmware rig's class.
#[test]
fn the_control_path_ranks_before_priority_and_efficiency() {
    let mut a = Arbiter::new(settings(100.0), t(0)).unwrap();
    let rig = |id: &str, priority, eff, path| RigInfo {
        path,
        ..info(id, "g", priority, 3.0, Some(eff))
    };
    for r in [
        // PDU only, the least efficient and least important: still after the firmware rigs.
        rig("pdu-worst", -5, 90.0, ControlPath::Pdu),
        rig("pdu-good", 0, 20.0, ControlPath::Pdu),
        rig("none-worst", -9, 99.0, ControlPath::None),
        rig("fw-vip", 9, 15.0, ControlPath::Firmware),
        rig("fw-pdu", 0, 30.0, ControlPath::FirmwareAndPdu),
        rig("fw", 0, 25.0, ControlPath::Firmware),
    ] {
        a.handle_rig(t(0), r, Observed::Mining).unwrap();
    }
    let order: Vec<String> = a.drain_order().into_iter().map(|r| r.0).collect();
    assert_eq!(
        order,
        [
            "fw-pdu",
            "fw",
            "fw-vip",
            "pdu-worst",
            "pdu-good",
            "none-worst"
        ]
    );
    // Draining 7 kW takes the three firmware rigs first (9 kW), no PDU rig.
    a.handle_operator(
        t(1),
        Operator {
            who: "op".into(),
            why: "test".into(),
        },
        OperatorCommand::DrainPower { amount: kw(7.0) },
    )
    .unwrap();
    let mut slept = sleeps(&actions(&mut a));
    slept.sort();
    assert_eq!(slept, ["fw", "fw-pdu", "fw-vip"]);
}

/// A plan persisted before rigs had a control path reads as firmware rigs (the order they
/// were planned in).
#[test]
fn rig_info_without_a_path_reads_as_firmware() {
    let json = r#"{"id":"a","group":"g","priority":0,"power":3000,"efficiency":null}"#;
    let info: RigInfo = serde_json::from_str(json).unwrap();
    assert_eq!(info.path, ControlPath::Firmware);
}
