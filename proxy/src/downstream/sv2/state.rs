//! The state of one SV2 miner connection after the Noise handshake, sans-IO:
//! `SetupConnection`, the channels it opens, their jobs and shares.
//!
//! Same shape as the SV1 side (`super::super::sv1::state`) and `control::arbiter`:
//! `handle_*` take one event (a decoded frame, new work on a channel, a slot from the pool
//! manager, the pool's verdict on a share) and `now`; messages for the miner are queued in
//! order ([`Session::take_output`]); what the connection task must do is queued as an
//! [`Action`] ([`Session::poll_action`]); [`Session::poll_timeout`] is the next deadline (the
//! handshake, the one-second tick for idleness and vardiff, an acknowledgement flush, a wait
//! for a pool) and [`Session::handle_timeout`] handles it. No clock, socket or sleep here.
//!
//! Invariants: messages leave in the order decided (`SetTarget` before the job it applies
//! to, a future job before its `SetNewPrevHash`). Opening a channel needs a slot on a pool
//! with work; while one is sought ([`Session::awaiting_slot`]) the task reads no further
//! frames, so requests are answered in order. A run of [`MAX_CONSECUTIVE_ERRORS`] rejected
//! shares or unexpected messages drops the miner.

mod channels;
mod shares;
#[cfg(test)]
mod tests;

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use hashshift_protocol::sv2::constants::error_code::{
    open_mining_channel, setup_connection, update_channel,
};
use hashshift_protocol::sv2::constants::setup_flags;
use hashshift_protocol::sv2::{
    Frame, Message, Protocol, SetupConnection, SetupConnectionError, SetupConnectionSuccess,
    Str0255, UpdateChannelError,
};
use tracing::{debug, warn};

use super::Sv2Settings;
use super::channel::{Channel, ChannelKind, SubmittedShare};
use crate::downstream::MAX_CONSECUTIVE_ERRORS;
use crate::pool_link::Assignment;
use crate::pool_link::ConnId;
use crate::pool_link::miner::MinerShared;
use crate::pool_link::work::WorkState;
pub(super) use channels::OpenRequest;
use hashshift_protocol::share::allows_bip320_rolling;
pub(super) use shares::{ShareUp, Verdict};

use super::GROUP_CHANNEL_ID;
/// The only protocol version there is.
const SV2_VERSION: u16 = 2;
/// Mining `SetupConnection` flags we can honour.
const SUPPORTED_FLAGS: u32 =
    setup_flags::REQUIRES_STANDARD_JOBS | setup_flags::REQUIRES_VERSION_ROLLING;
/// Idleness and every channel's vardiff are checked this often.
pub(super) const TICK: Duration = Duration::from_secs(1);
/// How soon the pool manager is asked again when it had no slot for a new channel.
pub(super) const ASSIGN_RETRY: Duration = Duration::from_millis(200);

/// Why a connection ended, for the log line.
#[derive(Debug, thiserror::Error)]
pub(super) enum End {
    #[error("miner closed the connection")]
    Closed,
    #[error("noise handshake: {0}")]
    Handshake(#[from] crate::noise_tcp::HandshakeFailure),
    #[error("transport: {0}")]
    Transport(#[from] hashshift_protocol::noise::NoiseCodecError),
    #[error("I/O error: {0}")]
    Io(#[from] std::io::Error),
    #[error("malformed message: {0}")]
    Malformed(#[from] hashshift_protocol::sv2::Sv2Error),
    #[error("protocol violation: {0}")]
    Protocol(&'static str),
    #[error("SetupConnection refused: {0}")]
    SetupRefused(&'static str),
    #[error("miner stopped reading (write timed out)")]
    Stuck,
    #[error("no channel opened in time")]
    HandshakeTimeout,
    #[error("sent nothing for {0} s (idle timeout)")]
    Idle(u64),
    #[error("too many consecutive errors")]
    TooManyErrors,
    #[error("disconnected by the control plane (operator kick, or the rig confirmed asleep)")]
    Kicked,
    #[error("proxy shutting down")]
    Shutdown,
}

/// What the connection task must do for the session (besides writing its output).
#[derive(Debug)]
pub(super) enum Action {
    /// Ask the pool manager for a slot for a new channel of this worker (a record the task
    /// makes); answer with [`Session::handle_slot`] (then the slot connection's work through
    /// [`Session::handle_slot_work`]) or [`Session::handle_no_slot`].
    RequestSlot(Arc<str>),
    /// A channel opened: start following its work and the manager's commands.
    Opened(u32),
    /// A channel closed: stop following its work.
    Closed(u32),
    /// Send a share to the pool through channel's connection; its verdict comes back through
    /// [`Session::handle_verdict`], or [`Session::handle_submit_failed`] if it cannot be queued.
    Submit(ShareUp),
    /// The manager must forget this record (a channel closed, or its slot was not used).
    Release(ConnId),
}

/// A channel being opened: waiting for a slot, then for its connection's first work.
struct SlotWait {
    request: OpenRequest,
    worker: Arc<str>,
    /// The slot and the manager's record, once given.
    slot: Option<(Assignment, Arc<MinerShared>)>,
    deadline: Instant,
    retry_at: Option<Instant>,
}

/// One SV2 connection's state.
pub(super) struct Session {
    settings: Arc<Sv2Settings>,
    setup: Option<u32>,
    channels: HashMap<u32, Channel>,
    next_channel_id: u32,
    opened_any: bool,
    consecutive_errors: u32,
    /// Messages for the miner, in order.
    output: Vec<Message>,
    actions: VecDeque<Action>,
    slot_wait: Option<SlotWait>,
    /// No channel open by then: [`End::HandshakeTimeout`].
    handshake: Instant,
    /// Next idleness and vardiff check.
    tick: Instant,
    /// Acknowledgements waiting are sent by then.
    flush_at: Option<Instant>,
    /// A frame arrived since the last tick: a flag, not a clock read per frame.
    heard: bool,
    /// The first tick that found `heard` unset since the miner last sent anything.
    quiet_since: Instant,
    /// Channels with an accepted share since [`Session::take_touched`].
    touched: Vec<u32>,
}

fn str0255(s: &str) -> Str0255 {
    Str0255::truncated(s)
}

impl Session {
    /// A session for a connection whose handshake ended at `now`; a channel must be open by
    /// `handshake` (counted from the accept).
    pub(super) fn new(settings: Arc<Sv2Settings>, handshake: Instant, now: Instant) -> Self {
        Session {
            settings,
            setup: None,
            channels: HashMap::new(),
            next_channel_id: GROUP_CHANNEL_ID + 1,
            opened_any: false,
            consecutive_errors: 0,
            output: Vec::new(),
            actions: VecDeque::new(),
            slot_wait: None,
            handshake,
            tick: now + TICK,
            flush_at: None,
            heard: false,
            quiet_since: now,
            touched: Vec::new(),
        }
    }

    /// A channel is being opened: the task should read no more frames until it is answered.
    pub(super) fn awaiting_slot(&self) -> bool {
        self.slot_wait.is_some()
    }

    /// The next thing the connection task must do, if any. Call after every event.
    pub(super) fn poll_action(&mut self) -> Option<Action> {
        let next = self.actions.pop_front();
        if next.is_none() {
            // An idle miner keeps no buffers: the queues' first pushes allocate room for
            // several messages, which would otherwise stay with every idle connection.
            if self.actions.capacity() > 0 {
                self.actions = VecDeque::new();
            }
            if self.output.is_empty() && self.output.capacity() > 0 {
                self.output = Vec::new();
            }
        }
        next
    }

    /// Messages for the miner decided since the last call, in order.
    pub(super) fn take_output(&mut self) -> std::vec::Drain<'_, Message> {
        self.output.drain(..)
    }

    /// An open channel.
    pub(super) fn channel(&self, id: u32) -> Option<&Channel> {
        self.channels.get(&id)
    }

    /// When [`Session::handle_timeout`] is due next.
    pub(super) fn poll_timeout(&self) -> Instant {
        let mut next = self.tick;
        if let Some(flush) = self.flush_at {
            next = next.min(flush);
        }
        if let Some(wait) = &self.slot_wait {
            // A wait for a pool has its own deadline; the handshake's is judged after it.
            next = next.min(wait.deadline);
            if let Some(retry) = wait.retry_at {
                next = next.min(retry);
            }
        } else if !self.opened_any {
            next = next.min(self.handshake);
        }
        next
    }

    /// Handles every deadline that has passed by `now`.
    pub(super) fn handle_timeout(&mut self, now: Instant) -> Result<(), End> {
        if let Some(wait) = &mut self.slot_wait {
            if now >= wait.deadline {
                self.give_up_slot();
            } else if wait.retry_at.is_some_and(|r| now >= r) {
                wait.retry_at = None;
                let worker = wait.worker.clone();
                self.actions.push_back(Action::RequestSlot(worker));
            }
        } else if !self.opened_any && now >= self.handshake {
            return Err(End::HandshakeTimeout);
        }
        if self.flush_at.is_some_and(|t| now >= t) {
            self.flush_acks();
        }
        if now >= self.tick {
            self.tick = now + TICK;
            self.on_tick(now)?;
        }
        Ok(())
    }

    /// A frame arrived (noted as a flag; the tick turns it into idleness).
    pub(super) fn handle_heard(&mut self) {
        self.heard = true;
    }

    fn on_tick(&mut self, now: Instant) -> Result<(), End> {
        if std::mem::take(&mut self.heard) {
            self.quiet_since = now;
        } else if self.opened_any
            && now.saturating_duration_since(self.quiet_since) >= self.settings.idle_timeout
        {
            return Err(End::Idle(self.settings.idle_timeout.as_secs()));
        }
        for ch in self.channels.values_mut() {
            ch.on_tick(now, &mut self.output);
        }
        Ok(())
    }

    fn count_error(&mut self) -> Result<(), End> {
        self.consecutive_errors = self.consecutive_errors.saturating_add(1);
        if self.consecutive_errors >= MAX_CONSECUTIVE_ERRORS {
            Err(End::TooManyErrors)
        } else {
            Ok(())
        }
    }

    /// One frame from the miner.
    pub(super) fn handle_frame(&mut self, frame: &Frame, now: Instant) -> Result<(), End> {
        let message = match Message::from_frame(frame) {
            Ok(m) => m,
            Err(e) if e.is_ignorable() => {
                debug!(error = %e, "frame ignored");
                return self.count_error();
            }
            Err(e) => return Err(End::Malformed(e)),
        };
        self.handle_message(message, now)
    }

    /// One decoded message from the miner.
    pub(super) fn handle_message(&mut self, message: Message, now: Instant) -> Result<(), End> {
        let Some(setup_flags) = self.setup else {
            return match message {
                Message::SetupConnection(s) => self.on_setup(s),
                _ => Err(End::Protocol("first message is not SetupConnection")),
            };
        };
        match message {
            Message::SetupConnection(_) => Err(End::Protocol("second SetupConnection")),
            Message::OpenStandardMiningChannel(m) => self.open(
                OpenRequest {
                    kind: ChannelKind::Standard,
                    request_id: m.request_id,
                    nominal_hash_rate: m.nominal_hash_rate,
                    max_target: m.max_target,
                    min_extranonce_size: 0,
                },
                &m.user_identity,
                now,
            ),
            Message::OpenExtendedMiningChannel(m) => {
                if setup_flags & setup_flags::REQUIRES_STANDARD_JOBS != 0 {
                    self.open_error(
                        m.request_id,
                        open_mining_channel::EXTENDED_CHANNELS_NOT_SUPPORTED_FOR_STANDARD_JOBS,
                    );
                    return Ok(());
                }
                self.open(
                    OpenRequest {
                        kind: ChannelKind::Extended,
                        request_id: m.request_id,
                        nominal_hash_rate: m.nominal_hash_rate,
                        max_target: m.max_target,
                        min_extranonce_size: m.min_extranonce_size,
                    },
                    &m.user_identity,
                    now,
                )
            }
            Message::UpdateChannel(m) => {
                let settings = self.settings.channel;
                let result = match self.channels.get_mut(&m.channel_id) {
                    Some(ch) => ch.update(
                        m.nominal_hash_rate,
                        &m.maximum_target,
                        &settings,
                        now,
                        &mut self.output,
                    ),
                    None => Err(update_channel::INVALID_CHANNEL_ID),
                };
                if let Err(code) = result {
                    self.output
                        .push(Message::UpdateChannelError(UpdateChannelError {
                            channel_id: m.channel_id,
                            error_code: str0255(code),
                        }));
                }
                Ok(())
            }
            Message::CloseChannel(m) => {
                debug!(channel = m.channel_id, reason = %m.reason_code, "miner closed a channel");
                self.close_channel(m.channel_id, None);
                Ok(())
            }
            Message::SubmitSharesStandard(s) => self.on_submit(
                s.channel_id,
                SubmittedShare {
                    sequence_number: s.sequence_number,
                    job_id: s.job_id,
                    nonce: s.nonce,
                    ntime: s.ntime,
                    version: s.version,
                    extranonce: &[],
                },
                now,
            ),
            Message::SubmitSharesExtended(s) => self.on_submit(
                s.channel_id,
                SubmittedShare {
                    sequence_number: s.sequence_number,
                    job_id: s.job_id,
                    nonce: s.nonce,
                    ntime: s.ntime,
                    version: s.version,
                    extranonce: s.extranonce.as_bytes(),
                },
                now,
            ),
            other => {
                debug!(message = other.name(), "unexpected message ignored");
                self.count_error()
            }
        }
    }

    fn on_setup(&mut self, s: SetupConnection) -> Result<(), End> {
        let refuse = |flags: u32, code: &'static str| {
            (
                Message::SetupConnectionError(SetupConnectionError {
                    flags,
                    error_code: str0255(code),
                }),
                code,
            )
        };
        let refused = if s.protocol != Protocol::Mining {
            Some(refuse(0, setup_connection::UNSUPPORTED_PROTOCOL))
        } else if s.min_version > SV2_VERSION || s.max_version < SV2_VERSION {
            Some(refuse(0, setup_connection::PROTOCOL_VERSION_MISMATCH))
        } else if s.flags & !SUPPORTED_FLAGS != 0 {
            Some(refuse(
                s.flags & !SUPPORTED_FLAGS,
                setup_connection::UNSUPPORTED_FEATURE_FLAGS,
            ))
        } else {
            None
        };
        if let Some((message, code)) = refused {
            self.output.push(message);
            return Err(End::SetupRefused(code));
        }
        debug!(
            flags = s.flags,
            vendor = %s.vendor,
            hardware = %s.hardware_version,
            firmware = %s.firmware,
            "SetupConnection"
        );
        self.setup = Some(s.flags);
        self.output
            .push(Message::SetupConnectionSuccess(SetupConnectionSuccess {
                used_version: SV2_VERSION,
                flags: 0,
            }));
        Ok(())
    }

    /// New work on `channel`'s connection, for the channel's `generation` (work from a
    /// connection the channel has left is ignored).
    pub(super) fn handle_work(
        &mut self,
        channel: u32,
        generation: u64,
        work: &WorkState,
        now: Instant,
    ) {
        let Some(ch) = self.channels.get_mut(&channel) else {
            return; // closed meanwhile
        };
        if generation != ch.generation {
            return;
        }
        match ch.on_work(work, &mut self.output) {
            Ok(Some(job)) => {
                let received_at = job.received_at;
                let rolling = allows_bip320_rolling(work.version_mask);
                self.give_job(channel, job, rolling);
                let fanout = &self.settings.stats.job_fanout;
                fanout.observe_duration(now.saturating_duration_since(received_at));
            }
            Ok(None) => {}
            Err(_) => {
                warn!(
                    channel,
                    "new upstream session leaves no room for this channel's extranonce"
                );
                self.close_channel(channel, Some("extranonce-unavailable"));
            }
        }
    }

    /// The manager moved `channel` to another connection; that connection's work follows
    /// through [`Session::handle_work`] with the channel's new generation (returned). The
    /// task stops following the old connection's work.
    pub(super) fn handle_reassigned(&mut self, channel: u32, a: Assignment) -> Option<u64> {
        let ch = self.channels.get_mut(&channel)?;
        ch.reassign(a);
        Some(ch.generation)
    }

    /// Channels' records, for the end of the connection (the manager forgets them).
    pub(super) fn records(&self) -> impl Iterator<Item = &Arc<MinerShared>> {
        self.channels.values().map(|c| &c.shared).chain(
            self.slot_wait
                .iter()
                .filter_map(|w| w.slot.as_ref().map(|s| &s.1)),
        )
    }
}
