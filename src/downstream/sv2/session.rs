//! One SV2 miner connection: Noise handshake, `SetupConnection`, then the channels it opens.
//!
//! The task owns the connection and all its [`Channel`]s and writes to the socket itself, so
//! what the miner sees is in the order the task decided it (`SetTarget` before the job it
//! applies to, a future job before its `SetNewPrevHash`). Each channel's upstream work
//! (`watch`) and manager commands (`mpsc`) arrive as one merged stream of events tagged with
//! the channel id; the streams of a channel end when it closes or moves.
//!
//! Hostile input: the whole way to the first open channel is bounded by the handshake
//! timeout; frames above `max_frame_bytes` are refused by the Noise decoder before being
//! buffered; a decrypt failure, a malformed message or a protocol violation ends this
//! connection only. Share rejections are answered; a run of them drops the miner.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::BytesMut;
use futures_util::stream::{BoxStream, FuturesUnordered, SelectAll};
use futures_util::{FutureExt, StreamExt};
use hashshift_protocol::noise::NoiseCodec;
use hashshift_protocol::noise::codec::NoiseEncoder;
use hashshift_protocol::share::Rejection;
use hashshift_protocol::sv2::constants::error_code::{
    open_mining_channel, setup_connection, submit_shares, update_channel,
};
use hashshift_protocol::sv2::constants::setup_flags;
use hashshift_protocol::sv2::{
    B032, CloseChannel, Frame, Message, OpenExtendedMiningChannelSuccess, OpenMiningChannelError,
    OpenStandardMiningChannelSuccess, Protocol, SetupConnection, SetupConnectionError,
    SetupConnectionSuccess, Str0255, SubmitSharesError, U256, UpdateChannelError,
};
use tokio::io::AsyncWriteExt;
use tokio::net::tcp::OwnedWriteHalf;
use tokio_util::codec::{Encoder, FramedRead};
use tracing::{debug, info, warn};

use super::Sv2Settings;
use super::channel::{Channel, ChannelKind, GroupJob, ShareResult, SubmittedShare};
use super::events::{Event, assign, control_stream, work_stream};
use super::handshake;
use crate::downstream::listener::{Accepted, next_conn_id};
use crate::downstream::registry::MinerShared;
use crate::telemetry::RejectReason;
use crate::upstream::connection::SubmitOutcome;
use crate::upstream::manager::{Control, PoolManager};
use crate::upstream::work::UpstreamJob;

/// The group channel every channel of a connection belongs to (reported in `Open*Success`).
/// Jobs go to it when the miner did not set `REQUIRES_STANDARD_JOBS` and all its channels are
/// on the same upstream job; otherwise each channel gets its own.
pub const GROUP_CHANNEL_ID: u32 = 1;
/// The only protocol version there is.
const SV2_VERSION: u16 = 2;
/// Mining `SetupConnection` flags we can honour.
const SUPPORTED_FLAGS: u32 =
    setup_flags::REQUIRES_STANDARD_JOBS | setup_flags::REQUIRES_VERSION_ROLLING;
/// Consecutive rejected shares or unexpected messages after which a miner is dropped.
const MAX_CONSECUTIVE_ERRORS: u32 = 500;

/// Why a connection ended, for the log line.
#[derive(Debug, thiserror::Error)]
enum End {
    #[error("miner closed the connection")]
    Closed,
    #[error("noise handshake: {0}")]
    Handshake(#[from] handshake::HandshakeFailure),
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
    #[error("too many consecutive errors")]
    TooManyErrors,
    #[error("kicked by operator")]
    Kicked,
    #[error("proxy shutting down")]
    Shutdown,
}

/// A pool's answer on a share that went up, with what is needed to relay it.
struct Verdict {
    channel: u32,
    sequence_number: u32,
    outcome: SubmitOutcome,
    credited: f64,
}

type Pending = Pin<Box<dyn std::future::Future<Output = Verdict> + Send>>;

struct Conn {
    settings: Arc<Sv2Settings>,
    manager: Arc<PoolManager>,
    peer: SocketAddr,
    writer: OwnedWriteHalf,
    encoder: NoiseEncoder,
    out: BytesMut,
    outbox: Vec<Message>,
    setup: Option<u32>,
    channels: HashMap<u32, Channel>,
    next_channel_id: u32,
    opened_any: bool,
    events: SelectAll<BoxStream<'static, (u32, Event)>>,
    pending: FuturesUnordered<Pending>,
    flush_at: Option<tokio::time::Instant>,
    consecutive_errors: u32,
}

/// Runs one SV2 miner connection to its end.
pub async fn serve(accepted: Accepted, settings: Arc<Sv2Settings>, manager: Arc<PoolManager>) {
    let Accepted {
        mut stream,
        peer,
        shutdown,
        ..
    } = accepted;
    let deadline = tokio::time::Instant::now() + settings.handshake_timeout;
    let transport = tokio::select! {
        _ = shutdown.cancelled() => return,
        r = tokio::time::timeout_at(deadline, handshake::accept(&mut stream, &settings.noise)) => match r {
            Ok(Ok(t)) => t,
            Ok(Err(e)) => { info!(reason = %End::Handshake(e), "miner dropped"); return; }
            Err(_) => { info!(reason = %End::HandshakeTimeout, "miner dropped during the Noise handshake"); return; }
        },
    };
    let (read, writer) = stream.into_split();
    let (encoder, decoder) = NoiseCodec::new(transport)
        .with_max_payload(settings.max_frame_bytes)
        .into_split();
    // A small initial buffer: an idle miner should cost little memory; it grows if needed.
    let mut reader = FramedRead::with_capacity(read, decoder, 256);
    let mut c = Conn {
        settings: settings.clone(),
        manager,
        peer,
        writer,
        encoder,
        out: BytesMut::new(),
        outbox: Vec::new(),
        setup: None,
        channels: HashMap::new(),
        next_channel_id: GROUP_CHANNEL_ID + 1,
        opened_any: false,
        events: SelectAll::new(),
        pending: FuturesUnordered::new(),
        flush_at: None,
        consecutive_errors: 0,
    };
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);

    let end: End = loop {
        let flush_at = c.flush_at;
        let result = tokio::select! {
            _ = shutdown.cancelled() => Err(End::Shutdown),
            _ = tokio::time::sleep_until(deadline), if !c.opened_any => Err(End::HandshakeTimeout),
            _ = async { if let Some(t) = flush_at { tokio::time::sleep_until(t).await } }, if flush_at.is_some() => {
                c.flush_acks();
                Ok(())
            }
            Some((channel, event)) = c.events.next(), if !c.events.is_empty() => c.on_event(channel, event),
            Some(v) = c.pending.next(), if !c.pending.is_empty() => {
                c.on_verdict(v);
                Ok(())
            }
            frame = reader.next() => match frame {
                None => Err(End::Closed),
                Some(Err(e)) => Err(End::Transport(e)),
                Some(Ok(frame)) => c.on_frame(frame).await,
            },
            _ = tick.tick() => {
                c.on_tick();
                Ok(())
            }
        };
        // Whatever was decided goes out before the connection ends (e.g. SetupConnection.Error).
        let written = c.write_out().await;
        match (result, written) {
            (Err(end), _) | (Ok(()), Err(end)) => break end,
            (Ok(()), Ok(())) => {}
        }
    };

    // Shares already sent to the pool still get their verdict relayed, within a grace period.
    if !c.pending.is_empty() && !matches!(end, End::Closed | End::Io(_) | End::Stuck) {
        let grace = tokio::time::sleep(settings.drain_grace);
        tokio::pin!(grace);
        loop {
            tokio::select! {
                _ = &mut grace => break,
                next = c.pending.next() => match next {
                    Some(v) => c.on_verdict(v),
                    None => break,
                },
            }
        }
        c.flush_acks();
        let _ = c.write_out().await;
    }
    let (mut accepted_shares, mut rejected_shares) = (0, 0);
    for ch in c.channels.values() {
        let s = ch.shared.counters.snapshot();
        accepted_shares += s.accepted;
        rejected_shares += s.rejected;
        c.manager.release(ch.shared.id);
    }
    match end {
        End::Closed | End::Shutdown => {
            info!(reason = %end, accepted = accepted_shares, rejected = rejected_shares, "miner disconnected")
        }
        _ => {
            warn!(reason = %end, accepted = accepted_shares, rejected = rejected_shares, "miner dropped")
        }
    }
}

fn str0255(s: &str) -> Str0255 {
    // Every code we send is a short ASCII constant.
    Str0255::try_from(s).unwrap_or_default()
}

/// The SV2 code for a pool's SV1 rejection (codes 21-23 of the de-facto stratum table).
fn upstream_reject_code(code: i64) -> &'static str {
    match code {
        21 => submit_shares::STALE_SHARE,
        22 => submit_shares::DUPLICATE_SHARE,
        23 => submit_shares::DIFFICULTY_TOO_LOW,
        _ => submit_shares::INVALID_SHARE,
    }
}

impl Conn {
    fn count_error(&mut self) -> Result<(), End> {
        self.consecutive_errors += 1;
        if self.consecutive_errors >= MAX_CONSECUTIVE_ERRORS {
            Err(End::TooManyErrors)
        } else {
            Ok(())
        }
    }

    /// Encodes the outbox and writes it.
    async fn write_out(&mut self) -> Result<(), End> {
        for m in self.outbox.drain(..) {
            self.encoder.encode(m.to_frame(), &mut self.out)?;
        }
        if self.out.is_empty() {
            return Ok(());
        }
        let bytes = self.out.split();
        match tokio::time::timeout(self.settings.write_timeout, self.writer.write_all(&bytes)).await
        {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(End::Io(e)),
            Err(_) => Err(End::Stuck),
        }
    }

    fn flush_acks(&mut self) {
        self.flush_at = None;
        for ch in self.channels.values_mut() {
            if let Some(m) = ch.take_batch() {
                self.outbox.push(m);
            }
        }
    }

    /// Sends a channel's batch now if it is full, else makes sure a flush is scheduled.
    fn schedule_ack(&mut self, channel: u32) {
        let Some(ch) = self.channels.get_mut(&channel) else {
            return;
        };
        if ch.batched() >= self.settings.ack_batch {
            if let Some(m) = ch.take_batch() {
                self.outbox.push(m);
            }
        } else if ch.batched() > 0 && self.flush_at.is_none() {
            self.flush_at = Some(tokio::time::Instant::now() + self.settings.ack_delay);
        }
    }

    /// `SubmitShares.Error`, after the channel's pending acknowledgements (so the miner sees
    /// answers roughly in sequence order).
    fn share_error(&mut self, channel: u32, sequence_number: u32, code: &str) {
        if let Some(m) = self
            .channels
            .get_mut(&channel)
            .and_then(Channel::take_batch)
        {
            self.outbox.push(m);
        }
        self.outbox
            .push(Message::SubmitSharesError(SubmitSharesError {
                channel_id: channel,
                sequence_number,
                error_code: str0255(code),
            }));
    }

    async fn on_frame(&mut self, frame: Frame) -> Result<(), End> {
        let message = match Message::from_frame(&frame) {
            Ok(m) => m,
            Err(e) if e.is_ignorable() => {
                debug!(error = %e, "frame ignored");
                return self.count_error();
            }
            Err(e) => return Err(End::Malformed(e)),
        };
        let Some(setup_flags) = self.setup else {
            return match message {
                Message::SetupConnection(s) => self.on_setup(s),
                _ => Err(End::Protocol("first message is not SetupConnection")),
            };
        };
        match message {
            Message::SetupConnection(_) => Err(End::Protocol("second SetupConnection")),
            Message::OpenStandardMiningChannel(m) => {
                self.open(
                    ChannelKind::Standard,
                    m.request_id,
                    &m.user_identity,
                    m.nominal_hash_rate,
                    &m.max_target,
                    0,
                )
                .await
            }
            Message::OpenExtendedMiningChannel(m) => {
                if setup_flags & setup_flags::REQUIRES_STANDARD_JOBS != 0 {
                    self.open_error(
                        m.request_id,
                        open_mining_channel::EXTENDED_CHANNELS_NOT_SUPPORTED_FOR_STANDARD_JOBS,
                    );
                    return Ok(());
                }
                self.open(
                    ChannelKind::Extended,
                    m.request_id,
                    &m.user_identity,
                    m.nominal_hash_rate,
                    &m.max_target,
                    m.min_extranonce_size,
                )
                .await
            }
            Message::UpdateChannel(m) => {
                let now = Instant::now();
                let settings = self.settings.channel;
                let result = match self.channels.get_mut(&m.channel_id) {
                    Some(ch) => ch.update(
                        m.nominal_hash_rate,
                        &m.maximum_target,
                        &settings,
                        now,
                        &mut self.outbox,
                    ),
                    None => Err(update_channel::INVALID_CHANNEL_ID),
                };
                if let Err(code) = result {
                    self.outbox
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
            self.outbox.push(message);
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
        self.outbox
            .push(Message::SetupConnectionSuccess(SetupConnectionSuccess {
                used_version: SV2_VERSION,
                flags: 0,
            }));
        Ok(())
    }

    fn open_error(&mut self, request_id: u32, code: &str) {
        self.outbox
            .push(Message::OpenMiningChannelError(OpenMiningChannelError {
                request_id,
                error_code: str0255(code),
            }));
    }

    /// Opens a channel: an extranonce slot on a pool with work, `Open*Success` (or
    /// `OpenMiningChannel.Error`), then the first job.
    async fn open(
        &mut self,
        kind: ChannelKind,
        request_id: u32,
        user_identity: &Str0255,
        nominal_hash_rate: f32,
        max_target: &U256,
        min_extranonce_size: u16,
    ) -> Result<(), End> {
        if self.channels.len() >= self.settings.max_channels {
            self.open_error(request_id, open_mining_channel::CHANNEL_CAPACITY_EXHAUSTED);
            return self.count_error();
        }
        let worker: Arc<str> = user_identity.to_string_lossy().into();
        if !self.opened_any {
            tracing::Span::current().record("worker", &*worker);
        }
        let shared = Arc::new(MinerShared::new(next_conn_id(), self.peer));
        shared.set_worker(&worker);
        // SV2 channels can always be moved: SetExtranoncePrefix exists for that.
        shared.set_movable(true);
        let Some((assignment, control, work)) =
            assign(&self.manager, &shared, self.settings.handshake_timeout).await
        else {
            warn!("no pool with work for a new channel");
            // No code says "no upstream"; this is the closest the spec has.
            self.open_error(request_id, open_mining_channel::CHANNEL_CAPACITY_EXHAUSTED);
            return Ok(());
        };
        let id = self.next_channel_id;
        let mut ch = match Channel::open(
            id,
            kind,
            worker.clone(),
            shared.clone(),
            assignment,
            &work,
            &self.settings.channel,
            nominal_hash_rate,
            max_target,
            min_extranonce_size,
            Instant::now(),
        ) {
            Ok(ch) => ch,
            Err(code) => {
                self.manager.release(shared.id);
                self.open_error(request_id, code);
                return Ok(());
            }
        };
        self.next_channel_id = self
            .next_channel_id
            .wrapping_add(1)
            .max(GROUP_CHANNEL_ID + 1);
        let Ok(prefix) = B032::try_from(ch.extranonce().prefix.as_slice()) else {
            // `fit` guarantees at most 32 bytes.
            self.manager.release(shared.id);
            self.open_error(request_id, open_mining_channel::CHANNEL_CAPACITY_EXHAUSTED);
            return Ok(());
        };
        let success = match kind {
            ChannelKind::Standard => {
                Message::OpenStandardMiningChannelSuccess(OpenStandardMiningChannelSuccess {
                    request_id,
                    channel_id: id,
                    target: ch.target(),
                    extranonce_prefix: prefix,
                    group_channel_id: GROUP_CHANNEL_ID,
                })
            }
            ChannelKind::Extended => {
                Message::OpenExtendedMiningChannelSuccess(OpenExtendedMiningChannelSuccess {
                    request_id,
                    channel_id: id,
                    target: ch.target(),
                    extranonce_size: ch.extranonce().size as u16,
                    extranonce_prefix: prefix,
                    group_channel_id: GROUP_CHANNEL_ID,
                })
            }
        };
        self.outbox.push(success);
        // The first job, on the channel: future job + SetNewPrevHash (no previous hash yet).
        match ch.on_work(&work, &mut self.outbox) {
            Ok(Some(job)) => ch.send_job(&job, job.clean, &mut self.outbox),
            Ok(None) => {}
            Err(_) => {
                // Unreachable: `open` already fitted the extranonce on this very work.
                self.manager.release(shared.id);
                return Ok(());
            }
        }
        info!(
            channel = id,
            ?kind,
            worker = &*worker,
            difficulty = shared.difficulty.get(),
            "channel opened"
        );
        self.events.push(work_stream(
            id,
            ch.generation,
            ch.assignment.conn.work.clone(),
            ch.work_stop.clone(),
        ));
        self.events.push(control_stream(id, control));
        self.channels.insert(id, ch);
        self.opened_any = true;
        Ok(())
    }

    /// Closes a channel (the miner's request, or ours with a reason sent to the miner).
    fn close_channel(&mut self, channel: u32, reason: Option<&str>) {
        let Some(mut ch) = self.channels.remove(&channel) else {
            return;
        };
        if let Some(m) = ch.take_batch() {
            self.outbox.push(m);
        }
        if let Some(reason) = reason {
            self.outbox.push(Message::CloseChannel(CloseChannel {
                channel_id: channel,
                reason_code: str0255(reason),
            }));
        }
        // Dropping the manager's entry drops the control sender: the control stream ends.
        self.manager.release(ch.shared.id);
        ch.work_stop.cancel();
    }

    fn on_event(&mut self, channel: u32, event: Event) -> Result<(), End> {
        let Some(ch) = self.channels.get_mut(&channel) else {
            return Ok(()); // closed meanwhile
        };
        match event {
            Event::Work(generation, work) => {
                if generation != ch.generation {
                    return Ok(());
                }
                match ch.on_work(&work, &mut self.outbox) {
                    Ok(Some(job)) => self.give_job(channel, job, work.version_mask != 0),
                    Ok(None) => {}
                    Err(_) => {
                        warn!(
                            channel,
                            "new upstream session leaves no room for this channel's extranonce"
                        );
                        self.close_channel(channel, Some("extranonce-unavailable"));
                    }
                }
                Ok(())
            }
            Event::Control(Control::Reassign(a)) => {
                ch.reassign(a);
                let stream = work_stream(
                    channel,
                    ch.generation,
                    ch.assignment.conn.work.clone(),
                    ch.work_stop.clone(),
                );
                // Make the new connection's current work count as a change.
                let current = ch.assignment.conn.work.borrow().clone();
                let generation = ch.generation;
                self.events.push(stream);
                self.events.push(
                    futures_util::stream::once(async move {
                        (channel, Event::Work(generation, current))
                    })
                    .boxed(),
                );
                Ok(())
            }
            Event::Control(Control::Kick) => Err(End::Kicked),
        }
    }

    /// Gives `leader` (the channel whose work brought it) a new upstream job: to the whole
    /// group in one message when the miner takes group jobs and every channel of the
    /// connection is on that same job (a group job reaches every channel in the group, so it
    /// must be right for all of them), else on the channel alone.
    fn give_job(&mut self, leader: u32, job: Arc<UpstreamJob>, version_rolling: bool) {
        let takes_group_jobs = self
            .setup
            .is_some_and(|f| f & setup_flags::REQUIRES_STANDARD_JOBS == 0);
        let Some(ch) = self.channels.get(&leader) else {
            return;
        };
        if takes_group_jobs && self.channels.len() > 1 {
            let group = GroupJob::new(job.clone(), ch);
            let all = self
                .channels
                .iter_mut()
                .all(|(&id, c)| id == leader || c.ready_for(&group));
            if all {
                let mut joined = true;
                for c in self.channels.values_mut() {
                    joined &= c.join_group_job(&group, &mut self.outbox);
                }
                if joined {
                    self.outbox
                        .extend(group.messages(GROUP_CHANNEL_ID, version_rolling));
                }
                return;
            }
        }
        if let Some(ch) = self.channels.get_mut(&leader) {
            ch.send_job(&job, job.clean, &mut self.outbox);
        }
    }

    fn on_submit(&mut self, channel: u32, share: SubmittedShare<'_>) -> Result<(), End> {
        let seq = share.sequence_number;
        let Some(ch) = self.channels.get_mut(&channel) else {
            self.share_error(channel, seq, submit_shares::INVALID_CHANNEL_ID);
            return self.count_error();
        };
        match ch.submit(&share) {
            ShareResult::Rejected(rejection) => {
                debug!(channel, %rejection, "share rejected");
                self.share_error(channel, seq, rejection.sv2_error_code());
                if matches!(rejection, Rejection::StaleJob { .. }) {
                    Ok(())
                } else {
                    self.count_error()
                }
            }
            ShareResult::Accepted => {
                self.consecutive_errors = 0;
                self.schedule_ack(channel);
                Ok(())
            }
            ShareResult::Upstream {
                submit,
                verdict,
                credited,
            } => {
                self.consecutive_errors = 0;
                // The pool connection has a deep queue; if even that is full the pool is not
                // keeping up and the share is reported lost rather than blocking this miner.
                if ch.assignment.conn.submit.try_send(submit).is_err() {
                    ch.shared.counters.lose();
                    self.share_error(channel, seq, submit_shares::STALE_SHARE);
                    return Ok(());
                }
                self.pending.push(
                    verdict
                        .map(move |outcome| Verdict {
                            channel,
                            sequence_number: seq,
                            outcome: outcome
                                .unwrap_or(SubmitOutcome::Lost("pool connection ended")),
                            credited,
                        })
                        .boxed(),
                );
                Ok(())
            }
        }
    }

    fn on_verdict(&mut self, v: Verdict) {
        let Some(ch) = self.channels.get_mut(&v.channel) else {
            return;
        };
        match v.outcome {
            SubmitOutcome::Accepted => {
                ch.accept(v.sequence_number, v.credited);
                self.schedule_ack(v.channel);
            }
            SubmitOutcome::Rejected(e) => {
                ch.shared
                    .counters
                    .reject(RejectReason::from_sv1_code(e.code));
                debug!(code = e.code, message = %e.message, "pool rejected share");
                self.share_error(v.channel, v.sequence_number, upstream_reject_code(e.code));
            }
            SubmitOutcome::Lost(why) => {
                ch.shared.counters.lose();
                warn!(why, "share lost upstream");
                // SV2 has no "unknown outcome" code; the share will not be credited.
                self.share_error(v.channel, v.sequence_number, submit_shares::STALE_SHARE);
            }
        }
    }

    fn on_tick(&mut self) {
        let now = Instant::now();
        for ch in self.channels.values_mut() {
            ch.on_tick(now, &mut self.outbox);
        }
    }
}
