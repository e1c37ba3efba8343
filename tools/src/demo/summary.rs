//! The demo's periodic report: rigs (the management API it speaks, how hashshift controls it
//! — the `control` of `ctl rigs` — power state, difficulty, hashrate, shares), pools (state, miners, shares as the pools judged them) and the power budget.

use std::fmt::Write as _;
use std::time::Duration;

use super::DemoRig;
use crate::testpool::TestPool;
use hashshift_proxy::control::power::PowerView;
use hashshift_proxy::proxy::Proxy;

/// One report.
pub fn summary(
    t: Duration,
    rigs: &[DemoRig],
    proxy: &Proxy,
    pools: &[&TestPool],
    power: Option<&PowerView>,
) -> String {
    let secs = t.as_secs_f64().max(1.0);
    let mut out = String::new();
    let _ = writeln!(
        out,
        "── t = {:>4}s ─────────────────────────────────────────────────────────────",
        t.as_secs()
    );
    let _ = writeln!(
        out,
        "{:<26} {:<10} {:<14} {:<9} {:>10} {:>12} {:>9} {:>9}",
        "worker", "api", "control", "power", "difficulty", "hashrate", "accepted", "rejected"
    );
    for rig in rigs {
        let s = rig.stats();
        let hashrate = s.accepted_difficulty * 4_294_967_296.0 / secs;
        let side = power.and_then(|p| {
            p.rigs.get(&hashshift_proxy::control::arbiter::RigId(
                rig.worker.clone(),
            ))
        });
        let state = side.map_or("-".to_owned(), |r| format!("{:?}", r.state).to_lowercase());
        // `escalated`: its last command went unconfirmed (a cut may follow).
        let control = side.map_or("-".to_owned(), |r| {
            if r.escalated && r.control != "pdu-cut" {
                format!("{}!", r.control)
            } else {
                r.control.clone()
            }
        });
        let _ = writeln!(
            out,
            "{:<26} {:<10} {:<14} {:<9} {:>10.6} {:>12} {:>9} {:>9}{}",
            rig.worker,
            rig.kind,
            control,
            state,
            s.difficulty,
            human_rate(hashrate),
            s.accepted,
            s.rejected,
            if rig.hashing() && !s.connected {
                "  (reconnecting)"
            } else {
                ""
            }
        );
    }
    let _ = writeln!(
        out,
        "{:<26} {:<10} {:>6} {:>16} {:>16} {:>7}",
        "pool", "state", "miners", "accepted (pool)", "rejected (pool)", "blocks"
    );
    for (snapshot, pool) in proxy.pools().iter().zip(pools) {
        let s = pool.stats();
        let state = match (snapshot.up, snapshot.active) {
            (true, true) => "active",
            (true, false) => "standby",
            (false, _) => "DOWN",
        };
        let _ = writeln!(
            out,
            "{:<26} {:<10} {:>6} {:>16} {:>16} {:>7}",
            format!("{} {}", pool.name(), pool.addr()),
            state,
            snapshot.miners,
            s.accepted,
            s.rejected_total(),
            s.blocks
        );
    }
    if let Some(p) = power {
        let s = &p.snapshot;
        let _ = writeln!(
            out,
            "power: cap {:.2} kW{} | mining {:.2} kW ({} asleep) | GPU granted {:.2} kW, wants {:.2} kW | free {:.2} kW",
            s.effective_cap.kw(),
            if s.curtailment.is_some() {
                " (curtailed)"
            } else {
                ""
            },
            s.mining.kw(),
            s.rigs.asleep,
            s.gpu_granted.kw(),
            s.gpu_wanted.kw(),
            (s.budget.kw() - s.mining.kw() - s.gpu_granted.kw()).max(0.0),
        );
        if p.pdu_cuts.done + p.pdu_cuts.failed > 0 {
            let _ = writeln!(
                out,
                "PDU cuts (sleeps not confirmed, escalated to the outlet): {} done, {} failed",
                p.pdu_cuts.done, p.pdu_cuts.failed
            );
        }
    }
    out.push('\n');
    out
}

fn human_rate(hs: f64) -> String {
    if hs >= 1e9 {
        format!("{:.2} GH/s", hs / 1e9)
    } else if hs >= 1e6 {
        format!("{:.2} MH/s", hs / 1e6)
    } else {
        format!("{:.1} kH/s", hs / 1e3)
    }
}
