//! A minimal Stratum V2 miner for tests, built on the Stratum Reference Implementation's
//! published crates (`noise_sv2`/`codec_sv2` for the Noise handshake and encrypted framing,
//! `mining_sv2`/`common_messages_sv2`/`binary_sv2` for the messages): none of hashshift's SV2
//! code is on the miner's side of the wire, so what the proxy sends is checked by an
//! independent implementation. Shares are found by real hashing (header or coinbase + merkle
//! path), computed here from the fields SRI decoded.
#![allow(dead_code)]

use std::collections::VecDeque;
use std::net::SocketAddr;

use anyhow::{Context, Result, anyhow, bail};
use binary_sv2 as bin;
use codec_sv2::{
    Decrypted, Handshake, MessageFrame, NoiseDecoder, NoiseEncoder, TransportDecryptState,
    TransportEncryptState,
};
use common_messages_sv2 as sric;
use mining_sv2 as sri;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use hashshift_protocol::share::Target;
use hashshift_protocol::share::hash::{sha256d, sha256d_80};
use hashshift_protocol::share::job::build_header;
use hashshift_protocol::share::merkle::merkle_root;

use super::miner::within;

mod received;

pub use received::Received;
use received::parse;

/// SV2 Mining `SetupConnection` flag: standard jobs only (what ASIC firmware sets).
pub const REQUIRES_STANDARD_JOBS: u32 = 1;
/// SV2 Mining `SetupConnection` flag: work selection (we expect the proxy to refuse it).
pub const REQUIRES_WORK_SELECTION: u32 = 2;

/// A job a channel can mine: the header fields, and for extended jobs the coinbase parts.
#[derive(Clone, Debug)]
pub struct MiningJob {
    pub channel_id: u32,
    pub job_id: u32,
    pub version: u32,
    pub prev_hash: [u8; 32],
    pub nbits: u32,
    pub ntime: u32,
    /// Standard jobs: the merkle root. Extended jobs: `None`.
    pub merkle_root: Option<[u8; 32]>,
    pub coinbase_prefix: Vec<u8>,
    pub coinbase_suffix: Vec<u8>,
    pub merkle_path: Vec<[u8; 32]>,
}

/// A share found for a job.
#[derive(Clone, Debug)]
pub struct FoundShare {
    pub job_id: u32,
    pub nonce: u32,
    pub ntime: u32,
    pub version: u32,
    pub extranonce: Vec<u8>,
}

impl MiningJob {
    /// The header hash for a share, computed from scratch.
    pub fn hash(&self, prefix: &[u8], share: &FoundShare) -> [u8; 32] {
        let root = match self.merkle_root {
            Some(root) => root,
            None => {
                let mut coinbase = self.coinbase_prefix.clone();
                coinbase.extend_from_slice(prefix);
                coinbase.extend_from_slice(&share.extranonce);
                coinbase.extend_from_slice(&self.coinbase_suffix);
                merkle_root(&sha256d(&coinbase), &self.merkle_path)
            }
        };
        sha256d_80(&build_header(
            share.version,
            &self.prev_hash,
            &root,
            share.ntime,
            self.nbits,
            share.nonce,
        ))
    }

    /// Searches nonces from `seed << 20` for a hash meeting `target` (or, with `miss`, one that
    /// does not).
    pub fn find(
        &self,
        prefix: &[u8],
        extranonce: Vec<u8>,
        version: u32,
        target: &[u8; 32],
        seed: u32,
        miss: bool,
    ) -> FoundShare {
        let target = Target::from_le_bytes(*target);
        self.find_by(prefix, extranonce, version, seed, |hash| {
            target.is_met_by(hash) != miss
        })
    }

    /// Searches nonces from `seed << 20` for a share whose header hash `wanted` accepts
    /// (e.g. one that meets the network target but not the pool's).
    pub fn find_by(
        &self,
        prefix: &[u8],
        extranonce: Vec<u8>,
        version: u32,
        seed: u32,
        wanted: impl Fn(&[u8; 32]) -> bool,
    ) -> FoundShare {
        let mut share = FoundShare {
            job_id: self.job_id,
            nonce: seed << 20,
            ntime: self.ntime,
            version,
            extranonce,
        };
        loop {
            if wanted(&self.hash(prefix, &share)) {
                return share;
            }
            share.nonce = share.nonce.wrapping_add(1);
        }
    }
}

/// A channel as its miner sees it after `Open*Success`.
#[derive(Clone, Debug)]
pub struct OpenedChannel {
    pub id: u32,
    pub group: u32,
    pub target: [u8; 32],
    /// The channel's extranonce prefix (standard channels: their whole extranonce).
    pub prefix: Vec<u8>,
    /// Rollable extranonce bytes (0 for standard channels).
    pub size: usize,
}

/// A minimal SV2 miner speaking through SRI's crates.
pub struct Sv2Miner {
    stream: TcpStream,
    encoder: NoiseEncoder,
    encrypt: TransportEncryptState,
    decoder: NoiseDecoder,
    decrypt: Option<TransportDecryptState>,
    /// Messages received while waiting for something else, in order.
    pub inbox: VecDeque<Received>,
    next_seq: u32,
}

impl Sv2Miner {
    /// Connects and runs SRI's Noise initiator, pinning `authority` (32-byte x-only key).
    pub async fn connect(addr: SocketAddr, authority: [u8; 32]) -> Result<Sv2Miner> {
        let mut stream = within("connect", TcpStream::connect(addr)).await??;
        let initiator = noise_sv2::Initiator::from_raw_k(authority)
            .map_err(|e| anyhow!("SRI initiator: {e:?}"))?;
        let (hello, sent) = Handshake::initiator(initiator)
            .step_0()
            .map_err(|e| anyhow!("SRI step_0: {e:?}"))?;
        stream.write_all(hello.payload()).await?;
        let mut reply = [0u8; 234];
        within("noise reply", stream.read_exact(&mut reply)).await??;
        let transport = sent
            .step_2_with_now(reply, hashshift_proxy::time::unix_secs_u32())
            .map_err(|e| anyhow!("SRI rejected the handshake: {e:?}"))?;
        let (encrypt, decrypt) = transport.split();
        Ok(Sv2Miner {
            stream,
            encoder: NoiseEncoder::new(),
            encrypt,
            decoder: NoiseDecoder::new(),
            decrypt: Some(decrypt),
            inbox: VecDeque::new(),
            next_seq: 0,
        })
    }

    /// Encodes and sends one SRI message.
    pub async fn send<T: bin::Serialize + bin::GetSize>(
        &mut self,
        message: T,
        msg_type: u8,
        channel_bit: bool,
    ) -> Result<()> {
        let frame = MessageFrame::from_message(message, msg_type, 0, channel_bit)
            .map_err(|e| anyhow!("SRI frame: {e:?}"))?;
        let bytes = self
            .encoder
            .encode_transport(frame, &mut self.encrypt)
            .map_err(|e| anyhow!("SRI encode: {e:?}"))?;
        self.stream.write_all(bytes.as_ref()).await?;
        Ok(())
    }

    /// The next message from the proxy, or `None` when it closed the connection.
    pub async fn recv(&mut self) -> Result<Option<Received>> {
        if let Some(m) = self.inbox.pop_front() {
            return Ok(Some(m));
        }
        loop {
            let writable = self.decoder.writable();
            if !writable.is_empty() {
                match within("read from proxy", self.stream.read_exact(writable)).await? {
                    Ok(_) => {}
                    Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(None),
                    Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return Ok(None),
                    Err(e) => return Err(e.into()),
                }
            }
            let state = self.decrypt.take().context("decoder failed earlier")?;
            match self
                .decoder
                .next_transport_frame(state)
                .map_err(|e| anyhow!("SRI decrypt: {e:?}"))?
            {
                Decrypted::Frame(mut frame, state) => {
                    self.decrypt = Some(state);
                    let msg_type = frame.header().msg_type();
                    return parse(msg_type, frame.payload()).map(Some);
                }
                Decrypted::Incomplete(_, state) => self.decrypt = Some(state),
            }
        }
    }

    /// Receives until `pick` returns a value; other messages are kept in `skipped`.
    pub async fn expect<T>(
        &mut self,
        what: &str,
        mut pick: impl FnMut(&Received) -> Option<T>,
    ) -> Result<T> {
        let mut skipped = Vec::new();
        let result = loop {
            match self.recv().await? {
                None => bail!("proxy closed the connection while waiting for {what}"),
                Some(m) => {
                    if let Some(v) = pick(&m) {
                        break v;
                    }
                    skipped.push(m);
                }
            }
        };
        for m in skipped.into_iter().rev() {
            self.inbox.push_front(m);
        }
        Ok(result)
    }

    /// `SetupConnection` for the Mining protocol; returns the proxy's answer.
    pub async fn setup(&mut self, flags: u32) -> Result<Received> {
        self.setup_protocol(sric::Protocol::MiningProtocol, flags)
            .await
    }

    pub async fn setup_protocol(
        &mut self,
        protocol: sric::Protocol,
        flags: u32,
    ) -> Result<Received> {
        fn s(v: &'static str) -> Result<bin::Str0255<'static>> {
            bin::Str0255::try_from(v.as_bytes()).map_err(|e| anyhow!("{e:?}"))
        }
        let m = sric::SetupConnection {
            protocol,
            min_version: 2,
            max_version: 2,
            flags,
            endpoint_host: s("127.0.0.1")?,
            endpoint_port: 0,
            vendor: s("hashshift-tests")?,
            hardware_version: s("cpu")?,
            firmware: s("sri-crates")?,
            device_id: s("")?,
        };
        self.send(
            m,
            sric::MESSAGE_TYPE_SETUP_CONNECTION,
            sric::CHANNEL_BIT_SETUP_CONNECTION,
        )
        .await?;
        self.recv()
            .await?
            .context("closed instead of answering SetupConnection")
    }

    pub async fn open_standard(
        &mut self,
        request_id: u32,
        user: &str,
        hashrate: f32,
    ) -> Result<()> {
        let m = sri::OpenStandardMiningChannel {
            request_id,
            user_identity: bin::Str0255::try_from(user.as_bytes()).map_err(|e| anyhow!("{e:?}"))?,
            nominal_hash_rate: hashrate,
            max_target: bin::U256::from(&[0xff; 32]),
        };
        self.send(
            m,
            sri::MESSAGE_TYPE_OPEN_STANDARD_MINING_CHANNEL,
            sri::CHANNEL_BIT_OPEN_STANDARD_MINING_CHANNEL,
        )
        .await
    }

    pub async fn open_extended(
        &mut self,
        request_id: u32,
        user: &str,
        min_extranonce_size: u16,
    ) -> Result<()> {
        let m = sri::OpenExtendedMiningChannel {
            request_id,
            user_identity: bin::Str0255::try_from(user.as_bytes()).map_err(|e| anyhow!("{e:?}"))?,
            nominal_hash_rate: 0.0,
            max_target: bin::U256::from(&[0xff; 32]),
            min_extranonce_size,
        };
        self.send(
            m,
            sri::MESSAGE_TYPE_OPEN_EXTENDED_MINING_CHANNEL,
            sri::CHANNEL_BIT_OPEN_EXTENDED_MINING_CHANNEL,
        )
        .await
    }

    pub async fn update_channel(
        &mut self,
        channel_id: u32,
        hashrate: f32,
        max: [u8; 32],
    ) -> Result<()> {
        let m = sri::UpdateChannel {
            channel_id,
            nominal_hash_rate: hashrate,
            maximum_target: bin::U256::from(&max),
        };
        self.send(
            m,
            sri::MESSAGE_TYPE_UPDATE_CHANNEL,
            sri::CHANNEL_BIT_UPDATE_CHANNEL,
        )
        .await
    }

    /// Submits a share (standard if `extended` is false) and returns its sequence number.
    pub async fn submit(
        &mut self,
        channel_id: u32,
        share: &FoundShare,
        extended: bool,
    ) -> Result<u32> {
        self.next_seq += 1;
        let seq = self.next_seq;
        if extended {
            let m = sri::SubmitSharesExtended {
                channel_id,
                sequence_number: seq,
                job_id: share.job_id,
                nonce: share.nonce,
                ntime: share.ntime,
                version: share.version,
                extranonce: bin::B032::try_from(share.extranonce.as_slice())
                    .map_err(|e| anyhow!("{e:?}"))?,
            };
            self.send(
                m,
                sri::MESSAGE_TYPE_SUBMIT_SHARES_EXTENDED,
                sri::CHANNEL_BIT_SUBMIT_SHARES_EXTENDED,
            )
            .await?;
        } else {
            let m = sri::SubmitSharesStandard {
                channel_id,
                sequence_number: seq,
                job_id: share.job_id,
                nonce: share.nonce,
                ntime: share.ntime,
                version: share.version,
            };
            self.send(
                m,
                sri::MESSAGE_TYPE_SUBMIT_SHARES_STANDARD,
                sri::CHANNEL_BIT_SUBMIT_SHARES_STANDARD,
            )
            .await?;
        }
        Ok(seq)
    }

    /// Waits for the answer to `seq`: `Ok(())` once a `SubmitShares.Success` covers it,
    /// `Err(code)` for its `SubmitShares.Error`.
    pub async fn verdict(&mut self, channel_id: u32, seq: u32) -> Result<Result<(), String>> {
        self.expect(&format!("the answer to share {seq}"), |m| match m {
            Received::SubmitSuccess {
                channel_id: c,
                last_sequence_number,
                ..
            } if *c == channel_id && *last_sequence_number >= seq => Some(Ok(())),
            Received::SubmitError {
                channel_id: c,
                sequence_number,
                code,
            } if *c == channel_id && *sequence_number == seq => Some(Err(code.clone())),
            _ => None,
        })
        .await
    }

    /// Waits for the next future job of `channel` and its `SetNewPrevHash` (messages of other
    /// channels stay queued).
    pub async fn next_future_job(&mut self, channel: u32) -> Result<MiningJob> {
        let job = self
            .expect("a future job", |m| match m {
                Received::NewMiningJob {
                    channel_id,
                    job_id,
                    min_ntime: None,
                    version,
                    merkle_root,
                } if *channel_id == channel => Some(MiningJob {
                    channel_id: channel,
                    job_id: *job_id,
                    version: *version,
                    prev_hash: [0; 32],
                    nbits: 0,
                    ntime: 0,
                    merkle_root: Some(*merkle_root),
                    coinbase_prefix: Vec::new(),
                    coinbase_suffix: Vec::new(),
                    merkle_path: Vec::new(),
                }),
                Received::NewExtendedJob {
                    channel_id,
                    job_id,
                    min_ntime: None,
                    version,
                    merkle_path,
                    coinbase_prefix,
                    coinbase_suffix,
                    ..
                } if *channel_id == channel => Some(MiningJob {
                    channel_id: channel,
                    job_id: *job_id,
                    version: *version,
                    prev_hash: [0; 32],
                    nbits: 0,
                    ntime: 0,
                    merkle_root: None,
                    coinbase_prefix: coinbase_prefix.clone(),
                    coinbase_suffix: coinbase_suffix.clone(),
                    merkle_path: merkle_path.clone(),
                }),
                _ => None,
            })
            .await?;
        let (prev_hash, ntime, nbits) = self
            .expect("SetNewPrevHash", |m| match m {
                Received::SetNewPrevHash {
                    channel_id,
                    job_id,
                    prev_hash,
                    min_ntime,
                    nbits,
                } if *channel_id == channel && *job_id == job.job_id => {
                    Some((*prev_hash, *min_ntime, *nbits))
                }
                _ => None,
            })
            .await?;
        Ok(MiningJob {
            prev_hash,
            ntime,
            nbits,
            ..job
        })
    }

    /// Reads the first job of a fresh channel: a future job, then `SetNewPrevHash` with the
    /// same job id (SRI's order), and returns it ready to mine.
    pub async fn first_job(&mut self, channel_id: u32) -> Result<MiningJob> {
        let job = match self.recv().await?.context("closed before the first job")? {
            Received::NewMiningJob {
                channel_id: c,
                job_id,
                min_ntime,
                version,
                merkle_root,
            } if c == channel_id => {
                if min_ntime.is_some() {
                    bail!("the first job must be a future job");
                }
                MiningJob {
                    channel_id,
                    job_id,
                    version,
                    prev_hash: [0; 32],
                    nbits: 0,
                    ntime: 0,
                    merkle_root: Some(merkle_root),
                    coinbase_prefix: Vec::new(),
                    coinbase_suffix: Vec::new(),
                    merkle_path: Vec::new(),
                }
            }
            Received::NewExtendedJob {
                channel_id: c,
                job_id,
                min_ntime,
                version,
                merkle_path,
                coinbase_prefix,
                coinbase_suffix,
                ..
            } if c == channel_id => {
                if min_ntime.is_some() {
                    bail!("the first job must be a future job");
                }
                MiningJob {
                    channel_id,
                    job_id,
                    version,
                    prev_hash: [0; 32],
                    nbits: 0,
                    ntime: 0,
                    merkle_root: None,
                    coinbase_prefix,
                    coinbase_suffix,
                    merkle_path,
                }
            }
            other => bail!("expected the first job, got {other:?}"),
        };
        match self.recv().await?.context("closed before SetNewPrevHash")? {
            Received::SetNewPrevHash {
                channel_id: c,
                job_id,
                prev_hash,
                min_ntime,
                nbits,
            } if c == channel_id && job_id == job.job_id => Ok(MiningJob {
                prev_hash,
                nbits,
                ntime: min_ntime,
                ..job
            }),
            other => bail!(
                "expected SetNewPrevHash for job {}, got {other:?}",
                job.job_id
            ),
        }
    }
}

impl Sv2Miner {
    /// Opens a standard or extended channel as `user` and waits for its `Open*Success`
    /// (other messages stay queued).
    pub async fn open_channel(
        &mut self,
        request_id: u32,
        user: &str,
        extended: bool,
    ) -> Result<OpenedChannel> {
        if extended {
            self.open_extended(request_id, user, 4).await?;
        } else {
            self.open_standard(request_id, user, 0.0).await?;
        }
        self.expect("Open*Success", |r| match r {
            Received::OpenStandardSuccess {
                request_id: r,
                channel_id,
                target,
                extranonce_prefix,
                group_channel_id,
            } if *r == request_id => Some(OpenedChannel {
                id: *channel_id,
                group: *group_channel_id,
                target: *target,
                prefix: extranonce_prefix.clone(),
                size: 0,
            }),
            Received::OpenExtendedSuccess {
                request_id: r,
                channel_id,
                target,
                extranonce_size,
                extranonce_prefix,
                group_channel_id,
            } if *r == request_id => Some(OpenedChannel {
                id: *channel_id,
                group: *group_channel_id,
                target: *target,
                prefix: extranonce_prefix.clone(),
                size: usize::from(*extranonce_size),
            }),
            _ => None,
        })
        .await
    }

    /// Finds a share for `job` on channel `ch` (standard channels: the job carries the merkle
    /// root, or, for a group job, is built with the channel's whole extranonce) and expects it
    /// accepted.
    pub async fn mine(&mut self, job: &MiningJob, ch: &OpenedChannel, seed: u32) -> Result<()> {
        let extranonce = vec![seed as u8; ch.size];
        let share = job.find(&ch.prefix, extranonce, job.version, &ch.target, seed, false);
        let seq = self.submit(ch.id, &share, ch.size > 0).await?;
        match self.verdict(ch.id, seq).await? {
            Ok(()) => Ok(()),
            Err(code) => bail!("share on channel {} rejected: {code}", ch.id),
        }
    }
}
