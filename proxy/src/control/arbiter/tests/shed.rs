//! The drain margin on top of a shortfall and the replacement of rigs late to confirm (rules 3 and
//! 5).

use super::*;
use crate::config::ranges::{DEFAULT_DRAIN_MARGIN, DEFAULT_REPLACE_AFTER};

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
