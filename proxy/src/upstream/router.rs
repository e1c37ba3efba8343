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
//!   are whole units of very different sizes, so a split by miner count (or even by estimated
//!   hashrate alone) misses the weights by up to a rig's share of the farm, and hashrate
//!   estimates are noisy and biased. The router is therefore a PI controller on the work the
//!   pools actually credited since the tier became active:
//!   - the *integral* term is each pool's accumulated error `credited − share × total` (in
//!     work units, i.e. difficulty × 2³²: hashes);
//!   - the *proportional* term is each pool's load error `load − share × total load` (H/s);
//!   - their sum over a [`Router::with_horizon`] (`error + load error × horizon`) is the error
//!     the pool would have if nothing changed for that long. [`Router::rebalance`] makes the
//!     single move, from the most over-served pool to the most under-served one, of the
//!     movable miner whose hashrate best cancels that projected error, and only if the move
//!     reduces it. Accumulated error is thus worked off over about one horizon whatever its
//!     cause (luck, biased estimates, miners that cannot be moved), and the cumulative split
//!     converges on the weights.
//!
//!   The integral term is clamped to what half the tier's hashrate can work off in one
//!   horizon, so an error that cannot be corrected for a while (e.g. every movable miner
//!   already moved) does not wind up into a long overshoot.

use std::time::{Duration, Instant};

use crate::pool_link::PoolId;

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
    horizon: Duration,
    tier: Option<u32>,
}

/// Default time over which the split works off accumulated error.
pub const DEFAULT_HORIZON: Duration = Duration::from_secs(60);

/// Hashes per unit of share difficulty: credited difficulty × this = work in hashes.
pub const HASHES_PER_DIFFICULTY: f64 = 4_294_967_296.0;

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
            horizon: DEFAULT_HORIZON,
            tier: None,
        }
    }

    /// Sets the time over which accumulated split error is worked off (see the module docs).
    /// Several rebalance intervals long, so that one move per interval can keep up.
    pub fn with_horizon(mut self, horizon: Duration) -> Self {
        self.horizon = horizon.max(Duration::from_millis(1));
        self
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

    /// Credits work a pool accepted, in the unit of [`MinerLoad::hashrate`] × seconds (with
    /// hashrates in H/s: hashes, i.e. difficulty × [`HASHES_PER_DIFFICULTY`]).
    pub fn credit(&mut self, pool: PoolId, work: f64) {
        if let Some(p) = self.pools.get_mut(pool) {
            if work.is_finite() && work > 0.0 {
                p.credited += work;
            }
        }
    }

    /// Work credited to a pool since its tier became active.
    pub fn credited(&self, pool: PoolId) -> f64 {
        self.pools.get(pool).map_or(0.0, |p| p.credited)
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

    /// Each active pool's projected over-service (negative: under-service) in work units if
    /// the per-pool `loads` stayed as they are for one horizon: the accumulated error (the
    /// integral term, clamped against windup) plus the load error times the horizon.
    fn projected(&self, loads: &[f64]) -> Vec<(PoolId, f64)> {
        let active: Vec<PoolId> = self.active().collect();
        let load = |i: PoolId| loads.get(i).copied().unwrap_or(0.0);
        let total_weight: f64 = active.iter().map(|&i| self.pools[i].weight).sum();
        let total_credit: f64 = active.iter().map(|&i| self.pools[i].credited).sum();
        let total_load: f64 = active.iter().map(|&i| load(i)).sum();
        let horizon = self.horizon.as_secs_f64();
        let cap = 0.5 * total_load * horizon;
        active
            .iter()
            .map(|&i| {
                let share = self.pools[i].weight / total_weight;
                let accumulated = (self.pools[i].credited - share * total_credit).clamp(-cap, cap);
                (i, accumulated + (load(i) - share * total_load) * horizon)
            })
            .collect()
    }

    /// Sum of the absolute projected errors: what a placement costs.
    fn cost(&self, loads: &[f64]) -> f64 {
        self.projected(loads).iter().map(|(_, e)| e.abs()).sum()
    }

    /// The pool a new miner of `hashrate` should join, given current per-pool hashrates: the
    /// one that leaves the smallest projected error.
    pub fn pick(&self, loads: &[f64], hashrate: f64) -> Option<PoolId> {
        let mut trial = loads.to_vec();
        if trial.len() < self.pools.len() {
            trial.resize(self.pools.len(), 0.0);
        }
        self.active()
            .map(|i| {
                trial[i] += hashrate;
                let cost = self.cost(&trial);
                trial[i] -= hashrate;
                (i, cost)
            })
            .min_by(|a, b| a.1.total_cmp(&b.1))
            .map(|(i, _)| i)
    }

    /// Moves to make now: every miner off the active tier, then at most one miner per call
    /// from the most over-served pool to the most under-served one, if that reduces the
    /// projected error (see the module docs).
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
        let projected = self.projected(&loads);
        let over = projected.iter().copied().max_by(|a, b| a.1.total_cmp(&b.1));
        let under = projected.iter().copied().min_by(|a, b| a.1.total_cmp(&b.1));
        let (Some((from, excess)), Some((to, deficit))) = (over, under) else {
            return moves;
        };
        if from == to || excess <= 0.0 {
            return moves;
        }
        // Moving a miner of hashrate h shifts h × horizon of projected work from `from` to
        // `to`; take the one that leaves the least error on the two, if that is less than now.
        let horizon = self.horizon.as_secs_f64();
        let now_cost = excess.abs() + deficit.abs();
        let best = miners
            .iter()
            .filter(|m| m.pool == from && m.movable && m.hashrate > 0.0)
            .map(|m| {
                let shift = m.hashrate * horizon;
                (m, (excess - shift).abs() + (deficit + shift).abs())
            })
            .min_by(|a, b| a.1.total_cmp(&b.1));
        if let Some((m, cost)) = best {
            if cost < now_cost {
                moves.push((m.key, to));
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

    fn miner(key: usize, pool: PoolId, hashrate: f64) -> MinerLoad<usize> {
        MinerLoad {
            key,
            pool,
            hashrate,
            movable: true,
        }
    }

    fn split_router(horizon_secs: u64) -> Router {
        let t0 = Instant::now();
        let mut r = Router::new([(0, 70), (0, 30)], Duration::from_secs(10))
            .with_horizon(Duration::from_secs(horizon_secs));
        r.set_health(0, true, t0);
        r.set_health(1, true, t0);
        r.update(t0);
        r
    }

    fn share_of_pool0(r: &Router) -> f64 {
        r.credited(0) / (r.credited(0) + r.credited(1))
    }

    /// A deterministic stand-in for luck: uniform in [0, 1).
    fn lcg(state: &mut u64) -> f64 {
        *state = state
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        (*state >> 11) as f64 / (1u64 << 53) as f64
    }

    #[test]
    fn weighted_split_converges_despite_biased_estimates_and_luck() {
        // 25 rigs from 10 to 190 units, the router's estimates off by up to ±30% per rig,
        // and the credited work of each second off by up to ±50% (luck). One rebalance a
        // second, as the manager does with rebalance_every = 1 s.
        let mut r = split_router(20);
        let mut rng = 7u64;
        let mut miners: Vec<MinerLoad<usize>> = Vec::new();
        let mut truth = Vec::new();
        let mut loads = vec![0.0, 0.0];
        for k in 0..25 {
            let h = 10.0 + ((k * 37) % 19) as f64 * 10.0;
            let estimate = h * (0.7 + 0.6 * lcg(&mut rng));
            let pool = r.pick(&loads, estimate).unwrap();
            loads[pool] += estimate;
            miners.push(miner(k, pool, estimate));
            truth.push(h);
        }
        let mut moves = 0;
        for second in 1..=600 {
            for (m, h) in miners.iter().zip(&truth) {
                r.credit(m.pool, h * (0.5 + lcg(&mut rng)));
            }
            for (k, to) in r.rebalance(&miners) {
                miners[k].pool = to;
                moves += 1;
            }
            if second == 60 {
                let share = share_of_pool0(&r);
                assert!((share - 0.70).abs() < 0.02, "after 60 s pool 0 got {share}");
            }
        }
        let share = share_of_pool0(&r);
        assert!((share - 0.70).abs() < 0.005, "pool 0 got {share}");
        assert!(
            moves < 600,
            "{moves} moves: one per round at most, and not every round"
        );
    }

    #[test]
    fn new_miners_spread_by_weight() {
        let r = split_router(60);
        let mut loads = vec![0.0, 0.0];
        let mut count = [0, 0];
        for _ in 0..10 {
            let pool = r.pick(&loads, 1.0).unwrap();
            loads[pool] += 1.0;
            count[pool] += 1;
        }
        assert_eq!(count, [7, 3]);
    }

    #[test]
    fn a_balanced_farm_is_left_alone() {
        let mut r = split_router(60);
        let miners: Vec<_> = (0..10)
            .map(|k| miner(k, usize::from(k >= 7), 5.0))
            .collect();
        r.credit(0, 700.0);
        r.credit(1, 300.0);
        assert!(r.rebalance(&miners).is_empty());
    }

    #[test]
    fn accumulated_error_moves_a_miner_even_when_loads_match_the_weights() {
        // Loads are exactly 70/30, but pool 0 has been credited far more than its share (luck
        // or biased estimates): the integral term moves work to pool 1 to make up for it.
        let mut r = split_router(60);
        let mut miners: Vec<_> = (0..10)
            .map(|k| miner(k, usize::from(k >= 7), 5.0))
            .collect();
        miners[0].hashrate = 1.0; // the best fit for a small correction
        r.credit(0, 900.0);
        r.credit(1, 100.0);
        assert_eq!(r.rebalance(&miners), vec![(0, 1)]);
    }

    #[test]
    fn the_integral_term_is_clamped_against_windup() {
        // A huge accumulated error may not drain a pool: at most half the tier's hashrate is
        // set against it, so pool 0 keeps 70% − 50% = 20% of the load.
        let mut r = split_router(60);
        let mut miners: Vec<_> = (0..10)
            .map(|k| miner(k, usize::from(k >= 7), 5.0))
            .collect();
        r.credit(0, 1e15);
        r.credit(1, 1.0);
        for _ in 0..20 {
            for (k, to) in r.rebalance(&miners) {
                miners[k].pool = to;
            }
        }
        let on_pool0 = miners.iter().filter(|m| m.pool == 0).count();
        assert_eq!(on_pool0, 2);
    }

    #[test]
    fn the_split_never_moves_a_miner_that_cannot_take_a_new_extranonce() {
        let r = split_router(60);
        let miners: Vec<_> = (0..10)
            .map(|k| MinerLoad {
                movable: false,
                ..miner(k, 0, 5.0)
            })
            .collect();
        assert!(r.rebalance(&miners).is_empty());
    }
}
