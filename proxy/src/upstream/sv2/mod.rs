//! One Stratum V2 connection to a pool, kept alive with backoff, publishing work to the miners
//! on it and carrying their shares up. The SV2 counterpart of [`super::sv1`], with the same
//! contract towards the rest of the proxy (see [`super::connection`]).
//!
//! A session, in order (sv2-spec 04, 03 §3.6, 05 §5.3):
//! 1. TCP connect, then the Noise NX handshake as initiator. The pool's certificate must be
//!    signed by the authority key pinned in the URL and be within its validity window; any
//!    failure is logged as an error naming the pinned key and the session ends. There is no
//!    plaintext fallback.
//! 2. `SetupConnection` (Mining protocol, version 2, `REQUIRES_VERSION_ROLLING`: SV1 miners
//!    behind the proxy roll the BIP320 bits).
//! 3. `OpenExtendedMiningChannel` as the configured user, asking for
//!    [`MIN_EXTRANONCE_SIZE`] bytes; the pool decides (SRI grants 16). The granted prefix and
//!    size become the session's extranonce1 / extranonce2 size, which the proxy splits per
//!    miner (`pool_link::extranonce`, at most 8 bytes per SV1 miner).
//! 4. Jobs, targets and share verdicts, through the sans-IO [`channel::Channel`].
//!
//! Worker names: SV2 has no per-share worker, so in `passthrough` mode shares still go up
//! under the channel's user (the configured `user`); the proxy's own counters keep the
//! per-miner split.
//!
//! Every share is answered: accepted when a `SubmitShares.Success` covers it, rejected with
//! the pool's error code, or lost when the connection ends or the pool does not answer within
//! `submit_timeout`. Pools may batch acknowledgements (SRI sends one every
//! `share_batch_size` shares): a share waits until a later acknowledgement covers it.
//!
//! Every frame written to the pool is bounded by `write_timeout` and by shutdown
//! ([`bounded_write`]): a pool that stops reading ends the session like a disconnect. The
//! Noise handshake's only write is 64 bytes into a fresh socket, which cannot fill; the
//! handshake as a whole is bounded by `connect_timeout` and by shutdown.

pub mod channel;

use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use hashshift_protocol::noise::{HandshakeError, NoiseCodec, NoiseCodecError};
use hashshift_protocol::share::Target;
use hashshift_protocol::sv2::constants::setup_flags;
use hashshift_protocol::sv2::{
    Message, OpenExtendedMiningChannel, Protocol, SetupConnection, Str0255, Sv2Error,
};
use tokio::net::TcpStream;
use tokio_util::codec::Framed;
use tokio_util::sync::CancellationToken;
use tracing::{Instrument, debug, error, info, info_span, warn};

use self::channel::{Channel, Verdict};
use super::connection::{
    ConnStatus, ConnectionHandle, ConnectionParams, WriteFailure, bounded_write,
};
use super::reconnect::{self, Ended, Link, SWEEP_EVERY};
use crate::error::{Classify, Retry, Side};
use crate::noise_tcp::{HandshakeFailure, initiate};
use crate::pool_link::submit::SubmitOutcome;
use crate::telemetry::RejectReason;

/// Extranonce bytes asked for: enough for the proxy's per-miner prefix (up to 4 bytes) and a
/// miner's own space, and small enough for any pool to grant. Pools usually give more.
pub const MIN_EXTRANONCE_SIZE: u16 = 8;
/// Hash rate announced when the channel opens before any miner on it has an estimate (h/s):
/// one ASIC. Pools derive the channel's target from it; as soon as the miners' measured
/// hashrate is known it is announced instead (`UpdateChannel`).
pub const DEFAULT_NOMINAL_HASH_RATE: f32 = 100e12;
/// Largest SV2 payload accepted from a pool (a job with a big coinbase is a few KiB).
const MAX_PAYLOAD: usize = 1 << 20;
/// Request id of our one `OpenExtendedMiningChannel`.
const OPEN_REQUEST_ID: u32 = 1;

type Conn = Framed<TcpStream, NoiseCodec>;

/// Starts a connection task; it runs until `shutdown`.
pub fn spawn(
    params: ConnectionParams,
    shutdown: CancellationToken,
    tracker: &tokio_util::task::TaskTracker,
) -> ConnectionHandle {
    let span = info_span!("pool", pool = params.pool, url = %params.url, protocol = "sv2");
    let (handle, link) = Link::new(params, shutdown);
    tracker.spawn(reconnect::run(Task { link }).instrument(span));
    handle
}

/// The SV2 connection task: all it keeps across sessions is the shared [`Link`] (a
/// `Reconnect`'s address is the link's `redirect`).
struct Task {
    link: Link,
}

/// Why a session with the pool ended.
#[derive(Debug, thiserror::Error)]
enum SessionEnd {
    #[error("connect failed: {0}")]
    Connect(std::io::Error),
    #[error("timed out connecting, authenticating or opening the channel")]
    Timeout,
    #[error("the pool failed authentication: {0}")]
    Handshake(HandshakeError),
    #[error("the URL is not a stratum2+tcp:// URL with an authority key")]
    NotSv2,
    #[error("connection closed by the pool")]
    Closed,
    #[error("transport error: {0}")]
    Transport(NoiseCodecError),
    #[error("I/O error: {0}")]
    Io(std::io::Error),
    #[error("malformed {what} from the pool: {error}")]
    Malformed { what: &'static str, error: Sv2Error },
    #[error("pool refused {what}: {code}")]
    Refused { what: &'static str, code: String },
    #[error("pool closed our channel: {0}")]
    ChannelClosed(String),
    #[error("pool unusable: {0}")]
    Extranonce(#[from] crate::pool_link::extranonce::ExtranonceTooSmall),
    #[error("pool asked us to reconnect to {0}")]
    Reconnect(String),
    #[error("pool stopped reading: a write took longer than {0:?}")]
    WriteTimeout(Duration),
    #[error("shutting down")]
    Shutdown,
}

/// The pool's side, except a URL that is not SV2 (the operator's) and shutdown; a failed
/// authentication, a refusal or a too-small extranonce fail the same way until someone changes
/// the pool or its key, though the loop keeps trying (a pool may renew its certificate).
impl Classify for SessionEnd {
    fn side(&self) -> Side {
        match self {
            SessionEnd::NotSv2 => Side::Operator,
            SessionEnd::Shutdown => Side::Internal,
            _ => Side::Pool,
        }
    }

    fn retry(&self) -> Retry {
        match self {
            SessionEnd::Handshake(_)
            | SessionEnd::NotSv2
            | SessionEnd::Refused { .. }
            | SessionEnd::Extranonce(_)
            | SessionEnd::Shutdown => Retry::No,
            _ => Retry::Yes,
        }
    }
}

impl Ended for SessionEnd {
    fn shutdown() -> Self {
        SessionEnd::Shutdown
    }
    fn timeout() -> Self {
        SessionEnd::Timeout
    }
    fn is_shutdown(&self) -> bool {
        matches!(self, SessionEnd::Shutdown)
    }
    fn redirect(&self) -> Option<String> {
        match self {
            SessionEnd::Reconnect(to) => Some(to.clone()),
            _ => None,
        }
    }
    fn log(&self, link: &Link, retry_in: Duration) {
        match self {
            SessionEnd::Handshake(e) => error!(
                error = %e,
                pinned_authority_key = ?link.params.url.authority_key(),
                ?retry_in,
                "pool failed Noise authentication (wrong authority key in the URL, expired \
                 certificate, or not an SV2 pool); not using it"
            ),
            other => warn!(
                error = %other,
                side = %other.side(),
                retry = %other.retry(),
                ?retry_in,
                "pool session ended"
            ),
        }
    }
}

impl reconnect::Session for Task {
    type End = SessionEnd;
    fn link(&mut self) -> &mut Link {
        &mut self.link
    }
    async fn session(&mut self) -> SessionEnd {
        self.run_session().await
    }
}

impl SessionEnd {
    /// The end of a session whose write to the pool did not complete.
    fn from_write(failure: WriteFailure<NoiseCodecError>, timeout: Duration) -> Self {
        match failure {
            WriteFailure::Failed(e) => SessionEnd::Transport(e),
            WriteFailure::TimedOut => SessionEnd::WriteTimeout(timeout),
            WriteFailure::Shutdown => SessionEnd::Shutdown,
        }
    }
}

/// Where the session is between the handshake and an open channel.
enum Phase {
    Setup,
    /// `OpenExtendedMiningChannel` sent, announcing this hash rate.
    Opening {
        announced: f32,
        guessed: bool,
    },
    Open(Box<Channel>),
}

impl Task {
    fn deliver(&self, verdicts: Vec<Verdict>) {
        for v in verdicts {
            self.deliver_one(v);
        }
    }

    fn deliver_one(&self, v: Verdict) {
        match &v.outcome {
            SubmitOutcome::Accepted => {
                self.link.counters.accept(v.difficulty);
                if v.block {
                    self.link.counters.block();
                }
            }
            SubmitOutcome::Rejected(e) => self
                .link
                .counters
                .reject_weighted(RejectReason::from_sv1_code(e.code), v.difficulty),
            SubmitOutcome::Lost(_) => self.link.counters.lose_weighted(v.difficulty),
        }
        if !matches!(v.outcome, SubmitOutcome::Lost(_)) {
            self.link.submit_latency.observe_duration(v.sent.elapsed());
        }
        let _ = v.reply.send(v.outcome);
    }

    /// Sends one message to the pool within `write_timeout` (see [`bounded_write`] on why a
    /// write that does not complete must end the session).
    async fn send(&self, conn: &mut Conn, message: Message) -> Result<(), SessionEnd> {
        let timeout = self.link.params.write_timeout;
        bounded_write(conn.send(message.to_frame()), timeout, &self.link.shutdown)
            .await
            .map_err(|e| SessionEnd::from_write(e, timeout))
    }

    /// TCP connect and Noise handshake, pinned to the URL's authority key.
    async fn connect(&self) -> Result<Conn, SessionEnd> {
        let p = &self.link.params;
        let authority = p.url.authority_key().ok_or(SessionEnd::NotSv2)?;
        let mut stream = self.link.tcp_connect().await.map_err(SessionEnd::Connect)?;
        let (transport, cert) = initiate(&mut stream, authority)
            .await
            .map_err(|e| match e {
                HandshakeFailure::Noise(e) => SessionEnd::Handshake(e),
                HandshakeFailure::Closed => SessionEnd::Closed,
                HandshakeFailure::Io(e) => SessionEnd::Io(e),
            })?;
        debug!(
            valid_from = cert.valid_from,
            not_valid_after = cert.not_valid_after,
            "pool authenticated"
        );
        Ok(Framed::new(
            stream,
            NoiseCodec::new(transport).with_max_payload(MAX_PAYLOAD),
        ))
    }

    async fn run_session(&mut self) -> SessionEnd {
        let p = self.link.params.clone();
        let mut conn = match self.link.opening(self.connect()).await {
            Ok(conn) => conn,
            Err(end) => return end,
        };
        let setup = SetupConnection {
            protocol: Protocol::Mining,
            min_version: 2,
            max_version: 2,
            flags: setup_flags::REQUIRES_VERSION_ROLLING,
            endpoint_host: Str0255::truncated(&p.url.host),
            endpoint_port: p.url.port,
            vendor: Str0255::truncated("hashshift"),
            hardware_version: Str0255::truncated("proxy"),
            firmware: Str0255::truncated(concat!("hashshift/", env!("CARGO_PKG_VERSION"))),
            device_id: Str0255::default(),
        };
        if let Err(end) = self.send(&mut conn, Message::from(setup)).await {
            return end;
        }
        let mut phase = Phase::Setup;
        let deadline = tokio::time::Instant::now() + p.connect_timeout;
        let mut sweep = tokio::time::interval(SWEEP_EVERY);
        let end = loop {
            let open = matches!(phase, Phase::Open(_));
            tokio::select! {
                _ = self.link.shutdown.cancelled() => break SessionEnd::Shutdown,
                _ = tokio::time::sleep_until(deadline), if !open => break SessionEnd::Timeout,
                _ = sweep.tick() => {
                    if let Phase::Open(ch) = &mut phase {
                        let now = Instant::now();
                        self.deliver(ch.expire(now, p.submit_timeout));
                        if let Some(update) = ch.hashrate_update(self.link.hashrate.get(), now) {
                            debug!(nominal_hash_rate = update.nominal_hash_rate, "announcing the miners' hashrate");
                            if let Err(end) = self.send(&mut conn, Message::from(update)).await {
                                break end;
                            }
                        }
                    }
                }
                // Taken before the channel is open too: a share queued then is for a job of an
                // earlier session, and is answered at once instead of after the setup (or its
                // timeout, when the pool does not answer).
                share = self.link.submit_rx.recv() => {
                    let Some(share) = share else { break SessionEnd::Shutdown };
                    let Phase::Open(ch) = &mut phase else {
                        self.link.counters.lose_weighted(share.difficulty);
                        let _ = share.reply.send(SubmitOutcome::Lost("job from a previous pool session"));
                        continue;
                    };
                    match ch.submit(share, Instant::now()) {
                        // Answered by `fail_all` below if this write fails or stalls.
                        Ok(msg) => {
                            if let Err(end) = self.send(&mut conn, Message::from(msg)).await {
                                break end;
                            }
                        }
                        // Refused by the proxy (a share already sent): the pool never saw
                        // it, so it is not one of the pool's rejects.
                        Err(verdict) if matches!(verdict.outcome, SubmitOutcome::Rejected(_)) => {
                            let _ = verdict.reply.send(verdict.outcome);
                        }
                        Err(verdict) => self.deliver_one(verdict),
                    }
                }
                frame = conn.next() => {
                    let frame = match frame {
                        None => break SessionEnd::Closed,
                        Some(Err(e)) => break SessionEnd::Transport(e),
                        Some(Ok(f)) => f,
                    };
                    let msg = match Message::from_frame(&frame) {
                        Ok(m) => m,
                        Err(e) if e.is_ignorable() => {
                            debug!(error = %e, "ignoring a message we do not speak");
                            continue;
                        }
                        Err(error) => break SessionEnd::Malformed { what: "message", error },
                    };
                    match self.on_message(msg, &mut phase, &mut conn, &p).await {
                        Ok(()) => {}
                        Err(end) => break end,
                    }
                }
            }
        };
        if let Phase::Open(ch) = &mut phase {
            self.deliver(ch.fail_all("pool connection lost"));
        }
        end
    }

    async fn on_message(
        &self,
        msg: Message,
        phase: &mut Phase,
        conn: &mut Conn,
        p: &ConnectionParams,
    ) -> Result<(), SessionEnd> {
        let now = Instant::now();
        match (msg, &mut *phase) {
            (Message::SetupConnectionSuccess(s), Phase::Setup) => {
                debug!(
                    version = s.used_version,
                    flags = s.flags,
                    "connection set up"
                );
                let (announced, guessed) = self.nominal_hash_rate();
                let open = OpenExtendedMiningChannel {
                    request_id: OPEN_REQUEST_ID,
                    user_identity: Str0255::truncated(&p.user),
                    nominal_hash_rate: announced,
                    max_target: Target::MAX.to_le_bytes(),
                    min_extranonce_size: MIN_EXTRANONCE_SIZE,
                };
                self.send(conn, Message::from(open)).await?;
                *phase = Phase::Opening { announced, guessed };
            }
            (Message::SetupConnectionError(e), _) => {
                return Err(SessionEnd::Refused {
                    what: "the connection",
                    code: e.error_code.to_string(),
                });
            }
            (
                Message::OpenExtendedMiningChannelSuccess(s),
                Phase::Opening { announced, guessed },
            ) => {
                if s.request_id != OPEN_REQUEST_ID {
                    debug!(
                        request_id = s.request_id,
                        "answer to a request we did not make"
                    );
                    return Ok(());
                }
                // A channel too small to split among miners is refused (the pool counts as
                // down), as on SV1 pools.
                crate::pool_link::extranonce::miner_extranonce2_size(
                    usize::from(s.extranonce_size),
                    p.prefix_bytes,
                )
                .map_err(|e| {
                    error!(pool = %p.url, extranonce_size = s.extranonce_size, "{e}");
                    SessionEnd::from(e)
                })?;
                let ch = Box::new(Channel::open(&s, *announced, *guessed, now));
                info!(
                    channel = s.channel_id,
                    extranonce_prefix = %hex::encode(s.extranonce_prefix.as_bytes()),
                    extranonce_size = s.extranonce_size,
                    difficulty = Target::from_le_bytes(s.target).to_difficulty(),
                    "channel open"
                );
                *phase = Phase::Open(ch);
                self.publish(phase);
            }
            (Message::OpenMiningChannelError(e), Phase::Opening { .. }) => {
                return Err(SessionEnd::Refused {
                    what: "the channel",
                    code: e.error_code.to_string(),
                });
            }
            (Message::Reconnect(r), _) => {
                let host = r.new_host.to_string_lossy();
                let host = if host.is_empty() {
                    p.url.host.as_str()
                } else {
                    &host
                };
                let port = if r.new_port == 0 {
                    p.url.port
                } else {
                    r.new_port
                };
                let to = if host.contains(':') {
                    format!("[{host}]:{port}")
                } else {
                    format!("{host}:{port}")
                };
                info!(to = %to, "pool redirects us; the new host must prove the same authority key");
                return Err(SessionEnd::Reconnect(to));
            }
            (msg, Phase::Open(ch)) => {
                if let Some(id) = msg.channel_id() {
                    if !ch.addresses(id) {
                        debug!(
                            channel = id,
                            msg = msg.name(),
                            "message for another channel"
                        );
                        return Ok(());
                    }
                }
                if self.on_channel_message(msg, ch, now)? {
                    self.publish(phase);
                }
            }
            (msg, _) => debug!(
                msg = msg.name(),
                "unexpected message before the channel is open"
            ),
        }
        Ok(())
    }

    fn on_channel_message(
        &self,
        msg: Message,
        ch: &mut Channel,
        now: Instant,
    ) -> Result<bool, SessionEnd> {
        // Whether miners' work changed: only then is it republished.
        let mut changed = false;
        match msg {
            Message::NewExtendedMiningJob(j) => changed = ch.on_new_job(j, now),
            Message::SetNewPrevHash(p) => changed = ch.on_prev_hash(&p, now),
            Message::SetTarget(t) => {
                changed = ch.set_target(t.maximum_target, now);
                debug!(
                    difficulty = Target::from_le_bytes(t.maximum_target).to_difficulty(),
                    "pool target"
                );
            }
            Message::SetExtranoncePrefix(e) => {
                ch.set_extranonce_prefix(e.extranonce_prefix.as_bytes(), now);
                changed = true;
                info!(extranonce_prefix = %hex::encode(e.extranonce_prefix.as_bytes()), "pool changed our extranonce prefix");
            }
            Message::SubmitSharesSuccess(s) => self.deliver(ch.on_success(&s)),
            Message::SubmitSharesError(e) => {
                if let Some(v) = ch.on_error(&e) {
                    debug!(seq = e.sequence_number, code = %e.error_code, "pool rejected a share");
                    self.deliver_one(v);
                }
            }
            Message::CloseChannel(c) if c.channel_id == ch.id() => {
                return Err(SessionEnd::ChannelClosed(c.reason_code.to_string()));
            }
            Message::UpdateChannelError(e) => {
                warn!(code = %e.error_code, "pool refused a channel update")
            }
            other => debug!(msg = other.name(), "ignored message from pool"),
        }
        Ok(changed)
    }

    /// Hash rate to announce when opening a channel: the miners' estimate, if any, else the
    /// default (then `true`: a guess).
    fn nominal_hash_rate(&self) -> (f32, bool) {
        let estimate = self.link.hashrate.get();
        if estimate.is_finite() && estimate > 0.0 {
            (estimate as f32, false)
        } else {
            (DEFAULT_NOMINAL_HASH_RATE, true)
        }
    }

    fn publish(&self, phase: &Phase) {
        let Phase::Open(ch) = phase else { return };
        self.link.work_tx.send_replace(Arc::new(ch.work_state()));
        let status = if ch.has_job() {
            ConnStatus::Up
        } else {
            ConnStatus::Connecting
        };
        self.link
            .status_tx
            .send_if_modified(|s| std::mem::replace(s, status) != status);
    }
}
