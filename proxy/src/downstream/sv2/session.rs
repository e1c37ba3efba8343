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

mod channels;
mod shares;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::BytesMut;
use futures_util::StreamExt;
use futures_util::stream::{BoxStream, FuturesUnordered, SelectAll};
use hashshift_protocol::noise::NoiseCodec;
use hashshift_protocol::noise::codec::NoiseEncoder;
use hashshift_protocol::sv2::constants::error_code::{
    open_mining_channel, setup_connection, update_channel,
};
use hashshift_protocol::sv2::constants::setup_flags;
use hashshift_protocol::sv2::{
    Frame, Message, Protocol, SetupConnection, SetupConnectionError, SetupConnectionSuccess,
    Str0255, UpdateChannelError,
};
use tokio::io::AsyncWriteExt;
use tokio::net::tcp::OwnedWriteHalf;
use tokio_util::codec::{Encoder, FramedRead};
use tracing::{debug, info, warn};

use self::shares::Pending;
use super::Sv2Settings;
use super::channel::{Channel, ChannelKind, SubmittedShare};
use super::events::{Event, work_stream};
use crate::downstream::listener::Accepted;
use crate::pool_link::{Control, Pools};
use hashshift_protocol::share::allows_bip320_rolling;

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

struct Conn {
    settings: Arc<Sv2Settings>,
    manager: Arc<dyn Pools>,
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
    /// A frame arrived since the last tick: a flag, not a clock read per frame.
    heard: bool,
    /// The first tick that found `heard` unset since the miner last sent anything.
    quiet_since: Instant,
}

/// Runs one SV2 miner connection to its end.
pub async fn serve(accepted: Accepted, settings: Arc<Sv2Settings>, manager: Arc<dyn Pools>) {
    let _open = settings.stats.connection();
    let Accepted {
        mut stream,
        peer,
        shutdown,
        ..
    } = accepted;
    let deadline = tokio::time::Instant::now() + settings.handshake_timeout;
    let transport = tokio::select! {
        _ = shutdown.cancelled() => return,
        r = tokio::time::timeout_at(deadline, crate::noise_tcp::accept(&mut stream, &settings.noise)) => match r {
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
        heard: false,
        quiet_since: Instant::now(),
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
                Some(Ok(frame)) => {
                    c.heard = true;
                    c.on_frame(frame).await
                }
            },
            _ = tick.tick() => c.on_tick(),
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
        End::Closed | End::Shutdown | End::Kicked => {
            info!(reason = %end, accepted = accepted_shares, rejected = rejected_shares, "miner disconnected")
        }
        _ => {
            warn!(reason = %end, accepted = accepted_shares, rejected = rejected_shares, "miner dropped")
        }
    }
}

fn str0255(s: &str) -> Str0255 {
    Str0255::truncated(s)
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
                    Ok(Some(job)) => {
                        let received_at = job.received_at;
                        let rolling = allows_bip320_rolling(work.version_mask);
                        self.give_job(channel, job, rolling);
                        let fanout = &self.settings.stats.job_fanout;
                        fanout.observe_duration(received_at.elapsed());
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

    fn on_tick(&mut self) -> Result<(), End> {
        let now = Instant::now();
        if std::mem::take(&mut self.heard) {
            self.quiet_since = now;
        } else if self.opened_any
            && now.saturating_duration_since(self.quiet_since) >= self.settings.idle_timeout
        {
            return Err(End::Idle(self.settings.idle_timeout.as_secs()));
        }
        for ch in self.channels.values_mut() {
            ch.on_tick(now, &mut self.outbox);
        }
        Ok(())
    }
}
