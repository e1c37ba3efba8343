//! The arbiter's vocabulary: power, identities, settings, inputs, actions, audit events,
//! operator snapshots and errors. Plain data (all serde), no behaviour beyond validation and
//! arithmetic, so the integrator can log, persist and display every value as is.

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
    /// Identity.
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
    /// Hashing.
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

/// Why the arbiter did something (carried by every action).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
#[non_exhaustive]
pub enum Reason {
    /// The GPU side wants power mining uses.
    GpuDemand,
    /// GPU demand fell: its grant shrinks to what it wants.
    GpuDemandFell,
    /// Power became free (rigs confirmed asleep, demand fell, curtailment ended).
    PowerAvailable,
    /// A grid curtailment lowered the cap.
    Curtailment,
    /// Over the cap for another reason: settings lowered, rig estimates rose, a rig woke
    /// without being told.
    OverCap,
    /// An operator asked.
    Operator {
        /// Who.
        who: String,
        /// Why.
        why: String,
    },
    /// The rig did not confirm its last command within the deadline.
    NoConfirmation,
    /// The firmware adapter reported the command failed.
    CommandFailed,
}

/// What the integrator must do. Poll them with [`super::Arbiter::poll_action`] after every
/// input and carry them out in order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "action", rename_all = "snake_case")]
#[non_exhaustive]
pub enum Action {
    /// Command the rig to sleep; report the outcome with `handle_confirmation`.
    Sleep {
        /// The rig.
        rig: RigId,
        /// Why.
        reason: Reason,
    },
    /// Command the rig to wake; report the outcome with `handle_confirmation`.
    Wake {
        /// The rig.
        rig: RigId,
        /// Why.
        reason: Reason,
    },
    /// Set the GPU scheduler's power budget to exactly this (grow or shrink). When it
    /// shrinks, the scheduler must enforce it at once.
    SetGpuBudget {
        /// The new budget.
        budget: Watts,
        /// Why.
        reason: Reason,
    },
    /// Ask the GPU side to shed this much of what it uses now (the budget was already cut by
    /// a `SetGpuBudget` just before): mining alone could not cover a cap cut.
    AskGpuShed {
        /// How much.
        amount: Watts,
        /// Why.
        reason: Reason,
    },
    /// The rig did not confirm (or its command failed): report it, or power-cycle it through
    /// the PDU when one is configured. Sent once per command.
    Escalate {
        /// The rig.
        rig: RigId,
        /// Its state when escalated (`Draining`: it was told to sleep; `Waking`: to wake;
        /// `Fault`: the command failed; `Unknown`: never confirmed after appearing/restart).
        state: RigState,
        /// Why.
        reason: Reason,
    },
}

/// One audit record: what happened, when (the `now` of the input), and why (inside).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AuditEvent {
    /// Same clock as `now`.
    pub at: Duration,
    /// What.
    pub event: Event,
}

/// The audit events. Actions appear as `Action` in the order they were queued.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "snake_case")]
#[non_exhaustive]
pub enum Event {
    /// An action was queued.
    Action {
        /// It.
        action: Action,
    },
    /// A rig joined the inventory.
    RigAdded {
        /// Its figures.
        info: RigInfo,
        /// Its state.
        state: RigState,
    },
    /// A rig left the inventory (its power no longer counts).
    RigRemoved {
        /// It.
        rig: RigId,
    },
    /// A draining rig has not confirmed its sleep within `replace_after`: it still counts
    /// as drawing, and is planned as a load a sleep cannot shed, so another rig is drained
    /// in its place (or the GPU side is cut if none is left). Escalated at the deadline as
    /// before.
    ConfirmationLate {
        /// The rig.
        rig: RigId,
        /// `replace_after` in force.
        after: Duration,
    },
    /// A confirmation arrived.
    Confirmed {
        /// The rig.
        rig: RigId,
        /// What the firmware side said.
        confirmation: Confirmation,
        /// The state before.
        from: RigState,
        /// The state after.
        to: RigState,
    },
    /// The GPU side's demand changed.
    GpuDemand {
        /// The new demand.
        demand: GpuDemand,
    },
    /// A curtailment started (or was replaced).
    CurtailmentSet {
        /// It.
        curtailment: Curtailment,
    },
    /// The curtailment ended.
    CurtailmentEnded {
        /// `true` if cleared before its `until`.
        early: bool,
    },
    /// An operator command, with the rigs it touched.
    Operator {
        /// Who and why.
        by: Operator,
        /// What.
        command: OperatorCommand,
        /// The rigs pinned or unpinned.
        rigs: Vec<RigId>,
    },
    /// A rig was pinned by the arbiter itself (found asleep without a sleep command).
    PinnedAsleep {
        /// The rig.
        rig: RigId,
    },
    /// The settings changed.
    SettingsChanged {
        /// The new settings.
        settings: Settings,
    },
    /// The arbiter was rebuilt from a persisted state.
    Restored {
        /// Rigs restored.
        rigs: usize,
        /// The GPU grant restored.
        granted: Watts,
    },
    /// Events were dropped because nobody polled them (the queue is bounded).
    EventsDropped {
        /// How many.
        count: u64,
    },
}

/// A rig as operators see it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RigView {
    /// Figures.
    pub info: RigInfo,
    /// State.
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
    /// Mining.
    pub mining: usize,
    /// Draining.
    pub draining: usize,
    /// Asleep.
    pub asleep: usize,
    /// Waking.
    pub waking: usize,
    /// Fault.
    pub fault: usize,
    /// Unknown.
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
