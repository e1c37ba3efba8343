//! The power controller's rig registry: which connected miners are which rigs, their group,
//! how to reach their management API, and the best power figure for each.
//!
//! Power figures, best first: what the firmware reported in its last status (if fresh), the
//! live hashrate × the group's J/TH, the nameplate. Each figure says where it came from and
//! how old it is, so `ctl rigs` can show it.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use super::ports::RigControl;
use crate::config::{Rig as RigOverride, RigGroup};
use crate::control::arbiter::{GroupId, RigId, RigInfo, Watts};
use crate::downstream::listener::ConnId;
use crate::upstream::manager::MinerReport;

/// Group of rigs that match no `[[rig_group]]`.
pub const UNGROUPED: &str = "ungrouped";
/// How long a rig must have been seen before its hashrate × J/TH is trusted as its power.
pub const ESTIMATE_MATURE: Duration = Duration::from_secs(120);
/// Nameplate assumed for a rig of no group (an S19-class machine), W.
pub const DEFAULT_RATED_W: f64 = 3250.0;

/// Makes a rig's management API client from its group and address (`None`: the group has no
/// firmware configured, or the kind is unknown).
pub type ControlFactory =
    Arc<dyn Fn(&RigGroup, SocketAddr) -> Option<Arc<dyn RigControl>> + Send + Sync>;

/// Where a rig's power figure comes from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PowerSource {
    /// The rig's firmware reported it.
    Firmware,
    /// Live hashrate × the group's J/TH.
    Efficiency,
    /// The nameplate.
    Nameplate,
}

/// One rig.
pub struct RigEntry {
    /// Its id (worker name).
    pub id: RigId,
    /// Its group's index in the config (`None`: ungrouped).
    pub group: Option<usize>,
    /// Stratum connections it has now.
    pub conns: Vec<ConnId>,
    /// Where it connects from (last seen).
    pub address: Option<SocketAddr>,
    /// Its management API, if reachable.
    pub control: Option<Arc<dyn RigControl>>,
    /// Live hashrate (H/s) over its connections.
    pub hashrate: f64,
    /// Unix ms of its last accepted share.
    pub last_share_unix_ms: u64,
    /// Last power the firmware reported, and when.
    pub firmware_power: Option<(f64, Instant)>,
    /// When the registry first saw it (a hashrate estimate needs time to mean anything).
    pub first_seen: Instant,
    /// What the arbiter was last told.
    pub announced: Option<RigInfo>,
}

/// The rigs, keyed by id.
pub struct Registry {
    groups: Vec<RigGroup>,
    overrides: HashMap<String, RigOverride>,
    factory: ControlFactory,
    /// A firmware power figure older than this is not used.
    fresh_for: Duration,
    /// The rigs.
    pub rigs: HashMap<RigId, RigEntry>,
}

impl Registry {
    /// An empty registry over the configured groups and overrides.
    pub fn new(
        groups: Vec<RigGroup>,
        overrides: &[RigOverride],
        factory: ControlFactory,
        fresh_for: Duration,
    ) -> Self {
        Registry {
            groups,
            overrides: overrides
                .iter()
                .map(|r| (r.worker.clone(), r.clone()))
                .collect(),
            factory,
            fresh_for,
            rigs: HashMap::new(),
        }
    }

    /// The configured groups.
    pub fn groups(&self) -> &[RigGroup] {
        &self.groups
    }

    fn group_of(&self, worker: &str, ip: IpAddr) -> Option<usize> {
        if let Some(name) = self.overrides.get(worker).and_then(|o| o.group.as_ref()) {
            return self.groups.iter().position(|g| &g.name == name);
        }
        self.groups.iter().position(|g| g.matches(Some(worker), ip))
    }

    /// Brings the registry up to date with the connected miners. Miners that have not
    /// authorized yet are not rigs. Rigs whose miners left stay (they may still draw power).
    pub fn sync(&mut self, miners: &[MinerReport]) {
        for r in self.rigs.values_mut() {
            r.conns.clear();
            r.hashrate = 0.0;
        }
        for m in miners {
            let Some(worker) = m.shared.worker() else {
                continue;
            };
            let id = RigId(worker.clone());
            let peer = m.shared.peer;
            if !self.rigs.contains_key(&id) {
                let group = self.group_of(&worker, peer.ip());
                self.rigs.insert(
                    id.clone(),
                    RigEntry {
                        id: id.clone(),
                        group,
                        conns: Vec::new(),
                        address: None,
                        control: None,
                        hashrate: 0.0,
                        last_share_unix_ms: 0,
                        firmware_power: None,
                        first_seen: Instant::now(),
                        announced: None,
                    },
                );
            }
            let group = self.rigs.get(&id).and_then(|r| r.group);
            let management = self.management_address(&worker, group, peer);
            let needs_control = self
                .rigs
                .get(&id)
                .is_some_and(|r| r.control.is_none() || r.address != Some(peer));
            let control = if needs_control {
                match (group.and_then(|g| self.groups.get(g)), management) {
                    (Some(g), Some(addr)) => (self.factory)(g, addr),
                    _ => None,
                }
            } else {
                None
            };
            if let Some(r) = self.rigs.get_mut(&id) {
                r.conns.push(m.shared.id);
                r.hashrate += m.hashrate;
                r.last_share_unix_ms = r.last_share_unix_ms.max(m.shared.last_share_unix_ms());
                if needs_control {
                    r.control = control;
                }
                r.address = Some(peer);
            }
        }
    }

    /// Makes sure a rig known by id only (restored from disk, not connected) has an entry,
    /// with its management API if the config gives its address.
    pub fn ensure(&mut self, id: &RigId) {
        if self.rigs.contains_key(id) {
            return;
        }
        let group = match self.overrides.get(&id.0).and_then(|o| o.group.as_ref()) {
            Some(name) => self.groups.iter().position(|g| &g.name == name),
            None => self.groups.iter().position(|g| {
                g.workers
                    .iter()
                    .any(|p| crate::config::glob_match(p, &id.0))
            }),
        };
        let control = match (
            group.and_then(|g| self.groups.get(g)),
            self.overrides.get(&id.0).and_then(|o| o.management),
        ) {
            (Some(g), Some(addr)) => (self.factory)(g, addr),
            _ => None,
        };
        self.rigs.insert(
            id.clone(),
            RigEntry {
                id: id.clone(),
                group,
                conns: Vec::new(),
                address: None,
                control,
                hashrate: 0.0,
                last_share_unix_ms: 0,
                firmware_power: None,
                first_seen: Instant::now(),
                announced: None,
            },
        );
    }

    /// A rig's management API address: its override, else its Stratum address with the
    /// group's API port.
    fn management_address(
        &self,
        worker: &str,
        group: Option<usize>,
        peer: SocketAddr,
    ) -> Option<SocketAddr> {
        if let Some(addr) = self.overrides.get(worker).and_then(|o| o.management) {
            return Some(addr);
        }
        let g = group.and_then(|g| self.groups.get(g))?;
        let port = g.api_port.or(g.firmware.map(|k| k.default_port()))?;
        Some(SocketAddr::new(peer.ip(), port))
    }

    /// The best power figure for a rig, and its source and age. The arbiter counts exactly
    /// this figure, so when in doubt it errs high: a fresh firmware reading if there is one;
    /// else, for a rig whose management API will report soon, the nameplate; else hashrate ×
    /// J/TH once the hashrate estimate has had [`ESTIMATE_MATURE`] to settle (a young
    /// estimate of a few shares can be off by orders of magnitude, and a low figure would let
    /// the GPU grant grow into power the rig is still drawing); else the nameplate.
    pub fn power(&self, rig: &RigEntry, now: Instant) -> (f64, PowerSource, Option<Duration>) {
        if let Some((w, at)) = rig.firmware_power {
            let age = now.saturating_duration_since(at);
            if age <= self.fresh_for && w > 0.0 {
                return (w, PowerSource::Firmware, Some(age));
            }
        }
        let group = rig.group.and_then(|g| self.groups.get(g));
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
        let rated = self
            .overrides
            .get(&rig.id.0)
            .and_then(|o| o.rated_w)
            .or(group.map(|g| g.rated_w))
            .unwrap_or(DEFAULT_RATED_W);
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
        }
    }
}

/// Whether a figure moved enough to tell the arbiter again (5%): estimates jitter, and each
/// update replans.
pub fn changed_enough(old: &RigInfo, new: &RigInfo) -> bool {
    let (a, b) = (old.power.0 as f64, new.power.0 as f64);
    old.group != new.group
        || old.priority != new.priority
        || old.efficiency != new.efficiency
        || (a - b).abs() > 0.05 * a.max(b)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn group(firmware: bool) -> RigGroup {
        RigGroup {
            name: "g".into(),
            priority: 0,
            model: String::new(),
            rated_w: 3250.0,
            j_per_th: Some(34.0),
            firmware: firmware.then_some(crate::firmware::FirmwareKind::Luxos),
            api_port: None,
            username: None,
            password_env: None,
            workers: vec!["*".into()],
            addresses: Vec::new(),
        }
    }

    fn rig(seen: Instant, control: Option<Arc<dyn RigControl>>) -> RigEntry {
        RigEntry {
            id: RigId("r".into()),
            group: Some(0),
            conns: Vec::new(),
            address: None,
            control,
            hashrate: 50e12,
            last_share_unix_ms: 0,
            firmware_power: None,
            first_seen: seen,
            announced: None,
        }
    }

    struct Silent;
    impl RigControl for Silent {
        fn sleep(&self) -> super::super::ports::BoxFuture<'_, Result<(), String>> {
            Box::pin(async { Ok(()) })
        }
        fn wake(&self) -> super::super::ports::BoxFuture<'_, Result<(), String>> {
            Box::pin(async { Ok(()) })
        }
        fn status(
            &self,
        ) -> super::super::ports::BoxFuture<'_, Result<super::super::ports::FirmwareStatus, String>>
        {
            Box::pin(async { Err("silent".to_owned()) })
        }
        fn describe(&self) -> String {
            "silent".into()
        }
    }

    #[test]
    fn power_estimates_err_high_until_they_can_be_trusted() {
        let now = Instant::now();
        let old = now - ESTIMATE_MATURE - Duration::from_secs(1);
        let no_api = Registry::new(
            vec![group(false)],
            &[],
            Arc::new(|_, _| None),
            Duration::from_secs(90),
        );
        // A young hashrate estimate is not trusted: nameplate.
        assert_eq!(no_api.power(&rig(now, None), now).1, PowerSource::Nameplate);
        // A mature one is: 50 TH/s × 34 J/TH.
        let (w, source, _) = no_api.power(&rig(old, None), now);
        assert_eq!((w.round(), source), (1700.0, PowerSource::Efficiency));
        // A rig whose management API will report: nameplate until it does.
        let api = Registry::new(
            vec![group(true)],
            &[],
            Arc::new(|_, _| None),
            Duration::from_secs(90),
        );
        let mut r = rig(old, Some(Arc::new(Silent)));
        assert_eq!(api.power(&r, now).1, PowerSource::Nameplate);
        r.firmware_power = Some((3010.0, now));
        assert_eq!(
            api.power(&r, now),
            (3010.0, PowerSource::Firmware, Some(Duration::ZERO))
        );
        // A stale reading is not used.
        r.firmware_power = Some((3010.0, now - Duration::from_secs(91)));
        assert_eq!(api.power(&r, now).1, PowerSource::Nameplate);
    }
}
