//! The power arbiter on 1,000 rigs (issue 5, item 9): from a GPU request needing half the
//! fleet's power to every `Sleep` out, then from the confirmations in to the `SetGpuBudget`
//! that grants it. Proxy time only: the firmware's own delay is not part of it.
//!
//! `cargo bench --bench arbiter`

use std::hint::black_box;
use std::time::Duration;

use criterion::{BatchSize, Criterion, criterion_group, criterion_main};
use hashshift_proxy::control::arbiter::{
    Action, Arbiter, Confirmation, GpuDemand, GroupId, Observed, RigId, RigInfo, Settings, Watts,
};

const RIGS: usize = 1_000;

/// 1,000 mining rigs of four models, site cap = their power: a GPU request for half of it
/// must drain about half the fleet.
fn fleet() -> (Arbiter, Watts) {
    let models = [(3250, 34.0), (3010, 21.5), (3500, 17.5), (3645, 13.5)];
    let rigs: Vec<RigInfo> = (0..RIGS)
        .map(|i| {
            let (w, eff) = models[i % models.len()];
            RigInfo {
                id: RigId(format!("rig-{i:04}")),
                group: GroupId(format!("g{}", i % 10)),
                priority: (i % 3) as i32,
                power: Watts(w + (i as u64 % 50)),
                efficiency: Some(eff),
                path: Default::default(),
            }
        })
        .collect();
    let total: Watts = rigs.iter().map(|r| r.power).sum();
    let mut settings = Settings::new(total + Watts(1));
    settings.hysteresis = Watts::ZERO;
    let mut a = Arbiter::new(settings, Duration::ZERO).expect("settings");
    for info in rigs {
        a.handle_rig(Duration::ZERO, info, Observed::Mining)
            .expect("rig");
    }
    while a.poll_event().is_some() {}
    (a, total)
}

/// GPU demand in → all `Sleep`s out. Returns the rigs told to sleep.
fn request(a: &mut Arbiter, half: Watts) -> Vec<RigId> {
    let now = Duration::from_secs(1);
    a.handle_gpu_demand(
        now,
        GpuDemand {
            wanted: half,
            in_use: Watts::ZERO,
        },
    );
    let mut sleeping = Vec::new();
    while let Some(action) = a.poll_action() {
        if let Action::Sleep { rig, .. } = action {
            sleeping.push(rig);
        }
    }
    while a.poll_event().is_some() {}
    sleeping
}

/// Every confirmation in → the final `SetGpuBudget` out. Returns the grant.
fn confirm(a: &mut Arbiter, sleeping: &[RigId]) -> Watts {
    let now = Duration::from_secs(2);
    let mut grant = Watts::ZERO;
    for rig in sleeping {
        a.handle_confirmation(now, rig, Confirmation::Asleep)
            .expect("known");
        while let Some(action) = a.poll_action() {
            if let Action::SetGpuBudget { budget, .. } = action {
                grant = budget;
            }
        }
        while a.poll_event().is_some() {}
    }
    grant
}

fn bench(c: &mut Criterion) {
    let total = fleet().1;
    let half = Watts(total.0 / 2);
    {
        let mut a = fleet().0;
        let sleeping = request(&mut a, half);
        let grant = confirm(&mut a, &sleeping);
        println!(
            "{RIGS} rigs, {total}: GPU asks {half}; {} Sleep; granted {grant}",
            sleeping.len()
        );
    }
    let mut g = c.benchmark_group("arbiter_1000_rigs");
    g.bench_function("gpu_request_to_all_sleeps", |b| {
        b.iter_batched_ref(
            || fleet().0,
            |a| black_box(request(a, half)),
            BatchSize::LargeInput,
        )
    });
    g.bench_function("confirmations_to_budget_granted", |b| {
        b.iter_batched_ref(
            || {
                let mut a = fleet().0;
                let sleeping = request(&mut a, half);
                (a, sleeping)
            },
            |(a, sleeping)| black_box(confirm(a, sleeping)),
            BatchSize::LargeInput,
        )
    });
    g.bench_function("request_to_budget_granted", |b| {
        b.iter_batched_ref(
            || fleet().0,
            |a| {
                let sleeping = request(a, half);
                black_box(confirm(a, &sleeping))
            },
            BatchSize::LargeInput,
        )
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
