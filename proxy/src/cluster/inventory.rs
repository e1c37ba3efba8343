//! The site-wide inventory: every instance publishes its connected miners, the leader sees
//! them all through one [`Fleet`] ([`ClusterFleet`]) and kicks another instance's miner by
//! leaving an order for it in etcd.
//!
//! - **Publish** (`miners/<me>`, one JSON value under this instance's own lease): when the
//!   instance dies its lease expires, etcd deletes the key, and its miners leave the live
//!   view at once (their rigs stay counted by the power controller at their last known power:
//!   a dead proxy does not mean a sleeping rig). Written at most once a second and only when
//!   something the power controller or an operator reads changed; the lease keeps the key, so
//!   there is no periodic rewrite. A new lease (after an expiry) is published to at once.
//!   The value is `{"v":1,"t":<publication, Unix ms>,"n":<miners connected>,"m":[rows]}`,
//!   one row per miner ([`WireMiner`]): about 120 bytes for a 40-character worker name, so
//!   some 12,600 miners fit in etcd's default 1.5 MiB request; past that, the first by
//!   worker name are published and a warning says so. (etcd keeps every revision until it
//!   compacts: run it with `--auto-compaction-retention`.)
//! - **Read** (every ~500 ms): a keys-only listing of `miners/`, then one read per instance
//!   whose revision moved: unchanged values are not downloaded again, and no single answer
//!   carries every instance's value (the client refuses answers over 4 MiB). Every value is hostile: entries are capped per instance and in
//!   total, malformed ones skipped and counted, nothing panics.
//! - **Synthesized records**: a remote miner gets an `Arc<MinerShared>` whose [`ConnId`] has
//!   bit 63 set (local ids count up from 0 and never reach it), 31 bits of a hash of the
//!   instance's name and the low 32 bits of the remote id. Records are reused while the
//!   remote connection is the same, so ids and records stay stable between refreshes.
//! - **Orders** (`orders/<instance>/<id>`): a kick of a remote miner is written by the
//!   leader in a fenced transaction under its lease (a deposed leader's kick is refused by
//!   etcd); each instance polls its own orders every ~300 ms, kicks, and deletes them. An
//!   order older than [`ORDER_MAX_AGE_MS`] is deleted without acting.
//!
//! The parsing and the bookkeeping (encode, decode, change detection, id mapping, view
//! assembly, orders) are plain functions, tested without etcd.

use std::collections::hash_map::Entry;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::de::{Deserializer, IgnoredAny, SeqAccess, Visitor};
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::etcd::{EtcdError, LeaseId, Write};
use super::keys::Keys;
use super::node::Node;
use crate::pool_link::miner::MinerShared;
use crate::pool_link::report::{Fleet, MinerReport, PoolSnapshot};
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
/// Most remote miners kept over all instances (each costs a synthesized record).
pub const MAX_REMOTE_TOTAL: usize = 250_000;
/// Longest worker name published or accepted (bytes).
pub const MAX_WORKER_BYTES: usize = 256;
/// An order older than this (ms) is deleted without acting: the miner it named has most
/// likely reconnected since, perhaps as another connection.
pub const ORDER_MAX_AGE_MS: u64 = 30_000;

/// Far above any rig (1 ZH/s); a larger figure is garbage.
const MAX_HASHRATE: f64 = 1e21;
const MAX_DIFFICULTY: f64 = 1e30;
const MAX_CONNECTED_SECS: u64 = 10 * 365 * 86_400;
const MAX_POOL_INDEX: usize = 1 << 16;
/// A relative hashrate move below this is not worth a write.
const HASHRATE_CHANGE: f64 = 0.05;
const PUBLISH_MIN_INTERVAL: Duration = Duration::from_secs(1);
const PUBLISH_TICK: Duration = Duration::from_millis(250);
const REFRESH_EVERY: Duration = Duration::from_millis(500);
const ORDERS_EVERY: Duration = Duration::from_millis(300);
const MAX_ORDERS_PER_POLL: usize = 256;
const MAX_ORDER_BYTES: usize = 1024;
const ORDER_QUEUE: usize = 1024;
const WARN_EVERY: Duration = Duration::from_secs(10);
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
struct RowOut<'a>(
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
    fn row(&self, t: u64) -> RowOut<'_> {
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
fn fnv1a(bytes: &[u8]) -> u64 {
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
struct Mark {
    worker: Option<String>,
    pool: PoolId,
    last_share: u64,
    hashrate: f64,
}

fn marks_of(miners: &[WireMiner]) -> HashMap<u64, Mark> {
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
fn changed(published: &HashMap<u64, Mark>, cur: &[WireMiner]) -> bool {
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

/// One instance's miners as this process holds them.
#[derive(Debug, Default)]
struct RemoteInstance {
    /// The etcd revision of the value they were read from.
    revision: i64,
    /// Its miners: their connection id there and their record here.
    entries: Vec<(u64, MinerReport)>,
    /// Remote connection → its synthesized record (reused while the connection is the same).
    by_conn: HashMap<u64, Arc<MinerShared>>,
}

/// Builds `instance`'s records from its value, reusing `old`'s records for connections
/// still there; keeps at most `room` miners.
fn build_instance(
    instance: &str,
    revision: i64,
    decoded: Decoded,
    old: Option<&RemoteInstance>,
    now: Instant,
    now_ms: u64,
    room: usize,
) -> RemoteInstance {
    // Seconds between publication and now: `connected_secs` was true at publication.
    let age = Duration::from_millis(now_ms.saturating_sub(decoded.published_unix_ms));
    let mut out = RemoteInstance {
        revision,
        ..RemoteInstance::default()
    };
    for m in decoded.miners.into_iter().take(room) {
        let connected = Duration::from_secs(m.connected_secs).saturating_add(age);
        let since = now.checked_sub(connected).unwrap_or(now);
        // The same connection: same id, same address, and not connected later than the
        // record says (a restarted instance counts its ids from 0 again).
        let reuse = old
            .and_then(|o| o.by_conn.get(&m.conn))
            .filter(|s| s.peer == m.peer && s.connected_at + Duration::from_secs(5) >= since)
            .cloned();
        let shared = reuse.unwrap_or_else(|| {
            let mut s = MinerShared::new(remote_conn_id(instance, m.conn), m.peer);
            s.connected_at = since;
            Arc::new(s)
        });
        if let Some(w) = &m.worker {
            if shared.worker().as_deref() != Some(w) {
                shared.set_worker(w);
            }
        }
        shared.set_pool(m.pool);
        shared.difficulty.set(m.difficulty);
        shared.set_last_share_unix_ms(m.last_share_unix_ms);
        shared.counters.accepted.store(m.accepted, Relaxed);
        shared.counters.rejected.store(m.rejected, Relaxed);
        out.by_conn.insert(m.conn, shared.clone());
        out.entries.push((
            m.conn,
            MinerReport {
                shared,
                pool: m.pool,
                hashrate: m.hashrate,
            },
        ));
    }
    out
}

/// The remote miners as [`ClusterFleet`] serves them.
#[derive(Debug, Default)]
struct View {
    instances: BTreeMap<String, Arc<RemoteInstance>>,
    /// Every remote miner, no id twice.
    reports: Vec<MinerReport>,
    /// Remote id → (instance, its connection id there).
    owners: HashMap<ConnId, (String, u64)>,
}

/// Joins the instances' records; a miner whose id another already took (two instance names
/// whose hashes agree on 31 bits, or remote ids equal in their low 32 bits) is left out.
/// Returns the view and how many were left out.
fn assemble(instances: BTreeMap<String, Arc<RemoteInstance>>) -> (View, usize) {
    let mut reports = Vec::new();
    let mut owners = HashMap::new();
    let mut collisions = 0;
    for (name, inst) in &instances {
        for (conn, r) in &inst.entries {
            match owners.entry(r.shared.id) {
                Entry::Occupied(_) => collisions += 1,
                Entry::Vacant(v) => {
                    v.insert((name.clone(), *conn));
                    reports.push(r.clone());
                }
            }
        }
    }
    (
        View {
            instances,
            reports,
            owners,
        },
        collisions,
    )
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
enum OrderAction {
    Kick(u64),
    Drop(&'static str),
}

fn order_action(value: &[u8], now_ms: u64) -> OrderAction {
    if value.len() > MAX_ORDER_BYTES {
        return OrderAction::Drop("too large");
    }
    match serde_json::from_slice::<Order>(value) {
        Err(_) => OrderAction::Drop("malformed"),
        Ok(o) if now_ms.abs_diff(o.at_unix_ms) > ORDER_MAX_AGE_MS => OrderAction::Drop("expired"),
        Ok(o) => OrderAction::Kick(o.conn),
    }
}

/// Logs at most once per [`WARN_EVERY`], saying how many were held back.
#[derive(Default)]
struct Throttle {
    next: Option<Instant>,
    held: u64,
}

impl Throttle {
    /// `Some(held back since the last one)` when a warning may be logged now.
    fn ready(&mut self) -> Option<u64> {
        let now = Instant::now();
        if self.next.is_some_and(|n| now < n) {
            self.held += 1;
            return None;
        }
        self.next = Some(now + WARN_EVERY);
        Some(std::mem::take(&mut self.held))
    }
}

/// A kick of a remote miner on its way to etcd.
struct Kick {
    instance: String,
    conn: u64,
}

#[derive(Default)]
struct Counters {
    published: AtomicU64,
    truncated: AtomicU64,
    skipped: AtomicU64,
    collisions: AtomicU64,
    orders_sent: AtomicU64,
    orders_refused: AtomicU64,
    orders_executed: AtomicU64,
    orders_dropped: AtomicU64,
}

/// The site's miners: this instance's own and every other instance's, as one [`Fleet`].
pub struct ClusterFleet {
    node: Arc<Node>,
    local: Arc<dyn Fleet>,
    view: Mutex<Arc<View>>,
    kicks_tx: mpsc::Sender<Kick>,
    kicks_rx: Mutex<Option<mpsc::Receiver<Kick>>>,
    counters: Counters,
    order_seq: AtomicU64,
}

impl ClusterFleet {
    /// The fleet of `node`'s site over this instance's `local` one; [`run`] keeps it current.
    pub fn new(node: Arc<Node>, local: Arc<dyn Fleet>) -> Arc<ClusterFleet> {
        let (kicks_tx, rx) = mpsc::channel(ORDER_QUEUE);
        Arc::new(ClusterFleet {
            node,
            local,
            view: Mutex::new(Arc::new(View::default())),
            kicks_tx,
            kicks_rx: Mutex::new(Some(rx)),
            counters: Counters::default(),
            order_seq: AtomicU64::new(0),
        })
    }

    fn view(&self) -> Arc<View> {
        match self.view.lock() {
            Ok(v) => v.clone(),
            Err(p) => p.into_inner().clone(),
        }
    }

    fn set_view(&self, view: View) {
        let view = Arc::new(view);
        match self.view.lock() {
            Ok(mut v) => *v = view,
            Err(p) => *p.into_inner() = view,
        }
    }

    /// The other instances whose inventory is live, with their miner counts (`ctl cluster`).
    pub fn remote_instances(&self) -> Vec<(String, usize)> {
        self.view()
            .instances
            .iter()
            .map(|(n, i)| (n.clone(), i.entries.len()))
            .collect()
    }

    /// Inventory writes of this instance so far.
    pub fn published_writes(&self) -> u64 {
        self.counters.published.load(Relaxed)
    }

    /// Writes that could not hold every local miner.
    pub fn truncated_writes(&self) -> u64 {
        self.counters.truncated.load(Relaxed)
    }

    /// Remote entries skipped (malformed, out of range, over a cap, id taken).
    pub fn skipped_remote_entries(&self) -> u64 {
        self.counters.skipped.load(Relaxed) + self.counters.collisions.load(Relaxed)
    }

    /// Kick orders written for other instances.
    pub fn orders_sent(&self) -> u64 {
        self.counters.orders_sent.load(Relaxed)
    }

    /// Kick orders etcd refused (this instance no longer led) or that could not be queued.
    pub fn orders_refused(&self) -> u64 {
        self.counters.orders_refused.load(Relaxed)
    }

    /// Orders for this instance carried out.
    pub fn orders_executed(&self) -> u64 {
        self.counters.orders_executed.load(Relaxed)
    }

    /// Orders for this instance deleted unread (expired, malformed).
    pub fn orders_dropped(&self) -> u64 {
        self.counters.orders_dropped.load(Relaxed)
    }
}

impl Fleet for ClusterFleet {
    fn miner_reports(&self) -> Vec<MinerReport> {
        let mut out = self.local.miner_reports();
        out.extend(self.view().reports.iter().cloned());
        out
    }

    fn pools(&self) -> Vec<PoolSnapshot> {
        self.local.pools()
    }

    fn pool_urls(&self) -> Vec<String> {
        self.local.pool_urls()
    }

    fn kick(&self, id: ConnId) -> bool {
        if !is_remote(id) {
            return self.local.kick(id);
        }
        let Some((instance, conn)) = self.view().owners.get(&id).cloned() else {
            return false;
        };
        match self.kicks_tx.try_send(Kick { instance, conn }) {
            Ok(()) => true,
            Err(_) => {
                self.counters.orders_refused.fetch_add(1, Relaxed);
                tracing::warn!(conn = id, "cluster: kick queue full, kick dropped");
                false
            }
        }
    }
}

/// Keeps `fleet` current until `shutdown`: publishes this instance's miners, reads the
/// others', writes kick orders and carries out this instance's. etcd errors are logged (at
/// most every 10 s per task) and retried; it returns only at shutdown.
pub async fn run(fleet: Arc<ClusterFleet>, shutdown: CancellationToken) {
    let kicks = match fleet.kicks_rx.lock() {
        Ok(mut k) => k.take(),
        Err(p) => p.into_inner().take(),
    };
    tokio::join!(
        publisher(&fleet, &shutdown),
        refresher(&fleet, &shutdown),
        order_sender(&fleet, kicks, &shutdown),
        order_executor(&fleet, &shutdown),
    );
}

fn ticker(every: Duration) -> tokio::time::Interval {
    let mut t = tokio::time::interval(every);
    t.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    t
}

#[derive(Default)]
struct Publisher {
    /// The lease the last write went under (0: none yet).
    lease: LeaseId,
    at: Option<Instant>,
    marks: HashMap<u64, Mark>,
    /// A write is owed (the last one failed or was held back by the interval).
    dirty: bool,
    truncating: bool,
    warn: Throttle,
}

async fn publisher(f: &ClusterFleet, shutdown: &CancellationToken) {
    let mut st = Publisher::default();
    let mut tick = ticker(PUBLISH_TICK);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tick.tick() => {}
        }
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = publish_once(f, &mut st) => {}
        }
    }
}

async fn publish_once(f: &ClusterFleet, st: &mut Publisher) {
    let lease = f.node.lease();
    if lease == 0 {
        st.lease = 0;
        return;
    }
    let now = Instant::now();
    let cur: Vec<WireMiner> = f
        .local
        .miner_reports()
        .iter()
        .map(WireMiner::from_report)
        .collect();
    if lease == st.lease {
        if !st.dirty && !changed(&st.marks, &cur) {
            return;
        }
        if st
            .at
            .is_some_and(|at| now.duration_since(at) < PUBLISH_MIN_INTERVAL)
        {
            return;
        }
    }
    let marks = marks_of(&cur);
    let enc = encode(
        cur,
        crate::time::unix_ms(),
        MAX_PUBLISH_BYTES,
        MAX_PUBLISHED,
    );
    if enc.included < enc.total {
        f.counters.truncated.fetch_add(1, Relaxed);
        if !st.truncating {
            tracing::warn!(
                connected = enc.total,
                published = enc.included,
                bytes = enc.bytes.len(),
                "cluster: too many miners for one inventory value; publishing the first by worker name"
            );
        }
    }
    st.truncating = enc.included < enc.total;
    st.at = Some(now);
    st.lease = lease;
    match f
        .node
        .etcd
        .put(&f.node.keys().my_miners(), enc.bytes, lease)
        .await
    {
        Ok(()) => {
            f.counters.published.fetch_add(1, Relaxed);
            st.marks = marks;
            st.dirty = false;
        }
        Err(e) => {
            st.dirty = true;
            if let Some(held) = st.warn.ready() {
                tracing::warn!(error = %e, held, "cluster: cannot publish this instance's miners");
            }
        }
    }
}

async fn refresher(f: &ClusterFleet, shutdown: &CancellationToken) {
    let mut warn = Throttle::default();
    let mut bad = Throttle::default();
    let mut tick = ticker(REFRESH_EVERY);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tick.tick() => {}
        }
        tokio::select! {
            _ = shutdown.cancelled() => return,
            r = refresh_once(f, &mut bad) => if let Err(e) = r {
                if let Some(held) = warn.ready() {
                    tracing::warn!(error = %e, held, "cluster: cannot read the other instances' miners");
                }
            }
        }
    }
}

async fn refresh_once(f: &ClusterFleet, bad: &mut Throttle) -> Result<(), EtcdError> {
    let keys = f.node.keys();
    let prefix = keys.miners();
    let listed = f.node.etcd.get_prefix_keys(&prefix).await?;
    let names: Vec<(String, i64)> = listed
        .iter()
        .filter_map(|e| {
            Keys::name_under(&prefix, &e.key)
                .filter(|n| *n != keys.instance())
                .map(|n| (n.to_owned(), e.mod_revision))
        })
        .collect();
    let current = f.view();
    let unchanged = names.len() == current.instances.len()
        && names
            .iter()
            .all(|(n, r)| current.instances.get(n).is_some_and(|i| i.revision == *r));
    if unchanged {
        return Ok(());
    }
    let mut next = BTreeMap::new();
    let mut room = MAX_REMOTE_TOTAL;
    for (name, revision) in names {
        let old = current.instances.get(&name);
        let inst = match old.filter(|o| o.revision == revision) {
            Some(o) => o.clone(),
            None => {
                let Some(entry) = f.node.etcd.get(&format!("{prefix}{name}")).await? else {
                    continue; // gone since the listing
                };
                let now_ms = crate::time::unix_ms();
                let decoded = match decode(&entry.value, now_ms) {
                    Ok(d) => d,
                    Err(e) => {
                        if let Some(held) = bad.ready() {
                            tracing::warn!(instance = %name, error = %e, held, "cluster: unreadable inventory skipped");
                        }
                        // Remember the revision, so the same bad value is not read again.
                        Decoded::default()
                    }
                };
                let over = decoded.miners.len().saturating_sub(room);
                let skipped = decoded.skipped + over;
                if skipped > 0 {
                    f.counters.skipped.fetch_add(skipped as u64, Relaxed);
                    if let Some(held) = bad.ready() {
                        tracing::warn!(instance = %name, skipped, held, "cluster: inventory entries skipped");
                    }
                }
                Arc::new(build_instance(
                    &name,
                    entry.mod_revision,
                    decoded,
                    old.map(|o| &**o),
                    Instant::now(),
                    now_ms,
                    room,
                ))
            }
        };
        room = room.saturating_sub(inst.entries.len());
        next.insert(name, inst);
    }
    let (view, collisions) = assemble(next);
    if collisions > 0 {
        f.counters.collisions.fetch_add(collisions as u64, Relaxed);
    }
    f.set_view(view);
    Ok(())
}

async fn order_sender(
    f: &ClusterFleet,
    kicks: Option<mpsc::Receiver<Kick>>,
    shutdown: &CancellationToken,
) {
    let Some(mut kicks) = kicks else {
        // `run` twice: the first one sends.
        shutdown.cancelled().await;
        return;
    };
    let mut warn = Throttle::default();
    loop {
        let kick = tokio::select! {
            _ = shutdown.cancelled() => return,
            k = kicks.recv() => match k {
                Some(k) => k,
                None => return shutdown.cancelled().await,
            },
        };
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = send_order(f, kick, &mut warn) => {}
        }
    }
}

async fn send_order(f: &ClusterFleet, kick: Kick, warn: &mut Throttle) {
    let lease = f.node.lease();
    let now_ms = crate::time::unix_ms();
    let order = Order {
        conn: kick.conn,
        at_unix_ms: now_ms,
    };
    let Ok(value) = serde_json::to_vec(&order) else {
        return;
    };
    let seq = f.order_seq.fetch_add(1, Relaxed);
    let key = format!(
        "{}{}-{now_ms}-{seq}",
        f.node.keys().orders(&kick.instance),
        f.node.keys().instance()
    );
    let result = if lease == 0 {
        Ok(false)
    } else {
        f.node
            .etcd
            .fenced(
                lease,
                vec![Write::Put {
                    key,
                    value,
                    leased: true,
                }],
            )
            .await
    };
    match result {
        Ok(true) => {
            f.counters.orders_sent.fetch_add(1, Relaxed);
        }
        Ok(false) => {
            f.counters.orders_refused.fetch_add(1, Relaxed);
            if let Some(held) = warn.ready() {
                tracing::warn!(instance = %kick.instance, conn = kick.conn, held, "cluster: kick refused: this instance does not lead");
            }
        }
        Err(e) => {
            f.counters.orders_refused.fetch_add(1, Relaxed);
            if let Some(held) = warn.ready() {
                tracing::warn!(instance = %kick.instance, conn = kick.conn, error = %e, held, "cluster: kick order not written");
            }
        }
    }
}

async fn order_executor(f: &ClusterFleet, shutdown: &CancellationToken) {
    let mut warn = Throttle::default();
    let mut tick = ticker(ORDERS_EVERY);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tick.tick() => {}
        }
        tokio::select! {
            _ = shutdown.cancelled() => return,
            r = execute_orders(f) => if let Err(e) = r {
                if let Some(held) = warn.ready() {
                    tracing::warn!(error = %e, held, "cluster: cannot read this instance's orders");
                }
            }
        }
    }
}

async fn execute_orders(f: &ClusterFleet) -> Result<(), EtcdError> {
    let prefix = f.node.keys().orders(f.node.keys().instance());
    let orders = f.node.etcd.get_prefix(&prefix).await?;
    for entry in orders.into_iter().take(MAX_ORDERS_PER_POLL) {
        match order_action(&entry.value, crate::time::unix_ms()) {
            OrderAction::Kick(conn) => {
                let kicked = f.local.kick(conn);
                f.counters.orders_executed.fetch_add(1, Relaxed);
                tracing::info!(conn, kicked, "cluster: kick ordered by the leader");
            }
            OrderAction::Drop(why) => {
                f.counters.orders_dropped.fetch_add(1, Relaxed);
                tracing::debug!(key = %entry.key, why, "cluster: order dropped");
            }
        }
        f.node.etcd.delete(&entry.key).await?;
    }
    Ok(())
}

#[cfg(test)]
mod tests;
