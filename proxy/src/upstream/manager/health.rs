//! The pool manager's ticker: pool health, failover and failback, hashrate estimates and the
//! weighted split's moves, once every 250 ms.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tracing::{info, warn};

use super::{ESTIMATE_WINDOW, Inner, PoolManager};
use crate::pool_link::{ConnId, Control, PoolId};
use crate::upstream::connection::ConnStatus;
use crate::upstream::router::{HASHES_PER_DIFFICULTY, Health, MinerLoad};

impl PoolManager {
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

    pub(super) fn tick(&self, now: Instant, dt: f64) {
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
            let was =
                inner.router.is_active(i) || matches!(inner.router.health(i), Some(Health::Up(_)));
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
