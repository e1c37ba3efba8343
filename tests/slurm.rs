//! The Slurm adapter against a REAL Slurm (the one-node cluster `.ci/slurm-up.sh` starts).
//!
//! Runs only with `HASHSHIFT_SLURM=1` (`.ci/run` exports it after starting Slurm); otherwise it
//! prints why it skipped. With `HASHSHIFT_SLURM=1` and no working Slurm it FAILS.
//!
//! One test drives the whole sequence, because the cluster (its licenses, its one node) is
//! shared state: budget 0 → a job needing 10 kW pends on Licenses → demand says 10 kW
//! requested → budget 10 → the job starts → it ends → demand back to 0 → shed by requeue and
//! by suspend → node drain/resume. It uses its own reservation (`hashshift_test_hold`) and job
//! name, cleans both up before and after, and is bounded in time, so it can run twice.

mod support;

use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use hashshift_proxy::gpu::{
    GpuDemand, GpuScheduler, ShedAction, ShedMode, SlurmConfig, SlurmScheduler,
};
use support::slurm::{enabled, sbatch, sh, wait_job};

const JOB_NAME: &str = "hashshift-gpu-test";
const RESERVATION: &str = "hashshift_test_hold";

async fn wait_demand(
    s: &GpuScheduler,
    within: Duration,
    want: impl Fn(&GpuDemand) -> bool,
) -> Result<GpuDemand> {
    let deadline = Instant::now() + within;
    loop {
        let d = s.demand().await?;
        if want(&d) {
            return Ok(d);
        }
        if Instant::now() > deadline {
            bail!("demand still {d:?} after {within:?}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn config(mode: ShedMode) -> SlurmConfig {
    let mut c = SlurmConfig::default();
    c.hold_reservation = RESERVATION.into();
    c.shed_mode = mode;
    c.shed_confirm_timeout_ms = 20_000;
    c
}

async fn cleanup() -> Result<()> {
    sh("scancel", &["--name", JOB_NAME]).await?;
    SlurmScheduler::new(config(ShedMode::Requeue))?
        .remove_hold()
        .await?;
    Ok(())
}

#[tokio::test]
async fn slurm_power_budget_knob_demand_and_shed() -> Result<()> {
    if !enabled() {
        eprintln!("skipped: set HASHSHIFT_SLURM=1 (see .ci/slurm-up.sh)");
        return Ok(());
    }
    let result = tokio::time::timeout(Duration::from_secs(150), scenario()).await;
    // Clean up whatever happened, then report the scenario's result.
    let cleaned = cleanup().await;
    result.context("Slurm scenario timed out")??;
    cleaned
}

async fn scenario() -> Result<()> {
    cleanup().await?;
    let sched = GpuScheduler::from_config(hashshift_proxy::gpu::GpuSchedulerConfig::Slurm(
        config(ShedMode::Requeue),
    ))?;
    let GpuScheduler::Slurm(slurm) = &sched else {
        bail!("not slurm")
    };
    let total = slurm.total_licenses().await?;
    ensure!(
        total >= 20,
        "the test needs power_kw >= 20 licenses, Slurm has {total}"
    );

    // Budget 0: the hold reservation takes every license; a 10 kW job pends on Licenses.
    sched.set_budget_kw(0.0).await?;
    ensure!(slurm.held_licenses().await? == Some(total));
    let j1 = sbatch(JOB_NAME, 10, 2).await?;
    let (st, why) = wait_job(j1, Duration::from_secs(20), |_, r| r != "None").await?;
    ensure!(
        st == "PENDING" && why == "Licenses",
        "job {j1} is {st} ({why}), want PENDING (Licenses)"
    );
    let d = wait_demand(&sched, Duration::from_secs(10), |d| d.requested_kw > 0.0).await?;
    ensure!(d == GpuDemand::new(10.0, 0.0), "demand {d:?}");

    // Budget 10 (idempotent when repeated): the job starts within seconds.
    let t0 = Instant::now();
    sched.set_budget_kw(10.0).await?;
    wait_job(j1, Duration::from_secs(15), |s, _| s != "PENDING").await?;
    println!(
        "budget 0 -> 10 kW: job {j1} left PENDING after {:?}",
        t0.elapsed()
    );
    sched.set_budget_kw(10.9).await?; // rounds down: still 10 licenses
    ensure!(slurm.held_licenses().await? == Some(total - 10));

    // It ends: demand back to 0.
    wait_job(j1, Duration::from_secs(20), |s, _| {
        s == "COMPLETED" || s == "GONE"
    })
    .await?;
    let d = wait_demand(&sched, Duration::from_secs(10), |d| {
        *d == GpuDemand::default()
    })
    .await?;
    println!("after job {j1} ended: demand {d:?}");

    // Shed 5 kW by requeue: the running 10 kW job is requeued (10 kW freed), the budget drops
    // to running - shed = 5 kW, so the requeued job (10 kW) cannot restart.
    let j2 = sbatch(JOB_NAME, 10, 120).await?;
    wait_job(j2, Duration::from_secs(15), |s, _| s == "RUNNING").await?;
    let d = sched.demand().await?;
    ensure!(d.running_kw == 10.0, "demand while running {d:?}");
    let out = sched.shed(5.0, "test: grid curtailment").await?;
    println!("shed (requeue): {out:?}");
    ensure!(
        out.confirmed && out.freed_kw == 10.0 && out.budget_kw == Some(5.0),
        "{out:?}"
    );
    ensure!(
        out.actions
            == [ShedAction::Requeued {
                job_id: j2,
                kw: 10.0
            }],
        "{:?}",
        out.actions
    );
    ensure!(slurm.held_licenses().await? == Some(total - 5));
    let (st, why) = wait_job(j2, Duration::from_secs(10), |s, _| s == "PENDING").await?;
    println!("requeued job {j2}: {st} ({why})");
    let d = sched.demand().await?;
    ensure!(d.running_kw == 0.0, "after requeue {d:?}");
    sh("scancel", &[&j2.to_string()]).await?;

    // Shedding with nothing running frees nothing and still lowers the budget.
    let out = sched.shed(5.0, "nothing to shed").await?;
    ensure!(
        out.freed_kw == 0.0 && out.actions.is_empty() && out.confirmed,
        "{out:?}"
    );

    // Shed by suspend: the job stops but keeps its licenses; resume continues it.
    let susp = SlurmScheduler::new(config(ShedMode::Suspend))?;
    susp.set_budget_kw(10.0).await?;
    let j3 = sbatch(JOB_NAME, 10, 120).await?;
    wait_job(j3, Duration::from_secs(15), |s, _| s == "RUNNING").await?;
    let out = susp.shed(10.0, "test: suspend").await?;
    println!("shed (suspend): {out:?}");
    ensure!(
        out.actions
            == [ShedAction::Suspended {
                job_id: j3,
                kw: 10.0
            }],
        "{:?}",
        out.actions
    );
    wait_job(j3, Duration::from_secs(5), |s, _| s == "SUSPENDED").await?;
    let d = susp.demand().await?;
    ensure!(
        d.suspended_kw == 10.0 && d.running_kw == 0.0,
        "suspended demand {d:?}"
    );
    ensure!(susp.resume_suspended().await? == [j3]);
    wait_job(j3, Duration::from_secs(5), |s, _| s == "RUNNING").await?;
    sh("scancel", &[&j3.to_string()]).await?;

    // Node drain and resume on this machine's node.
    let node = sh("hostname", &["-s"]).await?;
    let mut nc = config(ShedMode::Requeue);
    nc.nodes = Some(node.clone());
    let nodes = SlurmScheduler::new(nc)?;
    nodes.drain_nodes("hashshift test drain").await?;
    let st = sh("sinfo", &["-h", "-n", &node, "-o", "%T"]).await?;
    ensure!(st.starts_with("drain"), "node state after drain: {st}");
    nodes.resume_nodes().await?;
    let st = sh("sinfo", &["-h", "-n", &node, "-o", "%T"]).await?;
    ensure!(!st.starts_with("drain"), "node state after resume: {st}");
    Ok(())
}
