//! The power controller's rig registry: which connected miners are which rigs, their group,
//! how to reach their management API, and the best power figure for each.
//!
//! # Rigs are machines, not names
//! A worker name is only a claim. A rig *holds budget* (counts at its nameplate or firmware
//! reading, stays counted while disconnected) only once it is known ([`Identity`]): listed in
//! `[[rig]]`, or its management API answered at an address its group allows. Until then it is
//! unverified: it counts at its live estimate (hashrate × J/TH, never above its nameplate)
//! while connected, and is forgotten `forget_unverified_secs` after its last connection
//! closed. So a stranger who opens connections with made-up worker names adds the power its
//! shares prove, and nothing once it leaves.
//!
//! Credentials go only where the configuration allows: a `[[rig]]` `management` address, or
//! the rig's address + the group's API port when that address is inside the group's
//! `addresses`. Each entry is bound to one address (`home`); once the rig is known, a Stratum
//! connection from another address with the same worker name never moves it: it is an
//! identity conflict (reported), and counts as an unverified rig of its own, `WORKER@ADDRESS`.
//! An address holds at most `max_rigs_per_address` unverified rigs; further workers from it
//! count together as `overflow@ADDRESS`. The registry holds at most [`MAX_RIGS`] rigs.
//!
//! Power figures, best first: what the firmware reported in its last status (if fresh), the
//! live hashrate × the group's J/TH, the nameplate (`power.rs`). Each figure says where it
//! came from and how old it is, so `ctl rigs` can show it.

use std::collections::{HashMap, HashSet};
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use super::path::{PathBounds, PowerPath};
use super::ports::{ControlPath, OutletFactory, RigControl};
use crate::config::{Rig as RigOverride, RigGroup};
use crate::control::arbiter::{MAX_RIGS, RigId, RigInfo};
use crate::pool_link::ConnId;
use crate::pool_link::miner::MinerShared;
use crate::pool_link::report::MinerReport;

mod power;

pub use self::power::{
    DEFAULT_J_PER_TH, DEFAULT_RATED_W, ESTIMATE_MATURE, PowerSource, changed_enough,
};

/// Group of rigs that match no `[[rig_group]]`.
pub const UNGROUPED: &str = "ungrouped";
/// Prefix of the rig that counts an address's workers beyond `max_rigs_per_address`.
pub const OVERFLOW_PREFIX: &str = "overflow@";

/// Makes a rig's management API client from its group and address (`None`: the group has no
/// firmware configured, or the kind is unknown).
pub type ControlFactory =
    Arc<dyn Fn(&RigGroup, SocketAddr) -> Option<Arc<dyn RigControl>> + Send + Sync>;

/// What makes a worker name a machine.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Identity {
    /// Listed in `[[rig]]`: the operator vouches for it.
    Listed,
    /// Its management API answered at an address its group allows.
    Answered,
    /// Neither (yet): counts at its live estimate while connected, then is forgotten.
    Unverified,
}

impl Identity {
    /// Whether the rig holds budget (known to be a machine).
    pub fn known(self) -> bool {
        self != Identity::Unverified
    }
}

/// One rig.
pub struct RigEntry {
    /// Its id (worker name; `WORKER@ADDRESS` for a conflicting connection,
    /// `overflow@ADDRESS` for an address's workers over the cap).
    pub id: RigId,
    /// Its group's index in the config (`None`: ungrouped).
    pub group: Option<usize>,
    /// Stratum connections it has now.
    pub conns: Vec<ConnId>,
    /// Their shared records (live share times between syncs).
    pub miners: Vec<Arc<MinerShared>>,
    /// Where it connects from (last seen).
    pub address: Option<SocketAddr>,
    /// The address this rig is bound to; fixed once it is known.
    pub home: Option<IpAddr>,
    /// How it is known to be a machine.
    pub identity: Identity,
    /// Its management API, if reachable (only at an address the configuration allows).
    pub control: Option<Arc<dyn RigControl>>,
    /// Live hashrate (H/s) over its connections.
    pub hashrate: f64,
    /// Unix ms of its last accepted share.
    pub last_share_unix_ms: u64,
    /// Last power the firmware (or the PDU outlet's meter) reported, and when.
    pub firmware_power: Option<(f64, Instant)>,
    /// That figure is the PDU outlet's meter.
    pub power_metered: bool,
    /// When hashshift cut its PDU outlet (an escalated sleep), until it is woken: shown as
    /// `pdu-cut`, and its quiet period counts from the cut. Kept across a restart.
    pub cut_at: Option<Instant>,
    /// When the registry first saw it (a hashrate estimate needs time to mean anything).
    pub first_seen: Instant,
    /// When its last connection closed (`None` while connected).
    pub disconnected_since: Option<Instant>,
    /// Connections from another address that claimed its worker name.
    pub conflicts: u64,
    /// The address of the last of them.
    pub last_conflict: Option<SocketAddr>,
    /// What the arbiter was last told.
    pub announced: Option<RigInfo>,
}

impl RigEntry {
    /// A rig first seen `now`, with no connection, API client or figures yet.
    fn new(
        id: RigId,
        group: Option<usize>,
        home: Option<IpAddr>,
        identity: Identity,
        now: Instant,
    ) -> RigEntry {
        RigEntry {
            id,
            group,
            conns: Vec::new(),
            miners: Vec::new(),
            address: None,
            home,
            identity,
            control: None,
            hashrate: 0.0,
            last_share_unix_ms: 0,
            firmware_power: None,
            power_metered: false,
            cut_at: None,
            first_seen: now,
            disconnected_since: None,
            conflicts: 0,
            last_conflict: None,
            announced: None,
        }
    }

    /// Unix ms of its last accepted share, read live from its connections (the copy taken at
    /// the last sync can be a second old: a sleep must not be confirmed on a stale one).
    pub fn live_last_share_unix_ms(&self) -> u64 {
        self.miners
            .iter()
            .map(|m| m.last_share_unix_ms())
            .fold(self.last_share_unix_ms, u64::max)
    }
}

/// What the registry keeps across a restart of one rig (the arbiter keeps its power state).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct KnownRig {
    /// Its id.
    pub id: RigId,
    /// How it is known.
    pub identity: Identity,
    /// The address it is bound to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub home: Option<IpAddr>,
    /// Identity conflicts so far.
    #[serde(default)]
    pub conflicts: u64,
    /// Its PDU outlet is off because hashshift cut it.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub cut: bool,
}

/// Why a worker did not become a rig of its own.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refusal {
    /// Its address already holds `max_rigs_per_address` unverified rigs (it counts in the
    /// address's overflow rig).
    PerAddress,
    /// The registry holds [`MAX_RIGS`] rigs (it is not counted at all).
    MaxRigs,
}

impl Refusal {
    /// The metric label.
    pub fn label(self) -> &'static str {
        match self {
            Refusal::PerAddress => "per_address",
            Refusal::MaxRigs => "max_rigs",
        }
    }
}

/// What one [`Registry::sync`] found that operators must hear of.
#[derive(Debug, Default)]
pub struct SyncReport {
    /// New identity conflicts: (rig, the claiming connection's address, its connection).
    pub conflicts: Vec<(RigId, SocketAddr, ConnId)>,
    /// New refusals: (worker, address, why).
    pub refused: Vec<(String, SocketAddr, Refusal)>,
}

/// The registry's identity rules.
#[derive(Clone, Copy, Debug)]
pub struct IdentitySettings {
    /// An unverified rig is forgotten this long after its last connection closed.
    pub forget_unverified: Duration,
    /// Most unverified rigs per address.
    pub max_per_address: usize,
}

/// The rigs, keyed by id.
pub struct Registry {
    groups: Vec<RigGroup>,
    overrides: HashMap<String, RigOverride>,
    factory: ControlFactory,
    /// The PDU outlets of `[[rig]]` `pdu`/`outlet` (`None`: no PDU configured).
    outlets: Option<OutletFactory>,
    /// The composite's waits.
    path_bounds: PathBounds,
    /// A firmware power figure older than this is not used.
    fresh_for: Duration,
    identity: IdentitySettings,
    /// Connections already reported as conflicts or refusals (reported once each).
    reported: HashSet<ConnId>,
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
        identity: IdentitySettings,
    ) -> Self {
        Registry {
            groups,
            overrides: overrides
                .iter()
                .map(|r| (r.worker.clone(), r.clone()))
                .collect(),
            factory,
            outlets: None,
            path_bounds: PathBounds::default(),
            fresh_for,
            identity,
            reported: HashSet::new(),
            rigs: HashMap::new(),
        }
    }

    /// Gives `[[rig]]` entries with `pdu` and `outlet` their outlet, through `outlets`, with
    /// the composite's waits `bounds`.
    pub fn with_outlets(mut self, outlets: Option<OutletFactory>, bounds: PathBounds) -> Self {
        self.outlets = outlets;
        self.path_bounds = bounds;
        self
    }

    /// A rig's control: its management API (at `management`, with its group's firmware)
    /// and its `[[rig]]` outlet, whichever exist. Only a rig listed under its own worker
    /// name gets an outlet: a `WORKER@ADDRESS` claimant never reaches the real rig's.
    fn make_control(
        &self,
        id: &RigId,
        group: Option<usize>,
        management: Option<SocketAddr>,
    ) -> Option<Arc<dyn RigControl>> {
        let firmware = match (group.and_then(|g| self.groups.get(g)), management) {
            (Some(g), Some(addr)) => (self.factory)(g, addr),
            _ => None,
        };
        let outlet = match (&self.outlets, self.overrides.get(&id.0)) {
            (Some(make), Some(o)) => o.outlet().and_then(|(pdu, n)| make(pdu, n)),
            _ => None,
        };
        PowerPath::compose(firmware, outlet, self.path_bounds)
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
    /// authorized yet are not rigs. Known rigs whose miners left stay (they may still draw
    /// power); unverified ones are forgotten later ([`Registry::expire`]).
    pub fn sync(&mut self, miners: &[MinerReport], now: Instant) -> SyncReport {
        let mut report = SyncReport::default();
        let was_connected: HashSet<RigId> = self
            .rigs
            .values()
            .filter(|r| !r.conns.is_empty())
            .map(|r| r.id.clone())
            .collect();
        // An unverified rig that left keeps its last estimate until it is forgotten (it may
        // be mining on its backup pool); a known one counts its nameplate or firmware figure.
        let last_estimate: HashMap<RigId, f64> = self
            .rigs
            .values()
            .filter(|r| r.identity == Identity::Unverified)
            .map(|r| (r.id.clone(), r.hashrate))
            .collect();
        for r in self.rigs.values_mut() {
            r.conns.clear();
            r.miners.clear();
            r.hashrate = 0.0;
        }
        let mut live = HashSet::new();
        for m in miners {
            let Some(worker) = m.shared.worker() else {
                continue;
            };
            let peer = m.shared.peer;
            let conn = m.shared.id;
            live.insert(conn);
            let Some(id) = self.place(&worker, peer, conn, now, &was_connected, &mut report) else {
                continue;
            };
            if let Some(r) = self.rigs.get_mut(&id) {
                r.conns.push(conn);
                r.miners.push(m.shared.clone());
                r.hashrate += m.hashrate.max(0.0);
                r.last_share_unix_ms = r.last_share_unix_ms.max(m.shared.last_share_unix_ms());
                r.address = Some(peer);
            }
        }
        self.reported.retain(|c| live.contains(c));
        for r in self.rigs.values_mut() {
            if !r.conns.is_empty() {
                r.disconnected_since = None;
                continue;
            }
            if r.disconnected_since.is_none() {
                r.disconnected_since = Some(now);
            }
            if r.identity == Identity::Unverified {
                r.hashrate = last_estimate.get(&r.id).copied().unwrap_or(0.0);
            }
        }
        report
    }

    /// Which rig a connection of `worker` from `peer` counts as (`None`: refused).
    fn place(
        &mut self,
        worker: &str,
        peer: SocketAddr,
        conn: ConnId,
        now: Instant,
        was_connected: &HashSet<RigId>,
        report: &mut SyncReport,
    ) -> Option<RigId> {
        let ip = canonical(peer.ip());
        let named = RigId(worker.to_owned());
        let Some(entry) = self.rigs.get_mut(&named) else {
            return self.create(named, worker, peer, conn, now, report);
        };
        match entry.home {
            None => {
                // Known by id only (restored, or listed): its first connection binds it.
                entry.home = Some(ip);
                if entry.group.is_none() {
                    let group = self.group_of(worker, ip);
                    if let Some(e) = self.rigs.get_mut(&named) {
                        e.group = group;
                    }
                }
                self.bind_control(&named, ip);
                Some(named)
            }
            Some(home) if home == ip => Some(named),
            Some(_) if entry.identity.known() => {
                entry.conflicts = entry.conflicts.saturating_add(1);
                entry.last_conflict = Some(peer);
                if self.reported.insert(conn) {
                    report.conflicts.push((named, peer, conn));
                }
                self.alias(worker, peer, conn, now, report)
            }
            Some(_) => {
                let busy = !entry.conns.is_empty() || was_connected.contains(&named);
                if busy {
                    // Two addresses claim one unproven name: neither is more right, both count.
                    return self.alias(worker, peer, conn, now, report);
                }
                // Unproven and gone from its old address: the name moves with the miner, and
                // nothing learned at the old address (API client, power reading) comes along.
                entry.home = Some(ip);
                entry.control = None;
                entry.firmware_power = None;
                entry.first_seen = now;
                self.bind_control(&named, ip);
                Some(named)
            }
        }
    }

    /// The rig `WORKER@ADDRESS` for a connection that may not use the plain name.
    fn alias(
        &mut self,
        worker: &str,
        peer: SocketAddr,
        conn: ConnId,
        now: Instant,
        report: &mut SyncReport,
    ) -> Option<RigId> {
        let id = RigId(format!("{worker}@{}", canonical(peer.ip())));
        if self.rigs.contains_key(&id) {
            return Some(id);
        }
        self.create(id, worker, peer, conn, now, report)
    }

    /// A new entry, within the caps.
    fn create(
        &mut self,
        id: RigId,
        worker: &str,
        peer: SocketAddr,
        conn: ConnId,
        now: Instant,
        report: &mut SyncReport,
    ) -> Option<RigId> {
        let ip = canonical(peer.ip());
        let listed = self.overrides.contains_key(&id.0);
        let mut refuse = |report: &mut SyncReport, why| {
            if self.reported.insert(conn) {
                report.refused.push((worker.to_owned(), peer, why));
            }
        };
        if self.rigs.len() >= MAX_RIGS {
            refuse(report, Refusal::MaxRigs);
            return None;
        }
        let mut id = id;
        if !listed {
            let unverified_here = self
                .rigs
                .values()
                .filter(|r| {
                    r.identity == Identity::Unverified
                        && r.home == Some(ip)
                        && !r.id.0.starts_with(OVERFLOW_PREFIX)
                })
                .count();
            if unverified_here >= self.identity.max_per_address {
                refuse(report, Refusal::PerAddress);
                id = RigId(format!("{OVERFLOW_PREFIX}{ip}"));
                if self.rigs.contains_key(&id) {
                    return Some(id);
                }
            }
        }
        let group = self.group_of(worker, ip);
        let identity = if listed {
            Identity::Listed
        } else {
            Identity::Unverified
        };
        self.rigs.insert(
            id.clone(),
            RigEntry::new(id.clone(), group, Some(ip), identity, now),
        );
        self.bind_control(&id, ip);
        Some(id)
    }

    /// Gives a rig its management API client, if the configuration allows one for it at `ip`.
    fn bind_control(&mut self, id: &RigId, ip: IpAddr) {
        let Some(entry) = self.rigs.get(id) else {
            return;
        };
        // A rig known by its outlet alone (listed, not connected yet) gains its management
        // API once it connects from an address its group allows.
        let outlet_only = entry
            .control
            .as_ref()
            .is_some_and(|c| c.path() == ControlPath::Pdu);
        if (entry.control.is_some() && !outlet_only) || id.0.starts_with(OVERFLOW_PREFIX) {
            return;
        }
        let group = entry.group;
        let control = self.make_control(id, group, self.management_address(&id.0, group, ip));
        if let Some(e) = self.rigs.get_mut(id) {
            e.control = control;
        }
    }

    /// A rig's management API answered: it is a machine.
    pub fn answered(&mut self, id: &RigId) -> bool {
        match self.rigs.get_mut(id) {
            Some(e) if e.identity == Identity::Unverified && e.control.is_some() => {
                e.identity = Identity::Answered;
                true
            }
            _ => false,
        }
    }

    /// Unverified rigs whose last connection closed `forget_unverified` ago or more: removed
    /// from the registry and returned (the caller removes them from the arbiter).
    pub fn expire(&mut self, now: Instant) -> Vec<(RigId, Duration)> {
        let after = self.identity.forget_unverified;
        let gone: Vec<(RigId, Duration)> = self
            .rigs
            .values()
            .filter(|r| r.identity == Identity::Unverified && r.conns.is_empty())
            .filter_map(|r| {
                let away = now.saturating_duration_since(r.disconnected_since?);
                (away >= after).then(|| (r.id.clone(), away))
            })
            .collect();
        for (id, _) in &gone {
            self.rigs.remove(id);
        }
        gone
    }

    /// Removes a rig an operator knows is gone. Refused while it is connected.
    pub fn forget(&mut self, id: &RigId) -> Result<(), String> {
        if let Some(e) = self.rigs.get(id) {
            if !e.conns.is_empty() {
                return Err(format!(
                    "rig {:?} is connected ({} connection(s) from {}): stop it or kick it first",
                    id.0,
                    e.conns.len(),
                    e.address.map_or_else(|| "?".to_owned(), |a| a.to_string())
                ));
            }
        }
        self.rigs.remove(id);
        Ok(())
    }

    /// Makes sure a rig known by id only (restored from disk, not connected) has an entry,
    /// with its management API if the config allows one at its known address.
    pub fn ensure(&mut self, id: &RigId, known: Option<&KnownRig>, now: Instant) {
        if self.rigs.contains_key(id) {
            return;
        }
        let listed = self.overrides.contains_key(&id.0);
        let home = known.and_then(|k| k.home).map(canonical);
        let worker =
            id.0.split_once('@')
                .map_or(id.0.as_str(), |(w, _)| w)
                .to_owned();
        // Its group by its known address, else by its `[[rig]]` management address, else by
        // name among groups that do not ask for an address.
        let management = self.overrides.get(&id.0).and_then(|o| o.management);
        let group = match (
            self.overrides.get(&id.0).and_then(|o| o.group.as_ref()),
            home.or(management.map(|m| canonical(m.ip()))),
        ) {
            (Some(name), _) => self.groups.iter().position(|g| &g.name == name),
            (None, Some(ip)) => self.group_of(&worker, ip),
            (None, None) => self.groups.iter().position(|g| {
                g.addresses.is_empty()
                    && g.workers
                        .iter()
                        .any(|p| crate::config::glob_match(p, &worker))
            }),
        };
        let identity = match (listed, known.map(|k| k.identity)) {
            (true, _) => Identity::Listed,
            (false, Some(Identity::Answered)) => Identity::Answered,
            // A rig the previous run could not tell from a name (or a state file from before
            // identities were kept) proves itself again.
            _ => Identity::Unverified,
        };
        let mut entry = RigEntry::new(id.clone(), group, home, identity, now);
        // Not connected (yet): a known rig stays, an unverified one is forgotten in time.
        entry.disconnected_since = Some(now);
        entry.conflicts = known.map_or(0, |k| k.conflicts);
        entry.cut_at = known.filter(|k| k.cut).map(|_| now);
        self.rigs.insert(id.clone(), entry);
        match home {
            Some(ip) => self.bind_control(id, ip),
            None => {
                // Without a known address only a `[[rig]]` management address can be used.
                let control = self.make_control(id, group, management);
                if let Some(e) = self.rigs.get_mut(id) {
                    e.control = control;
                }
            }
        }
    }

    /// Makes sure every `[[rig]]` with a `management` address or a PDU outlet has an entry,
    /// connected or not: the operator says it is a machine, so it counts as drawing until its
    /// firmware or outlet says it sleeps (after a lost plan above all: an asleep rig never
    /// connects). Returns the new ones.
    pub fn ensure_listed(&mut self, now: Instant) -> Vec<RigId> {
        let listed: Vec<RigId> = self
            .overrides
            .values()
            .filter(|o| o.management.is_some() || o.outlet().is_some())
            .map(|o| RigId(o.worker.clone()))
            .filter(|id| !self.rigs.contains_key(id))
            .collect();
        for id in &listed {
            self.ensure(id, None, now);
        }
        listed
    }

    /// What to keep across a restart.
    pub fn known(&self) -> Vec<KnownRig> {
        let mut out: Vec<KnownRig> = self
            .rigs
            .values()
            .map(|r| KnownRig {
                id: r.id.clone(),
                identity: r.identity,
                home: r.home,
                conflicts: r.conflicts,
                cut: r.cut_at.is_some(),
            })
            .collect();
        out.sort_by(|a, b| a.id.cmp(&b.id));
        out
    }

    /// A rig's management API address: its `[[rig]]` override, else its address with the
    /// group's API port, only when the group's address ranges include it (credentials never
    /// go to an address a Stratum peer chose).
    fn management_address(&self, id: &str, group: Option<usize>, ip: IpAddr) -> Option<SocketAddr> {
        if let Some(addr) = self.overrides.get(id).and_then(|o| o.management) {
            return Some(addr);
        }
        let g = group.and_then(|g| self.groups.get(g))?;
        if !g.allows_address(ip) {
            return None;
        }
        let port = g.api_port.or(g
            .firmware
            .and_then(|c| c.firmware())
            .map(|k| k.default_port()))?;
        Some(SocketAddr::new(ip, port))
    }
}

/// IPv4-mapped IPv6 addresses as IPv4, so one machine has one address.
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(IpAddr::V6(v6), IpAddr::V4),
        v4 => v4,
    }
}

#[cfg(test)]
mod tests;
