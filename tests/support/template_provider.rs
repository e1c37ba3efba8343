//! A small Stratum V2 Template Provider (sv2-spec 07, "Template Distribution Protocol") for
//! interop tests: SRI's `pool_sv2` cannot start without one, and Bitcoin Core with SV2
//! support is too heavy for a test. It serves a fake chain that any number of clients can
//! mine on.
//!
//! Per connection: Noise NX responder (our `protocol::noise`, certified by a fresh authority
//! key), `SetupConnection` for protocol 2 (anything else gets `SetupConnection.Error`
//! `unsupported-protocol`), then, once the client sent `CoinbaseOutputConstraints` (or after
//! [`TpConfig::constraints_grace`] without it, as SRI's pool sends it only when its channel
//! manager starts), a future `NewTemplate` and the `SetNewPrevHash` that activates it. After
//! that: a non-future `NewTemplate` every [`TpConfig::template_every`] (a different merkle
//! path, so a new job), a future template + `SetNewPrevHash` whenever the test calls
//! [`TemplateProvider::new_block`], an empty `RequestTransactionData.Success` (our templates
//! have no transactions to reveal: the merkle path is made of fake txids), and every
//! `SubmitSolution` recorded.
//!
//! Every template sent is recorded with the tip it builds on ([`SentTemplate`]), so a test can
//! rebuild the header of a solution from the TP's side alone ([`TpStats::header_of`]): the
//! template's prev hash and nBits, the merkle root of the solution's coinbase txid up the
//! template's merkle path, and the solution's version, time and nonce.
//!
//! Invariants: the chain tip is published through a `watch` (latest wins), so a connection
//! never sends a `SetNewPrevHash` for a tip older than one it already sent; every
//! `SetNewPrevHash` follows the future template it activates on the same connection; peer
//! input never panics (frames are bounded by the codec, payloads decoded with length checks).
//! Encoding uses our protocol crate's SV2 data types (`Sv2Encode`/`Sv2Decode`), not SRI's
//! `template_distribution_sv2`; `pool_sv2` decoding what we send is the check.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use bytes::BytesMut;
use futures_util::{SinkExt, StreamExt};
use hashshift_protocol::noise::{
    AuthorityKeypair, AuthorityPublicKey, NoiseCodec, ResponderConfig, SecretKey,
};
use hashshift_protocol::share::Target;
use hashshift_protocol::share::hash::{sha256, sha256d};
use hashshift_protocol::share::job::build_header;
use hashshift_protocol::share::merkle::merkle_root;
use hashshift_protocol::sv2::types::{Reader, Sv2Decode, Sv2Encode};
use hashshift_protocol::sv2::{
    B064K, B0255, Frame, Message, Protocol, Seq064K, Seq0255, SetupConnectionError,
    SetupConnectionSuccess, Str0255, U256,
};
use hashshift_proxy::noise_tcp;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio_util::codec::Framed;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// Template Distribution message types (sv2-spec 08, SRI `template_distribution_sv2` 7.0.0).
pub mod msg_type {
    /// Client → TP: how much room the pool's coinbase outputs need.
    pub const COINBASE_OUTPUT_CONSTRAINTS: u8 = 0x70;
    /// TP → client: a block template (future or on the current tip).
    pub const NEW_TEMPLATE: u8 = 0x71;
    /// TP → client: a new chain tip, activating a future template.
    pub const SET_NEW_PREV_HASH: u8 = 0x72;
    /// Client → TP: the transactions of a template.
    pub const REQUEST_TRANSACTION_DATA: u8 = 0x73;
    /// TP → client: the transactions of a template.
    pub const REQUEST_TRANSACTION_DATA_SUCCESS: u8 = 0x74;
    /// Client → TP: a block was found.
    pub const SUBMIT_SOLUTION: u8 = 0x76;
}

/// How the fake chain looks and how often it changes.
#[derive(Clone, Debug)]
pub struct TpConfig {
    /// Block `nBits`: the default 0x1d00ffff (difficulty 1) is far above test share
    /// difficulties, so shares are not blocks, yet it is a real mainnet value.
    pub nbits: u32,
    /// A new (non-future) template on the current tip this often; `None`: never.
    pub template_every: Option<Duration>,
    /// Fake transactions per template: the length of the merkle path.
    pub transactions: usize,
    /// How long to wait for `CoinbaseOutputConstraints` before sending work anyway.
    pub constraints_grace: Duration,
    /// Coinbase value (the block reward, satoshis).
    pub coinbase_value: u64,
}

impl Default for TpConfig {
    fn default() -> Self {
        TpConfig {
            nbits: 0x1d00_ffff,
            template_every: Some(Duration::from_secs(5)),
            transactions: 2,
            constraints_grace: Duration::from_secs(2),
            coinbase_value: 5_000_000_000,
        }
    }
}

/// A `SubmitSolution` as received.
#[derive(Clone, Debug, PartialEq)]
pub struct Solution {
    /// The connection it came on (see [`SentTemplate::conn`]).
    pub conn: u64,
    pub template_id: u64,
    pub version: u32,
    pub header_timestamp: u32,
    pub header_nonce: u32,
    pub coinbase_tx: Vec<u8>,
}

/// A `NewTemplate` as sent, with the tip it builds on.
#[derive(Clone, Debug, PartialEq)]
pub struct SentTemplate {
    /// The connection it went to: 1 for the first accepted, and so on (template ids are
    /// counted per connection).
    pub conn: u64,
    pub template_id: u64,
    pub future: bool,
    pub version: u32,
    /// The coinbase scriptSig's start (the BIP34 height push).
    pub coinbase_prefix: Vec<u8>,
    /// Siblings of the coinbase on its way to the merkle root (internal byte order).
    pub merkle_path: Vec<[u8; 32]>,
    /// The block's height.
    pub height: u32,
    /// The header's prev hash: the tip the template builds on (internal byte order, as in
    /// `SetNewPrevHash`).
    pub prev_hash: [u8; 32],
    /// The header's nBits.
    pub nbits: u32,
}

/// What the TP saw and sent, over all connections.
#[derive(Clone, Debug, Default)]
pub struct TpStats {
    /// TCP connections accepted.
    pub connections: u64,
    /// Noise handshakes completed.
    pub handshakes: u64,
    /// `SetupConnection` for protocol 2 answered with success.
    pub setups: u64,
    /// The last `CoinbaseOutputConstraints`: (max additional size, max additional sigops).
    pub constraints: Option<(u32, u16)>,
    /// `NewTemplate` messages sent (future and not).
    pub templates: u64,
    /// Every `NewTemplate` sent, in order.
    pub sent: Vec<SentTemplate>,
    /// `SetNewPrevHash` messages sent.
    pub prev_hashes: u64,
    /// `RequestTransactionData` received.
    pub tx_data_requests: u64,
    /// Every `SubmitSolution` received.
    pub solutions: Vec<Solution>,
    /// Why connections ended abnormally.
    pub errors: Vec<String>,
}

impl TpStats {
    /// The template `solution` names, as sent on its connection.
    pub fn template_of(&self, solution: &Solution) -> Option<&SentTemplate> {
        self.sent
            .iter()
            .find(|t| t.conn == solution.conn && t.template_id == solution.template_id)
    }

    /// The 80-byte header `solution` claims, rebuilt from what this TP sent: the prev hash and
    /// nBits of the template's tip, the merkle root of the coinbase's txid up the template's
    /// merkle path, the solution's version, time and nonce.
    pub fn header_of(&self, solution: &Solution) -> Result<[u8; 80]> {
        let t = self.template_of(solution).with_context(|| {
            format!(
                "no template {} was sent on connection {}",
                solution.template_id, solution.conn
            )
        })?;
        let root = merkle_root(&txid(&solution.coinbase_tx)?, &t.merkle_path);
        Ok(build_header(
            solution.version,
            &t.prev_hash,
            &root,
            solution.header_timestamp,
            t.nbits,
            solution.header_nonce,
        ))
    }
}

/// A transaction's txid: sha256d of its serialization without witness (BIP141: a segwit
/// serialization's marker, flag and witnesses are left out). Fails on bytes that are not one
/// whole transaction.
pub fn txid(tx: &[u8]) -> Result<[u8; 32]> {
    Ok(sha256d(&without_witness(tx)?))
}

/// `tx` in its non-witness serialization (a copy when it has none).
pub fn without_witness(tx: &[u8]) -> Result<Vec<u8>> {
    let mut r = TxReader { tx, at: 0 };
    let version = r.take(4)?;
    let segwit = tx.get(4..6) == Some(&[0x00, 0x01][..]);
    if segwit {
        r.take(2)?;
    }
    let body_start = r.at;
    let inputs = r.var_int()?;
    for _ in 0..inputs {
        r.take(36)?; // outpoint
        let script = r.var_int()?;
        r.take(script)?;
        r.take(4)?; // sequence
    }
    let outputs = r.var_int()?;
    for _ in 0..outputs {
        r.take(8)?; // value
        let script = r.var_int()?;
        r.take(script)?;
    }
    let body_end = r.at;
    if segwit {
        for _ in 0..inputs {
            for _ in 0..r.var_int()? {
                let item = r.var_int()?;
                r.take(item)?;
            }
        }
    }
    let locktime = r.take(4)?;
    if r.at != tx.len() {
        bail!("{} bytes after the transaction", tx.len() - r.at);
    }
    Ok([version, &tx[body_start..body_end], locktime].concat())
}

/// Reads a serialized transaction front to back.
struct TxReader<'a> {
    tx: &'a [u8],
    at: usize,
}

impl<'a> TxReader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8]> {
        let end = self.at.checked_add(n).context("length overflow")?;
        let bytes = self.tx.get(self.at..end).with_context(|| {
            format!(
                "transaction cut short at byte {} (wanted {n} more)",
                self.at
            )
        })?;
        self.at = end;
        Ok(bytes)
    }

    /// Bitcoin's CompactSize.
    fn var_int(&mut self) -> Result<usize> {
        let n = match self.take(1)?[0] {
            0xfd => u64::from(u16::from_le_bytes(self.take(2)?.try_into()?)),
            0xfe => u64::from(u32::from_le_bytes(self.take(4)?.try_into()?)),
            0xff => u64::from_le_bytes(self.take(8)?.try_into()?),
            n => u64::from(n),
        };
        Ok(usize::try_from(n)?)
    }
}

/// The chain tip every connection follows.
#[derive(Clone, Copy, Debug, PartialEq)]
struct Tip {
    height: u32,
    prev_hash: U256,
    time: u32,
}

/// A running template provider on 127.0.0.1.
pub struct TemplateProvider {
    addr: SocketAddr,
    authority: AuthorityPublicKey,
    tip: watch::Sender<Tip>,
    stats: Arc<Mutex<TpStats>>,
    stop: CancellationToken,
    tracker: TaskTracker,
}

impl TemplateProvider {
    /// Binds 127.0.0.1:0 and serves until [`TemplateProvider::shutdown`] (or drop of the
    /// runtime).
    pub async fn start(config: TpConfig) -> Result<TemplateProvider> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let authority = AuthorityKeypair::generate(&mut rand::rng());
        let public = authority.public_key();
        let noise = ResponderConfig::new(authority, SecretKey::generate(&mut rand::rng()), 3600);
        let (tip, _) = watch::channel(Tip {
            height: 840_000,
            prev_hash: sha256(b"hashshift fake chain genesis"),
            time: hashshift_proxy::time::unix_secs_u32(),
        });
        let stats = Arc::new(Mutex::new(TpStats::default()));
        let stop = CancellationToken::new();
        let tracker = TaskTracker::new();
        let tp = TemplateProvider {
            addr,
            authority: public,
            tip,
            stats,
            stop,
            tracker,
        };
        let (stop, tracker, stats, tips) = (
            tp.stop.clone(),
            tp.tracker.clone(),
            tp.stats.clone(),
            tp.tip.clone(),
        );
        let config = Arc::new(config);
        tp.tracker.spawn(async move {
            loop {
                let stream = tokio::select! {
                    _ = stop.cancelled() => break,
                    accepted = listener.accept() => match accepted {
                        Ok((stream, _)) => stream,
                        // Accept errors (e.g. out of descriptors) are transient: back off.
                        Err(_) => {
                            tokio::time::sleep(Duration::from_millis(50)).await;
                            continue;
                        }
                    },
                };
                let id = {
                    let mut stats = lock(&stats);
                    stats.connections += 1;
                    stats.connections
                };
                let conn = Connection {
                    id,
                    config: config.clone(),
                    stats: stats.clone(),
                    tips: tips.subscribe(),
                    template_id: 0,
                    last_future: None,
                    sent_tip: None,
                };
                let (noise, stop, stats) = (noise.clone(), stop.clone(), stats.clone());
                tracker.spawn(async move {
                    if let Err(e) = conn.run(stream, &noise, stop).await {
                        lock(&stats).errors.push(format!("{e:#}"));
                    }
                });
            }
        });
        Ok(tp)
    }

    /// Where clients connect.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The authority key clients may pin (pool_sv2: `[template_provider_type.Sv2Tp]
    /// public_key`).
    pub fn authority_public_key(&self) -> AuthorityPublicKey {
        self.authority
    }

    /// A new block on the fake chain: every connection gets a future template and the
    /// `SetNewPrevHash` that activates it.
    pub fn new_block(&self) {
        self.tip.send_modify(|tip| {
            tip.prev_hash = sha256(&[&tip.prev_hash[..], &tip.height.to_le_bytes()].concat());
            tip.height += 1;
            tip.time = hashshift_proxy::time::unix_secs_u32().max(tip.time + 1);
        });
    }

    /// A snapshot of the counters.
    pub fn stats(&self) -> TpStats {
        lock(&self.stats).clone()
    }

    /// Stops accepting, closes every connection and waits for the tasks.
    pub async fn shutdown(self) {
        self.stop.cancel();
        self.tracker.close();
        self.tracker.wait().await;
    }
}

impl Drop for TemplateProvider {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

fn lock(stats: &Mutex<TpStats>) -> std::sync::MutexGuard<'_, TpStats> {
    stats.lock().unwrap_or_else(|e| e.into_inner())
}

/// One client connection; owns its template-id counter.
struct Connection {
    /// Its number among accepted connections (from 1).
    id: u64,
    config: Arc<TpConfig>,
    stats: Arc<Mutex<TpStats>>,
    tips: watch::Receiver<Tip>,
    template_id: u64,
    /// The future template last sent, activated by the next `SetNewPrevHash`.
    last_future: Option<u64>,
    /// The tip of the last `SetNewPrevHash` sent: non-future templates build on it (not on
    /// a newer tip whose `SetNewPrevHash` this connection has not sent yet).
    sent_tip: Option<Tip>,
}

type Wire = Framed<TcpStream, NoiseCodec>;

impl Connection {
    async fn run(
        mut self,
        mut stream: TcpStream,
        noise: &ResponderConfig,
        stop: CancellationToken,
    ) -> Result<()> {
        let transport = tokio::time::timeout(
            Duration::from_secs(10),
            noise_tcp::accept(&mut stream, noise),
        )
        .await
        .context("noise handshake timed out")??;
        lock(&self.stats).handshakes += 1;
        // Template Distribution messages are small, except RequestTransactionData.Success
        // which only we send.
        let mut wire = Framed::new(stream, NoiseCodec::new(transport).with_max_payload(1 << 16));
        let setup = tokio::select! {
            _ = stop.cancelled() => return Ok(()),
            f = tokio::time::timeout(Duration::from_secs(10), wire.next()) => f
                .context("no SetupConnection")?
                .context("closed before SetupConnection")??,
        };
        match Message::from_frame(&setup) {
            Ok(Message::SetupConnection(s)) if s.protocol == Protocol::TemplateDistribution => {
                wire.send(
                    Message::from(SetupConnectionSuccess {
                        used_version: 2,
                        flags: 0,
                    })
                    .to_frame(),
                )
                .await?;
                lock(&self.stats).setups += 1;
            }
            Ok(Message::SetupConnection(s)) => {
                wire.send(
                    Message::from(SetupConnectionError {
                        flags: 0,
                        error_code: Str0255::try_from("unsupported-protocol")?,
                    })
                    .to_frame(),
                )
                .await?;
                bail!("SetupConnection for {:?}", s.protocol);
            }
            other => bail!("expected SetupConnection, got {other:?}"),
        }

        // Work starts with the constraints, or after the grace period without them.
        let grace = tokio::time::sleep(self.config.constraints_grace);
        tokio::pin!(grace);
        let mut working = false;
        let mut templates = tokio::time::interval(
            self.config
                .template_every
                .unwrap_or(Duration::from_secs(3600)),
        );
        templates.reset();
        loop {
            tokio::select! {
                _ = stop.cancelled() => return Ok(()),
                _ = &mut grace, if !working => {
                    working = true;
                    self.send_block(&mut wire).await?;
                }
                changed = self.tips.changed(), if working => {
                    if changed.is_err() {
                        return Ok(());
                    }
                    self.send_block(&mut wire).await?;
                }
                _ = templates.tick(), if working && self.config.template_every.is_some() => {
                    let Some(tip) = self.sent_tip else { continue };
                    let t = self.new_template(&tip, false)?;
                    wire.send(t).await?;
                }
                frame = wire.next() => {
                    let Some(frame) = frame else { return Ok(()) };
                    let frame = frame?;
                    if self.on_frame(&frame, &mut wire).await? && !working {
                        working = true;
                        self.send_block(&mut wire).await?;
                    }
                }
            }
        }
    }

    /// Handles one client frame; `true` if it was `CoinbaseOutputConstraints`.
    async fn on_frame(&mut self, frame: &Frame, wire: &mut Wire) -> Result<bool> {
        let mut r = Reader::new(&frame.payload);
        match (frame.header.extension_type, frame.header.msg_type) {
            (0, msg_type::COINBASE_OUTPUT_CONSTRAINTS) => {
                let size = u32::decode(&mut r)?;
                let sigops = u16::decode(&mut r)?;
                r.finish()?;
                lock(&self.stats).constraints = Some((size, sigops));
                Ok(true)
            }
            (0, msg_type::REQUEST_TRANSACTION_DATA) => {
                let template_id = u64::decode(&mut r)?;
                r.finish()?;
                lock(&self.stats).tx_data_requests += 1;
                let mut p = BytesMut::new();
                template_id.encode(&mut p);
                B064K::default().encode(&mut p);
                Seq064K::<B064K>::default().encode(&mut p);
                wire.send(frame_of(msg_type::REQUEST_TRANSACTION_DATA_SUCCESS, p)?)
                    .await?;
                Ok(false)
            }
            (0, msg_type::SUBMIT_SOLUTION) => {
                let solution = Solution {
                    conn: self.id,
                    template_id: u64::decode(&mut r)?,
                    version: u32::decode(&mut r)?,
                    header_timestamp: u32::decode(&mut r)?,
                    header_nonce: u32::decode(&mut r)?,
                    coinbase_tx: B064K::decode(&mut r)?.into_vec(),
                };
                r.finish()?;
                lock(&self.stats).solutions.push(solution);
                Ok(false)
            }
            // Anything else (a client's extension negotiation, ...) is ignored, as the spec
            // asks of unknown messages.
            _ => Ok(false),
        }
    }

    /// A future template on the next tip, then the `SetNewPrevHash` that activates it.
    async fn send_block(&mut self, wire: &mut Wire) -> Result<()> {
        let tip = *self.tips.borrow_and_update();
        let future = self.new_template(&tip, true)?;
        wire.send(future).await?;
        let template_id = self.last_future.context("a future template was sent")?;
        let mut p = BytesMut::new();
        template_id.encode(&mut p);
        tip.prev_hash.encode(&mut p);
        tip.time.encode(&mut p);
        self.config.nbits.encode(&mut p);
        Target::from_compact(self.config.nbits)
            .map_err(|e| anyhow::anyhow!("bad nbits: {e:?}"))?
            .to_le_bytes()
            .encode(&mut p);
        wire.send(frame_of(msg_type::SET_NEW_PREV_HASH, p)?).await?;
        self.sent_tip = Some(tip);
        lock(&self.stats).prev_hashes += 1;
        Ok(())
    }

    /// A `NewTemplate` frame for the block after `tip`, recorded as sent (the caller sends
    /// it next).
    fn new_template(&mut self, tip: &Tip, future: bool) -> Result<Frame> {
        self.template_id += 1;
        let id = self.template_id;
        if future {
            self.last_future = Some(id);
        }
        let height = tip.height + 1;
        // BIP34: the coinbase scriptSig starts with the height, a 3-byte push.
        let [h0, h1, h2, _] = height.to_le_bytes();
        let coinbase_prefix = vec![0x03, h0, h1, h2];
        // Fake txids, distinct per template so each template is a distinct job.
        let path: Vec<U256> = (0..self.config.transactions)
            .map(|i| sha256(&[&id.to_le_bytes()[..], &(i as u64).to_le_bytes()].concat()))
            .collect();
        let version = 0x2000_0000u32; // BIP9 top bits, nothing signalled
        {
            let mut stats = lock(&self.stats);
            stats.templates += 1;
            stats.sent.push(SentTemplate {
                conn: self.id,
                template_id: id,
                future,
                version,
                coinbase_prefix: coinbase_prefix.clone(),
                merkle_path: path.clone(),
                height,
                prev_hash: tip.prev_hash,
                nbits: self.config.nbits,
            });
        }
        let mut p = BytesMut::new();
        id.encode(&mut p);
        future.encode(&mut p);
        version.encode(&mut p);
        2u32.encode(&mut p); // coinbase_tx_version
        B0255::try_from(coinbase_prefix)?.encode(&mut p);
        0xffff_ffffu32.encode(&mut p); // coinbase_tx_input_sequence
        self.config.coinbase_value.encode(&mut p);
        0u32.encode(&mut p); // coinbase_tx_outputs_count: all value goes to the pool
        B064K::default().encode(&mut p); // coinbase_tx_outputs
        0u32.encode(&mut p); // coinbase_tx_locktime
        Seq0255::try_from(path)?.encode(&mut p);
        frame_of(msg_type::NEW_TEMPLATE, p)
    }
}

/// Frames a Template Distribution payload (extension 0, never a channel message).
fn frame_of(msg_type: u8, payload: impl Into<BytesMut>) -> Result<Frame> {
    let payload: BytesMut = payload.into();
    Frame::new(0, false, msg_type, payload.freeze()).context("payload too large")
}
