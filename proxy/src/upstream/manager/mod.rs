//! The pool manager: which upstream connection each miner is on.
//!
//! It owns the pool connections (one per pool from the start, so every backup is a hot
//! standby; more per pool as miners fill them), the extranonce prefix allocators, and the
//! [`Router`] policy. Sessions reach it only through the [`Pools`] trait (`assign` and
//! `release`); a ticker task ([`PoolManager::run`], in `health.rs`) watches pool health and
//! moves miners by sending them [`Control::Reassign`]. Reports for operators and metrics are
//! in `report.rs`.
//!
//! State sits behind one `std::sync::Mutex`: every critical section is short and never
//! awaits (sends to sessions use `try_send`), so a blocking mutex is both correct and cheaper
//! than an async one. Reports over the whole fleet ([`PoolManager::miner_reports`]) take it
//! once per [`REPORT_CHUNK`] miners, never for the whole fleet: the lock also serves every
//! connect, disconnect and the health tick.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::info;

use super::connection::{self, ConnStatus, ConnectionHandle, ConnectionParams};
use super::prefix::PrefixAllocator;
use super::router::Router;
use crate::config::Config;
use crate::pool_link::mailbox::MailboxSender;
use crate::pool_link::miner::MinerShared;
use crate::pool_link::{Assignment, ConnId, Control, PoolConn, PoolId, Pools};

mod health;
mod report;

/// The split works off accumulated error over this many rebalance intervals (its horizon).
const HORIZON_REBALANCES: u32 = 10;
/// Seconds of history in a miner's hashrate estimate, once it has that much.
const ESTIMATE_WINDOW: f64 = 60.0;
/// Miners copied per hold of the lock by [`PoolManager::miner_reports`] (a few µs of work).
pub const REPORT_CHUNK: usize = 256;

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
                    min_backoff: Duration::from_secs_f64(config.failover.pool_min_backoff_secs),
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
            conn: PoolConn {
                work: c.handle.work.clone(),
                submit: c.handle.submit.clone(),
            },
            slot,
            prefix_bytes: self.prefix_bytes,
        })
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
}

/// Sessions reach the manager only through this: a place and giving it back.
impl Pools for PoolManager {
    fn assign(
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

    fn release(&self, id: ConnId) {
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
mod tests;
