//! Load-mode SV2 miners: clients that speak Stratum V2 over Noise but do not hash.
//!
//! Each miner, like SV2 ASIC firmware: TCP connect; Noise NX handshake as initiator, the
//! certificate checked against the pinned authority key; `SetupConnection` (Mining, version
//! 2; `REQUIRES_STANDARD_JOBS` for a standard channel); `OpenStandardMiningChannel` (or
//! `OpenExtendedMiningChannel` with `--channel extended`). It follows jobs (a future job
//! becomes current with its `SetNewPrevHash`) and, once the load phase starts, submits
//! `SubmitSharesStandard` (or `SubmitSharesExtended` with a random extranonce) at a fixed
//! rate on the current job with a random nonce. The bench pins the difficulty tiny, so every
//! such share meets its target and the proxy does the full validation work.
//!
//! Round trip: a share is timed from its write to the answer that covers it. A
//! `SubmitShares.Success` acknowledges every sequence number up to its
//! `last_sequence_number` (the proxy batches them: up to 32 shares or 100 ms), so it answers
//! all outstanding shares up to there at once; a `SubmitShares.Error` answers its one share.
//! Sequence numbers start at 0 and only grow, so the outstanding shares are a queue.
//!
//! At shutdown a miner closes cleanly (FIN, then reads until the proxy closes), so the
//! proxy logs a normal disconnect, not a reset.
//!
//! Per-miner memory is kept small for 10k miners in one process: a 256-byte initial read
//! buffer, the two cipher states and a queue of outstanding shares.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use rand::Rng;
use tokio::net::TcpStream;
use tokio_util::codec::Framed;
use tokio_util::sync::CancellationToken;

use super::args::ChannelKind;
use super::stats::Shared;
use super::sv1::{MAX_IN_FLIGHT, close, next_tick, share_ticker};
use crate::testpool::job_tag;
use hashshift_protocol::noise::{AuthorityPublicKey, NoiseCodec};
use hashshift_protocol::sv2::constants::setup_flags;
use hashshift_protocol::sv2::{
    B032, Message, OpenExtendedMiningChannel, OpenStandardMiningChannel, Protocol, SetupConnection,
    Str0255, SubmitSharesExtended, SubmitSharesStandard,
};

/// Largest frame accepted from the proxy (jobs are a few hundred bytes).
const MAX_PAYLOAD: usize = 64 * 1024;
/// Initial read buffer: an idle miner holds little memory; it grows if a frame needs more.
const READ_BUFFER: usize = 256;
/// How long the TCP connect and the Noise handshake may take together: longer than SV1's
/// connect timeout, because a connect phase faster than the proxy's handshake rate queues
/// handshakes (10k at ~1,000/s is 10 s) and the queue is what the rate measurement needs.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(30);
/// Request id of the one channel each miner opens.
const REQUEST_ID: u32 = 1;
/// Extranonce bytes an extended channel asks for.
const EXTENDED_EXTRANONCE: u16 = 4;

/// One SV2 load miner's settings.
#[derive(Clone, Debug)]
pub(crate) struct Sv2MinerConfig {
    pub addr: SocketAddr,
    pub worker: String,
    /// Time between submits.
    pub share_interval: Duration,
    /// The key the server's certificate must be signed by.
    pub authority: AuthorityPublicKey,
    pub channel: ChannelKind,
}

type Conn = Framed<TcpStream, NoiseCodec>;

/// A job shares can be submitted to.
#[derive(Clone, Copy)]
struct Job {
    id: u32,
    ntime: u32,
    version: u32,
}

/// The open channel.
struct OpenChannel {
    id: u32,
    /// Bytes the miner rolls (extended channels; 0 for standard).
    extranonce_size: usize,
}

/// TCP connect and the Noise handshake; `None` on any failure.
async fn connect(config: &Sv2MinerConfig, shared: &Shared) -> Option<Conn> {
    let started = Instant::now();
    let mut stream = TcpStream::connect(config.addr).await.ok()?;
    let _ = stream.set_nodelay(true);
    let (transport, _cert) = hashshift_proxy::noise_tcp::initiate(&mut stream, config.authority)
        .await
        .ok()?;
    shared.handshake_done(started);
    let codec = NoiseCodec::new(transport).with_max_payload(MAX_PAYLOAD);
    Some(Framed::with_capacity(stream, codec, READ_BUFFER))
}

/// Runs one miner until `shutdown`.
pub(crate) async fn run(config: Sv2MinerConfig, shared: &Shared, shutdown: CancellationToken) {
    let connected = tokio::select! {
        _ = shutdown.cancelled() => return,
        c = tokio::time::timeout(HANDSHAKE_TIMEOUT, connect(&config, shared)) => c,
    };
    let Ok(Some(mut conn)) = connected else {
        shared.connect_errors.fetch_add(1, Ordering::Relaxed);
        return;
    };
    let flags = match config.channel {
        ChannelKind::Standard => setup_flags::REQUIRES_STANDARD_JOBS,
        ChannelKind::Extended => 0,
    };
    let setup = SetupConnection {
        protocol: Protocol::Mining,
        min_version: 2,
        max_version: 2,
        flags,
        endpoint_host: Str0255::truncated(&config.addr.ip().to_string()),
        endpoint_port: config.addr.port(),
        vendor: Str0255::truncated("hashshift-bench"),
        hardware_version: Str0255::truncated("load-miner"),
        firmware: Str0255::truncated(concat!("hashshift-bench/", env!("CARGO_PKG_VERSION"))),
        device_id: Str0255::truncated(&config.worker),
    };
    if conn.send(Message::from(setup).to_frame()).await.is_err() {
        shared.connect_errors.fetch_add(1, Ordering::Relaxed);
        return;
    }
    let mut miner = Miner {
        config: &config,
        shared,
        channel: None,
        job: None,
        future: None,
        ready: false,
        pending: VecDeque::new(),
        next_sequence: 0,
    };
    let mut ticker: Option<tokio::time::Interval> = None;
    loop {
        // Cancel-safe branches only: cancellation, `Framed::next`, an interval tick.
        let outgoing = tokio::select! {
            _ = shutdown.cancelled() => {
                close(conn).await;
                return;
            }
            _ = shared.go.cancelled(), if ticker.is_none() => {
                ticker = Some(share_ticker(config.share_interval));
                None
            }
            _ = next_tick(&mut ticker) => miner.share(),
            incoming = conn.next() => {
                let message = match incoming {
                    Some(Ok(frame)) => Message::from_frame(&frame),
                    None | Some(Err(_)) => {
                        miner.lost();
                        return;
                    }
                };
                match message {
                    Ok(m) => match miner.on_message(m) {
                        Ok(reply) => reply,
                        Err(()) => {
                            miner.lost();
                            return;
                        }
                    },
                    // Messages of extensions we do not speak are skipped; anything else
                    // malformed is a broken proxy: end this miner.
                    Err(e) if e.is_ignorable() => None,
                    Err(_) => {
                        miner.lost();
                        return;
                    }
                }
            }
        };
        if let Some(message) = outgoing {
            let is_share = matches!(
                message,
                Message::SubmitSharesStandard(_) | Message::SubmitSharesExtended(_)
            );
            if conn.send(message.to_frame()).await.is_err() {
                miner.lost();
                return;
            }
            if is_share {
                shared.submitted.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
}

/// One miner's protocol state (sans-IO: messages in, the message to send out).
struct Miner<'a> {
    config: &'a Sv2MinerConfig,
    shared: &'a Shared,
    channel: Option<OpenChannel>,
    /// The job shares go to.
    job: Option<Job>,
    /// A future job waiting for its `SetNewPrevHash`.
    future: Option<(u32, u32)>,
    ready: bool,
    /// Outstanding shares, oldest first: (sequence number, write time).
    pending: VecDeque<(u32, Instant)>,
    next_sequence: u32,
}

impl Miner<'_> {
    /// The connection ended before shutdown.
    fn lost(&self) {
        self.shared.disconnects.fetch_add(1, Ordering::Relaxed);
        if !self.ready {
            self.shared.connect_errors.fetch_add(1, Ordering::Relaxed);
        }
    }

    fn set_job(&mut self, job: Job) {
        self.job = Some(job);
        if !self.ready && self.channel.is_some() {
            self.ready = true;
            self.shared.ready.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// A share on the current job, or `None` (tick skipped) without one or with too many
    /// outstanding.
    fn share(&mut self) -> Option<Message> {
        let (Some(ch), Some(job)) = (&self.channel, self.job) else {
            self.shared.skipped.fetch_add(1, Ordering::Relaxed);
            return None;
        };
        if self.pending.len() >= MAX_IN_FLIGHT {
            self.shared.skipped.fetch_add(1, Ordering::Relaxed);
            return None;
        }
        let sequence_number = self.next_sequence;
        self.next_sequence = self.next_sequence.wrapping_add(1);
        self.pending.push_back((sequence_number, Instant::now()));
        let mut rng = rand::rng();
        let nonce = rng.random();
        Some(match self.config.channel {
            ChannelKind::Standard => Message::SubmitSharesStandard(SubmitSharesStandard {
                channel_id: ch.id,
                sequence_number,
                job_id: job.id,
                nonce,
                ntime: job.ntime,
                version: job.version,
            }),
            ChannelKind::Extended => {
                let extranonce: Vec<u8> = (0..ch.extranonce_size).map(|_| rng.random()).collect();
                Message::SubmitSharesExtended(SubmitSharesExtended {
                    channel_id: ch.id,
                    sequence_number,
                    job_id: job.id,
                    nonce,
                    ntime: job.ntime,
                    version: job.version,
                    // The size comes from the server; B032 refuses more than 32 bytes.
                    extranonce: B032::try_from(extranonce).unwrap_or_default(),
                })
            }
        })
    }

    fn open_channel(&self) -> Message {
        let user_identity = Str0255::truncated(&self.config.worker);
        // The largest target: the proxy's vardiff decides (the bench pins it tiny).
        let max_target = [0xff; 32];
        match self.config.channel {
            ChannelKind::Standard => {
                Message::OpenStandardMiningChannel(OpenStandardMiningChannel {
                    request_id: REQUEST_ID,
                    user_identity,
                    nominal_hash_rate: 0.0,
                    max_target,
                })
            }
            ChannelKind::Extended => {
                Message::OpenExtendedMiningChannel(OpenExtendedMiningChannel {
                    request_id: REQUEST_ID,
                    user_identity,
                    nominal_hash_rate: 0.0,
                    max_target,
                    min_extranonce_size: EXTENDED_EXTRANONCE,
                })
            }
        }
    }

    /// Handles one message; `Err` ends the miner (refused setup or channel, closed channel).
    fn on_message(&mut self, message: Message) -> Result<Option<Message>, ()> {
        let now = Instant::now();
        let ours = |channel_id: u32| self.channel.as_ref().is_some_and(|c| c.id == channel_id);
        match message {
            Message::SetupConnectionSuccess(_) => return Ok(Some(self.open_channel())),
            Message::SetupConnectionError(_) | Message::OpenMiningChannelError(_) => return Err(()),
            Message::OpenStandardMiningChannelSuccess(m) if m.request_id == REQUEST_ID => {
                self.channel = Some(OpenChannel {
                    id: m.channel_id,
                    extranonce_size: 0,
                });
            }
            Message::OpenExtendedMiningChannelSuccess(m) if m.request_id == REQUEST_ID => {
                self.channel = Some(OpenChannel {
                    id: m.channel_id,
                    extranonce_size: usize::from(m.extranonce_size),
                });
            }
            Message::NewMiningJob(j) if ours(j.channel_id) => {
                self.shared.job_received(None, now);
                self.on_job(j.job_id, j.min_ntime, j.version);
            }
            Message::NewExtendedMiningJob(j) if ours(j.channel_id) => {
                self.shared
                    .job_received(job_tag(j.coinbase_tx_prefix.as_bytes()), now);
                self.on_job(j.job_id, j.min_ntime, j.version);
            }
            Message::SetNewPrevHash(p) if ours(p.channel_id) => {
                if let Some((id, version)) = self.future.take_if(|(id, _)| *id == p.job_id) {
                    self.set_job(Job {
                        id,
                        ntime: p.min_ntime,
                        version,
                    });
                }
            }
            Message::SubmitSharesSuccess(s) if ours(s.channel_id) => {
                self.shared.acks.fetch_add(1, Ordering::Relaxed);
                while let Some(&(seq, sent)) = self.pending.front()
                    && seq <= s.last_sequence_number
                {
                    self.pending.pop_front();
                    self.shared.answered(sent, now, true);
                }
            }
            Message::SubmitSharesError(e) if ours(e.channel_id) => {
                if let Some(at) = self
                    .pending
                    .iter()
                    .position(|(seq, _)| *seq == e.sequence_number)
                    && let Some((_, sent)) = self.pending.remove(at)
                {
                    self.shared.answered(sent, now, false);
                } else {
                    // Already covered by a Success (or never sent): count the verdict only.
                    self.shared.rejected.fetch_add(1, Ordering::Relaxed);
                }
                self.shared.rejected_with(&e.error_code.to_string());
            }
            Message::CloseChannel(c) if ours(c.channel_id) => return Err(()),
            Message::Reconnect(_) => return Err(()),
            // Targets (pinned tiny by the bench), extranonce moves (standard channels get their
            // extranonce in the merkle root; extended ones roll after the prefix), group
            // channels: nothing to do for a miner that does not hash.
            _ => {}
        }
        Ok(None)
    }

    fn on_job(&mut self, id: u32, min_ntime: Option<u32>, version: u32) {
        match min_ntime {
            Some(ntime) => self.set_job(Job { id, ntime, version }),
            None => self.future = Some((id, version)),
        }
    }
}
