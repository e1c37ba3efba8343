//! The GPU scheduler side of the power arbiter: how hashshift hands power to, and takes it back
//! from, the GPU cluster that shares the site's budget with the ASICs.
//!
//! Three adapters behind one [`GpuScheduler`] enum:
//!
//! | kind | budget knob ([`GpuScheduler::set_budget_kw`]) | demand ([`GpuScheduler::demand`]) | shed ([`GpuScheduler::shed`]) |
//! |---|---|---|---|
//! | [`slurm`] | a license-only reservation holding `total - budget` licenses | `squeue --json`: pending and running jobs' licenses | requeue (or suspend) the newest running jobs holding licenses |
//! | [`webhook`] | `POST {"event":"budget",..}` with bounded retries | last [`GpuScheduler::report_demand`] | `POST {"event":"shed",..}` |
//! | [`command`] | runs a program with `HASHSHIFT_GPU_*` env | last [`GpuScheduler::report_demand`] | runs the program with `HASHSHIFT_GPU_EVENT=shed` |
//!
//! Invariants the integrator relies on:
//! - Every call is bounded in time (subprocess and HTTP timeouts, bounded retries) and returns a
//!   typed [`GpuError`]; nothing here panics on what a subprocess or a peer sends.
//! - The adapters never decide *when* power moves: the arbiter calls `set_budget_kw` to grow the
//!   GPU budget only after mining power is confirmed down (break before make), or to shrink it.
//! - Calls on one scheduler are meant to come from one task (the arbiter's); they take `&self`
//!   and hold no lock across `.await`, so overlapping calls are memory-safe but may interleave
//!   their subprocesses.
//! - Kilowatts are `f64`; Slurm licenses are integers, so a budget is rounded *down* (the GPU
//!   side never gets more than it was granted).

pub mod command;
mod error;
mod process;
pub mod slurm;
pub mod webhook;

use std::sync::Mutex;
use std::time::Duration;

use serde::{Deserialize, Serialize};

pub use command::{CommandConfig, CommandScheduler};
pub use error::GpuError;
pub use slurm::{ShedMode, SlurmConfig, SlurmScheduler};
pub use webhook::{WebhookConfig, WebhookScheduler};

/// Default of `shed_deadline_secs`: how long a GPU shed may take before it is escalated.
pub const DEFAULT_SHED_DEADLINE_SECS: f64 = 120.0;
/// The longest any configured duration may be (one day): longer ones are typos, and a bound
/// this size can never overflow an `Instant`.
pub const MAX_CONFIG_SECS: f64 = 86_400.0;
/// [`MAX_CONFIG_SECS`] in ms, for the adapters' `*_ms` settings.
pub(crate) const MAX_CONFIG_MS: u64 = 86_400_000;

/// What the GPU side wants and uses, in kW.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
#[non_exhaustive]
pub struct GpuDemand {
    /// Power the GPU side is waiting for: pending work that would start if granted.
    pub requested_kw: f64,
    /// Power held by work that is running now.
    pub running_kw: f64,
    /// Power held by suspended work (Slurm keeps a suspended job's licenses; it draws little
    /// until resumed). Always 0 for adapters that only know what was reported.
    pub suspended_kw: f64,
}

impl GpuDemand {
    /// A demand with nothing suspended (what an admin-socket report carries).
    pub fn new(requested_kw: f64, running_kw: f64) -> Self {
        Self {
            requested_kw,
            running_kw,
            suspended_kw: 0.0,
        }
    }
}

/// What one job (or the external system) did in a [`GpuScheduler::shed`].
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum ShedAction {
    /// The Slurm job was requeued: killed, back to PENDING (Slurm delays its eligibility by
    /// about two minutes, reason `BeginTime`), its licenses returned.
    Requeued {
        /// The Slurm job id.
        job_id: u64,
        /// Power its licenses stand for, in kW.
        kw: f64,
    },
    /// The Slurm job was suspended (SIGSTOP); it keeps its licenses until resumed.
    Suspended {
        /// The Slurm job id.
        job_id: u64,
        /// Power its licenses stand for, in kW.
        kw: f64,
    },
    /// The Slurm job ended by itself before it could be shed (its power is free anyway).
    AlreadyEnded {
        /// The Slurm job id.
        job_id: u64,
        /// Power its licenses stood for, in kW.
        kw: f64,
    },
    /// `scontrol` refused to shed this job; the message is Slurm's.
    Failed {
        /// The Slurm job id.
        job_id: u64,
        /// Power its licenses stand for, in kW.
        kw: f64,
        /// What `scontrol` said.
        error: String,
    },
    /// The request went to an external system (webhook or command), which acknowledged it; what
    /// it frees shows up in later demand reports.
    Notified,
}

/// The result of a [`GpuScheduler::shed`].
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct ShedOutcome {
    /// The kW that were asked for.
    pub requested_kw: f64,
    /// The kW known to be freed (jobs requeued/suspended/ended); 0 for webhook and command,
    /// which cannot know.
    pub freed_kw: f64,
    /// True when every shed job was seen out of the running state before the deadline
    /// (Slurm). Always false for webhook and command: only later demand reports confirm.
    pub confirmed: bool,
    /// The GPU budget left after the shed, when the adapter lowered it (Slurm).
    pub budget_kw: Option<f64>,
    /// What was done, job by job.
    pub actions: Vec<ShedAction>,
    /// Wall time the shed took, subprocesses and confirmation included.
    pub took: Duration,
}

impl ShedOutcome {
    /// A shed request passed on (webhook, command): nothing known freed yet; later demand
    /// reports show what the GPU side gave back.
    pub(crate) fn notified(requested_kw: f64, took: Duration) -> Self {
        ShedOutcome {
            requested_kw,
            freed_kw: 0.0,
            confirmed: false,
            budget_kw: None,
            actions: vec![ShedAction::Notified],
            took,
        }
    }
}

/// `[gpu_scheduler]` as it appears in the config file: `kind = "slurm" | "webhook" | "command"`
/// plus that kind's settings (see [`SlurmConfig`], [`WebhookConfig`], [`CommandConfig`]).
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(tag = "kind", rename_all = "lowercase")]
#[non_exhaustive]
pub enum GpuSchedulerConfig {
    /// A Slurm cluster driven through `scontrol`/`squeue` on this machine.
    Slurm(SlurmConfig),
    /// An HTTP endpoint that receives budget/shed events.
    Webhook(WebhookConfig),
    /// A local program run on each budget/shed event.
    Command(CommandConfig),
}

/// The GPU scheduler the arbiter talks to: one of the adapters.
#[derive(Debug)]
#[non_exhaustive]
pub enum GpuScheduler {
    /// See [`SlurmScheduler`].
    Slurm(SlurmScheduler),
    /// See [`WebhookScheduler`].
    Webhook(WebhookScheduler),
    /// See [`CommandScheduler`].
    Command(CommandScheduler),
}

impl GpuSchedulerConfig {
    /// Checks the settings the way [`GpuScheduler::from_config`] does (no I/O), so that
    /// `check-config` refuses what `run` would.
    pub fn validate(&self) -> Result<(), GpuError> {
        GpuScheduler::from_config(self.clone()).map(drop)
    }

    /// Replaces the secrets these settings hold with `with`: the webhook's `authorization`
    /// and the command's environment values (names are kept).
    pub fn redact_secrets(&mut self, with: &str) {
        match self {
            Self::Slurm(_) => {}
            Self::Webhook(c) => {
                if let Some(a) = &mut c.authorization {
                    *a = with.to_owned();
                }
            }
            Self::Command(c) => {
                for v in c.env.values_mut() {
                    *v = with.to_owned();
                }
            }
        }
    }

    /// How long a shed may take (until the scheduler reports in-use at or below the grant)
    /// before it is escalated: `shed_deadline_secs`.
    pub fn shed_deadline(&self) -> Duration {
        let secs = match self {
            Self::Slurm(c) => c.shed_deadline_secs,
            Self::Webhook(c) => c.shed_deadline_secs,
            Self::Command(c) => c.shed_deadline_secs,
        };
        // Validated in from_config; clamp anyway so that a config built in code cannot panic.
        Duration::from_secs_f64(clamp_secs(secs))
    }
}

impl GpuScheduler {
    /// Builds the adapter a config describes (validates it; does no I/O).
    pub fn from_config(config: GpuSchedulerConfig) -> Result<Self, GpuError> {
        Ok(match config {
            GpuSchedulerConfig::Slurm(c) => Self::Slurm(SlurmScheduler::new(c)?),
            GpuSchedulerConfig::Webhook(c) => Self::Webhook(WebhookScheduler::new(c)?),
            GpuSchedulerConfig::Command(c) => Self::Command(CommandScheduler::new(c)?),
        })
    }

    /// `"slurm"`, `"webhook"` or `"command"` (for logs and `ctl power`).
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Slurm(_) => "slurm",
            Self::Webhook(_) => "webhook",
            Self::Command(_) => "command",
        }
    }

    /// Sets the power the GPU cluster may use now. Call it to grow the budget only after the
    /// mining power it replaces is confirmed down (break before make), or to shrink it.
    pub async fn set_budget_kw(&self, kw: f64) -> Result<(), GpuError> {
        match self {
            Self::Slurm(s) => s.set_budget_kw(kw).await,
            Self::Webhook(w) => w.set_budget_kw(kw).await,
            Self::Command(c) => c.set_budget_kw(kw).await,
        }
    }

    /// What the GPU side wants and uses now.
    pub async fn demand(&self) -> Result<GpuDemand, GpuError> {
        match self {
            Self::Slurm(s) => s.demand().await,
            Self::Webhook(w) => Ok(w.demand()),
            Self::Command(c) => Ok(c.demand()),
        }
    }

    /// The longest one `set_budget_kw` or `shed` call can take, from the adapter's own
    /// settings (each adapter enforces it itself; a caller may add a margin as a safety net).
    pub fn call_bound(&self) -> Duration {
        match self {
            Self::Slurm(s) => s.call_bound(),
            Self::Webhook(w) => w.call_bound(),
            Self::Command(c) => c.call_bound(),
        }
    }

    /// Asks the GPU side to give `kw` back now (grid curtailment that shedding mining alone
    /// cannot meet). See each adapter for exactly what it does and how long it takes.
    pub async fn shed(&self, kw: f64, reason: &str) -> Result<ShedOutcome, GpuError> {
        match self {
            Self::Slurm(s) => s.shed(kw, reason).await,
            Self::Webhook(w) => w.shed(kw, reason).await,
            Self::Command(c) => c.shed(kw, reason).await,
        }
    }

    /// Records what the GPU side reported through the admin socket (webhook and command
    /// adapters; Slurm reads its own queue and answers [`GpuError::Unsupported`]).
    pub fn report_demand(&self, demand: GpuDemand) -> Result<(), GpuError> {
        check_kw(demand.requested_kw)?;
        check_kw(demand.running_kw)?;
        check_kw(demand.suspended_kw)?;
        match self {
            Self::Slurm(_) => Err(GpuError::Unsupported("slurm")),
            Self::Webhook(w) => {
                w.report_demand(demand);
                Ok(())
            }
            Self::Command(c) => {
                c.report_demand(demand);
                Ok(())
            }
        }
    }
}

/// Rejects kW figures that would make no sense on the wire.
pub(crate) fn check_kw(kw: f64) -> Result<f64, GpuError> {
    if kw.is_finite() && kw >= 0.0 {
        Ok(kw)
    } else {
        Err(GpuError::InvalidKw { kw })
    }
}

/// The last demand an external GPU side reported (webhook and command adapters).
#[derive(Debug, Default)]
pub(crate) struct ReportedDemand(Mutex<GpuDemand>);

impl ReportedDemand {
    /// The demand last reported (zero until the first report).
    pub(crate) fn get(&self) -> GpuDemand {
        // A poisoned lock only means a panic elsewhere mid-copy of a Copy value: keep going.
        *self.0.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Replaces the demand with a new report.
    pub(crate) fn set(&self, d: GpuDemand) {
        *self.0.lock().unwrap_or_else(|p| p.into_inner()) = d;
    }
}

/// Checks `shed_deadline_secs`: finite, > 0, at most a day.
pub(crate) fn check_shed_deadline(secs: f64) -> Result<(), GpuError> {
    if secs.is_finite() && secs > 0.0 && secs <= MAX_CONFIG_SECS {
        Ok(())
    } else {
        Err(GpuError::Config(format!(
            "shed_deadline_secs must be > 0 and at most {MAX_CONFIG_SECS} (one day), got {secs}"
        )))
    }
}

/// Checks a `*_ms` setting: > 0, at most a day.
pub(crate) fn check_ms(what: &str, ms: u64) -> Result<(), GpuError> {
    if ms > 0 && ms <= MAX_CONFIG_MS {
        Ok(())
    } else {
        Err(GpuError::Config(format!(
            "{what} must be > 0 and at most {MAX_CONFIG_MS} (one day), got {ms}"
        )))
    }
}

fn clamp_secs(secs: f64) -> f64 {
    if secs.is_finite() && secs > 0.0 {
        secs.min(MAX_CONFIG_SECS)
    } else {
        DEFAULT_SHED_DEADLINE_SECS
    }
}

/// Reasons go into argv elements and JSON only, never a shell; this keeps them one short line.
pub(crate) fn clean_reason(reason: &str) -> String {
    reason
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .take(200)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_kinds_parse_from_toml() {
        let c: GpuSchedulerConfig = toml::from_str(
            "kind = \"slurm\"\nlicense = \"power_kw\"\nhold_reservation = \"h\"\nnodes = \"gpu[1-4]\"\n",
        )
        .expect("slurm config");
        let GpuSchedulerConfig::Slurm(s) = c else {
            panic!("not slurm: {c:?}")
        };
        assert_eq!(s.hold_reservation, "h");
        assert_eq!(s.nodes.as_deref(), Some("gpu[1-4]"));
        assert_eq!(s.total_licenses, None);

        let c: GpuSchedulerConfig = toml::from_str(
            "kind = \"webhook\"\nurl = \"http://127.0.0.1:9/x\"\nmax_attempts = 2\n",
        )
        .expect("webhook config");
        assert!(matches!(c, GpuSchedulerConfig::Webhook(ref w) if w.max_attempts == 2));

        let c: GpuSchedulerConfig = toml::from_str(
            "kind = \"command\"\nprogram = \"/bin/true\"\nargs = [\"a\"]\n[env]\nX = \"1\"\n",
        )
        .expect("command config");
        assert!(matches!(c, GpuSchedulerConfig::Command(ref c) if c.args == ["a"]));

        assert!(toml::from_str::<GpuSchedulerConfig>("kind = \"slurm\"\nbogus = 1\n").is_err());
        assert!(toml::from_str::<GpuSchedulerConfig>("kind = \"pbs\"\n").is_err());
    }

    #[test]
    fn shed_deadlines_and_timeouts_are_range_checked() {
        let base = [
            "kind = \"slurm\"\n",
            "kind = \"webhook\"\nurl = \"http://127.0.0.1:9/x\"\n",
            "kind = \"command\"\nprogram = \"/bin/true\"\n",
        ];
        for b in base {
            let c: GpuSchedulerConfig = toml::from_str(b).expect(b);
            c.validate().expect(b);
            assert_eq!(c.shed_deadline(), Duration::from_secs(120), "{b}");
            let c: GpuSchedulerConfig =
                toml::from_str(&format!("{b}shed_deadline_secs = 7.5\n")).expect(b);
            assert_eq!(c.shed_deadline(), Duration::from_millis(7_500), "{b}");
            for bad in ["0.0", "-1.0", "nan", "inf", "86401.0"] {
                let text = format!("{b}shed_deadline_secs = {bad}\n");
                let c: GpuSchedulerConfig = toml::from_str(&text).expect(&text);
                let e = c.validate().expect_err(&text).to_string();
                assert!(e.contains("shed_deadline_secs"), "{text}: {e}");
            }
        }
        for bad in [
            "kind = \"slurm\"\ncommand_timeout_ms = 86400001\n",
            "kind = \"slurm\"\nshed_confirm_timeout_ms = 18446744073709551615\n",
            "kind = \"webhook\"\nurl = \"http://127.0.0.1:9/x\"\ntimeout_ms = 18446744073709551615\n",
            "kind = \"webhook\"\nurl = \"http://127.0.0.1:9/x\"\nmax_attempts = 1000\n",
            "kind = \"webhook\"\nurl = \"http://127.0.0.1:9/x\"\nbackoff_max_ms = 86400001\n",
            "kind = \"command\"\nprogram = \"/bin/true\"\ntimeout_ms = 0\n",
        ] {
            let c: GpuSchedulerConfig = toml::from_str(bad).expect(bad);
            assert!(c.validate().is_err(), "{bad}");
        }
    }

    #[test]
    fn every_adapter_states_its_call_bound() {
        let bound = |text: &str| {
            let c: GpuSchedulerConfig = toml::from_str(text).expect(text);
            GpuScheduler::from_config(c).expect(text).call_bound()
        };
        // 4 attempts × 5 s + 3 waits of at most 4 s.
        assert_eq!(
            bound("kind = \"webhook\"\nurl = \"http://127.0.0.1:9/x\"\n"),
            Duration::from_secs(32)
        );
        assert_eq!(
            bound("kind = \"command\"\nprogram = \"/bin/true\"\ntimeout_ms = 1500\n"),
            Duration::from_millis(1_500)
        );
        // 17 × 10 s + 60 s of confirmation + one 200 ms poll.
        assert_eq!(bound("kind = \"slurm\"\n"), Duration::from_millis(230_200));
    }

    #[test]
    fn kw_checks_and_reasons() {
        assert!(check_kw(0.0).is_ok());
        assert!(check_kw(-1.0).is_err());
        assert!(check_kw(f64::NAN).is_err());
        assert!(check_kw(f64::INFINITY).is_err());
        assert_eq!(clean_reason("grid\nevent\0x"), "grid event x");
        assert_eq!(clean_reason(&"a".repeat(500)).len(), 200);
    }
}
