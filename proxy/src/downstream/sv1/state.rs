//! The state of one SV1 miner, sans-IO: events and the current time in, output and actions
//! out (the shape of `control::arbiter` and quinn-proto).
//!
//! - `handle_*` take one event (a line, the time the miner was last heard, new upstream work,
//!   a place on a pool, the pool's verdict on a share) and `now`. What the miner must see is
//!   appended to the caller's [`Outbox`]; what the connection task must do is queued as an
//!   [`Action`] ([`Session::poll_action`]: ask the pool manager for a place, submit a share).
//!   An `Err(End)` means the connection must end, for that reason.
//! - [`Session::poll_timeout`] is the next deadline (handshake, idle check, vardiff tick,
//!   waiting for a pool); the task calls [`Session::handle_timeout`] when it passes.
//!
//! No clock, socket, channel or sleep in here: the task ([`super::conn`]) reads the clock
//! for each event and passes it in, so the unit tests drive every order of events and any
//! amount of time directly.
//!
//! Invariants: one event is handled completely before the next, so the order of output is
//! the order of decisions (`mining.set_difficulty` always before the `mining.notify` it
//! applies to). `mining.configure` and `mining.subscribe` need a pool: before the miner has a
//! place, such a request is held with every line after it (bounded by [`MAX_HELD`]) until a
//! pool with work is found or [`SessionSettings::handshake_timeout`] passes, so requests are
//! still answered in the order they came. Shares and the pool's verdicts are in [`shares`],
//! upstream work, difficulty and extranonce changes in [`work`].

use std::collections::{HashSet, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use hashshift_protocol::share::{ShareValidator, Target, ValidatorConfig};
use hashshift_protocol::sv1::{
    ClientMessage, ClientRequest, ConfigureResult, ErrorCode, ExtensionResult, Id, Response,
    ServerMessage, StratumError, SubscribeResult, Sv1Error, Sv1Message,
};
use tracing::{debug, warn};

use super::SessionSettings;
use crate::downstream::MAX_CONSECUTIVE_ERRORS;
use crate::downstream::outbox::{Outbox, Overflow};
use crate::downstream::vardiff::Vardiff;
use crate::pool_link::extranonce::MinerExtranonce;
use crate::pool_link::miner::MinerShared;
use crate::pool_link::work::{UpstreamJob, WorkState};
pub(super) use shares::{ShareUp, Verdict};

mod shares;
#[cfg(test)]
mod tests;
mod work;

/// Jobs a miner may still submit to (older ones are stale).
const JOBS_KEPT: usize = 8;
/// Worker names one connection may authorize.
const MAX_WORKERS: usize = 16;
/// How often an idle miner's vardiff is checked (it is also checked on every share).
pub(super) const VARDIFF_TICK: Duration = Duration::from_secs(5);
/// How soon the pool manager is asked again when it had no place for a miner waiting to
/// subscribe (pools still connecting, or all down).
pub(super) const ASSIGN_RETRY: Duration = Duration::from_millis(200);
/// Lines held while a request waits for a pool. The connection task stops reading while one
/// waits, so only lines already read can arrive; more is a miner flooding a proxy that said
/// nothing yet.
pub(super) const MAX_HELD: usize = 64;

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

/// What the connection task must do for the session (besides writing its output).
#[derive(Debug)]
pub(super) enum Action {
    /// Ask the pool manager for a place; answer with [`Session::handle_assigned`] and the
    /// connection's work, or [`Session::handle_no_pool`].
    RequestPool,
    /// Send a share to the pool; its verdict comes back through [`Session::handle_verdict`],
    /// or [`Session::handle_submit_failed`] if it cannot be queued.
    Submit(ShareUp),
}

/// The miner's place on a pool connection, as far as its extranonce is concerned.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct Place {
    /// The extranonce prefix slot on the connection.
    pub slot: u32,
    /// Bytes of the pool's extranonce2 the proxy keeps.
    pub prefix_bytes: usize,
}

/// A miner's extranonces on one upstream session.
#[derive(Clone, Debug, PartialEq)]
struct Layout {
    session: u64,
    extranonce: MinerExtranonce,
}

impl Layout {
    fn new(work: &WorkState, place: Place) -> Option<Layout> {
        let extranonce = MinerExtranonce::new(
            &work.extranonce1,
            work.extranonce2_size,
            place.prefix_bytes,
            place.slot,
        )?;
        Some(Layout {
            session: work.session,
            extranonce,
        })
    }
}

/// The deadlines the session keeps (see [`Session::poll_timeout`]).
#[derive(Debug)]
struct Timers {
    /// Subscribed and authorized by then, or dropped.
    handshake: Instant,
    /// When the miner last sent anything.
    last_heard: Instant,
    /// When idleness is checked next: moved up to `last_heard + idle_timeout` when it passes,
    /// so a talking miner costs no timer reset per read.
    idle_check: Instant,
    /// Next periodic vardiff check.
    tick: Instant,
}

/// A request waiting for a pool.
#[derive(Debug)]
struct PoolWait {
    /// The request and every line after it, in order.
    held: VecDeque<ClientMessage>,
    /// No pool with work by then: [`End::NoPool`].
    deadline: Instant,
    /// When to ask the manager again (None: an answer is awaited).
    retry_at: Option<Instant>,
}

/// One miner's state.
pub(super) struct Session {
    settings: Arc<SessionSettings>,
    shared: Arc<MinerShared>,
    place: Option<Place>,
    /// The current pool connection's work (None before a place, or once it ended).
    work: Option<Arc<WorkState>>,
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
    consecutive_errors: u32,
    timers: Timers,
    pool_wait: Option<PoolWait>,
    actions: VecDeque<Action>,
    /// A share was accepted since [`Session::take_touched`] was last called.
    touched: bool,
}

impl Session {
    /// A session for a miner that connected at `now`.
    pub(super) fn new(
        settings: Arc<SessionSettings>,
        shared: Arc<MinerShared>,
        now: Instant,
    ) -> Self {
        let validator = ShareValidator::new(
            ValidatorConfig {
                max_jobs: JOBS_KEPT,
                ..ValidatorConfig::default()
            },
            Vec::new(),
            Target::from_difficulty(settings.initial_difficulty).unwrap_or(Target::DIFF1),
        );
        let vardiff = Vardiff::new(settings.vardiff, settings.initial_difficulty, now);
        let timers = Timers {
            handshake: now + settings.handshake_timeout,
            last_heard: now,
            idle_check: now + settings.idle_timeout,
            tick: now + VARDIFF_TICK,
        };
        Session {
            settings,
            shared,
            place: None,
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
            consecutive_errors: 0,
            timers,
            pool_wait: None,
            actions: VecDeque::new(),
            touched: false,
        }
    }

    /// Subscribed and authorized: jobs flow.
    pub(super) fn is_working(&self) -> bool {
        self.subscribed && !self.workers.is_empty()
    }

    /// A request waits for a pool: the task should read no more lines until it is answered.
    pub(super) fn awaiting_pool(&self) -> bool {
        self.pool_wait.is_some()
    }

    /// The next thing the connection task must do, if any. Call after every event.
    pub(super) fn poll_action(&mut self) -> Option<Action> {
        let next = self.actions.pop_front();
        if next.is_none() && self.actions.capacity() > 0 {
            // An idle miner keeps no queue: its first push allocates four 120-byte slots,
            // which would otherwise stay with each of 10k idle miners (+10% memory each).
            self.actions = VecDeque::new();
        }
        next
    }

    /// Whether a share was accepted since the last call (the task stamps the miner's
    /// last-share time: a wall-clock read the session does not make).
    pub(super) fn take_touched(&mut self) -> bool {
        std::mem::take(&mut self.touched)
    }

    /// When [`Session::handle_timeout`] is due next.
    pub(super) fn poll_timeout(&self) -> Instant {
        let t = &self.timers;
        if let Some(wait) = &self.pool_wait {
            // While a request waits for a pool, that wait has its own deadline (the
            // handshake deadline is judged once it is over).
            let mut next = t.tick.min(wait.deadline);
            if let Some(retry) = wait.retry_at {
                next = next.min(retry);
            }
            return next;
        }
        let watchdog = if self.is_working() {
            t.idle_check
        } else {
            t.handshake
        };
        t.tick.min(watchdog)
    }

    /// Handles every deadline that has passed by `now`.
    pub(super) fn handle_timeout(&mut self, now: Instant, out: &mut Outbox) -> Result<(), End> {
        if let Some(wait) = &mut self.pool_wait {
            if now >= wait.deadline {
                return Err(End::NoPool);
            }
            if wait.retry_at.is_some_and(|r| now >= r) {
                wait.retry_at = None;
                self.actions.push_back(Action::RequestPool);
            }
        } else if !self.is_working() {
            if now >= self.timers.handshake {
                return Err(End::HandshakeTimeout);
            }
        } else if now >= self.timers.idle_check {
            let idle = self.settings.idle_timeout;
            self.timers.idle_check = self.timers.last_heard + idle;
            if now >= self.timers.idle_check {
                return Err(End::Idle(idle.as_secs()));
            }
        }
        if now >= self.timers.tick {
            self.timers.tick = now + VARDIFF_TICK;
            self.on_tick(now, out)?;
        }
        Ok(())
    }

    /// The miner sent something (any bytes, even part of a line).
    pub(super) fn handle_heard(&mut self, now: Instant) {
        self.timers.last_heard = now;
    }

    /// The pool manager found no place: ask again shortly, unless the wait is over.
    pub(super) fn handle_no_pool(&mut self, now: Instant) -> Result<(), End> {
        let Some(wait) = &mut self.pool_wait else {
            return Ok(());
        };
        if now >= wait.deadline {
            return Err(End::NoPool);
        }
        wait.retry_at = Some(now + ASSIGN_RETRY);
        Ok(())
    }

    /// The pool manager gave the miner a place. The connection's work follows through
    /// [`Session::handle_work`]; held requests are answered once it is ready.
    pub(super) fn handle_assigned(&mut self, place: Place) {
        self.place = Some(place);
    }

    fn count_error(&mut self) -> bool {
        self.consecutive_errors = self.consecutive_errors.saturating_add(1);
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

    /// One decoded line (or decode error) from the miner.
    pub(super) fn handle_line(
        &mut self,
        item: Result<ClientMessage, Sv1Error>,
        now: Instant,
        out: &mut Outbox,
    ) -> Result<(), End> {
        let message = match item {
            Err(Sv1Error::LineTooLong { max }) => return Err(End::LineTooLong(max)),
            Err(e) => return self.on_bad_line(&e, out),
            Ok(m) => m,
        };
        if let Some(wait) = &mut self.pool_wait {
            if wait.held.len() >= MAX_HELD {
                return Err(End::TooManyErrors);
            }
            wait.held.push_back(message);
            return Ok(());
        }
        let needs_pool = matches!(
            &message,
            ClientMessage::Request {
                request: ClientRequest::Configure(_) | ClientRequest::Subscribe(_),
                ..
            }
        );
        if needs_pool && self.place.is_none() {
            self.pool_wait = Some(PoolWait {
                held: VecDeque::from([message]),
                deadline: now + self.settings.handshake_timeout,
                retry_at: None,
            });
            self.actions.push_back(Action::RequestPool);
            return Ok(());
        }
        self.on_message(message, now, out)
    }

    /// A line that did not decode: an error reply where it had an id.
    fn on_bad_line(&mut self, e: &Sv1Error, out: &mut Outbox) -> Result<(), End> {
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

    /// Answers the held requests once the miner's connection has work.
    fn release_held(&mut self, now: Instant, out: &mut Outbox) -> Result<(), End> {
        let ready = self.work.as_ref().is_some_and(|w| w.is_ready());
        if self.place.is_none() || !ready {
            return Ok(());
        }
        let Some(wait) = self.pool_wait.take() else {
            return Ok(());
        };
        for message in wait.held {
            self.on_message(message, now, out)?;
        }
        Ok(())
    }

    /// One request from the miner (configure and subscribe only once it has a place).
    fn on_message(
        &mut self,
        message: ClientMessage,
        now: Instant,
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
                let upstream_mask = self.work.as_ref().map_or(0, |w| w.version_mask);
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
                        self.vardiff.set_floor(min, now);
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
                let (Some(work), Some(place)) = (self.work.clone(), self.place) else {
                    return Err(End::NoPool);
                };
                let Some(layout) = Layout::new(&work, place) else {
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
                let changed = self.vardiff.suggest(d, now);
                if !id.is_null() {
                    self.reply_true(out, id)?;
                }
                if changed.is_some() && self.sent_difficulty.is_some() {
                    self.retarget(out)?;
                }
                Ok(())
            }
            ClientRequest::Submit(submit) => self.on_submit(id, submit, now, out),
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
}
