//! The arbiter's vocabulary going in: power, identities, settings, what the integrator
//! reports (rigs, confirmations, GPU demand, curtailments, operator commands) and the errors
//! of those inputs. Plain data (all serde), no behaviour beyond validation and arithmetic, so
//! the integrator can log, persist and display every value as is. What comes out is in
//! [`super::outputs`] and [`super::view`].

use std::fmt;
use std::iter::Sum;
use std::ops::{Add, Sub};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::config::ranges::{DEFAULT_DRAIN_MARGIN, DEFAULT_REPLACE_AFTER};

/// Electrical power in watts. Integer so the cap arithmetic is exact (no float rounding can
/// let `mining + gpu` creep over the cap); [`Watts::from_kw`] and [`Watts::kw`] convert at the
/// edges. Subtraction saturates at zero.
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
#[serde(transparent)]
pub struct Watts(pub u64);

impl Watts {
    /// Zero watts.
    pub const ZERO: Watts = Watts(0);

    /// From kilowatts, rounded to the nearest watt; negative, NaN and infinite inputs give
    /// zero (a nonsense figure from a peer must never become a huge budget).
    pub fn from_kw(kw: f64) -> Watts {
        if kw.is_finite() && kw > 0.0 {
            // `as` saturates at u64::MAX for huge finite values, which is what we want.
            Watts((kw * 1000.0).round() as u64)
        } else {
            Watts::ZERO
        }
    }

    /// In kilowatts.
    pub fn kw(self) -> f64 {
        self.0 as f64 / 1000.0
    }

    /// Whole kilowatts, rounded down (e.g. Slurm `power_kw` licenses: never grant more than
    /// the arbiter did).
    pub fn kw_floor(self) -> u64 {
        self.0 / 1000
    }

    /// `self - rhs`, or zero.
    pub fn saturating_sub(self, rhs: Watts) -> Watts {
        Watts(self.0.saturating_sub(rhs.0))
    }
}

impl Add for Watts {
    type Output = Watts;
    fn add(self, rhs: Watts) -> Watts {
        Watts(self.0.saturating_add(rhs.0))
    }
}

impl Sub for Watts {
    type Output = Watts;
    /// Saturating: power never goes negative.
    fn sub(self, rhs: Watts) -> Watts {
        self.saturating_sub(rhs)
    }
}

impl Sum for Watts {
    fn sum<I: Iterator<Item = Watts>>(iter: I) -> Watts {
        iter.fold(Watts::ZERO, Add::add)
    }
}

impl fmt::Display for Watts {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:.3} kW", self.kw())
    }
}

/// A rig's stable identity (the inventory id the integrator chose, e.g. `site1/rack4/s19-17`).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct RigId(pub String);

impl fmt::Display for RigId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl From<&str> for RigId {
    fn from(s: &str) -> RigId {
        RigId(s.to_owned())
    }
}

/// A rig group's name (`[[rig_group]]` in the config).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct GroupId(pub String);

impl fmt::Display for GroupId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl From<&str> for GroupId {
    fn from(s: &str) -> GroupId {
        GroupId(s.to_owned())
    }
}

/// The arbiter's settings (`[power]` in the config).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Settings {
    /// The site's power cap (mining + GPU).
    pub site_cap: Watts,
    /// Kept free at all times under the (effective) cap: metering error, auxiliary loads.
    pub headroom: Watts,
    /// At most this many `Wake` commands per `resume_interval` (sliding window), so the site
    /// never creates its own ramp event. At least 1.
    pub resume_batch: u32,
    /// The window of `resume_batch`.
    pub resume_interval: Duration,
    /// A sleep command (or a rig in unknown state) not confirmed within this is escalated
    /// (once). Non-zero. Sleeps confirm in seconds; this bounds how long a silent rig delays a
    /// shed (others are drained in its place once it is escalated).
    pub confirm_deadline: Duration,
    /// A wake command not confirmed within this is escalated (once). Non-zero. Longer than
    /// `confirm_deadline`: a wake ramps like a reboot (minutes).
    pub wake_deadline: Duration,
    /// Resume hysteresis: a rig is woken only if, after it, at least this much of the budget
    /// stays free for what the GPU side is owed; so a small rise in GPU demand right after a
    /// resume does not drain the rig again (no flapping).
    pub hysteresis: Watts,
    /// When the site is over its budget (a cap cut, a rig appearing), sleep is commanded to
    /// rigs covering the shortfall times `1 + drain_margin`, so a few rigs that never answer
    /// do not leave part of it uncovered until they are replaced. A fraction in `[0, 1]`;
    /// the surplus is woken again by the normal (staggered, hysteresis-bound) resume once
    /// the shed is confirmed. Absent in older settings: [`DEFAULT_DRAIN_MARGIN`].
    #[serde(default = "default_drain_margin")]
    pub drain_margin: f64,
    /// A draining rig that has not confirmed within this is planned as a load a sleep cannot
    /// shed, so a replacement is drained at once; it still counts as drawing until confirmed
    /// and is escalated at `confirm_deadline` as before. Non-zero; should sit above the
    /// usual time to confirm a sleep (firmware command + quiet period), or honest but slow
    /// rigs get replacements too; at or over `confirm_deadline` it is replaced only when
    /// escalated. Absent in older settings: [`DEFAULT_REPLACE_AFTER`].
    #[serde(default = "default_replace_after")]
    pub replace_after: Duration,
}

fn default_drain_margin() -> f64 {
    DEFAULT_DRAIN_MARGIN
}

fn default_replace_after() -> Duration {
    DEFAULT_REPLACE_AFTER
}

impl Settings {
    /// Settings with the given cap and documented defaults: no headroom, 10 wakes per 30 s,
    /// 90 s sleep confirmation deadline, 600 s wake deadline, 1 kW hysteresis, 5% drain
    /// margin, replacement after 30 s.
    pub fn new(site_cap: Watts) -> Settings {
        Settings {
            site_cap,
            headroom: Watts::ZERO,
            resume_batch: 10,
            resume_interval: Duration::from_secs(30),
            confirm_deadline: Duration::from_secs(90),
            wake_deadline: Duration::from_secs(600),
            hysteresis: Watts(1000),
            drain_margin: DEFAULT_DRAIN_MARGIN,
            replace_after: DEFAULT_REPLACE_AFTER,
        }
    }

    /// Checks the settings make sense (done by [`super::Arbiter::new`] and `handle_settings`).
    pub fn validate(&self) -> Result<(), ArbiterError> {
        if self.resume_batch == 0 {
            return Err(ArbiterError::InvalidSettings(
                "resume_batch must be at least 1",
            ));
        }
        if self.resume_interval.is_zero() {
            return Err(ArbiterError::InvalidSettings(
                "resume_interval must be non-zero",
            ));
        }
        if self.confirm_deadline.is_zero() {
            return Err(ArbiterError::InvalidSettings(
                "confirm_deadline must be non-zero",
            ));
        }
        if self.wake_deadline.is_zero() {
            return Err(ArbiterError::InvalidSettings(
                "wake_deadline must be non-zero",
            ));
        }
        if !(0.0..=1.0).contains(&self.drain_margin) {
            return Err(ArbiterError::InvalidSettings(
                "drain_margin must be within [0, 1]",
            ));
        }
        if self.replace_after.is_zero() {
            return Err(ArbiterError::InvalidSettings(
                "replace_after must be non-zero",
            ));
        }
        if self.headroom >= self.site_cap {
            return Err(ArbiterError::InvalidSettings(
                "headroom must be below site_cap",
            ));
        }
        Ok(())
    }
}

/// What the integrator knows about a rig (inventory + live figures).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RigInfo {
    /// The rig's stable identity.
    pub id: RigId,
    /// Its group.
    pub group: GroupId,
    /// Its group's priority: **higher = more important** = drained later, resumed earlier.
    pub priority: i32,
    /// Its power draw when mining (the best figure the integrator has: PDU > firmware >
    /// hashrate × J/TH > nameplate). The arbiter counts exactly this for the rig whenever it
    /// is not confirmed asleep.
    pub power: Watts,
    /// Efficiency in J/TH, if known. Unknown (or non-finite/negative) is ranked as the
    /// average of the known efficiencies of the fleet (as if the rig were a typical one),
    /// so it is neither always drained first nor always last.
    pub efficiency: Option<f64>,
    /// How it can be slept: rigs a firmware sleeps are drained before rigs only a PDU cut
    /// stops (the last resort), and rigs nothing controls last (they free nothing). Absent in
    /// older persisted plans: [`ControlPath::Firmware`], the order they were planned in.
    #[serde(default)]
    pub path: ControlPath,
}

/// How a rig is put to sleep, as far as the drain order cares.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ControlPath {
    /// Nothing hashshift can command (no management API, no outlet): it counts, but freeing
    /// its power needs a person.
    None,
    /// Its management API.
    #[default]
    Firmware,
    /// Its management API, and a switched PDU outlet as the escalation.
    FirmwareAndPdu,
    /// Only a switched PDU outlet: sleeping it is a hard power cut.
    Pdu,
}

impl ControlPath {
    /// Drain class: lower is drained first (firmware, then PDU only, then nothing).
    pub fn drain_class(self) -> u8 {
        match self {
            ControlPath::Firmware | ControlPath::FirmwareAndPdu => 0,
            ControlPath::Pdu => 1,
            ControlPath::None => 2,
        }
    }

    /// Whether a PDU outlet can cut it.
    pub fn has_pdu(self) -> bool {
        matches!(self, ControlPath::FirmwareAndPdu | ControlPath::Pdu)
    }
}

/// What the integrator observed of a rig when it (re)appears.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Observed {
    /// It is hashing (e.g. it connected and submits shares).
    Mining,
    /// Its firmware says it is asleep. A rig found asleep that the arbiter did not put to sleep
    /// is **pinned** (a relay trip or another tool did it; we never re-energise it on our own).
    Asleep,
    /// Not known yet (counts as drawing power until confirmed; escalated after the deadline).
    Unknown,
}

/// The firmware side's answer to the last command (or a status check).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Confirmation {
    /// Confirmed not drawing (mining) power.
    Asleep,
    /// Confirmed awake and hashing.
    Awake,
    /// The command was refused or failed; the rig's state is unknown (counts as drawing).
    CommandFailed,
}

/// A rig's power state as the arbiter tracks it. Every state but `Asleep` counts as drawing
/// the rig's full power.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RigState {
    /// Hashing at full power.
    Mining,
    /// `Sleep` commanded, not confirmed yet.
    Draining,
    /// Confirmed asleep: the only state that frees its power.
    Asleep,
    /// `Wake` commanded, not confirmed yet.
    Waking,
    /// A command failed; waits for a confirmation (status poll) from the integrator.
    Fault,
    /// State not known (new rig, or a command was in flight across a restart).
    Unknown,
}

/// The GPU side's demand.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct GpuDemand {
    /// Total power the GPU side wants now (running + pending work).
    pub wanted: Watts,
    /// Power its running work uses: falling demand never shrinks the grant below this (only
    /// a cap cut does).
    pub in_use: Watts,
}

/// A grid curtailment: the effective cap is `min(site cap, cap)` until `until` (or until
/// cleared).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Curtailment {
    /// The cap while it lasts.
    pub cap: Watts,
    /// When it ends on its own (same clock as `now`), or `None` to last until cleared.
    pub until: Option<Duration>,
    /// Who asked (e.g. `ctl curtail`, `ercot-webhook`), for the audit log.
    pub source: String,
}

/// Who asked for an operator action and why (audit).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Operator {
    /// E.g. the admin socket peer's user name.
    pub who: String,
    /// Free text (`--reason`).
    pub why: String,
}

/// A manual operator action. Drains **pin** the rigs: a pinned rig is never woken by the
/// arbiter until an operator resumes it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum OperatorCommand {
    /// Drain and pin one rig.
    DrainRig {
        /// The rig.
        rig: RigId,
    },
    /// Drain and pin every rig of a group.
    DrainGroup {
        /// The group.
        group: GroupId,
    },
    /// Drain and pin at least this much mining power, in drain order (see the module doc).
    DrainPower {
        /// How much.
        amount: Watts,
    },
    /// Unpin a rig: it wakes when the power plan and the stagger allow (never beyond the cap).
    ResumeRig {
        /// The rig.
        rig: RigId,
    },
    /// Unpin every rig of a group (as `ResumeRig`).
    ResumeGroup {
        /// The group.
        group: GroupId,
    },
}

/// Errors of the arbiter's inputs. None of them changes the arbiter's state.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ArbiterError {
    /// No rig with this id (e.g. a late confirmation for a removed rig).
    #[error("unknown rig {0}")]
    UnknownRig(RigId),
    /// No rig in this group.
    #[error("no rig in group {0}")]
    UnknownGroup(GroupId),
    /// Settings rejected.
    #[error("invalid settings: {0}")]
    InvalidSettings(&'static str),
    /// The inventory is full ([`super::MAX_RIGS`]).
    #[error("too many rigs (limit {0})")]
    TooManyRigs(usize),
    /// A persisted state of an unknown format version.
    #[error("unsupported persisted state version {0}")]
    UnsupportedVersion(u32),
}

/// None of these passes on a retry: each needs a different input (a known rig, other
/// settings, a free slot, a state file this version reads).
impl crate::error::Classify for ArbiterError {
    fn side(&self) -> crate::error::Side {
        use crate::error::Side;
        match self {
            // The rigs and groups named come from operator commands and the config.
            ArbiterError::UnknownRig(_)
            | ArbiterError::UnknownGroup(_)
            | ArbiterError::InvalidSettings(_)
            | ArbiterError::UnsupportedVersion(_) => Side::Operator,
            // One more miner connected than the inventory holds.
            ArbiterError::TooManyRigs(_) => Side::Miner,
        }
    }

    fn retry(&self) -> crate::error::Retry {
        crate::error::Retry::No
    }
}
