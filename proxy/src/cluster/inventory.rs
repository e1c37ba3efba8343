//! The site-wide inventory: every instance publishes its connected miners, the leader sees
//! them all through one [`Fleet`] ([`ClusterFleet`]) and kicks another instance's miner by
//! leaving an order for it in etcd.
//!
//! - `wire.rs`: the published value and the kick order ([`WireMiner`], [`encode`],
//!   [`decode`], [`Order`]), change detection, and remote [`ConnId`]s ([`remote_conn_id`]).
//! - `tasks.rs`: publish, read, and send and carry out orders, kept running by [`run`].
//! - Here, the **synthesized records**: a remote miner gets an `Arc<MinerShared>` whose
//!   [`ConnId`] is [`remote_conn_id`]. Records are reused while the remote connection is the
//!   same, so ids and records stay stable between refreshes.
//!
//! The parsing and the bookkeeping (encode, decode, change detection, id mapping, view
//! assembly, orders) are plain functions, tested without etcd.

use std::collections::hash_map::Entry;
use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::mpsc;

use super::node::Node;
use crate::pool_link::ConnId;
use crate::pool_link::miner::MinerShared;
use crate::pool_link::report::{Fleet, MinerReport, PoolSnapshot};

mod tasks;
mod wire;

pub use tasks::run;
pub use wire::{
    DecodeError, Decoded, Encoded, FORMAT_VERSION, MAX_PUBLISH_BYTES, MAX_PUBLISHED,
    MAX_REMOTE_PER_INSTANCE, MAX_WORKER_BYTES, ORDER_MAX_AGE_MS, Order, REMOTE_BIT, WireMiner,
    decode, encode, is_remote, remote_conn_id,
};

/// Most remote miners kept over all instances (each costs a synthesized record).
pub const MAX_REMOTE_TOTAL: usize = 250_000;
const ORDER_QUEUE: usize = 1024;

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

#[cfg(test)]
mod tests;
