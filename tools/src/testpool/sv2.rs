//! The test pool's Stratum V2 mode ([`super::TestPool::start_sv2`]): Noise responder, the
//! Mining protocol's setup and extended channels, jobs, targets and share validation.
//!
//! Behaves like SRI's pool where it matters to a client:
//! - the Noise NX handshake with a certificate signed by the pool's authority key (generated
//!   at start; [`super::TestPool::authority_public_key`] gives it to tests);
//! - `SetupConnection` for the Mining protocol, version 2 (others get `SetupConnection.Error`);
//! - one extended channel per connection: a unique `extranonce1_len`-byte prefix and
//!   `extranonce2_size` rollable bytes (SRI: 4 and 16, [`super::TestPoolConfig::sv2`]);
//!   a `min_extranonce_size` above that is refused with `min-extranonce-size-too-large`;
//! - a new block is a future `NewExtendedMiningJob` then `SetNewPrevHash`; other jobs are
//!   non-future jobs; a difficulty change is a `SetTarget` right before the job it applies to;
//! - version rolling is allowed on every job when the pool's `version_mask` is not 0, and a
//!   share's version may differ from the job's only inside that mask;
//! - every `SubmitSharesExtended` is validated by a [`ShareValidator`] and answered at once:
//!   `SubmitShares.Success` for that one share (no batching) or `SubmitShares.Error` with
//!   SRI's code. Shares are credited to the channel's `user_identity`.
//!
//! Connection handling is simpler than the SV1 mode's: one task per connection writes its
//! own frames, each batch within `send_timeout`, so a peer that stops reading is dropped
//! without holding up anyone else.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use futures_util::{SinkExt, StreamExt};
use hashshift_protocol::noise::NoiseCodec;
use hashshift_protocol::share::{
    Job, ShareValidator, Submission, SubmittedVersion, Target, ValidatorConfig,
};
use hashshift_protocol::sv2::constants::error_code::{open_mining_channel, setup_connection};
use hashshift_protocol::sv2::{
    B032, B064K, Message, NewExtendedMiningJob, OpenExtendedMiningChannel,
    OpenExtendedMiningChannelSuccess, OpenMiningChannelError, Protocol, Reconnect, Seq0255,
    SetNewPrevHash, SetTarget, SetupConnectionError, SetupConnectionSuccess, Str0255,
    SubmitSharesError, SubmitSharesExtended, SubmitSharesSuccess,
};
use tokio::net::TcpStream;
use tokio_util::codec::Framed;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use super::Inner;
use super::job::{PoolJob, Work};
use super::session::{Flow, credit, rejection_reason};
use super::stats::{StatsRecorder, reason};

/// Largest payload accepted from a client (its messages are all small).
const MAX_PAYLOAD: usize = 64 * 1024;
/// Jobs kept valid per channel, as in the SV1 mode.
const JOBS_KEPT: usize = 8;
/// The one channel id of each connection.
const CHANNEL_ID: u32 = 1;

pub(super) async fn serve(
    inner: Arc<Inner>,
    stream: TcpStream,
    peer: SocketAddr,
    conn: u64,
    cancel: CancellationToken,
) {
    inner.stats.connected();
    info!("miner connected");
    let why = run(&inner, stream, conn, &cancel).await;
    inner.stats.disconnected();
    info!(%peer, reason = why, "miner disconnected");
}

async fn run(
    inner: &Inner,
    mut stream: TcpStream,
    conn: u64,
    cancel: &CancellationToken,
) -> &'static str {
    let Some(noise) = inner.sv2.as_ref() else {
        return "not an SV2 pool";
    };
    let timeout = inner.config.send_timeout;
    let transport = tokio::select! {
        _ = cancel.cancelled() => return "closed by the pool",
        r = tokio::time::timeout(timeout, hashshift_proxy::noise_tcp::accept(&mut stream, noise)) => match r {
            Ok(Ok(t)) => t,
            Ok(Err(error)) => {
                debug!(%error, "handshake failed");
                return "handshake failed";
            }
            Err(_) => return "no handshake",
        },
    };
    let mut framed = Framed::new(
        stream,
        NoiseCodec::new(transport).with_max_payload(MAX_PAYLOAD),
    );
    let mut session = Session::new(
        super::extranonce1(conn, inner.config.extranonce1_len),
        inner.config.extranonce2_size,
    );
    let mut work_rx = inner.work.subscribe();
    let mut redirect_rx = inner.redirect.subscribe();
    redirect_rx.borrow_and_update();
    let mut reading_rx = inner.reading.subscribe();
    let mut reading = *reading_rx.borrow_and_update();
    let mut out: Vec<Message> = Vec::new();
    loop {
        let mut flow = Flow::Continue;
        // Every branch is cancel-safe (`Framed::next`, `watch::changed`).
        tokio::select! {
            _ = cancel.cancelled() => return "closed by the pool",
            changed = reading_rx.changed() => {
                if changed.is_err() {
                    return "pool stopped";
                }
                reading = *reading_rx.borrow_and_update();
            }
            frame = framed.next(), if reading => {
                let frame = match frame {
                    None => return "peer closed the connection",
                    Some(Err(_)) => return "read error",
                    Some(Ok(f)) => f,
                };
                match Message::from_frame(&frame) {
                    Ok(msg) => {
                        let work = inner.current_work();
                        flow = session.handle(msg, &work, &inner.stats, Instant::now(), &mut out);
                    }
                    Err(e) if e.is_ignorable() => debug!(error = %e, "ignored message"),
                    Err(error) => {
                        debug!(%error, "malformed message");
                        return "protocol violation";
                    }
                }
            }
            changed = redirect_rx.changed() => {
                if changed.is_err() {
                    return "pool stopped";
                }
                if let Some(to) = *redirect_rx.borrow_and_update() {
                    out.push(Message::from(Reconnect {
                        new_host: Str0255::try_from(to.ip().to_string().as_str()).unwrap_or_default(),
                        new_port: to.port(),
                    }));
                }
            }
            changed = work_rx.changed() => {
                if changed.is_err() {
                    return "pool stopped";
                }
                let work = work_rx.borrow_and_update().clone();
                session.on_work(&work, &mut out);
            }
        }
        if !out.is_empty() {
            let send = async {
                for m in out.drain(..) {
                    framed.feed(m.to_frame()).await?;
                }
                framed.flush().await
            };
            match tokio::time::timeout(timeout, send).await {
                Ok(Ok(())) => {}
                Ok(Err(_)) => return "write error",
                Err(_) => {
                    warn!(?timeout, "write stalled, peer is not reading");
                    return "peer not reading";
                }
            }
        }
        match flow {
            Flow::Continue => {}
            Flow::BlockFound => inner.block_found(),
            Flow::Close => return "protocol violation",
        }
    }
}

/// The open channel of a connection.
#[derive(Debug)]
struct Channel {
    user: String,
    validator: ShareValidator,
    /// `(seq, block epoch, difficulty)` of the last job sent.
    last_sent: Option<(u64, u64, f64)>,
    version_mask: u32,
}

/// Protocol state of one SV2 connection, without I/O.
#[derive(Debug)]
pub(crate) struct Session {
    prefix: Vec<u8>,
    extranonce_size: usize,
    set_up: bool,
    channel: Option<Channel>,
}

fn str255(s: &str) -> Str0255 {
    Str0255::try_from(s).unwrap_or_default()
}

impl Session {
    pub fn new(prefix: Vec<u8>, extranonce_size: usize) -> Self {
        Session {
            prefix,
            extranonce_size,
            set_up: false,
            channel: None,
        }
    }

    /// Handles one message from the client, appending answers to `out`.
    pub fn handle(
        &mut self,
        msg: Message,
        work: &Work,
        stats: &StatsRecorder,
        now: Instant,
        out: &mut Vec<Message>,
    ) -> Flow {
        match msg {
            Message::SetupConnection(s) => {
                let refuse = |code: &str| {
                    Message::from(SetupConnectionError {
                        flags: 0,
                        error_code: str255(code),
                    })
                };
                if s.protocol != Protocol::Mining {
                    out.push(refuse(setup_connection::UNSUPPORTED_PROTOCOL));
                    return Flow::Close;
                }
                if s.min_version > 2 || s.max_version < 2 {
                    out.push(refuse(setup_connection::PROTOCOL_VERSION_MISMATCH));
                    return Flow::Close;
                }
                self.set_up = true;
                out.push(
                    SetupConnectionSuccess {
                        used_version: 2,
                        flags: 0,
                    }
                    .into(),
                );
            }
            Message::OpenExtendedMiningChannel(o) => {
                if !self.set_up {
                    return Flow::Close;
                }
                stats.announced(o.nominal_hash_rate, false);
                self.open(o, work, out);
            }
            Message::UpdateChannel(u) if u.channel_id == CHANNEL_ID => {
                // Recorded only: this pool keeps its own fixed difficulty.
                stats.announced(u.nominal_hash_rate, true);
            }
            Message::SubmitSharesExtended(s) => return self.submit(&s, stats, now, out),
            Message::CloseChannel(c) if c.channel_id == CHANNEL_ID => self.channel = None,
            other => debug!(msg = other.name(), "ignored message"),
        }
        Flow::Continue
    }

    fn open(&mut self, o: OpenExtendedMiningChannel, work: &Work, out: &mut Vec<Message>) {
        let refuse = |code: &str| {
            Message::from(OpenMiningChannelError {
                request_id: o.request_id,
                error_code: str255(code),
            })
        };
        if self.channel.is_some() {
            out.push(refuse(open_mining_channel::CHANNEL_CAPACITY_EXHAUSTED));
            return;
        }
        if usize::from(o.min_extranonce_size) > self.extranonce_size {
            out.push(refuse(open_mining_channel::MIN_EXTRANONCE_SIZE_TOO_LARGE));
            return;
        }
        let difficulty = work.job.difficulty;
        let target = Target::from_difficulty(difficulty).unwrap_or(Target::DIFF1);
        let config = ValidatorConfig {
            max_jobs: JOBS_KEPT,
            extranonce_size: self.extranonce_size,
            version_rolling_mask: work.version_mask,
            max_shares_per_job: 1 << 18,
            ..ValidatorConfig::default()
        };
        let user = o.user_identity.to_string_lossy().into_owned();
        debug!(%user, "channel opened");
        out.push(
            OpenExtendedMiningChannelSuccess {
                request_id: o.request_id,
                channel_id: CHANNEL_ID,
                target: target.to_le_bytes(),
                extranonce_size: self.extranonce_size as u16,
                extranonce_prefix: B032::try_from(self.prefix.as_slice()).unwrap_or_default(),
                group_channel_id: 0,
            }
            .into(),
        );
        self.channel = Some(Channel {
            user,
            validator: ShareValidator::new(config, self.prefix.clone(), target),
            last_sent: None,
            version_mask: work.version_mask,
        });
        self.on_work(work, out);
    }

    fn submit(
        &mut self,
        s: &SubmitSharesExtended,
        stats: &StatsRecorder,
        now: Instant,
        out: &mut Vec<Message>,
    ) -> Flow {
        let error = |code: &str| {
            Message::from(SubmitSharesError {
                channel_id: s.channel_id,
                sequence_number: s.sequence_number,
                error_code: str255(code),
            })
        };
        let Some(ch) = self.channel.as_mut().filter(|_| s.channel_id == CHANNEL_ID) else {
            stats.rejected(None, reason::OTHER, now);
            out.push(error(
                hashshift_protocol::share::rejection::SV2_INVALID_CHANNEL_ID,
            ));
            return Flow::Continue;
        };
        let share = Submission {
            job_id: s.job_id,
            extranonce: s.extranonce.as_bytes(),
            ntime: s.ntime,
            nonce: s.nonce,
            version: SubmittedVersion::Full(s.version),
        };
        match ch.validator.validate(&share) {
            Ok(accepted) => {
                credit(stats, &ch.user, &accepted, now);
                out.push(
                    SubmitSharesSuccess {
                        channel_id: CHANNEL_ID,
                        last_sequence_number: s.sequence_number,
                        new_submits_accepted_count: 1,
                        // SRI truncates the difficulty sum to an integer.
                        new_shares_sum: accepted.credited_difficulty as u64,
                    }
                    .into(),
                );
                if accepted.is_block {
                    return Flow::BlockFound;
                }
            }
            Err(rejection) => {
                debug!(user = %ch.user, %rejection, "share rejected");
                stats.rejected(Some(&ch.user), rejection_reason(&rejection), now);
                out.push(error(rejection.sv2_error_code()));
            }
        }
        Flow::Continue
    }

    /// Brings the channel up to date with the pool's latest work; the same work twice sends
    /// nothing.
    pub fn on_work(&mut self, work: &Work, out: &mut Vec<Message>) {
        let Some(ch) = self.channel.as_mut() else {
            return;
        };
        let job: &PoolJob = &work.job;
        let (clean, difficulty_changed) = match ch.last_sent {
            Some((seq, _, _)) if seq == job.seq => return,
            Some((_, block, d)) => (job.clean || block != job.block, d != job.difficulty),
            // The channel's first target went out with OpenExtendedMiningChannel.Success.
            None => (true, false),
        };
        if difficulty_changed {
            let Ok(target) = Target::from_difficulty(job.difficulty) else {
                warn!(
                    difficulty = job.difficulty,
                    "unusable difficulty, job not sent"
                );
                return;
            };
            ch.validator.set_miner_target(target);
            out.push(
                SetTarget {
                    channel_id: CHANNEL_ID,
                    maximum_target: target.to_le_bytes(),
                }
                .into(),
            );
        }
        if work.version_mask != ch.version_mask {
            ch.version_mask = work.version_mask;
            ch.validator.set_version_rolling_mask(work.version_mask);
        }
        let job_id = job.seq as u32;
        if let Err(error) = ch
            .validator
            .add_job(job_id, Job::from(job.job.clone()), clean)
        {
            warn!(%error, "job refused by the validator, not sent");
            return;
        }
        let (Ok(merkle_path), Ok(prefix), Ok(suffix)) = (
            Seq0255::try_from(job.job.merkle_branch.clone()),
            B064K::try_from(job.job.coinbase_prefix.clone()),
            B064K::try_from(job.job.coinbase_suffix.clone()),
        ) else {
            warn!("job does not fit SV2 limits, not sent");
            return;
        };
        out.push(
            NewExtendedMiningJob {
                channel_id: CHANNEL_ID,
                job_id,
                // A new block is announced as a future job activated by SetNewPrevHash.
                min_ntime: if clean { None } else { Some(job.job.ntime) },
                version: job.job.version,
                version_rolling_allowed: work.version_mask != 0,
                merkle_path,
                coinbase_tx_prefix: prefix,
                coinbase_tx_suffix: suffix,
            }
            .into(),
        );
        if clean {
            out.push(
                SetNewPrevHash {
                    channel_id: CHANNEL_ID,
                    job_id,
                    prev_hash: job.job.prev_hash,
                    min_ntime: job.job.ntime,
                    nbits: job.job.nbits,
                }
                .into(),
            );
        }
        ch.last_sent = Some((job.seq, job.block, job.difficulty));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testpool::job::JobFactory;

    #[test]
    fn setup_open_then_future_job_and_prevhash_then_plain_jobs() {
        let mut f = JobFactory::new(1e15, 2, 20, "t").unwrap();
        let stats = StatsRecorder::default();
        let now = Instant::now();
        let w1 = Work {
            job: f.next_job(false, 2.0, 1_700_000_000),
            version_mask: 0x1fff_e000,
        };
        let mut s = Session::new(vec![0, 0, 0, 1], 16);
        let mut out = Vec::new();
        let open = OpenExtendedMiningChannel {
            request_id: 3,
            user_identity: str255("farm"),
            nominal_hash_rate: 1e12,
            max_target: [0xff; 32],
            min_extranonce_size: 8,
        };
        assert_eq!(
            s.handle(open.clone().into(), &w1, &stats, now, &mut out),
            Flow::Close,
            "no channel before SetupConnection"
        );
        let setup = hashshift_protocol::sv2::SetupConnection {
            protocol: Protocol::Mining,
            min_version: 2,
            max_version: 2,
            flags: 0,
            endpoint_host: str255("x"),
            endpoint_port: 1,
            vendor: str255(""),
            hardware_version: str255(""),
            firmware: str255(""),
            device_id: str255(""),
        };
        s.handle(setup.into(), &w1, &stats, now, &mut out);
        s.handle(open.clone().into(), &w1, &stats, now, &mut out);
        let names: Vec<_> = out.drain(..).map(|m| m.name()).collect();
        assert_eq!(
            names,
            [
                "SetupConnection.Success",
                "OpenExtendedMiningChannel.Success",
                "NewExtendedMiningJob",
                "SetNewPrevHash"
            ]
        );
        s.on_work(&w1, &mut out);
        assert!(out.is_empty(), "same work twice sends nothing");
        let w2 = Work {
            job: f.next_job(false, 4.0, 1_700_000_000),
            version_mask: 0x1fff_e000,
        };
        s.on_work(&w2, &mut out);
        let names: Vec<_> = out.iter().map(|m| m.name()).collect();
        assert_eq!(names, ["SetTarget", "NewExtendedMiningJob"]);
        assert!(matches!(&out[1], Message::NewExtendedMiningJob(j) if j.min_ntime.is_some()));
        out.clear();
        let mut big = open;
        big.min_extranonce_size = 17;
        let mut s2 = Session::new(vec![1; 4], 16);
        s2.set_up = true;
        s2.handle(big.into(), &w2, &stats, now, &mut out);
        assert!(matches!(&out[0], Message::OpenMiningChannelError(e)
            if e.error_code.to_string() == open_mining_channel::MIN_EXTRANONCE_SIZE_TOO_LARGE));
    }
}
