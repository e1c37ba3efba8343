//! The command-hook adapter: each budget or shed event runs a configured program (no shell)
//! with its configured args and env plus:
//!
//! | variable | value |
//! |---|---|
//! | `HASHSHIFT_GPU_EVENT` | `budget` or `shed` |
//! | `HASHSHIFT_GPU_BUDGET_KW` | the new budget, kW (budget events) |
//! | `HASHSHIFT_GPU_SHED_KW` | the kW to give back (shed events) |
//! | `HASHSHIFT_GPU_REASON` | why (shed events; one line, ≤ 200 chars) |
//!
//! The program must exit 0 within `timeout_ms` (it is killed otherwise) and print at most
//! 64 KiB; any other exit is [`GpuError::Exit`] with its stderr. Demand comes from the admin
//! socket ([`CommandScheduler::report_demand`]), as for the webhook.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use super::process;
use super::{
    GpuDemand, GpuError, ReportedDemand, ShedOutcome, check_kw, check_ms, check_shed_deadline,
    clean_reason,
};

/// What the hook may print (it is logged on failure, not parsed).
const MAX_OUTPUT: usize = 64 * 1024;

/// `[gpu_scheduler] kind = "command"` settings.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
#[non_exhaustive]
pub struct CommandConfig {
    /// The program to run (absolute path advised; looked up in `PATH` otherwise).
    pub program: PathBuf,
    /// Its arguments, passed as they are.
    pub args: Vec<String>,
    /// Extra environment variables.
    pub env: BTreeMap<String, String>,
    /// How long one run may take, in ms (the hook is killed after it).
    pub timeout_ms: u64,
    /// How long a shed may take until the GPU side has given the power back, in seconds,
    /// before it is escalated (audit `gpu`/`shed-overdue`, a metric); retries go on after.
    pub shed_deadline_secs: f64,
}

impl Default for CommandConfig {
    fn default() -> Self {
        Self {
            program: PathBuf::new(),
            args: Vec::new(),
            env: BTreeMap::new(),
            timeout_ms: 30_000,
            shed_deadline_secs: super::DEFAULT_SHED_DEADLINE_SECS,
        }
    }
}

impl CommandConfig {
    /// Defaults with this program.
    pub fn new(program: impl Into<PathBuf>) -> Self {
        Self {
            program: program.into(),
            ..Self::default()
        }
    }
}

/// The command-hook adapter. See the module doc.
#[derive(Debug)]
pub struct CommandScheduler {
    cfg: CommandConfig,
    reported: ReportedDemand,
}

impl CommandScheduler {
    /// Validates the config (no I/O).
    pub fn new(cfg: CommandConfig) -> Result<Self, GpuError> {
        if cfg.program.as_os_str().is_empty() {
            return Err(GpuError::Config("command hook: no program".into()));
        }
        check_ms("command hook timeout_ms", cfg.timeout_ms)?;
        check_shed_deadline(cfg.shed_deadline_secs)?;
        Ok(Self {
            cfg,
            reported: ReportedDemand::default(),
        })
    }

    /// The longest one call can take: `timeout_ms` (the hook is killed then).
    pub fn call_bound(&self) -> Duration {
        Duration::from_millis(self.cfg.timeout_ms)
    }

    /// Runs the hook with `HASHSHIFT_GPU_EVENT=budget HASHSHIFT_GPU_BUDGET_KW=<kw>`.
    pub async fn set_budget_kw(&self, kw: f64) -> Result<(), GpuError> {
        let kw = check_kw(kw)?;
        self.run(vec![
            ("HASHSHIFT_GPU_EVENT".into(), "budget".into()),
            ("HASHSHIFT_GPU_BUDGET_KW".into(), kw.to_string()),
        ])
        .await
    }

    /// Runs the hook with `HASHSHIFT_GPU_EVENT=shed HASHSHIFT_GPU_SHED_KW=<kw>
    /// HASHSHIFT_GPU_REASON=<reason>`; unconfirmed (`Notified`), like the webhook.
    pub async fn shed(&self, kw: f64, reason: &str) -> Result<ShedOutcome, GpuError> {
        let kw = check_kw(kw)?;
        let started = Instant::now();
        self.run(vec![
            ("HASHSHIFT_GPU_EVENT".into(), "shed".into()),
            ("HASHSHIFT_GPU_SHED_KW".into(), kw.to_string()),
            ("HASHSHIFT_GPU_REASON".into(), clean_reason(reason)),
        ])
        .await?;
        Ok(ShedOutcome::notified(kw, started.elapsed()))
    }

    /// The demand last reported through [`Self::report_demand`] (zero until then).
    pub fn demand(&self) -> GpuDemand {
        self.reported.get()
    }

    /// Records what the GPU side reported (the admin socket calls this).
    pub fn report_demand(&self, demand: GpuDemand) {
        self.reported.set(demand);
    }

    async fn run(&self, mut env: Vec<(String, String)>) -> Result<(), GpuError> {
        // Ours last, so a configured variable cannot override the event.
        let mut all: Vec<(String, String)> = self
            .cfg
            .env
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        all.append(&mut env);
        let timeout = Duration::from_millis(self.cfg.timeout_ms);
        let out = process::run_ok(
            self.cfg.program.as_os_str(),
            &self.cfg.args,
            &all,
            timeout,
            MAX_OUTPUT,
        )
        .await?;
        tracing::info!(
            program = %self.cfg.program.display(),
            stdout = %String::from_utf8_lossy(&out.stdout).trim(),
            "GPU command hook ran"
        );
        Ok(())
    }
}
