//! The pool manager: which upstream connection each miner is on.
//!
//! It owns the pool connections (one per pool from the start, so every backup is a hot
//! standby; more per pool as miners fill them), the extranonce prefix allocators, and the
//! [`Router`] policy. Sessions call [`PoolManager::assign`] and [`PoolManager::release`];
//! a ticker task ([`PoolManager::run`]) watches pool health and moves miners by sending
//! them [`Control::Reassign`].
//!
//! State sits behind one `std::sync::Mutex`: every critical section is short and never
//! awaits (sends to sessions use `try_send`), so a blocking mutex is both correct and cheaper
//! than an async one. Reports over the whole fleet ([`PoolManager::miner_reports`]) take it
//! once per [`REPORT_CHUNK`] miners, never for the whole fleet: the lock also serves every
//! connect, disconnect and the health tick.

use std::collections::{BTreeMap, HashMap};
use std::ops::Bound;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{info, warn};

use super::connection::{self, ConnStatus, ConnectionHandle, ConnectionParams};
use super::extranonce::PrefixAllocator;
use super::router::{HASHES_PER_DIFFICULTY, MinerLoad, PoolId, Router};
use crate::config::Config;
use crate::downstream::listener::ConnId;
use crate::downstream::mailbox::MailboxSender;
use crate::downstream::registry::MinerShared;
use crate::telemetry::histogram::LATENCY_BUCKETS;
use crate::telemetry::{HistogramSnapshot, RejectReason};

/// The split works off accumulated error over this many rebalance intervals (its horizon).
const HORIZON_REBALANCES: u32 = 10;
/// Seconds of history in a miner's hashrate estimate, once it has that much.
const ESTIMATE_WINDOW: f64 = 60.0;
/// Miners copied per hold of the lock by [`PoolManager::miner_reports`] (a few µs of work).
pub const REPORT_CHUNK: usize = 256;

/// A miner's place: a connection and an extranonce prefix on it.
#[derive(Clone, Debug)]
pub struct Assignment {
    /// The pool.
    pub pool: PoolId,
    /// The connection.
    pub conn: ConnectionHandle,
    /// The prefix slot on that connection.
    pub slot: u32,
    /// Bytes of extranonce2 the proxy keeps.
    pub prefix_bytes: usize,
}

/// Messages from the manager to a miner session.
#[derive(Debug)]
pub enum Control {
    /// Move to another connection (failover, failback, rebalancing).
    Reassign(Assignment),
    /// Disconnect (operator action).
    Kick,
}

/// Tuning of failover and rebalancing.
#[derive(Clone, Debug)]
pub struct ManagerSettings {
    /// A pool that sent no job for this long counts as down.
    pub no_work_timeout: Duration,
    /// A recovered higher-priority pool is used again after being healthy this long.
    pub failback_after: Duration,
    /// How often the weighted split may move a miner (one move per interval); accumulated
    /// split error is worked off over ten intervals.
    pub rebalance_every: Duration,
}

impl ManagerSettings {
    /// The settings a configuration asks for.
    pub fn from_config(config: &Config) -> Self {
        let f = &config.failover;
        ManagerSettings {
            no_work_timeout: Duration::from_secs_f64(f.no_work_timeout_secs),
            failback_after: Duration::from_secs_f64(f.failback_after_secs),
            rebalance_every: Duration::from_secs_f64(f.rebalance_every_secs),
        }
    }
}

struct ConnEntry {
    handle: ConnectionHandle,
    alloc: PrefixAllocator,
}

struct PoolEntry {
    params: ConnectionParams,
    priority: u32,
    weight: u32,
    conns: Vec<ConnEntry>,
}

struct MinerEntry {
    pool: PoolId,
    conn: usize,
    slot: u32,
    control: MailboxSender,
    shared: Arc<MinerShared>,
    /// Accepted difficulty already counted into `hashrate`.
    credited: f64,
    /// Estimated hashrate (H/s); 0 until the first share.
    hashrate: f64,
    /// When the miner joined, for the estimator's warm-up.
    joined: Instant,
}

struct Inner {
    router: Router,
    pools: Vec<PoolEntry>,
    /// Ordered by id so that a report can resume after the last id it copied
    /// ([`PoolManager::miner_reports`]); ids only grow, so new miners come last.
    miners: BTreeMap<ConnId, MinerEntry>,
    /// Per pool, the accepted difficulty (all its connections) already credited to the router.
    credited_seen: Vec<f64>,
    last_rebalance: Instant,
}

/// See the module docs.
pub struct PoolManager {
    inner: Mutex<Inner>,
    settings: ManagerSettings,
    prefix_bytes: usize,
    max_miners: u32,
    shutdown: CancellationToken,
    tracker: TaskTracker,
}

/// A miner as the pool manager sees it.
#[derive(Clone, Debug)]
pub struct MinerReport {
    /// Its shared record.
    pub shared: Arc<MinerShared>,
    /// The pool it is on.
    pub pool: PoolId,
    /// Estimated hashrate (H/s) from the difficulty it got accepted; 0 before its first share.
    pub hashrate: f64,
}

/// A pool as reported to operators.
#[derive(Clone, Debug)]
pub struct PoolSnapshot {
    /// Index in the config.
    pub pool: PoolId,
    /// URL.
    pub url: String,
    /// Priority.
    pub priority: u32,
    /// Weight.
    pub weight: u32,
    /// Healthy and in the active tier.
    pub active: bool,
    /// Any connection up.
    pub up: bool,
    /// Upstream connections open or opening.
    pub connections: usize,
    /// Miners on it.
    pub miners: usize,
    /// Shares as the pool judged them, over all its connections.
    pub shares: crate::telemetry::ShareSnapshot,
    /// Rejected and lost shares per reason, in `RejectReason::ALL` order.
    pub rejected: [u64; RejectReason::ALL.len()],
    /// Their pool difficulty per reason, same order.
    pub rejected_difficulty: [f64; RejectReason::ALL.len()],
    /// Share sent → the pool's verdict, over all its connections.
    pub submit_latency: HistogramSnapshot,
}

impl PoolManager {
    /// Starts one connection per configured pool.
    pub fn start(
        config: &Config,
        settings: ManagerSettings,
        shutdown: CancellationToken,
        tracker: TaskTracker,
    ) -> Arc<Self> {
        let pools: Vec<PoolEntry> = config
            .upstream
            .iter()
            .enumerate()
            .map(|(i, up)| {
                let params = ConnectionParams {
                    pool: i,
                    url: up.url.clone(),
                    user: up.user.clone(),
                    password: up.password.clone(),
                    identity: config.aggregation.worker_identity,
                    max_line_bytes: 1 << 20,
                    connect_timeout: Duration::from_secs_f64(
                        config.failover.pool_connect_timeout_secs,
                    ),
                    max_backoff: Duration::from_secs_f64(config.failover.pool_max_backoff_secs),
                    submit_timeout: Duration::from_secs_f64(
                        config.failover.pool_submit_timeout_secs,
                    ),
                    write_timeout: Duration::from_secs_f64(config.failover.pool_write_timeout_secs),
                    prefix_bytes: usize::from(config.aggregation.proxy_extranonce2_bytes),
                };
                PoolEntry {
                    params,
                    priority: up.priority,
                    weight: up.weight,
                    conns: Vec::new(),
                }
            })
            .collect();
        let router = Router::new(
            config.upstream.iter().map(|u| (u.priority, u.weight)),
            settings.failback_after,
        )
        .with_horizon(settings.rebalance_every * HORIZON_REBALANCES);
        let credited_seen = vec![0.0; pools.len()];
        let manager = Arc::new(PoolManager {
            inner: Mutex::new(Inner {
                router,
                pools,
                miners: BTreeMap::new(),
                credited_seen,
                last_rebalance: Instant::now(),
            }),
            settings,
            prefix_bytes: usize::from(config.aggregation.proxy_extranonce2_bytes),
            max_miners: config.aggregation.max_miners_per_upstream,
            shutdown,
            tracker,
        });
        {
            let mut inner = manager.lock();
            for pool in 0..inner.pools.len() {
                manager.open_connection(&mut inner, pool);
            }
        }
        manager
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // A panic while holding the lock cannot leave `Inner` half-updated in a way that
        // matters more than stopping the proxy would; keep serving.
        self.inner
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn open_connection(&self, inner: &mut Inner, pool: PoolId) -> usize {
        let Some(entry) = inner.pools.get_mut(pool) else {
            return 0;
        };
        let handle = connection::spawn(
            entry.params.clone(),
            self.shutdown.child_token(),
            &self.tracker,
        );
        entry.conns.push(ConnEntry {
            handle,
            alloc: PrefixAllocator::new(self.prefix_bytes, self.max_miners),
        });
        info!(
            pool,
            connections = entry.conns.len(),
            "opened upstream connection"
        );
        entry.conns.len() - 1
    }

    /// Finds a place for a new miner; `None` when no pool is usable right now.
    pub fn assign(
        &self,
        id: ConnId,
        control: MailboxSender,
        shared: Arc<MinerShared>,
    ) -> Option<Assignment> {
        let mut inner = self.lock();
        inner.router.update(Instant::now());
        let (loads, average) = pool_loads(&inner);
        let pool = inner.router.pick(&loads, average)?;
        let (conn, slot) = self.allocate(&mut inner, pool)?;
        let assignment = self.assignment(&inner, pool, conn, slot)?;
        shared.set_pool(pool);
        inner.miners.insert(
            id,
            MinerEntry {
                pool,
                conn,
                slot,
                control,
                shared,
                credited: 0.0,
                hashrate: 0.0,
                joined: Instant::now(),
            },
        );
        Some(assignment)
    }

    /// Forgets a miner and frees its prefix.
    pub fn release(&self, id: ConnId) {
        let mut inner = self.lock();
        if let Some(m) = inner.miners.remove(&id) {
            if let Some(c) = inner
                .pools
                .get_mut(m.pool)
                .and_then(|p| p.conns.get_mut(m.conn))
            {
                c.alloc.release(m.slot);
            }
        }
    }

    fn allocate(&self, inner: &mut Inner, pool: PoolId) -> Option<(usize, u32)> {
        let entry = inner.pools.get_mut(pool)?;
        // Prefer a connection that is up; open another when all are full.
        let mut order: Vec<usize> = (0..entry.conns.len()).collect();
        order.sort_by_key(|&i| *entry.conns[i].handle.status.borrow() != ConnStatus::Up);
        for i in order {
            if let Some(slot) = entry.conns[i].alloc.allocate() {
                return Some((i, slot));
            }
        }
        let conn = self.open_connection(inner, pool);
        let slot = inner
            .pools
            .get_mut(pool)?
            .conns
            .get_mut(conn)?
            .alloc
            .allocate()?;
        Some((conn, slot))
    }

    fn assignment(
        &self,
        inner: &Inner,
        pool: PoolId,
        conn: usize,
        slot: u32,
    ) -> Option<Assignment> {
        let c = inner.pools.get(pool)?.conns.get(conn)?;
        Some(Assignment {
            pool,
            conn: c.handle.clone(),
            slot,
            prefix_bytes: self.prefix_bytes,
        })
    }

    /// Pools as operators see them.
    pub fn pools(&self) -> Vec<PoolSnapshot> {
        let inner = self.lock();
        // One pass over the miners, not one per pool.
        let mut miners = vec![0usize; inner.pools.len()];
        for m in inner.miners.values() {
            if let Some(n) = miners.get_mut(m.pool) {
                *n = n.saturating_add(1);
            }
        }
        inner
            .pools
            .iter()
            .enumerate()
            .map(|(i, p)| {
                let mut shares = crate::telemetry::ShareSnapshot::default();
                let mut rejected = [0; RejectReason::ALL.len()];
                let mut rejected_difficulty = [0.0; RejectReason::ALL.len()];
                let mut submit_latency = HistogramSnapshot::empty(LATENCY_BUCKETS);
                for c in &p.conns {
                    let s = c.handle.counters.snapshot();
                    shares.accepted += s.accepted;
                    shares.rejected += s.rejected;
                    shares.lost += s.lost;
                    shares.accepted_difficulty += s.accepted_difficulty;
                    shares.blocks += s.blocks;
                    for (i, r) in RejectReason::ALL.iter().enumerate() {
                        rejected[i] += c.handle.counters.reasons.get(*r);
                        rejected_difficulty[i] += c.handle.counters.rejected_difficulty.get(*r);
                    }
                    submit_latency.merge(&c.handle.submit_latency.snapshot());
                }
                PoolSnapshot {
                    pool: i,
                    url: p.params.url.to_string(),
                    priority: p.priority,
                    weight: p.weight,
                    active: inner.router.is_active(i),
                    up: p
                        .conns
                        .iter()
                        .any(|c| *c.handle.status.borrow() == ConnStatus::Up),
                    connections: p.conns.len(),
                    miners: miners.get(i).copied().unwrap_or(0),
                    shares,
                    rejected,
                    rejected_difficulty,
                    submit_latency,
                }
            })
            .collect()
    }

    /// Pool URLs, in config order (what the rig inventory needs of the pools).
    pub fn pool_urls(&self) -> Vec<String> {
        self.lock()
            .pools
            .iter()
            .map(|p| p.params.url.to_string())
            .collect()
    }

    /// Every miner with the manager's view of it, for the control plane and metrics.
    ///
    /// Copied [`REPORT_CHUNK`] miners per hold of the lock, so a fleet of 10 000 never holds
    /// up connects or the health tick for the whole copy. Not one atomic snapshot: a miner
    /// that connects or leaves meanwhile may or may not be in it; each one in it is whole.
    pub fn miner_reports(&self) -> Vec<MinerReport> {
        let mut out = Vec::new();
        let mut after = None;
        while let Some(last) = self.report_chunk(after, &mut out) {
            after = Some(last);
        }
        out
    }

    /// Appends up to [`REPORT_CHUNK`] miners with ids above `after` (all of them from the
    /// first when `None`) under one hold of the lock; returns the last id when there may be
    /// more.
    fn report_chunk(&self, after: Option<ConnId>, out: &mut Vec<MinerReport>) -> Option<ConnId> {
        // Room first: growing the vector under the lock would copy every report so far.
        out.reserve(REPORT_CHUNK);
        let from = after.map_or(Bound::Unbounded, Bound::Excluded);
        let inner = self.lock();
        let mut copied = 0;
        let mut last = None;
        for (&id, m) in inner
            .miners
            .range((from, Bound::Unbounded))
            .take(REPORT_CHUNK)
        {
            out.push(MinerReport {
                shared: m.shared.clone(),
                pool: m.pool,
                hashrate: m.hashrate,
            });
            copied += 1;
            last = Some(id);
        }
        if copied < REPORT_CHUNK { None } else { last }
    }

    /// Disconnects a miner (SV2: its whole connection). False if it is gone.
    pub fn kick(&self, id: ConnId) -> bool {
        self.lock()
            .miners
            .get(&id)
            .is_some_and(|m| m.control.send(Control::Kick).is_ok())
    }

    /// Miners' shared state, for reports.
    pub fn miners(&self) -> Vec<Arc<MinerShared>> {
        self.lock()
            .miners
            .values()
            .map(|m| m.shared.clone())
            .collect()
    }

    /// Watches health and moves miners until shutdown.
    pub async fn run(self: Arc<Self>) {
        let mut tick = tokio::time::interval(Duration::from_millis(250));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut last = Instant::now();
        loop {
            tokio::select! {
                _ = self.shutdown.cancelled() => break,
                _ = tick.tick() => {}
            }
            let now = Instant::now();
            let dt = now.duration_since(last).as_secs_f64();
            last = now;
            self.tick(now, dt);
        }
    }

    fn tick(&self, now: Instant, dt: f64) {
        let mut inner = self.lock();
        let inner = &mut *inner;
        for (i, p) in inner.pools.iter().enumerate() {
            let healthy = p.conns.iter().any(|c| {
                let up = *c.handle.status.borrow() == ConnStatus::Up;
                let fresh = c.handle.work.borrow().job.as_ref().is_some_and(|j| {
                    now.saturating_duration_since(j.received_at) < self.settings.no_work_timeout
                });
                up && fresh
            });
            let was = inner.router.is_active(i)
                || matches!(inner.router.health(i), Some(super::router::Health::Up(_)));
            if was && !healthy {
                warn!(pool = i, "pool unhealthy (down or no work)");
            }
            inner.router.set_health(i, healthy, now);
        }
        let before = inner.router.active().collect::<Vec<_>>();
        inner.router.update(now);
        let after = inner.router.active().collect::<Vec<_>>();
        if before != after {
            info!(?before, ?after, "active pools changed");
        }
        // The split is judged on what the pools accepted (their verdicts on every connection),
        // which is what they pay for; not on what the proxy accepted from miners.
        for (i, p) in inner.pools.iter().enumerate() {
            let total: f64 = p
                .conns
                .iter()
                .map(|c| c.handle.counters.accepted_difficulty.get())
                .sum();
            if let Some(seen) = inner.credited_seen.get_mut(i) {
                let delta = (total - *seen).max(0.0);
                *seen = total;
                inner.router.credit(i, delta * HASHES_PER_DIFFICULTY);
            }
        }
        // Hashrate estimates from the difficulty each miner got accepted: the running mean
        // since it joined, then an EWMA over `ESTIMATE_WINDOW`. A plain EWMA would start from
        // one tick's luck and take minutes to forget it.
        for m in inner.miners.values_mut() {
            let total = m.shared.counters.accepted_difficulty.get();
            let delta = (total - m.credited).max(0.0);
            m.credited = total;
            if dt > 0.0 {
                let rate = delta * HASHES_PER_DIFFICULTY / dt;
                let age = now.saturating_duration_since(m.joined).as_secs_f64();
                let alpha = (dt / age.clamp(dt, ESTIMATE_WINDOW)).clamp(0.0, 1.0);
                m.hashrate += alpha * (rate - m.hashrate);
            }
        }
        publish_connection_hashrates(inner);
        let weighted_due =
            now.duration_since(inner.last_rebalance) >= self.settings.rebalance_every;
        let loads: Vec<MinerLoad<ConnId>> = inner
            .miners
            .iter()
            .map(|(&key, m)| MinerLoad {
                key,
                pool: m.pool,
                hashrate: m.hashrate,
                movable: m.shared.is_movable(),
            })
            .collect();
        let mut moves = inner.router.rebalance(&loads);
        if !weighted_due {
            // Between rebalance rounds only failover moves (off inactive pools) are made.
            moves.retain(|(key, _)| {
                inner
                    .miners
                    .get(key)
                    .is_some_and(|m| !inner.router.is_active(m.pool))
            });
        } else {
            inner.last_rebalance = now;
        }
        for (key, to) in moves {
            self.move_miner(inner, key, to);
        }
    }

    fn move_miner(&self, inner: &mut Inner, key: ConnId, to: PoolId) {
        let Some((conn, slot)) = self.allocate(inner, to) else {
            return;
        };
        let Some(assignment) = self.assignment(inner, to, conn, slot) else {
            return;
        };
        let Some(m) = inner.miners.get_mut(&key) else {
            return;
        };
        if m.control.send(Control::Reassign(assignment)).is_err() {
            // The session is gone or stuck; give the slot back and leave it be.
            if let Some(c) = inner.pools.get_mut(to).and_then(|p| p.conns.get_mut(conn)) {
                c.alloc.release(slot);
            }
            return;
        }
        let (old_pool, old_conn, old_slot) = (m.pool, m.conn, m.slot);
        m.pool = to;
        m.conn = conn;
        m.slot = slot;
        m.shared.set_pool(to);
        if let Some(c) = inner
            .pools
            .get_mut(old_pool)
            .and_then(|p| p.conns.get_mut(old_conn))
        {
            c.alloc.release(old_slot);
        }
    }
}

/// Tells every connection the summed hashrate estimate of the miners on it (SV2 connections
/// announce it to their pool).
fn publish_connection_hashrates(inner: &Inner) {
    let mut sums: HashMap<(PoolId, usize), f64> = HashMap::new();
    for m in inner.miners.values() {
        *sums.entry((m.pool, m.conn)).or_default() += m.hashrate;
    }
    for (i, p) in inner.pools.iter().enumerate() {
        for (j, c) in p.conns.iter().enumerate() {
            c.handle
                .hashrate
                .set(sums.get(&(i, j)).copied().unwrap_or(0.0));
        }
    }
}

/// Hashrate per pool, and the hashrate assumed for a miner without an estimate yet.
///
/// New miners have no estimate; they count as an average miner so that a burst of connects
/// is spread by weight instead of all landing on one pool.
fn pool_loads(inner: &Inner) -> (Vec<f64>, f64) {
    let known: Vec<f64> = inner
        .miners
        .values()
        .map(|m| m.hashrate)
        .filter(|h| *h > 0.0)
        .collect();
    let average = if known.is_empty() {
        1.0
    } else {
        known.iter().sum::<f64>() / known.len() as f64
    };
    let mut loads = vec![0.0; inner.pools.len()];
    for m in inner.miners.values() {
        if let Some(l) = loads.get_mut(m.pool) {
            *l += if m.hashrate > 0.0 {
                m.hashrate
            } else {
                average
            };
        }
    }
    (loads, average)
}

#[cfg(test)]
mod tests {
    use std::net::SocketAddr;

    use super::*;

    /// A manager with two (unreachable) pools and `n` registered miners, as sessions would
    /// leave them.
    fn fleet(n: u64) -> Arc<PoolManager> {
        let config = Config::from_toml(
            "[[downstream]]\nprotocol = \"sv1\"\nlisten = \"127.0.0.1:0\"\n\
             [[upstream]]\nurl = \"stratum+tcp://127.0.0.1:9\"\nuser = \"farm\"\n\
             [[upstream]]\nurl = \"stratum+tcp://127.0.0.1:9\"\nuser = \"backup\"\n",
        )
        .expect("config");
        let manager = PoolManager::start(
            &config,
            ManagerSettings::from_config(&config),
            CancellationToken::new(),
            TaskTracker::new(),
        );
        {
            let mut inner = manager.lock();
            for id in 0..n {
                let peer = SocketAddr::from(([10, 0, (id >> 8) as u8, id as u8], 4028));
                let shared = Arc::new(MinerShared::new(id, peer));
                shared.set_worker(&format!("rig{id}"));
                let (control, _mailbox) = crate::downstream::mailbox::mailbox();
                let pool = usize::try_from(id % 2).unwrap_or(0);
                inner.miners.insert(
                    id,
                    MinerEntry {
                        pool,
                        conn: 0,
                        slot: 0,
                        control,
                        shared,
                        credited: 0.0,
                        hashrate: 1e12,
                        joined: Instant::now(),
                    },
                );
            }
        }
        manager
    }

    #[tokio::test]
    async fn reports_have_every_miner_once_whatever_the_count() {
        for n in [0, 1, 255, 256, 257, 512, 1000] {
            let ids: Vec<ConnId> = fleet(n)
                .miner_reports()
                .iter()
                .map(|r| r.shared.id)
                .collect();
            assert_eq!(ids, (0..n).collect::<Vec<_>>(), "{n} miners");
        }
    }

    /// Median, 99th percentile and longest, as one line.
    fn spread(mut v: Vec<Duration>) -> String {
        v.sort();
        let at = |q: f64| v[((v.len() - 1) as f64 * q) as usize];
        format!(
            "median {:?}, p99 {:?}, max {:?}",
            at(0.5),
            at(0.99),
            at(1.0)
        )
    }

    /// Not a timed assertion: prints the longest time building the rig inventory holds the
    /// manager's lock with 10 000 miners (`cargo test --release --lib inventory_lock_hold --
    /// --nocapture`). Each `report_chunk` call is one hold of the lock.
    #[tokio::test]
    async fn inventory_lock_hold_with_10k_miners() {
        let manager = fleet(10_000);
        let mut chunks = Vec::new();
        let mut whole_copy = Vec::new();
        let mut urls = Vec::new();
        let mut pools = Vec::new();
        let mut outside = Vec::new();
        for _ in 0..20 {
            let started = Instant::now();
            let mut reports = Vec::new();
            let mut after = None;
            loop {
                let t = Instant::now();
                let next = manager.report_chunk(after, &mut reports);
                chunks.push(t.elapsed());
                match next {
                    Some(last) => after = Some(last),
                    None => break,
                }
            }
            whole_copy.push(started.elapsed());
            assert_eq!(reports.len(), 10_000);
            let t = Instant::now();
            let u = manager.pool_urls();
            urls.push(t.elapsed());
            let t = Instant::now();
            let p = manager.pools();
            pools.push(t.elapsed());
            assert_eq!(p.iter().map(|p| p.miners).sum::<usize>(), 10_000);
            let t = Instant::now();
            let rigs = crate::control::inventory::rigs(&reports, &u, None, 0);
            outside.push(t.elapsed());
            assert_eq!(rigs.len(), 10_000);
        }
        println!(
            "miner_reports: one lock hold ({REPORT_CHUNK} miners): {}",
            spread(chunks)
        );
        println!(
            "miner_reports: whole copy, lock released between holds: {}",
            spread(whole_copy)
        );
        println!("pool_urls: one lock hold: {}", spread(urls));
        println!(
            "pools (metrics, /api/pools): one lock hold: {}",
            spread(pools)
        );
        println!("inventory, outside the lock: {}", spread(outside));
        // For comparison, not changed here: the health tick holds the lock over every miner.
        let mut ticks = Vec::new();
        for _ in 0..20 {
            let t = Instant::now();
            manager.tick(Instant::now(), 0.25);
            ticks.push(t.elapsed());
        }
        println!("health tick: one lock hold: {}", spread(ticks));
    }
}
