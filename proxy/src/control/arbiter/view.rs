//! The arbiter as operators see it: each rig ([`RigView`]), how many rigs are in each state
//! ([`RigCounts`]) and the site's power picture ([`PowerSnapshot`], `ctl power`).

use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::types::{Curtailment, Operator, RigInfo, RigState, Watts};

/// A rig as operators see it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RigView {
    /// What the integrator last reported of it (group, power, efficiency).
    pub info: RigInfo,
    /// Its power state as the arbiter tracks it.
    pub state: RigState,
    /// The operator pin, if any (who/why).
    pub pinned: Option<Operator>,
    /// Whether its current command was escalated.
    pub escalated: bool,
    /// When its current command times out, if one is pending.
    pub deadline: Option<Duration>,
}

/// How many rigs are in each state.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RigCounts {
    /// Rigs mining.
    pub mining: usize,
    /// Rigs told to sleep, not confirmed yet.
    pub draining: usize,
    /// Rigs confirmed asleep.
    pub asleep: usize,
    /// Rigs told to wake, not confirmed yet.
    pub waking: usize,
    /// Rigs whose last command failed.
    pub fault: usize,
    /// Rigs whose state is not known (counted as drawing).
    pub unknown: usize,
    /// Pinned (any state).
    pub pinned: usize,
    /// Escalated and still unconfirmed.
    pub escalated: usize,
}

/// The power picture for operators (`ctl power`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PowerSnapshot {
    /// When (the last `now` seen).
    pub at: Duration,
    /// The configured site cap.
    pub site_cap: Watts,
    /// `min(site cap, curtailment cap)`.
    pub effective_cap: Watts,
    /// Reserved headroom.
    pub headroom: Watts,
    /// `effective_cap - headroom`: what mining + GPU grant must stay under.
    pub budget: Watts,
    /// Mining power counted as drawn (every rig not confirmed asleep).
    pub mining: Watts,
    /// Part of `mining` in rigs told to sleep, not confirmed yet.
    pub draining: Watts,
    /// Power of rigs confirmed asleep.
    pub asleep: Watts,
    /// The GPU grant in force.
    pub gpu_granted: Watts,
    /// What the GPU side wants.
    pub gpu_wanted: Watts,
    /// What the GPU side reports in use.
    pub gpu_in_use: Watts,
    /// Granted later, once rigs confirm asleep (the target grant minus the grant).
    pub gpu_pending: Watts,
    /// The curtailment in force.
    pub curtailment: Option<Curtailment>,
    /// Rigs by state.
    pub rigs: RigCounts,
}
