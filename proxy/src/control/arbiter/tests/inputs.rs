//! Restart safety (rule 6), input validation, settings changes, the audit stream and a clock going
//! backwards.

use super::*;

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
