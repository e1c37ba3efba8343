//! Which pool each miner mines for: failover by priority, split by weight.
//!
//! A sans-IO policy object. The pool manager feeds it pool health and credited work and asks
//! it where a new miner goes ([`Router::pick`]) and which miners to move ([`Router::rebalance`]).
//!
//! * **Failover.** The *active tier* is the lowest `priority` value with a healthy pool. A miner
//!   on a pool outside the active tier is moved. A higher-priority pool that comes back is used
//!   again only after it has been healthy for `failback_after`, so a flapping pool does not drag
//!   the farm back and forth.
//! * **Weighted split by hashrate.** Inside the active tier, work is split by `weight`. Miners
//!   are whole units, so a split by miner count would be off by up to one rig's hashrate; the
//!   router instead integrates the error: it compares each pool's share of *credited
//!   difficulty* since the tier became active with its weight, and skews each pool's target
//!   hashrate by that error, so over minutes the accepted difficulty converges on the weights
//!   even when rigs differ tenfold in size.

use std::time::{Duration, Instant};

/// Index of a pool in the configuration's `[[upstream]]` list.
pub type PoolId = usize;

/// Health of one pool as the manager sees it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Health {
    /// Not usable (connecting, dead, or not sending work).
    Down,
    /// Delivering work since the instant given.
    Up(Instant),
}

#[derive(Clone, Debug)]
struct Pool {
    priority: u32,
    weight: f64,
    health: Health,
    credited: f64,
}

/// A miner as the router sees it.
#[derive(Clone, Copy, Debug)]
pub struct MinerLoad<K> {
    /// The caller's key for the miner.
    pub key: K,
    /// Pool it mines for now.
    pub pool: PoolId,
    /// Estimated hashrate (H/s); any consistent unit works.
    pub hashrate: f64,
    /// Whether it can be moved without a disconnect (subscribed to extranonce changes).
    pub movable: bool,
}

/// The failover and split policy.
#[derive(Debug)]
pub struct Router {
    pools: Vec<Pool>,
    failback_after: Duration,
    tier: Option<u32>,
}

/// Largest skew the integral term applies to a pool's target share.
const MAX_SKEW: f64 = 0.15;

impl Router {
    /// A router for pools given as `(priority, weight)`, all down at first.
    pub fn new(pools: impl IntoIterator<Item = (u32, u32)>, failback_after: Duration) -> Self {
        Router {
            pools: pools
                .into_iter()
                .map(|(priority, weight)| Pool {
                    priority,
                    weight: f64::from(weight.max(1)),
                    health: Health::Down,
                    credited: 0.0,
                })
                .collect(),
            failback_after,
            tier: None,
        }
    }

    /// Records a pool's health.
    pub fn set_health(&mut self, pool: PoolId, up: bool, now: Instant) {
        if let Some(p) = self.pools.get_mut(pool) {
            p.health = match (up, p.health) {
                (true, Health::Up(since)) => Health::Up(since),
                (true, Health::Down) => Health::Up(now),
                (false, _) => Health::Down,
            };
        }
    }

    /// Health of a pool.
    pub fn health(&self, pool: PoolId) -> Option<Health> {
        self.pools.get(pool).map(|p| p.health)
    }

    /// Credits accepted difficulty to a pool (for the weighted split).
    pub fn credit(&mut self, pool: PoolId, difficulty: f64) {
        if let Some(p) = self.pools.get_mut(pool) {
            if difficulty.is_finite() && difficulty > 0.0 {
                p.credited += difficulty;
            }
        }
    }

    /// Re-evaluates the active tier; returns it. Call before `pick`/`rebalance`.
    pub fn update(&mut self, now: Instant) -> Option<u32> {
        let healthy_tier = |min_age: Duration| {
            self.pools
                .iter()
                .filter(|p| matches!(p.health, Health::Up(since) if now.saturating_duration_since(since) >= min_age))
                .map(|p| p.priority)
                .min()
        };
        let current_still_up = self.tier.filter(|&t| {
            self.pools
                .iter()
                .any(|p| p.priority == t && matches!(p.health, Health::Up(_)))
        });
        let better = healthy_tier(self.failback_after);
        let next = match (current_still_up, better) {
            (Some(cur), Some(b)) => Some(cur.min(b)),
            (Some(cur), None) => Some(cur),
            // The current tier is gone (or there was none): take any healthy tier at once.
            (None, _) => healthy_tier(Duration::ZERO),
        };
        if next != self.tier {
            self.tier = next;
            for p in &mut self.pools {
                p.credited = 0.0;
            }
        }
        self.tier
    }

    /// Pools of the active tier that are up.
    pub fn active(&self) -> impl Iterator<Item = PoolId> + '_ {
        self.pools
            .iter()
            .enumerate()
            .filter(move |(_, p)| {
                Some(p.priority) == self.tier && matches!(p.health, Health::Up(_))
            })
            .map(|(i, _)| i)
    }

    /// Whether a pool is one miners should be on.
    pub fn is_active(&self, pool: PoolId) -> bool {
        self.active().any(|p| p == pool)
    }

    /// Target share (0..1) of the active tier's work for each active pool, skewed by the
    /// integral of past error.
    fn targets(&self) -> Vec<(PoolId, f64)> {
        let active: Vec<PoolId> = self.active().collect();
        let total_weight: f64 = active.iter().map(|&i| self.pools[i].weight).sum();
        let total_credit: f64 = active.iter().map(|&i| self.pools[i].credited).sum();
        let raw: Vec<(PoolId, f64)> = active
            .iter()
            .map(|&i| {
                let want = self.pools[i].weight / total_weight;
                let got = if total_credit > 0.0 {
                    self.pools[i].credited / total_credit
                } else {
                    want
                };
                (i, (want + (want - got).clamp(-MAX_SKEW, MAX_SKEW)).max(0.0))
            })
            .collect();
        let norm: f64 = raw.iter().map(|(_, t)| t).sum();
        raw.into_iter()
            .map(|(i, t)| (i, if norm > 0.0 { t / norm } else { 0.0 }))
            .collect()
    }

    /// The pool a new miner of `hashrate` should join, given current per-pool hashrates.
    pub fn pick(&self, loads: &[f64], hashrate: f64) -> Option<PoolId> {
        let total: f64 = self
            .active()
            .map(|i| loads.get(i).copied().unwrap_or(0.0))
            .sum::<f64>()
            + hashrate;
        self.targets()
            .into_iter()
            .map(|(i, share)| (i, share * total - loads.get(i).copied().unwrap_or(0.0)))
            .max_by(|a, b| a.1.total_cmp(&b.1))
            .map(|(i, _)| i)
    }

    /// Moves to make now: every miner off the active tier, then at most one miner per call
    /// from the most over-served pool to the most under-served one, if that reduces the error.
    pub fn rebalance<K: Copy>(&self, miners: &[MinerLoad<K>]) -> Vec<(K, PoolId)> {
        let mut loads = vec![0.0; self.pools.len()];
        for m in miners.iter().filter(|m| self.is_active(m.pool)) {
            if let Some(l) = loads.get_mut(m.pool) {
                *l += m.hashrate;
            }
        }
        let mut moves = Vec::new();
        for m in miners.iter().filter(|m| !self.is_active(m.pool)) {
            if let Some(to) = self.pick(&loads, m.hashrate) {
                loads[to] += m.hashrate;
                moves.push((m.key, to));
            }
        }
        let total: f64 = loads.iter().sum();
        let gaps: Vec<(PoolId, f64)> = self
            .targets()
            .into_iter()
            .map(|(i, share)| (i, loads[i] - share * total))
            .collect();
        let over = gaps.iter().copied().max_by(|a, b| a.1.total_cmp(&b.1));
        let under = gaps.iter().copied().min_by(|a, b| a.1.total_cmp(&b.1));
        if let (Some((from, excess)), Some((to, _))) = (over, under) {
            if from != to && excess > 0.0 {
                // Moving h changes the error from `excess` to `|excess - h|` on both sides: pick
                // the movable miner that leaves the smallest error, if it is an improvement.
                let best = miners
                    .iter()
                    .filter(|m| m.pool == from && m.movable && m.hashrate > 0.0)
                    .map(|m| (m, (excess - m.hashrate).abs()))
                    .min_by(|a, b| a.1.total_cmp(&b.1));
                if let Some((m, err)) = best {
                    if err < excess {
                        moves.push((m.key, to));
                    }
                }
            }
        }
        moves
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fails_over_and_back_after_hold() {
        let t0 = Instant::now();
        let mut r = Router::new([(0, 1), (1, 1)], Duration::from_secs(10));
        r.set_health(0, true, t0);
        r.set_health(1, true, t0);
        assert_eq!(r.update(t0), Some(0));
        r.set_health(0, false, t0);
        assert_eq!(r.update(t0), Some(1), "failover is immediate");
        let miners = [MinerLoad {
            key: 'a',
            pool: 0,
            hashrate: 1.0,
            movable: true,
        }];
        assert_eq!(r.rebalance(&miners), vec![('a', 1)]);
        r.set_health(0, true, t0 + Duration::from_secs(1));
        assert_eq!(
            r.update(t0 + Duration::from_secs(5)),
            Some(1),
            "not before the hold"
        );
        assert_eq!(
            r.update(t0 + Duration::from_secs(11)),
            Some(0),
            "failback after the hold"
        );
        r.set_health(0, false, t0);
        r.set_health(1, false, t0);
        assert_eq!(r.update(t0), None);
        assert_eq!(r.pick(&[0.0, 0.0], 1.0), None);
    }

    #[test]
    fn weighted_split_by_hashrate_converges() {
        // 25 rigs from 10 to 190 units; 70/30 split; simulate credited work per tick.
        let t0 = Instant::now();
        let mut r = Router::new([(0, 70), (0, 30)], Duration::from_secs(10));
        r.set_health(0, true, t0);
        r.set_health(1, true, t0);
        r.update(t0);
        let mut miners: Vec<MinerLoad<usize>> = Vec::new();
        let mut loads = vec![0.0, 0.0];
        for k in 0..25 {
            let h = 10.0 + ((k * 37) % 19) as f64 * 10.0;
            let pool = r.pick(&loads, h).unwrap();
            loads[pool] += h;
            miners.push(MinerLoad {
                key: k,
                pool,
                hashrate: h,
                movable: true,
            });
        }
        for _tick in 0..600 {
            for m in &miners {
                r.credit(m.pool, m.hashrate);
            }
            for (k, to) in r.rebalance(&miners) {
                miners[k].pool = to;
            }
        }
        let total = r.pools[0].credited + r.pools[1].credited;
        let share = r.pools[0].credited / total;
        assert!((share - 0.70).abs() < 0.005, "pool 0 got {share}");
    }
}
