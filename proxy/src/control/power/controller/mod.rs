//! The power controller's loop: one task owns the [`Arbiter`], feeds it what happens (rigs
//! connecting, firmware confirmations, GPU demand, operator commands, curtailments, time) and
//! carries out its actions (firmware commands, GPU budget, shed requests, escalations), logs
//! every decision in the audit log and persists the plan after every change.
//!
//! This file holds the loop and what it dispatches on (requests, finished work, the tick, the
//! arbiter's actions); `confirm.rs` what rigs and their shares say besides their firmware,
//! `escalate.rs` a sleep not carried out, cut at the rig's PDU outlet,
//! `gpu.rs` the shed follow-up and the budget writer, `publish.rs` the plan on disk and the
//! operator view.

mod confirm;
mod escalate;
mod gpu;
mod publish;
#[cfg(test)]
mod tests;

use crate::control::power::persist;
use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use futures_util::stream::FuturesUnordered;
use tokio::sync::{mpsc, oneshot, watch};
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use super::ops::{self, Done, Op};
use super::ports::{FirmwareState, GpuControl, PortError};
use super::rigs::{KnownRig, Registry, changed_enough};
use super::shed::ShedTracker;
use super::{IdentityCounters, PowerView, Request};
use crate::control::arbiter::{
    Action, Arbiter, Confirmation, GpuDemand, Observed, OperatorCommand, RigId, Watts,
};
use crate::control::audit::{AuditEvent, AuditLog};
use crate::control::limits;
use crate::error::Classify;
use crate::pool_link::report::Fleet;
use crate::time::since_epoch;

pub(super) use self::gpu::apply_budgets;
use self::publish::describe;
pub(super) use self::publish::restore_state;

/// Status polls in flight at once (bounds sockets and load on a big site).
const MAX_STATUS_POLLS: usize = 64;
/// GPU demand is polled this often.
pub(super) const DEMAND_EVERY: Duration = Duration::from_secs(2);
/// Timeout of one status call or GPU demand poll.
const CALL_TIMEOUT: Duration = Duration::from_secs(10);
/// Added to a GPU adapter's own bound on a budget or shed call ([`GpuControl::call_bound`]):
/// the adapter gives up first, with its own error; this only catches one that would not.
pub(super) const GPU_CALL_MARGIN: Duration = Duration::from_secs(5);
/// The plan is written to disk at most this often (and at shutdown).
const PERSIST_EVERY: Duration = Duration::from_millis(200);
/// The operator view is rebuilt at most this often (and after every request).
const PUBLISH_EVERY: Duration = Duration::from_millis(100);
/// The loop never sleeps longer than this for an arbiter deadline: a deadline however far
/// away (a hostile or persisted one) cannot overflow the timer, and the 1 s tick recomputes
/// it anyway.
const MAX_WAIT: Duration = Duration::from_secs(3600);
/// After a reset, a rig counts as mining once a share of it was accepted this recently.
const SHARE_FLOW: Duration = Duration::from_secs(60);
/// The longest a PDU cut may take (the composite confirms within its own, shorter bound;
/// this only catches one that would not stop).
const CUT_BOUND: Duration = Duration::from_secs(90);

/// The controller task's state: the arbiter it owns and everything it needs to act on it.
pub(super) struct Controller {
    /// The plan: which rigs sleep, what the GPU side is granted.
    pub arbiter: Arbiter,
    /// Which connected miners are which rigs, and their power figures.
    pub registry: Registry,
    /// The pools' manager: miner reports in, connections of sleeping rigs kicked.
    pub manager: Arc<dyn Fleet>,
    /// The GPU scheduler adapter (or the admin socket standing in for one).
    pub gpu: Arc<dyn GpuControl>,
    /// The GPU budget the arbiter decided, for the budget writer task.
    pub budget_tx: watch::Sender<Option<f64>>,
    /// Where every decision is recorded.
    pub audit: Arc<AuditLog>,
    /// Where the plan is persisted (`None`: not persisted, tests).
    pub plan_target: Option<persist::PlanTarget>,
    /// The operator view, published for the admin socket and the web API.
    pub view_tx: watch::Sender<Arc<PowerView>>,
    /// Time a sleep command has to be confirmed.
    pub confirm_deadline: Duration,
    /// Time a wake command has to be confirmed.
    pub wake_deadline: Duration,
    /// How often each rig's firmware is asked for its status.
    pub status_every: Duration,
    /// Time without shares before a rig the firmware calls asleep counts as asleep.
    pub quiet: Duration,
    /// Slow work in flight (firmware commands, polls, sheds), each bounded in time.
    pub ops: FuturesUnordered<Op>,
    /// Status polls in flight (at most `MAX_STATUS_POLLS`).
    pub status_in_flight: usize,
    /// When each rig was last asked for its status.
    pub last_status: HashMap<RigId, Instant>,
    /// When the GPU demand was last polled.
    pub last_demand: Option<Instant>,
    /// The plan last written, without its `saved_at` stamp.
    pub last_persisted: Option<serde_json::Value>,
    /// When the plan was last written.
    pub last_persist_at: Option<Instant>,
    /// A write was held back by `PERSIST_EVERY` (the loop wakes when it is due).
    pub persist_held: bool,
    /// When the operator view was last published.
    pub last_publish_at: Option<Instant>,
    /// Whether the GPU side reports its own demand (else it comes through `gpu-request`).
    pub polled_demand: bool,
    /// When each rig now draining was told to sleep (for `drain_to_confirmed`).
    pub sleep_commanded: HashMap<RigId, Instant>,
    /// Sleep commanded → confirmed asleep (metrics).
    pub drain_to_confirmed: Arc<crate::telemetry::Histogram>,
    /// What the registry kept of each rig in the restored plan (consumed at start).
    pub restored_known: Vec<KnownRig>,
    /// Identity conflicts, refused and forgotten rigs (metrics).
    pub identity: Arc<IdentityCounters>,
    /// `Some` after `--reset-power-state`: the plan is lost, so a rig seen for the first time
    /// is not assumed to mine (as it is otherwise: it connected); it enters `Unknown`
    /// (counted as drawing, never woken) and waits here until its firmware or its shares
    /// say which it is. Found asleep, it is pinned so it is never re-energised on our own.
    pub unconfirmed: Option<HashSet<RigId>>,
    /// The GPU shed being carried through, if any.
    pub shed: ShedTracker,
    /// The most the GPU side may hold (from the budget writer).
    pub gpu_held: watch::Receiver<Option<f64>>,
    /// Rigs confirmed asleep, and when (unix ms): a share accepted later means it draws.
    pub asleep_at: HashMap<RigId, u64>,
    /// Rigs whose last command was a sleep (a failed sleep may be escalated to a PDU cut; a
    /// failed wake never is).
    pub told_to_sleep: HashSet<RigId>,
    /// Rigs whose PDU cut is in flight (their status polls are not news meanwhile).
    pub cutting: HashSet<RigId>,
    /// Rigs whose last status poll failed (audited once per streak, not on every poll).
    pub status_failing: HashSet<RigId>,
    /// PDU cuts so far (metrics).
    pub pdu_cuts: super::PduCuts,
}

impl Controller {
    /// Runs the loop until `shutdown` or until every request sender is gone; requests already
    /// queued then are applied and the plan persisted before it returns.
    pub async fn run(mut self, mut requests: mpsc::Receiver<Request>, shutdown: CancellationToken) {
        // Rigs restored from disk are not connected (asleep ones never will be until woken):
        // their management API comes from the config.
        let restored: HashMap<RigId, KnownRig> = std::mem::take(&mut self.restored_known)
            .into_iter()
            .map(|k| (k.id.clone(), k))
            .collect();
        let known: Vec<RigId> = self.arbiter.rigs().map(|r| r.info.id).collect();
        let now = Instant::now();
        for id in known {
            self.registry.ensure(&id, restored.get(&id), now);
            if let (Some(e), Some(v)) = (self.registry.rigs.get_mut(&id), self.arbiter.rig(&id)) {
                e.announced = Some(v.info);
            }
        }
        // Listed rigs not in the plan (first run, a reset, a new `[[rig]]`) count from the
        // start; their firmware is asked at once.
        for id in self.registry.ensure_listed(now) {
            debug!(rig = %id, "listed rig counted before it connects");
        }
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let wake_at = self.arbiter.poll_timeout().map(|at| {
                let from_now = at.saturating_sub(since_epoch()).min(MAX_WAIT);
                tokio::time::Instant::now() + from_now
            });
            let shed_at = self.shed.poll_at();
            // A write held back by `PERSIST_EVERY` is due then, not at the next event.
            let persist_at = self
                .last_persist_at
                .filter(|_| self.persist_held)
                .map(|t| tokio::time::Instant::from_std(t + PERSIST_EVERY));
            let mut answered = false;
            tokio::select! {
                _ = shutdown.cancelled() => break,
                r = requests.recv() => match r {
                    Some(r) => { self.on_request(r); answered = true; }
                    None => break,
                },
                Some(done) = self.ops.next(), if !self.ops.is_empty() => self.on_done(done),
                Ok(()) = self.gpu_held.changed() => {
                    if let Some(kw) = *self.gpu_held.borrow_and_update() {
                        self.arbiter.handle_gpu_budget_applied(since_epoch(), Watts::from_kw(kw));
                    }
                }
                _ = tick.tick() => self.on_tick(),
                _ = async { if let Some(t) = wake_at { tokio::time::sleep_until(t).await } }, if wake_at.is_some() => {
                    self.arbiter.handle_timeout(since_epoch());
                }
                // The shed follow-up's next call or escalation (`carry_out` does it).
                _ = async { if let Some(t) = shed_at { tokio::time::sleep_until(t).await } }, if shed_at.is_some() => {}
                _ = async { if let Some(t) = persist_at { tokio::time::sleep_until(t).await } }, if persist_at.is_some() => {}
            }
            self.carry_out();
            // What an operator or the GPU side was told is accepted reaches the plan at once:
            // a crash right after the answer must not lose it.
            self.persist(answered);
            self.publish(answered);
        }
        // Requests already answered "accepted" (a curtailment, a drain) are applied and
        // persisted, not lost to the race between shutdown and the queue.
        requests.close();
        while let Ok(r) = requests.try_recv() {
            self.on_request(r);
        }
        self.carry_out();
        self.persist(true);
    }

    fn on_request(&mut self, request: Request) {
        let now = since_epoch();
        match request {
            Request::Operator {
                command,
                operator,
                reply,
            } => {
                let r = self
                    .arbiter
                    .handle_operator(now, operator, command)
                    .map_err(|e| e.to_string());
                let _ = reply.send(r);
            }
            Request::Curtail { curtailment } => self.arbiter.handle_curtailment(now, curtailment),
            Request::CurtailClear => self.arbiter.handle_curtailment_cleared(now),
            Request::GpuRequest { kw } => {
                let granted = self.arbiter.gpu_granted();
                let wanted = Watts::from_kw(kw);
                self.arbiter.handle_gpu_demand(
                    now,
                    GpuDemand {
                        wanted,
                        in_use: wanted.min(granted),
                    },
                );
            }
            Request::ResumeAll { operator, reply } => {
                let pinned: Vec<RigId> = self
                    .arbiter
                    .rigs()
                    .filter(|r| r.pinned.is_some())
                    .map(|r| r.info.id)
                    .collect();
                let mut touched = Vec::new();
                for rig in pinned {
                    if let Ok(t) = self.arbiter.handle_operator(
                        now,
                        operator.clone(),
                        OperatorCommand::ResumeRig { rig },
                    ) {
                        touched.extend(t);
                    }
                }
                let _ = reply.send(Ok(touched));
            }
            Request::View { reply } => {
                self.last_publish_at = None;
                let _ = reply.send(self.build_view());
            }
            Request::Forget {
                rig,
                operator,
                reply,
            } => {
                let _ = reply.send(self.forget(&rig, &operator));
            }
        }
    }

    /// Removes a rig an operator knows is gone (refused while it is connected).
    fn forget(
        &mut self,
        rig: &RigId,
        operator: &crate::control::arbiter::Operator,
    ) -> Result<Vec<RigId>, String> {
        let in_registry = self.registry.rigs.contains_key(rig);
        let in_arbiter = self.arbiter.rig(rig).is_some();
        if !in_registry && !in_arbiter {
            return Err(format!("no rig {:?}", rig.0));
        }
        self.registry.forget(rig)?;
        if in_arbiter {
            self.arbiter
                .handle_rig_removed(since_epoch(), rig)
                .map_err(|e| e.to_string())?;
        }
        self.last_status.remove(rig);
        self.status_failing.remove(rig);
        self.sleep_commanded.remove(rig);
        self.told_to_sleep.remove(rig);
        self.identity.forgotten_operator.fetch_add(1, Relaxed);
        info!(rig = %rig, by = %operator.who, "rig forgotten by an operator");
        self.audit.record(AuditEvent::now(
            operator.who.clone(),
            "rig-forgotten",
            rig.0.clone(),
            Some(operator.why.clone()),
        ));
        Ok(vec![rig.clone()])
    }

    fn confirm(&mut self, rig: &RigId, c: Confirmation) {
        if let Err(e) = self.arbiter.handle_confirmation(since_epoch(), rig, c) {
            debug!(rig = %rig, error = %e, "late confirmation");
        }
    }

    /// A status poll failed (unreachable, refused, a reply that cannot be read): the rig keeps
    /// the state it had (a rig we cannot read is never taken to be asleep), and the first
    /// failure of a streak is warned and audited with the adapter's words.
    fn status_failed(&mut self, rig: &RigId, e: &PortError) {
        if self.status_failing.insert(rig.clone()) {
            warn!(rig = %rig, error = %e, side = %e.side(), retry = %e.retry(), "rig status failed");
            self.audit.record(AuditEvent::now(
                "firmware",
                "status-failed",
                rig.0.clone(),
                Some(e.to_string()),
            ));
        }
    }

    fn on_done(&mut self, done: Done) {
        match done {
            Done::Slept(rig, Ok(())) => {
                self.answered(&rig);
                self.confirm_quiet(&rig)
            }
            Done::QuietCheck(rig) => self.confirm_quiet(&rig),
            Done::Slept(rig, Err(e)) | Done::Woke(rig, Err(e)) => {
                warn!(
                    rig = %rig,
                    error = %e,
                    side = %e.side(),
                    retry = %e.retry(),
                    "firmware command failed"
                );
                self.sleep_commanded.remove(&rig);
                self.audit.record(AuditEvent::now(
                    "firmware",
                    "command-failed",
                    rig.0.clone(),
                    Some(e.to_string()),
                ));
                self.confirm(&rig, Confirmation::CommandFailed);
            }
            Done::Woke(rig, Ok(())) => {
                self.answered(&rig);
                if let Some(e) = self.registry.rigs.get_mut(&rig) {
                    e.cut_at = None;
                }
                self.confirm(&rig, Confirmation::Awake)
            }
            Done::Cut(rig, r) => self.on_cut(rig, r),
            Done::Status(rig, r) => {
                self.status_in_flight = self.status_in_flight.saturating_sub(1);
                let status = match r {
                    Ok(status) => status,
                    Err(e) => return self.status_failed(&rig, &e),
                };
                if self.status_failing.remove(&rig) {
                    info!(rig = %rig, "rig's management API answers again");
                    self.audit.record(AuditEvent::now(
                        "firmware",
                        "status-recovered",
                        rig.0.clone(),
                        None,
                    ));
                }
                // A cut in flight settles the rig's state itself (outlet off, then quiet).
                if self.cutting.contains(&rig) {
                    return;
                }
                self.answered(&rig);
                let nameplate = self
                    .registry
                    .rigs
                    .get(&rig)
                    .and_then(|e| e.group)
                    .and_then(|g| self.registry.groups().get(g))
                    .map(|g| g.rated_w);
                // The figure the arbiter needs is the rig's draw when mining: a reading taken
                // asleep or waking would make waking it look free.
                if let Some(entry) = self.registry.rigs.get_mut(&rig) {
                    if status.state == FirmwareState::Mining {
                        // A reading no mining rig can draw (NaN, 1 W, 1 MW) is garbage: keep
                        // the previous figure (or the estimate) instead.
                        match status.power_w.map(|w| limits::mining_power_w(w, nameplate)) {
                            Some(Ok(w)) => {
                                entry.firmware_power = Some((w, Instant::now()));
                                entry.power_metered = status.metered;
                            }
                            Some(Err(e)) => {
                                debug!(rig = %rig, error = %e, "firmware power ignored")
                            }
                            None => {}
                        }
                    }
                }
                // Only settled states are news (the arbiter's rule): a rig found asleep that
                // we did not put to sleep (relay trip, another tool), awake when we think it
                // sleeps, or awake after its command failed or went unconfirmed (so the plan
                // may command it again).
                let reported = match status.state {
                    FirmwareState::Sleeping => Some(Observed::Asleep),
                    FirmwareState::Mining => Some(Observed::Mining),
                    _ => None,
                };
                let observed = reported.and_then(|r| self.arbiter.status_news(&rig, r));
                self.settle_after_reset(&rig, observed);
                if let (Some(observed), Some(entry)) = (observed, self.registry.rigs.get(&rig)) {
                    let info = self.registry.info(entry, Instant::now());
                    let _ = self.arbiter.handle_rig(since_epoch(), info, observed);
                }
            }
            Done::Demand(Ok(Some(load))) => {
                self.arbiter.handle_gpu_demand(
                    since_epoch(),
                    GpuDemand {
                        wanted: Watts::from_kw(load.wanted_kw),
                        in_use: Watts::from_kw(load.in_use_kw),
                    },
                );
                let now = tokio::time::Instant::now();
                let drawing = Watts::from_kw(load.drawing_kw);
                if let Some(step) = self.shed.handle_in_use(now, drawing) {
                    self.on_shed_step(step);
                }
                self.shed_if_over(now, drawing);
            }
            Done::Demand(Ok(None)) => self.polled_demand = false,
            Done::Demand(Err(e)) => {
                warn!(
                    error = %e,
                    side = %e.side(),
                    retry = %e.retry(),
                    gpu = %self.gpu.describe(),
                    "GPU demand poll failed"
                )
            }
            Done::Shed(kw, r) => {
                self.audit.record(AuditEvent::now(
                    "gpu",
                    "shed-result",
                    format!(
                        "{kw:.1} kW: {}",
                        r.as_ref().map_or_else(|e| e.message(), |_| "done")
                    ),
                    None,
                ));
                if let Err(e) = &r {
                    warn!(
                        kw,
                        error = %e,
                        side = %e.side(),
                        retry = %e.retry(),
                        gpu = %self.gpu.describe(),
                        "GPU shed call failed; retrying with backoff"
                    );
                }
                let now = tokio::time::Instant::now();
                let r = r.map_err(|e| e.to_string());
                if let Some(step) = self.shed.handle_result(now, r, self.polled_demand) {
                    self.on_shed_step(step);
                }
            }
        }
    }

    fn on_tick(&mut self) {
        let now = Instant::now();
        let report = self.registry.sync(&self.manager.miner_reports(), now);
        self.report(report);
        for (rig, away) in self.registry.expire(now) {
            if let Some(u) = &mut self.unconfirmed {
                u.remove(&rig);
            }
            self.last_status.remove(&rig);
            self.status_failing.remove(&rig);
            self.sleep_commanded.remove(&rig);
            self.told_to_sleep.remove(&rig);
            if self.arbiter.handle_rig_removed(since_epoch(), &rig).is_ok() {
                self.identity.forgotten_unverified.fetch_add(1, Relaxed);
                info!(rig = %rig, away_secs = away.as_secs(), "unverified rig forgotten");
                self.audit.record(AuditEvent::now(
                    "registry",
                    "rig-forgotten",
                    rig.0.clone(),
                    Some(format!(
                        "unverified (no management API answered), disconnected for {} s",
                        away.as_secs()
                    )),
                ));
            }
        }
        // New rigs, and figures that moved.
        let mut updates = Vec::new();
        for entry in self.registry.rigs.values() {
            let info = self.registry.info(entry, now);
            match &entry.announced {
                None => updates.push((info, true)),
                Some(old) if changed_enough(old, &info) => updates.push((info, false)),
                Some(_) => {}
            }
        }
        for (info, new) in updates {
            let id = info.id.clone();
            let known = self.arbiter.rig(&id).is_some();
            // A rig we have never seen mines (it connected), unless the plan was reset (see
            // `unconfirmed`); one restored from disk or already known keeps its state until
            // its firmware says otherwise.
            let observed = match (&mut self.unconfirmed, new && !known) {
                (None, true) => Observed::Mining,
                (Some(unconfirmed), true) => {
                    unconfirmed.insert(id.clone());
                    Observed::Unknown
                }
                (_, false) => Observed::Unknown,
            };
            match self
                .arbiter
                .handle_rig(since_epoch(), info.clone(), observed)
            {
                Ok(()) => {
                    if let Some(e) = self.registry.rigs.get_mut(&id) {
                        e.announced = Some(info);
                    }
                }
                Err(e) => {
                    warn!(rig = %id, error = %e, side = %e.side(), retry = %e.retry(), "rig not taken by the arbiter")
                }
            }
        }
        self.confirm_by_shares();
        self.shares_while_asleep();
        // Status polls, spread out and bounded.
        let due: Vec<_> = self
            .registry
            .rigs
            .values()
            .filter_map(|e| Some((e.id.clone(), e.control.clone()?)))
            .filter(|(id, _)| {
                self.last_status
                    .get(id)
                    .is_none_or(|t| now.saturating_duration_since(*t) >= self.status_every)
            })
            .collect();
        for (id, control) in due {
            if self.status_in_flight >= MAX_STATUS_POLLS {
                break;
            }
            self.status_in_flight += 1;
            self.last_status.insert(id.clone(), now);
            self.ops.push(ops::status(id, control, CALL_TIMEOUT));
        }
        if self.polled_demand
            && self
                .last_demand
                .is_none_or(|t| now.saturating_duration_since(t) >= DEMAND_EVERY)
        {
            self.last_demand = Some(now);
            self.ops.push(ops::demand(self.gpu.clone(), CALL_TIMEOUT));
        }
        self.arbiter.handle_timeout(since_epoch());
    }

    /// Carries out the arbiter's actions and logs its events.
    fn carry_out(&mut self) {
        while let Some(action) = self.arbiter.poll_action() {
            match action {
                Action::Sleep { ref rig, .. } | Action::Wake { ref rig, .. } => {
                    let sleep = matches!(action, Action::Sleep { .. });
                    let rig = rig.clone();
                    if sleep {
                        self.sleep_commanded.insert(rig.clone(), Instant::now());
                        self.told_to_sleep.insert(rig.clone());
                    } else {
                        self.sleep_commanded.remove(&rig);
                        self.told_to_sleep.remove(&rig);
                    }
                    let control = self.registry.rigs.get(&rig).and_then(|e| e.control.clone());
                    match control {
                        Some(c) => {
                            let deadline = if sleep {
                                self.confirm_deadline
                            } else {
                                self.wake_deadline
                            };
                            self.ops.push(ops::command(rig, c, sleep, deadline));
                        }
                        None => {
                            self.audit.record(AuditEvent::now(
                                "drain",
                                "no-management-api",
                                rig.0.clone(),
                                Some("the rig's group has no firmware adapter configured".into()),
                            ));
                            self.confirm(&rig, Confirmation::CommandFailed);
                        }
                    }
                }
                Action::SetGpuBudget { budget, .. } => {
                    self.budget_tx.send_replace(Some(budget.kw()));
                    if let Some(step) = self.shed.handle_grant(budget) {
                        self.on_shed_step(step);
                    }
                }
                Action::AskGpuShed { amount, reason } => {
                    // Followed up until the GPU side is within its grant (see `shed`).
                    self.shed.handle_ask(
                        tokio::time::Instant::now(),
                        amount,
                        self.arbiter.gpu_granted(),
                        format!("{reason:?}"),
                    );
                }
                Action::Escalate { rig, state, .. } => self.escalate(rig, state),
            }
        }
        while let Some(event) = self.arbiter.poll_event() {
            let (what, detail) = describe(&event.event);
            self.audit
                .record(AuditEvent::now("arbiter", what, detail, None));
        }
        for step in self.shed.poll(tokio::time::Instant::now()) {
            self.on_shed_step(step);
        }
    }
}

/// `reply` for operator commands.
pub(super) type Reply = oneshot::Sender<Result<Vec<RigId>, String>>;
