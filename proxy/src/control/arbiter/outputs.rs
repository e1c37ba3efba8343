//! What comes out of the arbiter: the [`Action`]s the integrator carries out, each with its
//! [`Reason`], and the [`AuditEvent`]s that record every decision. Plain data (all serde), so
//! the integrator can log and persist them as they are.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::types::{
    Confirmation, Curtailment, GpuDemand, Operator, OperatorCommand, RigId, RigInfo, RigState,
    Settings, Watts,
};

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
        /// The operator's name.
        who: String,
        /// The reason they gave.
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
        /// Why the arbiter decided it.
        reason: Reason,
    },
    /// Command the rig to wake; report the outcome with `handle_confirmation`.
    Wake {
        /// The rig.
        rig: RigId,
        /// Why the arbiter decided it.
        reason: Reason,
    },
    /// Set the GPU scheduler's power budget to exactly this (grow or shrink). When it
    /// shrinks, the scheduler must enforce it at once.
    SetGpuBudget {
        /// The new budget.
        budget: Watts,
        /// Why the arbiter decided it.
        reason: Reason,
    },
    /// Ask the GPU side to shed this much of what it uses now (the budget was already cut by
    /// a `SetGpuBudget` just before): mining alone could not cover a cap cut.
    AskGpuShed {
        /// How much.
        amount: Watts,
        /// Why the arbiter decided it.
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
        /// Why the arbiter decided it.
        reason: Reason,
    },
}

/// One audit record: what happened, when (the `now` of the input), and why (inside).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AuditEvent {
    /// Same clock as `now`.
    pub at: Duration,
    /// What happened, and why.
    pub event: Event,
}

/// The audit events. Actions appear as `Action` in the order they were queued.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "snake_case")]
#[non_exhaustive]
pub enum Event {
    /// An action was queued.
    Action {
        /// The action queued.
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
        /// The rig removed.
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
        /// The curtailment now in force.
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
        /// The command given.
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
