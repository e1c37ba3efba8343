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
mod error;
#[cfg(test)]
pub(crate) mod fakes;
pub mod ops;
pub mod path;
pub mod pdu_adapter;
pub mod persist;
pub mod ports;
pub mod rigs;
pub mod shed;

use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Duration;

use futures_util::stream::FuturesUnordered;
use serde::Serialize;
use tokio::sync::{mpsc, oneshot, watch};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{info, warn};

use self::controller::{Controller, Reply};
use self::ports::{GpuControl, OutletFactory};
use self::rigs::{ControlFactory, Identity, IdentitySettings, PowerSource, Registry};
use crate::config::Config;
use crate::control::arbiter::{
    Arbiter, Curtailment, Operator, OperatorCommand, PowerSnapshot, RigId, RigState, Settings,
    Watts,
};
use crate::control::audit::{AuditEvent, AuditLog};
use crate::control::history::{PowerHistory, SAMPLE_EVERY};
use crate::control::limits;
use crate::pool_link::report::Fleet;
use crate::time::since_epoch;

pub use self::error::{PowerError, StartError};

/// A rig's power side, for `ctl rigs`.
#[derive(Clone, Debug, Serialize)]
pub struct RigPower {
    /// The arbiter's state (shown as the rig's `state`).
    #[serde(skip)]
    pub state: RigState,
    /// Group name.
    pub group: String,
    /// Its group's model name, if the config gives one.
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
    /// Its controls (`luxos 10.0.1.7:4028 + pdu-a outlet 7`).
    pub management: Option<String>,
    /// How it is slept, for operators: the firmware kind (`luxos`), `antminer+pdu` (firmware,
    /// and an outlet as the escalation), `pdu` (the outlet only), `none`; `pdu-cut` while its
    /// outlet is off because hashshift cut it.
    pub control: String,
    /// How it is known to be a machine (`listed`, `answered`, `unverified`).
    pub identity: Option<Identity>,
    /// Connections from another address that claimed its worker name.
    pub identity_conflicts: u64,
    /// The address of the last of them.
    pub last_conflict: Option<SocketAddr>,
}

/// Counters of the registry's identity rules (metrics).
#[derive(Debug, Default)]
pub struct IdentityCounters {
    /// Connections that claimed a known rig's worker name from another address.
    pub conflicts: AtomicU64,
    /// Workers counted in their address's overflow rig (`max_rigs_per_address`).
    pub refused_per_address: AtomicU64,
    /// Workers not counted because the inventory is full (`MAX_RIGS`).
    pub refused_max_rigs: AtomicU64,
    /// Unverified rigs forgotten after `forget_unverified_secs`.
    pub forgotten_unverified: AtomicU64,
    /// Rigs forgotten by an operator (`ctl forget`).
    pub forgotten_operator: AtomicU64,
}

/// A copy of [`IdentityCounters`].
#[derive(Clone, Copy, Debug, Default, Serialize)]
pub struct IdentityFigures {
    /// See [`IdentityCounters::conflicts`].
    pub identity_conflicts: u64,
    /// See [`IdentityCounters::refused_per_address`].
    pub refused_per_address: u64,
    /// See [`IdentityCounters::refused_max_rigs`].
    pub refused_max_rigs: u64,
    /// See [`IdentityCounters::forgotten_unverified`].
    pub forgotten_unverified: u64,
    /// See [`IdentityCounters::forgotten_operator`].
    pub forgotten_operator: u64,
}

impl IdentityCounters {
    /// The counts now.
    pub fn figures(&self) -> IdentityFigures {
        IdentityFigures {
            identity_conflicts: self.conflicts.load(Relaxed),
            refused_per_address: self.refused_per_address.load(Relaxed),
            refused_max_rigs: self.refused_max_rigs.load(Relaxed),
            forgotten_unverified: self.forgotten_unverified.load(Relaxed),
            forgotten_operator: self.forgotten_operator.load(Relaxed),
        }
    }
}

/// What operators see of power control.
#[derive(Clone, Debug)]
pub struct PowerView {
    /// The power picture.
    pub snapshot: PowerSnapshot,
    /// Each rig's power side.
    pub rigs: HashMap<RigId, RigPower>,
    /// Which rig each connected miner counts as (a worker name is not always its rig: a
    /// claim from another address, or an address's overflow).
    pub conn_rigs: HashMap<crate::pool_link::ConnId, RigId>,
    /// The GPU shed being carried through, and counts (metrics).
    pub gpu_shed: shed::ShedStatus,
    /// PDU cuts so far (metrics).
    pub pdu_cuts: PduCuts,
}

/// PDU cuts (escalations of sleeps the firmware did not carry out) since start.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct PduCuts {
    /// Outlets switched off and confirmed off.
    pub done: u64,
    /// Cuts that failed (the PDU refused, or the outlet did not read off in time).
    pub failed: u64,
}

/// A request to the controller.
pub enum Request {
    /// An operator drain or resume.
    Operator {
        /// What to drain or resume.
        command: OperatorCommand,
        /// Who asks and why (audit log, pins).
        operator: Operator,
        /// Gets the rigs pinned or unpinned, or why the arbiter refused.
        reply: Reply,
    },
    /// Resume every operator-drained rig.
    ResumeAll {
        /// Who asks and why (audit log).
        operator: Operator,
        /// Gets the rigs unpinned.
        reply: Reply,
    },
    /// A grid curtailment.
    Curtail {
        /// The lower cap and when it ends.
        curtailment: Curtailment,
    },
    /// End the curtailment.
    CurtailClear,
    /// The GPU side asks for this many kW in total (through the admin socket).
    GpuRequest {
        /// Total power the GPU side wants, in kW.
        kw: f64,
    },
    /// A fresh view, after everything queued before it.
    View {
        /// Gets the view.
        reply: oneshot::Sender<Arc<PowerView>>,
    },
    /// Remove a rig an operator knows is gone (refused while connected).
    Forget {
        /// The rig to remove.
        rig: RigId,
        /// Who asks and why (audit log).
        operator: Operator,
        /// Gets the rig removed, or why it was refused.
        reply: Reply,
    },
}

/// How the rest of the proxy reaches the controller.
#[derive(Clone)]
pub struct PowerHandle {
    tx: mpsc::Sender<Request>,
    view: watch::Receiver<Arc<PowerView>>,
    history: Arc<PowerHistory>,
    drain_to_confirmed: Arc<crate::telemetry::Histogram>,
    identity: Arc<IdentityCounters>,
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

    /// Identity conflicts, refused and forgotten rigs so far (metrics, `ctl power`).
    pub fn identity(&self) -> IdentityFigures {
        self.identity.figures()
    }

    /// Removes a rig an operator knows is gone; refused while it is connected.
    pub async fn forget(&self, rig: RigId, operator: Operator) -> Result<Vec<RigId>, PowerError> {
        self.ask(|reply| Request::Forget {
            rig,
            operator,
            reply,
        })
        .await
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

    /// Sends a request that carries a [`Reply`] and waits for the controller's answer.
    async fn ask(&self, request: impl FnOnce(Reply) -> Request) -> Result<Vec<RigId>, PowerError> {
        let (reply, rx) = oneshot::channel();
        self.send(request(reply)).await?;
        rx.await
            .map_err(|_| PowerError::Stopped)?
            .map_err(PowerError::Refused)
    }

    /// An operator drain or resume; returns the rigs it pinned or unpinned.
    pub async fn operator(
        &self,
        command: OperatorCommand,
        operator: Operator,
    ) -> Result<Vec<RigId>, PowerError> {
        self.ask(|reply| Request::Operator {
            command,
            operator,
            reply,
        })
        .await
    }

    /// Resumes every operator-drained rig.
    pub async fn resume_all(&self, operator: Operator) -> Result<Vec<RigId>, PowerError> {
        self.ask(|reply| Request::ResumeAll { operator, reply })
            .await
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

/// Where the control plane finds power control: fixed for a single instance; in a cluster,
/// filled while this instance leads and emptied when it stops leading.
#[derive(Clone, Default)]
pub struct PowerSlot(Arc<std::sync::RwLock<Option<PowerHandle>>>);

impl PowerSlot {
    /// A slot holding `handle` (a single instance: set once, at start).
    pub fn fixed(handle: Option<PowerHandle>) -> Self {
        PowerSlot(Arc::new(std::sync::RwLock::new(handle)))
    }

    /// Power control here now, if it runs on this instance.
    pub fn get(&self) -> Option<PowerHandle> {
        self.0.read().ok().and_then(|h| h.clone())
    }

    /// Sets (or empties) it.
    pub fn set(&self, handle: Option<PowerHandle>) {
        if let Ok(mut h) = self.0.write() {
            *h = handle;
        }
    }
}

/// The arbiter's settings from `[power]`.
pub fn settings(p: &crate::config::Power) -> Settings {
    Settings {
        site_cap: Watts::from_kw(p.site_cap_kw),
        headroom: Watts::from_kw(p.headroom_kw),
        resume_batch: p.resume_batch,
        resume_interval: limits::secs(p.resume_interval_secs),
        confirm_deadline: limits::secs(p.confirm_deadline_secs),
        wake_deadline: limits::secs(p.wake_deadline_secs),
        hysteresis: Watts::from_kw(p.hysteresis_kw),
        drain_margin: p.drain_margin,
        replace_after: limits::secs(p.replace_after_secs),
    }
}

/// Moves the plan at `path` aside to `power.json.bad-<unix seconds>` (kept for a post-mortem)
/// and records that in the audit log. No file: nothing to move, recorded as well.
fn reset_state(path: &std::path::Path, audit: &AuditLog) -> Result<(), StartError> {
    let who = format!(
        "{} (hashshift run --reset-power-state)",
        std::env::var("USER").unwrap_or_else(|_| "operator".to_owned())
    );
    let why = Some("operator reset the power state: every rig starts unknown, GPU grant 0".into());
    if !path.exists() {
        audit.record(AuditEvent::now(
            who,
            "power-state-reset",
            format!("no {} to move aside", path.display()),
            why,
        ));
        return Ok(());
    }
    let stamp = since_epoch().as_secs();
    let mut aside = path.with_file_name(format!("{}.bad-{stamp}", persist::FILE_NAME));
    // Two resets within a second must not overwrite the first file moved aside.
    let mut n = 1;
    while aside.exists() {
        aside = path.with_file_name(format!("{}.bad-{stamp}-{n}", persist::FILE_NAME));
        n += 1;
    }
    std::fs::rename(path, &aside).map_err(|source| StartError::Reset {
        path: path.to_owned(),
        aside: aside.clone(),
        source,
    })?;
    warn!(path = %path.display(), aside = %aside.display(), "power state reset: every rig starts unknown");
    audit.record(AuditEvent::now(
        who,
        "power-state-reset",
        format!("moved {} to {}", path.display(), aside.display()),
        why,
    ));
    Ok(())
}

/// A restored curtailment that ends more than [`limits::MAX_CURTAILMENT`] from now (a plan
/// saved before inputs were range-checked, or edited by hand) is shortened to that. Kept, not
/// dropped: it lowers the cap, and dropping it would raise the cap on our own; shortened, so
/// no absurd deadline reaches the timers. Recorded in the audit log.
fn clamp_curtailment(arbiter: &mut Arbiter, now: Duration, audit: &AuditLog) {
    let latest = now.saturating_add(limits::MAX_CURTAILMENT);
    let Some(c) = arbiter.snapshot().curtailment else {
        return;
    };
    let Some(until) = c.until.filter(|u| *u > latest) else {
        return;
    };
    audit.record(AuditEvent::now(
        "power",
        "curtailment-clamped",
        format!(
            "{:.1} kW until {} shortened to until {} (at most 7 days ahead)",
            c.cap.kw(),
            until.as_secs(),
            latest.as_secs()
        ),
        Some("restored plan held an end time beyond the limit".into()),
    ));
    arbiter.handle_curtailment(
        now,
        Curtailment {
            until: Some(latest),
            ..c
        },
    );
}

/// Starts power control when `[power]` is configured (rigs' management APIs through
/// `factory`, their `[[rig]]` PDU outlets through `outlets`): restores the persisted plan from the
/// state directory, and runs the controller and the GPU budget writer on `tracker`, under
/// `supervisor`: both are critical (`power-controller`, `gpu-budget`), the history sampler
/// is watched only (`power-history`: a chart; see `crate::proxy` for why each).
///
/// A plan that exists but cannot be read, parsed or restored is an error (the file is left
/// as it was). With `reset`, the plan is moved aside first and power control starts with no
/// rig known, no rig assumed asleep or mining until confirmed, and GPU grant 0.
#[allow(clippy::too_many_arguments)]
pub fn start(
    config: &Config,
    manager: Arc<dyn Fleet>,
    audit: Arc<AuditLog>,
    factory: ControlFactory,
    outlets: Option<OutletFactory>,
    gpu: Arc<dyn GpuControl>,
    shutdown: CancellationToken,
    tracker: &TaskTracker,
    storage: persist::Storage,
    supervisor: &crate::supervisor::Supervisor,
) -> Result<Option<PowerHandle>, StartError> {
    let Some(p) = &config.power else {
        return Ok(None);
    };
    let settings = settings(p);
    // A cluster leader's term: its tasks end with `shutdown` (the term), which is no failure.
    let scoped = matches!(storage, persist::Storage::Sink { .. });
    let (restored, target, reset, bad): (_, _, _, Box<dyn Fn(String) -> StartError>) = match storage
    {
        persist::Storage::File { reset } => {
            let state_file = config
                .admin
                .as_ref()
                .and_then(|a| a.state_dir.as_deref())
                .map(|d| d.join(persist::FILE_NAME))
                .ok_or(StartError::NoStateDir)?;
            if reset {
                reset_state(&state_file, &audit)?;
            }
            let path = state_file.clone();
            let bad = move |problem: String| StartError::BadState {
                path: path.clone(),
                problem,
            };
            let restored = controller::restore_state(&state_file).map_err(&bad)?;
            (
                restored,
                persist::PlanTarget::File(state_file),
                reset,
                Box::new(bad),
            )
        }
        // No stored plan (a new site, or etcd's data lost): nothing can be assumed of any
        // rig, as after `--reset-power-state`.
        persist::Storage::Sink { restored, sink } => {
            let reset = restored.is_none();
            (
                restored,
                persist::PlanTarget::Sink(sink),
                reset,
                Box::new(|problem: String| StartError::BadState {
                    path: "etcd plan".into(),
                    problem,
                }),
            )
        }
    };
    let now = since_epoch();
    let (restored, restored_known) = match restored {
        Some(file) => (Some(file.plan), file.registry),
        None => (None, Vec::new()),
    };
    let arbiter = match restored {
        Some(state) => {
            let rigs = state.rig_count();
            let mut a = Arbiter::restore(settings, state, now)
                .map_err(|e| bad(format!("cannot restore it: {e}")))?;
            clamp_curtailment(&mut a, now, &audit);
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
    // What the scheduler holds: the restored grant until it says otherwise.
    let (held_tx, held_rx) = watch::channel(Some(arbiter.gpu_granted().kw()));
    let (view_tx, view) = watch::channel(Arc::new(PowerView {
        snapshot: arbiter.snapshot(),
        rigs: HashMap::new(),
        conn_rigs: HashMap::new(),
        gpu_shed: shed::ShedStatus::default(),
        pdu_cuts: PduCuts::default(),
    }));
    let identity = Arc::new(IdentityCounters::default());
    info!(cap_kw = p.site_cap_kw, gpu = %gpu.describe(), "power control started");
    let controller = Controller {
        arbiter,
        registry: Registry::new(
            config.rig_group.clone(),
            &config.rig,
            factory,
            limits::secs(p.status_poll_secs * 3.0),
            IdentitySettings {
                forget_unverified: limits::secs(p.forget_unverified_secs),
                max_per_address: usize::try_from(p.max_rigs_per_address).unwrap_or(usize::MAX),
            },
        )
        .with_outlets(outlets, path::PathBounds::default()),
        manager,
        gpu: gpu.clone(),
        budget_tx,
        audit: audit.clone(),
        plan_target: Some(target),
        view_tx,
        confirm_deadline: limits::secs(p.confirm_deadline_secs),
        wake_deadline: limits::secs(p.wake_deadline_secs),
        status_every: limits::secs(p.status_poll_secs),
        quiet: limits::secs(p.quiet_secs),
        ops: FuturesUnordered::new(),
        status_in_flight: 0,
        last_status: HashMap::new(),
        last_demand: None,
        last_persisted: None,
        last_persist_at: None,
        persist_held: false,
        last_publish_at: None,
        polled_demand: true,
        sleep_commanded: HashMap::new(),
        drain_to_confirmed: drain_to_confirmed.clone(),
        restored_known,
        identity: identity.clone(),
        unconfirmed: reset.then(HashSet::new),
        gpu_held: held_rx,
        asleep_at: HashMap::new(),
        told_to_sleep: HashSet::new(),
        cutting: HashSet::new(),
        status_failing: HashSet::new(),
        pdu_cuts: PduCuts::default(),
        shed: shed::ShedTracker::new(
            config.gpu_scheduler.as_ref().map_or(
                Duration::from_secs_f64(crate::gpu::DEFAULT_SHED_DEADLINE_SECS),
                |g| g.shed_deadline(),
            ),
            controller::DEMAND_EVERY * 2,
        ),
    };
    let critical = |name: &str, task: std::pin::Pin<Box<dyn Future<Output = ()> + Send>>| {
        if scoped {
            supervisor.spawn_critical_scoped(tracker, name, shutdown.clone(), task);
        } else {
            supervisor.spawn_critical(tracker, name, task);
        }
    };
    critical(
        "gpu-budget",
        Box::pin(controller::apply_budgets(
            gpu,
            budget_rx,
            held_tx,
            audit,
            shutdown.clone(),
        )),
    );
    let history = PowerHistory::standard();
    let sampler = history
        .clone()
        .run(view.clone(), SAMPLE_EVERY, shutdown.clone());
    if scoped {
        supervisor.spawn_watched_scoped(tracker, "power-history", shutdown.clone(), sampler);
    } else {
        supervisor.spawn_watched(tracker, "power-history", sampler);
    }
    critical(
        "power-controller",
        Box::pin(controller.run(requests, shutdown.clone())),
    );
    Ok(Some(PowerHandle {
        tx,
        view,
        history,
        drain_to_confirmed,
        identity,
    }))
}
