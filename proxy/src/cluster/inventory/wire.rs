//! The inventory's value format: what an instance publishes under `miners/<me>`, how another
//! instance's value is read, and the kick order written under `orders/<instance>/`.
//!
//! - The value is `{"v":1,"t":<publication, Unix ms>,"n":<miners connected>,"m":[rows]}`,
//!   one row per miner ([`WireMiner`]): about 120 bytes for a 40-character worker name, so
//!   some 12,600 miners fit in etcd's default 1.5 MiB request; past that, the first by
//!   worker name are published.
//! - Every value is hostile: entries are capped per instance, malformed ones skipped and
//!   counted, nothing panics.
//! - A remote miner's [`ConnId`] has bit 63 set (local ids count up from 0 and never reach
//!   it), 31 bits of a hash of the instance's name and the low 32 bits of the remote id.
//! - An order older than [`ORDER_MAX_AGE_MS`] is deleted without acting.
//!
//! Also here: the change detection that decides whether a write is worth it. All plain
//! functions, tested without etcd.

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::net::SocketAddr;
use std::sync::atomic::Ordering::Relaxed;

use serde::de::{Deserializer, IgnoredAny, SeqAccess, Visitor};
use serde::{Deserialize, Serialize};

use crate::pool_link::report::MinerReport;
use crate::pool_link::{ConnId, PoolId};

/// The published format's version (`v`); a reader skips any other.
pub const FORMAT_VERSION: u32 = 1;
/// Largest value published: etcd's default request limit is 1.5 MiB (1,572,864 bytes); the
/// rest is left for the key, the lease and the request's framing.
pub const MAX_PUBLISH_BYTES: usize = 1_500_000;
/// Most miners one instance publishes (the first by worker name; the value says how many
/// were connected in all).
pub const MAX_PUBLISHED: usize = 50_000;
/// Most entries read from one instance's value.
pub const MAX_REMOTE_PER_INSTANCE: usize = 50_000;
/// Longest worker name published or accepted (bytes).
pub const MAX_WORKER_BYTES: usize = 256;
/// An order older than this (ms) is deleted without acting: the miner it named has most
/// likely reconnected since, perhaps as another connection.
pub const ORDER_MAX_AGE_MS: u64 = 30_000;

/// Far above any rig (1 ZH/s); a larger figure is garbage.
const MAX_HASHRATE: f64 = 1e21;
const MAX_DIFFICULTY: f64 = 1e30;
const MAX_CONNECTED_SECS: u64 = 10 * 365 * 86_400;
pub(super) const MAX_POOL_INDEX: usize = 1 << 16;
/// A relative hashrate move below this is not worth a write.
const HASHRATE_CHANGE: f64 = 0.05;
pub(super) const MAX_ORDER_BYTES: usize = 1024;
/// Bit 63 marks a remote miner's [`ConnId`].
pub const REMOTE_BIT: u64 = 1 << 63;

/// One miner as published. On the wire it is a row (a JSON array, no field names: the value
/// is bounded by etcd's request size), in this order: `[conn, worker|null, "ip:port", pool,
/// hashrate (H/s, whole), difficulty, ms from the last share to publication|null, accepted,
/// rejected, connected_secs]`. Readers ignore elements past these (a later format may add).
#[derive(Clone, Debug, PartialEq)]
pub struct WireMiner {
    /// Its connection id on the publishing instance.
    pub conn: u64,
    /// Worker name, once authorized.
    pub worker: Option<String>,
    /// The miner's address.
    pub peer: SocketAddr,
    /// The pool it is on (index in the config).
    pub pool: PoolId,
    /// Estimated hashrate (H/s).
    pub hashrate: f64,
    /// Current difficulty.
    pub difficulty: f64,
    /// Unix ms of its last accepted share (0: none yet).
    pub last_share_unix_ms: u64,
    /// Shares accepted.
    pub accepted: u64,
    /// Shares rejected.
    pub rejected: u64,
    /// Seconds connected when published.
    pub connected_secs: u64,
}

/// A row as written (see [`WireMiner`]).
#[derive(Serialize)]
pub(super) struct RowOut<'a>(
    u64,
    Option<&'a str>,
    SocketAddr,
    PoolId,
    u64,
    f64,
    Option<u64>,
    u64,
    u64,
    u64,
);

impl WireMiner {
    /// The row for a value published at `t` (Unix ms).
    pub(super) fn row(&self, t: u64) -> RowOut<'_> {
        // Whole H/s: a rig's estimate has no meaningful fraction, and `.0` costs two bytes.
        // (Finite and >= 0 here; `as` saturates above u64::MAX.)
        let hashrate = finite_or_zero(self.hashrate).round() as u64;
        RowOut(
            self.conn,
            self.worker.as_deref(),
            self.peer,
            self.pool,
            hashrate,
            finite_or_zero(self.difficulty),
            (self.last_share_unix_ms != 0).then(|| t.saturating_sub(self.last_share_unix_ms)),
            self.accepted,
            self.rejected,
            self.connected_secs,
        )
    }
}

/// A row as read: every element typed, extra trailing ones ignored.
struct RowIn {
    conn: u64,
    worker: Option<String>,
    peer: SocketAddr,
    pool: PoolId,
    hashrate: u64,
    difficulty: f64,
    share_ago_ms: Option<u64>,
    accepted: u64,
    rejected: u64,
    connected_secs: u64,
}

impl RowIn {
    /// The miner, its last share placed on the publication time `t`.
    fn miner(self, t: u64) -> WireMiner {
        WireMiner {
            conn: self.conn,
            worker: self.worker,
            peer: self.peer,
            pool: self.pool,
            hashrate: self.hashrate as f64,
            difficulty: self.difficulty,
            // A share "before 1970" (ago > t) is garbage: counted as no share.
            last_share_unix_ms: self.share_ago_ms.map_or(0, |ago| t.saturating_sub(ago)),
            accepted: self.accepted,
            rejected: self.rejected,
            connected_secs: self.connected_secs,
        }
    }
}

impl<'de> Deserialize<'de> for RowIn {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Row;
        impl<'de> Visitor<'de> for Row {
            type Value = RowIn;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a miner row")
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<RowIn, A::Error> {
                fn next<'de, T: Deserialize<'de>, A: SeqAccess<'de>>(
                    seq: &mut A,
                    i: usize,
                ) -> Result<T, A::Error> {
                    seq.next_element()?
                        .ok_or_else(|| serde::de::Error::invalid_length(i, &"10 elements"))
                }
                let row = RowIn {
                    conn: next(&mut seq, 0)?,
                    worker: next(&mut seq, 1)?,
                    peer: next(&mut seq, 2)?,
                    pool: next(&mut seq, 3)?,
                    hashrate: next(&mut seq, 4)?,
                    difficulty: next(&mut seq, 5)?,
                    share_ago_ms: next(&mut seq, 6)?,
                    accepted: next(&mut seq, 7)?,
                    rejected: next(&mut seq, 8)?,
                    connected_secs: next(&mut seq, 9)?,
                };
                while seq.next_element::<IgnoredAny>()?.is_some() {}
                Ok(row)
            }
        }
        d.deserialize_seq(Row)
    }
}

impl WireMiner {
    /// What is published of a local miner.
    pub fn from_report(r: &MinerReport) -> Self {
        let s = &r.shared;
        WireMiner {
            conn: s.id,
            worker: s.worker().map(|w| truncate(w, MAX_WORKER_BYTES)),
            peer: s.peer,
            pool: r.pool,
            hashrate: finite_or_zero(r.hashrate),
            difficulty: finite_or_zero(s.difficulty.get()),
            last_share_unix_ms: s.last_share_unix_ms(),
            accepted: s.counters.accepted.load(Relaxed),
            rejected: s.counters.rejected.load(Relaxed),
            connected_secs: s.connected_at.elapsed().as_secs(),
        }
    }

    /// Whether a published entry is in range; clamps a last share in the future (another
    /// host's clock) to `now_ms`, so a skewed clock cannot make a rig look alive for ever.
    fn check(&mut self, now_ms: u64) -> bool {
        if let Some(w) = &self.worker {
            if w.is_empty() || w.len() > MAX_WORKER_BYTES || w.chars().any(char::is_control) {
                return false;
            }
        }
        let in_range = |v: f64, max: f64| v.is_finite() && (0.0..=max).contains(&v);
        if !in_range(self.hashrate, MAX_HASHRATE)
            || !in_range(self.difficulty, MAX_DIFFICULTY)
            || self.pool > MAX_POOL_INDEX
            || self.connected_secs > MAX_CONNECTED_SECS
        {
            return false;
        }
        self.last_share_unix_ms = self.last_share_unix_ms.min(now_ms);
        true
    }
}

fn finite_or_zero(v: f64) -> f64 {
    if v.is_finite() && v >= 0.0 { v } else { 0.0 }
}

fn truncate(mut s: String, max: usize) -> String {
    if s.len() > max {
        let mut cut = max;
        while !s.is_char_boundary(cut) {
            cut -= 1;
        }
        s.truncate(cut);
    }
    s
}

/// A value ready to publish.
#[derive(Debug)]
pub struct Encoded {
    /// The JSON value.
    pub bytes: Vec<u8>,
    /// Miners in it.
    pub included: usize,
    /// Miners connected (more than `included` when the list did not fit).
    pub total: usize,
}

/// Encodes `miners` as `{"v":1,"t":now_ms,"n":total,"m":[...]}`: sorted by worker name (then
/// connection), as many as fit in `max_bytes` and `max_count`.
pub fn encode(
    mut miners: Vec<WireMiner>,
    now_ms: u64,
    max_bytes: usize,
    max_count: usize,
) -> Encoded {
    let total = miners.len();
    miners.sort_by(|a, b| {
        (a.worker.is_none(), &a.worker, a.conn).cmp(&(b.worker.is_none(), &b.worker, b.conn))
    });
    let mut out =
        format!("{{\"v\":{FORMAT_VERSION},\"t\":{now_ms},\"n\":{total},\"m\":[").into_bytes();
    const TAIL: &[u8] = b"]}";
    let mut included = 0;
    for m in &miners {
        if included >= max_count {
            break;
        }
        let Ok(one) = serde_json::to_vec(&m.row(now_ms)) else {
            continue;
        };
        let sep = usize::from(included > 0);
        if out.len() + sep + one.len() + TAIL.len() > max_bytes {
            break;
        }
        if sep == 1 {
            out.push(b',');
        }
        out.extend_from_slice(&one);
        included += 1;
    }
    out.extend_from_slice(TAIL);
    Encoded {
        bytes: out,
        included,
        total,
    }
}

/// Why another instance's value was not read.
#[derive(Debug, thiserror::Error, PartialEq)]
#[non_exhaustive]
pub enum DecodeError {
    /// Not JSON of the expected shape.
    #[error("malformed inventory: {0}")]
    Malformed(String),
    /// Another format version.
    #[error("inventory format {0} (this build reads {FORMAT_VERSION})")]
    Version(u32),
}

/// Another instance's value, checked.
#[derive(Debug, Default)]
pub struct Decoded {
    /// The valid entries (distinct connections), at most [`MAX_REMOTE_PER_INSTANCE`].
    pub miners: Vec<WireMiner>,
    /// When it was published (Unix ms, clamped to now).
    pub published_unix_ms: u64,
    /// How many miners the instance says it has.
    pub declared: u64,
    /// Entries skipped: malformed, out of range, duplicated or over the cap.
    pub skipped: usize,
}

#[derive(Deserialize)]
struct RawInventory {
    v: u32,
    t: u64,
    #[serde(default)]
    n: u64,
    #[serde(default)]
    m: Capped,
}

/// A list read one entry at a time: a malformed entry is skipped rather than failing the
/// whole value, and entries past the cap are skipped without being kept.
#[derive(Default)]
struct Capped {
    ok: Vec<RowIn>,
    skipped: usize,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum Item {
    Good(RowIn),
    Bad(IgnoredAny),
}

impl<'de> Deserialize<'de> for Capped {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct List;
        impl<'de> Visitor<'de> for List {
            type Value = Capped;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a list of miners")
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Capped, A::Error> {
                let mut c = Capped::default();
                loop {
                    if c.ok.len() >= MAX_REMOTE_PER_INSTANCE {
                        match seq.next_element::<IgnoredAny>()? {
                            Some(_) => c.skipped += 1,
                            None => break,
                        }
                        continue;
                    }
                    match seq.next_element::<Item>()? {
                        Some(Item::Good(m)) => c.ok.push(m),
                        Some(Item::Bad(_)) => c.skipped += 1,
                        None => break,
                    }
                }
                Ok(c)
            }
        }
        d.deserialize_seq(List)
    }
}

/// Reads another instance's value (`now_ms`: this host's clock).
pub fn decode(bytes: &[u8], now_ms: u64) -> Result<Decoded, DecodeError> {
    let raw: RawInventory =
        serde_json::from_slice(bytes).map_err(|e| DecodeError::Malformed(e.to_string()))?;
    if raw.v != FORMAT_VERSION {
        return Err(DecodeError::Version(raw.v));
    }
    let published_unix_ms = raw.t.min(now_ms);
    let mut skipped = raw.m.skipped;
    let mut seen = HashSet::new();
    let mut miners = Vec::with_capacity(raw.m.ok.len());
    for row in raw.m.ok {
        let mut m = row.miner(published_unix_ms);
        if m.check(now_ms) && seen.insert(m.conn) {
            miners.push(m);
        } else {
            skipped += 1;
        }
    }
    Ok(Decoded {
        miners,
        published_unix_ms,
        declared: raw.n,
        skipped,
    })
}

/// 64-bit FNV-1a: stable across processes and builds (unlike `DefaultHasher`).
pub(super) fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}

/// The local [`ConnId`] of `instance`'s connection `remote`.
pub fn remote_conn_id(instance: &str, remote: u64) -> ConnId {
    REMOTE_BIT | ((fnv1a(instance.as_bytes()) & 0x7FFF_FFFF) << 32) | (remote & 0xFFFF_FFFF)
}

/// Whether `id` names a remote miner.
pub fn is_remote(id: ConnId) -> bool {
    id & REMOTE_BIT != 0
}

/// What the publisher compares to decide whether a write is worth it.
#[derive(Debug, Clone, PartialEq)]
pub(super) struct Mark {
    worker: Option<String>,
    pool: PoolId,
    last_share: u64,
    hashrate: f64,
}

pub(super) fn marks_of(miners: &[WireMiner]) -> HashMap<u64, Mark> {
    miners
        .iter()
        .map(|m| {
            (
                m.conn,
                Mark {
                    worker: m.worker.clone(),
                    pool: m.pool,
                    last_share: m.last_share_unix_ms,
                    hashrate: m.hashrate,
                },
            )
        })
        .collect()
}

/// Whether `cur` differs from what was published in anything worth a write: the set of
/// miners, a worker, a pool, a last share, or a hashrate by more than 5 %.
pub(super) fn changed(published: &HashMap<u64, Mark>, cur: &[WireMiner]) -> bool {
    if published.len() != cur.len() {
        return true;
    }
    cur.iter().any(|m| {
        let Some(p) = published.get(&m.conn) else {
            return true;
        };
        p.worker != m.worker
            || p.pool != m.pool
            || p.last_share != m.last_share_unix_ms
            || (m.hashrate - p.hashrate).abs() > HASHRATE_CHANGE * p.hashrate.max(1.0)
    })
}

/// A kick order, as written under `orders/<instance>/`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Order {
    /// The connection, as the receiving instance numbers it.
    pub conn: u64,
    /// When the leader wrote it (Unix ms).
    pub at_unix_ms: u64,
}

/// What to do with an order read at `now_ms`.
#[derive(Debug, PartialEq)]
pub(super) enum OrderAction {
    Kick(u64),
    Drop(&'static str),
}

pub(super) fn order_action(value: &[u8], now_ms: u64) -> OrderAction {
    if value.len() > MAX_ORDER_BYTES {
        return OrderAction::Drop("too large");
    }
    match serde_json::from_slice::<Order>(value) {
        Err(_) => OrderAction::Drop("malformed"),
        Ok(o) if now_ms.abs_diff(o.at_unix_ms) > ORDER_MAX_AGE_MS => OrderAction::Drop("expired"),
        Ok(o) => OrderAction::Kick(o.conn),
    }
}
