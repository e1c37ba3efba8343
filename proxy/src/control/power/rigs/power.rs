//! The power figure the arbiter counts for each rig, best first: what the firmware reported in
//! its last status (if fresh), the live hashrate × the group's J/TH, the nameplate. Each
//! figure says where it came from and how old it is, so `ctl rigs` can show it; an
//! unverified rig never counts above what its shares prove.

use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use super::{Identity, OVERFLOW_PREFIX, Registry, RigEntry, UNGROUPED};
use crate::control::arbiter::{ControlPath, GroupId, RigInfo, Watts};

/// How long a rig must have been seen before its hashrate × J/TH is trusted as its power.
pub const ESTIMATE_MATURE: Duration = Duration::from_secs(120);
/// Nameplate assumed for a rig of no group (an S19-class machine), W.
pub const DEFAULT_RATED_W: f64 = 3250.0;
/// Efficiency assumed for an unverified rig of a group that gives none (an S19-class
/// machine, J/TH: errs high for newer models).
pub const DEFAULT_J_PER_TH: f64 = 34.0;

/// Where a rig's power figure comes from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PowerSource {
    /// The rig's firmware reported it.
    Firmware,
    /// The rig's PDU outlet metered it (beats the rig's own figure).
    Pdu,
    /// Live hashrate × the group's J/TH.
    Efficiency,
    /// The nameplate.
    Nameplate,
}

impl Registry {
    fn rated_w(&self, rig: &RigEntry) -> f64 {
        let group = rig.group.and_then(|g| self.groups.get(g));
        self.overrides
            .get(&rig.id.0)
            .and_then(|o| o.rated_w)
            .or(group.map(|g| g.rated_w))
            .unwrap_or(DEFAULT_RATED_W)
    }

    /// The best power figure for a rig, and its source and age. The arbiter counts exactly
    /// this figure.
    ///
    /// An unverified rig counts at its live estimate, hashrate × J/TH (the group's, else
    /// [`DEFAULT_J_PER_TH`]), never above its nameplate (times its connections, for an
    /// overflow rig): what its shares prove, and nothing a name alone can claim.
    ///
    /// A known rig errs high: a fresh firmware reading if there is one; else, for a rig whose
    /// management API will report soon, the nameplate; else hashrate × J/TH once the hashrate
    /// estimate has had [`ESTIMATE_MATURE`] to settle (a young estimate of a few shares can be
    /// off by orders of magnitude, and a low figure would let the GPU grant grow into power
    /// the rig is still drawing); else the nameplate.
    pub fn power(&self, rig: &RigEntry, now: Instant) -> (f64, PowerSource, Option<Duration>) {
        let group = rig.group.and_then(|g| self.groups.get(g));
        let rated = self.rated_w(rig);
        if rig.identity == Identity::Unverified {
            if let Some((w, at)) = rig.firmware_power {
                let age = now.saturating_duration_since(at);
                if age <= self.fresh_for && w > 0.0 {
                    return (w.min(rated), PowerSource::Firmware, Some(age));
                }
            }
            let j = group.and_then(|g| g.j_per_th).unwrap_or(DEFAULT_J_PER_TH);
            let units = if rig.id.0.starts_with(OVERFLOW_PREFIX) {
                rig.conns.len().max(1) as f64
            } else {
                1.0
            };
            let w = (rig.hashrate / 1e12 * j).clamp(0.0, rated * units);
            return (w, PowerSource::Efficiency, Some(Duration::ZERO));
        }
        if let Some((w, at)) = rig.firmware_power {
            let age = now.saturating_duration_since(at);
            if age <= self.fresh_for && w > 0.0 {
                let source = if rig.power_metered {
                    PowerSource::Pdu
                } else {
                    PowerSource::Firmware
                };
                return (w, source, Some(age));
            }
        }
        let mature = now.saturating_duration_since(rig.first_seen) >= ESTIMATE_MATURE;
        if let (Some(j), None, true) = (group.and_then(|g| g.j_per_th), &rig.control, mature) {
            if rig.hashrate > 0.0 {
                return (
                    rig.hashrate / 1e12 * j,
                    PowerSource::Efficiency,
                    Some(Duration::ZERO),
                );
            }
        }
        (rated, PowerSource::Nameplate, None)
    }

    /// What the arbiter should know of a rig now.
    pub fn info(&self, rig: &RigEntry, now: Instant) -> RigInfo {
        let group = rig.group.and_then(|g| self.groups.get(g));
        let (watts, _, _) = self.power(rig, now);
        RigInfo {
            id: rig.id.clone(),
            group: GroupId(group.map_or(UNGROUPED, |g| g.name.as_str()).to_owned()),
            priority: group.map_or(0, |g| g.priority),
            power: Watts::from_kw(watts / 1000.0),
            efficiency: group.and_then(|g| g.j_per_th),
            path: rig.control.as_ref().map_or(ControlPath::None, |c| c.path()),
        }
    }
}

/// Whether a figure moved enough to tell the arbiter again (5%): estimates jitter, and each
/// update replans.
pub fn changed_enough(old: &RigInfo, new: &RigInfo) -> bool {
    let (a, b) = (old.power.0 as f64, new.power.0 as f64);
    old.group != new.group
        || old.path != new.path
        || old.priority != new.priority
        || old.efficiency != new.efficiency
        || (a - b).abs() > 0.05 * a.max(b)
}
