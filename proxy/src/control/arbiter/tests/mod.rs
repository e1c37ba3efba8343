//! Unit tests, one or more per rule of the module doc: the helpers shared by every file here,
//! then one file per concern.

use std::time::Duration;

use super::*;

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
        path: Default::default(),
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

mod curtailment;
mod inputs;
mod plan;
mod rigs;
mod shed;
