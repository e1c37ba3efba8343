//! Power control: the [`crate::control::arbiter`] driven against the real world. One task
//! ([`controller`]) owns the arbiter and the rig registry ([`rigs`]); it carries out the
//! arbiter's actions through the rigs' management APIs and the GPU scheduler ([`ports`]),
//! confirms every sleep before the power it frees is granted (firmware status, then no share
//! for `quiet_secs`; only then does the proxy stop giving the rig work), records every
//! decision in the audit log, and persists the plan so a restart never re-energises a rig on
//! its own.
//!
//! The rest of the proxy talks to it through a [`PowerHandle`]: requests over a bounded
//! channel, the operator view (`ctl power`, the power columns of `ctl rigs`) through a
//! `watch`.

pub mod adapters;
pub mod controller;
pub mod ops;
pub mod persist;
pub mod ports;
pub mod rigs;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use futures_util::stream::FuturesUnordered;
use serde::Serialize;
use tokio::sync::{mpsc, oneshot, watch};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::info;

use self::controller::{Controller, Reply, wall_now};
use self::ports::GpuControl;
use self::rigs::{ControlFactory, PowerSource, Registry};
use crate::config::Config;
use crate::control::arbiter::{
    Arbiter, ArbiterError, Curtailment, Operator, OperatorCommand, PowerSnapshot, RigId, RigState,
    Settings, Watts,
};
use crate::control::audit::{AuditEvent, AuditLog};
use crate::control::history::{PowerHistory, SAMPLE_EVERY};
use crate::upstream::manager::PoolManager;

/// A rig's power side, for `ctl rigs`.
#[derive(Clone, Debug, Serialize)]
pub struct RigPower {
    /// The arbiter's state (shown as the rig's `state`).
    #[serde(skip)]
    pub state: RigState,
    /// Group name.
    pub group: String,
    /// Model.
    pub model: Option<String>,
    /// Power figure (W).
    pub power_w: f64,
    /// Where the figure comes from.
    pub power_source: Option<PowerSource>,
    /// Its age (s; `None` for the nameplate).
    pub power_age_secs: Option<f64>,
    /// Who drained it and why, if an operator did.
    pub pinned: Option<String>,
    /// Whether its last command went unconfirmed.
    pub escalated: bool,
    /// Its management API.
    pub management: Option<String>,
}

/// What operators see of power control.
#[derive(Clone, Debug)]
pub struct PowerView {
    /// The power picture.
    pub snapshot: PowerSnapshot,
    /// Each rig's power side.
    pub rigs: HashMap<RigId, RigPower>,
}

/// A request to the controller.
pub enum Request {
    /// An operator drain or resume.
    Operator {
        command: OperatorCommand,
        operator: Operator,
        reply: Reply,
    },
    /// Resume every operator-drained rig.
    ResumeAll { operator: Operator, reply: Reply },
    /// A grid curtailment.
    Curtail { curtailment: Curtailment },
    /// End the curtailment.
    CurtailClear,
    /// The GPU side asks for this many kW in total (through the admin socket).
    GpuRequest { kw: f64 },
    /// A fresh view, after everything queued before it.
    View {
        reply: oneshot::Sender<Arc<PowerView>>,
    },
}

/// How the rest of the proxy reaches the controller.
#[derive(Clone)]
pub struct PowerHandle {
    tx: mpsc::Sender<Request>,
    view: watch::Receiver<Arc<PowerView>>,
    history: Arc<PowerHistory>,
    drain_to_confirmed: Arc<crate::telemetry::Histogram>,
}

/// Why a request did not go through.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PowerError {
    /// The controller has stopped (shutdown).
    #[error("power control is shutting down")]
    Stopped,
    /// The arbiter refused it.
    #[error("{0}")]
    Refused(String),
}

impl PowerHandle {
    /// The latest view (at most ~100 ms old).
    pub fn view(&self) -> Arc<PowerView> {
        self.view.borrow().clone()
    }

    /// The power history (the NOC page's chart), sampled while power control runs.
    pub fn history(&self) -> &Arc<PowerHistory> {
        &self.history
    }

    /// Sleep commanded → rig confirmed asleep, so far (metrics).
    pub fn drain_to_confirmed(&self) -> crate::telemetry::HistogramSnapshot {
        self.drain_to_confirmed.snapshot()
    }

    /// A view that reflects every request sent before.
    pub async fn fresh_view(&self) -> Result<Arc<PowerView>, PowerError> {
        let (reply, rx) = oneshot::channel();
        self.send(Request::View { reply }).await?;
        rx.await.map_err(|_| PowerError::Stopped)
    }

    async fn send(&self, r: Request) -> Result<(), PowerError> {
        self.tx.send(r).await.map_err(|_| PowerError::Stopped)
    }

    /// An operator drain or resume; returns the rigs it pinned or unpinned.
    pub async fn operator(
        &self,
        command: OperatorCommand,
        operator: Operator,
    ) -> Result<Vec<RigId>, PowerError> {
        let (reply, rx) = oneshot::channel();
        self.send(Request::Operator {
            command,
            operator,
            reply,
        })
        .await?;
        rx.await
            .map_err(|_| PowerError::Stopped)?
            .map_err(PowerError::Refused)
    }

    /// Resumes every operator-drained rig.
    pub async fn resume_all(&self, operator: Operator) -> Result<Vec<RigId>, PowerError> {
        let (reply, rx) = oneshot::channel();
        self.send(Request::ResumeAll { operator, reply }).await?;
        rx.await
            .map_err(|_| PowerError::Stopped)?
            .map_err(PowerError::Refused)
    }

    /// Starts (or replaces) a curtailment: the cap is `kw` until `until_unix`.
    pub async fn curtail(
        &self,
        kw: f64,
        until_unix: u64,
        source: String,
    ) -> Result<(), PowerError> {
        let curtailment = Curtailment {
            cap: Watts::from_kw(kw),
            until: Some(Duration::from_secs(until_unix)),
            source,
        };
        self.send(Request::Curtail { curtailment }).await
    }

    /// Ends the curtailment.
    pub async fn curtail_clear(&self) -> Result<(), PowerError> {
        self.send(Request::CurtailClear).await
    }

    /// The GPU side asks for `kw` in total.
    pub async fn gpu_request(&self, kw: f64) -> Result<(), PowerError> {
        self.send(Request::GpuRequest { kw }).await
    }
}

/// The arbiter's settings from `[power]`.
pub fn settings(p: &crate::config::Power) -> Settings {
    Settings {
        site_cap: Watts::from_kw(p.site_cap_kw),
        headroom: Watts::from_kw(p.headroom_kw),
        resume_batch: p.resume_batch,
        resume_interval: Duration::from_secs_f64(p.resume_interval_secs),
        confirm_deadline: Duration::from_secs_f64(p.confirm_deadline_secs),
        wake_deadline: Duration::from_secs_f64(p.wake_deadline_secs),
        hysteresis: Watts::from_kw(p.hysteresis_kw),
        drain_margin: p.drain_margin,
        replace_after: Duration::from_secs_f64(p.replace_after_secs),
    }
}

/// Starts power control when `[power]` is configured: restores the persisted plan from the
/// state directory, and runs the controller and the GPU budget writer on `tracker`.
pub fn start(
    config: &Config,
    manager: Arc<PoolManager>,
    audit: Arc<AuditLog>,
    factory: ControlFactory,
    gpu: Arc<dyn GpuControl>,
    shutdown: CancellationToken,
    tracker: &TaskTracker,
) -> Result<Option<PowerHandle>, ArbiterError> {
    let Some(p) = &config.power else {
        return Ok(None);
    };
    let settings = settings(p);
    let state_file = config
        .admin
        .as_ref()
        .and_then(|a| a.state_dir.as_deref())
        .map(|d| d.join(persist::FILE_NAME));
    let restored = state_file.as_deref().and_then(controller::restore_state);
    let now = wall_now();
    let arbiter = match restored {
        Some(state) => {
            let rigs = state.rig_count();
            let a = Arbiter::restore(settings, state, now)?;
            audit.record(AuditEvent::now(
                "power",
                "restored",
                format!("{rigs} rigs, GPU grant {:.1} kW", a.gpu_granted().kw()),
                Some("restart: asleep rigs stay asleep".into()),
            ));
            a
        }
        None => Arbiter::new(settings, now)?,
    };
    let (tx, requests) = mpsc::channel(256);
    let drain_to_confirmed = Arc::new(crate::telemetry::Histogram::new(
        crate::telemetry::histogram::DRAIN_BUCKETS,
    ));
    // The grant in force (0, or the persisted one) is applied at once: until then the
    // scheduler may hand out power mining is using.
    let (budget_tx, budget_rx) = watch::channel(Some(arbiter.gpu_granted().kw()));
    let (view_tx, view) = watch::channel(Arc::new(PowerView {
        snapshot: arbiter.snapshot(),
        rigs: HashMap::new(),
    }));
    info!(cap_kw = p.site_cap_kw, gpu = %gpu.describe(), "power control started");
    let controller = Controller {
        arbiter,
        registry: Registry::new(
            config.rig_group.clone(),
            &config.rig,
            factory,
            Duration::from_secs_f64(p.status_poll_secs * 3.0),
        ),
        manager,
        gpu: gpu.clone(),
        budget_tx,
        audit: audit.clone(),
        state_file,
        view_tx,
        confirm_deadline: Duration::from_secs_f64(p.confirm_deadline_secs),
        wake_deadline: Duration::from_secs_f64(p.wake_deadline_secs),
        status_every: Duration::from_secs_f64(p.status_poll_secs),
        quiet: Duration::from_secs_f64(p.quiet_secs),
        ops: FuturesUnordered::new(),
        status_in_flight: 0,
        last_status: HashMap::new(),
        last_demand: None,
        last_persisted: None,
        last_persist_at: None,
        last_publish_at: None,
        polled_demand: true,
        sleep_commanded: HashMap::new(),
        drain_to_confirmed: drain_to_confirmed.clone(),
    };
    tracker.spawn(controller::apply_budgets(
        gpu,
        budget_rx,
        audit,
        shutdown.clone(),
    ));
    let history = PowerHistory::standard();
    tracker.spawn(
        history
            .clone()
            .run(view.clone(), SAMPLE_EVERY, shutdown.clone()),
    );
    tracker.spawn(controller.run(requests, shutdown));
    Ok(Some(PowerHandle {
        tx,
        view,
        history,
        drain_to_confirmed,
    }))
}
