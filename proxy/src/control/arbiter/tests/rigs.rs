//! Rigs that do not confirm, fail, are found asleep or are unknown (rule 5), and operator drains
//! that pin them.

use super::*;

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
