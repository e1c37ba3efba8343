//! A client for the monitoring API of SRI's pool_sv2 (`monitoring_address` in its config;
//! stratum-apps' `monitoring` module, on by default in pool_sv2 0.7.0): what the pool itself
//! counted per channel, shares accepted and rejected, blocks found, target and nominal
//! hashrate. The flows assert on these, not on pool_sv2's log text, which changes between
//! releases.
//!
//! pool_sv2 refreshes the figures every `monitoring_cache_refresh_secs` (the flows set 1), so
//! callers poll until a count is reached.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use hashshift_protocol::share::Target;
use serde::Deserialize;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Largest reply read: a few channels' JSON is a few KiB.
const MAX_REPLY: u64 = 1 << 20;

/// One channel a client opened with pool_sv2, as pool_sv2 counts it.
#[derive(Debug, Clone, Deserialize)]
pub struct Channel {
    pub channel_id: u32,
    pub user_identity: String,
    pub nominal_hashrate: f32,
    pub target_hex: String,
    pub shares_accepted: u32,
    pub shares_rejected: u32,
    pub shares_rejected_by_reason: BTreeMap<String, u32>,
    pub share_work_sum: f64,
    pub blocks_found: u32,
    /// Set when read: extended or standard.
    #[serde(skip)]
    pub extended: bool,
    /// Set when read: pool_sv2's id of the connection.
    #[serde(skip)]
    pub client_id: usize,
}

impl Channel {
    /// The channel's share target (pool_sv2 prints it as 64 big-endian hex digits).
    pub fn target(&self) -> Result<Target> {
        Target::from_be_hex(&self.target_hex)
            .map_err(|e| anyhow::anyhow!("target_hex {:?}: {e:?}", self.target_hex))
    }
}

/// Every channel of every client, and their sums.
#[derive(Debug, Clone, Default)]
pub struct Snapshot {
    pub channels: Vec<Channel>,
}

impl Snapshot {
    pub fn accepted(&self) -> u64 {
        self.channels
            .iter()
            .map(|c| u64::from(c.shares_accepted))
            .sum()
    }

    pub fn rejected(&self) -> u64 {
        self.channels
            .iter()
            .map(|c| u64::from(c.shares_rejected))
            .sum()
    }

    pub fn blocks(&self) -> u64 {
        self.channels
            .iter()
            .map(|c| u64::from(c.blocks_found))
            .sum()
    }
}

#[derive(Deserialize)]
struct Clients {
    items: Vec<ClientItem>,
}

#[derive(Deserialize)]
struct ClientItem {
    client_id: usize,
}

#[derive(Deserialize)]
struct ClientChannels {
    extended_channels: Vec<Channel>,
    standard_channels: Vec<Channel>,
}

/// pool_sv2's monitoring server at `addr`.
#[derive(Debug, Clone, Copy)]
pub struct PoolMonitor {
    pub addr: SocketAddr,
}

impl PoolMonitor {
    /// Every client's channels (the first 100 clients, 100 channels each: the flows open a
    /// handful).
    pub async fn snapshot(&self) -> Result<Snapshot> {
        let clients: Clients = self.get("/api/v1/clients?limit=100").await?;
        let mut channels = Vec::new();
        for c in clients.items {
            let path = format!("/api/v1/clients/{}/channels?limit=100", c.client_id);
            let list: ClientChannels = self.get(&path).await?;
            for (extended, mut ch) in (list.extended_channels.into_iter().map(|c| (true, c)))
                .chain(list.standard_channels.into_iter().map(|c| (false, c)))
            {
                ch.extended = extended;
                ch.client_id = c.client_id;
                channels.push(ch);
            }
        }
        Ok(Snapshot { channels })
    }

    /// Polls [`PoolMonitor::snapshot`] every 200 ms until `done` holds and returns that
    /// snapshot; fails after `limit` with the last one (or at once if the pool stops
    /// answering).
    pub async fn until(
        &self,
        what: &str,
        limit: Duration,
        mut done: impl FnMut(&Snapshot) -> bool,
    ) -> Result<Snapshot> {
        let start = Instant::now();
        loop {
            let snapshot = self.snapshot().await?;
            if done(&snapshot) {
                return Ok(snapshot);
            }
            if start.elapsed() > limit {
                bail!("timed out after {limit:?}: {what}; pool_sv2 reports {snapshot:?}");
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// A GET of `path`, its JSON body decoded (HTTP/1.0: one request per connection, no
    /// chunked body).
    async fn get<T: serde::de::DeserializeOwned>(&self, path: &str) -> Result<T> {
        let io = async {
            let mut s = TcpStream::connect(self.addr).await?;
            let req = format!("GET {path} HTTP/1.0\r\nHost: {}\r\n\r\n", self.addr);
            s.write_all(req.as_bytes()).await?;
            let mut reply = Vec::new();
            s.take(MAX_REPLY).read_to_end(&mut reply).await?;
            anyhow::Ok(reply)
        };
        let reply = tokio::time::timeout(Duration::from_secs(5), io)
            .await
            .with_context(|| format!("pool_sv2 monitoring {path}: timed out"))?
            .with_context(|| format!("pool_sv2 monitoring {path}"))?;
        let split = reply
            .windows(4)
            .position(|w| w == b"\r\n\r\n")
            .context("no end of headers")?;
        let head = String::from_utf8_lossy(&reply[..split]);
        let status = head.lines().next().unwrap_or_default();
        ensure!(
            status.split_whitespace().nth(1) == Some("200"),
            "pool_sv2 monitoring {path}: {status}"
        );
        let body = &reply[split + 4..];
        match serde_json::from_slice(body) {
            Ok(v) => Ok(v),
            Err(e) => bail!(
                "pool_sv2 monitoring {path}: {e}: {}",
                String::from_utf8_lossy(&body[..body.len().min(400)])
            ),
        }
    }
}
