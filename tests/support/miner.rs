//! A minimal Stratum V1 miner for tests: it speaks the protocol through our codecs but
//! computes shares independently of the validator (plain coinbase hashing, then headers), so a
//! share the pool or proxy accepts is valid by a second computation.
#![allow(dead_code)]

use std::collections::VecDeque;
use std::future::Future;
use std::net::SocketAddr;
use std::time::Duration;

use anyhow::{Context, Result, anyhow, bail};
use bytes::BytesMut;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_util::codec::{Decoder, Encoder};

use hashshift_protocol::share::hash::{sha256d, sha256d_80};
use hashshift_protocol::share::job::build_header;
use hashshift_protocol::share::merkle::merkle_root;
use hashshift_protocol::share::{ExtendedJob, Target};
use hashshift_protocol::sv1::{
    Authorize, ClientCodec, ClientMessage, ClientRequest, Configure, Id, Notify, Response,
    ServerMessage, ServerNotification, Submit, Subscribe,
};

/// Bound on any single wait for the pool.
pub const STEP: Duration = Duration::from_secs(10);

pub async fn within<T>(what: &str, fut: impl Future<Output = T>) -> Result<T> {
    tokio::time::timeout(STEP, fut)
        .await
        .map_err(|_| anyhow!("timed out: {what}"))
}

/// A minimal SV1 miner.
pub struct Miner {
    pub stream: TcpStream,
    pub codec: ClientCodec,
    pub buf: BytesMut,
    pub next_id: u64,
    /// Notifications received while waiting for responses, in order.
    pub notes: VecDeque<ServerNotification>,
    pub extranonce1: Vec<u8>,
    pub extranonce2_size: usize,
    pub difficulty: f64,
}

impl Miner {
    pub async fn connect(addr: SocketAddr) -> Result<Miner> {
        let stream = within("connect", TcpStream::connect(addr)).await??;
        Ok(Miner::from_stream(stream))
    }

    /// A miner on a socket the caller connected (e.g. with a small receive buffer).
    pub fn from_stream(stream: TcpStream) -> Miner {
        Miner {
            stream,
            codec: ClientCodec::new(),
            buf: BytesMut::new(),
            next_id: 1,
            notes: VecDeque::new(),
            extranonce1: Vec::new(),
            extranonce2_size: 0,
            difficulty: 0.0,
        }
    }

    pub async fn send(&mut self, request: ClientRequest) -> Result<Id> {
        let ids = self.send_all([request]).await?;
        ids.into_iter().next().context("no id")
    }

    /// Sends `requests` in one write; returns their ids in order.
    pub async fn send_all(
        &mut self,
        requests: impl IntoIterator<Item = ClientRequest>,
    ) -> Result<Vec<Id>> {
        let mut out = BytesMut::new();
        let mut ids = Vec::new();
        for request in requests {
            let id = Id::from(self.next_id);
            self.next_id += 1;
            self.codec.encode(
                ClientMessage::Request {
                    id: id.clone(),
                    request,
                },
                &mut out,
            )?;
            ids.push(id);
        }
        self.stream.write_all(&out).await?;
        Ok(ids)
    }

    /// The next message, or `None` when the pool closed the connection.
    pub async fn recv(&mut self) -> Result<Option<ServerMessage>> {
        loop {
            if let Some(item) = self.codec.decode(&mut self.buf)? {
                return Ok(Some(item?));
            }
            match self.stream.read_buf(&mut self.buf).await {
                Ok(0) => return Ok(None),
                Ok(_) => {}
                Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return Ok(None),
                Err(e) => return Err(e.into()),
            }
        }
    }

    pub async fn call(&mut self, request: ClientRequest) -> Result<Response> {
        let id = self.send(request).await?;
        self.response(id).await
    }

    /// Waits for the response to `id` (sent earlier), keeping notifications for later.
    pub async fn response(&mut self, id: Id) -> Result<Response> {
        within("response", async {
            loop {
                match self
                    .recv()
                    .await?
                    .context("closed while waiting for a response")?
                {
                    ServerMessage::Response(r) if r.id == id => return Ok(r),
                    ServerMessage::Response(r) => bail!("unexpected response {r:?}"),
                    ServerMessage::Notification { notification, .. } => {
                        self.notes.push_back(notification)
                    }
                }
            }
        })
        .await?
    }

    pub async fn next_note(&mut self) -> Result<ServerNotification> {
        if let Some(n) = self.notes.pop_front() {
            return Ok(n);
        }
        within("notification", async {
            match self.recv().await?.context("closed while waiting")? {
                ServerMessage::Notification { notification, .. } => Ok(notification),
                ServerMessage::Response(r) => bail!("unexpected response {r:?}"),
            }
        })
        .await?
    }

    /// The next job, applying any difficulty change before it.
    pub async fn next_job(&mut self) -> Result<Notify> {
        loop {
            match self.next_note().await? {
                ServerNotification::SetDifficulty(d) => self.difficulty = d,
                ServerNotification::Notify(n) => return Ok(n),
                _ => {}
            }
        }
    }

    /// configure (optional version rolling), subscribe, authorize `worker`; returns the
    /// granted mask and the first job.
    pub async fn handshake(&mut self, worker: &str, mask: Option<u32>) -> Result<(u32, Notify)> {
        let mut granted = 0;
        if let Some(mask) = mask {
            let r = self
                .call(ClientRequest::Configure(Configure {
                    extensions: vec!["version-rolling".into()],
                    version_rolling_mask: Some(mask),
                    ..Configure::default()
                }))
                .await?;
            granted = r
                .configure_result()?
                .negotiated_mask()
                .context("no rolling")?;
        }
        let sub = self
            .call(ClientRequest::Subscribe(Subscribe::default()))
            .await?
            .subscribe_result()?;
        self.extranonce1 = sub.extranonce1;
        self.extranonce2_size = sub.extranonce2_size;
        assert!(self.authorize(worker).await?);
        // The first thing after authorize is set_difficulty, then a clean job.
        match self.next_note().await? {
            ServerNotification::SetDifficulty(d) => self.difficulty = d,
            other => bail!("expected set_difficulty first, got {other:?}"),
        }
        let job = self.next_job().await?;
        assert!(job.clean_jobs, "the first job is clean");
        Ok((granted, job))
    }

    pub async fn authorize(&mut self, worker: &str) -> Result<bool> {
        let r = self
            .call(ClientRequest::Authorize(Authorize {
                user: worker.into(),
                password: Some("x".into()),
            }))
            .await?;
        Ok(r.as_bool()?)
    }

    /// Submits and returns `Ok(())` for `true`, or the error code.
    pub async fn submit(&mut self, share: &Share, worker: &str) -> Result<Result<(), i64>> {
        let r = self.call(share.request(worker)).await?;
        Ok(match r.error {
            Some(e) => Err(e.code),
            None if r.as_bool()? => Ok(()),
            None => Err(0),
        })
    }

    /// Searches nonces for a share of the current difficulty on `job`.
    pub fn find_share(&self, job: &Notify, en2_seed: u64, version_bits: Option<u32>) -> Share {
        self.search(job, en2_seed, version_bits, true)
    }

    /// A nonce whose hash does not meet the difficulty.
    pub fn bad_share(&self, job: &Notify) -> Share {
        self.search(job, 0xbad, None, false)
    }

    /// The merkle root of `job` with this miner's extranonce1 and `extranonce2`, computed
    /// independently of the validator's midstate path: the plain coinbase, then the branch.
    fn merkle_root(&self, job: &Notify, extranonce2: &[u8]) -> [u8; 32] {
        let ext = ExtendedJob {
            version: job.version,
            prev_hash: job.prev_hash,
            coinbase_prefix: job.coinb1.clone(),
            coinbase_suffix: job.coinb2.clone(),
            merkle_branch: job.merkle_branch.clone(),
            nbits: job.nbits,
            ntime: job.ntime,
        };
        merkle_root(
            &sha256d(&ext.coinbase(&self.extranonce1, extranonce2)),
            &job.merkle_branch,
        )
    }

    /// The header hash of `share` on `job`, computed from scratch.
    pub fn share_hash(&self, job: &Notify, share: &Share) -> [u8; 32] {
        let root = self.merkle_root(job, &share.extranonce2);
        let version = share.version_bits.map_or(job.version, |b| job.version | b);
        sha256d_80(&build_header(
            version,
            &job.prev_hash,
            &root,
            share.ntime,
            job.nbits,
            share.nonce,
        ))
    }

    pub fn search(&self, job: &Notify, seed: u64, bits: Option<u32>, want: bool) -> Share {
        let target = Target::from_difficulty(self.difficulty).expect("difficulty");
        self.search_by(job, seed, bits, |hash| target.is_met_by(hash) == want)
    }

    /// Searches nonces for a share whose header hash `wanted` accepts (e.g. one that meets
    /// the network target but not the pool's).
    pub fn search_by(
        &self,
        job: &Notify,
        seed: u64,
        bits: Option<u32>,
        wanted: impl Fn(&[u8; 32]) -> bool,
    ) -> Share {
        let mut extranonce2 = vec![0u8; self.extranonce2_size];
        let seed = seed.to_le_bytes();
        let n = seed.len().min(extranonce2.len());
        extranonce2[..n].copy_from_slice(&seed[..n]);
        let root = self.merkle_root(job, &extranonce2);
        let version = bits.map_or(job.version, |b| job.version | b);
        let nonce = (0..=u32::MAX)
            .find(|nonce| {
                let header =
                    build_header(version, &job.prev_hash, &root, job.ntime, job.nbits, *nonce);
                wanted(&sha256d_80(&header))
            })
            .expect("a nonce");
        Share {
            job_id: job.job_id.clone(),
            extranonce2,
            ntime: job.ntime,
            nonce,
            version_bits: bits,
        }
    }
}

#[derive(Clone)]
pub struct Share {
    pub job_id: String,
    pub extranonce2: Vec<u8>,
    pub ntime: u32,
    pub nonce: u32,
    pub version_bits: Option<u32>,
}

impl Share {
    /// The `mining.submit` request for this share as `worker`.
    pub fn request(&self, worker: &str) -> ClientRequest {
        ClientRequest::Submit(Submit {
            worker: worker.into(),
            job_id: self.job_id.clone(),
            extranonce2: self.extranonce2.clone(),
            ntime: self.ntime,
            nonce: self.nonce,
            version_bits: self.version_bits,
        })
    }
}
