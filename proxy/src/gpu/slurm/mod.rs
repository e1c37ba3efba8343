//! Slurm as the GPU scheduler: the power budget is a cluster-wide license (`power_kw` by
//! default; jobs ask `sbatch -L power_kw:K`), and hashshift holds the part it does not grant in
//! a license-only reservation.
//!
//! - **Budget** ([`SlurmScheduler::set_budget_kw`]): the reservation (`hashshift_hold` by
//!   default; `Flags=ANY_NODES Users=root`, no nodes) holds `total - floor(budget)` licenses.
//!   It is created if missing and resized with `scontrol update ReservationName=..
//!   Licenses=power_kw:K`, then read back. K = 0 is fine on 22.05 (checked on a real cluster:
//!   the update is accepted, `Reserved=0`, and the reservation survives a slurmctld restart),
//!   so the reservation is kept at 0 rather than deleted. Holding more than is free is also
//!   accepted: running jobs keep running, nothing new starts. `Duration=infinite` is stored by
//!   22.05 as 365 days; a missing (expired) reservation is simply re-created.
//!   Pending jobs react within about a second (measured: 0.6 s from the update to RUNNING).
//! - **Demand** ([`SlurmScheduler::demand`]): `squeue --json --all`; pending jobs waiting for
//!   licenses/resources/priority count as requested, running ones as running, suspended ones
//!   as suspended (see `parse::JobPhase`). A pending job array counts once (its next task).
//! - **Shed** ([`SlurmScheduler::shed`]): see its doc.
//! - **Nodes**: [`SlurmScheduler::drain_nodes`]/[`SlurmScheduler::resume_nodes`] on the
//!   configured node list (`scontrol update NodeName=.. State=DRAIN|RESUME`).
//!
//! `scontrol`/`squeue` run as subprocesses (no shell) with a timeout; without slurmdbd only
//! root or the `slurm` user may update reservations, jobs and nodes.

pub mod parse;

use std::path::PathBuf;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use super::process::{self, Output};
use super::{
    GpuDemand, GpuError, ShedAction, ShedOutcome, check_kw, check_ms, check_shed_deadline,
    clean_reason,
};
use parse::JobPhase;

/// What [`SlurmScheduler::shed`] does to running jobs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ShedMode {
    /// `scontrol requeue`: the job is killed (SIGTERM, SIGKILL after Slurm's `KillWait`) and
    /// goes back to PENDING, its licenses returned. It loses its progress unless it
    /// checkpoints. Slurm makes it eligible again only after ~2 minutes (`BeginTime`).
    #[default]
    Requeue,
    /// `scontrol suspend`: the job is stopped (SIGSTOP) and keeps its licenses and GPU memory;
    /// [`SlurmScheduler::resume_suspended`] continues it. GPUs idle but stay powered.
    Suspend,
}

/// `[gpu_scheduler] kind = "slurm"` settings.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
#[non_exhaustive]
pub struct SlurmConfig {
    /// The cluster-wide license that stands for kW (`Licenses=power_kw:N` in slurm.conf).
    pub license: String,
    /// The license total; `None` reads it from `scontrol show license` on each budget change.
    pub total_licenses: Option<u64>,
    /// The license-only reservation hashshift resizes.
    pub hold_reservation: String,
    /// The user the hold reservation is for (Slurm requires one; nobody submits into it).
    pub hold_user: String,
    /// Slurm hostlist of the GPU nodes for drain/resume (e.g. `gpu[01-16]`).
    pub nodes: Option<String>,
    /// The `scontrol` program.
    pub scontrol: PathBuf,
    /// The `squeue` program.
    pub squeue: PathBuf,
    /// Timeout of one `scontrol`/`squeue` run, in ms.
    pub command_timeout_ms: u64,
    /// What shedding does to running jobs.
    pub shed_mode: ShedMode,
    /// How long a shed waits for the shed jobs to leave the running state, in ms.
    pub shed_confirm_timeout_ms: u64,
    /// How long a shed may take until squeue shows running work at or below the grant, in
    /// seconds, before it is escalated (audit `gpu`/`shed-overdue`, a metric); retries go on.
    pub shed_deadline_secs: f64,
}

impl Default for SlurmConfig {
    fn default() -> Self {
        Self {
            license: "power_kw".into(),
            total_licenses: None,
            hold_reservation: "hashshift_hold".into(),
            hold_user: "root".into(),
            nodes: None,
            scontrol: "scontrol".into(),
            squeue: "squeue".into(),
            command_timeout_ms: 10_000,
            shed_mode: ShedMode::Requeue,
            shed_confirm_timeout_ms: 60_000,
            shed_deadline_secs: super::DEFAULT_SHED_DEADLINE_SECS,
        }
    }
}

/// Caps what we read from scontrol/squeue (a big queue's JSON is a few MB).
const MAX_OUTPUT: usize = 32 << 20;
/// How often a shed polls squeue for its jobs to stop.
const CONFIRM_POLL: Duration = Duration::from_millis(200);
/// `scontrol`/`squeue` runs one shed may spend `command_timeout_ms` on, besides its
/// confirmation wait: squeue, the budget (4 runs) and the first jobs' requeues. Each run takes
/// milliseconds when Slurm is healthy; when it hangs, the shed stops here and the caller
/// retries (jobs already requeued no longer run, so a retry picks the next ones).
const SHED_COMMANDS: u32 = 16;

/// The Slurm adapter. See the module doc.
#[derive(Debug)]
pub struct SlurmScheduler {
    cfg: SlurmConfig,
    /// Last budget set (kW granted), for shed to lower from; and jobs we suspended.
    state: Mutex<State>,
}

#[derive(Debug, Default)]
struct State {
    budget_kw: Option<f64>,
    suspended: Vec<u64>,
}

/// Slurm parses `key=value` arguments itself: names must not smuggle in other keys.
fn check_name(what: &str, v: &str) -> Result<(), GpuError> {
    let ok = !v.is_empty()
        && v.len() <= 128
        && v.chars()
            .all(|c| c.is_ascii_alphanumeric() || "_-.[],".contains(c));
    if ok {
        Ok(())
    } else {
        Err(GpuError::Config(format!(
            "{what} {v:?}: use [A-Za-z0-9_.-]"
        )))
    }
}

impl SlurmScheduler {
    /// Validates the config (no I/O).
    pub fn new(cfg: SlurmConfig) -> Result<Self, GpuError> {
        check_name("license", &cfg.license)?;
        check_name("hold_reservation", &cfg.hold_reservation)?;
        check_name("hold_user", &cfg.hold_user)?;
        if let Some(n) = &cfg.nodes {
            check_name("nodes", n)?;
        }
        check_ms("command_timeout_ms", cfg.command_timeout_ms)?;
        if cfg.shed_confirm_timeout_ms > super::MAX_CONFIG_MS {
            return Err(GpuError::Config(format!(
                "shed_confirm_timeout_ms must be at most {} (one day)",
                super::MAX_CONFIG_MS
            )));
        }
        check_shed_deadline(cfg.shed_deadline_secs)?;
        Ok(Self {
            cfg,
            state: Mutex::new(State::default()),
        })
    }

    /// The config it runs with.
    pub fn config(&self) -> &SlurmConfig {
        &self.cfg
    }

    /// The longest one `set_budget_kw` or `shed` call can take: a shed is cut off after
    /// `SHED_COMMANDS` command timeouts plus its confirmation wait plus the last poll; a budget
    /// change is 4 runs.
    pub fn call_bound(&self) -> Duration {
        self.timeout()
            .saturating_mul(SHED_COMMANDS + 1)
            .saturating_add(Duration::from_millis(self.cfg.shed_confirm_timeout_ms))
            .saturating_add(CONFIRM_POLL)
    }

    fn timeout(&self) -> Duration {
        Duration::from_millis(self.cfg.command_timeout_ms)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    async fn scontrol_raw(&self, args: &[String]) -> Result<Output, GpuError> {
        process::run(
            self.cfg.scontrol.as_os_str(),
            args,
            &[],
            self.timeout(),
            MAX_OUTPUT,
        )
        .await
    }

    async fn scontrol(&self, args: &[String]) -> Result<Output, GpuError> {
        process::run_ok(
            self.cfg.scontrol.as_os_str(),
            args,
            &[],
            self.timeout(),
            MAX_OUTPUT,
        )
        .await
    }

    /// The license total: configured, or `scontrol show license <license>`.
    pub async fn total_licenses(&self) -> Result<u64, GpuError> {
        if let Some(t) = self.cfg.total_licenses {
            return Ok(t);
        }
        let out = self
            .scontrol(&["show".into(), "license".into(), self.cfg.license.clone()])
            .await?;
        parse::license_total(&out.stdout, &self.cfg.license)?
            .ok_or_else(|| GpuError::NoSuchLicense(self.cfg.license.clone()))
    }

    /// Licenses the hold reservation holds now; `None` when it does not exist.
    pub async fn held_licenses(&self) -> Result<Option<u64>, GpuError> {
        let name = &self.cfg.hold_reservation;
        let out = self
            .scontrol_raw(&["show".into(), "reservation".into(), name.clone()])
            .await?;
        let text = String::from_utf8_lossy(&out.stdout).into_owned()
            + &String::from_utf8_lossy(&out.stderr);
        let parsed = parse::reservation(&text, name, &self.cfg.license);
        match parsed {
            Ok(r) => Ok(r.map(|r| r.held)),
            Err(_) if !out.status.success() => Err(GpuError::Exit {
                program: self.cfg.scontrol.to_string_lossy().into_owned(),
                code: out.status.code(),
                stderr: out.message(),
            }),
            Err(e) => Err(e),
        }
    }

    /// The budget last set through this scheduler (kW), if any.
    pub fn last_budget_kw(&self) -> Option<f64> {
        self.lock().budget_kw
    }

    /// Grants the GPU side `floor(kw)` licenses by holding `total - floor(kw)` (at least 0) in
    /// the hold reservation: creates it if missing, updates it if different, and reads it back.
    /// Takes a few scontrol runs (ms each); pending jobs start within about a second.
    pub async fn set_budget_kw(&self, kw: f64) -> Result<(), GpuError> {
        let kw = check_kw(kw)?;
        let total = self.total_licenses().await?;
        // Round the grant down: the GPU side never gets more than its budget.
        let grant = (kw.floor() as u64).min(total);
        let hold = total - grant;
        let lic = format!("Licenses={}:{hold}", self.cfg.license);
        let name = format!("ReservationName={}", self.cfg.hold_reservation);
        match self.held_licenses().await? {
            Some(h) if h == hold => {}
            Some(_) => {
                self.scontrol(&["update".into(), name, lic]).await?;
            }
            None => {
                let args = [
                    "create",
                    "reservation",
                    &name,
                    "StartTime=now",
                    "Duration=infinite",
                    &format!("Users={}", self.cfg.hold_user),
                    "Flags=ANY_NODES",
                    &lic,
                ]
                .map(String::from);
                self.scontrol(&args).await?;
            }
        }
        match self.held_licenses().await? {
            Some(h) if h == hold => {
                tracing::info!(kw, grant, hold, total, "GPU budget set in Slurm");
                self.lock().budget_kw = Some(kw);
                Ok(())
            }
            other => Err(GpuError::Parse {
                what: "scontrol show reservation",
                detail: format!("after the update the hold is {other:?}, expected {hold}"),
            }),
        }
    }

    async fn jobs(&self) -> Result<Vec<parse::Job>, GpuError> {
        let args = ["--json", "--all"];
        let out = process::run_ok(
            self.cfg.squeue.as_os_str(),
            &args,
            &[],
            self.timeout(),
            MAX_OUTPUT,
        )
        .await?;
        parse::squeue_jobs(&out.stdout, &self.cfg.license)
    }

    /// Pending (waiting for power), running and suspended jobs' licenses, as kW.
    pub async fn demand(&self) -> Result<GpuDemand, GpuError> {
        let mut d = GpuDemand::default();
        for j in self.jobs().await? {
            let kw = j.kw as f64;
            match j.phase {
                JobPhase::Waiting => d.requested_kw += kw,
                JobPhase::Running => d.running_kw += kw,
                JobPhase::Suspended => d.suspended_kw += kw,
                JobPhase::Blocked | JobPhase::Done => {}
            }
        }
        Ok(d)
    }

    /// Gives `kw` back now, in this order:
    /// 1. lowers the budget to `min(last budget, running - kw)` (at least 0) so that nothing
    ///    new starts (nor do requeued jobs restart);
    /// 2. picks running jobs holding the license, newest started first (least work lost),
    ///    until they add up to `kw`;
    /// 3. requeues or suspends them ([`ShedMode`]); a job that ended meanwhile counts as freed;
    /// 4. waits until none of them is running, at most `shed_confirm_timeout_ms` (a requeued
    ///    job leaves RUNNING at once; one that ignores SIGTERM takes Slurm's `KillWait`,
    ///    30 s by default).
    ///
    /// Takes a few scontrol runs (ms each) plus the confirmation wait; the whole shed is cut
    /// off after [`Self::call_bound`] ([`GpuError::Timeout`]: the caller retries).
    pub async fn shed(&self, kw: f64, reason: &str) -> Result<ShedOutcome, GpuError> {
        let kw = check_kw(kw)?;
        let bound = self.call_bound();
        tokio::time::timeout(bound, self.shed_unbounded(kw, reason))
            .await
            .unwrap_or_else(|_| {
                Err(GpuError::Timeout {
                    what: "Slurm shed".into(),
                    after: bound,
                })
            })
    }

    async fn shed_unbounded(&self, kw: f64, reason: &str) -> Result<ShedOutcome, GpuError> {
        let started = Instant::now();
        let reason = clean_reason(reason);
        let jobs = self.jobs().await?;
        let mut running: Vec<_> = jobs
            .into_iter()
            .filter(|j| j.phase == JobPhase::Running && j.kw > 0)
            .collect();
        let running_kw: f64 = running.iter().map(|j| j.kw as f64).sum();
        let target = (running_kw - kw).max(0.0);
        let budget = self.last_budget_kw().map_or(target, |b| b.min(target));
        self.set_budget_kw(budget).await?;

        running.sort_by(|a, b| b.start_time.cmp(&a.start_time).then(b.id.cmp(&a.id)));
        let mut freed = 0.0;
        let mut actions = Vec::new();
        let mut shed_ids = Vec::new();
        for j in running {
            if freed >= kw {
                break;
            }
            let jkw = j.kw as f64;
            let verb = match self.cfg.shed_mode {
                ShedMode::Requeue => "requeue",
                ShedMode::Suspend => "suspend",
            };
            let out = self.scontrol_raw(&[verb.into(), j.id.to_string()]).await?;
            let action = if out.status.success() {
                freed += jkw;
                shed_ids.push(j.id);
                match self.cfg.shed_mode {
                    ShedMode::Requeue => ShedAction::Requeued {
                        job_id: j.id,
                        kw: jkw,
                    },
                    ShedMode::Suspend => {
                        self.lock().suspended.push(j.id);
                        ShedAction::Suspended {
                            job_id: j.id,
                            kw: jkw,
                        }
                    }
                }
            } else {
                let msg = out.message();
                // The job finished between squeue and scontrol: its power is free anyway.
                if msg.contains("Invalid job id") || msg.contains("already completed") {
                    freed += jkw;
                    ShedAction::AlreadyEnded {
                        job_id: j.id,
                        kw: jkw,
                    }
                } else {
                    ShedAction::Failed {
                        job_id: j.id,
                        kw: jkw,
                        error: msg,
                    }
                }
            };
            tracing::warn!(job = j.id, kw = jkw, reason = %reason, ?action, "GPU job shed");
            actions.push(action);
        }
        let confirmed = self.wait_not_running(&shed_ids).await?;
        Ok(ShedOutcome {
            requested_kw: kw,
            freed_kw: freed,
            confirmed,
            budget_kw: Some(budget),
            actions,
            took: started.elapsed(),
        })
    }

    /// Polls squeue until none of `ids` runs, bounded by `shed_confirm_timeout_ms`.
    async fn wait_not_running(&self, ids: &[u64]) -> Result<bool, GpuError> {
        let deadline = Instant::now() + Duration::from_millis(self.cfg.shed_confirm_timeout_ms);
        loop {
            let jobs = self.jobs().await?;
            let still = jobs
                .iter()
                .any(|j| ids.contains(&j.id) && j.phase == JobPhase::Running);
            if !still {
                return Ok(true);
            }
            if Instant::now() + CONFIRM_POLL > deadline {
                return Ok(false);
            }
            tokio::time::sleep(CONFIRM_POLL).await;
        }
    }

    /// Resumes the jobs this scheduler suspended (`scontrol resume`), returning those resumed.
    /// Jobs that ended meanwhile are forgotten; others that fail stay listed for a retry.
    pub async fn resume_suspended(&self) -> Result<Vec<u64>, GpuError> {
        let ids = std::mem::take(&mut self.lock().suspended);
        let mut resumed = Vec::new();
        let mut keep = Vec::new();
        for id in ids {
            let out = self
                .scontrol_raw(&["resume".into(), id.to_string()])
                .await?;
            if out.status.success() {
                resumed.push(id);
            } else if !out.message().contains("Invalid job id") {
                tracing::warn!(job = id, error = %out.message(), "cannot resume GPU job");
                keep.push(id);
            }
        }
        self.lock().suspended.extend(keep);
        Ok(resumed)
    }

    fn nodes(&self) -> Result<String, GpuError> {
        self.cfg
            .nodes
            .clone()
            .ok_or_else(|| GpuError::Config("no `nodes` configured for drain/resume".into()))
    }

    /// `scontrol update NodeName=<nodes> State=DRAIN Reason=<reason>`: running jobs finish,
    /// nothing new starts on those nodes.
    pub async fn drain_nodes(&self, reason: &str) -> Result<(), GpuError> {
        let reason = clean_reason(reason);
        let reason = if reason.trim().is_empty() {
            "hashshift".to_owned()
        } else {
            reason
        };
        let args = [
            "update".to_owned(),
            format!("NodeName={}", self.nodes()?),
            "State=DRAIN".into(),
            format!("Reason={reason}"),
        ];
        self.scontrol(&args).await.map(drop)
    }

    /// `scontrol update NodeName=<nodes> State=RESUME`.
    pub async fn resume_nodes(&self) -> Result<(), GpuError> {
        let args = [
            "update".to_owned(),
            format!("NodeName={}", self.nodes()?),
            "State=RESUME".into(),
        ];
        self.scontrol(&args).await.map(drop)
    }

    /// Deletes the hold reservation (all licenses to the GPU side): for uninstall and tests,
    /// never used by the arbiter. A missing reservation is fine.
    pub async fn remove_hold(&self) -> Result<(), GpuError> {
        if self.held_licenses().await?.is_none() {
            return Ok(());
        }
        let args = [
            "delete".to_owned(),
            "reservation".into(),
            self.cfg.hold_reservation.clone(),
        ];
        self.scontrol(&args).await?;
        self.lock().budget_kw = None;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_that_scontrol_would_parse_are_refused() {
        let ok = SlurmConfig {
            nodes: Some("gpu[01-16],dgx-1".into()),
            ..SlurmConfig::default()
        };
        assert!(SlurmScheduler::new(ok).is_ok());
        for bad in ["power_kw Flags=MAINT", "a=b", "", "x\ny"] {
            let c = SlurmConfig {
                hold_reservation: bad.into(),
                ..SlurmConfig::default()
            };
            assert!(
                matches!(SlurmScheduler::new(c), Err(GpuError::Config(_))),
                "{bad:?}"
            );
        }
        let c = SlurmConfig {
            command_timeout_ms: 0,
            ..SlurmConfig::default()
        };
        assert!(SlurmScheduler::new(c).is_err());
    }

    #[tokio::test]
    async fn missing_tools_are_typed_errors() {
        let c = SlurmConfig {
            scontrol: "/nonexistent/scontrol".into(),
            squeue: "/nonexistent/squeue".into(),
            ..SlurmConfig::default()
        };
        let s = SlurmScheduler::new(c).expect("valid");
        assert!(matches!(
            s.set_budget_kw(1.0).await,
            Err(GpuError::Spawn { .. })
        ));
        assert!(matches!(s.demand().await, Err(GpuError::Spawn { .. })));
        assert!(matches!(
            s.set_budget_kw(-1.0).await,
            Err(GpuError::InvalidKw { .. })
        ));
        assert!(matches!(s.drain_nodes("x").await, Err(GpuError::Config(_))));
    }
}
