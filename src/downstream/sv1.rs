//! One Stratum V1 miner: handshake, work, share validation, vardiff, moves between pools.
//!
//! The session task owns everything about its miner and writes to its socket itself, so the
//! order of what the miner sees is the order the task decided it in: `mining.set_difficulty`
//! always precedes the `mining.notify` it applies to. Work arrives through the upstream
//! connection's `watch` (latest wins); the `mining.notify` line is encoded once per upstream
//! job and the same bytes are written to every miner.
//!
//! Shares are validated here against the miner's own target; those that also meet the
//! pool's target go up and the miner's answer waits for the pool's verdict, so an upstream
//! reject is never turned into an "accepted".

use std::collections::{HashSet, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::BytesMut;
use futures_util::StreamExt;
use futures_util::stream::FuturesUnordered;
use hashshift_protocol::share::{
    Job, Rejection, ShareValidator, Submission, SubmittedVersion, Target, ValidatorConfig,
};
use hashshift_protocol::sv1::{
    ClientMessage, ClientRequest, ConfigureResult, ErrorCode, ExtensionResult, Id, Response,
    ServerCodec, ServerMessage, ServerNotification, SetExtranonce, StratumError, Submit,
    SubscribeResult, Sv1Error, Sv1Message,
};
use tokio::io::AsyncWriteExt;
use tokio::net::tcp::WriteHalf;
use tokio::sync::{mpsc, oneshot, watch};
use tokio_util::codec::FramedRead;
use tracing::{debug, info, warn};

use super::listener::Accepted;
use super::registry::MinerShared;
use super::vardiff::{Vardiff, VardiffSettings};
use crate::upstream::connection::{SubmitOutcome, UpstreamSubmit};
use crate::upstream::extranonce::MinerExtranonce;
use crate::upstream::manager::{Assignment, Control, PoolManager};
use crate::upstream::work::{UpstreamJob, WorkState};

/// Settings every SV1 session shares.
#[derive(Clone, Debug)]
pub struct SessionSettings {
    /// Vardiff bounds and rate.
    pub vardiff: VardiffSettings,
    /// Starting difficulty.
    pub initial_difficulty: f64,
    /// Longest line accepted.
    pub max_line_bytes: usize,
    /// Time to subscribe and authorize.
    pub handshake_timeout: Duration,
    /// A write that cannot complete in this time means the miner stopped reading.
    pub write_timeout: Duration,
    /// How long shutdown waits for shares in flight.
    pub drain_grace: Duration,
}

/// Consecutive bad lines or rejected shares after which a miner is dropped.
const MAX_CONSECUTIVE_ERRORS: u32 = 500;
/// Jobs a miner may still submit to (older ones are stale).
const JOBS_KEPT: usize = 8;

type Pending =
    std::pin::Pin<Box<dyn std::future::Future<Output = (Id, SubmitOutcome, f64)> + Send>>;

/// Why a session ended, for the log line.
#[derive(Debug, thiserror::Error)]
enum End {
    #[error("miner closed the connection")]
    Closed,
    #[error("I/O error: {0}")]
    Io(#[from] std::io::Error),
    #[error("miner stopped reading (write timed out)")]
    Stuck,
    #[error("line longer than {0} bytes")]
    LineTooLong(usize),
    #[error("too many consecutive errors")]
    TooManyErrors,
    #[error("did not subscribe and authorize in time")]
    HandshakeTimeout,
    #[error("no pool available")]
    NoPool,
    #[error("moved to another pool by reconnect")]
    Reconnected,
    #[error("kicked by operator")]
    Kicked,
    #[error("proxy shutting down")]
    Shutdown,
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

struct Session<'a> {
    settings: &'a SessionSettings,
    shared: Arc<MinerShared>,
    writer: WriteHalf<'a>,
    scratch: BytesMut,
    assignment: Option<Assignment>,
    work: Option<watch::Receiver<Arc<WorkState>>>,
    layout: Option<Layout>,
    subscribed: bool,
    extranonce_subscribed: bool,
    workers: HashSet<String>,
    requested_mask: Option<u32>,
    granted_mask: u32,
    validator: ShareValidator,
    jobs: VecDeque<(u32, Arc<UpstreamJob>)>,
    vardiff: Vardiff,
    sent_difficulty: Option<f64>,
    pending: FuturesUnordered<Pending>,
    consecutive_errors: u32,
}

/// Runs one miner connection to its end.
pub async fn serve(
    mut accepted: Accepted,
    settings: Arc<SessionSettings>,
    manager: Arc<PoolManager>,
) {
    let shared = Arc::new(MinerShared::new(accepted.id, accepted.peer));
    let (control_tx, mut control_rx) = mpsc::channel(4);
    let (read, writer) = accepted.stream.split();
    // A small initial buffer: an idle miner should cost little memory; it grows if needed.
    let mut reader = FramedRead::with_capacity(
        read,
        ServerCodec::with_max_line_len(settings.max_line_bytes),
        256,
    );
    let now = Instant::now();
    let mut s = Session {
        settings: &settings,
        shared: shared.clone(),
        writer,
        scratch: BytesMut::new(),
        assignment: None,
        work: None,
        layout: None,
        subscribed: false,
        extranonce_subscribed: false,
        workers: HashSet::new(),
        requested_mask: None,
        granted_mask: 0,
        validator: ShareValidator::new(
            ValidatorConfig {
                max_jobs: JOBS_KEPT,
                ..ValidatorConfig::default()
            },
            Vec::new(),
            Target::from_difficulty(settings.initial_difficulty).unwrap_or(Target::DIFF1),
        ),
        jobs: VecDeque::new(),
        vardiff: Vardiff::new(settings.vardiff, settings.initial_difficulty, now),
        sent_difficulty: None,
        pending: FuturesUnordered::new(),
        consecutive_errors: 0,
    };
    let handshake_deadline = tokio::time::Instant::now() + settings.handshake_timeout;
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);

    let end: End = loop {
        let ready = s.is_working();
        tokio::select! {
            _ = accepted.shutdown.cancelled() => break End::Shutdown,
            _ = tokio::time::sleep_until(handshake_deadline), if !ready => break End::HandshakeTimeout,
            control = control_rx.recv() => match control {
                Some(Control::Reassign(a)) => {
                    if let Err(end) = s.reassign(a).await { break end; }
                }
                Some(Control::Kick) | None => break End::Kicked,
            },
            changed = async { match s.work.as_mut() { Some(w) => w.changed().await, None => std::future::pending().await } } => {
                if changed.is_err() {
                    // The connection task ended (shutdown): nothing more will come.
                    s.work = None;
                    continue;
                }
                if let Err(end) = s.on_work().await { break end; }
            }
            Some((id, outcome, credited)) = s.pending.next(), if !s.pending.is_empty() => {
                if let Err(end) = s.on_upstream_verdict(id, outcome, credited).await { break end; }
            }
            line = reader.next() => {
                let message = match line {
                    None => break End::Closed,
                    Some(Err(e)) => break End::Io(e),
                    Some(Ok(Err(Sv1Error::LineTooLong { max }))) => break End::LineTooLong(max),
                    Some(Ok(Err(e))) => {
                        warn!(error = %e, "bad line from miner");
                        if let Some(id) = e.request_id().cloned() {
                            let err = StratumError::with_message(ErrorCode::Other, e.to_string());
                            if let Err(end) = s.send(&ServerMessage::Response(Response::error(id, err))).await { break end; }
                        }
                        if s.count_error() { break End::TooManyErrors; }
                        continue;
                    }
                    Some(Ok(Ok(m))) => m,
                };
                if let Err(end) = s.on_message(message, &manager, &control_tx).await { break end; }
            }
            _ = tick.tick() => {
                if let Err(end) = s.on_tick().await { break end; }
            }
        }
    };

    // Shares already sent to the pool still get their verdict relayed, within a grace period.
    if !s.pending.is_empty() && !matches!(end, End::Closed | End::Io(_) | End::Stuck) {
        let grace = tokio::time::sleep(settings.drain_grace);
        tokio::pin!(grace);
        loop {
            tokio::select! {
                _ = &mut grace => break,
                next = s.pending.next() => match next {
                    Some((id, outcome, credited)) => { if s.on_upstream_verdict(id, outcome, credited).await.is_err() { break; } }
                    None => break,
                },
            }
        }
    }
    manager.release(shared.id);
    let snapshot = shared.counters.snapshot();
    match end {
        End::Closed | End::Shutdown | End::Reconnected => {
            info!(reason = %end, accepted = snapshot.accepted, rejected = snapshot.rejected, "miner disconnected")
        }
        _ => {
            warn!(reason = %end, accepted = snapshot.accepted, rejected = snapshot.rejected, "miner dropped")
        }
    }
}

impl Session<'_> {
    fn is_working(&self) -> bool {
        self.subscribed && !self.workers.is_empty()
    }

    fn count_error(&mut self) -> bool {
        self.consecutive_errors += 1;
        self.consecutive_errors >= MAX_CONSECUTIVE_ERRORS
    }

    async fn write(&mut self, bytes: &[u8]) -> Result<(), End> {
        match tokio::time::timeout(self.settings.write_timeout, self.writer.write_all(bytes)).await
        {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(End::Io(e)),
            Err(_) => Err(End::Stuck),
        }
    }

    async fn send(&mut self, message: &ServerMessage) -> Result<(), End> {
        self.scratch.clear();
        if message.encode_line(&mut self.scratch).is_err() {
            return Ok(());
        }
        let line = self.scratch.split().freeze();
        self.write(&line).await
    }

    async fn reply(
        &mut self,
        id: Id,
        result: Result<serde_json::Value, StratumError>,
    ) -> Result<(), End> {
        let response = match result {
            Ok(v) => Response::ok(id, v),
            Err(e) => Response::error(id, e),
        };
        self.send(&ServerMessage::Response(response)).await
    }

    /// Takes a place on a pool, waiting briefly if none is ready (pools still connecting).
    async fn ensure_assigned(
        &mut self,
        manager: &PoolManager,
        control: &mpsc::Sender<Control>,
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

    async fn on_message(
        &mut self,
        message: ClientMessage,
        manager: &PoolManager,
        control: &mpsc::Sender<Control>,
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
                self.ensure_assigned(manager, control).await?;
                let upstream_mask = self.current_work().map_or(0, |w| w.version_mask);
                let mut result = ConfigureResult::default();
                if c.has_extension("version-rolling") {
                    let requested = c.version_rolling_mask.unwrap_or(0xffff_ffff);
                    self.requested_mask = Some(requested);
                    self.granted_mask = requested & upstream_mask;
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
                self.reply(id, Ok(result.to_result())).await
            }
            ClientRequest::Subscribe(_) => {
                self.ensure_assigned(manager, control).await?;
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
                self.reply(id, Ok(result.to_result())).await?;
                self.maybe_start().await
            }
            ClientRequest::Authorize(auth) => {
                if self.workers.len() < 16 {
                    if self.workers.is_empty() {
                        tracing::Span::current().record("worker", auth.user.as_str());
                        self.shared.set_worker(&auth.user);
                    }
                    self.workers.insert(auth.user);
                }
                self.reply(id, Ok(serde_json::Value::Bool(true))).await?;
                self.maybe_start().await
            }
            ClientRequest::ExtranonceSubscribe => {
                self.set_extranonce_subscribed();
                self.reply(id, Ok(serde_json::Value::Bool(true))).await
            }
            ClientRequest::SuggestDifficulty(d) => {
                let changed = self.vardiff.suggest(d, Instant::now());
                if !id.is_null() {
                    self.reply(id, Ok(serde_json::Value::Bool(true))).await?;
                }
                if changed.is_some() && self.sent_difficulty.is_some() {
                    self.retarget().await?;
                }
                Ok(())
            }
            ClientRequest::Submit(submit) => self.on_submit(id, submit).await,
            other => {
                debug!(method = other.method(), "unsupported method");
                if id.is_null() {
                    return Ok(());
                }
                let err = StratumError::with_message(
                    ErrorCode::Other,
                    format!("unsupported method {}", other.method()),
                );
                self.reply(id, Err(err)).await
            }
        }
    }

    fn set_extranonce_subscribed(&mut self) {
        self.extranonce_subscribed = true;
        self.shared.set_movable(true);
    }

    /// Starts sending work once subscribed and authorized.
    async fn maybe_start(&mut self) -> Result<(), End> {
        if self.is_working() && self.sent_difficulty.is_none() {
            self.send_current_job(true).await?;
        }
        Ok(())
    }

    /// Sends difficulty (if changed) then the newest job.
    async fn send_current_job(&mut self, clean: bool) -> Result<(), End> {
        let Some(work) = self.current_work() else {
            return Ok(());
        };
        let Some(job) = work.job.clone() else {
            return Ok(());
        };
        self.send_difficulty_if_changed().await?;
        let line = if clean == job.clean && !self.jobs.iter().any(|(id, _)| *id == job.id) {
            self.add_job(job.id, &job, clean);
            job.notify_line.clone()
        } else {
            let (id, line) = job.reissue(clean);
            self.add_job(id, &job, clean);
            line
        };
        self.write(&line).await
    }

    fn add_job(&mut self, id: u32, job: &Arc<UpstreamJob>, clean: bool) {
        if self
            .validator
            .add_job(id, Job::Extended(job.job.clone()), clean)
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

    async fn send_difficulty_if_changed(&mut self) -> Result<(), End> {
        let d = self.vardiff.difficulty();
        if self.sent_difficulty != Some(d) {
            self.validator
                .set_miner_target(Target::from_difficulty(d).unwrap_or(Target::DIFF1));
            self.shared.difficulty.set(d);
            self.sent_difficulty = Some(d);
            self.send(&ServerMessage::notification(
                ServerNotification::SetDifficulty(d),
            ))
            .await?;
        }
        Ok(())
    }

    /// A new difficulty: announce it and re-issue the current job under a new id, so the
    /// miner's next shares are judged at the new target and older ones at the old one.
    async fn retarget(&mut self) -> Result<(), End> {
        if !self.is_working() {
            return Ok(());
        }
        self.send_difficulty_if_changed().await?;
        let Some(job) = self.current_work().and_then(|w| w.job.clone()) else {
            return Ok(());
        };
        let (id, line) = job.reissue(false);
        self.add_job(id, &job, false);
        self.write(&line).await
    }

    async fn on_work(&mut self) -> Result<(), End> {
        let Some(work) = self.work.as_mut().map(|w| w.borrow_and_update().clone()) else {
            return Ok(());
        };
        if let Some(layout) = &self.layout {
            if layout.session != work.session {
                // The pool gave this connection a new extranonce1 (reconnect or
                // mining.set_extranonce): this miner's extranonce must change too.
                if work.extranonce2_size == 0 {
                    return Ok(()); // not subscribed yet upstream; wait
                }
                return self.change_extranonce(&work).await;
            }
        }
        if work.version_mask & self.granted_mask != self.granted_mask {
            if let Some(requested) = self.requested_mask {
                self.granted_mask = requested & work.version_mask;
                self.validator.set_version_rolling_mask(self.granted_mask);
                self.send(&ServerMessage::notification(
                    ServerNotification::SetVersionMask(self.granted_mask),
                ))
                .await?;
            }
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
        self.send_current_job(job.clean).await
    }

    /// Applies a new extranonce: `mining.set_extranonce` for miners that subscribed to it,
    /// `client.reconnect` (back to this proxy) for the rest.
    async fn change_extranonce(&mut self, work: &WorkState) -> Result<(), End> {
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
            self.send(&ServerMessage::notification(ServerNotification::Reconnect(
                Default::default(),
            )))
            .await?;
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
        self.send(&ServerMessage::notification(
            ServerNotification::SetExtranonce(set),
        ))
        .await?;
        // Re-send difficulty with the first job of the new session, as firmware expects.
        self.sent_difficulty = None;
        if self.is_working() {
            self.send_current_job(true).await
        } else {
            Ok(())
        }
    }

    async fn reassign(&mut self, a: Assignment) -> Result<(), End> {
        let mut work = a.conn.work.clone();
        work.mark_changed();
        self.assignment = Some(a);
        self.work = Some(work);
        // Force the extranonce path in on_work: the new connection has its own session.
        if let Some(layout) = self.layout.as_mut() {
            layout.session = 0;
        }
        Ok(())
    }

    async fn on_submit(&mut self, id: Id, submit: Submit) -> Result<(), End> {
        if !self.subscribed {
            return self
                .reply(id, Err(StratumError::new(ErrorCode::NotSubscribed)))
                .await;
        }
        if !self.workers.contains(&submit.worker) {
            return self
                .reply(id, Err(StratumError::new(ErrorCode::UnauthorizedWorker)))
                .await;
        }
        let Ok(job_id) = u32::from_str_radix(&submit.job_id, 16) else {
            self.shared.counters.reject();
            return self
                .reply(id, Err(StratumError::new(ErrorCode::JobNotFound)))
                .await;
        };
        let version = match submit.version_bits {
            Some(bits) => SubmittedVersion::RolledBits(bits),
            None => SubmittedVersion::Job,
        };
        let share = Submission {
            job_id,
            extranonce: &submit.extranonce2,
            ntime: submit.ntime,
            nonce: submit.nonce,
            version,
        };
        let accepted = match self.validator.validate(&share) {
            Ok(a) => a,
            Err(rejection) => {
                self.shared.counters.reject();
                debug!(%rejection, "share rejected");
                let err = StratumError {
                    code: i64::from(rejection.sv1_code()),
                    message: rejection.sv1_message().to_owned(),
                };
                let too_many =
                    !matches!(rejection, Rejection::StaleJob { .. }) && self.count_error();
                self.reply(id, Err(err)).await?;
                return if too_many {
                    Err(End::TooManyErrors)
                } else {
                    Ok(())
                };
            }
        };
        self.consecutive_errors = 0;
        let credited = accepted.credited_difficulty;
        let job = self
            .jobs
            .iter()
            .find(|(j, _)| *j == job_id)
            .map(|(_, j)| j.clone());
        let upstream = job.filter(|j| accepted.is_block || j.pool_target.is_met_by(&accepted.hash));
        let (Some(job), Some(a), Some(layout)) =
            (upstream, self.assignment.as_ref(), self.layout.as_ref())
        else {
            self.accept(credited);
            return self.reply(id, Ok(serde_json::Value::Bool(true))).await;
        };
        if accepted.is_block {
            let mut shown = accepted.hash;
            shown.reverse();
            info!(hash = %hex::encode(shown), pool_job = %job.pool_job_id, "BLOCK FOUND");
            self.shared
                .counters
                .blocks
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
        let mut extranonce2 = layout.extranonce.upstream_prefix.clone();
        extranonce2.extend_from_slice(&submit.extranonce2);
        let (reply_tx, reply_rx) = oneshot::channel();
        let up = UpstreamSubmit {
            worker: submit.worker.as_str().into(),
            job: job.clone(),
            extranonce2,
            ntime: submit.ntime,
            nonce: submit.nonce,
            version_bits: submit.version_bits.map(|b| b & self.granted_mask),
            difficulty: job.pool_difficulty,
            reply: reply_tx,
        };
        // The pool connection has a deep queue; if even that is full the pool is not keeping
        // up and the share is reported lost rather than blocking this miner.
        if let Err(e) = a.conn.submit.try_send(up) {
            let (tokio::sync::mpsc::error::TrySendError::Full(up)
            | tokio::sync::mpsc::error::TrySendError::Closed(up)) = e;
            drop(up);
            self.shared.counters.lose();
            let err = StratumError::with_message(ErrorCode::Other, "pool connection unavailable");
            return self.reply(id, Err(err)).await;
        }
        self.pending.push(Box::pin(async move {
            let outcome = reply_rx
                .await
                .unwrap_or(SubmitOutcome::Lost("pool connection ended"));
            (id, outcome, credited)
        }));
        Ok(())
    }

    fn accept(&mut self, credited: f64) {
        self.shared.counters.accept(credited);
        self.shared.touch();
        self.vardiff.on_share(credited);
    }

    async fn on_upstream_verdict(
        &mut self,
        id: Id,
        outcome: SubmitOutcome,
        credited: f64,
    ) -> Result<(), End> {
        match outcome {
            SubmitOutcome::Accepted => {
                self.accept(credited);
                self.reply(id, Ok(serde_json::Value::Bool(true))).await
            }
            SubmitOutcome::Rejected(e) => {
                self.shared.counters.reject();
                debug!(code = e.code, message = %e.message, "pool rejected share");
                self.reply(id, Err(e)).await
            }
            SubmitOutcome::Lost(why) => {
                self.shared.counters.lose();
                warn!(why, "share lost upstream");
                self.reply(id, Err(StratumError::with_message(ErrorCode::Other, why)))
                    .await
            }
        }
    }

    async fn on_tick(&mut self) -> Result<(), End> {
        if self.sent_difficulty.is_some() && self.vardiff.poll(Instant::now()).is_some() {
            self.retarget().await?;
        }
        Ok(())
    }
}
