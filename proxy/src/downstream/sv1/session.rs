//! The state of one SV1 miner and its synchronous event handlers.
//!
//! Handlers take an event (a line, new work, a verdict, a tick) and append what the miner
//! must see to the [`Outbox`]; none of them awaits, so one event is handled completely before
//! the next and the order of output is the order of decisions. Shares and the pool's verdicts
//! on them are handled in [`shares`].

use std::collections::{HashSet, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::stream::FuturesUnordered;
use hashshift_protocol::share::{Job, ShareValidator, Target, ValidatorConfig};
use hashshift_protocol::sv1::{
    ClientMessage, ClientRequest, ConfigureResult, ErrorCode, ExtensionResult, Id, Response,
    ServerMessage, ServerNotification, SetExtranonce, StratumError, SubscribeResult, Sv1Error,
    Sv1Message,
};
use tokio::sync::watch;
use tracing::{debug, warn};

use super::SessionSettings;
use crate::downstream::outbox::{Outbox, Overflow};
use crate::downstream::vardiff::Vardiff;
use crate::pool_link::extranonce::MinerExtranonce;
use crate::pool_link::mailbox::MailboxSender;
use crate::pool_link::miner::MinerShared;
use crate::pool_link::work::{UpstreamJob, WorkState};
use crate::pool_link::{Assignment, Pools};
pub(super) use shares::PendingShare;

mod shares;

/// Consecutive bad lines or rejected shares after which a miner is dropped.
const MAX_CONSECUTIVE_ERRORS: u32 = 500;
/// Jobs a miner may still submit to (older ones are stale).
const JOBS_KEPT: usize = 8;
/// Worker names one connection may authorize.
const MAX_WORKERS: usize = 16;

/// Waits for new work on the miner's connection (forever when it has none).
pub(super) async fn work_changed(
    work: &mut Option<watch::Receiver<Arc<WorkState>>>,
) -> Result<(), watch::error::RecvError> {
    match work.as_mut() {
        Some(w) => w.changed().await,
        None => std::future::pending().await,
    }
}

/// Why a session ended, for the log line.
#[derive(Debug, thiserror::Error)]
pub(super) enum End {
    #[error("miner closed the connection")]
    Closed,
    #[error("I/O error: {0}")]
    Io(#[from] std::io::Error),
    #[error("miner stopped reading (nothing written for the write timeout)")]
    Stuck,
    #[error(transparent)]
    Overflow(#[from] Overflow),
    #[error("line longer than {0} bytes")]
    LineTooLong(usize),
    #[error("too many consecutive errors")]
    TooManyErrors,
    #[error("did not subscribe and authorize in time")]
    HandshakeTimeout,
    #[error("sent nothing for {0} s (idle timeout)")]
    Idle(u64),
    #[error("no pool available")]
    NoPool,
    #[error("moved to another pool by reconnect")]
    Reconnected,
    #[error("disconnected by the control plane (operator kick, or the rig confirmed asleep)")]
    Kicked,
    #[error("proxy shutting down")]
    Shutdown,
}

impl End {
    /// Whether verdicts of shares in flight can still reach the miner.
    pub(super) fn relays_pending(&self) -> bool {
        !matches!(
            self,
            End::Closed | End::Io(_) | End::Stuck | End::Overflow(_)
        )
    }
}

/// A miner's extranonces on one upstream session.
#[derive(Clone, Debug, PartialEq)]
struct Layout {
    session: u64,
    extranonce: MinerExtranonce,
}

impl Layout {
    fn new(work: &WorkState, a: &Assignment) -> Option<Layout> {
        let extranonce = MinerExtranonce::new(
            &work.extranonce1,
            work.extranonce2_size,
            a.prefix_bytes,
            a.slot,
        )?;
        Some(Layout {
            session: work.session,
            extranonce,
        })
    }
}

/// One miner's state.
pub(super) struct Session {
    settings: Arc<SessionSettings>,
    shared: Arc<MinerShared>,
    assignment: Option<Assignment>,
    /// The current pool connection's work (read by the I/O loop for change notifications).
    pub(super) work: Option<watch::Receiver<Arc<WorkState>>>,
    layout: Option<Layout>,
    subscribed: bool,
    extranonce_subscribed: bool,
    workers: HashSet<String>,
    /// The mask the miner asked for, once version rolling was granted to it (BIP310: only
    /// then may it be sent `mining.set_version_mask`).
    requested_mask: Option<u32>,
    /// The mask the miner may roll now: `requested & the pool's mask` (BIP310 `last_mask`).
    granted_mask: u32,
    validator: ShareValidator,
    jobs: VecDeque<(u32, Arc<UpstreamJob>)>,
    vardiff: Vardiff,
    sent_difficulty: Option<f64>,
    /// Shares forwarded to the pool, waiting for its verdict.
    pub(super) pending: FuturesUnordered<PendingShare>,
    consecutive_errors: u32,
}

impl Session {
    pub(super) fn new(settings: Arc<SessionSettings>, shared: Arc<MinerShared>) -> Self {
        let validator = ShareValidator::new(
            ValidatorConfig {
                max_jobs: JOBS_KEPT,
                ..ValidatorConfig::default()
            },
            Vec::new(),
            Target::from_difficulty(settings.initial_difficulty).unwrap_or(Target::DIFF1),
        );
        let vardiff = Vardiff::new(
            settings.vardiff,
            settings.initial_difficulty,
            Instant::now(),
        );
        Session {
            settings,
            shared,
            assignment: None,
            work: None,
            layout: None,
            subscribed: false,
            extranonce_subscribed: false,
            workers: HashSet::new(),
            requested_mask: None,
            granted_mask: 0,
            validator,
            jobs: VecDeque::new(),
            vardiff,
            sent_difficulty: None,
            pending: FuturesUnordered::new(),
            consecutive_errors: 0,
        }
    }

    /// Subscribed and authorized: jobs flow.
    pub(super) fn is_working(&self) -> bool {
        self.subscribed && !self.workers.is_empty()
    }

    /// Has a place on a pool connection.
    pub(super) fn is_assigned(&self) -> bool {
        self.assignment.is_some()
    }

    /// The connection's work channel closed (proxy shutting down).
    pub(super) fn drop_work(&mut self) {
        self.work = None;
    }

    fn count_error(&mut self) -> bool {
        self.consecutive_errors += 1;
        self.consecutive_errors >= MAX_CONSECUTIVE_ERRORS
    }

    fn send(&mut self, out: &mut Outbox, message: &ServerMessage) -> Result<(), End> {
        if let Err(error) = message.encode_line(out.buf_mut()) {
            // Encoding owned values into memory does not fail in practice; say so if it does.
            warn!(%error, "cannot encode a message for the miner");
        }
        Ok(out.check()?)
    }

    fn reply(
        &mut self,
        out: &mut Outbox,
        id: Id,
        result: Result<serde_json::Value, StratumError>,
    ) -> Result<(), End> {
        let response = match result {
            Ok(v) => Response::ok(id, v),
            Err(e) => Response::error(id, e),
        };
        self.send(out, &ServerMessage::Response(response))
    }

    fn reply_true(&mut self, out: &mut Outbox, id: Id) -> Result<(), End> {
        self.reply(out, id, Ok(serde_json::Value::Bool(true)))
    }

    /// A line that did not decode: an error reply where it had an id.
    pub(super) fn on_bad_line(&mut self, e: &Sv1Error, out: &mut Outbox) -> Result<(), End> {
        warn!(error = %e, "bad line from miner");
        if let Some(id) = e.request_id().cloned() {
            let err = StratumError::with_message(ErrorCode::Other, e.to_string());
            self.reply(out, id, Err(err))?;
        }
        if self.count_error() {
            return Err(End::TooManyErrors);
        }
        Ok(())
    }

    /// Takes a place on a pool, waiting briefly if none is ready (pools still connecting).
    pub(super) async fn ensure_assigned(
        &mut self,
        manager: &dyn Pools,
        control: &MailboxSender,
    ) -> Result<(), End> {
        if self.assignment.is_some() {
            return Ok(());
        }
        let deadline = Instant::now() + self.settings.handshake_timeout;
        loop {
            if let Some(a) = manager.assign(self.shared.id, control.clone(), self.shared.clone()) {
                let mut work = a.conn.work.clone();
                // Wait for the connection's first work so the subscribe answer has an extranonce.
                let ready =
                    tokio::time::timeout_at(deadline.into(), work.wait_for(|w| w.is_ready()))
                        .await
                        .is_ok_and(|r| r.is_ok());
                if !ready {
                    manager.release(self.shared.id);
                    return Err(End::NoPool);
                }
                work.mark_changed();
                self.assignment = Some(a);
                self.work = Some(work);
                return Ok(());
            }
            if Instant::now() >= deadline {
                return Err(End::NoPool);
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    fn current_work(&self) -> Option<Arc<WorkState>> {
        self.work.as_ref().map(|w| w.borrow().clone())
    }

    /// One request from the miner. Configure and subscribe expect [`Session::ensure_assigned`]
    /// to have run.
    pub(super) fn on_message(
        &mut self,
        message: ClientMessage,
        out: &mut Outbox,
    ) -> Result<(), End> {
        let (id, request) = match message {
            ClientMessage::Request { id, request } => (id, request),
            ClientMessage::Response(r) => {
                debug!(id = ?r.id, "response from miner ignored");
                return Ok(());
            }
        };
        match request {
            ClientRequest::Configure(c) => {
                let upstream_mask = self.current_work().map_or(0, |w| w.version_mask);
                let mut result = ConfigureResult::default();
                if c.has_extension("version-rolling") {
                    // BIP310: an absent mask means `ffffffff`; the answer is the intersection
                    // with what the pool granted us, so never a bit the pool did not grant.
                    // With nothing in common (or a pool without rolling) the answer is
                    // `"version-rolling": false`, and shares may not roll any bit.
                    let requested = c.version_rolling_mask.unwrap_or(0xffff_ffff);
                    self.granted_mask = requested & upstream_mask;
                    self.requested_mask = (self.granted_mask != 0).then_some(requested);
                    self.validator.set_version_rolling_mask(self.granted_mask);
                    result.version_rolling = Some(if self.granted_mask != 0 {
                        ExtensionResult::Accepted
                    } else {
                        ExtensionResult::Rejected
                    });
                    result.version_rolling_mask = Some(self.granted_mask);
                }
                if c.has_extension("minimum-difficulty") {
                    if let Some(min) = c.minimum_difficulty {
                        self.vardiff.set_floor(min, Instant::now());
                    }
                    result.minimum_difficulty = Some(ExtensionResult::Accepted);
                }
                if c.has_extension("subscribe-extranonce") {
                    self.set_extranonce_subscribed();
                    result.subscribe_extranonce = Some(ExtensionResult::Accepted);
                }
                self.reply(out, id, Ok(result.to_result()))
            }
            ClientRequest::Subscribe(_) => {
                let (Some(work), Some(a)) = (self.current_work(), self.assignment.clone()) else {
                    return Err(End::NoPool);
                };
                let Some(layout) = Layout::new(&work, &a) else {
                    warn!(
                        pool_extranonce2 = work.extranonce2_size,
                        "pool leaves too little extranonce2 to split"
                    );
                    return Err(End::NoPool);
                };
                self.validator
                    .set_extranonce_prefix(layout.extranonce.extranonce1.to_vec());
                self.validator
                    .set_extranonce_size(layout.extranonce.extranonce2_size);
                let sid = format!("{:x}", self.shared.id);
                let result = SubscribeResult::standard(
                    &sid,
                    layout.extranonce.extranonce1.to_vec(),
                    layout.extranonce.extranonce2_size,
                );
                self.layout = Some(layout);
                self.subscribed = true;
                self.reply(out, id, Ok(result.to_result()))?;
                self.maybe_start(out)
            }
            ClientRequest::Authorize(auth) => {
                if !crate::downstream::valid_worker_name(&auth.user) {
                    warn!(
                        bytes = auth.user.len(),
                        "worker name refused: empty, over 255 bytes or with control characters"
                    );
                    let err = StratumError::with_message(
                        ErrorCode::UnauthorizedWorker,
                        "worker name must be 1 to 255 bytes without control characters",
                    );
                    self.reply(out, id, Err(err))?;
                    return if self.count_error() {
                        Err(End::TooManyErrors)
                    } else {
                        Ok(())
                    };
                }
                if self.workers.len() < MAX_WORKERS {
                    if self.workers.is_empty() {
                        tracing::Span::current().record("worker", auth.user.as_str());
                        self.shared.set_worker(&auth.user);
                    }
                    self.workers.insert(auth.user);
                }
                self.reply_true(out, id)?;
                self.maybe_start(out)
            }
            ClientRequest::ExtranonceSubscribe => {
                self.set_extranonce_subscribed();
                self.reply_true(out, id)
            }
            ClientRequest::SuggestDifficulty(d) => {
                let changed = self.vardiff.suggest(d, Instant::now());
                if !id.is_null() {
                    self.reply_true(out, id)?;
                }
                if changed.is_some() && self.sent_difficulty.is_some() {
                    self.retarget(out)?;
                }
                Ok(())
            }
            ClientRequest::Submit(submit) => {
                // Timed here when answered at once, at the pool's verdict when sent up.
                let (read_at, waiting) = (Instant::now(), self.pending.len());
                self.on_submit(id, submit, out, read_at)?;
                if self.pending.len() == waiting {
                    let rtt = &self.settings.stats.share_round_trip;
                    rtt.observe_duration(read_at.elapsed());
                }
                Ok(())
            }
            other => {
                debug!(method = other.method(), "unsupported method");
                if id.is_null() {
                    return Ok(());
                }
                let err = StratumError::with_message(
                    ErrorCode::Other,
                    format!("unsupported method {}", other.method()),
                );
                self.reply(out, id, Err(err))
            }
        }
    }

    fn set_extranonce_subscribed(&mut self) {
        self.extranonce_subscribed = true;
        self.shared.set_movable(true);
    }

    /// Starts sending work once subscribed and authorized.
    fn maybe_start(&mut self, out: &mut Outbox) -> Result<(), End> {
        if self.is_working() && self.sent_difficulty.is_none() {
            self.send_current_job(out, true)?;
        }
        Ok(())
    }

    /// Sends difficulty (if changed) then the newest job.
    fn send_current_job(&mut self, out: &mut Outbox, clean: bool) -> Result<(), End> {
        let Some(job) = self.current_work().and_then(|w| w.job.clone()) else {
            return Ok(());
        };
        self.send_difficulty_if_changed(out)?;
        if clean == job.clean && !self.jobs.iter().any(|(id, _)| *id == job.id) {
            self.add_job(job.id, &job, clean);
            Ok(out.push_job(&job.notify_line)?)
        } else {
            let (id, line) = job.reissue(clean);
            self.add_job(id, &job, clean);
            Ok(out.push_job(&line)?)
        }
    }

    /// Registers `job` under downstream `id`. Duplicates are kept per pool job (`job.work`),
    /// so a re-issue after a difficulty change cannot take a share the miner already sent.
    fn add_job(&mut self, id: u32, job: &Arc<UpstreamJob>, clean: bool) {
        if self
            .validator
            .add_job_for_work(id, Job::Extended(job.job.clone()), clean, job.work)
            .is_err()
        {
            warn!(job = id, "pool job has invalid nbits; not sent");
            return;
        }
        if clean {
            self.jobs.clear();
        }
        self.jobs.push_back((id, job.clone()));
        while self.jobs.len() > JOBS_KEPT {
            self.jobs.pop_front();
        }
    }

    /// The difficulty to give the miner: vardiff's, but never above the pool's. Above it,
    /// every share would meet the pool target and the pool would credit each at its own
    /// (lower) difficulty, under-counting the miner's work.
    fn effective_difficulty(&self) -> f64 {
        let d = self.vardiff.difficulty();
        match self.current_work().map(|w| w.difficulty) {
            Some(pool) if pool.is_finite() && pool > 0.0 => d.min(pool),
            _ => d,
        }
    }

    fn send_difficulty_if_changed(&mut self, out: &mut Outbox) -> Result<(), End> {
        let d = self.effective_difficulty();
        if self.sent_difficulty != Some(d) {
            self.validator
                .set_miner_target(Target::from_difficulty(d).unwrap_or(Target::DIFF1));
            self.shared.difficulty.set(d);
            self.sent_difficulty = Some(d);
            self.send(
                out,
                &ServerMessage::notification(ServerNotification::SetDifficulty(d)),
            )?;
        }
        Ok(())
    }

    /// A new difficulty: announce it and re-issue the current job under a new id, so the
    /// miner's next shares are judged at the new target and older ones at the old one.
    fn retarget(&mut self, out: &mut Outbox) -> Result<(), End> {
        // Vardiff may want more than the pool's difficulty allows: then nothing changes.
        if !self.is_working() || self.sent_difficulty == Some(self.effective_difficulty()) {
            return Ok(());
        }
        self.send_difficulty_if_changed(out)?;
        let Some(job) = self.current_work().and_then(|w| w.job.clone()) else {
            return Ok(());
        };
        let (id, line) = job.reissue(false);
        self.add_job(id, &job, false);
        Ok(out.push_job(&line)?)
    }

    /// The pool connection published new work.
    pub(super) fn on_work(&mut self, out: &mut Outbox) -> Result<(), End> {
        let Some(work) = self.work.as_mut().map(|w| w.borrow_and_update().clone()) else {
            return Ok(());
        };
        if work.session == 0 || work.extranonce2_size == 0 {
            return Ok(()); // not subscribed yet upstream; wait
        }
        // Before any job of this work: the mask applies to it (and, BIP310, at once).
        self.sync_version_mask(&work, out)?;
        if let Some(layout) = &self.layout
            && layout.session != work.session
        {
            // The pool gave this connection a new extranonce1 (reconnect or
            // mining.set_extranonce): this miner's extranonce must change too.
            return self.change_extranonce(&work, out);
        }
        if !self.is_working() || self.sent_difficulty.is_none() {
            return Ok(());
        }
        let Some(job) = work.job.clone() else {
            return Ok(());
        };
        if self.jobs.back().is_some_and(|(_, j)| Arc::ptr_eq(j, &job)) {
            return Ok(());
        }
        self.send_current_job(out, job.clean)?;
        let fanout = &self.settings.stats.job_fanout;
        fanout.observe_duration(job.received_at.elapsed());
        Ok(())
    }

    /// Follows the pool's version-rolling mask (`mining.set_version_mask` upstream, or a move
    /// to another pool): a miner that was granted rolling gets `mining.set_version_mask` with
    /// `requested & pool mask` whenever that changes, narrower or wider, and its validator
    /// judges the next share by it (BIP310: the new mask is valid immediately).
    fn sync_version_mask(&mut self, work: &WorkState, out: &mut Outbox) -> Result<(), End> {
        let Some(requested) = self.requested_mask else {
            return Ok(());
        };
        let granted = requested & work.version_mask;
        if granted == self.granted_mask {
            return Ok(());
        }
        debug!(
            from = format_args!("{:08x}", self.granted_mask),
            to = format_args!("{granted:08x}"),
            "version-rolling mask changed"
        );
        self.granted_mask = granted;
        self.validator.set_version_rolling_mask(granted);
        self.send(
            out,
            &ServerMessage::notification(ServerNotification::SetVersionMask(granted)),
        )
    }

    /// Applies a new extranonce: `mining.set_extranonce` for miners that subscribed to it,
    /// `client.reconnect` (back to this proxy) for the rest.
    fn change_extranonce(&mut self, work: &WorkState, out: &mut Outbox) -> Result<(), End> {
        let Some(a) = self.assignment.clone() else {
            return Ok(());
        };
        let Some(layout) = Layout::new(work, &a) else {
            return Err(End::NoPool);
        };
        if !self.subscribed {
            self.layout = Some(layout);
            return Ok(());
        }
        if !self.extranonce_subscribed {
            self.send(
                out,
                &ServerMessage::notification(ServerNotification::Reconnect(Default::default())),
            )?;
            return Err(End::Reconnected);
        }
        self.validator
            .set_extranonce_prefix(layout.extranonce.extranonce1.to_vec());
        self.validator
            .set_extranonce_size(layout.extranonce.extranonce2_size);
        self.validator.retire_all();
        self.jobs.clear();
        let set = SetExtranonce {
            extranonce1: layout.extranonce.extranonce1.to_vec(),
            extranonce2_size: layout.extranonce.extranonce2_size,
        };
        self.layout = Some(layout);
        self.send(
            out,
            &ServerMessage::notification(ServerNotification::SetExtranonce(set)),
        )?;
        // Re-send difficulty with the first job of the new session, as firmware expects.
        self.sent_difficulty = None;
        if self.is_working() {
            self.send_current_job(out, true)
        } else {
            Ok(())
        }
    }

    /// The manager moved this miner to another connection.
    pub(super) fn reassign(&mut self, a: Assignment) {
        let mut work = a.conn.work.clone();
        work.mark_changed();
        self.assignment = Some(a);
        self.work = Some(work);
        // Force the extranonce path in on_work: the new connection has its own session.
        if let Some(layout) = self.layout.as_mut() {
            layout.session = 0;
        }
    }

    /// Periodic (and per-share) vardiff check.
    pub(super) fn on_tick(&mut self, out: &mut Outbox) -> Result<(), End> {
        if self.sent_difficulty.is_some() && self.vardiff.poll(Instant::now()).is_some() {
            self.retarget(out)?;
        }
        Ok(())
    }
}
