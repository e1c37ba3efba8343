//! The power controller's loop: one task owns the [`Arbiter`], feeds it what happens (rigs
//! connecting, firmware confirmations, GPU demand, operator commands, curtailments, time) and
//! carries out its actions (firmware commands, GPU budget, shed requests, escalations), logs
//! every decision in the audit log and persists the plan after every change.

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use futures_util::stream::FuturesUnordered;
use tokio::sync::{mpsc, oneshot, watch};
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use super::ops::{self, Done, Op};
use super::persist;
use super::ports::{FirmwareState, GpuControl, PortError};
use super::rigs::{KnownRig, Refusal, Registry, SyncReport, changed_enough};
use super::shed::{ShedStep, ShedTracker};
use super::{IdentityCounters, PowerView, Request, RigPower};
use crate::control::arbiter::{
    Action, Arbiter, Confirmation, GpuDemand, Observed, Operator, OperatorCommand, RigId, RigState,
    Watts,
};
use crate::control::audit::{AuditEvent, AuditLog};
use crate::control::limits;
use crate::error::{Classify, Retry, Side};
use crate::time::{since_epoch, unix_ms};
use crate::upstream::manager::PoolManager;

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

pub(super) struct Controller {
    pub arbiter: Arbiter,
    pub registry: Registry,
    pub manager: Arc<PoolManager>,
    pub gpu: Arc<dyn GpuControl>,
    pub budget_tx: watch::Sender<Option<f64>>,
    pub audit: Arc<AuditLog>,
    pub state_file: Option<PathBuf>,
    pub view_tx: watch::Sender<Arc<PowerView>>,
    pub confirm_deadline: Duration,
    pub wake_deadline: Duration,
    pub status_every: Duration,
    pub quiet: Duration,
    pub ops: FuturesUnordered<Op>,
    pub status_in_flight: usize,
    pub last_status: HashMap<RigId, Instant>,
    pub last_demand: Option<Instant>,
    /// The plan last written, without its `saved_at` stamp.
    pub last_persisted: Option<serde_json::Value>,
    pub last_persist_at: Option<Instant>,
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
}

impl Controller {
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
            }
            self.carry_out();
            self.persist(false);
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
        self.sleep_commanded.remove(rig);
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

    /// The GPU side draws more than the arbiter can ever grant it (a restart in the middle of a
    /// shed, which is not persisted; jobs started beyond their budget): shed the excess. Only
    /// beyond the target grant, which already counts what draining mining will free, so jobs
    /// that mining can make room for are not requeued.
    fn shed_if_over(&mut self, now: tokio::time::Instant, drawing: Watts) {
        let snap = self.arbiter.snapshot();
        let reachable = snap.gpu_granted + snap.gpu_pending;
        let Some(excess) = self.shed.handle_over_grant(now, drawing, reachable) else {
            return;
        };
        warn!(
            drawing_kw = drawing.kw(),
            reachable_kw = reachable.kw(),
            "GPU side draws above what it can be granted: asking it to shed"
        );
        self.audit.record(AuditEvent::now(
            "gpu",
            "over-grant",
            format!(
                "the scheduler reports {:.1} kW drawn; at most {:.1} kW can be granted",
                drawing.kw(),
                reachable.kw()
            ),
            Some(format!("asking it to shed {:.1} kW", excess.kw())),
        ));
    }

    /// Audits what a registry sync found: identity conflicts and refused workers.
    fn report(&mut self, report: SyncReport) {
        for (rig, from, conn) in report.conflicts {
            self.identity.conflicts.fetch_add(1, Relaxed);
            let home = self
                .registry
                .rigs
                .get(&rig)
                .and_then(|e| e.home)
                .map_or_else(|| "?".to_owned(), |h| h.to_string());
            warn!(rig = %rig, %from, %home, "identity conflict: a connection from another address uses a known rig's worker name");
            self.audit.record(AuditEvent::now(
                "registry",
                "identity-conflict",
                format!(
                    "{} claimed from {from} (connection {conn}); the rig is at {home}",
                    rig.0
                ),
                Some(format!(
                    "the rig stays bound to {home}; the connection counts as {}@{} (unverified)",
                    rig.0,
                    from.ip()
                )),
            ));
        }
        for (worker, from, why) in report.refused {
            let (counter, detail) = match why {
                Refusal::PerAddress => (
                    &self.identity.refused_per_address,
                    format!(
                        "{from} holds max_rigs_per_address unverified rigs: {worker} counts in overflow@{}",
                        from.ip()
                    ),
                ),
                Refusal::MaxRigs => (
                    &self.identity.refused_max_rigs,
                    format!(
                        "the inventory holds {} rigs (MAX_RIGS): {worker} from {from} is not counted",
                        crate::control::arbiter::MAX_RIGS
                    ),
                ),
            };
            counter.fetch_add(1, Relaxed);
            warn!(%worker, %from, reason = why.label(), "rig cap reached");
            self.audit
                .record(AuditEvent::now("registry", "rig-cap", detail, None));
        }
    }

    fn confirm(&mut self, rig: &RigId, c: Confirmation) {
        if let Err(e) = self.arbiter.handle_confirmation(since_epoch(), rig, c) {
            debug!(rig = %rig, error = %e, "late confirmation");
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
                self.confirm(&rig, Confirmation::Awake)
            }
            Done::Status(rig, r) => {
                self.status_in_flight = self.status_in_flight.saturating_sub(1);
                let Ok(status) = r else { return };
                self.answered(&rig);
                let state = self.arbiter.rig(&rig).map(|v| v.state);
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
                            Some(Ok(w)) => entry.firmware_power = Some((w, Instant::now())),
                            Some(Err(e)) => {
                                debug!(rig = %rig, error = %e, "firmware power ignored")
                            }
                            None => {}
                        }
                    }
                }
                // Only settled states are news: a rig found asleep that we did not put to
                // sleep (relay trip, another tool) or awake when we think it sleeps.
                let observed = match (status.state, state) {
                    (FirmwareState::Sleeping, Some(RigState::Mining | RigState::Unknown)) => {
                        Some(Observed::Asleep)
                    }
                    (FirmwareState::Mining, Some(RigState::Asleep | RigState::Unknown)) => {
                        Some(Observed::Mining)
                    }
                    _ => None,
                };
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

    /// Carries out and records one step of the GPU shed follow-up.
    fn on_shed_step(&mut self, step: ShedStep) {
        match step {
            ShedStep::Send {
                kw,
                reason,
                attempt,
            } => {
                if attempt > 1 {
                    info!(kw, attempt, "GPU shed sent again");
                }
                self.audit.record(AuditEvent::now(
                    "gpu",
                    "shed-request",
                    format!("{kw:.1} kW, attempt {attempt}"),
                    Some(reason.clone()),
                ));
                let bound = self.gpu.call_bound().saturating_add(GPU_CALL_MARGIN);
                self.ops
                    .push(ops::shed(self.gpu.clone(), kw, reason, bound));
            }
            ShedStep::Done {
                attempts,
                took,
                how,
            } => {
                info!(
                    attempts,
                    took_secs = took.as_secs_f64(),
                    how,
                    "GPU shed done"
                );
                self.audit.record(AuditEvent::now(
                    "gpu",
                    "shed-complete",
                    format!("after {attempts} attempts in {:.1} s", took.as_secs_f64()),
                    Some(how.to_owned()),
                ));
            }
            ShedStep::NoLongerNeeded { grant, attempts } => {
                self.audit.record(AuditEvent::now(
                    "gpu",
                    "shed-cancelled",
                    format!(
                        "grant back to {:.1} kW after {attempts} attempts",
                        grant.kw()
                    ),
                    Some("the GPU side's use fits the grant again".into()),
                ));
            }
            ShedStep::Overdue {
                outstanding,
                in_use,
                grant,
                attempts,
                age,
                last_error,
            } => {
                warn!(
                    outstanding_kw = outstanding.kw(),
                    in_use_kw = in_use.kw(),
                    grant_kw = grant.kw(),
                    attempts,
                    age_secs = age.as_secs_f64(),
                    gpu = %self.gpu.describe(),
                    "GPU shed overdue: the site is over its cap until the GPU side sheds; needs a person"
                );
                let error = last_error.map_or_else(String::new, |e| format!("; last error: {e}"));
                self.audit.record(AuditEvent::now(
                    "gpu",
                    "shed-overdue",
                    format!(
                        "{:.1} kW still to shed: in use {:.1} kW, grant {:.1} kW, {attempts} attempts in {:.0} s{error}",
                        outstanding.kw(),
                        in_use.kw(),
                        grant.kw(),
                        age.as_secs_f64()
                    ),
                    Some(format!(
                        "the site is over its cap until the GPU side sheds: stop, requeue or suspend \
                         GPU jobs worth {:.1} kW by hand on {} (or fix it so it answers); \
                         hashshift keeps retrying every {} s",
                        outstanding.kw(),
                        self.gpu.describe(),
                        super::shed::MAX_BACKOFF.as_secs()
                    )),
                ));
            }
        }
    }

    /// The firmware says the rig sleeps: it counts as asleep once its shares stopped too.
    fn confirm_quiet(&mut self, rig: &RigId) {
        let Some(entry) = self.registry.rigs.get(rig) else {
            return;
        };
        // Quiet means no share for `quiet` since the sleep command too: a rig with no share
        // yet (it has not connected, or not since a restart) is not quiet just for that.
        let last = entry.live_last_share_unix_ms();
        let mut wait = Duration::ZERO;
        if last > 0 {
            let age = Duration::from_millis(unix_ms().saturating_sub(last));
            wait = self.quiet.saturating_sub(age);
        }
        if let Some(commanded) = self.sleep_commanded.get(rig) {
            wait = wait.max(self.quiet.saturating_sub(commanded.elapsed()));
        }
        if !wait.is_zero() {
            self.ops.push(ops::quiet_check(rig.clone(), wait));
            return;
        }
        // Asleep: stop giving it work (it has stopped asking anyway).
        for conn in &entry.conns {
            self.manager.kick(*conn);
        }
        if let Some(t) = self.sleep_commanded.remove(rig) {
            self.drain_to_confirmed.observe_duration(t.elapsed());
        }
        self.asleep_at.insert(rig.clone(), unix_ms());
        self.confirm(rig, Confirmation::Asleep);
    }

    /// A rig counted asleep whose shares are accepted again is drawing: its firmware lied or
    /// someone woke it. It counts as mining again at once (a pinned rig is told to sleep
    /// again), and the audit log says so.
    fn shares_while_asleep(&mut self) {
        let mut woke = Vec::new();
        self.asleep_at.retain(|id, at| {
            if self.arbiter.rig(id).map(|v| v.state) != Some(RigState::Asleep) {
                return false;
            }
            match self.registry.rigs.get(id) {
                Some(e) if e.live_last_share_unix_ms() > *at => {
                    woke.push((id.clone(), e.live_last_share_unix_ms() - *at));
                    false
                }
                Some(_) => true,
                None => false,
            }
        });
        let now = Instant::now();
        for (id, after_ms) in woke {
            let Some(entry) = self.registry.rigs.get(&id) else {
                continue;
            };
            warn!(rig = %id, after_ms, "shares accepted from a rig counted asleep: counting it as mining");
            self.audit.record(AuditEvent::now(
                "registry",
                "shares-while-asleep",
                format!("{} ({} ms after it was confirmed asleep)", id.0, after_ms),
                Some("counted as drawing again".into()),
            ));
            let info = self.registry.info(entry, now);
            if let Err(e) = self
                .arbiter
                .handle_rig(since_epoch(), info, Observed::Mining)
            {
                warn!(rig = %id, error = %e, side = %e.side(), retry = %e.retry(), "rig not taken by the arbiter");
            }
        }
    }

    /// A rig's management API answered: audited the first time (it holds budget from now).
    fn answered(&mut self, rig: &RigId) {
        if self.registry.answered(rig) {
            let at = self
                .registry
                .rigs
                .get(rig)
                .and_then(|e| e.control.as_ref())
                .map(|c| c.describe())
                .unwrap_or_default();
            info!(rig = %rig, api = %at, "rig verified: its management API answered");
            self.audit.record(AuditEvent::now(
                "registry",
                "rig-verified",
                format!("{} ({at})", rig.0),
                None,
            ));
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
            self.sleep_commanded.remove(&rig);
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

    /// After a reset: a rig not yet confirmed whose firmware now says which it is. Found
    /// asleep, it is pinned first (which also repeats the sleep command, harmless to a
    /// sleeping rig), so the confirmation that follows can never let the plan wake it.
    fn settle_after_reset(&mut self, rig: &RigId, observed: Option<Observed>) {
        let Some(unconfirmed) = &mut self.unconfirmed else {
            return;
        };
        if observed.is_none() || !unconfirmed.remove(rig) {
            return;
        }
        if observed == Some(Observed::Asleep) {
            let pin = Operator {
                who: "reset-power-state".to_owned(),
                why: "found asleep after the power state was reset: resume it by hand".to_owned(),
            };
            let command = OperatorCommand::DrainRig { rig: rig.clone() };
            if let Err(e) = self.arbiter.handle_operator(since_epoch(), pin, command) {
                warn!(rig = %rig, error = %e, side = %e.side(), retry = %e.retry(), "could not pin a rig found asleep");
            }
        }
    }

    /// After a reset: rigs not yet confirmed whose shares are being accepted mine.
    fn confirm_by_shares(&mut self) {
        let Some(unconfirmed) = &mut self.unconfirmed else {
            return;
        };
        let now_ms = unix_ms();
        let flowing: Vec<RigId> = unconfirmed
            .iter()
            .filter(|id| {
                self.registry.rigs.get(*id).is_some_and(|e| {
                    e.last_share_unix_ms > 0
                        && u128::from(now_ms.saturating_sub(e.last_share_unix_ms))
                            < SHARE_FLOW.as_millis()
                })
            })
            .cloned()
            .collect();
        let now = Instant::now();
        for id in flowing {
            unconfirmed.remove(&id);
            if let Some(entry) = self.registry.rigs.get(&id) {
                let info = self.registry.info(entry, now);
                if let Err(e) = self
                    .arbiter
                    .handle_rig(since_epoch(), info, Observed::Mining)
                {
                    warn!(rig = %id, error = %e, side = %e.side(), retry = %e.retry(), "rig not taken by the arbiter");
                }
            }
        }
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
                    } else {
                        self.sleep_commanded.remove(&rig);
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
                Action::Escalate { rig, state, .. } => {
                    warn!(rig = %rig, ?state, "rig did not confirm: needs a person (no PDU adapter configured)");
                }
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

    fn persist(&mut self, force: bool) {
        let Some(path) = &self.state_file else { return };
        let now = Instant::now();
        if !force
            && self
                .last_persist_at
                .is_some_and(|t| now.saturating_duration_since(t) < PERSIST_EVERY)
        {
            return;
        }
        let Ok(mut plan) = serde_json::to_value(self.arbiter.persist()) else {
            return;
        };
        // What the registry knows of each rig (how it proved itself, its address) travels
        // with the plan: a restart must not forget which names are machines.
        if let (Some(map), Ok(known)) = (
            plan.as_object_mut(),
            serde_json::to_value(self.registry.known()),
        ) {
            map.insert(persist::REGISTRY_KEY.to_owned(), known);
        }
        // The plan changes only when something but its `saved_at` stamp does: compare without
        // it, or an idle site would rewrite (and fsync) the file every second.
        let stamp = plan.as_object_mut().and_then(|m| m.remove("saved_at"));
        if self.last_persisted.as_ref() == Some(&plan) {
            return;
        }
        let mut stamped = plan.clone();
        if let (Some(m), Some(stamp)) = (stamped.as_object_mut(), stamp) {
            m.insert("saved_at".to_owned(), stamp);
        }
        self.last_persist_at = Some(now);
        match persist::write_atomically(path, stamped.to_string().as_bytes()) {
            Ok(()) => self.last_persisted = Some(plan),
            Err(e) => warn!(error = %e, path = %path.display(), "cannot persist the power plan"),
        }
    }

    fn publish(&mut self, force: bool) {
        let now = Instant::now();
        if !force
            && self
                .last_publish_at
                .is_some_and(|t| now.saturating_duration_since(t) < PUBLISH_EVERY)
        {
            return;
        }
        self.last_publish_at = Some(now);
        self.view_tx.send_replace(self.build_view());
    }

    fn build_view(&self) -> Arc<PowerView> {
        let now = Instant::now();
        let rigs = self
            .arbiter
            .rigs()
            .map(|v| {
                let entry = self.registry.rigs.get(&v.info.id);
                let (power_w, source, age) = match entry {
                    Some(e) => {
                        let (w, s, a) = self.registry.power(e, now);
                        (w, Some(s), a)
                    }
                    None => (v.info.power.0 as f64, None, None),
                };
                let group = entry
                    .and_then(|e| e.group)
                    .and_then(|g| self.registry.groups().get(g));
                let identity = entry.map(|e| e.identity);
                (
                    v.info.id.clone(),
                    RigPower {
                        state: v.state,
                        group: v.info.group.0.clone(),
                        model: group.map(|g| g.model.clone()).filter(|m| !m.is_empty()),
                        power_w,
                        power_source: source,
                        power_age_secs: age.map(|a| a.as_secs_f64()),
                        pinned: v.pinned.map(|p| format!("{}: {}", p.who, p.why)),
                        escalated: v.escalated,
                        management: entry.and_then(|e| e.control.as_ref()).map(|c| c.describe()),
                        identity,
                        identity_conflicts: entry.map_or(0, |e| e.conflicts),
                        last_conflict: entry.and_then(|e| e.last_conflict),
                    },
                )
            })
            .collect();
        let conn_rigs = self
            .registry
            .rigs
            .values()
            .flat_map(|e| e.conns.iter().map(|c| (*c, e.id.clone())))
            .collect();
        Arc::new(PowerView {
            snapshot: self.arbiter.snapshot(),
            rigs,
            conn_rigs,
            gpu_shed: self.shed.status(),
        })
    }
}

/// An arbiter event as an audit verb and detail.
fn describe(event: &crate::control::arbiter::Event) -> (String, String) {
    let json = serde_json::to_value(event).unwrap_or_default();
    let what = json
        .get("event")
        .and_then(|v| v.as_str())
        .unwrap_or("event")
        .replace('_', "-");
    let mut detail = json;
    if let Some(map) = detail.as_object_mut() {
        map.remove("event");
    }
    (what, detail.to_string())
}

/// Applies the GPU budget the arbiter decided, latest value wins, retrying failures. Each
/// call is bounded by the adapter itself ([`GpuControl::call_bound`]; a margin on top only
/// catches an adapter that would not stop).
///
/// `held` tells the controller the most the GPU side may hold: the budget applied, or after a
/// call that failed or timed out (its outcome unknown), the higher of that and the one tried.
pub(super) async fn apply_budgets(
    gpu: Arc<dyn GpuControl>,
    mut budget: watch::Receiver<Option<f64>>,
    held: watch::Sender<Option<f64>>,
    audit: Arc<AuditLog>,
    shutdown: CancellationToken,
) {
    let mut applied: Option<f64> = None;
    loop {
        let target = *budget.borrow_and_update();
        if let Some(kw) = target.filter(|kw| Some(*kw) != applied) {
            let bound = gpu.call_bound().saturating_add(GPU_CALL_MARGIN);
            let result = tokio::time::timeout(bound, gpu.set_budget_kw(kw))
                .await
                .unwrap_or_else(|_| {
                    Err(PortError::new(
                        Side::Scheduler,
                        Retry::Yes,
                        format!("no answer within {bound:?}"),
                    ))
                });
            match result {
                Ok(()) => {
                    info!(kw, gpu = %gpu.describe(), "GPU budget set");
                    audit.record(AuditEvent::now(
                        "gpu",
                        "budget-applied",
                        format!("{kw:.1} kW"),
                        None,
                    ));
                    applied = Some(kw);
                    held.send_replace(Some(kw));
                }
                Err(e) => {
                    warn!(
                        kw,
                        error = %e,
                        side = %e.side(),
                        retry = %e.retry(),
                        "GPU budget not applied; retrying in 1 s"
                    );
                    let before = (*held.borrow()).unwrap_or(kw);
                    held.send_replace(Some(before.max(kw)));
                    tokio::select! {
                        _ = shutdown.cancelled() => return,
                        _ = tokio::time::sleep(Duration::from_secs(1)) => continue,
                    }
                }
            }
        }
        tokio::select! {
            _ = shutdown.cancelled() => return,
            changed = budget.changed() => if changed.is_err() { return },
        }
    }
}

/// `reply` for operator commands.
pub(super) type Reply = oneshot::Sender<Result<Vec<RigId>, String>>;

/// The persisted plan and what the registry kept: `Ok(None)` if there is no file (first run),
/// an error naming the problem if it exists but cannot be read or parsed. Never touches the
/// file.
pub(super) fn restore_state(path: &std::path::Path) -> Result<Option<persist::PlanFile>, String> {
    let bytes = match std::fs::read(path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(format!("cannot read it: {e}")),
    };
    serde_json::from_slice(&bytes)
        .map(Some)
        .map_err(|e| format!("cannot parse it: {e}"))
}
