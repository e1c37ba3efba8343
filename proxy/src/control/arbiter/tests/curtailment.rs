//! Grid curtailments: mining is shed first, the GPU side only for what mining cannot cover, and the
//! end resumes rigs staggered.

use super::*;

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
