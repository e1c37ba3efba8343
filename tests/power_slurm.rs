//! Workload switching with a REAL Slurm (the one-node cluster `.ci/slurm-up.sh` starts): a GPU
//! job pending on `power_kw` licenses → hashshift drains enough rigs (fake LuxOS management
//! APIs) → confirms they sleep → grows the budget (the hold reservation shrinks) → the job
//! starts; the job ends → the budget shrinks back → the rigs resume.
//!
//! Runs with `HASHSHIFT_SLURM=1` (`.ci/run` exports it); otherwise it says why it skipped.
//! With `HASHSHIFT_SLURM=1` and no working Slurm it fails. Uses its own hold reservation and
//! job name, and cleans both up before and after.

mod support;

use std::time::{Duration, Instant};

use anyhow::{Result, ensure};
use hashshift_proxy::control::admin::protocol::Command;
use hashshift_tools::fake_firmware::FakePhase;
use support::power_site::{
    Site, all_mining_on_firmware_figures, confirmed_asleep, position, states,
};
use support::slurm::{enabled, job as job_state, sbatch, sh, wait_job};

const JOB_NAME: &str = "hashshift-e2e-gpu";
const RESERVATION: &str = "hashshift_e2e_hold";

async fn cleanup() -> Result<()> {
    sh("scancel", &["--name", JOB_NAME]).await?;
    let _ = sh(
        "scontrol",
        &["delete", &format!("ReservationName={RESERVATION}")],
    )
    .await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pending_gpu_job_gets_the_power_of_drained_rigs_and_gives_it_back() -> Result<()> {
    if !enabled() {
        eprintln!("skipped: set HASHSHIFT_SLURM=1 (see .ci/slurm-up.sh)");
        return Ok(());
    }
    cleanup().await?;
    let result = tokio::time::timeout(Duration::from_secs(150), scenario()).await;
    cleanup().await?;
    result??;
    Ok(())
}

async fn scenario() -> Result<()> {
    let gpu = format!("[gpu_scheduler]\nkind = \"slurm\"\nhold_reservation = \"{RESERVATION}\"\n");
    let site = Site::start(3, 10.0, &gpu).await?;
    site.until("three rigs mining", 30, Command::Rigs, |r| {
        all_mining_on_firmware_figures(r, 3)
    })
    .await?;
    // Nothing granted yet: the hold reservation keeps every license, so the job pends. The
    // budget is applied to Slurm asynchronously: submitting before the hold reservation exists
    // would let the job start at once.
    site.until("no GPU grant", 10, Command::Power, |p| {
        p["gpu_granted_kw"] == 0.0
    })
    .await?;
    site.until(
        "the zero budget applied to Slurm",
        20,
        Command::Events { limit: Some(1000) },
        |e| {
            position(e, |x| {
                x["what"] == "budget-applied" && x["detail"] == "0.0 kW"
            })
            .is_some()
        },
    )
    .await?;
    let job = sbatch(JOB_NAME, 5, 3).await?;
    let submitted = Instant::now();
    // Slurm gives a new job the reason `None` until its scheduler first looks at it, and
    // hashshift counts `None` as demand; on a busy machine the grant can come before Slurm ever
    // says `Licenses`. What must hold is that the job does not run before the grant: each round
    // reads the job first and the grant second, so "running, then no grant" is a real breach
    // (the grant only grows in this phase).
    let deadline = Instant::now() + Duration::from_secs(60);
    let power = loop {
        let state = job_state(job).await?;
        let power = site.ask(Command::Power).await?;
        let granted = power["gpu_granted_kw"].as_f64().unwrap_or(-1.0);
        if let Some((s, r)) = &state {
            ensure!(
                granted > 0.0 || s == "PENDING",
                "job {job} is {s} ({r}) before any grant: the hold did not hold"
            );
        }
        if granted == 5.0 {
            break power;
        }
        ensure!(
            Instant::now() < deadline,
            "no 5 kW grant within 60 s; job {state:?}, power {power:#}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    ensure!(power["mining_kw"] == 3.25, "{power:#}");
    let asleep = site
        .phases()
        .iter()
        .filter(|p| **p == FakePhase::Sleeping)
        .count();
    ensure!(asleep == 2, "{:?}", site.phases());
    wait_job(job, Duration::from_secs(30), |s, _| {
        s == "RUNNING" || s == "COMPLETED" || s == "COMPLETING"
    })
    .await?;
    eprintln!(
        "job {job} started {:.1} s after submission",
        submitted.elapsed().as_secs_f64()
    );
    let events = site.ask(Command::Events { limit: Some(1000) }).await?;
    let last_asleep = confirmed_asleep(&events).last().copied();
    let applied = position(&events, |e| {
        e["what"] == "budget-applied" && e["detail"] == "5.0 kW"
    });
    ensure!(
        matches!((last_asleep, applied), (Some(a), Some(b)) if a < b),
        "break before make: {events:#}"
    );

    // The job ends; demand falls to 0; the grant goes back and the rigs resume.
    wait_job(job, Duration::from_secs(30), |s, _| {
        s == "COMPLETED" || s == "GONE"
    })
    .await?;
    site.until("grant back to 0", 30, Command::Power, |p| {
        p["gpu_granted_kw"] == 0.0
    })
    .await?;
    site.until("every rig mining again", 30, Command::Rigs, |r| {
        states(r).len() == 3 && states(r).iter().all(|s| s == "mining")
    })
    .await?;
    let held = sh(
        "scontrol",
        &["show", &format!("ReservationName={RESERVATION}")],
    )
    .await?;
    ensure!(
        held.contains("power_kw:100") || held.contains("power_kw=100"),
        "{held}"
    );
    site.stop().await
}
