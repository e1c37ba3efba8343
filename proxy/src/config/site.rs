//! The site's power configuration: the cap (`[power]`), the rigs' groups and models
//! (`[[rig_group]]`), per-rig overrides (`[[rig]]`). The GPU scheduler is `[gpu_scheduler]`.

use std::net::{IpAddr, SocketAddr};

use serde::{Deserialize, Serialize};

use super::ranges;
use super::{ConfigError, invalid};

/// Largest site cap (kW): 1 GW, far above any site, far below where watts as `u64` or the
/// ×1000 of kW→W could lose meaning.
pub const MAX_SITE_KW: f64 = 1_000_000.0;
/// Largest efficiency (J/TH): the oldest rigs still plugged in are near 100.
pub const MAX_J_PER_TH: f64 = 10_000.0;
const RATED_W_RANGE: &str = "must be > 0 and at most 20000 W (one rig)";

/// The power budget shared by mining and the GPU cluster.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Power {
    /// The site's cap (mining + GPU), kW.
    pub site_cap_kw: f64,
    /// Kept free under the cap at all times (metering error, auxiliary loads), kW.
    #[serde(default)]
    pub headroom_kw: f64,
    /// At most this many rigs are woken per `resume_interval_secs`, so the site never makes
    /// its own ramp event.
    #[serde(default = "default_resume_batch")]
    pub resume_batch: u32,
    /// See `resume_batch`.
    #[serde(default = "default_resume_interval_secs")]
    pub resume_interval_secs: f64,
    /// A rig that does not confirm a sleep within this is reported (escalated), and other
    /// rigs are drained in its place.
    #[serde(default = "default_confirm_deadline_secs")]
    pub confirm_deadline_secs: f64,
    /// The same for a wake, which ramps like a reboot (minutes on real rigs).
    #[serde(default = "default_wake_deadline_secs")]
    pub wake_deadline_secs: f64,
    /// A rig is woken only if this much stays free after it (no flapping), kW.
    #[serde(default = "default_hysteresis_kw")]
    pub hysteresis_kw: f64,
    /// How often each rig's management API is asked for its state and power.
    #[serde(default = "default_status_poll_secs")]
    pub status_poll_secs: f64,
    /// A rig is confirmed asleep only once its firmware says so **and** no share of it was
    /// accepted for this long (a rig whose API lies keeps hashing).
    #[serde(default = "default_quiet_secs")]
    pub quiet_secs: f64,
    /// A worker whose management API never answered (not in `[[rig]]`, not verified at an
    /// address its group allows) stops counting this long after its last connection closed.
    #[serde(default = "default_forget_unverified_secs")]
    pub forget_unverified_secs: f64,
    /// Most unverified rigs (distinct worker names) one address may hold; further workers
    /// from it are counted together as one `overflow@ADDRESS` rig, and the cap is reported.
    #[serde(default = "default_max_rigs_per_address")]
    pub max_rigs_per_address: u32,
    /// When the site is over its cap, rigs covering the shortfall times `1 + drain_margin`
    /// are told to sleep, so a few that never answer do not hold up the shed (0-1; the
    /// surplus wakes again, staggered, once the shed is confirmed).
    #[serde(default = "default_drain_margin")]
    pub drain_margin: f64,
    /// A rig that has not confirmed a sleep within this is planned as still drawing and a
    /// replacement is drained at once (it is still escalated at `confirm_deadline_secs`).
    /// Keep it above the usual time to confirm (firmware command + `quiet_secs`); at or above
    /// `confirm_deadline_secs` a rig is replaced only once escalated.
    #[serde(default = "default_replace_after_secs")]
    pub replace_after_secs: f64,
}

fn default_resume_batch() -> u32 {
    10
}
fn default_resume_interval_secs() -> f64 {
    30.0
}
fn default_confirm_deadline_secs() -> f64 {
    90.0
}
fn default_wake_deadline_secs() -> f64 {
    600.0
}
fn default_hysteresis_kw() -> f64 {
    1.0
}
fn default_status_poll_secs() -> f64 {
    30.0
}
fn default_quiet_secs() -> f64 {
    10.0
}
fn default_forget_unverified_secs() -> f64 {
    120.0
}
fn default_max_rigs_per_address() -> u32 {
    4
}
/// Longest `replace_after_secs`: a day (a sleep unconfirmed that long is long escalated).
const MAX_REPLACE_AFTER_SECS: f64 = 86_400.0;

fn default_drain_margin() -> f64 {
    ranges::DEFAULT_DRAIN_MARGIN
}
fn default_replace_after_secs() -> f64 {
    ranges::DEFAULT_REPLACE_AFTER.as_secs_f64()
}

/// A group of rigs: model, efficiency, how to reach their management API, and which
/// connected miners belong to it.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RigGroup {
    /// Name (for `ctl drain --group`).
    pub name: String,
    /// Higher = more important: drained later, resumed earlier.
    #[serde(default)]
    pub priority: i32,
    /// Model, for reports (`S19 XP`).
    #[serde(default)]
    pub model: String,
    /// Nameplate power (W): the estimate of last resort.
    pub rated_w: f64,
    /// Efficiency (J/TH): power estimate from live hashrate, and the drain order (least
    /// efficient first).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub j_per_th: Option<f64>,
    /// How its rigs are controlled: a management API kind (`luxos`, `braiins`, `antminer`,
    /// `whatsminer`, `vnish`), or `pdu` (no management API: each rig's `[[rig]]` outlet is its
    /// only control); absent: these rigs cannot be slept by hashshift (their power still
    /// counts).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub firmware: Option<GroupControl>,
    /// Port of the management API on the rig's address (default: the firmware's own, 4028
    /// for LuxOS, 80 for Braiins OS+).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_port: Option<u16>,
    /// Management API user.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub username: Option<String>,
    /// Environment variable holding the management API password (never the password
    /// itself in the file).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password_env: Option<String>,
    /// Worker-name patterns of its rigs (`*` matches any run of characters).
    #[serde(default)]
    pub workers: Vec<String>,
    /// Address ranges of its rigs (CIDR, `10.0.1.0/24`). With `workers` too, a rig must match
    /// both. Credentials go only to a management API inside these ranges (or a `[[rig]]`
    /// `management` address): a group without them can use firmware only through `[[rig]]`.
    #[serde(default)]
    pub addresses: Vec<String>,
}

/// One rig's overrides.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Rig {
    /// Its worker name (its id).
    pub worker: String,
    /// Its group (by name).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group: Option<String>,
    /// Its management API address, when it is not the Stratum peer address + `api_port`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub management: Option<SocketAddr>,
    /// Its nameplate power (W), overriding the group's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rated_w: Option<f64>,
    /// The `[[pdu]]` (by name) whose outlet feeds it: the escalation when it does not confirm
    /// a sleep, and its only control when its group says `firmware = "pdu"`. With `outlet`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pdu: Option<String>,
    /// Its outlet on that PDU (from 1, as the PDU numbers them). With `pdu`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub outlet: Option<u16>,
}

impl Rig {
    /// Its (pdu, outlet), when it has both (validation refuses one without the other).
    pub fn outlet(&self) -> Option<(&str, u16)> {
        Some((self.pdu.as_deref()?, self.outlet?))
    }
}

/// How a group's rigs are controlled: `firmware = "luxos"` etc. in the config, or
/// `firmware = "pdu"` for rigs whose only control is their switched outlet.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum GroupControl {
    /// A management API: sleep and wake through the firmware (a mapped outlet, if any, is the
    /// escalation).
    Firmware(crate::firmware::FirmwareKind),
    /// No management API: the PDU outlet is the only control (a hard power cut).
    Pdu,
}

impl GroupControl {
    /// The firmware kind, if the group has one.
    pub fn firmware(self) -> Option<crate::firmware::FirmwareKind> {
        match self {
            GroupControl::Firmware(k) => Some(k),
            GroupControl::Pdu => None,
        }
    }

    /// The name used in config (`luxos`, `pdu`).
    pub fn as_str(self) -> &'static str {
        match self {
            GroupControl::Firmware(k) => k.as_str(),
            GroupControl::Pdu => "pdu",
        }
    }
}

impl From<crate::firmware::FirmwareKind> for GroupControl {
    fn from(k: crate::firmware::FirmwareKind) -> Self {
        GroupControl::Firmware(k)
    }
}

impl Serialize for GroupControl {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for GroupControl {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        use serde::de::{Error, IntoDeserializer};
        let name = String::deserialize(d)?;
        if name == "pdu" {
            return Ok(GroupControl::Pdu);
        }
        // The firmware kinds' own names (and their error for an unknown one, which lists
        // them); "pdu" is named on top.
        let de: serde::de::value::StrDeserializer<'_, D::Error> = name.as_str().into_deserializer();
        crate::firmware::FirmwareKind::deserialize(de)
            .map(GroupControl::Firmware)
            .map_err(|e| D::Error::custom(format!("{e}, or `pdu`")))
    }
}

/// An address range: `10.0.1.0/24`, or one address.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Cidr {
    net: IpAddr,
    prefix: u8,
}

impl Cidr {
    /// Parses `ADDR/PREFIX` or `ADDR`.
    pub fn parse(text: &str) -> Option<Cidr> {
        let (addr, prefix) = match text.split_once('/') {
            Some((a, p)) => (a, Some(p.parse::<u8>().ok()?)),
            None => (text, None),
        };
        let net: IpAddr = addr.parse().ok()?;
        let max = if net.is_ipv4() { 32 } else { 128 };
        let prefix = prefix.unwrap_or(max);
        (prefix <= max).then_some(Cidr { net, prefix })
    }

    /// Whether `ip` is in the range.
    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(IpAddr::V6(v6), IpAddr::V4),
            v4 => v4,
        };
        match (self.net, ip) {
            (IpAddr::V4(n), IpAddr::V4(a)) => {
                let mask = u32::MAX
                    .checked_shl(32 - u32::from(self.prefix))
                    .unwrap_or(0);
                u32::from(n) & mask == u32::from(a) & mask
            }
            (IpAddr::V6(n), IpAddr::V6(a)) => {
                let mask = u128::MAX
                    .checked_shl(128 - u32::from(self.prefix))
                    .unwrap_or(0);
                u128::from(n) & mask == u128::from(a) & mask
            }
            _ => false,
        }
    }
}

/// Whether `name` matches `pattern`, where `*` matches any run of characters.
pub fn glob_match(pattern: &str, name: &str) -> bool {
    let mut parts = pattern.split('*');
    let first = parts.next().unwrap_or("");
    let Some(mut rest) = name.strip_prefix(first) else {
        return false;
    };
    let parts: Vec<&str> = parts.collect();
    let Some((last, middle)) = parts.split_last() else {
        return rest.is_empty(); // no `*`: exact match
    };
    for part in middle {
        match rest.find(part) {
            Some(i) => rest = &rest[i + part.len()..],
            None => return false,
        }
    }
    rest.len() >= last.len() && rest.ends_with(last)
}

impl RigGroup {
    /// Whether a miner with this worker name and address belongs to the group: it must match
    /// every criterion the group gives (worker patterns, address ranges); a group that gives
    /// neither matches nothing.
    pub fn matches(&self, worker: Option<&str>, ip: IpAddr) -> bool {
        if self.workers.is_empty() && self.addresses.is_empty() {
            return false;
        }
        let by_worker = self.workers.is_empty()
            || worker.is_some_and(|w| self.workers.iter().any(|p| glob_match(p, w)));
        by_worker && (self.addresses.is_empty() || self.allows_address(ip))
    }

    /// Whether `ip` is inside the group's address ranges (where its management APIs may be
    /// reached with its credentials).
    pub fn allows_address(&self, ip: IpAddr) -> bool {
        self.addresses
            .iter()
            .filter_map(|c| Cidr::parse(c))
            .any(|c| c.contains(ip))
    }
}

pub(super) fn validate(
    power: Option<&Power>,
    groups: &[RigGroup],
    rigs: &[Rig],
    pdus: &[super::Pdu],
) -> Result<(), ConfigError> {
    if let Some(p) = power {
        if !(p.site_cap_kw.is_finite() && p.site_cap_kw > 0.0 && p.site_cap_kw <= MAX_SITE_KW) {
            return Err(invalid(
                "power.site_cap_kw",
                format!("must be > 0 and at most {MAX_SITE_KW} kW (1 GW)"),
            ));
        }
        if !(p.headroom_kw.is_finite() && p.headroom_kw >= 0.0 && p.headroom_kw < p.site_cap_kw) {
            return Err(invalid(
                "power.headroom_kw",
                "must be >= 0 and below site_cap_kw",
            ));
        }
        if !(p.hysteresis_kw.is_finite()
            && p.hysteresis_kw >= 0.0
            && p.hysteresis_kw <= p.site_cap_kw)
        {
            return Err(invalid(
                "power.hysteresis_kw",
                "must be >= 0 and at most site_cap_kw",
            ));
        }
        if p.resume_batch == 0 {
            return Err(invalid("power.resume_batch", "must be at least 1"));
        }
        // Every duration here becomes `Duration` and `Instant` arithmetic: bounded so none
        // can overflow (or panic in `Duration::from_secs_f64`).
        for (key, v, zero_ok, max) in [
            (
                "resume_interval_secs",
                p.resume_interval_secs,
                false,
                ranges::MAX_POLL_SECS,
            ),
            (
                "confirm_deadline_secs",
                p.confirm_deadline_secs,
                false,
                ranges::MAX_DEADLINE_SECS,
            ),
            (
                "wake_deadline_secs",
                p.wake_deadline_secs,
                false,
                ranges::MAX_DEADLINE_SECS,
            ),
            (
                "status_poll_secs",
                p.status_poll_secs,
                false,
                ranges::MAX_POLL_SECS,
            ),
            ("quiet_secs", p.quiet_secs, true, ranges::MAX_POLL_SECS),
            (
                "replace_after_secs",
                p.replace_after_secs,
                false,
                MAX_REPLACE_AFTER_SECS,
            ),
        ] {
            ranges::check_secs(v, zero_ok, max).map_err(|e| invalid(format!("power.{key}"), e))?;
        }
        ranges::check_secs(p.forget_unverified_secs, false, ranges::MAX_DEADLINE_SECS)
            .map_err(|e| invalid("power.forget_unverified_secs", e))?;
        if p.max_rigs_per_address == 0 {
            return Err(invalid("power.max_rigs_per_address", "must be at least 1"));
        }
        if !(p.drain_margin.is_finite() && (0.0..=1.0).contains(&p.drain_margin)) {
            return Err(invalid("power.drain_margin", "must be within 0..=1"));
        }
    }
    for (i, g) in groups.iter().enumerate() {
        let key = |k: &str| format!("rig_group[{i}].{k}");
        if g.name.is_empty() || groups[..i].iter().any(|o| o.name == g.name) {
            return Err(invalid(key("name"), "must be non-empty and unique"));
        }
        if ranges::rig_power_w(g.rated_w).is_err() {
            return Err(invalid(key("rated_w"), RATED_W_RANGE));
        }
        if g.j_per_th
            .is_some_and(|j| !(j.is_finite() && j > 0.0 && j <= MAX_J_PER_TH))
        {
            return Err(invalid(
                key("j_per_th"),
                format!("must be > 0 and at most {MAX_J_PER_TH}"),
            ));
        }
        if let Some(bad) = g.addresses.iter().find(|c| Cidr::parse(c).is_none()) {
            return Err(invalid(
                key("addresses"),
                format!("{bad:?} is not ADDR/PREFIX"),
            ));
        }
        if let Some(var) = &g.password_env {
            if var.is_empty() {
                return Err(invalid(
                    key("password_env"),
                    "must name an environment variable",
                ));
            }
        }
    }
    for (i, r) in rigs.iter().enumerate() {
        if let Some(g) = &r.group {
            if !groups.iter().any(|o| &o.name == g) {
                return Err(invalid(
                    format!("rig[{i}].group"),
                    format!("no rig_group {g:?}"),
                ));
            }
        }
        if r.rated_w.is_some_and(|w| ranges::rig_power_w(w).is_err()) {
            return Err(invalid(format!("rig[{i}].rated_w"), RATED_W_RANGE));
        }
        if rigs[..i].iter().any(|o| o.worker == r.worker) {
            return Err(invalid(format!("rig[{i}].worker"), "listed twice"));
        }
        validate_outlet(i, r, groups, &rigs[..i], pdus)?;
    }
    Ok(())
}

/// A `[[rig]]`'s PDU mapping: both keys or neither, a PDU that exists, an outlet from 1 that
/// no earlier rig uses; a rig of a `firmware = "pdu"` group must have one (else nothing
/// controls it).
fn validate_outlet(
    i: usize,
    r: &Rig,
    groups: &[RigGroup],
    earlier: &[Rig],
    pdus: &[super::Pdu],
) -> Result<(), ConfigError> {
    let key = |k: &str| format!("rig[{i}].{k}");
    match (&r.pdu, r.outlet) {
        (None, None) => {}
        (Some(_), None) => return Err(invalid(key("outlet"), "required with `pdu`")),
        (None, Some(_)) => return Err(invalid(key("pdu"), "required with `outlet`")),
        (Some(name), Some(outlet)) => {
            let Some(pdu) = pdus.iter().find(|p| &p.name == name) else {
                return Err(invalid(key("pdu"), format!("no [[pdu]] named {name:?}")));
            };
            if outlet == 0 {
                return Err(invalid(key("outlet"), "outlets are numbered from 1"));
            }
            if outlet > pdu.outlets {
                return Err(invalid(
                    key("outlet"),
                    format!("{name} has {} outlets (its `outlets`)", pdu.outlets),
                ));
            }
            if let Some(other) = earlier.iter().find(|o| o.outlet() == r.outlet()) {
                return Err(invalid(
                    key("outlet"),
                    format!(
                        "{name} outlet {outlet} is already rig {:?}'s: one outlet, one rig",
                        other.worker
                    ),
                ));
            }
        }
    }
    let group = r
        .group
        .as_ref()
        .and_then(|g| groups.iter().find(|o| &o.name == g));
    if group.is_some_and(|g| g.firmware == Some(GroupControl::Pdu)) && r.outlet().is_none() {
        return Err(invalid(
            key("pdu"),
            "its group has firmware = \"pdu\": the rig needs `pdu` and `outlet` (nothing else controls it)",
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn globs_match_runs_of_characters() {
        assert!(glob_match("farm.s19-*", "farm.s19-017"));
        assert!(glob_match("*", "anything"));
        assert!(glob_match("a*b*c", "a-x-b-y-c"));
        assert!(glob_match("exact", "exact"));
        assert!(!glob_match("exact", "exactly"));
        assert!(!glob_match("farm.s19-*", "farm.s21-001"));
        assert!(!glob_match("a*bc", "abc-bc-x"));
        assert!(glob_match("a*bc", "abc-bc"));
    }

    fn pdu_site(rigs: &str) -> Result<(), String> {
        #[derive(Deserialize)]
        struct Site {
            #[serde(default)]
            rig_group: Vec<RigGroup>,
            #[serde(default)]
            rig: Vec<Rig>,
            #[serde(default)]
            pdu: Vec<super::super::Pdu>,
        }
        let text = format!(
            "[[pdu]]\nname = \"pdu-a\"\naddress = \"127.0.0.1\"\nprofile = \"apc-rpdu\"\noutlets = 24\n\
             version = \"2c\"\ncommunity_env = \"C\"\ninsecure_v2c = true\n\
             [[rig_group]]\nname = \"fw\"\nrated_w = 3000.0\nfirmware = \"luxos\"\n\
             [[rig_group]]\nname = \"dumb\"\nrated_w = 3000.0\nfirmware = \"pdu\"\n{rigs}"
        );
        let site: Site = toml::from_str(&text).map_err(|e| e.to_string())?;
        validate(None, &site.rig_group, &site.rig, &site.pdu).map_err(|e| e.to_string())
    }

    #[test]
    fn group_control_reads_firmware_kinds_and_pdu() {
        let g: RigGroup =
            toml::from_str("name = \"a\"\nrated_w = 1.0\nfirmware = \"pdu\"").unwrap();
        assert_eq!(g.firmware, Some(GroupControl::Pdu));
        assert_eq!(g.firmware.unwrap().firmware(), None);
        let g: RigGroup =
            toml::from_str("name = \"a\"\nrated_w = 1.0\nfirmware = \"luxos\"").unwrap();
        let luxos = GroupControl::Firmware(crate::firmware::FirmwareKind::Luxos);
        assert_eq!(g.firmware, Some(luxos));
        assert!(
            toml::to_string(&g)
                .unwrap()
                .contains("firmware = \"luxos\"")
        );
        let e = toml::from_str::<RigGroup>("name = \"a\"\nrated_w = 1.0\nfirmware = \"ipmi\"")
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("ipmi") && e.contains("luxos") && e.contains("pdu"),
            "{e}"
        );
    }

    #[test]
    fn rig_outlets_are_validated() {
        let rig = |extra: &str| format!("[[rig]]\nworker = \"w\"\ngroup = \"fw\"\n{extra}\n");
        assert_eq!(pdu_site(&rig("pdu = \"pdu-a\"\noutlet = 7")), Ok(()));
        assert_eq!(pdu_site(&rig("")), Ok(()), "a firmware rig needs no outlet");
        for (extra, key, says) in [
            ("pdu = \"pdu-a\"", "rig[0].outlet", "required"),
            ("outlet = 7", "rig[0].pdu", "required"),
            ("pdu = \"pdu-b\"\noutlet = 7", "rig[0].pdu", "no [[pdu]]"),
            ("pdu = \"pdu-a\"\noutlet = 0", "rig[0].outlet", "from 1"),
            (
                "pdu = \"pdu-a\"\noutlet = 25",
                "rig[0].outlet",
                "has 24 outlets",
            ),
        ] {
            let e = pdu_site(&rig(extra)).unwrap_err();
            assert!(e.contains(key) && e.contains(says), "{extra}: {e}");
        }
        let two = format!(
            "{}[[rig]]\nworker = \"v\"\npdu = \"pdu-a\"\noutlet = 7\n",
            rig("pdu = \"pdu-a\"\noutlet = 7")
        );
        let e = pdu_site(&two).unwrap_err();
        assert!(e.contains("rig[1].outlet") && e.contains("\"w\""), "{e}");
        let dumb = "[[rig]]\nworker = \"d\"\ngroup = \"dumb\"\n";
        let e = pdu_site(dumb).unwrap_err();
        assert!(
            e.contains("rig[0].pdu") && e.contains("firmware = \"pdu\""),
            "{e}"
        );
        let dumb = format!("{dumb}pdu = \"pdu-a\"\noutlet = 1\n");
        assert_eq!(pdu_site(&dumb), Ok(()));
    }

    #[test]
    fn cidrs_contain_their_addresses() {
        let c = Cidr::parse("10.0.1.0/24").unwrap();
        assert!(c.contains("10.0.1.17".parse().unwrap()));
        assert!(!c.contains("10.0.2.1".parse().unwrap()));
        assert!(c.contains("::ffff:10.0.1.5".parse().unwrap()), "v4-mapped");
        assert!(
            Cidr::parse("127.0.0.1")
                .unwrap()
                .contains("127.0.0.1".parse().unwrap())
        );
        assert!(
            Cidr::parse("0.0.0.0/0")
                .unwrap()
                .contains("8.8.8.8".parse().unwrap())
        );
        assert!(Cidr::parse("10.0.0.0/33").is_none());
        assert!(
            Cidr::parse("fd00::/8")
                .unwrap()
                .contains("fd12::1".parse().unwrap())
        );
    }
}
